"""End to end: the access-token pages in headless Chromium against the example app."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
import requests
from flask import Flask

from flask_backstage_auth import AuthBackend
from tests.browser.conftest import Served

if t.TYPE_CHECKING:  # pragma: no cover
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.browser

ADMIN = "/admin/access-tokens"
COOKIE_URL = "/api/access-tokens/.backstage/auth/v1/cookie"
TIMEOUT = 10_000  # ms


class PageErrors:
    """Console errors and page exceptions (a CSP violation is one)."""

    def __init__(self, page: Page) -> None:
        self.messages: list[str] = []
        self.urls: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", self._page_error)

    def _console(self, message: t.Any) -> None:
        url = (message.location or {}).get("url", "")
        # The browser's own favicon request meets the 401 that every URL no
        # policy opens gets; it is no request of the page.
        if message.type == "error" and not url.endswith("/favicon.ico"):
            self.messages.append(message.text)
            self.urls.append(url)

    def _page_error(self, error: t.Any) -> None:
        self.messages.append(str(error))
        self.urls.append("")

    def without_sign_in_page(self, base: str) -> list[str]:
        """The messages, less the 401 of the sign-in page itself (its console
        message may arrive after the page has moved on)."""
        return [
            message
            for message, url in zip(self.messages, self.urls)
            if not (" 401 " in message and url == base + ADMIN)
        ]


def new_context(browser: Browser, base_url: str, **options: t.Any) -> BrowserContext:
    context = browser.new_context(base_url=base_url, **options)
    context.set_default_timeout(TIMEOUT)
    return context


def api_get(base: str, path: str, token: str) -> requests.Response:
    return requests.get(base + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def row(page: Page, name: str) -> t.Any:
    return page.locator(f'tr[data-token-name="{name}"]')


def web_storage(page: Page) -> dict[str, t.Any]:
    """Everything in the page's sessionStorage and localStorage, and its readable cookies."""
    return t.cast(
        t.Dict[str, t.Any],
        page.evaluate(
            """() => ({
                session: Object.assign({}, sessionStorage),
                local: Object.assign({}, localStorage),
                cookie: document.cookie,
            })"""
        ),
    )


REAUTH = "Read-only: sign in again to change tokens"


def sign_in_again_as_guest(page: Page) -> None:
    """After a reload the page has no token (it lives in memory only): read-only until
    the user signs in again."""
    page.get_by_role("heading", name=REAUTH).wait_for()
    assert page.locator("#open-create").is_disabled()
    page.locator("#reauth").get_by_role("button", name="Sign in as guest").click()
    page.locator("#reauth").wait_for(state="hidden")


def test_admin_creates_uses_revokes_and_audits_a_token(
    browser: Browser, live_app: tuple[Flask, str], screenshots: Path
) -> None:
    app, base = live_app
    context = new_context(browser, base, viewport={"width": 1366, "height": 860})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page = context.new_page()
    errors = PageErrors(page)

    # Not signed in: the sign-in page; in development, as the guest.
    response = page.goto(ADMIN)
    assert response is not None and response.status == 401
    page.get_by_role("heading", name="Sign in to manage access tokens").wait_for()
    page.screenshot(path=str(screenshots / "01-sign-in.png"), full_page=True)
    page.get_by_role("button", name="Sign in as guest").click()
    page.get_by_role("heading", name="Service access tokens").wait_for()
    assert page.locator(".identity-ref").inner_text() == "user:development/guest"
    assert context.cookies(base)[0]["name"] == "backstage-auth"
    assert page.locator("#reauth").is_hidden()  # signed in without a reload
    assert errors.messages == [
        "Failed to load resource: the server responded with a status of 401 (UNAUTHORIZED)"
    ]  # the sign-in page itself is a 401
    errors.messages.clear()

    # Create ci-reader, keyboard and labels only.
    page.get_by_role("button", name="Create token").click()
    dialog = page.get_by_role("dialog", name="Create a service token")
    dialog.wait_for()
    assert page.evaluate("document.activeElement.id") == "create-name"
    page.locator("#create-name").fill("ci-reader")
    page.locator("#create-description").fill("Reads the catalog for CI <b>not bold</b>")
    page.get_by_label("Owning group").fill("group:default/platform")
    page.get_by_role("checkbox", name="catalog:read").check()
    page.locator("#create-expiry").select_option("90")
    page.screenshot(path=str(screenshots / "03-create-form.png"))
    page.locator("#create-name").press("Enter")  # submits the form

    # The one-time secret panel.
    panel = page.get_by_role("dialog", name="Copy your new token now")
    panel.wait_for()
    secret = page.input_value("#secret-value")
    assert secret.startswith("bsat_") or len(secret) > 30, secret
    assert page.evaluate("document.activeElement.id") == "secret-value"
    assert "only time this token is shown" in panel.inner_text()
    page.get_by_role("button", name="Copy", exact=True).click()
    page.get_by_text("Copied to the clipboard.").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    page.screenshot(path=str(screenshots / "04-secret-panel.png"))
    page.get_by_role("button", name="I have stored it, close").click()
    panel.wait_for(state="hidden")
    assert page.input_value("#secret-value") == ""
    assert secret not in page.content()
    assert page.evaluate("document.activeElement.id") == "open-create"

    # The list shows it, active and never used; the description is text, not markup.
    ci = row(page, "ci-reader")
    ci.wait_for()
    assert "Active" in ci.inner_text()
    assert "Reads the catalog for CI <b>not bold</b>" in ci.inner_text()
    assert ci.locator("b").count() == 0
    assert ci.locator('td[data-label="Last used"]').inner_text() == "Never"
    page.screenshot(path=str(screenshots / "02-token-list.png"), full_page=True)

    # Use it like curl: the catalog answers, and "last used" fills in. A reload
    # forgets the user token (memory only): the page asks to sign in again.
    assert api_get(base, "/api/catalog/entities", secret).status_code == 200
    assert api_get(base, "/api/search/query", secret).status_code == 403  # not in its scopes
    page.reload()
    page.get_by_role("heading", name=REAUTH).wait_for()
    row(page, "ci-reader").wait_for()  # listed read-only, with the cookie
    page.screenshot(path=str(screenshots / "09-sign-in-again.png"))
    sign_in_again_as_guest(page)
    row(page, "ci-reader").wait_for()
    last_used = row(page, "ci-reader").locator('td[data-label="Last used"]')
    assert last_used.inner_text() != "Never"
    assert last_used.locator("time").count() == 1

    # Filters: by status and by group, paged by the API; revoked tokens
    # are found under their own status, not among the active ones.
    page.get_by_label("Status", exact=True).select_option("revoked")
    page.get_by_text("No tokens match these filters.").wait_for()
    page.get_by_label("Status", exact=True).select_option("active")
    row(page, "ci-reader").wait_for()
    page.get_by_label("Group", exact=True).fill("group:default/other")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_text("No tokens match these filters.").wait_for()
    page.get_by_role("button", name="Clear").click()
    row(page, "ci-reader").wait_for()

    # Revoke, with a reason, after confirming.
    row(page, "ci-reader").get_by_role("button", name="Revoke ci-reader").click()
    confirm = page.get_by_role("dialog", name="Revoke ci-reader?")
    confirm.wait_for()
    page.get_by_label("Reason").fill("rotated out of CI")
    confirm.get_by_role("button", name="Revoke token").click()
    confirm.wait_for(state="hidden")
    row(page, "ci-reader").wait_for(state="detached")  # no longer active
    page.get_by_label("Status", exact=True).select_option("revoked")
    page.locator('tr[data-token-name="ci-reader"] .status-revoked').wait_for()
    assert api_get(base, "/api/catalog/entities", secret).status_code == 401

    # The audit trail: created, used, revoked with the reason.
    row(page, "ci-reader").get_by_role("button", name="Audit ci-reader").click()
    audit = page.get_by_role("dialog", name="Audit trail of ci-reader")
    audit.wait_for()
    page.locator('#audit-rows tr[data-event="revoked"]').wait_for()
    events = page.locator("#audit-rows tr").evaluate_all("rows => rows.map(r => r.dataset.event)")
    assert events[-1] == "created" and "revoked" in events, events  # newest first
    revoked = page.locator('#audit-rows tr[data-event="revoked"]').inner_text()
    assert "rotated out of CI" in revoked and "user:development/guest" in revoked
    page.screenshot(path=str(screenshots / "05-audit.png"))
    page.keyboard.press("Escape")
    audit.wait_for(state="hidden")

    # A narrow screen: the table becomes cards, still usable.
    page.set_viewport_size({"width": 375, "height": 812})
    page.reload()
    sign_in_again_as_guest(page)
    row(page, "ci-reader").wait_for()  # the status filter lives in the URL: still "revoked"
    head = page.locator("table.tokens thead").bounding_box()
    assert head is None or head["height"] <= 1
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, width  # nothing overflows sideways
    page.screenshot(path=str(screenshots / "07-narrow.png"), full_page=True)

    assert errors.messages == []
    context.close()
    del app


def test_a_user_without_permission_sees_the_refusal(
    browser: Browser, live_app: tuple[Flask, str], screenshots: Path
) -> None:
    app, base = live_app
    token = AuthBackend.state(app).issuer.issue_token("user:default/nobody", []).token
    cookie = requests.get(
        base + COOKIE_URL, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert cookie.status_code == 200
    context = new_context(browser, base, viewport={"width": 1280, "height": 720})
    context.add_cookies(
        [{"name": "backstage-auth", "value": cookie.cookies["backstage-auth"], "url": base}]
    )
    page = context.new_page()
    errors = PageErrors(page)
    response = page.goto(ADMIN)
    assert response is not None and response.status == 403
    heading = page.get_by_role("heading", name="You do not have permission to manage access tokens")
    heading.wait_for()
    assert page.get_by_text("user:default/nobody").first.is_visible()
    page.screenshot(path=str(screenshots / "06-refusal.png"))
    # Their own personal tokens stay open to them.
    page.get_by_role("link", name="Manage your personal access tokens instead").click()
    page.get_by_role("heading", name="Personal access tokens").wait_for()
    # This tab holds only the cookie, not a user token for the API: read-only.
    page.get_by_role("heading", name=REAUTH).wait_for()
    page.get_by_text("No tokens match these filters.").wait_for()  # it did ask the API
    assert errors.messages == [
        "Failed to load resource: the server responded with a status of 403 (FORBIDDEN)"
    ]  # the refusal page itself
    context.close()


ATTACKER_PAGE = """<!doctype html><title>Win a prize</title>
<form id="create" method="post" enctype="text/plain" action="{victim}/api/access-tokens/service/">
<input type="hidden" name='{{"name":"forged","groupEntityRef":"group:default/evil","scopes":["catalog:read"],"x":"'
 value='"}}'><button>Create</button></form>
<form id="revoke" method="post" enctype="text/plain"
 action="{victim}/api/access-tokens/service/{token_id}/revoke">
<input type="hidden" name='{{"reason":"pwned","x":"' value='"}}'><button>Revoke</button></form>
"""


def test_a_forged_cross_site_post_is_refused(
    browser: Browser, live_app: tuple[Flask, str], screenshots: Path
) -> None:
    app, base = live_app
    guest = requests.post(base + "/api/auth/guest/refresh", timeout=10).json()
    token = guest["backstageIdentity"]["token"]
    headers = {"Authorization": f"Bearer {token}"}
    target = requests.post(
        base + "/api/access-tokens/service/",
        headers=headers,
        json={
            "name": "csrf-target",
            "groupEntityRef": "group:default/platform",
            "scopes": ["catalog:read"],
        },
        timeout=10,
    )
    assert target.status_code == 201
    token_id = target.json()["token"]["id"]

    # The victim's browser is signed in: it holds the backstage-auth cookie.
    context = new_context(browser, base)
    page = context.new_page()
    page.goto(ADMIN)
    page.evaluate(
        "([url, token]) => fetch(url, {headers: {Authorization: 'Bearer ' + token}})",
        [COOKIE_URL, token],
    )
    assert any(c["name"] == "backstage-auth" for c in context.cookies(base))

    html = ATTACKER_PAGE.format(victim=base, token_id=token_id)

    def attacker_app(environ: t.Any, start_response: t.Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [html.encode()]

    attacker = Served(attacker_app)
    try:
        assert attacker.url != base
        for form in ("create", "revoke"):
            page.goto(attacker.url)
            with page.expect_response(lambda r: r.request.method == "POST") as answer:
                page.locator(f"#{form} button").click()
            response = answer.value
            assert response.url.startswith(base)
            assert response.status == 401, (form, response.text())
            sent = response.request.all_headers()
            assert "backstage-auth=" in sent.get("cookie", ""), sent  # same-site: it was sent
            assert "Missing credentials" in response.text()
        page.screenshot(path=str(screenshots / "08-forged-post-refused.png"))
        # A script on the other origin fares no better (no CORS: an opaque answer).
        page.goto(attacker.url)
        page.evaluate(
            """url => fetch(url, {method: 'POST', mode: 'no-cors', credentials: 'include',
                 body: JSON.stringify({name: 'forged-fetch', groupEntityRef: 'group:default/evil',
                                       scopes: ['catalog:read']})})""",
            base + "/api/access-tokens/service/",
        )
    finally:
        attacker.close()
        context.close()

    listed = api_get(base, "/api/access-tokens/service/?limit=500", token).json()["tokens"]
    names = {t["name"]: t["status"] for t in listed}
    assert "forged" not in names and "forged-fetch" not in names
    assert names["csrf-target"] == "active"
    del app


def test_no_token_in_web_storage_after_sign_in_and_use(
    browser: Browser, live_app: tuple[Flask, str]
) -> None:
    """Same-origin HTML (a documentation page, say) finds no token to read."""
    _, base = live_app
    context = new_context(browser, base)
    page = context.new_page()
    errors = PageErrors(page)
    page.goto(ADMIN)
    with page.expect_response(lambda r: "/guest/refresh" in r.url) as answer:
        page.get_by_role("button", name="Sign in as guest").click()
    user_token = answer.value.json()["backstageIdentity"]["token"]
    page.get_by_role("heading", name="Service access tokens").wait_for()

    # Use the page: create a token, close its secret panel, rotate it.
    page.get_by_role("button", name="Create token").click()
    page.locator("#create-name").fill("storage-check")
    page.get_by_label("Owning group").fill("group:default/platform")
    page.get_by_role("checkbox", name="catalog:read").check()
    page.get_by_role("dialog", name="Create a service token").get_by_role(
        "button", name="Create token"
    ).click()
    page.get_by_role("dialog", name="Copy your new token now").wait_for()
    secret = page.input_value("#secret-value")
    page.get_by_role("button", name="I have stored it, close").click()
    row(page, "storage-check").get_by_role("button", name="Rotate storage-check").click()
    page.get_by_role("dialog", name="Rotate storage-check").get_by_role(
        "button", name="Rotate token"
    ).click()
    page.get_by_role("dialog", name="Copy your new token now").wait_for()
    rotated = page.input_value("#secret-value")
    page.get_by_role("button", name="I have stored it, close").click()

    stored = web_storage(page)
    assert stored == {"session": {}, "local": {}, "cookie": ""}, stored
    # The same tab moves on to documentation HTML of the same origin: nothing there either
    # (sessionStorage would have followed the tab; the cookie is HttpOnly).
    docs = page.goto("/api/techdocs/static/docs/index.html")
    assert docs is not None and docs.status == 200  # served with the cookie
    found = page.evaluate("window.found")  # what the page's own script saw
    assert found == {"session": {}, "local": {}, "cookie": ""}, found
    for value in (user_token, secret, rotated):
        assert value not in str(found)
    assert errors.without_sign_in_page(base) == []
    context.close()


def test_the_page_calls_the_api_under_the_plugin_prefix(
    browser: Browser, live_prefixed_app: tuple[Flask, str]
) -> None:
    """``BACKSTAGE_AUTH_PLUGIN_PREFIX = "/internal"``: sign-in, the list and a change follow it."""
    _, base = live_prefixed_app
    context = new_context(browser, base)
    page = context.new_page()
    errors = PageErrors(page)
    calls: list[str] = []
    page.on("request", lambda request: calls.append(request.url[len(base) :]))
    page.goto(ADMIN)
    page.get_by_role("button", name="Sign in as guest").click()
    page.get_by_role("heading", name="Service access tokens").wait_for()
    page.get_by_role("button", name="Create token").click()
    page.locator("#create-name").fill("prefixed")
    page.get_by_label("Owning group").fill("group:default/platform")
    page.get_by_role("checkbox", name="catalog:read").check()
    page.get_by_role("dialog", name="Create a service token").get_by_role(
        "button", name="Create token"
    ).click()
    page.get_by_role("dialog", name="Copy your new token now").wait_for()
    page.get_by_role("button", name="I have stored it, close").click()
    row(page, "prefixed").wait_for()
    api_calls = [call for call in calls if "/access-tokens" in call and "admin" not in call]
    assert api_calls and all(call.startswith("/internal/") for call in api_calls), api_calls
    assert "/internal/auth/guest/refresh" in calls
    assert "/internal/access-tokens/.backstage/auth/v1/cookie" in calls
    assert not [call for call in calls if call.startswith("/api/")], calls
    assert errors.without_sign_in_page(base) == []
    context.close()
