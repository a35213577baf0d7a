"""Bridges between the old backend system and the new auth services.

Two directions:

* **New plugin, old environment**: :func:`create_legacy_auth_adapters` is
  Backstage's ``createLegacyAuthAdapters``. A plugin written against the new
  ``auth`` / ``http_auth`` / ``user_info`` services runs in an app that only
  has an ``identity`` and a ``token_manager``::

      adapters = create_legacy_auth_adapters(
          auth=options.get("auth"),            # given by a new environment
          http_auth=options.get("http_auth"),
          identity=options.get("identity"),    # given by an old one
          token_manager=options["token_manager"],
      )
      credentials = adapters.http_auth.credentials(allow=["user", "service"])

* **Old plugin, new environment**: a plugin factory that takes ``identity``
  and ``token_manager`` (and guards itself with
  :func:`~flask_backstage_auth.create_require_authentication_middleware`, or
  calls ``token_manager.authenticate``) runs unchanged in an app using
  :class:`~flask_backstage_auth.extension.BackstageAuth`::

      state = BackstageAuth.state(app)
      app.register_blueprint(
          create_router(
              identity=identity_from_auth(state.auth("old-plugin")),
              token_manager=state.token_manager,
          )
      )

  The token manager for old plugins is simply ``BackstageAuth.state(app).token_manager``:
  it mints and checks the legacy tokens of the keys **without**
  ``accessRestrictions`` (``backend.auth.keys`` and ``legacy`` external
  access); a restricted key's token never passes it. User tokens (and
  anything else the new ``auth`` service accepts as a full, unrestricted
  *user*) reach the old plugin through :func:`identity_from_auth`. Service
  tokens other than legacy ones (``static`` or ``jwks`` external access,
  plugin tokens) are service principals, which an ``IdentityApi`` cannot
  represent: an old plugin refuses them, exactly as it would in an old
  Backstage backend.

Where the compat services deliberately differ from Backstage (they fail closed):

* Backstage's ``AuthCompat`` accepts **any** token when no token manager is
  given. Here the compat services are never built without a ``token_manager``
  (:class:`TypeError`); pass ``ServerTokenManager.noop()`` to accept any
  non-user token on purpose.
* A three-part string that is not a JWT is a 500 in Backstage, a 401 here.
* Backstage falls back to ``DefaultIdentityClient`` when no ``identity`` is
  given; it is not ported, so without an ``identity`` every user token (three
  parts, decoded ``aud == "backstage"``) is refused with ``Invalid user token``.
* An empty or oversized token is refused even by a noop token manager.
* Restricted credentials never become unrestricted ones: the token manager
  verifies unrestricted keys only (Backstage's shim for old plugins accepts
  any service token the plugin's ``auth`` accepts, and its
  ``ServerTokenManager`` every legacy key); :func:`identity_from_auth` refuses
  limited and restricted users; :meth:`AuthCompat.get_plugin_request_token`
  refuses restricted service credentials (Backstage mints them an
  unrestricted legacy token).
"""

from __future__ import annotations

import logging
import threading
import typing as t
import weakref
from dataclasses import dataclass

import jwt
from flask import request as current_request
from werkzeug.sansio.response import Response
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from flask_backstage_auth.auth.service import (
    MAX_TOKEN_LENGTH,
    AuthService,
    LimitedUserToken,
    PluginRequestToken,
)
from flask_backstage_auth.clock import Clock, system_clock
from flask_backstage_auth.credentials import (
    NONE_CREDENTIALS,
    Credentials,
    PrincipalType,
    ServicePrincipal,
    UserPrincipal,
)
from flask_backstage_auth.discovery import HostDiscovery
from flask_backstage_auth.errors import (
    AuthenticationError,
    BackstageError,
    InputError,
    NotAllowedError,
)
from flask_backstage_auth.http_auth.bearer import get_bearer_token
from flask_backstage_auth.http_auth.service import (
    USER_COOKIE_NAME,
    AllowedPrincipal,
    HttpAuthService,
    check_allowed,
)
from flask_backstage_auth.legacy.middleware import LEGACY_SERVICE_SUBJECT, IdentityApi
from flask_backstage_auth.legacy.token_manager import TokenManager
from flask_backstage_auth.user_info.client import UserInfoClient
from flask_backstage_auth.user_info.service import (
    BackstageUserInfo,
    UserInfoService,
    parse_ownership_entity_refs,
    resolve_user_info,
)

__all__ = [
    "AuthCompat",
    "AuthServiceLike",
    "BackstageUserInfo",
    "HttpAuthCompat",
    "HttpAuthServiceLike",
    "IssuedUserCookie",
    "LegacyAuthAdapters",
    "LegacyIdentity",
    "LimitedUserToken",
    "UserInfoCompat",
    "UserInfoService",
    "create_legacy_auth_adapters",
    "identity_from_auth",
]

logger = logging.getLogger(__name__)

#: How long :meth:`HttpAuthCompat.issue_user_cookie` claims a cookie lasts.
COMPAT_COOKIE_LIFETIME = 3600

NO_TOKEN_MANAGER_MESSAGE = (
    "create_legacy_auth_adapters() needs a token_manager to build the compat auth"
    " services (Backstage would accept any token without one). Pass the app's"
    " token manager (BackstageAuth.state(app).token_manager or"
    " ServerTokenManager.from_config(...)), or ServerTokenManager.noop() to accept"
    " any non-user token on purpose."
)


#: Why restricted credentials do not cross into the old system.
RESTRICTED_MESSAGE = (
    "This token's access is restricted, and the old backend system cannot enforce"
    " access restrictions"
)


# --------------------------------------------------------------------------
# service interfaces and results


class AuthServiceLike(t.Protocol):
    """What :class:`~flask_backstage_auth.auth.service.AuthService` and :class:`AuthCompat`
    share."""

    def authenticate(self, token: str, *, allow_limited_access: bool = False) -> Credentials: ...

    def get_none_credentials(self) -> Credentials: ...

    def get_own_service_credentials(self) -> Credentials: ...

    def is_principal(self, credentials: Credentials, type: PrincipalType | str) -> bool: ...

    def get_plugin_request_token(
        self, *, on_behalf_of: Credentials, target_plugin_id: str
    ) -> PluginRequestToken: ...


class HttpAuthServiceLike(t.Protocol):
    """What :class:`~flask_backstage_auth.http_auth.service.HttpAuthService` and
    :class:`HttpAuthCompat` share."""

    @property
    def auth(self) -> AuthServiceLike: ...

    def credentials(
        self,
        request: Request | None = None,
        *,
        allow: t.Collection[AllowedPrincipal] | None = None,
        allow_limited_access: bool = False,
    ) -> Credentials: ...


@dataclass(frozen=True)
class IssuedUserCookie:
    """The result of :meth:`HttpAuthCompat.issue_user_cookie`."""

    #: Epoch seconds.
    expires_at: float


@dataclass(frozen=True)
class LegacyIdentity:
    """A user, as the old ``IdentityApi`` returns it (a ``BackstageIdentity``)."""

    user_entity_ref: str
    ownership_entity_refs: tuple[str, ...] = ()
    token: str = ""


@dataclass(frozen=True)
class LegacyAuthAdapters:
    """The result of :func:`create_legacy_auth_adapters`."""

    auth: AuthServiceLike
    http_auth: HttpAuthServiceLike
    user_info: UserInfoService


# --------------------------------------------------------------------------
# helpers


def _unverified_claims(token: str) -> dict[str, t.Any]:
    """The payload of a JWT, without any verification.

    :raises AuthenticationError: ``Invalid token``, whatever went wrong.
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except Exception:  # every decoding problem is a bad token, never a 500
        raise AuthenticationError("Invalid token") from None
    if not isinstance(claims, dict):  # pragma: no cover - PyJWT guarantees a dict
        raise AuthenticationError("Invalid token")
    return claims


def _numeric_exp(claims: t.Mapping[str, t.Any]) -> float | None:
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    return float(exp)


def _is_restricted(credentials: Credentials) -> bool:
    """Whether any access restriction applies to ``credentials``."""
    principal = credentials.principal
    return (
        credentials.all_access_restrictions is not None
        or getattr(principal, "access_restrictions", None) is not None
    )


def _request_with_bearer(token: str) -> Request:
    builder = EnvironBuilder(headers=[("Authorization", f"Bearer {token}")])
    try:
        return Request(builder.get_environ())
    finally:
        builder.close()


# --------------------------------------------------------------------------
# new services on top of the old ones


class AuthCompat:
    """The ``auth`` service built from an ``identity`` and a ``token_manager``.

    :param identity: verifies user tokens; ``None`` refuses every user token
        (Backstage would use ``DefaultIdentityClient``, not ported here).
    :param token_manager: verifies every other token and mints service tokens.
        Required: Backstage accepts any token without one, we refuse to start.
    :raises TypeError: ``token_manager`` is ``None``.
    """

    def __init__(self, identity: IdentityApi | None, token_manager: TokenManager) -> None:
        if token_manager is None:
            raise TypeError(NO_TOKEN_MANAGER_MESSAGE)
        self.identity = identity
        self.token_manager = token_manager

    def authenticate(self, token: str, *, allow_limited_access: bool = False) -> Credentials:
        """Credentials for ``token`` (``allow_limited_access`` is ignored).

        A JWT whose unverified payload has ``aud == "backstage"`` is a user
        token, checked by ``identity``; anything else is checked by the token
        manager and gives service credentials ``external:backstage-plugin``.

        :raises AuthenticationError: ``Invalid token`` (empty, oversized, or a
            three-part string that is not a JWT), ``Invalid user token``, or
            the token manager's own error.
        """
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise AuthenticationError("Invalid token")
        if len(token.split(".")) == 3:
            claims = _unverified_claims(token)
            if claims.get("aud") == "backstage":
                return self._authenticate_user(token, claims)
        try:
            self.token_manager.authenticate(token)
        except BackstageError:
            raise
        except Exception:  # a foreign error must not open a route, nor leak
            logger.warning("The token manager failed to verify a token", exc_info=True)
            raise AuthenticationError("Invalid token") from None
        return Credentials(ServicePrincipal(LEGACY_SERVICE_SUBJECT), token=token)

    def _authenticate_user(self, token: str, claims: t.Mapping[str, t.Any]) -> Credentials:
        if self.identity is None:
            raise AuthenticationError("Invalid user token")
        try:
            identity = self.identity.get_identity(_request_with_bearer(token))
        except BackstageError:
            raise
        except Exception:
            logger.warning("The identity failed to verify a user token", exc_info=True)
            raise AuthenticationError("Invalid user token") from None
        ref = getattr(identity, "user_entity_ref", None) if identity else None
        if not isinstance(ref, str) or not ref:
            raise AuthenticationError("Invalid user token")
        return Credentials(UserPrincipal(ref), expires_at=_numeric_exp(claims), token=token)

    def get_none_credentials(self) -> Credentials:
        """Credentials of nobody."""
        return NONE_CREDENTIALS

    def get_own_service_credentials(self) -> Credentials:
        """Service credentials ``external:backstage-plugin`` (not ``plugin:<id>``)."""
        return Credentials(ServicePrincipal(LEGACY_SERVICE_SUBJECT))

    def is_principal(self, credentials: Credentials, type: PrincipalType | str) -> bool:
        """A strict type compare: unlike the new service, ``"unknown"`` matches nothing."""
        return credentials.principal.type == type

    def get_plugin_request_token(
        self, *, on_behalf_of: Credentials, target_plugin_id: str
    ) -> PluginRequestToken:
        """A token for a call to ``target_plugin_id`` on behalf of a caller.

        Service credentials get a legacy token from the token manager; user
        credentials forward the **full** user token; ``none`` credentials get
        ``""`` (unlike the new system, which refuses them).

        :raises NotAllowedError: restricted service credentials (a legacy
            token would carry none of their restrictions; Backstage issues one).
        :raises AuthenticationError: user credentials without a token, or any
            other principal type.
        """
        principal_type = on_behalf_of.principal.type
        if principal_type == "service":
            if _is_restricted(on_behalf_of):
                raise NotAllowedError(RESTRICTED_MESSAGE)
            return PluginRequestToken(self.token_manager.get_token().token)
        if principal_type == "user":
            if not on_behalf_of.token:
                raise AuthenticationError("User credentials is unexpectedly missing token")
            return PluginRequestToken(on_behalf_of.token)
        if principal_type == "none":
            return PluginRequestToken("")
        raise AuthenticationError(
            f"Refused to issue service token for credential type '{principal_type}'"
        )

    def get_limited_user_token(self, credentials: Credentials) -> LimitedUserToken:
        """The **full** user token (there are no limited tokens in the old system).

        ``expires_at`` is the credentials' expiry, else the token's ``exp``.

        :raises AuthenticationError: not user credentials (Backstage does not
            check), no token, or no expiry.
        """
        principal_type = credentials.principal.type
        if principal_type != "user":
            raise AuthenticationError(
                f"Refused to issue limited user token for credential type '{principal_type}'"
            )
        token = credentials.token
        if not token:
            raise AuthenticationError("User credentials is unexpectedly missing token")
        expires_at = credentials.expires_at
        if expires_at is None:
            expires_at = _numeric_exp(_unverified_claims(token))
        if not expires_at:
            raise AuthenticationError("User token is missing expiration")
        return LimitedUserToken(token, expires_at)

    def list_public_service_keys(self) -> t.NoReturn:
        """Not available in the old system.

        :raises NotImplementedError: always.
        """
        raise NotImplementedError("Not implemented")


class HttpAuthCompat:
    """The ``http_auth`` service on top of any ``auth`` service: bearer tokens only.

    :param auth: authenticates the bearer token.
    :param clock: the time source of :meth:`issue_user_cookie`.
    """

    def __init__(self, auth: AuthServiceLike, *, clock: Clock = system_clock) -> None:
        self._auth = auth
        self._clock = clock
        self._cache: weakref.WeakKeyDictionary[Request, Credentials] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    @property
    def auth(self) -> AuthServiceLike:
        """The ``auth`` service in use."""
        return self._auth

    def credentials(
        self,
        request: Request | None = None,
        *,
        allow: t.Collection[AllowedPrincipal] | None = None,
        allow_limited_access: bool = False,
    ) -> Credentials:
        """The caller's credentials (default: Flask's current request), checked against ``allow``.

        Only the ``Authorization: Bearer`` header is read: there is no cookie
        support and ``allow_limited_access`` is ignored. No (or a malformed)
        header gives ``none`` credentials. The result is cached per request.

        :raises AuthenticationError: 401 ``Missing credentials`` or an invalid token.
        :raises NotAllowedError: 403 ``This endpoint does not allow '<type>' credentials``.
        """
        req: Request = (
            request if request is not None else current_request._get_current_object()  # type: ignore[attr-defined]
        )
        with self._lock:
            credentials = self._cache.get(req)
        if credentials is None:
            token = get_bearer_token(req.headers.get("Authorization"))
            if token is None:
                credentials = self._auth.get_none_credentials()
            else:
                credentials = self._auth.authenticate(token)
            with self._lock:
                self._cache[req] = credentials
        return check_allowed(credentials, allow)

    def issue_user_cookie(
        self, response: Response, *, credentials: Credentials | None = None
    ) -> IssuedUserCookie:
        """A no-op: sets no cookie, claims one that lasts an hour."""
        return IssuedUserCookie(self._clock() + COMPAT_COOKIE_LIFETIME)

    def remove_user_cookie(self, response: Response) -> None:
        """Clear the ``backstage-auth`` cookie."""
        response.delete_cookie(USER_COOKIE_NAME)


class UserInfoCompat:
    """The ``user_info`` service: reads the user token's own claims.

    The token is decoded **without verification**: credentials are only ever
    made from tokens that were verified when they were made.

    A token without ``ent`` (every token of plugin-auth-backend 0.28 and
    later, by default) gets its ownership from the auth backend's
    ``/v1/userinfo``, found with ``discovery``, as the new ``user_info``
    service does. Backstage's ``UserInfoCompat`` answers ``[]`` there; we
    fail closed instead: without ``discovery`` such a token is a 503.

    :param discovery: finds the auth backend (``create_legacy_auth_adapters``
        passes its own).
    :param client: the userinfo endpoint (default: one over ``discovery``).
    """

    def __init__(
        self, discovery: HostDiscovery | None = None, *, client: UserInfoClient | None = None
    ) -> None:
        if client is None and discovery is not None:
            client = UserInfoClient(discovery)
        self.client = client

    def get_user_info(self, credentials: Credentials) -> BackstageUserInfo:
        """``sub`` as the user entity ref, ``ent`` (else the auth backend's) as ownership refs.

        Backstage throws plain errors (500) here; we pick:

        :raises InputError: 400, the credentials are not user credentials
            (the caller asked for something that cannot exist).
        :raises AuthenticationError: 401, the user token is missing, not a
            JWT, or its ``sub`` / ``ent`` have the wrong types.
        :raises ResponseError: the auth backend refused the token (its 4xx).
        :raises ServiceUnavailableError: 503, no ``ent`` and the auth backend
            gave none (or there is no ``discovery`` to ask it).
        """
        if credentials.principal.type != "user":
            raise InputError("Only user credentials are supported")
        token = credentials.token
        if not token:
            raise AuthenticationError("User credentials is unexpectedly missing token")
        claims = _unverified_claims(token)
        user_entity_ref = claims.get("sub")
        if not isinstance(user_entity_ref, str):
            raise AuthenticationError("User entity ref must be a string")
        if "ent" in claims:
            parse_ownership_entity_refs(claims["ent"])
        return resolve_user_info(user_entity_ref, claims, token, self.client)


def create_legacy_auth_adapters(
    *,
    auth: AuthServiceLike | None = None,
    http_auth: HttpAuthServiceLike | None = None,
    user_info: UserInfoService | None = None,
    identity: IdentityApi | None = None,
    token_manager: TokenManager | None = None,
    discovery: HostDiscovery | None = None,
) -> LegacyAuthAdapters:
    """Backstage's ``createLegacyAuthAdapters``: new auth services in any environment.

    * ``auth`` and ``http_auth`` given (a new environment): both are returned
      untouched; ``identity`` and ``token_manager`` are ignored.
    * Only ``http_auth`` given: ``auth`` is the one it uses (``http_auth.auth``).
    * Only ``auth`` given: it is returned untouched, with an ``http_auth``
      built around it (an :class:`~flask_backstage_auth.http_auth.service.HttpAuthService`
      for an ``AuthService``, else an :class:`HttpAuthCompat`). Backstage
      returns no ``httpAuth`` at all in this case.
    * Neither: :class:`AuthCompat` over ``identity`` and ``token_manager``,
      with an :class:`HttpAuthCompat` around it.

    ``user_info`` defaults to a :class:`UserInfoCompat` that asks the auth
    backend found with ``discovery`` for the ownership of tokens without
    ``ent`` (``discovery`` also fed Backstage's ``DefaultIdentityClient``,
    which is not ported).

    :raises TypeError: the compat services are needed and ``token_manager`` is
        ``None`` (Backstage would accept any token).
    """
    info: UserInfoService = user_info if user_info is not None else UserInfoCompat(discovery)
    if auth is not None and http_auth is None:
        if isinstance(auth, AuthService):
            http_auth = HttpAuthService(auth.plugin_id, auth)
        else:
            http_auth = HttpAuthCompat(auth)
    if http_auth is not None:
        return LegacyAuthAdapters(
            auth=auth if auth is not None else http_auth.auth, http_auth=http_auth, user_info=info
        )
    if token_manager is None:
        raise TypeError(NO_TOKEN_MANAGER_MESSAGE)
    auth_compat = AuthCompat(identity, token_manager)
    return LegacyAuthAdapters(
        auth=auth_compat, http_auth=HttpAuthCompat(auth_compat), user_info=info
    )


# --------------------------------------------------------------------------
# old services on top of the new ones


class _AuthServiceIdentity:
    """An ``IdentityApi`` backed by a new ``auth`` service."""

    def __init__(self, auth: AuthServiceLike, user_info: UserInfoService | None) -> None:
        self.auth = auth
        self.user_info = user_info

    def get_identity(self, request: Request) -> LegacyIdentity | None:
        token = get_bearer_token(request.headers.get("Authorization"))
        if token is None:
            return None
        credentials = self.auth.authenticate(token)
        principal = credentials.principal
        if not isinstance(principal, UserPrincipal):
            raise AuthenticationError("Token is not a user token")
        # A LegacyIdentity is a full, unrestricted user: nothing narrower may become one.
        if credentials.limited:
            raise AuthenticationError("Illegal limited user token")
        if _is_restricted(credentials):
            raise NotAllowedError(RESTRICTED_MESSAGE)
        ownership: tuple[str, ...] = ()
        if self.user_info is not None:
            ownership = self.user_info.get_user_info(credentials).ownership_entity_refs
        return LegacyIdentity(principal.user_entity_ref, ownership, token)


def identity_from_auth(
    auth_service: AuthServiceLike, *, user_info: UserInfoService | None = None
) -> IdentityApi:
    """An old-system ``IdentityApi`` backed by a new ``auth`` service.

    ``get_identity(request)`` returns ``None`` without a bearer token,
    authenticates the bearer with ``auth_service`` (so every kind of user
    token the new services accept works), and returns a
    :class:`LegacyIdentity` for a user. Its ownership refs come from
    ``user_info`` (e.g. ``BackstageAuth.state(app).user_info``: the token's
    ``ent``, else the auth backend's userinfo); without it they are empty, as
    Backstage's ``DefaultIdentityClient`` gives for tokens without ``ent``.

    A :class:`LegacyIdentity` is a full user without restrictions, so only
    such a user becomes one: a limited user token, or a user with access
    restrictions (a scoped personal access token), is refused, even where the
    restrictions name the service's plugin (the old plugin could not keep to
    them). Backstage's identity shim has no user restrictions to refuse.

    :raises AuthenticationError: (from ``get_identity``) the token is invalid,
        is a limited user token (``Illegal limited user token``), or is not a
        user token (``Token is not a user token``).
    :raises NotAllowedError: (from ``get_identity``) the token's access
        restrictions exclude the service's plugin, or it has any
        restrictions at all (:data:`RESTRICTED_MESSAGE`).
    :raises BackstageError: (from ``get_identity``) what ``user_info`` raised:
        an identity is never made with a guessed ownership.
    """
    return _AuthServiceIdentity(auth_service, user_info)
