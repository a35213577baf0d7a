"""``backend.auth.externalAccess``: callers outside the backend, by config.

Entries are tried in config order, then each entry of the deprecated
``backend.auth.keys`` as a ``legacy`` entry with subject
``external:backstage-plugin``. The first handler that recognises the token
wins; its entry's ``accessRestrictions`` (on a ``backend.auth.keys`` entry
too, as Backstage reads them) decide which plugins the token may call.
"""

from __future__ import annotations

import logging
import re
import typing as t
from dataclasses import dataclass

from flask_backstage_auth.auth.external.jwks import jwks_token_handler
from flask_backstage_auth.auth.external.static import static_token_handler
from flask_backstage_auth.auth.external.types import ExternalTokenHandler, ExternalTokenResult
from flask_backstage_auth.auth.jose import PeekedToken, peek
from flask_backstage_auth.auth.jwks import JwksFetcher
from flask_backstage_auth.clock import Clock
from flask_backstage_auth.config.reader import ConfigReader
from flask_backstage_auth.credentials import PERMISSION_ACTIONS, AccessRestrictions
from flask_backstage_auth.errors import AuthenticationError, ConfigError
from flask_backstage_auth.legacy.secrets import validate_secret
from flask_backstage_auth.legacy.tokens import (
    InvalidToken,
    LegacyTokenContext,
    verify_external_legacy_token,
)

logger = logging.getLogger(__name__)

#: The subject of callers using the deprecated ``backend.auth.keys``.
LEGACY_KEYS_SUBJECT = "external:backstage-plugin"

_NON_SPACE = re.compile(r"\S+")
_SPLIT = re.compile(r"[\s,]+")

#: Access restrictions by plugin id; ``None`` means unrestricted.
RestrictionsByPlugin = t.Optional[t.Mapping[str, AccessRestrictions]]


@dataclass(frozen=True)
class LegacySecret:
    """A configured legacy secret, with the restrictions of the entry declaring it."""

    key: bytes
    restrictions: RestrictionsByPlugin
    #: The entry, e.g. ``backend.auth.keys[0]`` or ``backend.auth.externalAccess[2]``.
    path: str
    #: Declared in the deprecated ``backend.auth.keys``.
    deprecated_keys: bool


@dataclass(frozen=True)
class ExternalAccessEntry:
    handler: ExternalTokenHandler[t.Any]
    context: t.Any
    restrictions: RestrictionsByPlugin
    path: str

    def verify(self, token: PeekedToken) -> ExternalTokenResult | None:
        """The entry's handler's answer for ``token``."""
        handler = self.handler
        if handler.verify_peeked is not None:
            return handler.verify_peeked(token, self.context)
        return handler.verify_token(token.token, self.context)


def _required_secret(options: ConfigReader) -> bytes:
    if not options.has("secret"):
        raise ConfigError(f"Missing required config value at '{options.path('secret')}'")
    return validate_secret(options.get("secret"), options.path("secret"))


def legacy_token_handler(
    *, clock: Clock, leeway: float = 0, max_lifetime_leeway: float = 60
) -> ExternalTokenHandler[LegacyTokenContext]:
    """The ``legacy`` handler: HS256 tokens with a configured secret."""

    def initialize(options: ConfigReader) -> LegacyTokenContext:
        secret = options.get("secret")
        if secret is not None and (not isinstance(secret, str) or not _NON_SPACE.fullmatch(secret)):
            raise ConfigError(
                f"Illegal secret, must be a valid base64 string (at {options.path('secret')})"
            )
        key = _required_secret(options)
        subject = options.get_string("subject")
        if not _NON_SPACE.fullmatch(subject):
            raise ConfigError(
                "Illegal subject, must be a set of non-space characters"
                f" (at {options.path('subject')})"
            )
        return LegacyTokenContext([key], subject, clock, leeway, max_lifetime_leeway)

    def verify_peeked(
        token: PeekedToken, context: LegacyTokenContext
    ) -> ExternalTokenResult | None:
        try:
            claims = verify_external_legacy_token(token, context)
        except InvalidToken as exc:
            raise AuthenticationError("Invalid legacy token", exc) from None
        if claims is None:
            return None
        return ExternalTokenResult(context.subject, expires_at=claims["exp"], claims=claims)

    def verify(token: str, context: LegacyTokenContext) -> ExternalTokenResult | None:
        return verify_peeked(peek(token), context) if isinstance(token, str) else None

    return ExternalTokenHandler(
        type="legacy", initialize=initialize, verify_token=verify, verify_peeked=verify_peeked
    )


def _string_set(value: object, path: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{path} must be a string or a list of strings")
    seen: dict[str, None] = {}
    for item in t.cast(t.List[str], items):
        for part in _SPLIT.split(item):
            if part:
                seen[part] = None
    return tuple(seen)


def read_access_restrictions(entry: ConfigReader) -> RestrictionsByPlugin:
    """Parse ``accessRestrictions`` with Backstage's validation messages."""
    restrictions: dict[str, AccessRestrictions] = {}
    for item in entry.get_config_list("accessRestrictions"):
        for key in item.keys():
            if key not in ("plugin", "permission", "permissionAttribute"):
                raise ConfigError(
                    f"Invalid key '{key}' in 'accessRestrictions' config, expected one of"
                    f" 'plugin', 'permission', 'permissionAttribute' (at {item.prefix})"
                )
        plugin = item.get_string("plugin")
        if plugin in restrictions:
            raise ConfigError(
                f"Attempted to declare 'accessRestrictions' twice for plugin '{plugin}',"
                f" which is not permitted (at {item.path('plugin')})"
            )
        names = None
        if item.has("permission"):
            names = _string_set(item.get("permission"), item.path("permission")) or None
        actions = None
        attributes = item.get_config("permissionAttribute")
        for key in attributes.keys():
            if key != "action":
                raise ConfigError(
                    f"Invalid key '{key}' in 'permissionAttribute' config, expected 'action'"
                    f" (at {attributes.prefix})"
                )
        if attributes.has("action"):
            actions = _string_set(attributes.get("action"), attributes.path("action"))
            for action in actions:
                if action not in PERMISSION_ACTIONS:
                    raise ConfigError(
                        f"Invalid value '{action}' at 'action' in 'permissionAttributes' config,"
                        " valid values are 'create', 'read', 'update', 'delete'"
                        f" (at {attributes.path('action')})"
                    )
            actions = actions or None
        restrictions[plugin] = AccessRestrictions(permission_names=names, actions=actions)
    return restrictions or None


def read_legacy_secrets(config: ConfigReader) -> list[LegacySecret]:
    """Every legacy secret: ``backend.auth.keys`` entries, then ``legacy`` external access.

    Each secret carries its own entry's ``accessRestrictions``, validated as
    for any ``externalAccess`` entry (errors name the entry's path).

    :raises ConfigError: a missing or invalid secret or restriction, or one
        secret declared by two entries with different restrictions (which of
        them applies would depend on the order of the entries, and the token
        manager of old-style plugins could not tell).
    """
    secrets = [
        LegacySecret(_required_secret(entry), read_access_restrictions(entry), entry.prefix, True)
        for entry in config.get_config_list("backend.auth.keys")
    ]
    for entry in config.get_config_list("backend.auth.externalAccess"):
        if entry.get("type") == "legacy":
            key = _required_secret(entry.get_config("options"))
            secrets.append(LegacySecret(key, read_access_restrictions(entry), entry.prefix, False))
    first: dict[bytes, LegacySecret] = {}
    for secret in secrets:
        earlier = first.setdefault(secret.key, secret)
        if earlier.restrictions != secret.restrictions:
            raise ConfigError(
                f"The secret at '{secret.path}' is also declared at '{earlier.path}' with other"
                " 'accessRestrictions'; a secret must have one set of restrictions"
            )
    return secrets


def _token_manager_keys(
    legacy_keys: t.Sequence[bytes], secrets: t.Sequence[LegacySecret]
) -> list[bytes]:
    """The keys of ``legacy_keys`` that the config does not declare.

    :raises ConfigError: one of them is a restricted secret of the config.
    """
    declared = {secret.key: secret for secret in secrets}
    extra: list[bytes] = []
    for key in legacy_keys:
        secret = declared.get(key)
        if secret is not None and secret.restrictions is not None:
            raise ConfigError(
                f"The token manager verifies the secret at '{secret.path}', which has"
                " 'accessRestrictions' it cannot enforce; give it unrestricted secrets only"
                " (ServerTokenManager.from_config leaves restricted ones out)"
            )
        if secret is None and key not in extra:
            extra.append(key)
    return extra


class ExternalAccess:
    """The configured external access entries, in order."""

    def __init__(self, entries: t.Sequence[ExternalAccessEntry]) -> None:
        self.entries = tuple(entries)

    @classmethod
    def from_config(
        cls,
        config: ConfigReader,
        *,
        handlers: t.Sequence[ExternalTokenHandler[t.Any]],
        legacy_keys: t.Sequence[bytes] = (),
        clock: Clock,
        leeway: float = 0,
        max_lifetime_leeway: float = 60,
    ) -> ExternalAccess:
        """Build and validate every entry; errors name the entry's path.

        :param handlers: the handler types (built-in and custom), unique by type.
        :param legacy_keys: the keys the app's token manager verifies. Those
            the config does not declare (a generated development key) are
            appended last, unrestricted, with subject ``external:backstage-plugin``.
        :raises ConfigError: an invalid entry; a secret declared twice with
            different restrictions; a restricted secret among ``legacy_keys``.
        """
        by_type: dict[str, ExternalTokenHandler[t.Any]] = {}
        for handler in handlers:
            if handler.type in by_type:
                raise ConfigError(
                    f"Duplicate external token handler type '{handler.type}',"
                    " each handler must have a unique type"
                )
            by_type[handler.type] = handler
        entries = []
        static_tokens: set[bytes] = set()
        for entry in config.get_config_list("backend.auth.externalAccess"):
            kind = entry.get_string("type")
            entry_handler = by_type.get(kind) if isinstance(kind, str) else None
            if entry_handler is None:
                expected = ", ".join(f"'{name}'" for name in by_type)
                raise ConfigError(
                    f"Unknown type '{kind}' in backend.auth.externalAccess, expected one of"
                    f" {expected} (at {entry.path('type')})"
                )
            context = entry_handler.initialize(entry.get_config("options"))
            if entry_handler.type == "static":
                if context.digest in static_tokens:
                    raise ConfigError(
                        "Static externalAccess token was declared more than once"
                        f" (at {entry.path('options.token')})"
                    )
                static_tokens.add(context.digest)
            entries.append(
                ExternalAccessEntry(
                    entry_handler, context, read_access_restrictions(entry), entry.prefix
                )
            )
        secrets = read_legacy_secrets(config)
        if any(secret.deprecated_keys for secret in secrets):
            logger.warning(
                "DEPRECATION WARNING: The backend.auth.keys config has been replaced by"
                " backend.auth.externalAccess, see"
                " https://backstage.io/docs/auth/service-to-service-auth"
            )
        legacy = legacy_token_handler(
            clock=clock, leeway=leeway, max_lifetime_leeway=max_lifetime_leeway
        )

        def keys_context(keys: t.Sequence[bytes]) -> LegacyTokenContext:
            return LegacyTokenContext(keys, LEGACY_KEYS_SUBJECT, clock, leeway, max_lifetime_leeway)

        for secret in secrets:
            if secret.deprecated_keys:
                entries.append(
                    ExternalAccessEntry(
                        legacy, keys_context([secret.key]), secret.restrictions, secret.path
                    )
                )
        extra = _token_manager_keys(legacy_keys, secrets)
        if extra:
            entries.append(ExternalAccessEntry(legacy, keys_context(extra), None, "token manager"))
        return cls(entries)

    def verify(self, token: PeekedToken) -> tuple[ExternalTokenResult, RestrictionsByPlugin] | None:
        """The first entry's result for ``token``, with its restrictions."""
        found = self.verify_entry(token)
        return None if found is None else (found[1], found[0].restrictions)

    def verify_entry(
        self, token: PeekedToken
    ) -> tuple[ExternalAccessEntry, ExternalTokenResult] | None:
        """The first entry that accepts ``token``, and its result."""
        for entry in self.entries:
            result = entry.verify(token)
            if result is not None:
                return entry, result
        return None


def builtin_handlers(
    *,
    clock: Clock,
    leeway: float = 0,
    max_lifetime_leeway: float = 60,
    jwks_timeout: float = 5,
    jwks_cooldown: float = 30,
    jwks_fetcher: JwksFetcher | None = None,
) -> list[ExternalTokenHandler[t.Any]]:
    """The ``static``, ``legacy`` and ``jwks`` handlers."""
    return [
        static_token_handler,
        legacy_token_handler(clock=clock, leeway=leeway, max_lifetime_leeway=max_lifetime_leeway),
        jwks_token_handler(
            clock=clock,
            leeway=leeway,
            timeout=jwks_timeout,
            cooldown=jwks_cooldown,
            fetcher=jwks_fetcher,
        ),
    ]
