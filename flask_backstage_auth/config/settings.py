"""The extension's Flask settings, with their documented defaults.

Backstage's own configuration lives in ``app.config["BACKSTAGE_CONFIG"]``;
these ``BACKSTAGE_AUTH_*`` keys tune the Python side.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from flask import Flask

from flask_backstage_auth.config.timeouts import DatabaseTimeouts
from flask_backstage_auth.config.unknown_keys import warn_unknown_settings
from flask_backstage_auth.errors import ConfigError

#: Every setting and its default; ``init_app`` fills them in with ``setdefault``.
DEFAULTS: dict[str, t.Any] = {
    # None: development is ``app.debug or app.testing``.
    "BACKSTAGE_AUTH_DEVELOPMENT": None,
    # Seconds of clock skew on exp/nbf (Backstage: 0).
    "BACKSTAGE_AUTH_LEEWAY": 0,
    # Seconds a user or plugin token's iat may be in the future (Backstage: no limit).
    "BACKSTAGE_AUTH_IAT_LEEWAY": 60,
    # Seconds a legacy token's exp may exceed one hour.
    "BACKSTAGE_AUTH_MAX_LIFETIME_LEEWAY": 60,
    # Verified tokens kept in memory (0 disables the cache).
    "BACKSTAGE_AUTH_CACHE_SIZE": 10_000,
    # The longest a verified token is reused without verifying again.
    "BACKSTAGE_AUTH_CACHE_TTL": 60,
    # Accept mock-*-token strings; only ever with TESTING on.
    "BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS": False,
    # Key-set (JWKS) fetches: total seconds for one fetch, seconds a request
    # waits for one, the largest document, the cooldown between refetches.
    "BACKSTAGE_AUTH_JWKS_TIMEOUT": 5,
    "BACKSTAGE_AUTH_JWKS_WAIT": 2,
    "BACKSTAGE_AUTH_JWKS_MAX_BYTES": 256 * 1024,
    "BACKSTAGE_AUTH_JWKS_COOLDOWN": 30,
    # Fetches a second for plugins that only backend.baseUrl finds (0: none).
    "BACKSTAGE_AUTH_JWKS_FETCH_BUDGET": 5,
    # Total seconds one call to the auth backend's /v1/userinfo may take.
    "BACKSTAGE_AUTH_USER_INFO_TIMEOUT": 5,
    # Where plugins are mounted: <prefix>/<plugin id>.
    "BACKSTAGE_AUTH_PLUGIN_PREFIX": "/api",
    # A database for plugin keys when the app has no Flask-SQLAlchemy ``db``.
    "BACKSTAGE_AUTH_DATABASE_URI": None,
    # Database bounds, in seconds (flask_backstage_auth.db.guard): opening a
    # connection, one statement (a transaction of the library is cut after it
    # plus 1 s when the server stops answering), a lock wait, a pool checkout.
    "BACKSTAGE_AUTH_DB_CONNECT_TIMEOUT": 3,
    "BACKSTAGE_AUTH_DB_STATEMENT_TIMEOUT": 5,
    "BACKSTAGE_AUTH_DB_LOCK_TIMEOUT": 2,
    "BACKSTAGE_AUTH_DB_POOL_TIMEOUT": 3,
    # SameSite of the backstage-auth cookie: "Lax" (ours), "Strict" or "None" (Backstage's).
    "BACKSTAGE_AUTH_COOKIE_SAMESITE": "Lax",
    # Every HTTP error of the app (404, 405, 500, routing redirects) in
    # Backstage's JSON shape, not only the library's own.
    "BACKSTAGE_AUTH_JSON_ERRORS": False,
}


def _number(app: Flask, key: str, minimum: float) -> float:
    value = app.config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ConfigError(f"{key} must be a number >= {minimum}")
    return float(value)


@dataclass(frozen=True)
class Settings:
    """The settings, read once at ``init_app``."""

    development: bool
    leeway: float
    iat_leeway: float
    max_lifetime_leeway: float
    cache_size: int
    cache_ttl: float
    accept_mock_tokens: bool
    jwks_timeout: float
    jwks_wait: float
    jwks_max_bytes: int
    jwks_cooldown: float
    jwks_fetch_budget: float
    user_info_timeout: float
    plugin_prefix: str
    cookie_samesite: str
    json_errors: bool
    #: The database bounds (``BACKSTAGE_AUTH_DB_*_TIMEOUT``).
    database_timeouts: DatabaseTimeouts

    @classmethod
    def from_app(cls, app: Flask) -> Settings:
        warn_unknown_settings(app.config, DEFAULTS)
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        development = app.config["BACKSTAGE_AUTH_DEVELOPMENT"]
        if development is None:
            development = bool(app.debug or app.testing)
        accept_mock = bool(app.config["BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS"])
        if accept_mock and not app.testing:
            raise ConfigError("BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS requires TESTING to be on")
        samesite = app.config["BACKSTAGE_AUTH_COOKIE_SAMESITE"]
        if samesite not in ("Lax", "Strict", "None"):
            raise ConfigError("BACKSTAGE_AUTH_COOKIE_SAMESITE must be 'Lax', 'Strict' or 'None'")
        prefix = app.config["BACKSTAGE_AUTH_PLUGIN_PREFIX"]
        if not isinstance(prefix, str) or (prefix and not prefix.startswith("/")):
            raise ConfigError("BACKSTAGE_AUTH_PLUGIN_PREFIX must be a path such as '/api'")
        return cls(
            development=bool(development),
            leeway=_number(app, "BACKSTAGE_AUTH_LEEWAY", 0),
            iat_leeway=_number(app, "BACKSTAGE_AUTH_IAT_LEEWAY", 0),
            max_lifetime_leeway=_number(app, "BACKSTAGE_AUTH_MAX_LIFETIME_LEEWAY", 0),
            cache_size=int(_number(app, "BACKSTAGE_AUTH_CACHE_SIZE", 0)),
            cache_ttl=_number(app, "BACKSTAGE_AUTH_CACHE_TTL", 0),
            accept_mock_tokens=accept_mock,
            jwks_timeout=_number(app, "BACKSTAGE_AUTH_JWKS_TIMEOUT", 0.1),
            jwks_wait=_number(app, "BACKSTAGE_AUTH_JWKS_WAIT", 0),
            jwks_max_bytes=int(_number(app, "BACKSTAGE_AUTH_JWKS_MAX_BYTES", 1024)),
            # Below 30 s only in tests: a forged kid must not make us a fetch loop.
            jwks_cooldown=_number(app, "BACKSTAGE_AUTH_JWKS_COOLDOWN", 0 if app.testing else 30),
            jwks_fetch_budget=_number(app, "BACKSTAGE_AUTH_JWKS_FETCH_BUDGET", 0),
            user_info_timeout=_number(app, "BACKSTAGE_AUTH_USER_INFO_TIMEOUT", 0.1),
            plugin_prefix=prefix.rstrip("/"),
            cookie_samesite=samesite,
            json_errors=bool(app.config["BACKSTAGE_AUTH_JSON_ERRORS"]),
            database_timeouts=DatabaseTimeouts(
                connect=_number(app, "BACKSTAGE_AUTH_DB_CONNECT_TIMEOUT", 1),
                statement=_number(app, "BACKSTAGE_AUTH_DB_STATEMENT_TIMEOUT", 0.1),
                lock=_number(app, "BACKSTAGE_AUTH_DB_LOCK_TIMEOUT", 0.1),
                pool=_number(app, "BACKSTAGE_AUTH_DB_POOL_TIMEOUT", 0.1),
            ),
        )
