"""Backstage-compatible backend authentication for Flask."""

from __future__ import annotations

from flask_backstage_auth.auth.external.types import ExternalTokenHandler, ExternalTokenResult
from flask_backstage_auth.auth.service import AuthService, LimitedUserToken, PluginRequestToken
from flask_backstage_auth.auth_backend.extension import (
    AuthBackend,
    IssuedUserToken,
    UserTokenIssuer,
)
from flask_backstage_auth.client import TokenManagerAuth, plugin_session
from flask_backstage_auth.config.reader import (
    CONFIG_KEY,
    ConfigReader,
    load_app_config,
    merge_configs,
)
from flask_backstage_auth.credentials import (
    AccessRestrictions,
    Credentials,
    NonePrincipal,
    ServicePrincipal,
    UserPrincipal,
    is_principal,
)
from flask_backstage_auth.discovery import HostDiscovery
from flask_backstage_auth.errors import (
    AuthenticationError,
    BackstageError,
    ConfigError,
    ConflictError,
    InputError,
    NotAllowedError,
    NotFoundError,
    ServiceUnavailableError,
)
from flask_backstage_auth.extension import BackstageAuth, get_credentials
from flask_backstage_auth.http_auth.bearer import get_bearer_token
from flask_backstage_auth.http_auth.service import HttpAuthService
from flask_backstage_auth.legacy.adapters import (
    LegacyAuthAdapters,
    create_legacy_auth_adapters,
    identity_from_auth,
)
from flask_backstage_auth.legacy.middleware import (
    IdentityApi,
    RequireAuthentication,
    RequireAuthenticationMiddleware,
    create_require_authentication_middleware,
    get_middleware_credentials,
)
from flask_backstage_auth.legacy.secrets import decode_backstage_secret, generate_secret
from flask_backstage_auth.legacy.token_manager import (
    NoopTokenManager,
    ServerToken,
    ServerTokenManager,
    TokenManager,
)
from flask_backstage_auth.permissions import (
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
from flask_backstage_auth.router.policies import add_auth_policy, allow_user_cookie, unauthenticated

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
