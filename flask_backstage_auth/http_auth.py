"""The ``http_auth`` service: credentials of an incoming request, with allow lists."""

from __future__ import annotations

import typing as t

from flask import request as current_request
from werkzeug.wrappers import Request

from .auth import AuthService
from .bearer import get_bearer_token
from .credentials import NONE_CREDENTIALS, Credentials
from .errors import AuthenticationError, NotAllowedError

#: The cookie that carries a limited user token for ``user-cookie`` routes.
USER_COOKIE_NAME = "backstage-auth"
#: Prefix of the environ keys memoising a request's credentials per plugin.
_MEMO_PREFIX = "flask_backstage_auth.credentials:"
#: Methods for which the cookie is read at all.
COOKIE_METHODS = frozenset({"GET", "HEAD"})

AllowedPrincipal = t.Literal["user", "service", "none"]


def check_allowed(credentials: Credentials, allow: t.Collection[str] | None) -> Credentials:
    """Apply an ``allow`` list with Backstage's 401/403 semantics."""
    if allow is None:
        return credentials
    kind = credentials.principal.type
    if kind in allow:
        return credentials
    if kind == "none":
        raise AuthenticationError("Missing credentials")
    if kind in ("user", "service"):
        raise NotAllowedError(f"This endpoint does not allow '{kind}' credentials")
    raise NotAllowedError("Unknown principal type, this should never happen")


class HttpAuthService:
    """Backstage's ``HttpAuthService`` for one plugin.

    Get it with :meth:`BackstageAuth.http_auth
    <flask_backstage_auth.BackstageAuth.http_auth>`.
    """

    def __init__(self, plugin_id: str, auth: AuthService) -> None:
        self.plugin_id = plugin_id
        self.auth = auth
        self._memo_keys = {
            False: f"{_MEMO_PREFIX}{plugin_id}",
            True: f"{_MEMO_PREFIX}{plugin_id}:limited",
        }

    def credentials(
        self,
        request: Request | None = None,
        *,
        allow: t.Collection[AllowedPrincipal] | None = None,
        allow_limited_access: bool = False,
    ) -> Credentials:
        """The caller's credentials, checked against ``allow``.

        A bearer token is always read; with ``allow_limited_access`` the
        ``backstage-auth`` cookie is read too, but only when the request has no
        ``Authorization`` header at all, only for GET and HEAD, and only when
        it holds a user token. No credentials give ``none`` credentials,
        which ``allow`` may refuse.

        :raises AuthenticationError: 401 ``Missing credentials`` or an invalid token.
        :raises NotAllowedError: 403 ``This endpoint does not allow '<type>' credentials``.
        """
        req = request if request is not None else current_request
        credentials = self.extract(req, allow_limited_access)
        if allow is None or credentials.principal.type in allow:
            return credentials
        return check_allowed(credentials, allow)

    def extract(self, request: Request, allow_limited_access: bool = False) -> Credentials:
        """The request's credentials without an ``allow`` check, memoised per request."""
        environ = request.environ
        key = self._memo_keys[allow_limited_access]
        credentials: Credentials | None = environ.get(key)
        if credentials is None:
            credentials = environ[key] = self._extract(request, allow_limited_access)
        return credentials

    def _extract(self, request: Request, allow_limited_access: bool) -> Credentials:
        header = request.environ.get("HTTP_AUTHORIZATION")
        if header is not None:
            token = get_bearer_token(header)
            if token is None:
                return NONE_CREDENTIALS
            return self.auth.authenticate(token, allow_limited_access=allow_limited_access)
        if not allow_limited_access or request.method not in COOKIE_METHODS:
            return NONE_CREDENTIALS
        cookie = request.cookies.get(USER_COOKIE_NAME)
        if not cookie:
            return NONE_CREDENTIALS
        credentials = self.auth.authenticate(cookie, allow_limited_access=True)
        if credentials.principal.type != "user":
            raise AuthenticationError("Refused cookie credentials for non-user principal")
        return credentials
