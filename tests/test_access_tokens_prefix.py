"""``BACKSTAGE_AUTH_PLUGIN_PREFIX`` moves the access-token API, its OpenAPI server and the pages' calls."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_backstage_auth.auth.user.handler import create_limited_user_token
from tests.access_token_app import TEAM, bearer, build, user_token

MOUNT = "/internal/access-tokens"


@pytest.fixture
def app() -> Flask:
    return build(prefix="/internal", guest=True)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_the_api_is_mounted_under_the_prefix(app: Flask, client: FlaskClient) -> None:
    owner = bearer(user_token(app))
    body = {"name": "ci", "groupEntityRef": TEAM, "scopes": ["catalog:read"]}
    created = client.post(f"{MOUNT}/service/", json=body, headers=owner)
    assert created.status_code == 201
    raw = created.get_json()["rawToken"]
    # The token works on a plugin under the same prefix.
    assert client.get("/internal/catalog/entities", headers=bearer(raw)).status_code == 200
    listed = client.get(f"{MOUNT}/service/", headers=owner)
    assert [t["name"] for t in listed.get_json()["tokens"]] == ["ci"]
    # Nothing is left at the default mount: with credentials a 404, without them a 401.
    assert client.get("/api/access-tokens/service/", headers=owner).status_code == 404
    assert client.post("/api/access-tokens/service/revoke", json={"tokens": []}).status_code == 401
    # The open routes are open at the new mount.
    assert client.post(f"{MOUNT}/service/revoke", json={"tokens": [raw]}).get_json() == {
        "revoked": 1
    }


def test_the_cookie_policy_applies_at_the_prefix(app: Flask, client: FlaskClient) -> None:
    token = user_token(app)
    issued = client.get(f"{MOUNT}/.backstage/auth/v1/cookie", headers=bearer(token))
    assert issued.status_code == 200
    assert client.get_cookie("backstage-auth") is not None
    assert client.get(f"{MOUNT}/service/").status_code == 200  # reads with the cookie
    browser = client.application.test_client()
    browser.set_cookie("backstage-auth", create_limited_user_token(token)[0])
    refused = browser.post(f"{MOUNT}/service/", json={"name": "x"})
    assert refused.status_code == 401  # never for a change


def test_the_openapi_document_names_the_mount(client: FlaskClient) -> None:
    response = client.get(f"{MOUNT}/openapi.json")
    assert response.status_code == 200
    assert response.get_json()["servers"] == [{"url": MOUNT}]
    default = build().test_client().get("/api/access-tokens/openapi.json").get_json()
    assert default["servers"] == [{"url": "/api/access-tokens"}]


def test_the_admin_page_calls_the_api_under_the_prefix(app: Flask, client: FlaskClient) -> None:
    html = client.get("/admin/access-tokens", headers=bearer(user_token(app))).get_data(
        as_text=True
    )
    assert f'data-api-base="{MOUNT}"' in html
    assert f'data-cookie-url="{MOUNT}/.backstage/auth/v1/cookie"' in html
    assert 'data-guest-url="/internal/auth/guest/refresh"' in html
    assert not re.search(r'data-[a-z-]+="/api/', html)
    assert client.post("/internal/auth/guest/refresh").status_code == 200
