"""What can apply to a request: its plugin, and the auth policies that may open it.

Per routed URL rule, the plugin, the view's decorator and the plugin's path
policies are worked out once and cached (until a policy is added anywhere);
per request only the path is matched, and only when a policy exists.
"""

from __future__ import annotations

import logging
import typing as t
from dataclasses import dataclass

from flask import Flask, Request, current_app

from flask_backstage_auth.router.mounts import Mounts
from flask_backstage_auth.router.paths import is_trustworthy_request_path, routing_path
from flask_backstage_auth.router.policies import (
    POLICY_VERSION,
    AuthPolicy,
    blueprint_policies,
    bump_policy_version,
    view_policy,
)

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.http_auth.service import HttpAuthService

logger = logging.getLogger(__name__)

UNAUTHENTICATED = "unauthenticated"
USER_COOKIE = "user-cookie"


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
    #: Where the plugin is mounted (``/api/catalog``), if known: error bodies
    #: report the URL relative to it, as Backstage's plugin router does.
    mount: str | None = None

    def policy(self, req: Request) -> str | None:
        """The strongest policy for this request: unauthenticated > user-cookie > none."""
        if not is_trustworthy_request_path(req.environ):
            return None
        found = {self.view_allow} if self.view_allow else set()
        if self.policies:
            path = routing_path(req.environ)
            for mount, policy in self.policies:
                if not mount:
                    relative = path
                elif path == mount or path.startswith(mount + "/"):
                    relative = path[len(mount) :] or "/"
                else:
                    continue
                if policy.matches(relative):
                    found.add(policy.allow)
        if UNAUTHENTICATED in found:
            return UNAUTHENTICATED
        if USER_COOKIE in found:
            return USER_COOKIE
        return None


class RouteTable:
    """The :class:`Route` of each request, cached per URL rule, and the app's own policies.

    :param http_auth: the ``http_auth`` service of a plugin id.
    """

    def __init__(self, http_auth: t.Callable[[str], HttpAuthService]) -> None:
        self._http_auth = http_auth
        #: Policies added with ``BackstageAuth.add_auth_policy``, by plugin id
        #: (``None``: the app's own routes).
        self.policies: dict[str | None, tuple[AuthPolicy, ...]] = {}
        # Rules are unhashable: keyed by id, with the rule kept to check identity.
        self._routes: dict[int, tuple[object, Route]] = {}
        self._version = -1
        self._mounts_of: tuple[Flask, Mounts] | None = None

    def add_policy(self, plugin_id: str | None, policy: AuthPolicy) -> None:
        self.policies[plugin_id] = (*self.policies.get(plugin_id, ()), policy)
        bump_policy_version()

    def route(self, req: Request) -> Route:
        """The :class:`Route` of a request (one cache lookup for a routed request)."""
        rule = req.url_rule
        if rule is not None:
            cached = self._routes.get(id(rule))
            if cached is not None and cached[0] is rule and self._version == POLICY_VERSION[0]:
                return cached[1]
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if self._version != POLICY_VERSION[0]:
            self._routes.clear()
            self._mounts_of = None  # policies changed: warn about them again
            self._version = POLICY_VERSION[0]
        route = self._build(app, req)
        if rule is not None:
            self._routes[id(rule)] = (rule, route)
        return route

    def _mounts(self, app: Flask) -> Mounts:
        if self._mounts_of is None or self._mounts_of[0] is not app:
            self._mounts_of = (app, Mounts(app))
            self._warn_unmatchable(app, self._mounts_of[1])
        return self._mounts_of[1]

    def _build(self, app: Flask, req: Request) -> Route:
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
                policies.extend((mount, p) for p in self.policies.get(plugin_id, ()))
        if plugin_id is None:
            policies.extend(("", p) for p in self.policies.get(None, ()))
        mount = None
        if names:
            mount = inner_mount if len(names) == 1 else mounts.of(names[-1])
        return Route(
            plugin_id, view_allow, tuple(policies), self._http_auth(plugin_id or "app"), mount
        )

    def _warn_unmatchable(self, app: Flask, mounts: Mounts) -> None:
        """Log each policy that can never match, once per app and policy version."""
        for plugin_id, policies in self.policies.items():
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
                attached.extend(self.policies.get(name, ()))
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
