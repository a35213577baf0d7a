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

from flask_backstage_auth.errors import AuthenticationError, BackstageError
from flask_backstage_auth.http_auth.service import check_allowed
from flask_backstage_auth.legacy.middleware import ENVIRON_CREDENTIALS_KEY
from flask_backstage_auth.router.integration import INTEGRATION_PATH, PluginEndpoints
from flask_backstage_auth.router.mounts import Mounts
from flask_backstage_auth.router.paths import is_trustworthy_request_path, routing_path
from flask_backstage_auth.router.policies import (
    POLICY_VERSION,
    AuthPolicy,
    blueprint_policies,
    policy_version,
    view_policy,
)

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.extension import BackstageAuthState
    from flask_backstage_auth.http_auth.service import HttpAuthService

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
    #: Path policies that can apply, each with the mount its path is relative to
    #: (the mount routing uses for the blueprint, or the plugin, it belongs to).
    policies: tuple[tuple[str, AuthPolicy], ...]
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
        self._mounts_of: tuple[Flask, Mounts] | None = None

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
                self._mounts_of = None  # policies changed: warn about them again
                self._routes_version = policy_version()
            self._routes[id(rule)] = (rule, route)
        return route

    def _mounts(self, app: Flask) -> Mounts:
        if self._mounts_of is None or self._mounts_of[0] is not app:
            self._mounts_of = (app, Mounts(app))
            self._warn_unmatchable(app, self._mounts_of[1])
        return self._mounts_of[1]

    def _build_route(self, app: Flask, req: Request) -> Route:
        mounts = self._mounts(app)
        rule = req.url_rule
        names: t.Sequence[str] = ()
        view_allow = None
        inner_mount: str | None = None
        if rule is not None:
            names = req.blueprints
            view_allow = view_policy(app.view_functions.get(req.endpoint or ""))
            if names:
                inner_mount = mounts.of_rule(rule, names[0])
        else:
            found = mounts.plugin_at(routing_path(req.environ))
            if found is not None:
                names, inner_mount = (found[0],), found[1]
        plugin_id = names[-1] if names else None
        policies: list[tuple[str, AuthPolicy]] = []
        for index, name in enumerate(names):
            mount = inner_mount if index == 0 else mounts.of(name)
            if mount is None:
                continue  # an unknown mount opens nothing (warned at the first request)
            policies.extend((mount, p) for p in blueprint_policies(app.blueprints.get(name)))
            if name == plugin_id:
                policies.extend((mount, p) for p in self._state.policies.get(plugin_id, ()))
        if plugin_id is None:
            policies.extend(("", p) for p in self._state.policies.get(None, ()))
        http_auth = self._state.http_auth(plugin_id or "app")
        return Route(plugin_id, view_allow, tuple(policies), http_auth)

    def _warn_unmatchable(self, app: Flask, mounts: Mounts) -> None:
        """Log each policy that can never match, once per app and policy version."""
        for plugin_id, policies in self._state.policies.items():
            if plugin_id is not None and plugin_id not in app.blueprints:
                for policy in policies:
                    logger.warning(
                        "The auth policy %r on %r for plugin %r can never match: no blueprint"
                        " of that name is registered",
                        policy.allow,
                        policy.path,
                        plugin_id,
                    )
        for name, blueprint in app.blueprints.items():
            attached = [*blueprint_policies(blueprint)]
            if "." not in name:
                attached.extend(self._state.policies.get(name, ()))
            if not attached:
                continue
            mount = mounts.of(name)
            for policy in attached:
                if mount is None:
                    reason = "its mount could not be read from routing"
                elif (
                    policy.pattern is not None
                    and not mounts.can_route(name, mount + policy.sample_path())
                    and not mounts.can_route(name, mount + policy.sample_path() + "/x")
                ):
                    reason = f"no route of the blueprint matches it at {mount or '/'}"
                else:
                    continue
                logger.warning(
                    "The auth policy %r on %r of blueprint %r can never match: %s",
                    policy.allow,
                    policy.path,
                    name,
                    reason,
                )

    def policy(self, req: Request, route: Route) -> str | None:
        """The strongest policy for this request: unauthenticated > user-cookie > none."""
        if not is_trustworthy_request_path(req.environ):
            return None
        found = {route.view_allow} if route.view_allow else set()
        if route.policies:
            path = routing_path(req.environ)
            for mount, policy in route.policies:
                if not mount:
                    relative = path
                elif path == mount or path.startswith(mount + "/"):
                    relative = path[len(mount) :] or "/"
                else:
                    continue
                if policy.matches(relative):
                    found.add(policy.allow)
        if _UNAUTHENTICATED in found:
            return _UNAUTHENTICATED
        if _USER_COOKIE in found:
            return _USER_COOKIE
        return None

    def plugin_id(self, req: Request) -> str | None:
        return self.route(req).plugin_id
