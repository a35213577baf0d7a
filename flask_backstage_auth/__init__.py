"""Backstage-compatible backend authentication for Flask."""

from __future__ import annotations

from .bearer import get_bearer_token
from .client import TokenManagerAuth, plugin_session
from .config import CONFIG_KEY, ConfigReader, load_app_config, merge_configs
from .credentials import (
    AccessRestrictions,
    Credentials,
    NonePrincipal,
    ServicePrincipal,
    UserPrincipal,
    is_principal,
)
from .discovery import HostDiscovery
from .errors import (
    AuthenticationError,
    BackstageError,
    ConfigError,
    ConflictError,
    InputError,
    NotAllowedError,
    NotFoundError,
    ServiceUnavailableError,
)
from .legacy import NoopTokenManager, ServerToken, ServerTokenManager, TokenManager
from .middleware import (
    IdentityApi,
    RequireAuthentication,
    RequireAuthenticationMiddleware,
    create_require_authentication_middleware,
    get_middleware_credentials,
)
from .secrets import decode_backstage_secret, generate_secret

__all__ = [
    "CONFIG_KEY",
    "AccessRestrictions",
    "AuthenticationError",
    "BackstageError",
    "ConfigError",
    "ConfigReader",
    "ConflictError",
    "Credentials",
    "HostDiscovery",
    "IdentityApi",
    "InputError",
    "NonePrincipal",
    "NoopTokenManager",
    "NotAllowedError",
    "NotFoundError",
    "RequireAuthentication",
    "RequireAuthenticationMiddleware",
    "ServerToken",
    "ServerTokenManager",
    "ServiceUnavailableError",
    "ServicePrincipal",
    "TokenManager",
    "TokenManagerAuth",
    "UserPrincipal",
    "create_require_authentication_middleware",
    "decode_backstage_secret",
    "generate_secret",
    "get_bearer_token",
    "get_middleware_credentials",
    "is_principal",
    "load_app_config",
    "merge_configs",
    "plugin_session",
]
