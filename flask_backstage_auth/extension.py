"""``BackstageAuth``: Backstage's new backend auth for a Flask app.

::

    auth = BackstageAuth(app)        # or BackstageAuth() + auth.init_app(app)

Every blueprint is a plugin (its name is the plugin id, mounted under
``/api/<plugin id>``). Before any view runs, the credentials barrier demands
valid user or service credentials unless an auth policy says otherwise.
"""

from __future__ import annotations

import logging
import typing as t
import weakref
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Blueprint, Flask, current_app, has_request_context, request
from flask_sqlalchemy import SQLAlchemy

from flask_backstage_auth.auth.external.handler import ExternalAccess, builtin_handlers
from flask_backstage_auth.auth.external.types import ExternalTokenHandler
from flask_backstage_auth.auth.jwks import FetchBudget, JwksCache, JwksFetcher
from flask_backstage_auth.auth.key_sets import KeySet, LocalKeySet
from flask_backstage_auth.auth.mock import verify_mock_token
from flask_backstage_auth.auth.plugin.handler import PluginTokenHandler
from flask_backstage_auth.auth.plugin.key_source import key_source_from_config
from flask_backstage_auth.auth.plugin.keys import InMemoryPublicKeyStore, PublicKeyStore
from flask_backstage_auth.auth.service import (
    AuthService,
    HandlerStage,
    TokenHandler,
    TokenVerifier,
    plugin_token_handler,
    user_token_handler,
)
from flask_backstage_auth.auth.user.handler import UserTokenHandler
from flask_backstage_auth.clock import Clock, system_clock
from flask_backstage_auth.config.reader import CONFIG_KEY, ConfigReader
from flask_backstage_auth.config.settings import Settings
from flask_backstage_auth.credentials import Credentials
from flask_backstage_auth.db.storage import Database, SqlPublicKeyStore
from flask_backstage_auth.discovery import HostDiscovery
from flask_backstage_auth.http_auth.service import CookieSettings, HttpAuthService
from flask_backstage_auth.legacy.middleware import get_middleware_credentials
from flask_backstage_auth.legacy.token_manager import ServerTokenManager, TokenManager
from flask_backstage_auth.permissions import PermissionPolicy, PermissionsService
from flask_backstage_auth.router.barrier import CredentialsBarrier
from flask_backstage_auth.router.policies import AuthPolicy, bump_policy_version

logger = logging.getLogger(__name__)

#: The ``app.extensions`` key.
EXTENSION_KEY = "backstage_auth"
_DEFAULT_BASE_URL = "http://localhost:7007"


class BackstageAuthState:
    """Everything the extension built for one app (``app.extensions["backstage_auth"]``)."""

    def __init__(
        self,
        app: Flask,
        *,
        token_manager: TokenManager | None,
        permission_policy: PermissionPolicy | None,
        external_token_handlers: t.Sequence[ExternalTokenHandler[t.Any]],
        clock: Clock,
        db: SQLAlchemy | None = None,
    ) -> None:
        self.settings = settings = Settings.from_app(app)
        self.database = _database_for(app, db)
        self.config = config = ConfigReader(app.config.get(CONFIG_KEY) or {}, "")
        self.clock = clock
        self.default_policy_disabled = config.get_bool(
            "backend.auth.dangerouslyDisableDefaultAuthPolicy"
        )
        if token_manager is None:
            token_manager = ServerTokenManager.from_config(
                config,
                logger=logger,
                development=settings.development,
                clock=clock,
                leeway=settings.leeway,
                max_lifetime_leeway=settings.max_lifetime_leeway,
                allow_disabled=True,
            )
        self.token_manager = token_manager
        # Config keys are read by ExternalAccess, each with its restrictions;
        # this adds the token manager's own (a generated development key).
        legacy_keys: t.Sequence[bytes] = ()
        if isinstance(token_manager, ServerTokenManager):
            legacy_keys = token_manager.verification_keys
        # One HTTP session, deadline and size cap for every key-set fetch.
        self.jwks_fetcher = fetcher = JwksFetcher(
            timeout=settings.jwks_timeout,
            wait=settings.jwks_wait,
            max_bytes=settings.jwks_max_bytes,
        )
        handlers = [
            *builtin_handlers(
                clock=clock,
                leeway=settings.leeway,
                max_lifetime_leeway=settings.max_lifetime_leeway,
                jwks_timeout=settings.jwks_timeout,
                jwks_cooldown=settings.jwks_cooldown,
                jwks_fetcher=fetcher,
            ),
            *external_token_handlers,
        ]
        self.external_access = ExternalAccess.from_config(
            config,
            handlers=handlers,
            legacy_keys=legacy_keys,
            clock=clock,
            leeway=settings.leeway,
            max_lifetime_leeway=settings.max_lifetime_leeway,
        )
        document = config.as_dict()
        backend = document.setdefault("backend", {})
        if isinstance(backend, dict):
            backend.setdefault("baseUrl", _DEFAULT_BASE_URL)
        self.discovery = HostDiscovery.from_config(document, plugin_prefix=settings.plugin_prefix)
        app_ref = weakref.ref(app)

        def local_plugins() -> t.Collection[str]:
            # Plugins served here: the blueprints, and any plugin that asked for
            # its auth service (it signs with this app's keys).
            current = app_ref()
            blueprints = current.blueprints.keys() if current is not None else ()
            return {*blueprints, *self._auth}

        self.local_plugins = local_plugins
        external = urlsplit(self.discovery.get_external_base_url("app"))
        self.cookie = CookieSettings(
            secure=external.scheme == "https" or external.hostname == "localhost",
            samesite=settings.cookie_samesite,
        )

        self.key_source = key_source_from_config(
            config, public_key_store=self._public_key_store, clock=clock
        )
        self.user_tokens = UserTokenHandler(
            JwksCache(
                self.discovery.get_base_url("auth") + "/.well-known/jwks.json",
                fetcher=fetcher,
                cooldown=settings.jwks_cooldown,
                clock=clock,
            ),
            clock=clock,
            leeway=settings.leeway,
        )
        self.plugin_tokens = PluginTokenHandler(
            self.key_source,
            # cooldown 0: a key another instance just stored must verify at once;
            # an unknown kid costs one store query, never more per token.
            LocalKeySet(self.key_source.list_public_keys, cooldown=0, clock=clock),
            discovery=self.discovery,
            local_plugins=local_plugins,
            user_tokens=self.user_tokens,
            clock=clock,
            leeway=settings.leeway,
            max_lifetime_leeway=settings.max_lifetime_leeway,
            jwks_cooldown=settings.jwks_cooldown,
            jwks_fetcher=fetcher,
            fetch_budget=FetchBudget(settings.jwks_fetch_budget, clock=clock),
        )
        # Backstage's order: plugin tokens, user tokens, then external access.
        first_party: list[TokenHandler] = []
        if settings.accept_mock_tokens:
            first_party.append(verify_mock_token)
        first_party.append(plugin_token_handler(self.plugin_tokens))
        first_party.append(user_token_handler(self.user_tokens))
        self.verifier = TokenVerifier(
            first_party,
            self.external_access,
            clock=clock,
            cache_size=settings.cache_size,
            cache_ttl=settings.cache_ttl,
        )
        self.permissions = PermissionsService.from_config(
            config, policy=permission_policy, token_manager=token_manager
        )
        self.policies: dict[str | None, tuple[AuthPolicy, ...]] = {}
        self._auth: dict[str, AuthService] = {}
        self._http_auth: dict[str, HttpAuthService] = {}
        self.barrier = CredentialsBarrier(self)
        if self.default_policy_disabled:
            logger.warning(
                "backend.auth.dangerouslyDisableDefaultAuthPolicy is set: requests without"
                " credentials reach every plugin"
            )

    def _public_key_store(self) -> PublicKeyStore:
        if self.database is not None:
            return SqlPublicKeyStore(self.database)
        logger.warning(
            "Plugin keys are kept in this process only: other instances cannot verify its"
            " plugin tokens. Give BackstageAuth a database (db=..., or"
            " BACKSTAGE_AUTH_DATABASE_URI) to share them."
        )
        return InMemoryPublicKeyStore()

    # -- services -------------------------------------------------------

    def auth(self, plugin_id: str) -> AuthService:
        service = self._auth.get(plugin_id)
        if service is None:
            service = AuthService(
                plugin_id,
                self.verifier,
                self.token_manager,
                plugin_tokens=self.plugin_tokens,
                default_policy_disabled=self.default_policy_disabled,
            )
            self._auth[plugin_id] = service
        return service

    def http_auth(self, plugin_id: str) -> HttpAuthService:
        service = self._http_auth.get(plugin_id)
        if service is None:
            service = HttpAuthService(
                plugin_id, self.auth(plugin_id), cookie=self.cookie, clock=self.clock
            )
            self._http_auth[plugin_id] = service
        return service

    def add_policy(self, plugin_id: str | None, policy: AuthPolicy) -> None:
        self.policies[plugin_id] = (*self.policies.get(plugin_id, ()), policy)
        bump_policy_version()


def _database_for(app: Flask, db: SQLAlchemy | None) -> Database | None:
    """The app's database: ``db``, the app's Flask-SQLAlchemy, or a configured URI."""
    if db is None:
        db = app.extensions.get("sqlalchemy")
    if db is not None:
        return Database(db, app=app)
    uri = app.config.get("BACKSTAGE_AUTH_DATABASE_URI")
    if uri:
        return Database(sa.create_engine(uri))
    return None


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
        self._db = db
        self._token_manager = token_manager
        self._permission_policy = permission_policy
        self._external_token_handlers = tuple(external_token_handlers)
        self._clock = clock
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the configuration, build the services, install the barrier.

        :raises ConfigError: invalid configuration, with the offending path.
        :raises RuntimeError: the extension is already registered on ``app``.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("BackstageAuth is already registered on this app")
        state = BackstageAuthState(
            app,
            token_manager=self._token_manager,
            permission_policy=self._permission_policy,
            external_token_handlers=self._external_token_handlers,
            clock=self._clock,
            db=self._db,
        )
        app.extensions[EXTENSION_KEY] = state
        # First, so that no other before_request hook runs for a refused request.
        app.before_request_funcs.setdefault(None, []).insert(0, state.barrier.check)

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
        handler: TokenHandler, *, stage: HandlerStage = "late", app: Flask | None = None
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
        :raises ValueError: an unknown stage.
        """
        BackstageAuth.state(app).verifier.register_handler(handler, stage=stage)

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
        :param path: relative to the plugin's mount (``/api/<plugin id>``).
        :param allow: ``"unauthenticated"`` or ``"user-cookie"``.
        :raises ValueError: an invalid ``allow`` or path.
        """
        from flask_backstage_auth.router.policies import add_auth_policy as attach

        if isinstance(plugin, Blueprint):
            return attach(plugin, path=path, allow=allow)
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
    return BackstageAuth.state().barrier.plugin_id(req) or "app"


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
    established = get_middleware_credentials(request.environ)
    if established is not None:
        return established
    if EXTENSION_KEY in current_app.extensions:
        return BackstageAuth.state().http_auth(_current_plugin_id()).credentials()
    raise RuntimeError("No credentials: neither BackstageAuth nor the middleware ran")
