"""The admin page's features, each in headless Chromium against the example app.

Every test gets its own app and database (``live_app``), so they pass in any order.
"""

from __future__ import annotations

import datetime as dt
import typing as t

import pytest
import requests
from flask import Flask

from tests.browser.test_admin_browser import (
    ADMIN,
    COOKIE_URL,
    REAUTH,
    PageErrors,
    api_get,
    new_context,
    row,
)

if t.TYPE_CHECKING:  # pragma: no cover
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser

SERVICE_API = "/api/access-tokens/service/"


def guest_token(base: str) -> str:
    answer = requests.post(base + "/api/auth/guest/refresh", timeout=10)
    return str(answer.json()["backstageIdentity"]["token"])


def create_by_api(base: str, token: str, name: str, **fields: t.Any) -> dict[str, t.Any]:
    body = {"name": name, "groupEntityRef": "group:default/platform", "scopes": ["catalog:read"]}
    body.update(fields)
    answer = requests.post(
        base + SERVICE_API, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert answer.status_code == 201, answer.text
    return t.cast(t.Dict[str, t.Any], answer.json())


def signed_in_page(browser: Browser, base: str, **options: t.Any) -> tuple[t.Any, Page]:
    context = new_context(browser, base, **options)
    page = context.new_page()
    page.goto(ADMIN)
    page.get_by_role("button", name="Sign in as guest").click()
    page.get_by_role("heading", name="Service access tokens").wait_for()
    return context, page


def open_create(page: Page, name: str, group: str = "platform") -> None:
    page.get_by_role("button", name="Create token").click()
    page.get_by_role("dialog", name="Create a service token").wait_for()
    page.locator("#create-name").fill(name)
    page.get_by_label("Owning group").fill(group)
    page.get_by_role("checkbox", name="catalog:read").check()


def submit_create(page: Page) -> None:
    page.get_by_role("dialog", name="Create a service token").get_by_role(
        "button", name="Create token"
    ).click()


def close_secret(page: Page) -> str:
    page.get_by_role("dialog", name="Copy your new token now").wait_for()
    secret = page.input_value("#secret-value")
    page.get_by_role("button", name="I have stored it, close").click()
    page.get_by_role("dialog", name="Copy your new token now").wait_for(state="hidden")
    return secret


def listed(base: str, token: str, status: str = "") -> dict[str, dict[str, t.Any]]:
    query = f"?limit=500&status={status}" if status else "?limit=500"
    tokens = api_get(base, SERVICE_API + query, token).json()["tokens"]
    return {item["name"]: item for item in tokens}


def test_a_cookie_only_tab_lists_tokens_read_only(
    browser: Browser, live_app: tuple[Flask, str]
) -> None:
    _, base = live_app
    token = guest_token(base)
    create_by_api(base, token, "listed-read-only")
    cookie = requests.get(
        base + COOKIE_URL, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    context = new_context(browser, base)
    context.add_cookies(
        [{"name": "backstage-auth", "value": cookie.cookies["backstage-auth"], "url": base}]
    )
    page = context.new_page()
    errors = PageErrors(page)
    calls: list[str] = []
    page.on("request", lambda request: calls.append(f"{request.method} {request.url}"))
    response = page.goto(ADMIN)
    assert response is not None and response.status == 200
    page.get_by_role("heading", name=REAUTH).wait_for()
    listed_row = row(page, "listed-read-only")
    listed_row.wait_for()
    assert any(call.startswith("GET ") and SERVICE_API in call for call in calls), calls
    assert page.locator("#open-create").is_disabled()
    for action in ("Edit", "Rotate", "Revoke"):
        assert listed_row.get_by_role("button", name=f"{action} listed-read-only").is_disabled()
    assert listed_row.get_by_role("button", name="Audit listed-read-only").is_enabled()
    assert errors.messages == []
    context.close()


def test_the_secret_panel_asks_before_it_closes(
    browser: Browser, live_app: tuple[Flask, str]
) -> None:
    _, base = live_app
    context, page = signed_in_page(browser, base, viewport={"width": 1200, "height": 800})
    open_create(page, "kept-secret")
    submit_create(page)
    panel = page.get_by_role("dialog", name="Copy your new token now")
    panel.wait_for()
    secret = page.input_value("#secret-value")
    assert secret

    page.keyboard.press("Escape")  # by accident
    page.locator("#secret-confirm").wait_for()
    assert panel.is_visible() and page.input_value("#secret-value") == secret
    page.get_by_role("button", name="Keep it open").click()
    assert page.locator("#secret-confirm").is_hidden()

    page.mouse.click(5, 5)  # a stray click beside the panel
    page.locator("#secret-confirm").wait_for()
    assert panel.is_visible() and page.input_value("#secret-value") == secret

    page.get_by_role("button", name="Close anyway").click()
    panel.wait_for(state="hidden")
    assert page.input_value("#secret-value") == ""
    assert secret not in page.content()
    context.close()


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("team-a", "group:default/team-a"),
        ("group:team-a", "group:default/team-a"),
        ("group:default/team-a", "group:default/team-a"),
        ("Group:Ops/Team-A", "group:ops/team-a"),
    ],
)
def test_the_group_field_takes_what_the_cli_takes(
    browser: Browser, live_app: tuple[Flask, str], typed: str, stored: str
) -> None:
    _, base = live_app
    context, page = signed_in_page(browser, base)
    open_create(page, "grouped", group=typed)
    submit_create(page)
    close_secret(page)
    assert listed(base, guest_token(base))["grouped"]["groupEntityRef"] == stored
    context.close()


def test_errors_show_next_to_their_field_in_words(
    browser: Browser, live_app: tuple[Flask, str]
) -> None:
    _, base = live_app
    context, page = signed_in_page(browser, base)
    open_create(page, "bad-group", group="not a group!")
    submit_create(page)
    error = page.locator("#create-group-error")
    error.wait_for()
    assert error.inner_text().startswith("The owning group must be")
    assert "groupEntityRef" not in error.inner_text()
    assert page.locator("#create-group").get_attribute("aria-invalid") == "true"
    assert page.locator("#create-error").is_hidden()

    # A taken name: next to the name.
    create_by_api(base, guest_token(base), "taken")
    page.get_by_label("Owning group").fill("platform")
    page.locator("#create-name").fill("taken")
    submit_create(page)
    name_error = page.locator("#create-name-error")
    name_error.wait_for()
    assert "already exists" in name_error.inner_text()
    assert page.locator("#create-group-error").is_hidden()

    # No scope: next to the scopes, before any request.
    page.locator("#create-name").fill("no-scopes")
    page.get_by_role("checkbox", name="catalog:read").uncheck()
    submit_create(page)
    page.locator("#create-scopes-error").wait_for()
    assert page.locator("#create-scopes-error").inner_text() == "Choose at least one scope."
    context.close()


def test_active_tokens_by_default_and_filters_in_the_url(
    browser: Browser, live_app: tuple[Flask, str]
) -> None:
    _, base = live_app
    token = guest_token(base)
    create_by_api(base, token, "still-active")
    gone = create_by_api(base, token, "gone")["token"]["id"]
    requests.delete(
        base + SERVICE_API + gone, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    context, page = signed_in_page(browser, base)
    row(page, "still-active").wait_for()
    assert row(page, "gone").count() == 0  # revoked: not among the active by default
    assert page.locator("#filter-status").input_value() == "active"

    page.get_by_label("Status", exact=True).select_option("revoked")
    row(page, "gone").wait_for()
    assert "status=revoked" in page.url
    page.get_by_label("Group", exact=True).fill("platform")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_function("() => location.search.includes('group=')")
    query = page.evaluate("() => Object.fromEntries(new URLSearchParams(location.search))")
    assert query == {"status": "revoked", "group": "group:default/platform"}

    # A link to these filters opens them.
    other = context.new_page()
    other.goto(page.url)
    assert other.locator("#filter-status").input_value() == "revoked"
    assert other.locator("#filter-group").input_value() == "group:default/platform"
    row(other, "gone").wait_for()
    assert row(other, "still-active").count() == 0
    context.close()


def test_expiry_presets_custom_dates_and_the_expiring_threshold(
    browser: Browser, live_app: tuple[Flask, str]
) -> None:
    _, base = live_app
    context, page = signed_in_page(browser, base)
    legend = page.locator("#expiring-legend").inner_text()
    assert "within 7 days" in legend

    options = page.locator("#create-expiry option").all_inner_texts()
    assert options[:3] == ["7 days", "30 days", "90 days"]
    assert "Maximum (365 days)" in options and "Custom date…" in options

    for name, choice in (("week", "7"), ("month", "30"), ("longest", "max")):
        open_create(page, name)
        page.locator("#create-expiry").select_option(choice)
        submit_create(page)
        close_secret(page)

    open_create(page, "custom")
    page.locator("#create-expiry").select_option("custom")
    day = (dt.date.today() + dt.timedelta(days=45)).isoformat()
    page.locator("#create-date").fill(day)
    submit_create(page)
    close_secret(page)

    tokens = listed(base, guest_token(base))
    now = dt.datetime.now(dt.timezone.utc)

    def days_left(name: str) -> float:
        expires = dt.datetime.fromisoformat(tokens[name]["expiresAt"].replace("Z", "+00:00"))
        return (expires - now).total_seconds() / 86400

    assert 6.9 < days_left("week") <= 7
    assert 29.9 < days_left("month") <= 30
    assert 364.9 < days_left("longest") <= 365
    assert 44 < days_left("custom") <= 46
    assert tokens["week"]["status"] == "expiring"
    assert tokens["month"]["status"] == "active"  # a new 30-day token is not "expiring"
    page.reload()
    page.get_by_role("heading", name=REAUTH).wait_for()
    row(page, "month").locator(".status-active").wait_for()  # listed after the reload
    row(page, "week").locator(".status-expiring").wait_for()
    assert row(page, "month").locator(".status-expiring").count() == 0
    context.close()


def test_rotation_grace_in_minutes_or_hours(browser: Browser, live_app: tuple[Flask, str]) -> None:
    _, base = live_app
    context, page = signed_in_page(browser, base)
    open_create(page, "rotated")
    submit_create(page)
    close_secret(page)
    row(page, "rotated").get_by_role("button", name="Rotate rotated").click()
    dialog = page.get_by_role("dialog", name="Rotate rotated")
    dialog.wait_for()
    page.get_by_label("Grace period").fill("999")
    page.get_by_label("Unit").select_option(label="hours")
    dialog.get_by_role("button", name="Rotate token").click()
    page.locator("#rotate-grace-error").wait_for()
    assert "at most" in page.locator("#rotate-grace-error").inner_text()

    page.get_by_label("Grace period").fill("2")
    with page.expect_request(lambda r: r.url.endswith("/rotate")) as sent:
        dialog.get_by_role("button", name="Rotate token").click()
    assert sent.value.post_data_json["graceSeconds"] == 7200
    close_secret(page)
    context.close()


def test_edit_renames_describes_and_narrows_with_patch(
    browser: Browser, live_app: tuple[Flask, str]
) -> None:
    _, base = live_app
    token = guest_token(base)
    create_by_api(base, token, "to-edit", scopes=["catalog:read", "techdocs:read"])
    context, page = signed_in_page(browser, base)
    row(page, "to-edit").get_by_role("button", name="Edit to-edit").click()
    dialog = page.get_by_role("dialog", name="Edit to-edit")
    dialog.wait_for()
    assert page.locator("#edit-scope-list input:checked").count() == 2
    page.locator("#edit-name").fill("edited")
    page.locator("#edit-description").fill("Narrowed for CI")
    dialog.get_by_role("checkbox", name="techdocs:read").uncheck()
    with page.expect_request(lambda r: r.method == "PATCH") as sent:
        dialog.get_by_role("button", name="Save changes").click()
    assert sent.value.post_data_json == {
        "name": "edited",
        "description": "Narrowed for CI",
        "scopes": ["catalog:read"],
    }
    row(page, "edited").wait_for()
    edited = listed(base, token)["edited"]
    assert edited["scopes"] == ["catalog:read"] and edited["description"] == "Narrowed for CI"
    context.close()


def test_the_audit_trail_reads_like_a_log(browser: Browser, live_app: tuple[Flask, str]) -> None:
    app, base = live_app
    context, page = signed_in_page(browser, base)
    open_create(page, "audited")
    submit_create(page)
    old_secret = close_secret(page)
    token = guest_token(base)
    token_id = listed(base, token)["audited"]["id"]
    rotated = requests.post(
        f"{base}{SERVICE_API}{token_id}/rotate",
        json={"graceSeconds": 600},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert rotated.status_code == 200, rotated.text
    assert api_get(base, "/api/catalog/entities", old_secret).status_code == 200  # in its grace
    from flask_backstage_auth.access_tokens.extension import AccessTokens

    assert AccessTokens.state(app).usage.flush(timeout=10)
    row(page, "audited").get_by_role("button", name="Audit audited").click()
    page.get_by_role("dialog", name="Audit trail of audited").wait_for()
    page.locator('#audit-rows tr[data-event="old_secret_used"]').wait_for()
    actions = page.locator('#audit-rows td[data-label="Action"]').all_inner_texts()
    assert actions == [
        "First used",  # the old secret's use was the token's first
        "Old secret used (grace)",
        "Rotated (new secret)",
        "Created",
    ], actions
    used = page.locator('#audit-rows tr[data-event="old_secret_used"]')
    assert used.locator('td[data-label="Client address"]').inner_text() == "127.0.0.1"
    when = used.locator("time")
    assert when.inner_text() == page.evaluate(
        "iso => new Date(iso).toLocaleString()", when.get_attribute("datetime")
    )
    rotation = page.locator('#audit-rows tr[data-event="rotated"]').inner_text()
    assert "Old secret works until" in rotation and "graceUntil" not in rotation
    context.close()


def test_nothing_overflows_at_375_px(browser: Browser, live_app: tuple[Flask, str]) -> None:
    _, base = live_app
    context, page = signed_in_page(browser, base, viewport={"width": 375, "height": 740})
    open_create(page, "narrow-token-with-a-rather-long-name")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    dialog_box = page.locator("#create-dialog").bounding_box()
    assert dialog_box is not None and dialog_box["x"] >= 0
    assert dialog_box["x"] + dialog_box["width"] <= 375
    submit_create(page)
    close_secret(page)
    name = "narrow-token-with-a-rather-long-name"
    row(page, name).wait_for()
    for action in ("Edit", "Rotate", "Audit"):
        row(page, name).get_by_role("button", name=f"{action} {name}").click()
        opened = page.locator("dialog[open]")
        opened.wait_for()
        box = opened.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, action
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, action
        page.keyboard.press("Escape")
        opened.wait_for(state="hidden")
    context.close()
