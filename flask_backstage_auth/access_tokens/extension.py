"""``AccessTokens(app)``: the ``access-tokens`` plugin of an app using ``BackstageAuth``."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from flask import Flask, current_app

from flask_backstage_auth.access_tokens.authenticator import AccessTokenAuthenticator
from flask_backstage_auth.access_tokens.ratelimit import ClientAddress, remote_addr
from flask_backstage_auth.access_tokens.scopes import Scope, ScopeCatalogue
from flask_backstage_auth.access_tokens.store import SqlAccessTokenStore
from flask_backstage_auth.config.reader import ConfigReader
from flask_backstage_auth.errors import ConfigError
from flask_backstage_auth.extension import BackstageAuth, BackstageAuthState

EXTENSION_KEY = "backstage_auth_access_tokens"
PLUGIN_ID = "access-tokens"
DAY = 86400


def _positive(config: ConfigReader, key: str, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{config.path(key)} must be a positive number")
    return float(value)


@dataclass(frozen=True)
class AccessTokenSettings:
    """``accessTokens.*`` with their defaults (all durations in seconds)."""

    max_lifetime: float = 365 * DAY
    default_lifetime: float = 90 * DAY
    revocation_check: float = 5
    last_used_interval: float = 300
    audit_retention: float = 365 * DAY
    max_rotation_grace: float = DAY
    personal_enabled: bool = False
    personal_default_lifetime: float = 30 * DAY
    personal_max_lifetime: float = 365 * DAY
    personal_max_per_user: int = 20

    @classmethod
    def from_config(cls, config: ConfigReader) -> AccessTokenSettings:
        service = config.get_config("accessTokens.service")
        personal = config.get_config("accessTokens.personal")
        settings = cls(
            max_lifetime=_positive(service, "maxTokenLifetimeDays", 365) * DAY,
            default_lifetime=_positive(service, "defaultTokenLifetimeDays", 90) * DAY,
            revocation_check=_positive(service, "revocationCheckSeconds", 5),
            last_used_interval=_positive(service, "lastUsedIntervalSeconds", 300),
            audit_retention=_positive(service, "auditRetentionDays", 365) * DAY,
            max_rotation_grace=_positive(service, "maxRotationGraceSeconds", DAY),
            personal_enabled=personal.get_bool("enabled", False),
            personal_default_lifetime=_positive(personal, "defaultExpiryDays", 30) * DAY,
            personal_max_lifetime=_positive(personal, "maxExpiryDays", 365) * DAY,
            personal_max_per_user=int(_positive(personal, "maxTokensPerUser", 20)),
        )
        if settings.default_lifetime > settings.max_lifetime:
            raise ConfigError(
                "accessTokens.service.defaultTokenLifetimeDays must not exceed maxTokenLifetimeDays"
            )
        if settings.personal_default_lifetime > settings.personal_max_lifetime:
            raise ConfigError(
                "accessTokens.personal.defaultExpiryDays must not exceed maxExpiryDays"
            )
        return settings


class AccessTokensState:
    """What :class:`AccessTokens` built for one app."""

    def __init__(
        self,
        auth_state: BackstageAuthState,
        store: SqlAccessTokenStore,
        catalogue: ScopeCatalogue,
        settings: AccessTokenSettings,
        *,
        client_address: ClientAddress = remote_addr,
    ) -> None:
        self.auth_state = auth_state
        self.store = store
        self.catalogue = catalogue
        self.settings = settings
        self.clock = auth_state.clock
        #: Where a leak report's client address comes from (the rate limit's key).
        self.client_address = client_address
        self.authenticator = AccessTokenAuthenticator(
            store,
            catalogue,
            clock=auth_state.clock,
            revocation_check=settings.revocation_check,
            last_used_interval=settings.last_used_interval,
            personal_enabled=settings.personal_enabled,
        )

    def forget(self, token_id: str) -> None:
        """Stop accepting a revoked or rotated token on this instance at once."""
        self.auth_state.verifier.forget_revocation_id(token_id)


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
    ) -> None:
        self._store = store
        self._client_address = client_address
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
        )
        BackstageAuth.register_token_handler(
            lambda token: state.authenticator(token.token), stage="late", app=app
        )
        app.extensions[EXTENSION_KEY] = state
        if self._register_blueprint:
            from flask_backstage_auth.access_tokens.api import create_blueprint

            app.register_blueprint(create_blueprint(state))
            if self._admin_pages:
                from flask_backstage_auth.access_tokens.admin import init_admin

                init_admin(app)

    @staticmethod
    def state(app: Flask | None = None) -> AccessTokensState:
        target = app if app is not None else current_app
        try:
            return t.cast(AccessTokensState, target.extensions[EXTENSION_KEY])
        except KeyError:
            raise RuntimeError("AccessTokens is not registered on this app") from None
