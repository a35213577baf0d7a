"""The require-authentication WSGI middleware of the old backend system.

Usage, as in Backstage's ``createRequireAuthenticationMiddleware``::

    require_auth = create_require_authentication_middleware(identity, token_manager)
    app.wsgi_app = require_auth.wrap(app.wsgi_app, prefix="/api/catalog")
    app.wsgi_app = require_auth.unless(
        path=re.compile(r"/api/techdocs/static/docs/.+\\.css")
    ).wrap(app.wsgi_app, prefix="/api/techdocs")

A request is let through with a valid user identity or a valid server token;
anything else gets a 401 JSON error with ``WWW-Authenticate: Bearer``. The
credentials are left in ``environ["flask_backstage_auth.credentials"]``.
"""

from __future__ import annotations

import logging
import typing as t

from werkzeug.wrappers import Request

from flask_backstage_auth.credentials import Credentials, ServicePrincipal, UserPrincipal
from flask_backstage_auth.errors import AuthenticationError, BackstageError
from flask_backstage_auth.http_auth.bearer import get_bearer_token
from flask_backstage_auth.http_auth.memo import ESTABLISHED_KEY, establish, established
from flask_backstage_auth.legacy.token_manager import TokenManager
from flask_backstage_auth.legacy.unless import CustomPredicate, PathSpec, Unless
from flask_backstage_auth.router.paths import is_under_prefix, normalize_path, routing_path

if t.TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger(__name__)

#: The ``environ`` key holding the credentials the middleware established
#: (the request's :mod:`memo <flask_backstage_auth.http_auth.memo>`, which the
#: extension's barrier writes too).
ENVIRON_CREDENTIALS_KEY = ESTABLISHED_KEY

#: The subject given to callers authenticated by a legacy server token.
LEGACY_SERVICE_SUBJECT = "external:backstage-plugin"


class BackstageIdentity(t.Protocol):
    """A verified user, as the old ``IdentityApi`` returns it."""

    @property
    def user_entity_ref(self) -> str: ...


class IdentityApi(t.Protocol):
    """The old system's user identity service."""

    def get_identity(self, request: Request) -> BackstageIdentity | None:
        """The caller's identity, ``None`` without credentials; raise if invalid."""


class RequireAuthentication:
    """The authentication rule: build with :func:`create_require_authentication_middleware`.

    Immutable: :meth:`unless` returns a new rule with more exemptions.
    """

    def __init__(
        self,
        identity: IdentityApi | None,
        token_manager: TokenManager,
        exemptions: tuple[Unless, ...] = (),
    ) -> None:
        self.identity = identity
        self.token_manager = token_manager
        self.exemptions = exemptions

    def unless(
        self,
        custom_or_none: CustomPredicate | None = None,
        *,
        path: PathSpec | t.Sequence[PathSpec] | None = None,
        ext: str | t.Sequence[str] | None = None,
        method: str | t.Sequence[str] | None = None,
        custom: CustomPredicate | None = None,
    ) -> RequireAuthentication:
        """A rule that skips authentication when any condition matches.

        See :mod:`flask_backstage_auth.legacy.unless` for the matching rules.
        """
        exemption = Unless.build(custom_or_none, path=path, ext=ext, method=method, custom=custom)
        return RequireAuthentication(
            self.identity, self.token_manager, (*self.exemptions, exemption)
        )

    def is_exempt(self, environ: WSGIEnvironment) -> bool:
        return any(exemption.matches(environ) for exemption in self.exemptions)

    def authenticate(self, environ: WSGIEnvironment) -> Credentials:
        """Credentials for this request.

        :raises AuthenticationError: ``Authentication is required`` without a
            bearer token, ``Token is not valid; caused by ...`` otherwise.
        """
        token = get_bearer_token(environ.get("HTTP_AUTHORIZATION"))
        if token is None:
            raise AuthenticationError("Authentication is required")
        user_error: AuthenticationError | None = None
        if self.identity is not None:
            try:
                identity = self.identity.get_identity(Request(environ))
            except Exception as exc:  # any failure is a rejection
                user_error = AuthenticationError("Token is not valid", _safe_cause(exc))
            else:
                if identity is not None:
                    return Credentials(UserPrincipal(identity.user_entity_ref), token=token)
                user_error = AuthenticationError("Authentication is required")
        try:
            self.token_manager.authenticate(token)
            return Credentials(ServicePrincipal(LEGACY_SERVICE_SUBJECT), token=token)
        except Exception as exc:
            service_error = AuthenticationError("Token is not valid", _safe_cause(exc))
        # As Backstage: the user's error comes first.
        raise user_error or service_error

    def wrap(self, app: WSGIApplication, prefix: str = "") -> RequireAuthenticationMiddleware:
        """Guard ``app``, or only the paths under ``prefix``."""
        return RequireAuthenticationMiddleware(app, self, prefix=prefix)


class RequireAuthenticationMiddleware:
    """A WSGI middleware enforcing a :class:`RequireAuthentication` rule.

    :param app: the WSGI application to guard.
    :param rule: the rule, with its exemptions.
    :param prefix: only guard paths equal to or below this one (e.g.
        ``/api/catalog``). The prefix test is deliberately wide: it also runs on
        the path with slashes and dot segments collapsed, and ignores case, so
        that no spelling of a guarded path escapes it.
    """

    def __init__(
        self, app: WSGIApplication, rule: RequireAuthentication, *, prefix: str = ""
    ) -> None:
        self.app = app
        self.rule = rule
        self.prefix = prefix.rstrip("/")

    def covers(self, environ: WSGIEnvironment) -> bool:
        if not self.prefix:
            return True
        path = routing_path(environ)
        prefix = self.prefix.lower()
        return is_under_prefix(path.lower(), prefix) or is_under_prefix(
            normalize_path(path).lower(), prefix
        )

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> t.Iterable[bytes]:
        if self.covers(environ) and not self.rule.is_exempt(environ):
            try:
                establish(environ, self.rule.authenticate(environ))
            except AuthenticationError as error:
                logger.info("Rejected request: %s", error.description)
                return error(environ, start_response)
            except Exception:  # fail closed without leaking details
                logger.exception("Authentication failed unexpectedly")
                return AuthenticationError("Token is not valid")(environ, start_response)
        return self.app(environ, start_response)


def _safe_cause(exc: Exception) -> Exception | None:
    """Our own errors explain themselves; anything else is logged, not shown."""
    if isinstance(exc, BackstageError):
        return exc
    logger.warning("Authentication component failed: %s", type(exc).__name__)
    return None


def create_require_authentication_middleware(
    identity: IdentityApi | None, token_manager: TokenManager
) -> RequireAuthentication:
    """Backstage's ``createRequireAuthenticationMiddleware``.

    :param identity: verifies user tokens; ``None`` accepts service tokens only.
    :param token_manager: verifies service-to-service tokens.
    """
    return RequireAuthentication(identity, token_manager)


def get_middleware_credentials(environ: WSGIEnvironment) -> Credentials | None:
    """The credentials the middleware (or the extension's barrier) established
    for this request, if any."""
    return established(environ)
