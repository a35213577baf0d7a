"""The auth backend's ``GET /api/auth/v1/userinfo`` and where it keeps user info.

As plugin-auth-backend 0.31's OIDC router: a bearer token the ``auth`` plugin
accepts (a limited one too) of a user principal, answered with the claims the
user was last signed in with (``{claims: {sub, ent, ...}}``).
"""

from __future__ import annotations

import copy
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine

import flask_backstage_auth.db.cli
from flask_backstage_auth import BackstageAuth, ConfigError
from flask_backstage_auth.auth.plugin.keys import RotatingKeySource
from flask_backstage_auth.auth.user.handler import create_limited_user_token
from flask_backstage_auth.auth_backend.extension import AuthBackend
from flask_backstage_auth.auth_backend.user_info_store import InMemoryUserInfoStore
from flask_backstage_auth.db.storage import SqlPublicKeyStore, StorageUnavailable
from flask_backstage_auth.db.user_info_store import SqlUserInfoStore
from flask_backstage_auth.testing import MockUserInfoService, mock_credentials
from flask_backstage_auth.user_info import BackstageUserInfo

ALICE = "user:default/alice"
TEAM = "group:default/team-a"
USERINFO = "/api/auth/v1/userinfo"
CONFIG: dict[str, t.Any] = {
    "backend": {
        "baseUrl": "http://localhost:7007",
        "auth": {"keys": [{"secret": "a-test-secret-of-enough-length-0123456789"}]},
    },
    "auth": {
        "providers": {"guest": {"userEntityRef": ALICE, "ownershipEntityRefs": [ALICE, TEAM]}}
    },
}


def make_app(
    backstage: dict[str, t.Any] | None = None,
    *,
    engine: Engine | None = None,
    shared_keys: bool = False,
    **options: t.Any,
) -> Flask:
    app = Flask("userinfo-test", static_folder=None)
    app.config["TESTING"] = True
    app.config["BACKSTAGE_CONFIG"] = copy.deepcopy(CONFIG if backstage is None else backstage)
    if engine is not None:
        app.config["BACKSTAGE_AUTH_DATABASE_URI"] = str(engine.url)
    BackstageAuth(app)
    if engine is not None and shared_keys:
        options["key_source"] = RotatingKeySource(SqlPublicKeyStore(engine))
    AuthBackend(app, **options)
    return app


def sign_in(app: Flask) -> str:
    response = app.test_client().get("/api/auth/guest/refresh")
    assert response.status_code == 200, response.get_data(as_text=True)
    return t.cast(str, response.get_json()["backstageIdentity"]["token"])


def userinfo(app: Flask, token: str | None, scheme: str = "Bearer") -> t.Any:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return app.test_client().get(USERINFO, headers=headers)


def test_full_and_limited_tokens_get_the_stored_claims() -> None:
    app = make_app()
    token = sign_in(app)
    for presented in (token, create_limited_user_token(token)[0]):
        response = userinfo(app, presented)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
        assert response.get_json() == {"claims": {"sub": ALICE, "ent": [ALICE, TEAM]}}


def test_custom_claims_are_kept_and_never_replace_sub_or_ent() -> None:
    app = make_app()
    state = AuthBackend.state(app)
    issued = state.issue_token(ALICE, [TEAM], {"sub": "user:default/mallory", "ent": [], "x": 1})
    body = userinfo(app, issued.token).get_json()
    assert body == {"claims": {"sub": ALICE, "ent": [TEAM], "x": 1}}


@pytest.mark.parametrize(
    ("token", "scheme", "message"),
    [
        (None, "Bearer", "No token provided"),
        ("", "Bearer", "No token provided"),
        ("abc", "Basic", "No token provided"),
        ("not-a-token", "Bearer", "Illegal token"),
        ("a.b.c", "Bearer", "Illegal token"),
    ],
)
def test_no_or_invalid_token_is_a_401(token: str | None, scheme: str, message: str) -> None:
    response = userinfo(make_app(), token, scheme)
    assert response.status_code == 401
    assert response.get_json()["error"] == {"name": "AuthenticationError", "message": message}


def test_a_token_of_another_auth_backend_is_a_401() -> None:
    other = sign_in(make_app())
    response = userinfo(make_app(), other)
    assert response.status_code == 401
    assert response.get_json()["error"]["name"] == "AuthenticationError"


def test_a_service_token_is_a_400() -> None:
    app = make_app()
    with app.app_context():
        token = BackstageAuth.state(app).token_manager.get_token().token
    response = userinfo(app, token)
    assert response.status_code == 400
    assert response.get_json()["error"] == {
        "name": "InputError",
        "message": "Userinfo endpoint must be called with a token that represents a user principal",
    }


def test_a_user_never_signed_in_here_is_a_404() -> None:
    app = make_app()
    issued = AuthBackend.state(app).issuer.issue_token("user:default/bob", [])  # not stored
    response = userinfo(app, issued.token)
    assert response.status_code == 404
    assert response.get_json()["error"] == {
        "name": "NotFoundError",
        "message": "User info not found",
    }


def test_mock_tokens_are_refused_where_they_are_not_accepted() -> None:
    app = make_app()
    app.config["BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS"] = True  # read at init: still refused
    response = userinfo(app, mock_credentials.user_token(ALICE))
    assert response.status_code == 401


@pytest.mark.parametrize("value", ["yes", 1, [True]])
def test_omit_claim_config_must_be_a_boolean(value: t.Any) -> None:
    config = copy.deepcopy(CONFIG)
    config["auth"]["omitIdentityTokenOwnershipClaim"] = value
    with pytest.raises(ConfigError, match="auth.omitIdentityTokenOwnershipClaim"):
        make_app(config)


def test_ownership_is_served_when_ent_is_in_the_token_too() -> None:
    config = copy.deepcopy(CONFIG)
    config["auth"]["omitIdentityTokenOwnershipClaim"] = False
    app = make_app(config)
    assert AuthBackend.state(app).omit_ownership_claim is False
    assert userinfo(app, sign_in(app)).get_json()["claims"]["ent"] == [ALICE, TEAM]


# -- the stores -------------------------------------------------------------------------


def test_memory_store_is_the_default_without_a_database_and_is_bounded() -> None:
    assert isinstance(AuthBackend.state(make_app()).user_info_store, InMemoryUserInfoStore)
    store = InMemoryUserInfoStore(max_users=2)
    for name in ("a", "b", "a", "c"):
        store.add_user_info({"claims": {"sub": f"user:default/{name}", "ent": []}})
    assert store.get_user_info("user:default/b") is None  # the oldest sign-in went
    assert store.get_user_info("user:default/a") == {"claims": {"sub": "user:default/a", "ent": []}}
    got = store.get_user_info("user:default/c")
    assert got is not None
    got["claims"]["ent"].append("group:default/admins")  # a copy: the store is unchanged
    assert store.get_user_info("user:default/c") == {"claims": {"sub": "user:default/c", "ent": []}}


def sqlite_engine(tmp_path: Path) -> Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'auth.sqlite'}")
    flask_backstage_auth.db.cli.upgrade_database(engine)
    return engine


def check_sql_store(engine: Engine) -> None:
    store = SqlUserInfoStore(engine)
    assert store.get_user_info(ALICE) is None
    store.add_user_info({"claims": {"sub": ALICE, "ent": [ALICE, TEAM], "x": {"y": 1}}})
    assert store.get_user_info(ALICE) == {
        "claims": {"sub": ALICE, "ent": [ALICE, TEAM], "x": {"y": 1}}
    }
    store.add_user_info({"claims": {"sub": ALICE, "ent": [ALICE]}})  # a later sign-in replaces it
    assert store.get_user_info(ALICE) == {"claims": {"sub": ALICE, "ent": [ALICE]}}
    with engine.begin() as connection:
        connection.execute(
            store.table.update()
            .where(store.table.c.user_entity_ref == ALICE)
            .values(user_info="[1")
        )
    assert store.get_user_info(ALICE) is None  # a row that is not JSON is no user info


def test_sql_store_on_sqlite(tmp_path: Path) -> None:
    check_sql_store(sqlite_engine(tmp_path))


def test_sql_store_on_postgresql(postgres_url: str, pg_schema: str) -> None:
    engine = sa.create_engine(postgres_url, connect_args={"options": f"-csearch_path={pg_schema}"})
    try:
        flask_backstage_auth.db.cli.upgrade_database(engine)
        check_sql_store(engine)
    finally:
        engine.dispose()


def test_instances_sharing_a_database_share_user_info(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    first = make_app(engine=engine, shared_keys=True)
    second = make_app(engine=engine, shared_keys=True)
    assert isinstance(AuthBackend.state(first).user_info_store, SqlUserInfoStore)
    token = sign_in(first)
    response = userinfo(second, token)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"claims": {"sub": ALICE, "ent": [ALICE, TEAM]}}


def test_no_token_is_handed_out_when_user_info_cannot_be_stored(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")  # no tables
    app = make_app(user_info_store=SqlUserInfoStore(engine))
    response = app.test_client().get("/api/auth/guest/refresh")
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"]["name"] == "ServiceUnavailableError"
    assert "user info database is unavailable" in body["error"]["message"]
    assert "token" not in body
    with pytest.raises(StorageUnavailable):
        SqlUserInfoStore(engine).get_user_info(ALICE)


# -- the mock for plugin unit tests ----------------------------------------------------


def test_mock_user_info_service_is_backstages() -> None:
    mock = MockUserInfoService()
    assert mock.get_user_info(mock_credentials.user(ALICE)) == BackstageUserInfo(ALICE, (ALICE,))
    assert MockUserInfoService((TEAM,)).get_user_info(
        mock_credentials.user(ALICE)
    ) == BackstageUserInfo(ALICE, (TEAM,))
    with pytest.raises(Exception, match="User info not available for principal type 'service'"):
        mock.get_user_info(mock_credentials.service())
