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
    from flask_backstage_auth.extension import BackstageAuthState

INTEGRATION_PATH = "/.backstage/auth/v1/"


class PluginEndpoints:
    """Served by the barrier's hook: one part before the credentials check, one after."""

    def __init__(self, state: BackstageAuthState) -> None:
        self._state = state

    def _target(self, request: Request) -> tuple[str, str] | None:
        """``(plugin id, endpoint)`` when the request is for one of ours."""
        raw = request.environ.get("PATH_INFO", "")
        if INTEGRATION_PATH not in raw or not is_trustworthy_request_path(request.environ):
            return None
        path = routing_path(request.environ)
        prefix = self._state.settings.plugin_prefix + "/"
        if not path.startswith(prefix):
            return None
        plugin_id, _, rest = path[len(prefix) :].partition("/")
        if not rest.startswith(INTEGRATION_PATH[1:]):
            return None
        if plugin_id not in self._state.local_plugins():
            return None
        return plugin_id, rest[len(INTEGRATION_PATH) - 1 :]

    def before_barrier(self, request: Request) -> Response | None:
        target = self._target(request)
        if target is None or target[1] != "jwks.json" or request.method not in ("GET", "HEAD"):
            return None
        bound_request_body()
        return jsonify(self._state.auth(target[0]).list_public_service_keys())

    def after_barrier(self, request: Request) -> Response | None:
        target = self._target(request)
        if target is None or target[1] != "cookie":
            return None
        if request.method not in ("GET", "DELETE"):
            return None
        bound_request_body()
        http_auth = self._state.http_auth(target[0])
        if request.method == "GET":
            response = jsonify({})
            issued = http_auth.issue_user_cookie(response)
            response.set_data(jsonify(issued.to_dict()).get_data())
        else:
            response = Response(status=204)
            http_auth.remove_user_cookie(response)
        return no_store(response)
