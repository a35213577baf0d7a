/*
 * The access-token pages: plain JavaScript, no build step, no third-party code.
 *
 * Security notes:
 * - The user token lives in this script's memory only (the userToken
 *   variable below), never in sessionStorage, localStorage or a cookie the
 *   page can read: other pages of the same origin (documentation HTML, say)
 *   cannot read it. A reload or a new tab asks to sign in again.
 * - Every API call carries that token as a bearer header. The API never
 *   reads the backstage-auth cookie on POST, PATCH or DELETE, so a cross-site
 *   page cannot change anything (no CSRF).
 * - Text from the API is only ever written with textContent (never as HTML).
 * - A raw token secret is only put in the one-time result panel, and cleared
 *   when the panel closes. It is never logged nor kept in a variable.
 */
(function () {
  "use strict";

  var config, KIND, API;
  var PAGE_SIZE = 20;
  // The user token: in memory, for the life of this page only.
  var userToken = null;

  function configure() {
    config = document.body.dataset;
    KIND = config.kind === "personal" ? "personal" : "service";
    API = config.apiBase || "/api/access-tokens";
  }

  // -- helpers ------------------------------------------------------------

  function $(id) {
    return document.getElementById(id);
  }

  function el(tag, options, children) {
    var node = document.createElement(tag);
    options = options || {};
    if (options.className) node.className = options.className;
    if (options.text !== undefined && options.text !== null) node.textContent = String(options.text);
    if (options.attrs) {
      Object.keys(options.attrs).forEach(function (name) {
        node.setAttribute(name, options.attrs[name]);
      });
    }
    (children || []).forEach(function (child) {
      if (child) node.appendChild(child);
    });
    return node;
  }

  function getToken() {
    return userToken;
  }

  function setToken(token) {
    userToken = token;
  }

  function clearToken() {
    userToken = null;
  }

  var statusTimer = null;
  function announce(message) {
    var region = $("status");
    if (!region) return;
    region.textContent = "";
    window.clearTimeout(statusTimer);
    // A fresh text node after a tick is announced even when it repeats.
    window.setTimeout(function () {
      region.textContent = message;
      region.classList.add("visible");
      statusTimer = window.setTimeout(function () {
        region.classList.remove("visible");
      }, 6000);
    }, 50);
  }

  function showError(node, message) {
    if (!node) return;
    node.textContent = message;
    node.hidden = !message;
  }

  function ApiError(status, message) {
    this.status = status;
    this.message = message;
  }

  function api(method, path, payload) {
    var token = getToken();
    // Without a token in this tab, reads go with the backstage-auth cookie
    // (the API accepts it for GET only); changes need the user token.
    if (!token && method !== "GET") return Promise.reject(new ApiError(401, "Sign in to continue."));
    var headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    var init = { method: method, headers: headers, credentials: "same-origin", cache: "no-store" };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    return fetch(API + path, init).then(
      function (response) {
        var parsed = response.status === 204 ? Promise.resolve(null) : response.json().catch(function () {
          return null;
        });
        return parsed.then(function (data) {
          if (response.ok) return data;
          var message = data && data.error && data.error.message;
          if (response.status === 401) {
            clearToken();
            showReauth();
          }
          throw new ApiError(response.status, message || "The request failed (HTTP " + response.status + ").");
        });
      },
      function () {
        throw new ApiError(0, "The backend could not be reached. Check your connection and try again.");
      }
    );
  }

  function messageOf(error) {
    if (error && error.status === 401) return "Your session has expired. Please sign in again.";
    return (error && error.message) || "Something went wrong.";
  }

  // -- dates --------------------------------------------------------------

  var relative = window.Intl && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat("en", { numeric: "auto" }) : null;
  var UNITS = [
    ["year", 365 * 86400],
    ["month", 30 * 86400],
    ["week", 7 * 86400],
    ["day", 86400],
    ["hour", 3600],
    ["minute", 60],
    ["second", 1]
  ];

  function relativeText(date) {
    var seconds = (date.getTime() - Date.now()) / 1000;
    if (Math.abs(seconds) < 45) return "just now";
    for (var i = 0; i < UNITS.length; i++) {
      var unit = UNITS[i];
      if (Math.abs(seconds) >= unit[1] || unit[0] === "second") {
        var value = Math.round(seconds / unit[1]);
        return relative ? relative.format(value, unit[0]) : date.toLocaleString();
      }
    }
    return date.toLocaleString();
  }

  function timeNode(iso, fallback) {
    if (!iso) return el("span", { className: "muted", text: fallback || "—" });
    var date = new Date(iso);
    if (isNaN(date.getTime())) return el("span", { text: iso });
    return el("time", { text: relativeText(date), attrs: { datetime: iso, title: date.toLocaleString() } });
  }

  function dateAfterDays(days) {
    var date = new Date(Date.now() + days * 86400 * 1000);
    return date.toLocaleDateString(undefined, { weekday: "short", year: "numeric", month: "short", day: "numeric" });
  }

  // -- sign-in ------------------------------------------------------------

  function issueCookie(token) {
    // The cookie lets later page loads know who is signed in; the API itself
    // is always called with the bearer token.
    return fetch(config.cookieUrl, {
      method: "GET",
      headers: { Authorization: "Bearer " + token, Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (response) {
      if (response.ok) return;
      if (response.status === 401) throw new Error("This token was not accepted: it is invalid or has expired.");
      if (response.status === 403) throw new Error("This token does not belong to a user.");
      throw new Error("Sign-in failed (HTTP " + response.status + ").");
    });
  }

  function signIn(token, errorNode) {
    showError(errorNode, "");
    return issueCookie(token)
      .then(function () {
        setToken(token);
        return showPageAs(token);
      })
      .catch(function (error) {
        clearToken();
        showError(errorNode, error.message || "Sign-in failed.");
      });
  }

  // The page as the server renders it for this token, swapped in without a
  // reload (a reload would lose the token, which lives in memory only).
  function showPageAs(token) {
    return fetch(window.location.pathname + window.location.search, {
      method: "GET",
      headers: { Authorization: "Bearer " + token, Accept: "text/html" },
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (response) {
      if (response.status === 401) throw new Error("This token was not accepted: it is invalid or has expired.");
      return response.text().then(function (html) {
        var page = new DOMParser().parseFromString(html, "text/html");
        if (!page.body || !page.body.dataset.page) throw new Error("Sign-in failed (HTTP " + response.status + ").");
        document.title = page.title;
        document.documentElement.replaceChild(document.adoptNode(page.body), document.body);
        start();
        var heading = document.querySelector("main h1");
        if (heading) {
          heading.setAttribute("tabindex", "-1");
          heading.focus();
        }
      });
    });
  }

  function guestSignIn(button, errorNode) {
    button.disabled = true;
    showError(errorNode, "");
    fetch(config.guestUrl, {
      method: "POST",
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store"
    })
      .then(function (response) {
        return response.json().then(function (data) {
          var token = data && data.backstageIdentity && data.backstageIdentity.token;
          if (!response.ok || !token) {
            var message = data && data.error && data.error.message;
            throw new Error(message || "Guest sign-in failed (HTTP " + response.status + ").");
          }
          return signIn(token, errorNode);
        });
      })
      .catch(function (error) {
        showError(errorNode, error.message || "Guest sign-in failed.");
      })
      .then(function () {
        button.disabled = false;
      });
  }

  function wireSignIn(root) {
    var errorNode = root.querySelector('[data-role="signin-error"]');
    var guest = root.querySelector('[data-action="guest-sign-in"]');
    if (guest) {
      guest.addEventListener("click", function () {
        guestSignIn(guest, errorNode);
      });
    }
    var form = root.querySelector('form[data-action="token-sign-in"]');
    if (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var input = form.querySelector('input[name="token"]');
        var token = input.value.trim();
        input.value = "";
        if (!token) {
          showError(errorNode, "Paste a Backstage user token.");
          input.focus();
          return;
        }
        signIn(token, errorNode);
      });
    }
  }

  function signOut() {
    var token = getToken();
    clearToken();
    var done = function () {
      window.location.reload();
    };
    if (!token) {
      // Clearing the cookie needs the token, which a reload forgot.
      if ($("reauth")) {
        showReauth();
        announce("Sign in again, then sign out: this page no longer holds your token.");
        return;
      }
      return done();
    }
    fetch(config.cookieUrl, {
      method: "DELETE",
      headers: { Authorization: "Bearer " + token },
      credentials: "same-origin",
      cache: "no-store"
    }).then(done, done);
  }

  function showReauth() {
    var panel = $("reauth");
    if (!panel || !panel.hidden) return;
    panel.hidden = false;
    var list = $("token-list");
    if (list) list.hidden = true;
    document.querySelectorAll("[data-needs-token]").forEach(function (node) {
      node.disabled = true;
    });
    document.querySelectorAll("dialog[open]").forEach(function (dialog) {
      dialog.close();
    });
    var heading = $("reauth-title");
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
  }

  // -- dialogs ------------------------------------------------------------

  function openDialog(dialog, focusTarget, returnTo) {
    dialog.returnFocusTo = returnTo || document.activeElement;
    dialog.showModal();
    var target = focusTarget || dialog.querySelector("input, textarea, select, button");
    if (target) target.focus();
  }

  function wireDialogs() {
    document.querySelectorAll("dialog").forEach(function (dialog) {
      dialog.querySelectorAll("[data-close]").forEach(function (button) {
        button.addEventListener("click", function () {
          dialog.close();
        });
      });
      dialog.addEventListener("close", function () {
        var back = dialog.returnFocusTo;
        dialog.returnFocusTo = null;
        if (document.querySelector("dialog[open]")) return; // another dialog took over
        if (!back || !document.contains(back) || back.disabled) back = $("open-create");
        if (back && typeof back.focus === "function") back.focus();
      });
    });
  }

  // -- the one-time secret panel -------------------------------------------

  function showSecret(name, secret, returnFocusTo) {
    var dialog = $("secret-dialog");
    var input = $("secret-value");
    $("secret-name").textContent = name;
    $("copy-result").textContent = "";
    input.value = secret;
    openDialog(dialog, input, returnFocusTo);
    input.select();
  }

  function wireSecretPanel() {
    var dialog = $("secret-dialog");
    if (!dialog) return;
    var input = $("secret-value");
    var clear = function () {
      input.value = "";
      $("secret-name").textContent = "";
      $("copy-result").textContent = "";
    };
    // Cleared as the panel closes, however it closes (button or Escape).
    dialog.addEventListener("cancel", clear);
    dialog.addEventListener("close", clear);
    $("secret-done").addEventListener("click", function () {
      clear();
      dialog.close();
    });
    $("copy-secret").addEventListener("click", function () {
      var result = $("copy-result");
      var fallback = function () {
        input.focus();
        input.select();
        var copied = false;
        try {
          copied = document.execCommand("copy");
        } catch (e) {
          copied = false;
        }
        result.textContent = copied ? "Copied to the clipboard." : "Copy failed: select the token and copy it yourself.";
      };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(input.value).then(function () {
          result.textContent = "Copied to the clipboard.";
        }, fallback);
      } else {
        fallback();
      }
    });
  }

  // -- the token list -------------------------------------------------------

  var listState = { offset: 0, total: 0, status: "", group: "" };
  var knownGroups = {};

  var STATUS_LABELS = { active: "Active", expiring: "Expiring", expired: "Expired", revoked: "Revoked" };

  function cell(label, children) {
    // One wrapper per cell: on narrow screens the cell is a "label | content" grid.
    var td = el("td", {}, [el("div", { className: "cell" }, children)]);
    td.setAttribute("data-label", label);
    return td;
  }

  function actionButton(text, token, handler, className) {
    var button = el("button", {
      className: "button small " + (className || "subtle"),
      text: text,
      attrs: { type: "button", "aria-label": text + " " + token.name }
    });
    button.addEventListener("click", function () {
      handler(token, button);
    });
    return button;
  }

  function renderRow(token) {
    var nameCell = [
      el("span", { className: "token-name mono", text: token.name }),
      el("span", { className: "token-prefix mono muted", text: token.tokenPrefix + "…", attrs: { title: "Token prefix" } })
    ];
    if (token.description) nameCell.push(el("span", { className: "token-description", text: token.description }));

    var status = el("span", { className: "chip status-" + token.status, text: STATUS_LABELS[token.status] || token.status });
    var statusChildren = [status];
    if (token.status === "revoked" && token.revokedBy) {
      statusChildren.push(el("span", { className: "muted small-text", text: "by " + token.revokedBy }));
    }

    var scopes = el(
      "ul",
      { className: "scope-list" },
      (token.scopes || []).map(function (scope) {
        return el("li", {}, [el("code", { text: scope })]);
      })
    );

    var created = [timeNode(token.createdAt)];
    if (token.createdBy) created.push(el("span", { className: "muted small-text", text: "by " + token.createdBy }));

    var actions = [actionButton("Audit", token, openAudit)];
    if (token.status === "active" || token.status === "expiring") {
      actions.push(actionButton("Rotate", token, openRotate));
    }
    if (token.status !== "revoked") {
      actions.push(actionButton("Revoke", token, openRevoke, "danger-subtle"));
    }

    var cells = [cell("Name", nameCell), cell("Status", statusChildren)];
    if (KIND === "service") {
      var group = token.groupEntityRef || "";
      knownGroups[group] = true;
      cells.push(cell("Group", [el("code", { text: group })]));
    }
    cells.push(
      cell("Scopes", [scopes]),
      cell("Created", created),
      cell("Expires", [timeNode(token.expiresAt)]),
      cell("Last used", [timeNode(token.lastUsedAt, "Never")]),
      cell("Actions", [el("div", { className: "row-actions" }, actions)])
    );
    var row = el("tr", { attrs: { "data-token-id": token.id, "data-token-name": token.name } }, cells);
    return row;
  }

  function refreshGroupOptions() {
    var list = $("group-options");
    if (!list) return;
    list.textContent = "";
    Object.keys(knownGroups)
      .sort()
      .forEach(function (group) {
        if (group) list.appendChild(el("option", { attrs: { value: group } }));
      });
  }

  function loadTokens() {
    var params = new URLSearchParams();
    params.set("limit", String(PAGE_SIZE));
    params.set("offset", String(listState.offset));
    if (listState.status) params.set("status", listState.status);
    if (listState.group) params.set("groupEntityRef", listState.group);
    var table = $("tokens");
    table.setAttribute("aria-busy", "true");
    return api("GET", "/" + KIND + "/?" + params.toString())
      .then(function (data) {
        var rows = $("token-rows");
        rows.textContent = "";
        data.tokens.forEach(function (token) {
          rows.appendChild(renderRow(token));
        });
        refreshGroupOptions();
        listState.total = data.total;
        if (data.tokens.length === 0 && listState.offset > 0 && data.total > 0) {
          listState.offset = Math.max(0, (Math.ceil(data.total / PAGE_SIZE) - 1) * PAGE_SIZE);
          return loadTokens();
        }
        $("loading").hidden = true;
        $("empty").hidden = data.tokens.length > 0;
        var first = data.total === 0 ? 0 : listState.offset + 1;
        var last = listState.offset + data.tokens.length;
        $("page-info").textContent = data.total === 0 ? "No tokens" : "Showing " + first + "–" + last + " of " + data.total;
        $("prev-page").disabled = listState.offset === 0;
        $("next-page").disabled = last >= data.total;
      })
      .catch(function (error) {
        $("loading").hidden = true;
        if (error.status === 403) {
          showRefusal(error.message);
        } else if (error.status !== 401) {
          announce(messageOf(error));
          $("page-info").textContent = messageOf(error);
        }
      })
      .then(function () {
        table.removeAttribute("aria-busy");
      });
  }

  function showRefusal(detail) {
    var main = $("main");
    main.textContent = "";
    var heading = el("h1", {
      attrs: { id: "refusal-title", tabindex: "-1" },
      text:
        KIND === "personal"
          ? "You do not have permission to manage personal access tokens"
          : "You do not have permission to manage access tokens"
    });
    var section = el("section", { className: "panel narrow-panel refusal", attrs: { "aria-labelledby": "refusal-title" } }, [
      heading,
      el("p", { text: (detail ? detail + ". " : "") + "Ask an administrator of this Backstage instance if you need access." })
    ]);
    main.appendChild(section);
    heading.focus();
  }

  function wireFilters() {
    var form = $("filters");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      listState.status = $("filter-status").value;
      var group = $("filter-group");
      listState.group = group ? group.value.trim() : "";
      listState.offset = 0;
      loadTokens().then(function () {
        announce("Filters applied: " + (listState.total === 1 ? "1 token" : listState.total + " tokens") + ".");
      });
    });
    $("filter-status").addEventListener("change", function () {
      form.requestSubmit();
    });
    form.addEventListener("reset", function () {
      window.setTimeout(function () {
        form.requestSubmit();
      }, 0);
    });
    $("prev-page").addEventListener("click", function () {
      listState.offset = Math.max(0, listState.offset - PAGE_SIZE);
      loadTokens();
    });
    $("next-page").addEventListener("click", function () {
      listState.offset += PAGE_SIZE;
      loadTokens();
    });
  }

  // -- create, revoke, rotate, audit ----------------------------------------

  function wireExpiryHint(input) {
    var hint = document.querySelector('[data-expiry-hint-for="' + input.id + '"]');
    if (!hint) return;
    var max = hint.textContent;
    var update = function () {
      var days = parseInt(input.value, 10);
      hint.textContent = days > 0 ? "Expires on " + dateAfterDays(days) + ". " + max : max;
    };
    input.addEventListener("input", update);
    update();
  }

  function withBusy(form, promise) {
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (button) {
      button.disabled = true;
    });
    form.setAttribute("aria-busy", "true");
    return promise.then(
      function (value) {
        buttons.forEach(function (button) {
          button.disabled = false;
        });
        form.removeAttribute("aria-busy");
        return value;
      },
      function (error) {
        buttons.forEach(function (button) {
          button.disabled = false;
        });
        form.removeAttribute("aria-busy");
        throw error;
      }
    );
  }

  function wireCreate() {
    var dialog = $("create-dialog");
    var form = $("create-form");
    var error = $("create-error");
    var openButton = $("open-create");
    openButton.addEventListener("click", function () {
      showError(error, "");
      openDialog(dialog, $("create-name"));
    });
    wireExpiryHint($("create-days"));
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      showError(error, "");
      if (!form.reportValidity()) return;
      var scopes = Array.prototype.map.call(form.querySelectorAll('input[name="scopes"]:checked'), function (box) {
        return box.value;
      });
      if (scopes.length === 0) {
        showError(error, "Choose at least one scope.");
        var first = form.querySelector('input[name="scopes"]');
        if (first) first.focus();
        return;
      }
      var payload = {
        name: $("create-name").value.trim(),
        description: $("create-description").value,
        scopes: scopes,
        expiresInDays: parseInt($("create-days").value, 10)
      };
      if (KIND === "service") payload.groupEntityRef = $("create-group").value.trim();
      withBusy(form, api("POST", "/" + KIND + "/", payload))
        .then(function (data) {
          form.reset();
          dialog.close();
          showSecret(data.token.name, data.rawToken, openButton);
          announce("Token " + data.token.name + " created. Copy it now: it is shown only once.");
          loadTokens();
        })
        .catch(function (failure) {
          showError(error, messageOf(failure));
        });
    });
  }

  var current = { revoke: null, rotate: null };

  function setDialogToken(dialog, token) {
    dialog.querySelectorAll("[data-token-name]").forEach(function (node) {
      node.textContent = token.name;
    });
  }

  function openRevoke(token) {
    var dialog = $("revoke-dialog");
    current.revoke = token;
    $("revoke-form").reset();
    showError($("revoke-error"), "");
    setDialogToken(dialog, token);
    openDialog(dialog, $("revoke-reason"));
  }

  function openRotate(token) {
    var dialog = $("rotate-dialog");
    current.rotate = token;
    $("rotate-form").reset();
    showError($("rotate-error"), "");
    setDialogToken(dialog, token);
    openDialog(dialog, $("rotate-days"));
  }

  function wireRevoke() {
    var form = $("revoke-form");
    var dialog = $("revoke-dialog");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var token = current.revoke;
      if (!token || !form.reportValidity()) return;
      var reason = $("revoke-reason").value.trim();
      withBusy(form, api("POST", "/" + KIND + "/" + encodeURIComponent(token.id) + "/revoke", { reason: reason }))
        .then(function () {
          dialog.close();
          announce("Token " + token.name + " revoked.");
          return loadTokens();
        })
        .catch(function (failure) {
          showError($("revoke-error"), messageOf(failure));
        });
    });
  }

  function wireRotate() {
    var form = $("rotate-form");
    var dialog = $("rotate-dialog");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var token = current.rotate;
      if (!token || !form.reportValidity()) return;
      var payload = {
        expiresInDays: parseInt($("rotate-days").value, 10),
        graceSeconds: parseInt($("rotate-grace").value, 10) || 0
      };
      withBusy(form, api("POST", "/" + KIND + "/" + encodeURIComponent(token.id) + "/rotate", payload))
        .then(function (data) {
          var back = dialog.returnFocusTo;
          dialog.close();
          showSecret(data.token.name, data.rawToken, back);
          announce("Token " + data.token.name + " rotated. Copy the new secret now.");
          loadTokens();
        })
        .catch(function (failure) {
          showError($("rotate-error"), messageOf(failure));
        });
    });
  }

  var EVENT_LABELS = {
    created: "Created",
    revoked: "Revoked",
    rotated: "Rotated",
    updated: "Updated",
    used: "Used",
    first_used: "First use",
    old_secret_used: "Old secret used",
    failed_use: "Refused use",
    expired: "Expired"
  };

  function detailsOf(metadata) {
    var keys = Object.keys(metadata || {});
    if (keys.length === 0) return [el("span", { className: "muted", text: "—" })];
    return [
      el(
        "dl",
        { className: "details" },
        keys.reduce(function (nodes, key) {
          var value = metadata[key];
          var text =
            value === null
              ? "—"
              : Array.isArray(value)
                ? value.join(", ")
                : typeof value === "object"
                  ? JSON.stringify(value)
                  : String(value);
          nodes.push(el("dt", { text: key }));
          nodes.push(el("dd", { text: text }));
          return nodes;
        }, [])
      )
    ];
  }

  function openAudit(token) {
    var dialog = $("audit-dialog");
    var rows = $("audit-rows");
    var error = $("audit-error");
    rows.textContent = "";
    showError(error, "");
    setDialogToken(dialog, token);
    openDialog(dialog, dialog.querySelector("[data-close]"));
    dialog.setAttribute("aria-busy", "true");
    api("GET", "/" + KIND + "/" + encodeURIComponent(token.id) + "/audit")
      .then(function (data) {
        data.events.forEach(function (event) {
          rows.appendChild(
            el("tr", { attrs: { "data-event": event.event } }, [
              cell("When", [timeNode(event.occurredAt)]),
              cell("Event", [el("span", { className: "chip event-" + event.event, text: EVENT_LABELS[event.event] || event.event })]),
              cell("Actor", [el("span", { text: event.actor || "—" })]),
              cell("Details", detailsOf(event.metadata))
            ])
          );
        });
        if (data.events.length === 0) {
          rows.appendChild(el("tr", {}, [el("td", { text: "No events recorded.", attrs: { colspan: "4" } })]));
        }
      })
      .catch(function (failure) {
        showError(error, messageOf(failure));
      })
      .then(function () {
        dialog.removeAttribute("aria-busy");
      });
  }

  // -- start ----------------------------------------------------------------

  function start() {
    configure();
    listState = { offset: 0, total: 0, status: "", group: "" };
    knownGroups = {};
    document.querySelectorAll(".signin-controls").forEach(wireSignIn);
    var signOutButton = $("sign-out");
    if (signOutButton) signOutButton.addEventListener("click", signOut);
    if (config.page !== "tokens") return;
    wireDialogs();
    wireSecretPanel();
    wireFilters();
    wireCreate();
    wireRevoke();
    wireRotate();
    if (!getToken()) {
      $("loading").hidden = true;
      showReauth();
      return;
    }
    loadTokens();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
