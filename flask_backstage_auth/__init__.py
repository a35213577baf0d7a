"""Backstage-compatible backend authentication for Flask."""

from __future__ import annotations

from .auth import AuthService, LimitedUserToken, PluginRequestToken
from .auth_backend import AuthBackend, IssuedUserToken, UserTokenIssuer
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
from .extension import BackstageAuth, get_credentials
from .http_auth import HttpAuthService
from .legacy import NoopTokenManager, ServerToken, ServerTokenManager, TokenManager
from .legacy_adapters import (
    LegacyAuthAdapters,
    create_legacy_auth_adapters,
    identity_from_auth,
)
from .middleware import (
    IdentityApi,
    RequireAuthentication,
    RequireAuthenticationMiddleware,
    create_require_authentication_middleware,
    get_middleware_credentials,
)
from .permissions import (
    AllowAllPolicy,
    AuthorizeResult,
    DenyAllPolicy,
    Permission,
    PermissionPolicy,
    PermissionsService,
    PolicyDecision,
    PolicyQuery,
    create_permission,
)
from .policies import add_auth_policy, allow_user_cookie, unauthenticated
from .secrets import decode_backstage_secret, generate_secret
from .tokens.external import ExternalTokenHandler, ExternalTokenResult

__all__ = [
    "AllowAllPolicy",
    "AuthBackend",
    "AuthService",
    "IssuedUserToken",
    "LimitedUserToken",
    "UserTokenIssuer",
    "AuthorizeResult",
    "BackstageAuth",
    "DenyAllPolicy",
    "ExternalTokenHandler",
    "ExternalTokenResult",
    "HttpAuthService",
    "Permission",
    "PermissionPolicy",
    "PermissionsService",
    "PluginRequestToken",
    "PolicyDecision",
    "PolicyQuery",
    "LegacyAuthAdapters",
    "add_auth_policy",
    "create_legacy_auth_adapters",
    "identity_from_auth",
    "allow_user_cookie",
    "create_permission",
    "get_credentials",
    "unauthenticated",
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
