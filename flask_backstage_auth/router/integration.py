"""The endpoints Backstage gives every plugin under ``/.backstage/auth/v1/``.

* ``GET /api/<plugin>/.backstage/auth/v1/jwks.json``: the public keys of the
  plugin's tokens; open to all (served before the credentials barrier).
* ``GET /api/<plugin>/.backstage/auth/v1/cookie``: issue the ``backstage-auth``
  user cookie, ``200 {"expiresAt": ...}``; ``DELETE``: clear it, ``204``
  (served after the barrier, so they need credentials like any route). Their
  answers are never cached (``no-store``: the ``Set-Cookie`` carries a token).

None of them reads a body: one declaring more than 64 KiB is a 413.

They exist for every plugin this app serves, including blueprints registered
after ``init_app``, without touching the app's URL map.
"""

from __future__ import annotations

import typing as t

from flask import Request, Response, jsonify

from flask_backstage_auth.router.paths import is_trustworthy_request_path, routing_path
from flask_backstage_auth.router.safety import bound_request_body, no_store

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.auth.service import AuthService
    from flask_backstage_auth.http_auth.service import HttpAuthService

INTEGRATION_PATH = "/.backstage/auth/v1/"


class PluginServices(t.Protocol):
    """What the endpoints need of the app: its plugins and their services."""

    def local_plugins(self) -> t.Collection[str]:
        """The plugin ids this app serves."""

    def auth(self, plugin_id: str) -> AuthService: ...

    def http_auth(self, plugin_id: str) -> HttpAuthService: ...


class PluginEndpoints:
    """Served by the barrier's hook: one part before the credentials check, one after.

    :param plugin_prefix: where plugins are mounted (``/api``).
    :param services: the app's plugins and their services.
    """

    def __init__(self, plugin_prefix: str, services: PluginServices) -> None:
        self._prefix = plugin_prefix + "/"
        self._services = services

    def _target(self, request: Request) -> tuple[str, str] | None:
        """``(plugin id, endpoint)`` when the request is for one of ours."""
        raw = request.environ.get("PATH_INFO", "")
        if INTEGRATION_PATH not in raw or not is_trustworthy_request_path(request.environ):
            return None
        path = routing_path(request.environ)
        prefix = self._prefix
        if not path.startswith(prefix):
            return None
        plugin_id, _, rest = path[len(prefix) :].partition("/")
        if not rest.startswith(INTEGRATION_PATH[1:]):
            return None
        if plugin_id not in self._services.local_plugins():
            return None
        return plugin_id, rest[len(INTEGRATION_PATH) - 1 :]

    def before_barrier(self, request: Request) -> Response | None:
        target = self._target(request)
        if target is None or target[1] != "jwks.json" or request.method not in ("GET", "HEAD"):
            return None
        bound_request_body()
        return jsonify(self._services.auth(target[0]).list_public_service_keys())

    def after_barrier(self, request: Request) -> Response | None:
        target = self._target(request)
        if target is None or target[1] != "cookie":
            return None
        if request.method not in ("GET", "DELETE"):
            return None
        bound_request_body()
        http_auth = self._services.http_auth(target[0])
        if request.method == "GET":
            response = jsonify({})
            issued = http_auth.issue_user_cookie(response)
            response.set_data(jsonify(issued.to_dict()).get_data())
        else:
            response = Response(status=204)
            http_auth.remove_user_cookie(response)
        return no_store(response)
