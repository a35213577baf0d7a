"""``auth.keyStore``: which keys sign the auth backend's user tokens.

As Backstage's auth backend (``KeyStores.fromConfig``), ``provider`` is
``database`` by default: a :class:`~flask_backstage_auth.auth.plugin.keys.RotatingKeySource`
per process whose public keys go to ``backstage_auth_signing_keys``, where
every instance's JWKS and verifier find every instance's keys. ``memory``
keeps them in this process, ``static`` reads PEM files
(``auth.keyStore.static.keys``). Without a database, the default is
``memory``, with a warning (a notice at INFO in development).
"""

from __future__ import annotations

import logging
import typing as t

from flask_backstage_auth.auth.plugin.keys import (
    InMemoryPublicKeyStore,
    KeySource,
    PublicKeyStore,
    RotatingKeySource,
    StaticKeySource,
)
from flask_backstage_auth.clock import Clock
from flask_backstage_auth.config.reader import ConfigReader
from flask_backstage_auth.errors import ConfigError

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.audit.service import AuditorService
    from flask_backstage_auth.db.storage import Database

logger = logging.getLogger(__name__)

_KEY_STORE_KEY = "auth.keyStore"
#: The providers of ``auth.keyStore.provider`` this package has.
PROVIDERS = ("database", "memory", "static")


def user_key_source_from_config(
    config: ConfigReader,
    *,
    database: Database | None,
    key_duration: float,
    clock: Clock,
    auditor: AuditorService | None = None,
    development: bool = False,
) -> KeySource:
    """The key source ``auth.keyStore`` asks for.

    :param database: ``BackstageAuth``'s database, or ``None``.
    :param key_duration: how long a rotating key signs; it is listed three times that.
    :param auditor: where each new rotating key is audited (``signing-key-rotate``,
        purpose ``user-tokens``).
    :param development: the notice of keys kept in memory is INFO, not a warning.
    :raises ConfigError: an unknown provider, ``database`` without a database,
        or bad ``static`` keys.
    """
    store_config = config.get_config(_KEY_STORE_KEY)
    configured = store_config.get_optional_string("provider")
    provider = configured or ("database" if database is not None else "memory")
    if provider == "database":
        if database is None:
            raise ConfigError(
                f"{store_config.path('provider')} is 'database' but BackstageAuth has no"
                " database (db=..., or BACKSTAGE_AUTH_DATABASE_URI)"
            )
        from flask_backstage_auth.db.storage import SqlSigningKeyStore

        return _rotating(SqlSigningKeyStore(database), key_duration, clock, auditor)
    if provider == "memory":
        if configured is None:
            logger.log(
                logging.INFO if development else logging.WARNING,
                "User-token signing keys are kept in this process only: other instances"
                " refuse its user tokens. Give BackstageAuth a database (db=..., or"
                " BACKSTAGE_AUTH_DATABASE_URI) to share them.",
            )
        return _rotating(InMemoryPublicKeyStore(), key_duration, clock, auditor)
    if provider == "static":
        return StaticKeySource.from_config(store_config)
    if provider == "firestore":
        raise ConfigError(
            f"The 'firestore' KeyStore provider is not supported here (at"
            f" {store_config.path('provider')}); expected one of {', '.join(PROVIDERS)}"
        )
    raise ConfigError(f"Unknown KeyStore provider: {provider}")


def _rotating(
    store: PublicKeyStore, key_duration: float, clock: Clock, auditor: AuditorService | None
) -> RotatingKeySource:
    return RotatingKeySource(
        store, key_duration=key_duration, clock=clock, auditor=auditor, purpose="user-tokens"
    )
