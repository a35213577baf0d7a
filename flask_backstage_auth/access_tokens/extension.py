"""``AccessTokens(app)``: the ``access-tokens`` plugin of an app using ``BackstageAuth``."""

from __future__ import annotations

import typing as t

from flask import Flask

from flask_backstage_auth.access_tokens.admin import init_admin
from flask_backstage_auth.access_tokens.api import create_blueprint
from flask_backstage_auth.access_tokens.permissions import ALL_PERMISSIONS
from flask_backstage_auth.access_tokens.ratelimit import ClientAddress, remote_addr
from flask_backstage_auth.access_tokens.scopes import Scope, ScopeCatalogue
from flask_backstage_auth.access_tokens.settings import DAY, AccessTokenSettings
from flask_backstage_auth.access_tokens.state import (
    EXTENSION_KEY,
    PLUGIN_ID,
    AccessTokensState,
    get_state,
)
from flask_backstage_auth.access_tokens.store import SqlAccessTokenStore
from flask_backstage_auth.access_tokens.usage import Mode
from flask_backstage_auth.errors import ConfigError
from flask_backstage_auth.extension import BackstageAuth

__all__ = [
    "DAY",
    "EXTENSION_KEY",
    "PLUGIN_ID",
    "AccessTokenSettings",
    "AccessTokens",
    "AccessTokensState",
]


class AccessTokens:
    """The token-management extension; register it after :class:`BackstageAuth`.

    :param store: where tokens live (default: the app's database, see
        ``BackstageAuth(db=...)``; create the tables with ``flask
        backstage-auth db upgrade``).
    :param scopes: scopes added by code to the catalogue.
    :param register_blueprint: mount the REST API at
        ``<BACKSTAGE_AUTH_PLUGIN_PREFIX>/access-tokens`` (``/api/access-tokens``).
    :param admin_pages: also serve the web pages ``/admin/access-tokens`` and
        ``/settings/personal-tokens`` (the ``access-tokens-admin`` blueprint);
        only with ``register_blueprint``, since the pages call that API.
    :param client_address: takes the request and gives the client address that
        leak reports are counted by; by default ``request.remote_addr``, which
        Werkzeug's ``ProxyFix`` sets from ``X-Forwarded-For`` behind a proxy.
    :param usage_writes: how a token's last use and use events are written:
        ``"background"`` (by a thread, off the request's path), ``"inline"``
        (in the request, as where background threads are frozen between
        requests) or ``"manual"`` (only by ``AccessTokens.state(app).usage.flush()``);
        see :mod:`~flask_backstage_auth.access_tokens.usage`.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        store: SqlAccessTokenStore | None = None,
        scopes: t.Sequence[Scope] = (),
        register_blueprint: bool = True,
        admin_pages: bool = True,
        client_address: ClientAddress = remote_addr,
        usage_writes: Mode = "background",
    ) -> None:
        self._store = store
        self._client_address = client_address
        self._usage_writes: Mode = usage_writes
        self._scopes = tuple(scopes)
        self._register_blueprint = register_blueprint
        self._admin_pages = admin_pages
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("AccessTokens is already registered on this app")
        auth_state = BackstageAuth.state(app)
        store = self._store
        if store is None:
            if auth_state.database is None:
                raise ConfigError(
                    "AccessTokens needs a database: give BackstageAuth a Flask-SQLAlchemy db"
                    " (or set BACKSTAGE_AUTH_DATABASE_URI), or pass store=..."
                )
            store = SqlAccessTokenStore(auth_state.database)
        state = AccessTokensState(
            auth_state,
            store,
            ScopeCatalogue.from_config(auth_state.config, self._scopes),
            AccessTokenSettings.from_config(auth_state.config),
            client_address=self._client_address,
            usage_mode=self._usage_writes,
            usage_context=app.app_context,
        )
        BackstageAuth.register_token_handler(
            lambda token: state.verify(token.token),
            stage="late",
            app=app,
            name="access token",
        )
        app.extensions[EXTENSION_KEY] = state
        # Published as primedx's plugin does (permissionsRegistry.addPermissions):
        # the permission backend's metadata lists them.
        auth_state.permission_integrations.get(PLUGIN_ID).add_permissions(ALL_PERMISSIONS)
        if self._register_blueprint:
            app.register_blueprint(create_blueprint(state))
            if self._admin_pages:
                init_admin(app)

    @staticmethod
    def state(app: Flask | None = None) -> AccessTokensState:
        """The state of ``app`` (default: the current app).

        :raises RuntimeError: ``AccessTokens`` is not registered on it.
        """
        return get_state(app)
