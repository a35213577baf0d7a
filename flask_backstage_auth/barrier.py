"""The credentials barrier: the ``before_request`` hook of the extension.

Before any view runs, a request must carry valid user or service credentials
unless an auth policy applies. Per routed URL rule, what can apply (the plugin,
the view's decorator, the plugin's policies) is worked out once and cached;
per request only the path is matched, and only when a policy exists.
"""

from __future__ import annotations

import logging
import typing as t
from dataclasses import dataclass

from flask import Flask, Request, current_app, request
from flask.typing import ResponseReturnValue

from .errors import AuthenticationError, BackstageError
from .http_auth import check_allowed
from .middleware import ENVIRON_CREDENTIALS_KEY
from .paths import is_trustworthy_request_path, routing_path
from .plugin_endpoints import INTEGRATION_PATH, PluginEndpoints
from .policies import (
    POLICY_VERSION,
    AuthPolicy,
    blueprint_policies,
    policy_version,
    view_policy,
)

if t.TYPE_CHECKING:  # pragma: no cover
    from .extension import BackstageAuthState
    from .http_auth import HttpAuthService

logger = logging.getLogger(__name__)

_USER_OR_SERVICE: tuple[t.Literal["user", "service"], ...] = ("user", "service")
_UNAUTHENTICATED = "unauthenticated"
_USER_COOKIE = "user-cookie"


@dataclass(frozen=True)
class Route:
    """What the barrier needs to know about one URL rule (or one unmatched URL)."""

    plugin_id: str | None
    #: The policy a view decorator sets, if any.
    view_allow: str | None
    #: Path policies of the plugin (state and blueprints), paths relative to its mount.
    policies: tuple[AuthPolicy, ...]
    #: Where the plugin is mounted, e.g. ``/api/catalog``.
    mount: str
    #: The plugin's ``http_auth`` service.
    http_auth: HttpAuthService


class CredentialsBarrier:
    """Lets a request through, or raises a 401/403 :class:`BackstageError`."""

    def __init__(self, state: BackstageAuthState) -> None:
        self._state = state
        # Rules are unhashable: keyed by id, with the rule kept to check identity.
        self._routes: dict[int, tuple[object, Route]] = {}
        self._routes_version = -1
        self._endpoints = PluginEndpoints(state)

    def check(self) -> ResponseReturnValue | None:
        """The ``before_request`` hook (a bound method: Flask inspects it cheaply).

        Also serves the per-plugin ``/.backstage/auth/v1/`` endpoints: the
        JWKS before the credentials check, the cookie after it.
        """
        req: Request = request._get_current_object()  # type: ignore[attr-defined]
        integration = INTEGRATION_PATH in req.environ.get("PATH_INFO", "")
        if integration:
            served = self._endpoints.before_barrier(req)
            if served is not None:
                return served
        if not self._state.default_policy_disabled:
            self._authenticate(req)
        return self._endpoints.after_barrier(req) if integration else None

    def _authenticate(self, req: Request) -> None:
        rule = req.url_rule
        if (
            req.method == "OPTIONS"
            and rule is not None
            and getattr(rule, "provide_automatic_options", False)
        ):
            return  # Flask answers with the Allow header; no view runs
        try:
            cached = self._routes.get(id(rule)) if rule is not None else None
            if (
                cached is not None
                and cached[0] is rule
                and self._routes_version == POLICY_VERSION[0]
            ):
                route = cached[1]
            else:
                route = self.route(req)
            policy = self.policy(req, route) if route.view_allow or route.policies else None
            if policy == _UNAUTHENTICATED:
                return
            credentials = route.http_auth.extract(req, policy == _USER_COOKIE)
            if credentials.principal.type not in _USER_OR_SERVICE:
                check_allowed(credentials, _USER_OR_SERVICE)
        except BackstageError:
            raise
        except Exception:  # fail closed: no view runs after an unexpected error
            logger.exception("The credentials barrier failed unexpectedly")
            raise AuthenticationError("Authentication failed") from None
        req.environ[ENVIRON_CREDENTIALS_KEY] = credentials

    def route(self, req: Request) -> Route:
        """The :class:`Route` of a request (cached per URL rule)."""
        rule = req.url_rule
        if rule is not None:
            cached = self._routes.get(id(rule))
            if (
                cached is not None
                and cached[0] is rule
                and self._routes_version == policy_version()
            ):
                return cached[1]
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        route = self._build_route(app, req)
        if rule is not None:
            if self._routes_version != policy_version():
                self._routes.clear()
                self._routes_version = policy_version()
            self._routes[id(rule)] = (rule, route)
        return route

    def _build_route(self, app: Flask, req: Request) -> Route:
        prefix = self._state.settings.plugin_prefix
        names: t.Sequence[str] = ()
        view_allow = None
        if req.url_rule is not None:
            names = req.blueprints
            view_allow = view_policy(app.view_functions.get(req.endpoint or ""))
        else:
            path = routing_path(req.environ)
            if path.startswith(prefix + "/"):
                candidate = path[len(prefix) + 1 :].split("/", 1)[0]
                if candidate in app.blueprints:
                    names = (candidate,)
        plugin_id = names[-1] if names else None
        policies = list(self._state.policies.get(plugin_id, ()))
        for name in names:
            policies.extend(blueprint_policies(app.blueprints.get(name)))
        mount = ""
        if plugin_id is not None:
            blueprint = app.blueprints.get(plugin_id)
            mount = f"{prefix}/{plugin_id}"
            custom = (blueprint.url_prefix or "").rstrip("/") if blueprint else ""
            if custom and custom != mount:
                mount = custom
        http_auth = self._state.http_auth(plugin_id or "app")
        return Route(plugin_id, view_allow, tuple(policies), mount, http_auth)

    def policy(self, req: Request, route: Route) -> str | None:
        """The strongest policy for this request: unauthenticated > user-cookie > none."""
        if not is_trustworthy_request_path(req.environ):
            return None
        found = {route.view_allow} if route.view_allow else set()
        if route.policies:
            path = routing_path(req.environ)
            mount = route.mount
            if mount and (path == mount or path.startswith(mount + "/")):
                relative = path[len(mount) :] or "/"
                found.update(p.allow for p in route.policies if p.matches(relative))
            elif not mount:
                found.update(p.allow for p in route.policies if p.matches(path))
        if _UNAUTHENTICATED in found:
            return _UNAUTHENTICATED
        if _USER_COOKIE in found:
            return _USER_COOKIE
        return None

    def plugin_id(self, req: Request) -> str | None:
        return self.route(req).plugin_id
