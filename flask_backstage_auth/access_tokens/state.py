"""What :class:`~flask_backstage_auth.access_tokens.extension.AccessTokens` builds for an app.

A leaf of the package: the REST API, the admin pages and the command line
read the state from here, and the extension that builds it imports them.
"""

from __future__ import annotations

import typing as t

from flask import Flask, current_app

from flask_backstage_auth.access_tokens.audit import AuditTable
from flask_backstage_auth.access_tokens.authenticator import AccessTokenAuthenticator
from flask_backstage_auth.access_tokens.propagation import ChangeListener, Mode, psycopg_connect
from flask_backstage_auth.access_tokens.ratelimit import ClientAddress, remote_addr
from flask_backstage_auth.access_tokens.scopes import ScopeCatalogue
from flask_backstage_auth.access_tokens.service import TokenService
from flask_backstage_auth.access_tokens.settings import AccessTokenSettings
from flask_backstage_auth.access_tokens.shared_limits import LimitStore
from flask_backstage_auth.access_tokens.store import SqlAccessTokenStore
from flask_backstage_auth.access_tokens.usage import Mode as UsageMode
from flask_backstage_auth.access_tokens.usage import UsageRecorder, WriteContext

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.auth.service import VerifiedToken
    from flask_backstage_auth.extension import BackstageAuthState

#: The key of the state in ``app.extensions``.
EXTENSION_KEY = "backstage_auth_access_tokens"
#: How long the first verification in a process waits for the listener, in seconds.
FIRST_CONNECT_WAIT = 1.0
#: The plugin id: the API is mounted at ``<plugin prefix>/access-tokens``.
PLUGIN_ID = "access-tokens"


class AccessTokensState:
    """What :class:`~flask_backstage_auth.access_tokens.extension.AccessTokens` built for one app.

    :param usage_mode: how token uses are written
        (:class:`~flask_backstage_auth.access_tokens.usage.UsageRecorder`).
    :param usage_context: the context those writes run in (the app's).
    """

    def __init__(
        self,
        auth_state: BackstageAuthState,
        store: SqlAccessTokenStore,
        catalogue: ScopeCatalogue,
        settings: AccessTokenSettings,
        *,
        client_address: ClientAddress = remote_addr,
        usage_mode: UsageMode = "background",
        usage_context: WriteContext | None = None,
    ) -> None:
        self.auth_state = auth_state
        self.store = store
        self.catalogue = catalogue
        self.settings = settings
        self.clock = auth_state.clock
        #: Where a leak report's client address comes from (the rate limit's key).
        self.client_address = client_address
        #: Where the limits are shared across instances (``backend.rateLimit.store``;
        #: ``None``: each process counts on its own).
        self.limit_store = LimitStore.from_config(auth_state.config)
        #: Token uses and use events, written off the request's path.
        self.usage = UsageRecorder(store, mode=usage_mode, context=usage_context)
        #: The plugin's auditor; its events feed the audit table.
        self.auditor = auth_state.auditor.for_plugin(PLUGIN_ID)
        auth_state.auditor.add_sink(AuditTable(self.usage))
        self.authenticator = AccessTokenAuthenticator(
            store,
            catalogue,
            clock=auth_state.clock,
            revocation_check=settings.revocation_check,
            last_used_interval=settings.last_used_interval,
            personal_enabled=settings.personal_enabled,
            usage=self.usage,
            auditor=self.auditor,
            limit_store=self.limit_store,
            once_window=settings.max_rotation_grace,
        )
        #: Every operation on tokens, for the API, the admin pages and the CLI.
        self.service = TokenService(
            store,
            catalogue,
            settings,
            auth_state.permissions,
            clock=auth_state.clock,
            forget=self.forget,
            usage=self.usage,
            auditor=self.auditor,
        )
        # It holds this state weakly: an app thrown away takes its listener along.
        #: Hears of tokens changed on other instances (PostgreSQL), see
        #: :mod:`~flask_backstage_auth.access_tokens.propagation`.
        self.listener = ChangeListener(self)
        self._mode: Mode | None = None if settings.revocation_push else "polling"

    @property
    def propagation(self) -> Mode | None:
        """How changes made on other instances reach this one: ``"push"``
        (PostgreSQL ``LISTEN/NOTIFY``, with polling while the listener is down),
        ``"polling"`` (every ``revocationCheckSeconds``), or ``None`` before
        the first access token is verified."""
        return self._mode

    def verify(self, token: str) -> VerifiedToken | None:
        """The access-token handler: listens for changes first (once per process)."""
        if self._mode != "polling" and not self.listener.running():
            self.listen()
        return self.authenticator(token)

    def listen(self) -> None:
        """Start listening for changed tokens, when the store is on PostgreSQL.

        Done by the first verification in each process (after a ``fork`` too).
        """
        connect = psycopg_connect(self.store.engine(), timeout=self.store.lock_timeout)
        if connect is None:
            self._mode = "polling"
            return
        self.listener.start(connect)
        self._mode = "push"
        # Listening before the first verification is cached: no change slips
        # between the two. Bounded: an unreachable database fails the request anyway.
        self.listener.wait_connected(FIRST_CONNECT_WAIT)

    def forget(self, token_id: str) -> None:
        """Stop accepting a revoked, rotated or changed token on this instance at once."""
        self.auth_state.verifier.forget_revocation_id(token_id)

    def forget_all(self) -> None:
        """Drop every cached verification on this instance (the listener reconnected)."""
        self.auth_state.verifier.clear()


def get_state(app: Flask | None = None) -> AccessTokensState:
    """The state of ``app`` (default: the current app).

    :raises RuntimeError: ``AccessTokens`` is not registered on it.
    """
    target = app if app is not None else current_app
    try:
        return t.cast(AccessTokensState, target.extensions[EXTENSION_KEY])
    except KeyError:
        raise RuntimeError("AccessTokens is not registered on this app") from None
