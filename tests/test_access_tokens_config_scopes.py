"""Scopes declared in config (``accessTokens.service.scopes``), production mode.

A scope from config is offered and enforced like a default one: its plugin
only, its actions only. A scope a token carries but the catalogue no longer
has (dropped from config) allows nothing. Bad declarations are refused at
start-up with the offending path. A config scope that reaches the
access-tokens plugin itself still never lets an access token create one.
"""

from __future__ import annotations

import time
import typing as t
from pathlib import Path

import pytest
from flask import Blueprint, Flask, Response, jsonify
from flask.testing import FlaskClient
from flask_sqlalchemy import SQLAlchemy

import flask_backstage_auth.db.cli
from flask_backstage_auth import BackstageAuth, get_credentials
from flask_backstage_auth.access_tokens.extension import AccessTokens
from flask_backstage_auth.access_tokens.guard import ACCESS_TOKEN_CREATES, ACCESS_TOKEN_ROTATES
from flask_backstage_auth.access_tokens.scopes import Scope
from flask_backstage_auth.auth_backend.extension import AuthBackend
from flask_backstage_auth.errors import ConfigError
from flask_backstage_auth.permissions import create_permission
from tests.access_token_app import ALICE, SECRET, TEAM, Clock, bearer, user_token

BASE = "/api/access-tokens"
REPORTS_READ = {"id": "reports:read", "description": "Read reports", "plugin": "reports"}
REPORTS_WRITE = {
    "id": "reports:write",
    "plugin": "reports",
    "actions": ["read", "create", "update"],
}
TOKENS_WRITE = {
    "id": "access-tokens:write",
    "description": "Manage access tokens",
    "plugin": "access-tokens",
    "actions": ["create", "read", "update", "delete"],
}
REPORT_CREATE = create_permission("reports.report.create", {"action": "create"})
REPORT_READ = create_permission("reports.report.read", {"action": "read"})


def build(
    scopes: list[t.Any],
    *,
    database_uri: str = "sqlite://",
    code_scopes: t.Sequence[Scope] = (),
) -> Flask:
    """BackstageAuth + AuthBackend + AccessTokens, the scopes declared in config."""
    app = Flask("config-scopes", static_folder=None)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_uri,
        BACKSTAGE_AUTH_DEVELOPMENT=False,
        BACKSTAGE_CONFIG={
            "backend": {
                "baseUrl": "http://localhost:7007",
                "auth": {"keys": [{"secret": SECRET}]},
            },
            "accessTokens": {"service": {"scopes": scopes}, "personal": {"enabled": True}},
        },
    )
    db = SQLAlchemy()
    db.init_app(app)
    BackstageAuth(app, db=db, clock=Clock(time.time()))
    with app.app_context():
        flask_backstage_auth.db.cli.upgrade_database(db.engine)
    AuthBackend(app)
    reports = Blueprint("reports", __name__, url_prefix="/api/reports")

    @reports.get("/items")
    def items() -> Response:
        credentials = get_credentials()
        BackstageAuth.state().permissions.require(credentials, REPORT_READ)
        return jsonify(credentials.to_dict())

    @reports.post("/items")
    def create_item() -> Response:
        BackstageAuth.state().permissions.require(get_credentials(), REPORT_CREATE)
        return jsonify(created=True)

    catalog = Blueprint("catalog", __name__, url_prefix="/api/catalog")

    @catalog.get("/entities")
    def entities() -> Response:
        return jsonify(get_credentials().to_dict())

    app.register_blueprint(reports)
    app.register_blueprint(catalog)
    AccessTokens(app, scopes=code_scopes)
    return app


def create(
    client: FlaskClient, owner: dict[str, str], scopes: list[str], kind: str = "service"
) -> dict[str, t.Any]:
    name = "-".join(scope.replace(":", "-") for scope in scopes)
    body: dict[str, t.Any] = {"name": name, "scopes": scopes}
    if kind == "service":
        body["groupEntityRef"] = TEAM
    response = client.post(f"{BASE}/{kind}/", json=body, headers=owner)
    assert response.status_code == 201, response.get_json()
    return t.cast(t.Dict[str, t.Any], response.get_json())


def message(response: t.Any) -> str:
    return t.cast(str, response.get_json()["error"]["message"])


@pytest.fixture
def app() -> Flask:
    return build([REPORTS_READ, REPORTS_WRITE, TOKENS_WRITE])


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def owner(app: Flask) -> dict[str, str]:
    return bearer(user_token(app))


class TestScopesFromConfig:
    def test_offered_beside_the_defaults(self, client: FlaskClient, owner: dict[str, str]) -> None:
        response = client.get(f"{BASE}/service/scopes", headers=owner)
        assert response.status_code == 200
        scopes = {scope["id"]: scope for scope in response.get_json()["scopes"]}
        assert scopes["reports:read"] == {**REPORTS_READ, "actions": ["read"]}  # read by default
        assert scopes["reports:write"] == {**REPORTS_WRITE, "description": "reports:write"}
        assert "catalog:read" in scopes

    def test_a_read_scope_reads_its_plugin_only(
        self, client: FlaskClient, owner: dict[str, str]
    ) -> None:
        raw = bearer(create(client, owner, ["reports:read"])["rawToken"])
        listed = client.get("/api/reports/items", headers=raw)
        assert listed.status_code == 200
        assert listed.get_json()["principal"]["accessRestrictions"] == {
            "permissionAttributes": {"action": ["read"]}
        }
        created = client.post("/api/reports/items", headers=raw)
        assert created.status_code == 403
        assert message(created) == "Permission denied: reports.report.create"
        elsewhere = client.get("/api/catalog/entities", headers=raw)
        assert elsewhere.status_code == 403
        assert message(elsewhere) == "This token's access is restricted to plugin(s) 'reports'"

    def test_a_write_scope_writes(self, client: FlaskClient, owner: dict[str, str]) -> None:
        raw = bearer(create(client, owner, ["reports:write"])["rawToken"])
        assert client.post("/api/reports/items", headers=raw).status_code == 200
        assert client.get("/api/reports/items", headers=raw).status_code == 200
        assert client.get("/api/catalog/entities", headers=raw).status_code == 403

    def test_a_personal_token_with_a_config_scope(
        self, client: FlaskClient, owner: dict[str, str]
    ) -> None:
        raw = bearer(create(client, owner, ["reports:read"], kind="personal")["rawToken"])
        listed = client.get("/api/reports/items", headers=raw)
        assert listed.status_code == 200
        assert listed.get_json()["principal"]["userEntityRef"] == ALICE
        assert client.post("/api/reports/items", headers=raw).status_code == 403
        assert client.get("/api/catalog/entities", headers=raw).status_code == 403

    def test_an_undeclared_scope_cannot_be_asked_for(
        self, client: FlaskClient, owner: dict[str, str]
    ) -> None:
        body = {"name": "x", "groupEntityRef": TEAM, "scopes": ["reports:delete"]}
        response = client.post(f"{BASE}/service/", json=body, headers=owner)
        assert response.status_code == 400
        assert "reports:delete" in message(response)


class TestAScopeDroppedFromConfig:
    """Tokens keep the scope ids they were given; a scope the catalogue no longer
    has grants nothing (the same database, the app restarted with new config)."""

    def test_it_allows_nothing(self, tmp_path: Path) -> None:
        uri = f"sqlite:///{tmp_path / 'tokens.db'}"
        before = build([REPORTS_READ], database_uri=uri)
        client = before.test_client()
        owner = bearer(user_token(before))
        both = bearer(create(client, owner, ["reports:read", "catalog:read"])["rawToken"])
        only = bearer(create(client, owner, ["reports:read"])["rawToken"])
        assert client.get("/api/reports/items", headers=both).status_code == 200
        assert client.get("/api/reports/items", headers=only).status_code == 200

        after = build([], database_uri=uri).test_client()
        refused = after.get("/api/reports/items", headers=both)
        assert refused.status_code == 403
        assert message(refused) == "This token's access is restricted to plugin(s) 'catalog'"
        assert after.get("/api/catalog/entities", headers=both).status_code == 200
        for path in ("/api/reports/items", "/api/catalog/entities", f"{BASE}/service/"):
            assert after.get(path, headers=only).status_code == 403, path
        assert after.post("/api/reports/items", headers=only).status_code == 403


class TestBadDeclarations:
    @pytest.mark.parametrize(
        ("entry", "path"),
        [
            ({**REPORTS_READ, "actions": "read"}, "accessTokens.service.scopes[0].actions"),
            ({**REPORTS_READ, "actions": ["execute"]}, "accessTokens.service.scopes[0].actions"),
            ({**REPORTS_READ, "actions": [["read"]]}, "accessTokens.service.scopes[0].actions"),
            ({**REPORTS_READ, "id": "reports read"}, "accessTokens.service.scopes[0]"),
            ({**REPORTS_READ, "id": "catalog:read"}, "accessTokens.service.scopes[0]"),
            ({"id": "reports:read"}, "plugin"),
            ({"plugin": "reports"}, "id"),
        ],
    )
    def test_refused_at_start_up(self, entry: dict[str, t.Any], path: str) -> None:
        with pytest.raises(ConfigError) as raised:
            build([entry])
        assert path in str(raised.value)

    def test_a_code_scope_that_contradicts_config(self) -> None:
        contradicting = Scope("reports:read", "Write reports", "reports", ("read", "create"))
        with pytest.raises(ConfigError, match="declared twice"):
            build([REPORTS_READ], code_scopes=[contradicting])

    def test_the_same_scope_from_config_and_code(self) -> None:
        same = Scope("reports:read", "Read reports", "reports", ("read",))
        app = build([REPORTS_READ], code_scopes=[same])
        scopes = AccessTokens.state(app).catalogue.all()
        assert [s for s in scopes if s.id == "reports:read"] == [same]


class TestAConfigScopeOnTheAccessTokensPlugin:
    """Even with every action on the access-tokens plugin, an access token
    creates no access token, of either kind."""

    @pytest.mark.parametrize("kind", ["service", "personal"])
    def test_no_token_creates_a_token(
        self, client: FlaskClient, owner: dict[str, str], kind: str
    ) -> None:
        raw = create(client, owner, ["access-tokens:write"], kind=kind)["rawToken"]
        for target in ("service", "personal"):
            body: dict[str, t.Any] = {"name": "child", "scopes": ["catalog:read"]}
            if target == "service":
                body["groupEntityRef"] = TEAM
            for scheme_headers in (bearer(raw), bearer(raw, "bearer"), bearer(raw, "BEARER")):
                response = client.post(f"{BASE}/{target}/", json=body, headers=scheme_headers)
                assert response.status_code == 403, (kind, target, response.get_json())
                if kind == "service" and target == "personal":
                    # personal tokens are a user's: refused before the guard
                    assert message(response) == "This endpoint does not allow 'service' credentials"
                else:
                    assert message(response) == ACCESS_TOKEN_CREATES
                assert "rawToken" not in response.get_data(as_text=True)
        for target in ("service", "personal"):
            listed = client.get(f"{BASE}/{target}/", headers=owner).get_json()["tokens"]
            assert len(listed) == (1 if target == kind else 0)

    @pytest.mark.parametrize("kind", ["service", "personal"])
    def test_no_token_rotates_a_token_itself_included(
        self, client: FlaskClient, owner: dict[str, str], kind: str
    ) -> None:
        """A rotation mints a secret with a new expiry: a token that could rotate
        itself would outlive every lifetime limit. Revoking stays allowed."""
        made = create(client, owner, ["access-tokens:write"], kind=kind)
        other = create(client, owner, ["reports:read"], kind=kind)
        raw = made["rawToken"]
        for token_id in (made["token"]["id"], other["token"]["id"]):
            for headers in (bearer(raw), bearer(raw, "bearer")):
                response = client.post(
                    f"{BASE}/{kind}/{token_id}/rotate", json={"graceSeconds": 0}, headers=headers
                )
                assert response.status_code == 403, response.get_json()
                assert message(response) == ACCESS_TOKEN_ROTATES
                assert "rawToken" not in response.get_data(as_text=True)
        # Its own secret still works, unrotated; the owner may rotate it.
        assert client.get(f"{BASE}/{kind}/", headers=bearer(raw)).status_code == 200
        rotated = client.post(f"{BASE}/{kind}/{made['token']['id']}/rotate", json={}, headers=owner)
        assert rotated.status_code == 200 and rotated.get_json()["rawToken"] != raw
