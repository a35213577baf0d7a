"""The endpoints Backstage gives every plugin under ``/.backstage/auth/v1/``.

They are at ``<prefix>/<plugin>/``, the prefix being
``BACKSTAGE_AUTH_PLUGIN_PREFIX`` (``/api`` below, its default).

* ``GET /api/<plugin>/.backstage/auth/v1/jwks.json``: the public keys of the
  plugin's tokens; open to all (served before the credentials barrier).
* ``GET /api/<plugin>/.backstage/auth/v1/cookie``: issue the ``backstage-auth``
  user cookie, ``200 {"expiresAt": ...}``; ``DELETE``: clear it, ``204``
  (served after the barrier, so they need credentials like any route). Their
  answers are never cached (``no-store``: the ``Set-Cookie`` carries a token).

None of them reads a body: one declaring more than 64 KiB is a 413.

A plugin with a permission integration (``BackstageAuth.permissions_registry``)
also serves, after the barrier, what the permission backend calls
(``createPermissionIntegrationRouter``, see
:mod:`flask_backstage_auth.permissions.integration`):

* ``GET /api/<plugin>/.well-known/backstage/permissions/metadata``;
* ``POST /api/<plugin>/.well-known/backstage/permissions/apply-conditions``:
  JSON of at most 100 KiB (Express's ``json()`` limit), from user or service
  credentials; a user without an actor (a direct user request) gets 403, as
  Backstage's ``permissionsRegistry``. Stricter than Backstage, only the
  permission backend may call it: a service must be ``plugin:permission``,
  a user's actor too.

They exist for every plugin this app serves, including blueprints registered
after ``init_app``, without touching the app's URL map.
"""

from __future__ import annotations

import json
import logging
import typing as t

from flask import Request, Response, jsonify

from flask_backstage_auth.credentials import ServicePrincipal, UserPrincipal
from flask_backstage_auth.errors import BackstageError, InputError, NotAllowedError
from flask_backstage_auth.router.paths import is_trustworthy_request_path, routing_path
from flask_backstage_auth.router.safety import bound_request_body, no_store, read_request_body

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.auth.service import AuthService
    from flask_backstage_auth.http_auth.service import HttpAuthService
    from flask_backstage_auth.permissions.integration import PermissionIntegration

logger = logging.getLogger(__name__)

INTEGRATION_PATH = "/.backstage/auth/v1/"
#: Where a plugin's permission integration is served (Backstage's path).
PERMISSIONS_PATH = "/.well-known/backstage/permissions/"
#: The largest ``apply-conditions`` body read: Express's ``json()`` default, 100 KiB.
APPLY_CONDITIONS_MAX_BODY = 100 * 1024
#: The only caller of ``apply-conditions``: the permission backend.
PERMISSION_BACKEND_SUBJECT = "plugin:permission"


def is_integration_path(path_info: str) -> bool:
    """Whether a raw path may be one of the per-plugin endpoints (a cheap test)."""
    return INTEGRATION_PATH in path_info or PERMISSIONS_PATH in path_info


class PluginServices(t.Protocol):
    """What the endpoints need of the app: its plugins and their services."""

    def local_plugins(self) -> t.Collection[str]:
        """The plugin ids this app serves."""

    def auth(self, plugin_id: str) -> AuthService: ...

    def http_auth(self, plugin_id: str) -> HttpAuthService: ...

    def permission_integration(self, plugin_id: str) -> PermissionIntegration | None:
        """The plugin's permission integration, if it has one."""


class PluginEndpoints:
    """Served by the barrier's hook: one part before the credentials check, one after.

    :param plugin_prefix: where plugins are mounted (``/api``).
    :param services: the app's plugins and their services.
    """

    def __init__(self, plugin_prefix: str, services: PluginServices) -> None:
        self._prefix = plugin_prefix + "/"
        self._services = services

    def _target(self, request: Request, base: str = INTEGRATION_PATH) -> tuple[str, str] | None:
        """``(plugin id, endpoint)`` when the request is for one of ours under ``base``."""
        raw = request.environ.get("PATH_INFO", "")
        if base not in raw or not is_trustworthy_request_path(request.environ):
            return None
        path = routing_path(request.environ)
        prefix = self._prefix
        if not path.startswith(prefix):
            return None
        plugin_id, _, rest = path[len(prefix) :].partition("/")
        if not rest.startswith(base[1:]):
            return None
        if plugin_id not in self._services.local_plugins():
            return None
        return plugin_id, rest[len(base) - 1 :]

    def before_barrier(self, request: Request) -> Response | None:
        target = self._target(request)
        if target is None or target[1] != "jwks.json" or request.method not in ("GET", "HEAD"):
            return None
        bound_request_body()
        return jsonify(self._services.auth(target[0]).list_public_service_keys())

    def after_barrier(self, request: Request) -> Response | None:
        permissions = self._target(request, PERMISSIONS_PATH)
        if permissions is not None:
            return self._permissions(request, *permissions)
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

    def _permissions(self, request: Request, plugin_id: str, endpoint: str) -> Response | None:
        integration = self._services.permission_integration(plugin_id)
        if integration is None:
            return None
        if endpoint == "metadata" and request.method in ("GET", "HEAD"):
            bound_request_body()
            return jsonify(integration.metadata())
        if endpoint != "apply-conditions" or request.method != "POST":
            return None
        bound_request_body(APPLY_CONDITIONS_MAX_BODY)
        credentials = self._services.http_auth(plugin_id).credentials(
            request, allow=("user", "service")
        )
        principal = credentials.principal
        caller = principal.actor if isinstance(principal, UserPrincipal) else principal
        if not isinstance(caller, ServicePrincipal):
            raise NotAllowedError("Direct user requests may not apply permission conditions")
        if caller.subject != PERMISSION_BACKEND_SUBJECT:
            raise NotAllowedError("Only the permission backend may apply permission conditions")
        body = read_request_body(APPLY_CONDITIONS_MAX_BODY)
        if request.mimetype != "application/json":
            raise InputError("Invalid request: expected a JSON body (application/json)")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise InputError("Invalid request: the body is not JSON") from None
        try:
            return jsonify(integration.apply_conditions(document))
        except BackstageError:
            raise
        except Exception:  # a plugin's loader or rule failed: no decision, no traceback
            logger.exception("Applying permission conditions for %r failed", plugin_id)
            raise BackstageError("Failed to apply permission conditions") from None
