"""The REST API of the access-tokens plugin (``/api/access-tokens``)."""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest
from flask import Blueprint, Flask, jsonify
from flask.testing import FlaskClient
from flask_sqlalchemy import SQLAlchemy
from werkzeug.test import TestResponse

import flask_backstage_auth.access_tokens
import flask_backstage_auth.db.cli
from flask_backstage_auth import BackstageAuth
from flask_backstage_auth.access_tokens.extension import AccessTokens
from flask_backstage_auth.access_tokens.format import generate_token
from flask_backstage_auth.access_tokens.scopes import Scope
from flask_backstage_auth.credentials import Credentials, UserPrincipal
from flask_backstage_auth.extension import get_credentials
from flask_backstage_auth.permissions import (
    ALLOW,
    DENY,
    PolicyDecision,
    PolicyQuery,
    create_permission,
)
from flask_backstage_auth.testing.mocks import bearer_header, mock_credentials
from tests.conftest import _pg_url_in

START = 1_700_000_000.0
DAY = 86400
BASE = "/api/access-tokens"
SERVICE = f"{BASE}/service"
PERSONAL = f"{BASE}/personal"
ALICE = "user:default/alice"
BOB = "user:default/bob"
ADMIN = "user:default/admin"
TEAM_A = "group:default/team-a"
TEAM_B = "group:default/team-b"
CATALOG_CREATE = create_permission("catalog.entity.create", {"action": "create"})
SELF_SCOPE = Scope("access-tokens:read", "Read own token metadata", "access-tokens", ("read",))


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class DelegationPolicy:
    """admin: everything; alice: service tokens of team-a only; personal: own only."""

    def handle(self, query: PolicyQuery, credentials: Credentials) -> PolicyDecision:
        principal = credentials.principal
        name = query.permission.name
        if name == "catalog.entity.create":
            return ALLOW
        if not isinstance(principal, UserPrincipal):
            return DENY
        user = principal.user_entity_ref
        if user == ADMIN:
            return ALLOW
        if name.startswith("access-tokens:service:"):
            return ALLOW if user == ALICE and query.resource_ref == TEAM_A else DENY
        if name.startswith("access-tokens:personal:"):
            return ALLOW if query.resource_ref == user else DENY
        return DENY


def plugin_blueprints() -> list[Blueprint]:
    catalog = Blueprint("catalog", __name__, url_prefix="/api/catalog")
    search = Blueprint("search", __name__, url_prefix="/api/search")

    @catalog.get("/entities")
    def entities() -> t.Any:
        return jsonify(get_credentials().to_dict())

    @catalog.post("/entities")
    def create_entity() -> t.Any:
        BackstageAuth.state().permissions.require(get_credentials(), CATALOG_CREATE)
        return jsonify(created=True)

    @search.get("/query")
    def query() -> t.Any:
        return jsonify(get_credentials().to_dict())

    return [catalog, search]


def build_app(
    clock: FakeClock,
    *,
    database_uri: str = "sqlite://",
    permissions: bool = False,
    access_tokens: dict[str, t.Any] | None = None,
    scopes: t.Sequence[Scope] = (SELF_SCOPE,),
) -> Flask:
    app = Flask(__name__)
    config: dict[str, t.Any] = {
        "backend": {"auth": {"keys": [{"secret": "a-test-secret-of-enough-length-0123456789"}]}}
    }
    if permissions:
        config["permission"] = {"enabled": True}
    if access_tokens:
        config["accessTokens"] = access_tokens
    app.config.update(
        TESTING=True,
        BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS=True,
        SQLALCHEMY_DATABASE_URI=database_uri,
        BACKSTAGE_CONFIG=config,
    )
    db = SQLAlchemy()
    db.init_app(app)
    BackstageAuth(
        app,
        db=db,
        clock=clock,
        permission_policy=DelegationPolicy() if permissions else None,
    )
    with app.app_context():
        flask_backstage_auth.db.cli.upgrade_database(db.engine)
    for blueprint in plugin_blueprints():
        app.register_blueprint(blueprint)
    AccessTokens(app, scopes=scopes)
    return app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> Flask:
    return build_app(clock)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def user(ref: str = ALICE) -> dict[str, str]:
    return mock_credentials.user_header(ref)


def ci() -> dict[str, str]:
    return mock_credentials.service_header("external:ci")


def new_service_body(**overrides: t.Any) -> dict[str, t.Any]:
    body: dict[str, t.Any] = {
        "name": "ci-pipeline",
        "description": "The CI pipeline",
        "groupEntityRef": TEAM_A,
        "scopes": ["catalog:read"],
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def create(
    client: FlaskClient, headers: dict[str, str] | None = None, **overrides: t.Any
) -> dict[str, t.Any]:
    response = client.post(
        SERVICE + "/", json=new_service_body(**overrides), headers=headers or user()
    )
    assert response.status_code == 201, response.get_json()
    return t.cast(t.Dict[str, t.Any], response.get_json())


def error_of(response: TestResponse) -> tuple[str, str]:
    body = response.get_json()
    return body["error"]["name"], body["error"]["message"]


def assert_input_error(response: TestResponse, field: str) -> None:
    assert response.status_code == 400, response.get_data(as_text=True)
    name, message = error_of(response)
    assert name == "InputError"
    assert field in message


# -- the lifecycle ----------------------------------------------------------


class Recorder:
    """A client wrapper keeping every response body, to check no secret leaks."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.bodies: list[str] = []

    def __call__(self, method: str, url: str, **kwargs: t.Any) -> TestResponse:
        response: TestResponse = getattr(self.client, method)(url, **kwargs)
        self.bodies.append(response.get_data(as_text=True))
        return response


def run_lifecycle(client: FlaskClient, clock: FakeClock) -> None:
    call = Recorder(client)
    created = create(client)
    raw = created["rawToken"]
    token = created["token"]
    assert raw.startswith("bsat_")
    assert token["tokenPrefix"] == raw[:12]
    assert token["groupEntityRef"] == TEAM_A
    assert token["createdBy"] == ALICE
    assert token["status"] == "active"
    assert token["expiresAt"].endswith("Z") and token["createdAt"].endswith("Z")
    assert token["lastUsedAt"] is None and token["revokedAt"] is None
    token_id = token["id"]

    used = call("get", "/api/catalog/entities", headers=bearer_header(raw))
    assert used.status_code == 200
    principal = used.get_json()["principal"]
    assert principal["subject"] == f"access-token:{TEAM_A}:ci-pipeline"

    listed = call("get", SERVICE + "/", headers=user())
    assert listed.status_code == 200
    assert [t_["id"] for t_ in listed.get_json()["tokens"]] == [token_id]
    got = call("get", f"{SERVICE}/{token_id}", headers=user())
    assert got.status_code == 200
    assert got.get_json()["lastUsedAt"] is not None
    assert "rawToken" not in got.get_json()

    clock.advance(10)
    rotated = call(
        "post", f"{SERVICE}/{token_id}/rotate", json={"graceSeconds": 60}, headers=user()
    )
    assert rotated.status_code == 200
    new_raw = rotated.get_json()["rawToken"]
    call.bodies.pop()  # the rotate response carries the new secret, once
    assert new_raw != raw
    assert rotated.get_json()["token"]["tokenPrefix"] == new_raw[:12]
    assert call("get", "/api/catalog/entities", headers=bearer_header(new_raw)).status_code == 200
    assert call("get", "/api/catalog/entities", headers=bearer_header(raw)).status_code == 200
    clock.advance(61)
    refused = call("get", "/api/catalog/entities", headers=bearer_header(raw))
    assert refused.status_code == 401
    assert error_of(refused)[1] == "Access token was rotated"
    assert call("get", "/api/catalog/entities", headers=bearer_header(new_raw)).status_code == 200

    patched = call(
        "patch",
        f"{SERVICE}/{token_id}",
        json={"description": "narrowed", "scopes": ["catalog:read"]},
        headers=user(),
    )
    assert patched.status_code == 200
    assert patched.get_json()["description"] == "narrowed"

    clock.advance(1)
    revoked = call(
        "delete", f"{SERVICE}/{token_id}", json={"reason": "no longer needed"}, headers=user()
    )
    assert revoked.status_code == 204
    refused = call("get", "/api/catalog/entities", headers=bearer_header(new_raw))
    assert refused.status_code == 401
    assert error_of(refused)[1] == "Access token is revoked"
    again = call("delete", f"{SERVICE}/{token_id}", headers=user())
    assert again.status_code == 409

    got = call("get", f"{SERVICE}/{token_id}", headers=user()).get_json()
    assert got["status"] == "revoked"
    assert got["revokedBy"] == ALICE

    audit = call("get", f"{SERVICE}/{token_id}/audit", headers=user())
    assert audit.status_code == 200
    events = audit.get_json()["events"]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "revoked" and kinds[-1] == "created"
    assert kinds.index("revoked") < kinds.index("updated") < kinds.index("rotated")
    assert kinds.index("rotated") < kinds.index("created")
    revoked_event = events[0]
    assert revoked_event["actor"] == ALICE
    assert revoked_event["metadata"]["reason"] == "no longer needed"
    assert revoked_event["tokenId"] == token_id
    assert revoked_event["occurredAt"].endswith("Z")
    rotated_event = events[kinds.index("rotated")]
    assert rotated_event["actor"] == ALICE
    assert rotated_event["metadata"]["graceUntil"].endswith("Z")
    assert events[kinds.index("updated")]["metadata"]["scopes"] == ["catalog:read"]

    for body in call.bodies:
        assert raw not in body
        assert new_raw not in body


def test_lifecycle(client: FlaskClient, clock: FakeClock) -> None:
    run_lifecycle(client, clock)


def test_lifecycle_on_postgresql(postgres_url: str, pg_schema: str) -> None:
    clock = FakeClock()
    url = _pg_url_in(postgres_url, pg_schema)
    app = build_app(clock, database_uri=url.render_as_string(hide_password=False))
    try:
        run_lifecycle(app.test_client(), clock)
        client = app.test_client()
        for index in range(3):
            create(client, name=f"pg-{index}")
        page = client.get(SERVICE + "/?status=active&limit=2&offset=1", headers=user()).get_json()
        assert page["total"] == 3 and len(page["tokens"]) == 2
    finally:
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()


def test_revoke_by_post_returns_the_token(client: FlaskClient) -> None:
    token = create(client)["token"]
    response = client.post(
        f"{SERVICE}/{token['id']}/revoke", json={"reason": "leaked"}, headers=user()
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "revoked" and body["revokedBy"] == ALICE
    again = client.post(f"{SERVICE}/{token['id']}/revoke", headers=user())
    assert again.status_code == 409
    assert error_of(again)[0] == "ConflictError"


def test_revoke_without_a_reason(client: FlaskClient, clock: FakeClock) -> None:
    token = create(client)["token"]
    clock.advance(1)  # events at the same instant have no defined order
    assert client.delete(f"{SERVICE}/{token['id']}", headers=user()).status_code == 204
    events = client.get(f"{SERVICE}/{token['id']}/audit", headers=user()).get_json()["events"]
    assert events[0]["event"] == "revoked"
    assert events[0]["metadata"] == {"reason": None}


def test_service_principal_manages_tokens(client: FlaskClient) -> None:
    """Automated rotation: a service may call the API when the policy allows."""
    created = create(client, headers=ci())
    assert created["token"]["createdBy"] == "external:ci"
    token_id = created["token"]["id"]
    rotated = client.post(f"{SERVICE}/{token_id}/rotate", json={}, headers=ci())
    assert rotated.status_code == 200


def test_access_token_cannot_create_tokens(app: Flask, client: FlaskClient) -> None:
    raw = create(client, scopes=["access-tokens:read"])["rawToken"]
    response = client.post(
        SERVICE + "/", json=new_service_body(name="child"), headers=bearer_header(raw)
    )
    assert response.status_code == 403


# -- scopes -----------------------------------------------------------------


def test_scopes_endpoint(client: FlaskClient) -> None:
    response = client.get(SERVICE + "/scopes", headers=user())
    assert response.status_code == 200
    scopes = {s["id"]: s for s in response.get_json()["scopes"]}
    assert scopes["catalog:read"] == {
        "id": "catalog:read",
        "description": "Read catalog entities",
        "plugin": "catalog",
        "actions": ["read"],
    }
    assert "access-tokens:read" in scopes


def test_scope_enforcement(client: FlaskClient) -> None:
    read = create(client, name="reader", scopes=["catalog:read"])["rawToken"]
    write = create(client, name="writer", scopes=["catalog:write"])["rawToken"]
    assert client.get("/api/catalog/entities", headers=bearer_header(read)).status_code == 200
    search = client.get("/api/search/query", headers=bearer_header(read))
    assert search.status_code == 403
    assert "restricted to plugin(s) 'catalog'" in error_of(search)[1]
    denied = client.post("/api/catalog/entities", headers=bearer_header(read))
    assert denied.status_code == 403
    assert error_of(denied)[1] == "Permission denied: catalog.entity.create"
    assert client.post("/api/catalog/entities", headers=bearer_header(write)).status_code == 200
    # and the management API is another plugin
    listed = client.get(SERVICE + "/", headers=bearer_header(read))
    assert listed.status_code == 403


def test_patch_narrows_scopes_at_once(client: FlaskClient) -> None:
    created = create(client, scopes=["catalog:write", "techdocs:read"])
    raw, token_id = created["rawToken"], created["token"]["id"]
    assert client.post("/api/catalog/entities", headers=bearer_header(raw)).status_code == 200
    patched = client.patch(
        f"{SERVICE}/{token_id}", json={"scopes": ["techdocs:read"]}, headers=user()
    )
    assert patched.status_code == 200
    assert patched.get_json()["scopes"] == ["techdocs:read"]
    assert client.post("/api/catalog/entities", headers=bearer_header(raw)).status_code == 403


def test_patch_cannot_widen(client: FlaskClient) -> None:
    token_id = create(client)["token"]["id"]
    response = client.patch(
        f"{SERVICE}/{token_id}", json={"scopes": ["catalog:read", "catalog:write"]}, headers=user()
    )
    assert_input_error(response, "scopes")
    assert "catalog:write" in error_of(response)[1]
    assert_input_error(client.patch(f"{SERVICE}/{token_id}", json={}, headers=user()), "scopes")
    assert_input_error(
        client.patch(f"{SERVICE}/{token_id}", json={"scopes": []}, headers=user()), "scopes"
    )
    assert_input_error(
        client.patch(f"{SERVICE}/{token_id}", json={"description": 5}, headers=user()),
        "description",
    )
    assert (
        client.patch(f"{SERVICE}/nope", json={"description": "x"}, headers=user()).status_code
        == 404
    )


def test_patch_renames(client: FlaskClient) -> None:
    created = create(client, name="old-name")
    raw, token_id = created["rawToken"], created["token"]["id"]
    create(client, name="taken")
    renamed = client.patch(f"{SERVICE}/{token_id}", json={"name": "new-name"}, headers=user())
    assert renamed.status_code == 200, renamed.get_data(as_text=True)
    assert renamed.get_json()["name"] == "new-name"
    assert client.get("/api/catalog/entities", headers=bearer_header(raw)).status_code == 200
    taken = client.patch(f"{SERVICE}/{token_id}", json={"name": "taken"}, headers=user())
    assert taken.status_code == 409
    assert error_of(taken)[1] == "A token named 'taken' already exists for its owner"
    for bad in ("Upper", "with space", "", 7, "x" * 101):
        assert_input_error(
            client.patch(f"{SERVICE}/{token_id}", json={"name": bad}, headers=user()), "name"
        )
    events = client.get(f"{SERVICE}/{token_id}/audit", headers=user()).get_json()["events"]
    changes = [e for e in events if e["event"] != "first_used"]  # the use after the rename
    assert changes[0]["event"] == "updated" and changes[0]["metadata"] == {"name": "new-name"}


def test_patch_revoked_token_conflicts(client: FlaskClient) -> None:
    token_id = create(client)["token"]["id"]
    client.delete(f"{SERVICE}/{token_id}", headers=user())
    response = client.patch(f"{SERVICE}/{token_id}", json={"description": "x"}, headers=user())
    assert response.status_code == 409


# -- validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "Has Caps"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "a" * 101}, "name"),
        ({"name": 12}, "name"),
        ({"name": None}, "name"),
        ({"description": "d" * 501}, "description"),
        ({"description": ["x"]}, "description"),
        ({"groupEntityRef": None}, "groupEntityRef"),
        ({"groupEntityRef": "user:default/alice"}, "groupEntityRef"),
        ({"groupEntityRef": "team-a"}, "groupEntityRef"),
        ({"groupEntityRef": "group:default/"}, "groupEntityRef"),
        ({"groupEntityRef": "group:a/b/c"}, "groupEntityRef"),
        ({"groupEntityRef": 7}, "groupEntityRef"),
        ({"groupEntityRef": "group:" + "x" * 5000}, "groupEntityRef"),
        ({"scopes": None}, "scopes"),
        ({"scopes": []}, "scopes"),
        ({"scopes": "catalog:read"}, "scopes"),
        ({"scopes": [1]}, "scopes"),
        ({"scopes": ["catalog:read", "nope:x"]}, "nope:x"),
        ({"expiresAt": "yesterday"}, "expiresAt"),
        ({"expiresAt": "2000-01-01T00:00:00Z"}, "expiresAt"),
        ({"expiresAt": "2999-01-01T00:00:00Z"}, "expiresAt"),
        ({"expiresAt": 12345}, "expiresAt"),
        ({"expiresAt": "9" * 5000}, "expiresAt"),
        ({"expiresInDays": 0}, "expiresInDays"),
        ({"expiresInDays": 366}, "expiresInDays"),
        ({"expiresInDays": "30"}, "expiresInDays"),
        ({"expiresInDays": 1.5}, "expiresInDays"),
        ({"expiresInDays": True}, "expiresInDays"),
        ({"expiresInDays": 10**400}, "expiresInDays"),
        ({"expiresInDays": 30, "expiresAt": "2023-12-01T00:00:00Z"}, "expiresInDays"),
    ],
)
def test_create_validation(client: FlaskClient, overrides: dict[str, t.Any], field: str) -> None:
    body = new_service_body()
    body.update(overrides)
    body = {k: v for k, v in body.items() if v is not None}
    if "expiresInDays" in overrides and overrides["expiresInDays"] == 10**400:
        data = json.dumps(body).replace(
            '"expiresInDays": ' + str(10**400), '"expiresInDays": 1e400'
        )
        response = client.post(
            SERVICE + "/", data=data, content_type="application/json", headers=user()
        )
    else:
        response = client.post(SERVICE + "/", json=body, headers=user())
    assert_input_error(response, field)


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        "[1, 2]",
        '"a string"',
        "null",
        "",
        "{" * 60_000,
        json.dumps({"name": "x" * 60_000})[:-1],
        b"\xff\xfe\x00",
    ],
)
def test_fuzzed_bodies_are_400(client: FlaskClient, data: str | bytes) -> None:
    token_id = create(client, name="target")["token"]["id"]
    for method, url in (
        ("post", SERVICE + "/"),
        ("patch", f"{SERVICE}/{token_id}"),
        ("post", f"{SERVICE}/{token_id}/rotate"),
        ("post", f"{SERVICE}/{token_id}/revoke"),
        ("delete", f"{SERVICE}/{token_id}"),
        ("post", SERVICE + "/revoke"),
    ):
        response = getattr(client, method)(
            url, data=data, content_type="application/json", headers=user()
        )
        if data == "" and (url.endswith(("/rotate", "/revoke")) and "service/revoke" not in url):
            assert response.status_code in (200, 409), (method, url)
            continue
        if data == "" and method == "delete":
            assert response.status_code in (204, 409), (method, url)
            continue
        assert response.status_code == 400, (method, url, response.get_data(as_text=True))
        assert error_of(response)[0] == "InputError"


def test_expiry_inputs(client: FlaskClient, clock: FakeClock) -> None:
    default = create(client, name="default")["token"]
    assert default["expiresAt"] == "2024-02-12T22:13:20.000Z"  # START + 90 days
    days = create(client, name="days", expiresInDays=7)["token"]
    assert days["expiresAt"] == "2023-11-21T22:13:20.000Z"
    assert days["status"] == "expiring"
    at = create(client, name="at", expiresAt="2024-06-01T00:00:00Z")["token"]
    assert at["expiresAt"] == "2024-06-01T00:00:00.000Z"
    offset = create(client, name="offset", expiresAt="2024-06-01T02:00:00+02:00")["token"]
    assert offset["expiresAt"] == "2024-06-01T00:00:00.000Z"
    full = create(client, name="full", expiresInDays=365)["token"]
    assert full["status"] == "active"


def test_group_ref_is_normalised(client: FlaskClient) -> None:
    token = create(client, groupEntityRef="group:team-a")["token"]
    assert token["groupEntityRef"] == TEAM_A
    duplicate = client.post(
        SERVICE + "/", json=new_service_body(groupEntityRef="Group:Default/Team-A"), headers=user()
    )
    assert duplicate.status_code == 409


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=bogus", "status"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("limit=1.5", "limit"),
        ("limit=-1", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("offset=" + "9" * 40, "offset"),
        ("groupEntityRef=nope", "groupEntityRef"),
    ],
)
def test_list_validation(client: FlaskClient, query: str, field: str) -> None:
    assert_input_error(client.get(f"{SERVICE}/?{query}", headers=user()), field)


def test_rotate_validation(client: FlaskClient) -> None:
    token_id = create(client)["token"]["id"]
    for body, field in (
        ({"graceSeconds": -1}, "graceSeconds"),
        ({"graceSeconds": DAY + 1}, "graceSeconds"),
        ({"graceSeconds": "10"}, "graceSeconds"),
        ({"expiresInDays": 0}, "expiresInDays"),
        ({"expiresAt": "2000-01-01T00:00:00Z"}, "expiresAt"),
        ({"expiresAt": "2024-01-01T00:00:00Z", "expiresInDays": 3}, "expiresInDays"),
    ):
        assert_input_error(
            client.post(f"{SERVICE}/{token_id}/rotate", json=body, headers=user()), field
        )
    rotated = client.post(
        f"{SERVICE}/{token_id}/rotate", json={"expiresInDays": 10}, headers=user()
    )
    assert rotated.status_code == 200
    assert rotated.get_json()["token"]["expiresAt"] == "2023-11-24T22:13:20.000Z"


def test_revoke_reason_validation(client: FlaskClient) -> None:
    token_id = create(client)["token"]["id"]
    assert_input_error(
        client.delete(f"{SERVICE}/{token_id}", json={"reason": "r" * 501}, headers=user()), "reason"
    )
    assert_input_error(
        client.post(f"{SERVICE}/{token_id}/revoke", json={"reason": 1}, headers=user()), "reason"
    )
    assert client.get(f"{SERVICE}/{token_id}", headers=user()).get_json()["status"] == "active"


# -- 404 / 409 ----------------------------------------------------------------


def test_unknown_ids_are_404(client: FlaskClient) -> None:
    unknown = "00000000-0000-0000-0000-000000000000"
    for method, url in (
        ("get", f"{SERVICE}/{unknown}"),
        ("get", f"{SERVICE}/{unknown}/audit"),
        ("delete", f"{SERVICE}/{unknown}"),
        ("post", f"{SERVICE}/{unknown}/revoke"),
        ("post", f"{SERVICE}/{unknown}/rotate"),
        ("get", f"{SERVICE}/{'x' * 300}"),
    ):
        response = getattr(client, method)(url, headers=user())
        assert response.status_code == 404, (method, url)
        assert error_of(response)[0] == "NotFoundError"


def test_duplicate_name_and_reuse_after_revoke(client: FlaskClient) -> None:
    first = create(client)["token"]
    duplicate = client.post(SERVICE + "/", json=new_service_body(), headers=user())
    assert duplicate.status_code == 409
    assert error_of(duplicate)[0] == "ConflictError"
    other_group = client.post(
        SERVICE + "/", json=new_service_body(groupEntityRef=TEAM_B), headers=user()
    )
    assert other_group.status_code == 201
    client.delete(f"{SERVICE}/{first['id']}", headers=user())
    reused = client.post(SERVICE + "/", json=new_service_body(), headers=user())
    assert reused.status_code == 201
    assert reused.get_json()["token"]["id"] != first["id"]


def test_rotate_revoked_or_expired_conflicts(client: FlaskClient, clock: FakeClock) -> None:
    revoked = create(client, name="revoked")["token"]["id"]
    client.delete(f"{SERVICE}/{revoked}", headers=user())
    assert client.post(f"{SERVICE}/{revoked}/rotate", headers=user()).status_code == 409
    expired = create(client, name="expired", expiresInDays=1)["token"]["id"]
    clock.advance(2 * DAY)
    assert client.post(f"{SERVICE}/{expired}/rotate", headers=user()).status_code == 409


# -- listing ------------------------------------------------------------------


def test_status_filters(client: FlaskClient, clock: FakeClock) -> None:
    active = create(client, name="active", expiresInDays=300)["token"]["id"]
    expiring = create(client, name="expiring", expiresInDays=5)["token"]["id"]  # within 7 days
    expired = create(client, name="expired", expiresInDays=1)["token"]["id"]
    revoked = create(client, name="revoked")["token"]["id"]
    client.delete(f"{SERVICE}/{revoked}", headers=user())
    clock.advance(2 * DAY)

    def ids(status: str) -> set[str]:
        body = client.get(f"{SERVICE}/?status={status}", headers=user()).get_json()
        return {token["id"] for token in body["tokens"]}

    assert ids("active") == {active, expiring}
    assert ids("expiring") == {expiring}
    assert ids("expired") == {expired}
    assert ids("revoked") == {revoked}
    assert ids("") == {active, expiring, expired, revoked}


def test_paging_and_group_filter(client: FlaskClient, clock: FakeClock) -> None:
    for index in range(5):
        create(client, name=f"token-{index}")
        clock.advance(1)
    create(client, name="other", groupEntityRef=TEAM_B)
    page = client.get(
        f"{SERVICE}/?groupEntityRef=group:team-a&limit=2&offset=1", headers=user()
    ).get_json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [token["name"] for token in page["tokens"]] == ["token-3", "token-2"]
    last = client.get(f"{SERVICE}/?groupEntityRef={TEAM_A}&offset=4", headers=user()).get_json()
    assert [token["name"] for token in last["tokens"]] == ["token-0"]
    assert last["limit"] == 50
    everything = client.get(f"{SERVICE}/?limit=500", headers=user()).get_json()
    assert everything["total"] == 6
    beyond = client.get(f"{SERVICE}/?offset=100", headers=user()).get_json()
    assert beyond["tokens"] == [] and beyond["total"] == 6


# -- leak reports ---------------------------------------------------------------


def test_leak_report_without_credentials(client: FlaskClient, clock: FakeClock) -> None:
    first = create(client, name="first")
    second = create(client, name="second")
    kept = create(client, name="kept")
    clock.advance(1)
    bad_checksum = first["rawToken"][:-1] + ("A" if first["rawToken"][-1] != "A" else "B")
    response = client.post(
        SERVICE + "/revoke",
        json={
            "tokens": [
                first["rawToken"],
                first["rawToken"],
                second["rawToken"],
                bad_checksum,
                generate_token("service").value,  # well-formed, unknown
                "ghp_something",
            ]
        },
    )
    assert response.status_code == 200
    assert response.get_json() == {"revoked": 2}
    assert first["rawToken"] not in response.get_data(as_text=True)
    for created in (first, second):
        refused = client.get("/api/catalog/entities", headers=bearer_header(created["rawToken"]))
        assert refused.status_code == 401
        events = client.get(f"{SERVICE}/{created['token']['id']}/audit", headers=user()).get_json()[
            "events"
        ]
        revoked = [e for e in events if e["event"] == "revoked"]
        assert len(revoked) == 1
        assert revoked[0]["actor"] == "leak-report"
        assert revoked[0]["metadata"]["reason"] == "reported as leaked"
    assert (
        client.get("/api/catalog/entities", headers=bearer_header(kept["rawToken"])).status_code
        == 200
    )
    again = client.post(SERVICE + "/revoke", json={"tokens": [first["rawToken"]]})
    assert again.get_json() == {"revoked": 0}
    assert client.post(SERVICE + "/revoke", json={"tokens": []}).get_json() == {"revoked": 0}


def test_leak_report_validation(client: FlaskClient) -> None:
    assert_input_error(client.post(SERVICE + "/revoke", json={}), "tokens")
    assert_input_error(client.post(SERVICE + "/revoke", json={"tokens": "bsat_x"}), "tokens")
    assert_input_error(client.post(SERVICE + "/revoke", json={"tokens": [1]}), "tokens")
    assert_input_error(client.post(SERVICE + "/revoke", json={"tokens": ["x"] * 101}), "tokens")


def test_other_routes_need_credentials(client: FlaskClient) -> None:
    for method, url in (
        ("get", SERVICE + "/"),
        ("post", SERVICE + "/"),
        ("get", SERVICE + "/scopes"),
        ("get", SERVICE + "/self"),
        ("get", SERVICE + "/some-id"),
    ):
        assert getattr(client, method)(url).status_code == 401, (method, url)


# -- /self --------------------------------------------------------------------


def test_service_self(client: FlaskClient) -> None:
    created = create(client, scopes=["access-tokens:read", "catalog:read"])
    response = client.get(SERVICE + "/self", headers=bearer_header(created["rawToken"]))
    assert response.status_code == 200
    assert response.get_json()["id"] == created["token"]["id"]
    assert created["rawToken"] not in response.get_data(as_text=True)
    for headers in (user(), ci()):
        response = client.get(SERVICE + "/self", headers=headers)
        assert response.status_code == 404
        assert error_of(response)[1] == "The caller is not an access token"
    faked = client.get(
        SERVICE + "/self",
        headers=mock_credentials.service_header(f"access-token:{TEAM_A}:ci-pipeline"),
    )
    assert faked.status_code == 404


def test_service_self_needs_a_scope_for_the_plugin(client: FlaskClient) -> None:
    raw = create(client, scopes=["catalog:read"])["rawToken"]
    assert client.get(SERVICE + "/self", headers=bearer_header(raw)).status_code == 403


# -- permissions ----------------------------------------------------------------


@pytest.fixture
def gated(clock: FakeClock) -> FlaskClient:
    return build_app(clock, permissions=True).test_client()


def test_permission_gating_with_group_delegation(gated: FlaskClient) -> None:
    admin = user(ADMIN)
    team_b = create(gated, headers=admin, groupEntityRef=TEAM_B)["token"]["id"]
    team_a = create(gated, headers=user(ALICE), name="alice-made")["token"]["id"]

    # alice manages team-a only
    assert gated.get(f"{SERVICE}/{team_a}", headers=user(ALICE)).status_code == 200
    assert gated.get(f"{SERVICE}/{team_a}/audit", headers=user(ALICE)).status_code == 200
    assert gated.get(f"{SERVICE}/?groupEntityRef={TEAM_A}", headers=user(ALICE)).status_code == 200
    for method, url, body in (
        ("get", f"{SERVICE}/{team_b}", None),
        ("get", f"{SERVICE}/{team_b}/audit", None),
        ("get", f"{SERVICE}/?groupEntityRef={TEAM_B}", None),
        ("get", SERVICE + "/", None),
        ("post", SERVICE + "/", new_service_body(groupEntityRef=TEAM_B)),
        ("post", f"{SERVICE}/{team_b}/rotate", {}),
        ("patch", f"{SERVICE}/{team_b}", {"description": "x"}),
        ("delete", f"{SERVICE}/{team_b}", None),
        ("post", f"{SERVICE}/{team_b}/revoke", None),
    ):
        response = getattr(gated, method)(url, json=body, headers=user(ALICE))
        assert response.status_code == 403, (method, url)
        assert error_of(response)[0] == "NotAllowedError"
        assert "Permission denied: access-tokens:service:" in error_of(response)[1]
    assert gated.post(f"{SERVICE}/{team_a}/rotate", json={}, headers=user(ALICE)).status_code == 200
    assert gated.delete(f"{SERVICE}/{team_a}", headers=user(ALICE)).status_code == 204

    # bob may do nothing; services are denied by this policy
    assert gated.get(SERVICE + "/scopes", headers=user(BOB)).status_code == 403
    assert gated.get(f"{SERVICE}/{team_a}", headers=user(BOB)).status_code == 403
    assert gated.post(SERVICE + "/", json=new_service_body(), headers=ci()).status_code == 403
    # admin sees everything
    listed = gated.get(SERVICE + "/", headers=admin).get_json()
    assert listed["total"] == 2


def test_leak_report_ignores_permissions(gated: FlaskClient) -> None:
    raw = create(gated, headers=user(ADMIN))["rawToken"]
    assert gated.post(SERVICE + "/revoke", json={"tokens": [raw]}).get_json() == {"revoked": 1}


# -- personal tokens --------------------------------------------------------------


@pytest.fixture
def personal(clock: FakeClock) -> FlaskClient:
    app = build_app(clock, access_tokens={"personal": {"enabled": True, "maxTokensPerUser": 3}})
    return app.test_client()


def create_personal(client: FlaskClient, ref: str = ALICE, **overrides: t.Any) -> dict[str, t.Any]:
    body: dict[str, t.Any] = {"name": "laptop", "scopes": ["catalog:read"], **overrides}
    response = client.post(PERSONAL + "/", json=body, headers=user(ref))
    assert response.status_code == 201, response.get_json()
    return t.cast(t.Dict[str, t.Any], response.get_json())


def test_personal_off_by_default(client: FlaskClient) -> None:
    for method, url in (
        ("get", PERSONAL + "/"),
        ("post", PERSONAL + "/"),
        ("get", PERSONAL + "/self"),
        ("get", PERSONAL + "/some-id"),
        ("post", PERSONAL + "/some-id/rotate"),
    ):
        response = getattr(client, method)(url, json={}, headers=user())
        assert response.status_code == 404, (method, url)


def test_personal_lifecycle(personal: FlaskClient, clock: FakeClock) -> None:
    created = create_personal(personal, scopes=["catalog:read", "access-tokens:read"])
    raw, token = created["rawToken"], created["token"]
    assert raw.startswith("bspat_")
    assert token["userEntityRef"] == ALICE and "groupEntityRef" not in token
    assert token["expiresAt"] == "2023-12-14T22:13:20.000Z"  # 30 days
    used = personal.get("/api/catalog/entities", headers=bearer_header(raw)).get_json()
    assert used["principal"]["userEntityRef"] == ALICE
    me = personal.get(PERSONAL + "/self", headers=bearer_header(raw))
    assert me.status_code == 200 and me.get_json()["id"] == token["id"]
    assert personal.get(PERSONAL + "/self", headers=user()).status_code == 404

    clock.advance(1)
    listed = personal.get(PERSONAL + "/", headers=user()).get_json()
    assert [t_["id"] for t_ in listed["tokens"]] == [token["id"]]
    rotated = personal.post(f"{PERSONAL}/{token['id']}/rotate", json={}, headers=user())
    assert rotated.status_code == 200
    new_raw = rotated.get_json()["rawToken"]
    clock.advance(1)
    assert personal.get("/api/catalog/entities", headers=bearer_header(raw)).status_code == 401
    patched = personal.patch(
        f"{PERSONAL}/{token['id']}", json={"scopes": ["catalog:read"]}, headers=user()
    )
    assert patched.status_code == 200
    clock.advance(1)
    assert personal.delete(f"{PERSONAL}/{token['id']}", headers=user()).status_code == 204
    refused = personal.get("/api/catalog/entities", headers=bearer_header(new_raw))
    assert error_of(refused)[1] == "Access token is revoked"
    events = personal.get(f"{PERSONAL}/{token['id']}/audit", headers=user()).get_json()["events"]
    managed = [e for e in events if e["event"] not in ("failed_use", "first_used")]
    assert [e["event"] for e in managed] == ["revoked", "updated", "rotated", "created"]
    assert {e["actor"] for e in managed} == {ALICE}
    failed = [e for e in events if e["event"] == "failed_use"]
    assert failed and failed[0]["actor"] is None


def test_personal_isolation(personal: FlaskClient) -> None:
    token_id = create_personal(personal)["token"]["id"]
    bobs = create_personal(personal, BOB)["token"]["id"]  # same name, other user
    for method, url in (
        ("get", f"{PERSONAL}/{token_id}"),
        ("get", f"{PERSONAL}/{token_id}/audit"),
        ("patch", f"{PERSONAL}/{token_id}"),
        ("delete", f"{PERSONAL}/{token_id}"),
        ("post", f"{PERSONAL}/{token_id}/revoke"),
        ("post", f"{PERSONAL}/{token_id}/rotate"),
    ):
        response = getattr(personal, method)(url, json={"description": "x"}, headers=user(BOB))
        assert response.status_code == 404, (method, url)
    listed = personal.get(PERSONAL + "/", headers=user(BOB)).get_json()
    assert [t_["id"] for t_ in listed["tokens"]] == [bobs] and listed["total"] == 1
    # personal tokens are not service tokens
    assert personal.get(f"{SERVICE}/{token_id}", headers=user()).status_code == 404
    assert personal.get(f"{PERSONAL}/{token_id}", headers=user()).status_code == 200


def test_personal_needs_a_user(personal: FlaskClient) -> None:
    response = personal.get(PERSONAL + "/", headers=ci())
    assert response.status_code == 403
    assert error_of(response)[1] == "This endpoint does not allow 'service' credentials"


def test_personal_limit_and_validation(personal: FlaskClient, clock: FakeClock) -> None:
    assert_input_error(
        personal.post(PERSONAL + "/", json={"name": "x", "scopes": ["nope"]}, headers=user()),
        "scopes",
    )
    assert_input_error(
        personal.post(
            PERSONAL + "/",
            json={"name": "x", "scopes": ["catalog:read"], "expiresInDays": 366},
            headers=user(),
        ),
        "expiresInDays",
    )
    ids = [create_personal(personal, name=f"t{i}")["token"]["id"] for i in range(3)]
    over = personal.post(
        PERSONAL + "/", json={"name": "t4", "scopes": ["catalog:read"]}, headers=user()
    )
    assert over.status_code == 409
    assert create_personal(personal, BOB, name="bob")["token"]["userEntityRef"] == BOB
    personal.delete(f"{PERSONAL}/{ids[0]}", headers=user())
    assert create_personal(personal, name="t4")["token"]["name"] == "t4"


def test_personal_permissions(clock: FakeClock) -> None:
    app = build_app(clock, permissions=True, access_tokens={"personal": {"enabled": True}})
    client = app.test_client()
    token_id = create_personal(client)["token"]["id"]
    assert client.get(f"{PERSONAL}/{token_id}", headers=user()).status_code == 200


def test_leak_report_revokes_personal_tokens(personal: FlaskClient) -> None:
    created = create_personal(personal)
    response = personal.post(SERVICE + "/revoke", json={"tokens": [created["rawToken"]]})
    assert response.get_json() == {"revoked": 1}
    token = personal.get(f"{PERSONAL}/{created['token']['id']}", headers=user()).get_json()
    assert token["status"] == "revoked" and token["revokedBy"] == "leak-report"


# -- audit retention ----------------------------------------------------------------


def test_old_audit_events_are_pruned_on_create(client: FlaskClient, clock: FakeClock) -> None:
    token_id = create(client, expiresInDays=365)["token"]["id"]
    clock.advance(1)
    client.patch(f"{SERVICE}/{token_id}", json={"description": "x"}, headers=user())
    clock.advance(364 * DAY)
    create(client, name="later")
    events = client.get(f"{SERVICE}/{token_id}/audit", headers=user()).get_json()["events"]
    assert [e["event"] for e in events] == ["updated", "created"]
    clock.advance(2 * DAY)
    create(client, name="much-later")
    events = client.get(f"{SERVICE}/{token_id}/audit", headers=user()).get_json()["events"]
    assert events == []


# -- OpenAPI -------------------------------------------------------------------------


def test_openapi_matches_the_routes(app: Flask, client: FlaskClient) -> None:
    response = client.get(BASE + "/openapi.json")  # no credentials needed
    assert response.status_code == 200
    spec = response.get_json()
    on_disk = json.loads(
        (Path(flask_backstage_auth.access_tokens.__file__).parent / "openapi.json").read_text(
            encoding="utf-8"
        )
    )
    assert spec == on_disk
    assert spec["openapi"] == "3.0.3"
    for key in ("openapi", "info", "paths", "components"):
        assert key in spec
    assert spec["info"]["title"] and spec["info"]["version"]
    documented = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    }
    real = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] != "access-tokens":
            continue
        path = rule.rule[len(BASE) :].replace("<id>", "{id}")
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                real.add((method, path))
    assert documented == real
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            for status in operation["responses"]:
                assert status.isdigit()
            if "{id}" in path:
                assert any(p["name"] == "id" for p in operation["parameters"])


def test_a_browser_reads_with_the_cookie_but_changes_need_a_token(app: Flask) -> None:
    created = create(app.test_client())
    token_id = created["token"]["id"]
    browser = app.test_client()
    browser.set_cookie(*mock_credentials.limited_user_cookie(ALICE))
    listed = browser.get(SERVICE + "/")
    assert listed.status_code == 200
    assert [t["id"] for t in listed.get_json()["tokens"]] == [token_id]
    assert browser.get(f"{SERVICE}/{token_id}/audit").status_code == 200
    for method, path in (
        ("POST", SERVICE + "/"),
        ("DELETE", f"{SERVICE}/{token_id}"),
        ("POST", f"{SERVICE}/{token_id}/rotate"),
        ("PATCH", f"{SERVICE}/{token_id}"),
    ):
        refused = browser.open(path, method=method, json=new_service_body(name="via-cookie"))
        assert refused.status_code == 401, (method, path)
    assert (
        app.test_client().get(f"{SERVICE}/{token_id}", headers=user()).get_json()["status"]
        == "active"
    )


def test_leak_reports_are_rate_limited_per_client(app: Flask, clock: FakeClock) -> None:
    from flask_backstage_auth.access_tokens.api import LEAK_REPORTS_PER_MINUTE

    anonymous = app.test_client()
    for _ in range(LEAK_REPORTS_PER_MINUTE):
        assert anonymous.post(SERVICE + "/revoke", json={"tokens": []}).status_code == 200
    refused = anonymous.post(SERVICE + "/revoke", json={"tokens": []})
    assert refused.status_code == 429
    assert refused.get_json()["error"]["name"] == "TooManyRequestsError"
    other = anonymous.post(
        SERVICE + "/revoke", json={"tokens": []}, environ_base={"REMOTE_ADDR": "10.1.2.3"}
    )
    assert other.status_code == 200
    clock.now += 61
    assert anonymous.post(SERVICE + "/revoke", json={"tokens": []}).status_code == 200


@pytest.mark.parametrize("collection", [SERVICE + "/", SERVICE])
def test_the_collection_answers_with_and_without_its_trailing_slash(
    client: FlaskClient, collection: str
) -> None:
    created = client.post(collection, json=new_service_body(), headers=user())
    assert created.status_code == 201, created.get_data(as_text=True)  # not a 308 dropping the body
    listed = client.get(collection, headers=user())
    assert listed.status_code == 200
    assert [t["name"] for t in listed.get_json()["tokens"]] == ["ci-pipeline"]
    # The item routes keep their strict form: no route answers an extra slash.
    token_id = created.get_json()["token"]["id"]
    assert client.get(f"{SERVICE}/{token_id}", headers=user()).status_code == 200
    assert client.get(f"{SERVICE}/{token_id}/", headers=user()).status_code == 404
