"""A production-mode app with the access-token API and real tokens of every kind.

No ``TESTING`` mock tokens: user tokens come from :class:`AuthBackend`'s issuer,
their limited form from :func:`create_limited_user_token`, on-behalf-of tokens
from another plugin's auth service, access tokens from the API itself.
"""

from __future__ import annotations

import typing as t

from flask import Blueprint, Flask, jsonify
from flask_sqlalchemy import SQLAlchemy

import flask_backstage_auth.db.cli
from flask_backstage_auth import AuthBackend, BackstageAuth, get_credentials
from flask_backstage_auth.access_tokens.extension import AccessTokens
from flask_backstage_auth.access_tokens.ratelimit import ClientAddress, remote_addr
from flask_backstage_auth.access_tokens.scopes import Scope
from flask_backstage_auth.access_tokens.usage import Mode
from flask_backstage_auth.auth.user.handler import create_limited_user_token

START = 1_700_000_000.0
ALICE = "user:default/alice"
TEAM = "group:default/team-a"
SECRET = "a-test-secret-of-enough-length-0123456789"
#: A scope that lets an access token call the access-tokens plugin.
SELF_SCOPE = Scope("access-tokens:read", "Read own token metadata", "access-tokens", ("read",))


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def build(
    clock: Clock | None = None,
    *,
    prefix: str | None = None,
    guest: bool = False,
    client_address: ClientAddress = remote_addr,
    database_uri: str = "sqlite://",
    usage_writes: Mode = "background",
    **settings: t.Any,
) -> Flask:
    """BackstageAuth + AuthBackend + AccessTokens (personal tokens on), in production mode.

    :param guest: also the guest provider, allowed outside development.
    :param database_uri: the database (default: in memory, where token uses
        are written in the request).
    """
    app = Flask("access-token-app", static_folder=None)
    config: dict[str, t.Any] = {
        "backend": {"baseUrl": "http://localhost:7007", "auth": {"keys": [{"secret": SECRET}]}},
        "accessTokens": {"personal": {"enabled": True}},
    }
    if guest:
        config["auth"] = {"providers": {"guest": {"dangerouslyAllowOutsideDevelopment": True}}}
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_uri,
        BACKSTAGE_AUTH_DEVELOPMENT=False,
        BACKSTAGE_CONFIG=config,
        **settings,
    )
    if prefix is not None:
        app.config["BACKSTAGE_AUTH_PLUGIN_PREFIX"] = prefix
    db = SQLAlchemy()
    db.init_app(app)
    BackstageAuth(app, db=db, clock=clock or Clock())
    with app.app_context():
        flask_backstage_auth.db.cli.upgrade_database(db.engine)
    AuthBackend(app)
    catalog = Blueprint("catalog", __name__, url_prefix=f"{prefix or '/api'}/catalog")

    @catalog.get("/entities")
    def entities() -> t.Any:
        return jsonify(get_credentials().to_dict())

    app.register_blueprint(catalog)
    AccessTokens(app, scopes=[SELF_SCOPE], client_address=client_address, usage_writes=usage_writes)
    return app


def user_token(app: Flask, ref: str = ALICE) -> str:
    """A full user token, as Backstage's auth backend issues it."""
    return AuthBackend.state(app).issuer.issue_token(ref, [ref]).token


def limited_token(app: Flask, ref: str = ALICE) -> str:
    """The limited form of a user token: what the ``backstage-auth`` cookie holds."""
    return create_limited_user_token(user_token(app, ref))[0]


def on_behalf_of_token(app: Flask, ref: str = ALICE, *, plugin: str = "search") -> str:
    """A plugin token of ``plugin`` for the access-tokens plugin, on behalf of ``ref``."""
    auth = BackstageAuth.state(app).auth(plugin)
    with app.test_request_context():
        credentials = auth.authenticate(user_token(app, ref))
        return auth.get_plugin_request_token(
            on_behalf_of=credentials, target_plugin_id="access-tokens"
        ).token


def bearer(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}
