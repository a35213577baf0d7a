"""The composition root of :class:`~flask_backstage_auth.extension.BackstageAuth`.

:func:`build_state` makes the services of one app in the order they depend on
each other, each by one named factory (as Backstage's ``authServiceFactory``,
``httpAuthServiceFactory``...), and keeps them in a :class:`BackstageAuthState`.
The per-plugin ``auth`` and ``http_auth`` services are made on first use by
:class:`PluginServices`. Nothing here runs per request, and the database stack
is imported only when the app has a database.
"""

from __future__ import annotations

import logging
import typing as t
import weakref
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Flask, has_request_context, request

from flask_backstage_auth.audit.service import RootAuditor
from flask_backstage_auth.auth.external.handler import ExternalAccess, builtin_handlers
from flask_backstage_auth.auth.external.types import ExternalTokenHandler
from flask_backstage_auth.auth.jwks import FetchBudget, JwksCache, JwksFetcher, forced_reloads
from flask_backstage_auth.auth.key_sets import LocalKeySet
from flask_backstage_auth.auth.mock import verify_mock_token
from flask_backstage_auth.auth.plugin.handler import PluginTokenHandler
from flask_backstage_auth.auth.plugin.key_source import key_source_from_config
from flask_backstage_auth.auth.plugin.keys import InMemoryPublicKeyStore, KeySource, PublicKeyStore
from flask_backstage_auth.auth.service import (
    AuthService,
    TokenHandler,
    TokenVerifier,
    plugin_token_handler,
    user_token_handler,
)
from flask_backstage_auth.auth.user.handler import UserTokenHandler
from flask_backstage_auth.clock import Clock
from flask_backstage_auth.config.reader import CONFIG_KEY, ConfigReader
from flask_backstage_auth.config.settings import Settings
from flask_backstage_auth.config.unknown_keys import warn_unknown_auth_keys
from flask_backstage_auth.credentials import Credentials
from flask_backstage_auth.discovery import HostDiscovery
from flask_backstage_auth.http_auth.service import CookieSettings, HttpAuthService
from flask_backstage_auth.legacy.token_manager import ServerTokenManager, TokenManager
from flask_backstage_auth.permissions.integration import (
    PermissionIntegration,
    PermissionIntegrations,
)
from flask_backstage_auth.permissions.local import PermissionPolicy
from flask_backstage_auth.permissions.remote import PERMISSION_PLUGIN_ID, PermissionClient
from flask_backstage_auth.permissions.service import PermissionsService
from flask_backstage_auth.router.barrier import CredentialsBarrier
from flask_backstage_auth.router.integration import PluginEndpoints
from flask_backstage_auth.router.policies import AuthPolicy
from flask_backstage_auth.router.routes import RouteTable
from flask_backstage_auth.user_info import (
    CachedUserInfoService,
    DefaultUserInfoService,
    UserInfoClient,
    UserInfoService,
)

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_sqlalchemy import SQLAlchemy

    from flask_backstage_auth.db.storage import Database

# What happens at start-up is the extension's to say.
logger = logging.getLogger("flask_backstage_auth.extension")

_DEFAULT_BASE_URL = "http://localhost:7007"


@dataclass(frozen=True)
class Options:
    """What the code gave :class:`~flask_backstage_auth.extension.BackstageAuth`."""

    token_manager: TokenManager | None
    permission_policy: PermissionPolicy | None
    external_token_handlers: tuple[ExternalTokenHandler[t.Any], ...]
    clock: Clock
    db: SQLAlchemy | None


class LocalPlugins:
    """The plugin ids this app serves: its blueprints, and every plugin that
    asked for its ``auth`` service (it signs with this app's keys)."""

    def __init__(self, app: Flask) -> None:
        self._app = weakref.ref(app)
        self._signing: set[str] = set()

    def add(self, plugin_id: str) -> None:
        self._signing.add(plugin_id)

    def __call__(self) -> t.Collection[str]:
        app = self._app()
        blueprints = app.blueprints.keys() if app is not None else ()
        return {*blueprints, *self._signing}


class PluginServices:
    """The ``auth`` and ``http_auth`` services of each plugin, made on first use."""

    def __init__(
        self,
        verifier: TokenVerifier,
        token_manager: TokenManager,
        plugin_tokens: PluginTokenHandler,
        local_plugins: LocalPlugins,
        *,
        cookie: CookieSettings,
        clock: Clock,
        default_policy_disabled: bool,
        permission_integrations: PermissionIntegrations,
        auditor: RootAuditor,
    ) -> None:
        self._auditor = auditor
        self._verifier = verifier
        self._permission_integrations = permission_integrations
        self._token_manager = token_manager
        self._plugin_tokens = plugin_tokens
        self._local_plugins = local_plugins
        self._cookie = cookie
        self._clock = clock
        self._default_policy_disabled = default_policy_disabled
        self._auth: dict[str, AuthService] = {}
        self._http_auth: dict[str, HttpAuthService] = {}

    def local_plugins(self) -> t.Collection[str]:
        return self._local_plugins()

    def auth(self, plugin_id: str) -> AuthService:
        service = self._auth.get(plugin_id)
        if service is None:
            service = self._auth[plugin_id] = AuthService(
                plugin_id,
                self._verifier,
                self._token_manager,
                plugin_tokens=self._plugin_tokens,
                default_policy_disabled=self._default_policy_disabled,
            )
            self._local_plugins.add(plugin_id)
        return service

    def permission_integration(self, plugin_id: str) -> PermissionIntegration | None:
        return self._permission_integrations.find(plugin_id)

    def http_auth(self, plugin_id: str) -> HttpAuthService:
        service = self._http_auth.get(plugin_id)
        if service is None:
            service = self._http_auth[plugin_id] = HttpAuthService(
                plugin_id,
                self.auth(plugin_id),
                cookie=self._cookie,
                clock=self._clock,
                auditor=self._auditor.for_plugin(plugin_id),
            )
        return service


@dataclass(eq=False, repr=False)
class BackstageAuthState:
    """Everything :class:`~flask_backstage_auth.extension.BackstageAuth` built
    for one app (``app.extensions["backstage_auth"]``), made by :func:`build_state`."""

    settings: Settings
    config: ConfigReader
    clock: Clock
    #: The ``auditor`` services: ``auditor.for_plugin(plugin_id)``.
    auditor: RootAuditor
    #: The app's database, or ``None``.
    database: Database | None
    default_policy_disabled: bool
    token_manager: TokenManager
    #: Fetches every remote key set of the app.
    jwks_fetcher: JwksFetcher
    external_access: ExternalAccess
    discovery: HostDiscovery
    cookie: CookieSettings
    #: The signing keys of this app's plugin tokens.
    key_source: KeySource
    user_tokens: UserTokenHandler
    plugin_tokens: PluginTokenHandler
    verifier: TokenVerifier
    permissions: PermissionsService
    #: The permission integration of each plugin (``BackstageAuth.permissions_registry``).
    permission_integrations: PermissionIntegrations
    #: Who a user is and what they own (``ent``, else the auth backend's userinfo).
    user_info: UserInfoService
    plugins: PluginServices
    barrier: CredentialsBarrier

    @property
    def policies(self) -> t.Mapping[str | None, tuple[AuthPolicy, ...]]:
        """The policies added with ``add_auth_policy``, by plugin id (``None``: the app's)."""
        return self.barrier.routes.policies

    def local_plugins(self) -> t.Collection[str]:
        """The plugin ids this app serves."""
        return self.plugins.local_plugins()

    def auth(self, plugin_id: str) -> AuthService:
        return self.plugins.auth(plugin_id)

    def http_auth(self, plugin_id: str) -> HttpAuthService:
        return self.plugins.http_auth(plugin_id)

    def add_policy(self, plugin_id: str | None, policy: AuthPolicy) -> None:
        self.barrier.routes.add_policy(plugin_id, policy)


def build_state(app: Flask, options: Options) -> BackstageAuthState:
    """Make every service of ``app``.

    :raises ConfigError: invalid configuration, with the offending path.
    """
    settings = Settings.from_app(app)
    clock = options.clock
    database = database_service(app, options.db, settings)
    config = ConfigReader(app.config.get(CONFIG_KEY) or {}, "")
    auditor = RootAuditor.from_config(config, clock=clock)
    warn_unknown_auth_keys(config)
    default_policy_disabled = config.get_bool("backend.auth.dangerouslyDisableDefaultAuthPolicy")
    token_manager = options.token_manager
    if token_manager is None:
        token_manager = token_manager_service(config, settings, clock, testing=app.testing)
    jwks_fetcher = jwks_fetcher_service(settings)
    external_access = external_access_service(
        config, settings, clock, jwks_fetcher, token_manager, options.external_token_handlers
    )
    discovery = discovery_service(config, settings)
    cookie = cookie_service(discovery, settings)
    key_source = key_source_service(config, database, clock, auditor, settings)
    user_tokens = user_token_service(discovery, jwks_fetcher, settings, clock)
    local_plugins = LocalPlugins(app)
    plugin_tokens = plugin_token_service(
        key_source, discovery, local_plugins, user_tokens, jwks_fetcher, settings, clock
    )
    verifier = token_verifier_service(plugin_tokens, user_tokens, external_access, settings, clock)
    permission_integrations = PermissionIntegrations()
    user_info = user_info_service(discovery, settings, clock)
    plugins = PluginServices(
        verifier,
        token_manager,
        plugin_tokens,
        local_plugins,
        cookie=cookie,
        clock=clock,
        default_policy_disabled=default_policy_disabled,
        auditor=auditor,
        permission_integrations=permission_integrations,
    )
    permissions = permissions_service(
        config, options, token_manager, discovery, plugins, permission_integrations
    )
    permissions.auditor = auditor.for_plugin("permission")
    barrier = CredentialsBarrier(
        RouteTable(plugins.http_auth),
        PluginEndpoints(settings.plugin_prefix, plugins),
        enforce=not default_policy_disabled,
    )
    if default_policy_disabled:
        logger.warning(
            "backend.auth.dangerouslyDisableDefaultAuthPolicy is set: requests without"
            " credentials reach every plugin"
        )
        auditor.for_plugin("app").create_event(
            "default-policy-disabled",
            severity="critical",
            meta={"config": "backend.auth.dangerouslyDisableDefaultAuthPolicy"},
        ).success()
    return BackstageAuthState(
        settings=settings,
        config=config,
        clock=clock,
        auditor=auditor,
        database=database,
        default_policy_disabled=default_policy_disabled,
        token_manager=token_manager,
        jwks_fetcher=jwks_fetcher,
        external_access=external_access,
        discovery=discovery,
        cookie=cookie,
        key_source=key_source,
        user_tokens=user_tokens,
        plugin_tokens=plugin_tokens,
        verifier=verifier,
        permissions=permissions,
        permission_integrations=permission_integrations,
        user_info=user_info,
        plugins=plugins,
        barrier=barrier,
    )


def permissions_service(
    config: ConfigReader,
    options: Options,
    token_manager: TokenManager,
    discovery: HostDiscovery,
    plugins: PluginServices,
    integrations: PermissionIntegrations,
) -> PermissionsService:
    """``permission.enabled``: the local policy if given, else the permission backend,
    asked with a plugin token of the calling plugin on behalf of the caller."""

    def token(credentials: Credentials) -> str | None:
        if credentials.principal.type == "none":
            return None
        plugin_id = "app"
        if has_request_context() and request.blueprints:
            plugin_id = request.blueprints[-1]
        return (
            plugins.auth(plugin_id)
            .get_plugin_request_token(
                on_behalf_of=credentials, target_plugin_id=PERMISSION_PLUGIN_ID
            )
            .token
        )

    def client(batched: bool) -> PermissionClient:
        return PermissionClient(
            base_url=lambda: discovery.get_base_url(PERMISSION_PLUGIN_ID),
            token=token,
            batched=batched,
        )

    return PermissionsService.from_config(
        config,
        policy=options.permission_policy,
        token_manager=token_manager,
        client=client,
        integrations=integrations.find,
    )


def database_service(app: Flask, db: SQLAlchemy | None, settings: Settings) -> Database | None:
    """The app's database: ``db``, the app's Flask-SQLAlchemy, or a configured URI.

    Its transactions in the library's stores are bounded by the
    ``BACKSTAGE_AUTH_DB_*_TIMEOUT`` settings; an engine made here from the URI
    also gets them as engine options (a Flask-SQLAlchemy engine is the app's:
    see :func:`flask_backstage_auth.db.guard.engine_options`). The database
    stack (SQLAlchemy) is imported for an app with a database only.
    """
    timeouts = settings.database_timeouts
    if db is None:
        db = app.extensions.get("sqlalchemy")
    if db is not None:
        from flask_backstage_auth.db.storage import Database

        return Database(db, app=app, timeouts=timeouts)
    uri = app.config.get("BACKSTAGE_AUTH_DATABASE_URI")
    if not uri:
        return None
    import sqlalchemy as sa

    from flask_backstage_auth.db.guard import engine_options
    from flask_backstage_auth.db.storage import Database

    return Database(sa.create_engine(uri, **engine_options(uri, timeouts)), timeouts=timeouts)


def token_manager_service(
    config: ConfigReader, settings: Settings, clock: Clock, *, testing: bool = False
) -> TokenManager:
    """The legacy token manager of ``backend.auth.keys`` (a generated key in
    development, noted at INFO in a ``TESTING`` app: nothing needs doing there)."""
    return ServerTokenManager.from_config(
        config,
        logger=logger,
        development=settings.development,
        clock=clock,
        leeway=settings.leeway,
        max_lifetime_leeway=settings.max_lifetime_leeway,
        allow_disabled=True,
        generated_key_level=logging.INFO if testing else logging.WARNING,
    )


def jwks_fetcher_service(settings: Settings) -> JwksFetcher:
    """One HTTP session, deadline and size cap for every key-set fetch."""
    return JwksFetcher(
        timeout=settings.jwks_timeout, wait=settings.jwks_wait, max_bytes=settings.jwks_max_bytes
    )


def external_access_service(
    config: ConfigReader,
    settings: Settings,
    clock: Clock,
    jwks_fetcher: JwksFetcher,
    token_manager: TokenManager,
    custom_handlers: t.Sequence[ExternalTokenHandler[t.Any]],
) -> ExternalAccess:
    """``backend.auth.externalAccess``, then the token manager's own keys."""
    handlers = [
        *builtin_handlers(
            clock=clock,
            leeway=settings.leeway,
            max_lifetime_leeway=settings.max_lifetime_leeway,
            jwks_timeout=settings.jwks_timeout,
            jwks_cooldown=settings.jwks_cooldown,
            jwks_fetcher=jwks_fetcher,
        ),
        *custom_handlers,
    ]
    # Config keys are read by ExternalAccess, each with its restrictions; this
    # adds the token manager's own (a generated development key).
    legacy_keys: t.Sequence[bytes] = ()
    if isinstance(token_manager, ServerTokenManager):
        legacy_keys = token_manager.verification_keys
    return ExternalAccess.from_config(
        config,
        handlers=handlers,
        legacy_keys=legacy_keys,
        clock=clock,
        leeway=settings.leeway,
        max_lifetime_leeway=settings.max_lifetime_leeway,
    )


def discovery_service(config: ConfigReader, settings: Settings) -> HostDiscovery:
    """Plugin URLs; ``backend.baseUrl`` defaults to ``http://localhost:7007``."""
    document = config.as_dict()
    backend = document.setdefault("backend", {})
    if isinstance(backend, dict):
        backend.setdefault("baseUrl", _DEFAULT_BASE_URL)
    return HostDiscovery.from_config(document, plugin_prefix=settings.plugin_prefix)


def cookie_service(discovery: HostDiscovery, settings: Settings) -> CookieSettings:
    """How the ``backstage-auth`` cookie is written: secure on https and localhost."""
    external = urlsplit(discovery.get_external_base_url("app"))
    return CookieSettings(
        secure=external.scheme == "https" or external.hostname == "localhost",
        samesite=settings.cookie_samesite,
    )


def key_source_service(
    config: ConfigReader,
    database: Database | None,
    clock: Clock,
    auditor: RootAuditor,
    settings: Settings,
) -> KeySource:
    """The signing keys of plugin tokens (``backend.auth.pluginKeyStore``); each
    new key is audited (``signing-key-rotate``)."""
    return key_source_from_config(
        config,
        public_key_store=lambda: public_key_store_service(database, settings.development),
        clock=clock,
        auditor=auditor.for_plugin("app"),
    )


def public_key_store_service(database: Database | None, development: bool) -> PublicKeyStore:
    """Where plugin public keys are published: the database, or this process."""
    if database is not None:
        from flask_backstage_auth.db.storage import SqlPublicKeyStore

        return SqlPublicKeyStore(database)
    return ProcessKeyStore(development=development)


class ProcessKeyStore(InMemoryPublicKeyStore):
    """Plugin public keys in this process, with a notice at the first key.

    The notice waits for a plugin token to be signed (an app that issues none
    has nothing to share), and is a warning outside development only (where
    several instances may run).
    """

    def __init__(self, *, development: bool) -> None:
        super().__init__()
        self._notice_level = logging.INFO if development else logging.WARNING
        self._noticed = False

    def add_key(self, kid: str, jwk: dict[str, t.Any], expires_at: float) -> None:
        if not self._noticed:
            self._noticed = True
            logger.log(
                self._notice_level,
                "Plugin keys are kept in this process only: other instances cannot verify its"
                " plugin tokens. Give BackstageAuth a database (db=..., or"
                " BACKSTAGE_AUTH_DATABASE_URI) to share them.",
            )
        super().add_key(kid, jwk, expires_at)


def user_token_service(
    discovery: HostDiscovery, jwks_fetcher: JwksFetcher, settings: Settings, clock: Clock
) -> UserTokenHandler:
    """User tokens, verified with the auth backend's key set."""
    return UserTokenHandler(
        JwksCache(
            discovery.get_base_url("auth") + "/.well-known/jwks.json",
            fetcher=jwks_fetcher,
            cooldown=settings.jwks_cooldown,
            clock=clock,
            forced=forced_reloads(clock),
        ),
        clock=clock,
        leeway=settings.leeway,
        iat_leeway=settings.iat_leeway,
    )


def user_info_service(
    discovery: HostDiscovery, settings: Settings, clock: Clock
) -> CachedUserInfoService:
    """Backstage's ``userInfoServiceFactory``: the ``ent`` claim, else the auth
    backend's ``/v1/userinfo``, each answer cached for 5 seconds per token."""
    client = UserInfoClient(discovery, timeout=settings.user_info_timeout)
    return CachedUserInfoService(
        DefaultUserInfoService(client, accept_mock_tokens=settings.accept_mock_tokens),
        wait=settings.user_info_timeout,
        clock=clock,
    )


def plugin_token_service(
    key_source: KeySource,
    discovery: HostDiscovery,
    local_plugins: LocalPlugins,
    user_tokens: UserTokenHandler,
    jwks_fetcher: JwksFetcher,
    settings: Settings,
    clock: Clock,
) -> PluginTokenHandler:
    """Plugin tokens: issued with this app's keys, verified with each plugin's key set."""
    return PluginTokenHandler(
        key_source,
        # cooldown 0: a key another instance just stored must verify at once;
        # an unknown kid costs one store query, never more per token.
        LocalKeySet(key_source.list_public_keys, cooldown=0, clock=clock),
        discovery=discovery,
        local_plugins=local_plugins,
        user_tokens=user_tokens,
        clock=clock,
        leeway=settings.leeway,
        iat_leeway=settings.iat_leeway,
        max_lifetime_leeway=settings.max_lifetime_leeway,
        jwks_cooldown=settings.jwks_cooldown,
        jwks_fetcher=jwks_fetcher,
        fetch_budget=FetchBudget(settings.jwks_fetch_budget, clock=clock),
    )


def token_verifier_service(
    plugin_tokens: PluginTokenHandler,
    user_tokens: UserTokenHandler,
    external_access: ExternalAccess,
    settings: Settings,
    clock: Clock,
) -> TokenVerifier:
    """Every token kind, in Backstage's order: plugin tokens, user tokens, then
    external access (mock tokens first, in tests only)."""
    names: dict[TokenHandler, str] = {}
    if settings.accept_mock_tokens:
        names[verify_mock_token] = "mock token"
    names[plugin_token_handler(plugin_tokens)] = "plugin token"
    names[user_token_handler(user_tokens)] = "user token"
    return TokenVerifier(
        list(names),
        external_access,
        clock=clock,
        cache_size=settings.cache_size,
        cache_ttl=settings.cache_ttl,
        names=names,
    )
