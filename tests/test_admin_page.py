"""The access-token admin pages, with Flask's test client (the browser tests: tests/browser/)."""

from __future__ import annotations

import os
import re
import typing as t
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app import DEFAULT_CONFIG, create_app
from flask_backstage_auth import AuthBackend
from flask_backstage_auth.access_tokens.admin import BLUEPRINT_NAME, init_admin
from flask_backstage_auth.access_tokens.admin.views import (
    CONTENT_SECURITY_POLICY,
    STATIC_DIR,
)
from flask_backstage_auth.access_tokens.extension import AccessTokens
from flask_backstage_auth.access_tokens.scopes import Scope

ADMIN = "/admin/access-tokens"
PERSONAL = "/settings/personal-tokens"
COOKIE_URL = "/api/access-tokens/.backstage/auth/v1/cookie"
REFUSED = "You do not have permission to manage access tokens"


def make_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overlay: str = "") -> Flask:
    """The example app as configured by its app-config.yaml (guest = admin in development)."""
    if overlay:
        extra = tmp_path / "overlay.yaml"
        extra.write_text(overlay, encoding="utf-8")
        monkeypatch.setenv(
            "BACKSTAGE_APP_CONFIG", os.pathsep.join([str(DEFAULT_CONFIG), str(extra)])
        )
    app = create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/db.sqlite"}
    )
    init_admin(app)  # idempotent: a no-op once AccessTokens registers the pages itself
    return app


@pytest.fixture
def admin_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Flask:
    return make_app(tmp_path, monkeypatch)


@pytest.fixture
def client(admin_app: Flask) -> FlaskClient:
    return admin_app.test_client()


def user_token(app: Flask, ref: str) -> str:
    return AuthBackend.state(app).issuer.issue_token(ref, [ref]).token


def guest_token(client: FlaskClient) -> str:
    response = client.post("/api/auth/guest/refresh")
    assert response.status_code == 200
    return t.cast(str, response.get_json()["backstageIdentity"]["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sign_in_cookie(client: FlaskClient, token: str) -> None:
    response = client.get(COOKIE_URL, headers=bearer(token))
    assert response.status_code == 200
    assert client.get_cookie("backstage-auth") is not None


def assert_page_headers(response: t.Any) -> None:
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.mimetype == "text/html"


# -- sign-in, refusal, the page -------------------------------------------------


@pytest.mark.parametrize("path", [ADMIN, PERSONAL])
def test_anonymous_gets_the_sign_in_page(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert_page_headers(response)
    html = response.get_data(as_text=True)
    assert "Sign in to manage access tokens" in html
    assert 'data-action="guest-sign-in"' in html  # development: the guest provider
    assert 'for="signin-user-token"' in html


def test_no_guest_button_when_the_guest_provider_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/db.sqlite",
            "BACKSTAGE_AUTH_DEVELOPMENT": False,
            "BACKSTAGE_CONFIG": {
                "backend": {
                    "baseUrl": "http://127.0.0.1:7007",
                    "auth": {"keys": [{"secret": "a" * 32}]},
                },
                "auth": {"providers": {"guest": {}}},
                "permission": {"enabled": True},
                "accessTokens": {"personal": {"enabled": True}},
            },
        }
    )
    init_admin(app)
    html = app.test_client().get(ADMIN).get_data(as_text=True)
    assert "Sign in to manage access tokens" in html
    assert "guest-sign-in" not in html
    assert "Sign in with token" in html


def test_admin_with_a_bearer_token_gets_the_page(client: FlaskClient) -> None:
    response = client.get(ADMIN, headers=bearer(guest_token(client)))
    assert response.status_code == 200
    assert_page_headers(response)
    html = response.get_data(as_text=True)
    assert "Service access tokens" in html
    assert "user:development/guest" in html
    assert 'value="catalog:read"' in html  # the scope catalogue, server-rendered
    assert '<th scope="col">Last used</th>' in html
    assert 'data-api-base="/api/access-tokens"' in html


def test_admin_with_the_cookie_gets_the_page(client: FlaskClient) -> None:
    sign_in_cookie(client, guest_token(client))
    response = client.get(ADMIN)  # no Authorization header: the cookie alone
    assert response.status_code == 200
    assert "Create token" in response.get_data(as_text=True)
    response = client.get(PERSONAL)
    assert response.status_code == 200
    assert "Personal access tokens" in response.get_data(as_text=True)


def test_a_user_without_permission_sees_the_refusal_page(
    admin_app: Flask, client: FlaskClient
) -> None:
    token = user_token(admin_app, "user:default/nobody")
    response = client.get(ADMIN, headers=bearer(token))
    assert response.status_code == 403
    assert_page_headers(response)
    html = response.get_data(as_text=True)
    assert REFUSED in html
    assert "user:default/nobody" in html
    assert "access-tokens:service:read" in html
    # ... with the cookie as well, and their own personal tokens stay reachable.
    sign_in_cookie(client, token)
    assert REFUSED in client.get(ADMIN).get_data(as_text=True)
    assert client.get(PERSONAL).status_code == 200


def test_service_credentials_are_refused(client: FlaskClient) -> None:
    # The example's static token may only read the catalog.
    response = client.get(ADMIN, headers=bearer("example-catalog-reader-token"))
    assert response.status_code == 403
    assert "sign in as a user" in response.get_data(as_text=True)


def test_an_invalid_cookie_or_token_asks_to_sign_in_again(client: FlaskClient) -> None:
    response = client.get(ADMIN, headers=bearer("not-a-token"))
    assert response.status_code == 401
    assert "Your session has expired" in response.get_data(as_text=True)
    client.set_cookie("backstage-auth", "eyJhbGciOiJub25lIn0.e30.")
    response = client.get(ADMIN)
    assert response.status_code == 401
    assert "Your session has expired" in response.get_data(as_text=True)
    cleared = response.headers.get("Set-Cookie", "")
    assert cleared.startswith("backstage-auth=;") and "Expires=Thu, 01 Jan 1970" in cleared


def test_personal_page_when_personal_tokens_are_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(tmp_path, monkeypatch, "accessTokens:\n  personal:\n    enabled: false\n")
    client = app.test_client()
    response = client.get(PERSONAL, headers=bearer(guest_token(client)))
    assert response.status_code == 404
    assert "Personal access tokens are not enabled" in response.get_data(as_text=True)
    html = client.get(ADMIN, headers=bearer(guest_token(client))).get_data(as_text=True)
    assert PERSONAL not in html  # no link to a page that is off


def test_pages_only_answer_get(client: FlaskClient) -> None:
    token = guest_token(client)
    for path in (ADMIN, PERSONAL):
        assert client.post(path, headers=bearer(token)).status_code == 405
        assert client.head(path, headers=bearer(token)).status_code == 200


def test_init_admin_is_idempotent(admin_app: Flask) -> None:
    before = len(admin_app.url_map._rules)
    init_admin(admin_app)
    assert len(admin_app.url_map._rules) == before
    assert BLUEPRINT_NAME in admin_app.blueprints
    assert "access-tokens" in admin_app.blueprints  # no clash with the API's blueprint


# -- assets ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mimetype"), [("admin.js", "text/javascript"), ("admin.css", "text/css")]
)
def test_assets_are_served_to_anyone(client: FlaskClient, name: str, mimetype: str) -> None:
    response = client.get(f"{ADMIN}/static/{name}")
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.get_data() == (STATIC_DIR / name).read_bytes()
    response.close()


@pytest.mark.parametrize("name", ["missing.js", "..%2Fviews.py", "%2e%2e/views.py"])
def test_only_assets_are_served(client: FlaskClient, name: str) -> None:
    response = client.get(f"{ADMIN}/static/{name}")
    assert response.status_code in (401, 404)
    assert b"import" not in response.get_data()


def test_pages_reference_only_their_own_assets(client: FlaskClient) -> None:
    html = client.get(ADMIN, headers=bearer(guest_token(client))).get_data(as_text=True)
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources, html
    for source in sources:
        assert source.startswith(("/", "#", "data:")) and not source.startswith("//"), source
    # CSP-compatible markup: no inline script, handler or style.
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None
    assert re.search(r"\son[a-z]+=", html) is None
    assert " style=" not in html and "<style" not in html


def test_script_writes_text_never_html() -> None:
    source = (STATIC_DIR / "admin.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in source, sink
    assert "console." not in source  # nothing, and no secret, is logged


# -- escaping and cross-site requests ------------------------------------------------


def test_server_rendered_text_is_escaped(admin_app: Flask, client: FlaskClient) -> None:
    AccessTokens.state(admin_app).catalogue.add(
        Scope("evil:read", '<img src=x onerror="alert(1)">', "evil", ("read",))
    )
    user = "user:default/<script>alert(1)</script>"
    html = client.get(PERSONAL, headers=bearer(user_token(admin_app, user))).get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "user:default/&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html


def test_token_data_is_not_rendered_by_the_server(client: FlaskClient) -> None:
    token = guest_token(client)
    created = client.post(
        "/api/access-tokens/service/",
        headers=bearer(token),
        json={
            "name": "xss-probe",
            "description": "<script>alert('x')</script>",
            "groupEntityRef": "group:default/platform",
            "scopes": ["catalog:read"],
        },
    )
    assert created.status_code == 201
    html = client.get(ADMIN, headers=bearer(token)).get_data(as_text=True)
    # The list is drawn by the script with textContent; the page holds no token data.
    assert "xss-probe" not in html
    assert "<script>alert" not in html
    assert created.get_json()["rawToken"] not in html


def test_the_cookie_never_authorises_a_state_change(admin_app: Flask, client: FlaskClient) -> None:
    """CSRF: a browser sends the cookie with any form post; the API ignores it."""
    token = guest_token(client)
    created = client.post(
        "/api/access-tokens/service/",
        headers=bearer(token),
        json={
            "name": "target",
            "groupEntityRef": "group:default/platform",
            "scopes": ["catalog:read"],
        },
    )
    token_id = created.get_json()["token"]["id"]
    sign_in_cookie(client, token)
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.test"}
    requests = [
        ("POST", "/api/access-tokens/service/", "name=forged&scopes=catalog:read"),
        ("POST", f"/api/access-tokens/service/{token_id}/revoke", "reason=pwned"),
        ("POST", f"/api/access-tokens/service/{token_id}/rotate", ""),
        ("DELETE", f"/api/access-tokens/service/{token_id}", ""),
        ("PATCH", f"/api/access-tokens/service/{token_id}", '{"description": "x"}'),
        ("POST", "/api/access-tokens/personal/", "name=forged"),
        ("DELETE", COOKIE_URL, ""),
    ]
    for method, path, data in requests:
        response = client.open(path, method=method, headers=form, data=data)
        assert response.status_code == 401, (method, path, response.get_data(as_text=True))
    listed = client.get("/api/access-tokens/service/", headers=bearer(token)).get_json()
    assert [(t["name"], t["status"]) for t in listed["tokens"]] == [("target", "active")]
