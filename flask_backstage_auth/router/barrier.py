"""The credentials barrier: the ``before_request`` hook of the extension.

Before any view runs, a request must carry valid user or service credentials
unless an auth policy applies (Backstage's ``createCredentialsBarrier``): the
request's route, then its strongest policy, then the plugin's
``http_auth.credentials(allow=("user", "service"))``.
"""

from __future__ import annotations

import logging
import typing as t

from flask import Request, request
from flask.typing import ResponseReturnValue

from flask_backstage_auth.errors import PLUGIN_MOUNT_KEY, AuthenticationError, BackstageError
from flask_backstage_auth.http_auth.memo import ESTABLISHED_KEY
from flask_backstage_auth.router.integration import PluginEndpoints, is_integration_path
from flask_backstage_auth.router.routes import UNAUTHENTICATED, USER_COOKIE, RouteTable

logger = logging.getLogger(__name__)

_USER_OR_SERVICE: tuple[t.Literal["user", "service"], ...] = ("user", "service")


class CredentialsBarrier:
    """Lets a request through, or raises a 401/403 :class:`BackstageError`.

    :param routes: the routes and policies of the app.
    :param endpoints: the per-plugin ``/.backstage/auth/v1/`` endpoints.
    :param enforce: ``False`` when the default auth policy is disabled.
    """

    def __init__(self, routes: RouteTable, endpoints: PluginEndpoints, *, enforce: bool) -> None:
        self.routes = routes
        self._endpoints = endpoints
        self._enforce = enforce
        #: The ``before_request`` hook: a plain function, which Flask inspects
        #: more cheaply than a bound method, over closure variables.
        self.check: t.Callable[[], ResponseReturnValue | None] = self._make_check()

    def _make_check(self) -> t.Callable[[], ResponseReturnValue | None]:
        routes = self.routes
        endpoints = self._endpoints
        enforce = self._enforce

        def credentials_barrier() -> ResponseReturnValue | None:
            """Serves the per-plugin endpoints too: the JWKS before the
            credentials check; the cookie and the permission integration after it."""
            req: Request = request._get_current_object()  # type: ignore[attr-defined]
            environ = req.environ
            path = environ.get("PATH_INFO", "")
            # Both kinds of per-plugin endpoint start with "/.": one scan for most requests.
            integration = "/." in path and is_integration_path(path)
            if integration:
                served = endpoints.before_barrier(req)
                if served is not None:
                    return served
            # Flask answers an automatic OPTIONS with the Allow header: no view runs.
            if enforce and not (
                req.method == "OPTIONS"
                and getattr(req.url_rule, "provide_automatic_options", False)
            ):
                route = None
                try:
                    route = routes.route(req)
                    policy = route.policy(req) if route.view_allow or route.policies else None
                    if policy != UNAUTHENTICATED:
                        # Written here rather than through memo.establish(): this
                        # is the hot path, and the call costs as much as the write.
                        environ[ESTABLISHED_KEY] = route.http_auth.credentials(
                            req, allow=_USER_OR_SERVICE, allow_limited_access=policy == USER_COOKIE
                        )
                except BackstageError:
                    if route is not None and route.mount:
                        # The error body's request.url is relative to the mount.
                        environ[PLUGIN_MOUNT_KEY] = route.mount
                    raise
                except Exception:  # fail closed: no view runs after an unexpected error
                    logger.exception("The credentials barrier failed unexpectedly")
                    raise AuthenticationError("Authentication failed") from None
            return endpoints.after_barrier(req) if integration else None

        return credentials_barrier

    def mount_of(self, req: Request) -> str | None:
        """Where the plugin of ``req`` is mounted (``/api/catalog``), if known:
        error bodies report ``request.url`` relative to it. Only asked when an
        error body is made, never on the request's way."""
        try:
            return self.routes.route(req).mount
        except Exception:  # an error body never fails for want of a mount
            return None
