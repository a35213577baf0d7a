"""What :class:`~flask_backstage_auth.access_tokens.extension.AccessTokens` builds for an app.

A leaf of the package: the REST API, the admin pages and the command line
read the state from here, and the extension that builds it imports them.
"""

from __future__ import annotations

import typing as t

from flask import Flask, current_app

from flask_backstage_auth.access_tokens.audit import AuditTable
from flask_backstage_auth.access_tokens.authenticator import AccessTokenAuthenticator
from flask_backstage_auth.access_tokens.ratelimit import ClientAddress, remote_addr
from flask_backstage_auth.access_tokens.scopes import ScopeCatalogue
from flask_backstage_auth.access_tokens.service import TokenService
from flask_backstage_auth.access_tokens.settings import AccessTokenSettings
from flask_backstage_auth.access_tokens.shared_limits import LimitStore
from flask_backstage_auth.access_tokens.store import SqlAccessTokenStore
from flask_backstage_auth.access_tokens.usage import Mode, UsageRecorder, WriteContext

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.extension import BackstageAuthState

#: The key of the state in ``app.extensions``.
EXTENSION_KEY = "backstage_auth_access_tokens"
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
        usage_mode: Mode = "background",
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

    def forget(self, token_id: str) -> None:
        """Stop accepting a revoked or rotated token on this instance at once."""
        self.auth_state.verifier.forget_revocation_id(token_id)


def get_state(app: Flask | None = None) -> AccessTokensState:
    """The state of ``app`` (default: the current app).

    :raises RuntimeError: ``AccessTokens`` is not registered on it.
    """
    target = app if app is not None else current_app
    try:
        return t.cast(AccessTokensState, target.extensions[EXTENSION_KEY])
    except KeyError:
        raise RuntimeError("AccessTokens is not registered on this app") from None
