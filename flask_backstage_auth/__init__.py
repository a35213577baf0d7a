"""Backstage-compatible backend authentication for Flask.

The names here are the ones most apps need: the extensions, the services,
credentials and principals, the common errors, the policy decorators, and
the old backend system's token manager and middleware. Everything else is
imported from its documented module (see the API reference), for example
:mod:`flask_backstage_auth.permissions` (``ALLOW``, ``DENY``, policies),
:mod:`flask_backstage_auth.config` (``load_app_config``),
:mod:`flask_backstage_auth.errors`, :mod:`flask_backstage_auth.db`
(``upgrade_database``) and :mod:`flask_backstage_auth.testing`.
"""

from __future__ import annotations

import typing as t

from flask_backstage_auth.auth.service import AuthService
from flask_backstage_auth.auth_backend.extension import AuthBackend
from flask_backstage_auth.credentials import (
    AccessRestrictions,
    Credentials,
    NonePrincipal,
    ServicePrincipal,
    UserPrincipal,
)
from flask_backstage_auth.errors import (
    AuthenticationError,
    BackstageError,
    ConfigError,
    NotAllowedError,
)
from flask_backstage_auth.extension import BackstageAuth, get_credentials
from flask_backstage_auth.http_auth.service import HttpAuthService
from flask_backstage_auth.legacy.middleware import create_require_authentication_middleware
from flask_backstage_auth.legacy.token_manager import ServerTokenManager, TokenManager
from flask_backstage_auth.permissions import PermissionsService
from flask_backstage_auth.router.policies import (
    add_auth_policy,
    allow_user_cookie,
    unauthenticated,
)

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.access_tokens.extension import AccessTokens

__version__ = "0.1.0.dev0"

__all__ = [
    "AccessRestrictions",
    "AccessTokens",
    "AuthBackend",
    "AuthService",
    "AuthenticationError",
    "BackstageAuth",
    "BackstageError",
    "ConfigError",
    "Credentials",
    "HttpAuthService",
    "NonePrincipal",
    "NotAllowedError",
    "PermissionsService",
    "ServerTokenManager",
    "ServicePrincipal",
    "TokenManager",
    "UserPrincipal",
    "add_auth_policy",
    "allow_user_cookie",
    "create_require_authentication_middleware",
    "get_credentials",
    "unauthenticated",
]


def __getattr__(name: str) -> t.Any:
    # The access-token plugin needs the database stack: imported on first use.
    if name == "AccessTokens":
        from flask_backstage_auth.access_tokens.extension import AccessTokens

        return AccessTokens
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
