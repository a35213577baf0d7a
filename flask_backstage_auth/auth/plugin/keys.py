"""Signing keys for the ES256 tokens this app issues, and where their public halves live.

A key source hands out the current private signing key and lists the public
keys (as JWKs) that verifiers may use. Two kinds, as in Backstage's
``backend.auth.pluginKeyStore``:

* :class:`RotatingKeySource` (``database``, the default): a key pair made in
  this process, used for ``key_duration`` seconds, then replaced. Its public
  half goes to a :class:`PublicKeyStore` first (the database, shared by every
  instance, or memory) and stays listed for three times ``key_duration``.
* :class:`StaticKeySource` (``static``): PEM files from configuration; the
  first pair signs, every public key is listed.
"""

from __future__ import annotations

import json
import logging
import threading
import typing as t
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flask_backstage_auth.clock import Clock, system_clock
from flask_backstage_auth.config.reader import ConfigReader
from flask_backstage_auth.errors import ConfigError, ServiceUnavailableError

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.audit.service import AuditorService

logger = logging.getLogger(__name__)

ALGORITHM = "ES256"
#: A public key stays listed this many key durations after it was made.
KEY_EXPIRATION_MARGIN_FACTOR = 3
#: Seconds a rotating key signs without the store being seen holding its public half.
DEFAULT_CHECK_INTERVAL = 60


@dataclass(frozen=True)
class SigningKey:
    """A private key with its key id, ready to sign."""

    kid: str
    private_key: t.Any
    algorithm: str = ALGORITHM


def public_jwk(private_key: t.Any, kid: str, algorithm: str = ALGORITHM) -> dict[str, t.Any]:
    """The public JWK of ``private_key``, with ``kid``, ``alg`` and ``use``."""
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private_key.public_key()))
    jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
    return t.cast(t.Dict[str, t.Any], jwk)


@dataclass(frozen=True)
class StoredPublicKey:
    kid: str
    jwk: dict[str, t.Any]
    expires_at: float


class PublicKeyStore(t.Protocol):
    """Where public keys are published for every instance to serve."""

    def add_key(self, kid: str, jwk: dict[str, t.Any], expires_at: float) -> None: ...

    def list_keys(self) -> list[StoredPublicKey]: ...

    def remove_keys(self, kids: t.Sequence[str]) -> None: ...


class InMemoryPublicKeyStore:
    """Public keys in this process only: for a single instance, and for tests."""

    def __init__(self) -> None:
        self._keys: dict[str, StoredPublicKey] = {}
        self._lock = threading.Lock()

    def add_key(self, kid: str, jwk: dict[str, t.Any], expires_at: float) -> None:
        with self._lock:
            self._keys[kid] = StoredPublicKey(kid, dict(jwk), expires_at)

    def list_keys(self) -> list[StoredPublicKey]:
        with self._lock:
            return list(self._keys.values())

    def remove_keys(self, kids: t.Sequence[str]) -> None:
        with self._lock:
            for kid in kids:
                self._keys.pop(kid, None)


class KeySource(t.Protocol):
    """Hands out the signing key and lists the public keys."""

    def get_signing_key(self) -> SigningKey: ...

    def list_public_keys(self) -> list[dict[str, t.Any]]: ...


class RotatingKeySource:
    """A per-process ES256 key, rotated every ``key_duration`` seconds.

    The public key is stored before the private key is ever used, so every
    instance sharing the store can verify a token as soon as it exists.

    A key whose public half is gone from the store (the table was emptied,
    an older backup restored) signs nothing more: the next signing makes a
    new key. It is noticed by any listing of the store, and before signing
    when the store has not been seen holding the key for ``check_interval``
    seconds (one listing of the store, at most that often). A new key
    rather than the old one stored again: whoever removed it may have meant
    its tokens to stop working.

    :param auditor: where each new key is audited (``signing-key-rotate``,
        with its ``kid``, the one it replaces, ``purpose`` and ``reason``).
    :param purpose: what the keys sign, for the audit and the logs
        (``plugin-tokens``, ``user-tokens``).
    """

    def __init__(
        self,
        store: PublicKeyStore,
        *,
        key_duration: float = 3600,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
        clock: Clock = system_clock,
        auditor: AuditorService | None = None,
        purpose: str = "plugin-tokens",
    ) -> None:
        self.store = store
        self.key_duration = key_duration
        self.check_interval = check_interval
        self._clock = clock
        self._auditor = auditor
        self.purpose = purpose
        self._lock = threading.Lock()
        self._current: _CurrentKey | None = None

    def get_signing_key(self) -> SigningKey:
        now = self._clock()
        with self._lock:
            current = self._current
            if current is None:
                return self._rotate(now, "first")
            if now >= current.rotate_at:
                logger.info("Signing key has expired, generating new key")
                return self._rotate(now, "expired")
            if not current.missing and (
                now - current.seen_at < self.check_interval or self._still_stored(current, now)
            ):
                return current.key
            logger.warning(
                "Signing key %s is missing from the key store, generating new key",
                current.key.kid,
            )
            current.missing = True  # never signs again, even if the next key cannot be made
            return self._rotate(now, "missing-from-store")

    def _still_stored(self, current: _CurrentKey, now: float) -> bool:
        """Whether the store still lists ``current``; ``True`` when it cannot be read."""
        current.seen_at = now  # checked at most once per interval, whatever the answer
        try:
            keys = self.store.list_keys()
        except Exception:  # a store that is down is no sign that the key is gone
            logger.warning("Could not check the key store for signing key %s", current.key.kid)
            return True
        return any(k.kid == current.key.kid and k.expires_at >= now for k in keys)

    def _rotate(self, now: float, reason: str) -> SigningKey:
        """Make a key pair, publish its public half, then let it sign (the lock is held).

        The one place a key is made: ``reason`` is ``first``, ``expired`` or
        ``missing-from-store``.
        """
        private_key = ec.generate_private_key(ec.SECP256R1())
        key = SigningKey(str(uuid.uuid4()), private_key)
        expires_at = now + self.key_duration * KEY_EXPIRATION_MARGIN_FACTOR
        event = None
        if self._auditor is not None:
            previous = self._current.key.kid if self._current is not None else None
            event = self._auditor.create_event(
                "signing-key-rotate",
                severity="medium",
                meta={
                    "purpose": self.purpose,
                    "kid": key.kid,
                    "previousKid": previous,
                    "publicKeyExpiresAt": expires_at,
                    "reason": reason,
                },
            )
        try:
            self.store.add_key(key.kid, public_jwk(private_key, key.kid), expires_at)
        except Exception as exc:
            if isinstance(exc, ServiceUnavailableError):
                # The store's outage, logged once per outage where it happened
                # (db/guard.py): not a traceback for every request meanwhile.
                logger.debug("Failed to generate new signing key", exc_info=True)
            else:
                logger.exception("Failed to generate new signing key")
            if event is not None:
                event.fail(exc)
            raise
        logger.info("Created new signing key %s", key.kid)
        self._current = _CurrentKey(key, rotate_at=now + self.key_duration, seen_at=now)
        if event is not None:
            event.success()
        return key

    def list_public_keys(self) -> list[dict[str, t.Any]]:
        now = self._clock()
        current = self._current  # before the query: a key made later may be missing from it
        keys = self.store.list_keys()
        expired = [k.kid for k in keys if k.expires_at < now]
        if expired:
            what = "plugin service keys" if self.purpose == "plugin-tokens" else "signing keys"
            logger.info("Removing expired %s, '%s'", what, "', '".join(expired))
            try:
                self.store.remove_keys(expired)
            except Exception as exc:  # pruning is best effort; listing still excludes them
                outage = isinstance(exc, ServiceUnavailableError)  # logged by the store
                logger.log(
                    logging.DEBUG if outage else logging.WARNING,
                    "Could not remove expired keys",
                    exc_info=True,
                )
        valid = [k for k in keys if k.expires_at >= now]
        if current is not None and not current.missing and now < current.rotate_at:
            if any(k.kid == current.key.kid for k in valid):
                current.seen_at = max(current.seen_at, now)
            else:
                logger.warning(
                    "Signing key %s is missing from the key store; the next token gets a new key",
                    current.key.kid,
                )
                current.missing = True
        return [k.jwk for k in valid]


@dataclass
class _CurrentKey:
    key: SigningKey
    #: When the next signing makes a new key.
    rotate_at: float
    #: When the store was last seen holding the public key.
    seen_at: float
    #: Gone from the store: it signs nothing more.
    missing: bool = False


class StaticKeySource:
    """Key pairs from PEM files; the first pair signs."""

    def __init__(self, signing_key: SigningKey, public_keys: t.Sequence[dict[str, t.Any]]) -> None:
        self._signing_key = signing_key
        self._public_keys = [dict(k) for k in public_keys]

    @classmethod
    def from_config(cls, config: ConfigReader) -> StaticKeySource:
        """Read ``static.keys`` of ``backend.auth.pluginKeyStore``."""
        entries = config.get_config_list("static.keys")
        if not entries:
            raise ConfigError(
                "At least one key pair must be provided in static.keys, when the static"
                f" key store type is used (at {config.path('static.keys')})"
            )
        signing: SigningKey | None = None
        public_keys = []
        for index, entry in enumerate(entries):
            kid = entry.get_string("keyId")
            algorithm = entry.get_string("algorithm", ALGORITHM)
            if algorithm != ALGORITHM:
                raise ConfigError(f"Only ES256 is supported at {entry.path('algorithm')}")
            public = _load_pem(entry, "publicKeyFile", private=False)
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
            jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
            public_keys.append(jwk)
            if index == 0:
                if not entry.has("privateKeyFile"):
                    raise ConfigError(
                        "Private key for signing must be provided in the first key pair in"
                        f" static.keys (at {entry.path('privateKeyFile')})"
                    )
                private = _load_pem(entry, "privateKeyFile", private=True)
                signing = SigningKey(kid, private, algorithm)
        assert signing is not None
        return cls(signing, public_keys)

    def get_signing_key(self) -> SigningKey:
        return self._signing_key

    def list_public_keys(self) -> list[dict[str, t.Any]]:
        return [dict(k) for k in self._public_keys]


def _load_pem(entry: ConfigReader, key: str, *, private: bool) -> t.Any:
    path = Path(entry.get_string(key))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read {entry.path(key)}: {exc.strerror}") from None
    try:
        loaded: t.Any = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError):
        raise ConfigError(
            f"{entry.path(key)} is not a PEM {'private' if private else 'public'} key"
        ) from None
    if not isinstance(
        loaded, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)
    ) or not isinstance(loaded.curve, ec.SECP256R1):
        raise ConfigError(f"{entry.path(key)} must be an EC P-256 key")
    return loaded
