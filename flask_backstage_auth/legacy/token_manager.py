"""The legacy service-to-service auth of Backstage's old backend system.

``TokenManager`` is the interface plugins use to mint tokens for outgoing calls
(:meth:`~TokenManager.get_token`) and to check incoming ones
(:meth:`~TokenManager.authenticate`). :class:`ServerTokenManager` is
Backstage's implementation, wire compatible with it.
"""

from __future__ import annotations

import logging
import secrets as _random
import threading
import typing as t
from dataclasses import dataclass

from flask_backstage_auth.auth.external.handler import read_legacy_secrets
from flask_backstage_auth.clock import Clock, system_clock
from flask_backstage_auth.config.reader import ConfigReader, as_reader
from flask_backstage_auth.errors import AuthenticationError, ConfigError
from flask_backstage_auth.legacy.tokens import (
    InvalidToken,
    LegacyTokenContext,
    mint_legacy_token,
    verify_in_context,
)

logger = logging.getLogger(__name__)

#: A token handed out by :meth:`ServerTokenManager.get_token` is reused this long.
TOKEN_REISSUE_AFTER = 600

NO_KEYS_MESSAGE = (
    "You must configure at least one key in backend.auth.keys for production"
    " (for example: backend.auth.keys: [{secret: ${BACKEND_SECRET}}]; generate a"
    " secret with 'flask backstage-auth generate-secret'), or run in development"
    " mode (app.debug or app.testing) to use a generated per-process key."
)


RESTRICTED_ONLY_MESSAGE = (
    "Every key in backend.auth.keys and in 'legacy' backend.auth.externalAccess entries"
    " has accessRestrictions, and a token manager cannot enforce them (it does not know"
    " which plugin a token is presented to): configure at least one key without"
    " accessRestrictions for production, or run in development mode (app.debug or"
    " app.testing) to use a generated per-process key."
)


DISABLED_MESSAGE = (
    "Unable to generate legacy token, no legacy keys are configured in"
    " 'backend.auth.keys' or 'backend.auth.externalAccess'"
)


@dataclass(frozen=True)
class ServerToken:
    """The result of :meth:`TokenManager.get_token`."""

    token: str


class TokenManager(t.Protocol):
    """Mints and checks service-to-service tokens."""

    def get_token(self) -> ServerToken:
        """A token for an outgoing request. Call it for every request."""

    def authenticate(self, token: str) -> None:
        """Return if ``token`` is valid; raise :class:`AuthenticationError` otherwise."""


class NoopTokenManager:
    """Requires no secret: empty tokens out, every token accepted in.

    Insecure by design; anything that needs real service auth (permissions)
    refuses to start with it (see :attr:`is_insecure`).
    """

    #: Checked by components that need real service-to-service auth.
    is_insecure = True

    def get_token(self) -> ServerToken:
        return ServerToken("")

    def authenticate(self, token: str) -> None:
        return None


class ServerTokenManager:
    """HS256 service tokens with shared secrets: the first key signs, all verify.

    Build it with :meth:`from_config` or :meth:`noop`. The constructor takes
    decoded keys.

    :param keys: HMAC keys; the first signs. Empty only with ``development``.
    :param development: with no keys, generate a per-process key (with a
        warning) instead of refusing to start.
    :param clock: the time source, epoch seconds.
    :param leeway: seconds of clock skew tolerated on ``exp`` and ``nbf``
        (Backstage: 0).
    :param max_lifetime_leeway: seconds allowed beyond one hour for ``exp``.
    :param allow_disabled: with no keys outside development, start anyway:
        :meth:`get_token` then raises and :meth:`authenticate` rejects every
        token (Backstage's ``allowDisabledTokenManager``, used by the
        extension, whose other token kinds need no shared secret).
    :param generated_key_level: the log level of the notice that a
        development key was generated (the extension lowers it to INFO in a
        ``TESTING`` app, where nothing needs doing about it).
    """

    is_insecure = False

    def __init__(
        self,
        keys: t.Sequence[bytes],
        *,
        development: bool = False,
        logger: logging.Logger | None = None,
        clock: Clock = system_clock,
        leeway: float = 0,
        max_lifetime_leeway: float = 60,
        allow_disabled: bool = False,
        generated_key_level: int = logging.WARNING,
    ) -> None:
        log = logger or globals()["logger"]
        #: True when no key was configured and a per-process one was generated.
        self.generated_key = not keys and development
        if not keys and not development:
            if not allow_disabled:
                raise ConfigError(NO_KEYS_MESSAGE)
        elif not keys:
            log.log(
                generated_key_level,
                "Generated a secret for service-to-service authentication: DEVELOPMENT USE ONLY.",
            )
            keys = [_random.token_bytes(32)]
        self._keys = tuple(keys)
        self._clock = clock
        self._context = LegacyTokenContext(
            self._keys, "backstage-server", clock, leeway, max_lifetime_leeway
        )
        self._lock = threading.Lock()
        self._cached: tuple[ServerToken, float] | None = None

    @staticmethod
    def noop() -> NoopTokenManager:
        """A manager that needs no secret and accepts every token."""
        return NoopTokenManager()

    @classmethod
    def from_config(
        cls,
        config: ConfigReader | t.Mapping[str, t.Any] | None,
        *,
        logger: logging.Logger | None = None,
        development: bool = False,
        clock: Clock = system_clock,
        leeway: float = 0,
        max_lifetime_leeway: float = 60,
        allow_disabled: bool = False,
        generated_key_level: int = logging.WARNING,
    ) -> ServerTokenManager:
        """Keys from ``backend.auth.keys`` and ``legacy`` ``externalAccess`` entries.

        Only the entries without ``accessRestrictions`` (see
        :func:`read_legacy_keys`): the first of them signs.

        :raises ConfigError: an entry has no valid secret or invalid
            restrictions, or there are no unrestricted keys outside
            development (unless ``allow_disabled``).
        """
        reader = as_reader(config)
        keys = read_legacy_keys(reader)
        if not keys and read_legacy_secrets(reader):
            if not development and not allow_disabled:
                raise ConfigError(RESTRICTED_ONLY_MESSAGE)
            (logger or globals()["logger"]).warning(
                "Every legacy key has accessRestrictions: the token manager uses none of them"
            )
        return cls(
            keys,
            development=development,
            logger=logger,
            clock=clock,
            leeway=leeway,
            max_lifetime_leeway=max_lifetime_leeway,
            allow_disabled=allow_disabled,
            generated_key_level=generated_key_level,
        )

    @property
    def key_count(self) -> int:
        """How many keys verify (the first of them signs)."""
        return len(self._keys)

    @property
    def verification_keys(self) -> tuple[bytes, ...]:
        """The keys that verify, the signing key first."""
        return self._keys

    def get_token(self) -> ServerToken:
        """A token signed with the first key, reused for ten minutes."""
        if not self._keys:
            raise ConfigError(DISABLED_MESSAGE)
        now = self._clock()
        with self._lock:
            if self._cached is not None and now - self._cached[1] < TOKEN_REISSUE_AFTER:
                return self._cached[0]
            token = ServerToken(mint_legacy_token(self._keys[0], now=now))
            self._cached = (token, now)
            return token

    def authenticate(self, token: str) -> None:
        """Check a token against every key.

        :raises AuthenticationError: ``Invalid server token; caused by ...``.
            Nothing else is ever raised, whatever ``token`` is.
        """
        self.verify(token)

    def verify(self, token: object) -> dict[str, t.Any]:
        """Like :meth:`authenticate`, returning the verified claims."""
        try:
            return verify_in_context(token, self._context)
        except InvalidToken as exc:
            raise AuthenticationError("Invalid server token", exc) from None
        except Exception:  # fail closed, whatever went wrong; log, never show
            logger.exception("Unexpected error while verifying a server token")
            raise AuthenticationError("Invalid server token") from None


def read_legacy_keys(config: ConfigReader) -> list[bytes]:
    """Decoded secrets of ``backend.auth.keys`` then ``legacy`` external access.

    Entries with ``accessRestrictions`` are left out: a token manager answers
    for every plugin at once, so it could not keep a token to the plugins its
    entry names. Their tokens reach new-style plugins through the ``auth``
    service, which enforces the restrictions.

    :raises ConfigError: see
        :func:`~flask_backstage_auth.auth.external.handler.read_legacy_secrets`.
    """
    return [secret.key for secret in read_legacy_secrets(config) if secret.restrictions is None]
