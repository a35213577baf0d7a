"""``backend.auth.pluginKeyStore``: which keys sign this app's plugin tokens."""

from __future__ import annotations

import logging
import typing as t

from flask_backstage_auth.auth.plugin.keys import (
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

logger = logging.getLogger(__name__)

#: How long a generated plugin key signs before the next one is made.
KEY_DURATION = 3600


def key_source_from_config(
    config: ConfigReader,
    *,
    public_key_store: t.Callable[[], PublicKeyStore],
    clock: Clock,
    auditor: AuditorService | None = None,
) -> KeySource:
    """The key source ``backend.auth.pluginKeyStore`` asks for.

    ``type: database`` (the default) rotates a per-process key hourly and
    publishes public keys through ``public_key_store``, each new key audited
    to ``auditor`` (``signing-key-rotate``); ``type: static`` reads PEM files.
    """
    store_config = config.get_config("backend.auth.pluginKeyStore")
    kind = store_config.get_string("type", "database")
    if kind == "database":
        return RotatingKeySource(
            public_key_store(),
            key_duration=KEY_DURATION,
            clock=clock,
            auditor=auditor,
            purpose="plugin-tokens",
        )
    if kind == "static":
        return StaticKeySource.from_config(store_config)
    raise ConfigError(
        f"Unsupported config value backend.auth.pluginKeyStore.type '{kind}';"
        " expected one of 'database', 'static'"
    )
