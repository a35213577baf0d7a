"""Only a caller's own, full credentials change access tokens (production mode, real tokens).

A limited user token (the ``backstage-auth`` cookie's kind), presented as a
bearer or as the cookie, and a user's credentials carried by another plugin
(an on-behalf-of plugin token, which holds only the user's limited token) may
read but never create, rotate, narrow or revoke a token; an access token
never creates one. Each refusal leaves the tokens as they were.
"""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_backstage_auth.access_tokens.guard import (
    ACCESS_TOKEN_CREATES,
    LIMITED_REFUSED,
    refusal,
    require_change_credentials,
)
from flask_backstage_auth.credentials import Credentials, ServicePrincipal, UserPrincipal
from flask_backstage_auth.errors import NotAllowedError
from tests.access_token_app import (
    ALICE,
    TEAM,
    bearer,
    build,
    limited_token,
    on_behalf_of_token,
    user_token,
)

BASE = "/api/access-tokens"
KINDS = ("service", "personal")


@pytest.fixture
def app() -> Flask:
    return build()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def create_body(kind: str, name: str = "ci") -> dict[str, t.Any]:
    body: dict[str, t.Any] = {"name": name, "scopes": ["catalog:read"]}
    if kind == "service":
        body["groupEntityRef"] = TEAM
    return body


def create(client: FlaskClient, headers: dict[str, str], kind: str) -> dict[str, t.Any]:
    response = client.post(f"{BASE}/{kind}/", json=create_body(kind), headers=headers)
    assert response.status_code == 201, response.get_json()
    return t.cast(t.Dict[str, t.Any], response.get_json()["token"])


def changes(kind: str, token_id: str) -> list[tuple[str, str, dict[str, t.Any] | None]]:
    """Every route that changes a token of ``kind``: method, path, body."""
    base = f"{BASE}/{kind}"
    return [
        ("POST", f"{base}/", create_body(kind, "another")),
        ("PATCH", f"{base}/{token_id}", {"description": "changed"}),
        ("POST", f"{base}/{token_id}/rotate", {"expiresInDays": 365}),
        ("POST", f"{base}/{token_id}/revoke", {"reason": "gone"}),
        ("DELETE", f"{base}/{token_id}", None),
    ]


def assert_unchanged(client: FlaskClient, owner: dict[str, str], token: dict[str, t.Any]) -> None:
    kind = "service" if "groupEntityRef" in token else "personal"
    listed = client.get(f"{BASE}/{kind}/", headers=owner).get_json()["tokens"]
    assert listed == [token]  # the same secret prefix, expiry, description, status
    events = client.get(f"{BASE}/{kind}/{token['id']}/audit", headers=owner).get_json()["events"]
    assert [event["event"] for event in events] == ["created"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_a_limited_user_token_as_a_bearer_changes_nothing(
    app: Flask, client: FlaskClient, kind: str, scheme: str
) -> None:
    owner = bearer(user_token(app))
    token = create(client, owner, kind)
    token_id = token["id"]
    limited = bearer(limited_token(app), scheme)
    # It reads: the routes carry a user-cookie policy, so limited credentials get in.
    assert client.get(f"{BASE}/{kind}/", headers=limited).status_code == 200
    for method, path, body in changes(kind, token_id):
        response = client.open(path, method=method, json=body, headers=limited)
        # The barrier refuses limited credentials for any change, before the
        # access-token layer's own check (guard.require_change_credentials).
        assert response.status_code == 401, (method, path, response.get_json())
        error = response.get_json()["error"]
        assert error["name"] == "AuthenticationError"
        assert error["message"] == "Illegal limited user token"
        assert "rawToken" not in response.get_data(as_text=True)
    assert_unchanged(client, owner, token)


@pytest.mark.parametrize("kind", KINDS)
def test_the_cookie_changes_nothing(app: Flask, client: FlaskClient, kind: str) -> None:
    owner = bearer(user_token(app))
    token = create(client, owner, kind)
    token_id = token["id"]
    browser = app.test_client()
    browser.set_cookie("backstage-auth", limited_token(app))
    assert browser.get(f"{BASE}/{kind}/").status_code == 200
    for method, path, body in changes(kind, token_id):
        response = browser.open(path, method=method, json=body)
        assert response.status_code in (401, 403), (method, path)
    assert_unchanged(client, owner, token)


@pytest.mark.parametrize("kind", KINDS)
def test_a_plugin_acting_for_the_user_changes_nothing(
    app: Flask, client: FlaskClient, kind: str
) -> None:
    owner = bearer(user_token(app))
    token = create(client, owner, kind)
    token_id = token["id"]
    borrowed = bearer(on_behalf_of_token(app))
    listed = client.get(f"{BASE}/{kind}/", headers=borrowed)
    assert listed.status_code == 200  # it reads, as the user
    for method, path, body in changes(kind, token_id):
        response = client.open(path, method=method, json=body, headers=borrowed)
        assert response.status_code == 403, (method, path, response.get_json())
        assert response.get_json()["error"] == {
            "name": "NotAllowedError",
            "message": "This endpoint does not allow user credentials on behalf of 'plugin:search'",
        }
    assert_unchanged(client, owner, token)


@pytest.mark.parametrize("kind", KINDS)
def test_an_access_token_never_creates_access_tokens(
    app: Flask, client: FlaskClient, kind: str
) -> None:
    owner = bearer(user_token(app))
    body = {**create_body(kind), "scopes": ["access-tokens:read"]}
    created = client.post(f"{BASE}/{kind}/", json=body, headers=owner)
    assert created.status_code == 201
    token_id = created.get_json()["token"]["id"]
    raw = bearer(created.get_json()["rawToken"])
    response = client.post(f"{BASE}/{kind}/", json=create_body(kind, "child"), headers=raw)
    assert response.status_code == 403
    assert response.get_json()["error"]["message"] == ACCESS_TOKEN_CREATES
    listed = client.get(f"{BASE}/{kind}/", headers=owner).get_json()["tokens"]
    assert [token["id"] for token in listed] == [token_id]


@pytest.mark.parametrize("kind", KINDS)
def test_the_users_own_token_changes_tokens(app: Flask, client: FlaskClient, kind: str) -> None:
    """The positive control: the same routes, with a full user token."""
    owner = bearer(user_token(app))
    token = create(client, owner, kind)
    token_id = token["id"]
    for method, path, body in changes(kind, token_id)[1:]:
        response = client.open(path, method=method, json=body, headers=owner)
        assert response.status_code in (200, 204, 409), (method, path, response.get_json())
    token = client.get(f"{BASE}/{kind}/{token_id}", headers=owner).get_json()
    assert token["status"] == "revoked" and token["description"] == "changed"


def test_the_check_in_one_place() -> None:
    """``guard.refusal`` decides for every write of the API (and so of the admin pages)."""
    full = Credentials(UserPrincipal(ALICE), token="t")
    assert refusal(full) is None and refusal(full, creating=True) is None
    assert refusal(Credentials(UserPrincipal(ALICE), limited=True)) == LIMITED_REFUSED
    actor = ServicePrincipal("plugin:search")
    assert "plugin:search" in str(refusal(Credentials(UserPrincipal(ALICE, actor=actor))))
    service = Credentials(ServicePrincipal("external:ci"))
    assert require_change_credentials(service) is service
    with pytest.raises(NotAllowedError) as raised:
        require_change_credentials(Credentials(UserPrincipal(ALICE), limited=True))
    assert raised.value.code == 403
