"""The ``http_auth`` service: credentials of an incoming request, with allow lists."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from datetime import datetime, timezone

from flask import request as current_request
from werkzeug.wrappers import Request, Response

from flask_backstage_auth.audit.refusals import audit_refusal
from flask_backstage_auth.audit.service import AuditorService
from flask_backstage_auth.auth.service import AuthService, VerifiedEntry
from flask_backstage_auth.clock import Clock, system_clock
from flask_backstage_auth.credentials import NONE_CREDENTIALS, Credentials
from flask_backstage_auth.errors import AuthenticationError, BackstageError, NotAllowedError
from flask_backstage_auth.http_auth.bearer import get_bearer_token
from flask_backstage_auth.http_auth.memo import found_keys

#: The cookie that carries a limited user token for ``user-cookie`` routes.
USER_COOKIE_NAME = "backstage-auth"
#: Methods for which the cookie is read, and limited credentials allowed, at all.
COOKIE_METHODS = frozenset({"GET", "HEAD"})

#: A cookie with more time left than this is not reissued (Backstage: 5 min).
COOKIE_REISSUE_THRESHOLD = 300

AllowedPrincipal = t.Literal["user", "service", "none"]


@dataclass(frozen=True)
class IssuedCookie:
    """The result of :meth:`HttpAuthService.issue_user_cookie`."""

    expires_at: float

    def to_dict(self) -> dict[str, str]:
        """``{"expiresAt": "<ISO 8601>"}``, as Backstage answers."""
        return {"expiresAt": _http_date(self.expires_at)}


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

    :param auditor: where refused requests are audited (``auth-refused``).
    """

    def __init__(
        self,
        plugin_id: str,
        auth: AuthService,
        *,
        cookie: CookieSettings | None = None,
        clock: Clock = system_clock,
        recent_size: int = 1000,
        auditor: AuditorService | None = None,
    ) -> None:
        self.plugin_id = plugin_id
        self.auth = auth
        self.auditor = auditor
        self.cookie = cookie or CookieSettings()
        self._clock = clock
        self._memo_keys = found_keys(plugin_id)
        # Credentials of recently seen ``Authorization`` headers, by the
        # request's effective ``allow_limited_access``: a repeated token skips
        # parsing and the verifier. Each holds the verifier's cache entry, which
        # the verifier ends on revocation, eviction or expiry.
        self._recent: tuple[
            dict[str, tuple[VerifiedEntry, Credentials]],
            dict[str, tuple[VerifiedEntry, Credentials]],
        ] = ({}, {})
        self._recent_size = min(recent_size, auth.cache_size)
        self._cache_clock = auth.clock

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
        ``Authorization`` header at all, and only when it holds a user token.
        Limited access is only ever allowed for GET and HEAD: for any other
        method a limited user token is refused, by cookie or as a bearer. No
        credentials give ``none`` credentials, which ``allow`` may refuse.

        What the request carries is found once per request and
        ``allow_limited_access`` value (the :mod:`request's memo
        <flask_backstage_auth.http_auth.memo>`); ``allow`` is checked on every call.

        :raises AuthenticationError: 401 ``Missing credentials`` or an invalid token.
        :raises NotAllowedError: 403 ``This endpoint does not allow '<type>' credentials``.
        """
        req = request if request is not None else current_request
        environ = req.environ
        key = self._memo_keys[allow_limited_access]
        credentials: Credentials | None = environ.get(key)
        try:
            if credentials is None:
                # Inline rather than a helper method: this is the barrier's hot
                # path, where each call costs as much as the work it does.
                # Limited credentials only ever read: however they arrive, never
                # for a method that may change something.
                limited = allow_limited_access and req.method in COOKIE_METHODS
                header = environ.get("HTTP_AUTHORIZATION")
                if header is not None:
                    recent = self._recent[limited]
                    hit = recent.get(header)
                    if hit is not None and self._cache_clock() < hit[0].until:
                        credentials = hit[1]
                    else:
                        credentials = self._from_header(header, recent, limited)
                elif limited:
                    credentials = self._from_cookie(req)
                else:
                    credentials = NONE_CREDENTIALS
                environ[key] = credentials
            if allow is None or credentials.principal.type in allow:
                return credentials
            return check_allowed(credentials, allow)
        except BackstageError as exc:
            audit_refusal(self.auditor, req, exc, credentials=credentials)
            raise

    def _from_header(
        self, header: str, recent: dict[str, tuple[VerifiedEntry, Credentials]], limited: bool
    ) -> Credentials:
        token = get_bearer_token(header)
        if token is None:
            return NONE_CREDENTIALS
        entry, credentials = self.auth.authenticate_entry(token, allow_limited_access=limited)
        # Only the plain form ``Bearer <token>``: the index never holds more
        # than the verifier's cache does (one header per valid token).
        if self._recent_size and len(header) == len(token) + 7:
            if len(recent) >= self._recent_size:
                recent.clear()
            recent[header] = (entry, credentials)
        return credentials

    def _from_cookie(self, request: Request) -> Credentials:
        cookie = request.cookies.get(USER_COOKIE_NAME)
        if not cookie:
            return NONE_CREDENTIALS
        credentials = self._cookie_user(cookie)
        if credentials is None:
            raise AuthenticationError("Refused cookie credentials for non-user principal")
        return credentials

    def _cookie_user(self, cookie: str) -> Credentials | None:
        """The user a cookie holds; ``None`` for any token that is not a user's own.

        :raises AuthenticationError: an invalid token.
        """
        try:
            credentials = self.auth.authenticate(cookie, allow_limited_access=True)
        except NotAllowedError:  # a restricted service token: not a user's
            return None
        principal = credentials.principal
        if principal.type != "user" or getattr(principal, "actor", None) is not None:
            return None
        return credentials

    def issue_user_cookie(
        self, response: Response, *, credentials: Credentials | None = None
    ) -> IssuedCookie:
        """Set the ``backstage-auth`` cookie for a user (Backstage's ``issueUserCookie``).

        ``none`` credentials clear it. Without ``credentials``, the request's
        own user credentials are used (a full token, not the cookie). An
        existing cookie of the **same** user with more than five minutes left
        is kept; one of another user is replaced.

        :raises AuthenticationError: non-user credentials.
        :raises NotAllowedError: the request carries service credentials.
        """
        now = self._clock()
        if credentials is not None and credentials.principal.type == "none":
            self.remove_user_cookie(response)
            return IssuedCookie(now)
        if credentials is not None and credentials.principal.type != "user":
            raise AuthenticationError("Refused to issue cookie for non-user principal")
        if credentials is None:
            credentials = self.credentials(allow=["user"])
        user_ref = getattr(credentials.principal, "user_entity_ref", None)
        existing = current_request.cookies.get(USER_COOKIE_NAME)
        if existing:
            try:
                current = self._cookie_user(existing)
            except AuthenticationError:
                current = None
            if (
                current is not None
                and getattr(current.principal, "user_entity_ref", None) == user_ref
                and current.expires_at is not None
                and current.expires_at - now > COOKIE_REISSUE_THRESHOLD
            ):
                return IssuedCookie(current.expires_at)
        limited = self.auth.get_limited_user_token(credentials)
        response.set_cookie(
            USER_COOKIE_NAME,
            limited.token,
            expires=datetime.fromtimestamp(limited.expires_at, tz=timezone.utc),
            path=self.cookie.path,
            domain=self.cookie.domain,
            secure=self.cookie.secure,
            httponly=True,
            samesite=self.cookie.samesite,
        )
        return IssuedCookie(limited.expires_at)

    def remove_user_cookie(self, response: Response) -> None:
        """Clear the ``backstage-auth`` cookie."""
        response.delete_cookie(
            USER_COOKIE_NAME,
            path=self.cookie.path,
            domain=self.cookie.domain,
            secure=self.cookie.secure,
            httponly=True,
            samesite=self.cookie.samesite,
        )


@dataclass(frozen=True)
class CookieSettings:
    """How the ``backstage-auth`` cookie is written.

    Backstage sets ``Domain`` to the external host and ``SameSite=None`` on
    secure origins; we write a host-only cookie with ``SameSite=Lax`` by
    default (see the security notes).
    """

    secure: bool = False
    samesite: str = "Lax"
    domain: str | None = None
    path: str = "/"


def _http_date(epoch: float) -> str:
    # As JavaScript's toISOString(): milliseconds, "Z".
    moment = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
