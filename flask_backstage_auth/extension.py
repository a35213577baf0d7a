"""``BackstageAuth``: Backstage's new backend auth for a Flask app.

::

    auth = BackstageAuth(app)        # or BackstageAuth() + auth.init_app(app)

Every blueprint is a plugin (its name is the plugin id; it is mounted where the
app registers it, by convention ``/api/<plugin id>``, the
``BACKSTAGE_AUTH_PLUGIN_PREFIX``). Before any view runs, the credentials barrier demands
valid user or service credentials unless an auth policy says otherwise.
"""

from __future__ import annotations

import typing as t

from flask import Blueprint, Flask, current_app, has_request_context, request

from flask_backstage_auth._wiring import BackstageAuthState as BackstageAuthState
from flask_backstage_auth._wiring import Options, build_state
from flask_backstage_auth.auth.external.types import ExternalTokenHandler
from flask_backstage_auth.auth.key_sets import KeySet
from flask_backstage_auth.auth.service import AuthService, HandlerStage, TokenHandler
from flask_backstage_auth.clock import Clock, system_clock
from flask_backstage_auth.credentials import Credentials
from flask_backstage_auth.discovery import HostDiscovery
from flask_backstage_auth.http_auth.memo import established
from flask_backstage_auth.http_auth.service import HttpAuthService
from flask_backstage_auth.legacy.token_manager import TokenManager
from flask_backstage_auth.permissions import PermissionPolicy, PermissionsService
from flask_backstage_auth.permissions.integration import PermissionIntegration
from flask_backstage_auth.router.json_errors import install_json_errors
from flask_backstage_auth.router.policies import AuthPolicy
from flask_backstage_auth.router.policies import add_auth_policy as attach_auth_policy
from flask_backstage_auth.user_info import UserInfoService

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_sqlalchemy import SQLAlchemy

#: The ``app.extensions`` key.
EXTENSION_KEY = "backstage_auth"


class BackstageAuth:
    """The Flask extension.

    :param app: the app, or ``None`` to call :meth:`init_app` later.
    :param token_manager: the legacy token manager; by default one is built
        from ``backend.auth.keys``.
    :param permission_policy: the policy used when ``permission.enabled`` is true.
    :param external_token_handlers: custom ``externalAccess`` handler types.
    :param clock: the time source (epoch seconds), for tests.
    :param db: the app's Flask-SQLAlchemy ``db`` (default: the one registered
        on the app, else ``BACKSTAGE_AUTH_DATABASE_URI``); plugin keys are
        published there so that every instance can verify every other's tokens.
        Create our tables with ``flask backstage-auth db upgrade``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        token_manager: TokenManager | None = None,
        permission_policy: PermissionPolicy | None = None,
        external_token_handlers: t.Sequence[ExternalTokenHandler[t.Any]] = (),
        clock: Clock = system_clock,
        db: SQLAlchemy | None = None,
    ) -> None:
        self._options = Options(
            token_manager=token_manager,
            permission_policy=permission_policy,
            external_token_handlers=tuple(external_token_handlers),
            clock=clock,
            db=db,
        )
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the configuration, build the services, install the barrier.

        :raises ConfigError: invalid configuration, with the offending path.
        :raises RuntimeError: the extension is already registered on ``app``.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("BackstageAuth is already registered on this app")
        state = build_state(app, self._options)
        app.extensions[EXTENSION_KEY] = state
        # First, so that no other before_request hook runs for a refused request.
        app.before_request_funcs.setdefault(None, []).insert(0, state.barrier.check)
        if state.settings.json_errors:
            install_json_errors(app)

    @staticmethod
    def state(app: Flask | None = None) -> BackstageAuthState:
        """The extension state of ``app`` (default: the current app)."""
        target = app if app is not None else current_app
        try:
            return t.cast(BackstageAuthState, target.extensions[EXTENSION_KEY])
        except KeyError:
            raise RuntimeError("BackstageAuth is not registered on this app") from None

    @staticmethod
    def register_token_handler(
        handler: TokenHandler,
        *,
        stage: HandlerStage = "late",
        app: Flask | None = None,
        name: str | None = None,
    ) -> None:
        """Have the app's ``auth`` services try ``handler`` for bearer tokens.

        ``handler`` takes the token split once (a
        :class:`~flask_backstage_auth.auth.jose.PeekedToken`) and returns a
        :class:`~flask_backstage_auth.auth.service.VerifiedToken` for a token
        of its own, ``None`` for others. ``stage="first-party"``: after plugin
        and user tokens, before ``externalAccess``; ``"late"``: after the
        legacy keys (where :class:`~flask_backstage_auth.access_tokens.AccessTokens`
        registers). In registration order within a stage.

        :param app: default: the current app.
        :param name: how ``flask backstage-auth verify-token`` names it.
        :raises ValueError: an unknown stage.
        """
        BackstageAuth.state(app).verifier.register_handler(handler, stage=stage, name=name)

    @staticmethod
    def use_user_token_keys(key_set: KeySet, *, app: Flask | None = None) -> None:
        """Verify user tokens (and the ``obo`` user of plugin tokens) with
        ``key_set`` instead of the ``auth`` plugin's published keys (what
        :class:`~flask_backstage_auth.auth_backend.extension.AuthBackend` does)."""
        BackstageAuth.state(app).user_tokens.use_key_set(key_set)

    def auth(self, plugin_id: str | None = None) -> AuthService:
        """The ``auth`` service of a plugin (default: the current request's)."""
        return self.state().auth(plugin_id or _current_plugin_id())

    def http_auth(self, plugin_id: str | None = None) -> HttpAuthService:
        """The ``http_auth`` service of a plugin (default: the current request's)."""
        return self.state().http_auth(plugin_id or _current_plugin_id())

    @property
    def permissions(self) -> PermissionsService:
        """The permissions service of the current app."""
        return self.state().permissions

    def permissions_registry(
        self, plugin_id: str | None = None, *, app: Flask | None = None
    ) -> PermissionIntegration:
        """The permission integration of a plugin (default: the current request's),
        Backstage's ``permissionsRegistry``: its permissions, resource types and
        rules, served at ``/api/<plugin>/.well-known/backstage/permissions/``."""
        return self.state(app).permission_integrations.get(plugin_id or _current_plugin_id())

    @property
    def user_info(self) -> UserInfoService:
        """The ``user_info`` service of the current app: who a user is and what they own."""
        return self.state().user_info

    @property
    def token_manager(self) -> TokenManager:
        """The legacy token manager of the current app."""
        return self.state().token_manager

    @property
    def discovery(self) -> HostDiscovery:
        return self.state().discovery

    def add_auth_policy(
        self,
        plugin: str | Blueprint | None,
        *,
        path: str = "/",
        allow: str,
        app: Flask | None = None,
    ) -> AuthPolicy:
        """Open ``path`` of ``plugin`` as ``allow`` says (Backstage's ``addAuthPolicy``).

        :param plugin: a plugin id, a blueprint (the policy then travels with
            it to every app), or ``None`` for the app's own routes.
        :param path: relative to the plugin's mount (e.g. ``/api/<plugin id>``).
        :param allow: ``"unauthenticated"`` or ``"user-cookie"``.
        :raises ValueError: an invalid ``allow`` or path.
        """
        if isinstance(plugin, Blueprint):
            return attach_auth_policy(plugin, path=path, allow=allow)
        policy = AuthPolicy.create(path, allow)
        self.state(app).add_policy(plugin, policy)
        return policy


def _current_plugin_id() -> str:
    if not has_request_context():
        raise RuntimeError("Give a plugin id outside of a request")
    names = request.blueprints
    if names:
        return names[-1]
    req = request._get_current_object()  # type: ignore[attr-defined]
    return BackstageAuth.state().barrier.routes.route(req).plugin_id or "app"


def get_credentials() -> Credentials:
    """The credentials of the current request.

    Those the barrier established, or, on a route it let through
    (``unauthenticated``), whatever the request carries (possibly ``none``).
    Without the extension, those of the require-authentication middleware.

    :raises RuntimeError: outside a request, or with neither the extension
        nor the middleware in place.
    """
    if not has_request_context():
        raise RuntimeError("get_credentials() needs a request context")
    credentials = established(request.environ)
    if credentials is not None:
        return credentials
    if EXTENSION_KEY in current_app.extensions:
        return BackstageAuth.state().http_auth(_current_plugin_id()).credentials()
    raise RuntimeError("No credentials: neither BackstageAuth nor the middleware ran")
