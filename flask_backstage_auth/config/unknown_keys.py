"""Start-up warnings for settings and ``backend.auth`` keys that nothing reads.

A misspelt key (``externalAcess``, ``BACKSTAGE_AUTH_JWKS_TIMOUT``) would
otherwise leave the default in force without a word. Each warning names the
key, its path and the nearest known key; never a value, which may be a secret.
"""

from __future__ import annotations

import difflib
import logging
import typing as t

from flask_backstage_auth.config.reader import ConfigReader

logger = logging.getLogger("flask_backstage_auth.config")

#: The ``BACKSTAGE_AUTH_*`` prefix of the extension's Flask settings.
SETTINGS_PREFIX = "BACKSTAGE_AUTH_"
#: Key names are shown cut to this length (a key is no place for a secret,
#: but a broken YAML line can make one).
_MAX_KEY_LENGTH = 64

# Backstage's schema (backend-defaults' config.schema.json, ``backend.auth``).
_AUTH_KEYS = ("keys", "externalAccess", "pluginKeyStore", "dangerouslyDisableDefaultAuthPolicy")
_ENTRY_KEYS = ("type", "options", "accessRestrictions")
_OPTION_KEYS = {
    "static": ("token", "subject"),
    "legacy": ("secret", "subject"),
    "jwks": ("url", "algorithm", "issuer", "audience", "subjectPrefix"),
}
_KEY_ENTRY_KEYS = ("secret", "accessRestrictions")
_KEY_STORE_KEYS = ("type", "static")
_STATIC_KEY_KEYS = ("publicKeyFile", "privateKeyFile", "keyId", "algorithm")


def _shown(key: object) -> str:
    text = str(key)
    return repr(text if len(text) <= _MAX_KEY_LENGTH else text[: _MAX_KEY_LENGTH - 3] + "...")


def _warn(where: str, key: object, known: t.Sequence[str]) -> None:
    nearest = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f"did you mean {nearest[0]!r}?" if nearest else f"known keys: {', '.join(known)}"
    logger.warning("Unknown key %s in %s, ignored; %s", _shown(key), where, hint)


def _check(reader: ConfigReader, known: t.Sequence[str]) -> None:
    for key in reader.keys():
        if key not in known:
            _warn(reader.prefix or "the configuration", key, known)


def warn_unknown_settings(config: t.Mapping[str, t.Any], known: t.Collection[str]) -> None:
    """Warn about each ``BACKSTAGE_AUTH_*`` key of ``config`` not in ``known``."""
    names = sorted(known)
    for key in config:
        if isinstance(key, str) and key.startswith(SETTINGS_PREFIX) and key not in known:
            # Compared without the prefix they all share.
            suffixes = [n[len(SETTINGS_PREFIX) :] for n in names]
            nearest = difflib.get_close_matches(key[len(SETTINGS_PREFIX) :], suffixes, n=1)
            hint = f"did you mean {SETTINGS_PREFIX}{nearest[0]}?" if nearest else "no such setting"
            logger.warning("Unknown setting %s in app.config, ignored; %s", _shown(key), hint)


def warn_unknown_auth_keys(config: ConfigReader) -> None:
    """Warn about each key under ``backend.auth`` that Backstage's schema does not have.

    ``options`` of custom ``externalAccess`` types are the handler's own and
    are not checked; an unknown key in ``accessRestrictions`` is already an
    error. Malformed values are left to the readers, which raise.
    """
    auth = config.get("backend.auth")
    if not isinstance(auth, t.Mapping):
        return
    reader = config.get_config("backend.auth")
    _check(reader, _AUTH_KEYS)
    for entry in _mappings(reader, "keys"):
        _check(entry, _KEY_ENTRY_KEYS)
    for entry in _mappings(reader, "externalAccess"):
        _check(entry, _ENTRY_KEYS)
        options = entry.get("options")
        known = _OPTION_KEYS.get(str(entry.get("type")))
        if known is not None and isinstance(options, t.Mapping):
            _check(entry.get_config("options"), known)
    store = auth.get("pluginKeyStore")
    if isinstance(store, t.Mapping):
        store_reader = reader.get_config("pluginKeyStore")
        _check(store_reader, _KEY_STORE_KEYS)
        static = store.get("static")
        if isinstance(static, t.Mapping):
            static_reader = store_reader.get_config("static")
            _check(static_reader, ("keys",))
            for key in _mappings(static_reader, "keys"):
                _check(key, _STATIC_KEY_KEYS)


def _mappings(reader: ConfigReader, key: str) -> list[ConfigReader]:
    """Readers for the mappings of the list at ``key``; anything else is skipped."""
    value = reader.get(key)
    if not isinstance(value, list):
        return []
    return [
        ConfigReader(item, f"{reader.path(key)}[{index}]")
        for index, item in enumerate(value)
        if isinstance(item, t.Mapping)
    ]
