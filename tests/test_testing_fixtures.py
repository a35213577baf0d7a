"""The pytest plugin's real-token fixtures: ``backstage_tables``,
``backstage_user_token``, ``backstage_access_token`` (and their helpers)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Blueprint, Flask, jsonify
from flask_sqlalchemy import SQLAlchemy

from flask_backstage_auth import AuthBackend, BackstageAuth, get_credentials
from flask_backstage_auth.access_tokens.extension import AccessTokens
from flask_backstage_auth.db.storage import VERSION_TABLE, metadata
from flask_backstage_auth.errors import InputError
from flask_backstage_auth.testing import bearer_header
from flask_backstage_auth.testing.tokens import (
    create_backstage_tables,
    issue_access_token,
    issue_user_token,
)
from tests.conftest import new_secret


@pytest.fixture
def app() -> Flask:
    """A production-mode app (no mock tokens) with AuthBackend and AccessTokens."""
    app = Flask("fixtures-app", static_folder=None)
    app.config.update(
        SQLALCHEMY_DATABASE_URI="sqlite://",
        BACKSTAGE_AUTH_DEVELOPMENT=False,
        BACKSTAGE_CONFIG={
            "backend": {
                "baseUrl": "http://localhost:7007",
                "auth": {"keys": [{"secret": new_secret()}]},
            },
            "accessTokens": {"personal": {"enabled": True}},
        },
    )
    db = SQLAlchemy()
    db.init_app(app)
    BackstageAuth(app, db=db)
    AuthBackend(app)
    AccessTokens(app)
    for plugin in ("catalog", "scaffolder"):
        blueprint = Blueprint(plugin, __name__, url_prefix=f"/api/{plugin}")
        blueprint.add_url_rule(
            "/me", "me", lambda: jsonify(get_credentials().to_dict()["principal"])
        )
        app.register_blueprint(blueprint)
    return app


def _tables(app: Flask) -> set[str]:
    with app.app_context():
        return set(sa.inspect(BackstageAuth.state(app).database.engine).get_table_names())  # type: ignore[union-attr]


def test_backstage_tables(app: Flask, backstage_tables: None) -> None:
    assert set(metadata.tables) | {VERSION_TABLE} <= _tables(app)
    create_backstage_tables(app)  # again: nothing to do


def test_without_the_fixture_there_are_no_tables(app: Flask) -> None:
    assert not set(metadata.tables) & _tables(app)


def test_backstage_user_token_is_a_real_user_token(app: Flask, backstage_user_token: str) -> None:
    client = app.test_client()
    response = client.get("/api/catalog/me", headers=bearer_header(backstage_user_token))
    assert response.status_code == 200
    assert response.get_json() == {"type": "user", "userEntityRef": "user:default/test"}
    # Production mode: a mock token is refused, the fixture's is not one.
    assert not backstage_user_token.startswith("mock")
    forged = backstage_user_token[:-4] + (
        "AAAA" if not backstage_user_token.endswith("AAAA") else "BBBB"
    )
    assert client.get("/api/catalog/me", headers=bearer_header(forged)).status_code == 401


def test_backstage_access_token_is_scoped_to_catalog_read(
    app: Flask, backstage_access_token: str
) -> None:
    assert backstage_access_token.startswith("bsat_")
    client = app.test_client()
    ok = client.get("/api/catalog/me", headers=bearer_header(backstage_access_token))
    assert ok.status_code == 200
    assert ok.get_json()["type"] == "service"
    refused = client.get("/api/scaffolder/me", headers=bearer_header(backstage_access_token))
    assert refused.status_code == 403


def test_helpers_for_other_users_owners_and_scopes(app: Flask, backstage_tables: None) -> None:
    client = app.test_client()
    user = issue_user_token(app, "user:default/jane", ["user:default/jane", "group:default/a"])
    me = client.get("/api/catalog/me", headers=bearer_header(user)).get_json()
    assert me["userEntityRef"] == "user:default/jane"

    personal = issue_access_token(app, scopes=["scaffolder:read"], kind="personal")
    assert personal.startswith("bspat_")
    response = client.get("/api/scaffolder/me", headers=bearer_header(personal))
    assert response.status_code == 200
    assert response.get_json()["userEntityRef"] == "user:default/test"
    assert client.get("/api/catalog/me", headers=bearer_header(personal)).status_code == 403

    with pytest.raises(InputError):
        issue_access_token(app, scopes=["no-such:scope"])
    expired = issue_access_token(app, scopes=["catalog:read"], name="short", expires_in=-1)
    assert client.get("/api/catalog/me", headers=bearer_header(expired)).status_code == 401


def test_helpers_say_what_is_missing() -> None:
    bare = Flask("bare")
    bare.config["BACKSTAGE_CONFIG"] = {"backend": {"auth": {"keys": [{"secret": new_secret()}]}}}
    BackstageAuth(bare)
    with pytest.raises(RuntimeError, match="no database"):
        create_backstage_tables(bare)
    with pytest.raises(RuntimeError, match="AuthBackend is not registered"):
        issue_user_token(bare)
    with pytest.raises(RuntimeError, match="AccessTokens"):
        issue_access_token(bare, scopes=["catalog:read"])
