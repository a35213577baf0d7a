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

  var config, KIND, API, EXPIRING_DAYS, MAX_DAYS;
  var PAGE_SIZE = 20;
  // The user token: in memory, for the life of this page only.
  var userToken = null;

  function configure() {
    config = document.body.dataset;
    KIND = config.kind === "personal" ? "personal" : "service";
    API = config.apiBase || "/api/access-tokens";
    EXPIRING_DAYS = parseInt(config.expiringDays, 10) || 7;
    MAX_DAYS = parseInt(config.maxDays, 10) || 365;
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

  // Without a user token in memory the page is read-only: the list (read
  // with the backstage-auth cookie) stays, every change is disabled.
  function showReauth(quiet) {
    var panel = $("reauth");
    if (!panel || !panel.hidden) return;
    panel.hidden = false;
    disableChanges();
    document.querySelectorAll("dialog[open]").forEach(function (dialog) {
      // The one-time secret is never taken away from the user.
      if (dialog.id !== "secret-dialog") dialog.close();
    });
    var heading = $("reauth-title");
    if (heading && !quiet) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
  }

  function disableChanges() {
    document.querySelectorAll("[data-needs-token]").forEach(function (node) {
      node.disabled = true;
      node.title = "Sign in again to change tokens";
    });
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
    $("secret-confirm").hidden = true;
    $("secret-actions").hidden = false;
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
    var confirmBox = $("secret-confirm");
    var askFirst = function () {
      confirmBox.hidden = false;
      $("secret-actions").hidden = true;
      $("secret-keep").focus();
    };
    var keepOpen = function () {
      confirmBox.hidden = true;
      $("secret-actions").hidden = false;
      input.focus();
      input.select();
    };
    // Escape or a click beside the panel could lose the secret by accident:
    // they ask first. The secret is cleared as the panel closes.
    dialog.addEventListener("cancel", function (event) {
      event.preventDefault();
      if (confirmBox.hidden) askFirst();
      else keepOpen();
    });
    dialog.addEventListener("click", function (event) {
      if (event.target === dialog) askFirst();
    });
    dialog.addEventListener("close", function () {
      clear();
      keepOpen();
    });
    $("secret-keep").addEventListener("click", keepOpen);
    // Cleared before the panel closes: its "close" event comes a task later.
    $("secret-discard").addEventListener("click", function () {
      clear();
      dialog.close();
    });
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

  var listState = { offset: 0, total: 0, status: "active", group: "" };
  var STATUSES = ["active", "expiring", "expired", "revoked", "all"];

  // Filters live in the URL (?status=&group=&offset=): a link or a reload keeps them.
  function stateFromUrl() {
    var params = new URLSearchParams(window.location.search);
    var status = params.get("status");
    var offset = parseInt(params.get("offset"), 10);
    return {
      offset: offset > 0 ? offset - (offset % PAGE_SIZE) : 0,
      total: 0,
      status: STATUSES.indexOf(status) >= 0 ? status : "active",
      group: KIND === "service" ? normalizeGroup(params.get("group") || "") : ""
    };
  }

  function stateToUrl() {
    var params = new URLSearchParams();
    if (listState.status !== "active") params.set("status", listState.status);
    if (listState.group) params.set("group", listState.group);
    if (listState.offset) params.set("offset", String(listState.offset));
    var query = params.toString();
    window.history.replaceState(null, "", window.location.pathname + (query ? "?" + query : ""));
  }

  function showFilters() {
    $("filter-status").value = listState.status;
    var group = $("filter-group");
    if (group) group.value = listState.group;
  }

  // What the API and the CLI accept for a group: "team-a", "group:team-a",
  // "group:default/team-a" (the API adds the default namespace).
  function normalizeGroup(value) {
    var group = (value || "").trim().toLowerCase();
    if (!group) return "";
    if (group.indexOf("group:") !== 0) group = "group:" + group;
    return group.indexOf("/") < 0 ? "group:default/" + group.slice("group:".length) : group;
  }
  var knownGroups = {};

  var STATUS_LABELS = { active: "Active", expiring: "Expiring", expired: "Expired", revoked: "Revoked" };

  function cell(label, children) {
    // One wrapper per cell: on narrow screens the cell is a "label | content" grid.
    var td = el("td", {}, [el("div", { className: "cell" }, children)]);
    td.setAttribute("data-label", label);
    return td;
  }

  function actionButton(text, token, handler, className, changes) {
    var button = el("button", {
      className: "button small " + (className || "subtle"),
      text: text,
      attrs: { type: "button", "aria-label": text + " " + token.name }
    });
    if (changes) {
      button.setAttribute("data-needs-token", "");
      if (!getToken()) {
        button.disabled = true;
        button.title = "Sign in again to change tokens";
      }
    }
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
    if (token.status === "expiring") status.title = "Expires within " + EXPIRING_DAYS + " days";
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
      actions.push(actionButton("Edit", token, openEdit, "subtle", true));
      actions.push(actionButton("Rotate", token, openRotate, "subtle", true));
    }
    if (token.status !== "revoked") {
      actions.push(actionButton("Revoke", token, openRevoke, "danger-subtle", true));
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
    if (listState.status !== "all") params.set("status", listState.status);
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
          stateToUrl();
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
        } else {
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
      listState.group = group ? normalizeGroup(group.value) : "";
      if (group) group.value = listState.group;
      listState.offset = 0;
      stateToUrl();
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
      stateToUrl();
      loadTokens();
    });
    $("next-page").addEventListener("click", function () {
      listState.offset += PAGE_SIZE;
      stateToUrl();
      loadTokens();
    });
  }

  // -- create, revoke, rotate, audit ----------------------------------------

  // -- field errors ---------------------------------------------------------

  // The API names a field by its JSON name at the start of a 400's message;
  // the page shows the message next to that field, in words.
  var FIELDS = {
    name: ["name", "The name"],
    description: ["description", "The description"],
    groupEntityRef: ["group", "The owning group"],
    scopes: ["scopes", "Scopes"],
    expiresInDays: ["expiry", "The expiration"],
    expiresAt: ["expiry", "The expiration"],
    graceSeconds: ["grace", "The grace period"]
  };

  function clearFieldErrors(form) {
    form.querySelectorAll(".field-error").forEach(function (node) {
      node.textContent = "";
      node.hidden = true;
    });
    form.querySelectorAll("[aria-invalid]").forEach(function (node) {
      node.removeAttribute("aria-invalid");
    });
  }

  function fieldError(prefix, field, message) {
    var node = $(prefix + "-" + field + "-error");
    if (!node) return false;
    node.textContent = message;
    node.hidden = false;
    var control = $(prefix + "-" + field) || $(prefix + "-" + field + "-list");
    if (field === "expiry" && $(prefix + "-date") && !$(prefix + "-date").hidden) control = $(prefix + "-date");
    if (control) {
      control.setAttribute("aria-invalid", "true");
      var focusable = control.matches("input, select, textarea") ? control : control.querySelector("input");
      if (focusable) focusable.focus();
    }
    return true;
  }

  function showFailure(prefix, failure, formError) {
    var message = messageOf(failure);
    var match = /^(\w+)\b/.exec(message);
    var field = match && Object.prototype.hasOwnProperty.call(FIELDS, match[1]) ? FIELDS[match[1]] : null;
    if (field && fieldError(prefix, field[0], field[1] + message.slice(match[1].length) + ".")) return;
    if (failure && failure.status === 409 && /named/.test(message) && fieldError(prefix, "name", message + ". Choose another name.")) return;
    showError(formError, message);
  }

  // -- expiry and grace -----------------------------------------------------

  function isoDate(date) {
    var month = String(date.getMonth() + 1).padStart(2, "0");
    var day = String(date.getDate()).padStart(2, "0");
    return date.getFullYear() + "-" + month + "-" + day;
  }

  function wireExpiry(prefix) {
    var select = $(prefix + "-expiry");
    var date = $(prefix + "-date");
    var hint = $(prefix + "-expiry-hint");
    if (!select) return;
    var max = hint.dataset.maxText;
    var update = function () {
      var custom = select.value === "custom";
      date.hidden = !custom;
      date.required = custom;
      var tomorrow = new Date(Date.now() + 86400 * 1000);
      date.min = isoDate(tomorrow);
      date.max = isoDate(new Date(Date.now() + MAX_DAYS * 86400 * 1000));
      var days = select.value === "max" ? MAX_DAYS : parseInt(select.value, 10);
      if (custom) {
        hint.textContent = date.value ? "Expires at the end of " + new Date(date.value + "T23:59:59").toLocaleDateString() + ". " + max : max;
      } else {
        hint.textContent = "Expires on " + dateAfterDays(days) + ". " + max;
      }
    };
    select.addEventListener("change", function () {
      update();
      if (select.value === "custom") date.focus();
    });
    date.addEventListener("input", update);
    update();
  }

  function resetExpiry(prefix) {
    var select = $(prefix + "-expiry");
    if (!select) return;
    select.selectedIndex = Array.prototype.findIndex.call(select.options, function (option) {
      return option.defaultSelected;
    });
    if (select.selectedIndex < 0) select.selectedIndex = 0;
    $(prefix + "-date").value = "";
    select.dispatchEvent(new Event("change"));
  }

  // The expiry the form asks for, as API fields; null (with the error shown) when invalid.
  function expiryPayload(prefix) {
    var select = $(prefix + "-expiry");
    if (select.value === "max") return { expiresInDays: MAX_DAYS };
    if (select.value !== "custom") return { expiresInDays: parseInt(select.value, 10) };
    var value = $(prefix + "-date").value;
    if (!value) {
      fieldError(prefix, "expiry", "Choose the date the token expires.");
      return null;
    }
    var end = new Date(value + "T23:59:59");
    var days = (end.getTime() - Date.now()) / 86400000;
    if (isNaN(days) || days <= 0 || days > MAX_DAYS + 1) {
      fieldError(prefix, "expiry", "Choose a date between tomorrow and " + MAX_DAYS + " days from now.");
      return null;
    }
    if (days > MAX_DAYS) end = new Date(Date.now() + MAX_DAYS * 86400000);
    return { expiresAt: end.toISOString() };
  }

  function gracePayload() {
    var amount = parseInt($("rotate-grace").value, 10) || 0;
    var unit = parseInt($("rotate-grace-unit").value, 10) || 60;
    var max = parseInt($("rotate-grace-hint").dataset.maxSeconds, 10) || 0;
    var seconds = amount * unit;
    if (amount < 0 || seconds > max) {
      fieldError("rotate", "grace", "The grace period can be at most " + Math.floor(max / 60) + " minutes (" + max / 3600 + " hours).");
      return null;
    }
    return seconds;
  }

  function withBusy(form, promise) {
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (button) {
      button.disabled = true;
    });
    form.setAttribute("aria-busy", "true");
    var done = function () {
      buttons.forEach(function (button) {
        button.disabled = false;
      });
      form.removeAttribute("aria-busy");
    };
    return promise.then(
      function (value) {
        done();
        return value;
      },
      function (error) {
        done();
        throw error;
      }
    );
  }

  // -- create, edit, revoke, rotate, audit -----------------------------------

  function wireCreate() {
    var dialog = $("create-dialog");
    var form = $("create-form");
    var error = $("create-error");
    var openButton = $("open-create");
    openButton.addEventListener("click", function () {
      showError(error, "");
      clearFieldErrors(form);
      openDialog(dialog, $("create-name"));
    });
    wireExpiry("create");
    form.addEventListener("reset", function () {
      window.setTimeout(function () {
        resetExpiry("create");
      }, 0);
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      showError(error, "");
      clearFieldErrors(form);
      var name = $("create-name");
      if (!name.value.trim()) return fieldError("create", "name", "Give the token a name.");
      if (!name.checkValidity()) return fieldError("create", "name", "Use lower-case letters, digits and dashes only (at most 100).");
      var group = $("create-group");
      if (group && !normalizeGroup(group.value)) return fieldError("create", "group", "Name the group that owns the token.");
      var scopes = Array.prototype.map.call(form.querySelectorAll('input[name="scopes"]:checked'), function (box) {
        return box.value;
      });
      if (scopes.length === 0) return fieldError("create", "scopes", "Choose at least one scope.");
      var expiry = expiryPayload("create");
      if (!expiry) return;
      var payload = Object.assign(
        { name: name.value.trim(), description: $("create-description").value, scopes: scopes },
        expiry
      );
      if (group) {
        payload.groupEntityRef = normalizeGroup(group.value);
        group.value = payload.groupEntityRef;
      }
      withBusy(form, api("POST", "/" + KIND + "/", payload))
        .then(function (data) {
          form.reset();
          dialog.close();
          showSecret(data.token.name, data.rawToken, openButton);
          announce("Token " + data.token.name + " created. Copy it now: it is shown only once.");
          loadTokens();
        })
        .catch(function (failure) {
          showFailure("create", failure, error);
        });
    });
  }

  var current = { revoke: null, rotate: null, edit: null };

  function setDialogToken(dialog, token) {
    dialog.querySelectorAll("[data-token-name]").forEach(function (node) {
      node.textContent = token.name;
    });
  }

  function openEdit(token) {
    var dialog = $("edit-dialog");
    var form = $("edit-form");
    current.edit = token;
    form.reset();
    clearFieldErrors(form);
    showError($("edit-error"), "");
    setDialogToken(dialog, token);
    $("edit-name").value = token.name;
    $("edit-description").value = token.description || "";
    var list = $("edit-scope-list");
    list.textContent = "";
    (token.scopes || []).forEach(function (scope, index) {
      var id = "edit-scope-" + index;
      var box = el("input", { attrs: { type: "checkbox", id: id, name: "scopes", value: scope } });
      box.checked = true;
      list.appendChild(el("div", { className: "check" }, [box, el("label", { attrs: { for: id } }, [el("code", { text: scope })])]));
    });
    openDialog(dialog, $("edit-name"));
  }

  function wireEdit() {
    var form = $("edit-form");
    var dialog = $("edit-dialog");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var token = current.edit;
      if (!token) return;
      clearFieldErrors(form);
      showError($("edit-error"), "");
      var payload = {};
      var name = $("edit-name").value.trim();
      if (!name || !$("edit-name").checkValidity()) return fieldError("edit", "name", "Use lower-case letters, digits and dashes only (at most 100).");
      if (name !== token.name) payload.name = name;
      var description = $("edit-description").value;
      if (description !== (token.description || "")) payload.description = description;
      var scopes = Array.prototype.map.call(form.querySelectorAll('input[name="scopes"]:checked'), function (box) {
        return box.value;
      });
      if (scopes.length === 0) return fieldError("edit", "scopes", "Keep at least one scope, or revoke the token.");
      if (scopes.length !== (token.scopes || []).length) payload.scopes = scopes;
      if (Object.keys(payload).length === 0) return showError($("edit-error"), "Nothing changed.");
      withBusy(form, api("PATCH", "/" + KIND + "/" + encodeURIComponent(token.id), payload))
        .then(function (updated) {
          dialog.close();
          announce("Token " + updated.name + " saved.");
          return loadTokens();
        })
        .catch(function (failure) {
          showFailure("edit", failure, $("edit-error"));
        });
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
    var form = $("rotate-form");
    current.rotate = token;
    form.reset();
    clearFieldErrors(form);
    resetExpiry("rotate");
    showError($("rotate-error"), "");
    setDialogToken(dialog, token);
    openDialog(dialog, $("rotate-expiry"));
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
    wireExpiry("rotate");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var token = current.rotate;
      if (!token) return;
      clearFieldErrors(form);
      showError($("rotate-error"), "");
      var expiry = expiryPayload("rotate");
      if (!expiry) return;
      var grace = gracePayload();
      if (grace === null) return;
      var payload = Object.assign({ graceSeconds: grace }, expiry);
      withBusy(form, api("POST", "/" + KIND + "/" + encodeURIComponent(token.id) + "/rotate", payload))
        .then(function (data) {
          var back = dialog.returnFocusTo;
          dialog.close();
          showSecret(data.token.name, data.rawToken, back);
          announce("Token " + data.token.name + " rotated. Copy the new secret now.");
          loadTokens();
        })
        .catch(function (failure) {
          showFailure("rotate", failure, $("rotate-error"));
        });
    });
  }

  var EVENT_LABELS = {
    created: "Created",
    revoked: "Revoked",
    rotated: "Rotated (new secret)",
    updated: "Edited",
    used: "First used",
    first_used: "First used",
    old_secret_used: "Old secret used (grace)",
    failed_use: "Refused use",
    expired: "Expired",
    leaked: "Reported as leaked"
  };

  var DETAIL_LABELS = {
    reason: "Reason",
    scopes: "Scopes",
    expiresAt: "Expires",
    graceUntil: "Old secret works until",
    name: "New name",
    description: "Description changed"
  };

  function detailText(key, value) {
    if (value === null || value === undefined) return "—";
    if (value === true) return "yes";
    if (Array.isArray(value)) return value.join(", ");
    if ((key === "expiresAt" || key === "graceUntil") && typeof value === "string") {
      var date = new Date(value);
      if (!isNaN(date.getTime())) return date.toLocaleString();
    }
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  function detailsOf(metadata) {
    var keys = Object.keys(metadata || {}).filter(function (key) {
      return key !== "ip";
    });
    if (keys.length === 0) return [el("span", { className: "muted", text: "—" })];
    return [
      el(
        "dl",
        { className: "details" },
        keys.reduce(function (nodes, key) {
          nodes.push(el("dt", { text: DETAIL_LABELS[key] || key }));
          nodes.push(el("dd", { text: detailText(key, metadata[key]) }));
          return nodes;
        }, [])
      )
    ];
  }

  // Audit times in the reader's local time zone, in full (the relative form is the tooltip).
  function localTimeNode(iso) {
    var date = new Date(iso);
    if (!iso || isNaN(date.getTime())) return el("span", { text: iso || "—" });
    return el("time", { text: date.toLocaleString(), attrs: { datetime: iso, title: relativeText(date) } });
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
          var ip = event.metadata && event.metadata.ip;
          rows.appendChild(
            el("tr", { attrs: { "data-event": event.event } }, [
              cell("When", [localTimeNode(event.occurredAt)]),
              cell("Action", [el("span", { className: "chip event-" + event.event, text: EVENT_LABELS[event.event] || event.event })]),
              cell("By", [el("span", { text: event.actor || "—" })]),
              cell("Client address", [el("span", { className: ip ? "mono" : "muted", text: ip || "—" })]),
              cell("Details", detailsOf(event.metadata))
            ])
          );
        });
        if (data.events.length === 0) {
          rows.appendChild(el("tr", {}, [el("td", { text: "No events recorded.", attrs: { colspan: "5" } })]));
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
    listState = stateFromUrl();
    knownGroups = {};
    document.querySelectorAll(".signin-controls").forEach(wireSignIn);
    var signOutButton = $("sign-out");
    if (signOutButton) signOutButton.addEventListener("click", signOut);
    if (config.page !== "tokens") return;
    wireDialogs();
    wireSecretPanel();
    wireFilters();
    wireCreate();
    wireEdit();
    wireRevoke();
    wireRotate();
    showFilters();
    // Without a token in memory (a reload, a new tab) the list is read with
    // the backstage-auth cookie, read-only.
    if (!getToken()) showReauth(true);
    loadTokens();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
