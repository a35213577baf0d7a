"""Key sets to verify ES256 tokens with: a remote JWKS, or this app's own keys."""

from __future__ import annotations

import threading
import typing as t

import jwt

from flask_backstage_auth.auth.jose import PeekedToken, verify_jwt
from flask_backstage_auth.auth.jwks import JwksCache, JwksUnavailable, select_key
from flask_backstage_auth.clock import Clock, system_clock
from flask_backstage_auth.errors import BackstageError


class KeySet(t.Protocol):
    """Finds the verification key for a token's ``kid`` and ``alg``.

    :class:`~flask_backstage_auth.auth.jwks.JwksCache` (remote) and
    :class:`LocalKeySet` (this app's own keys) are the two kinds.
    """

    def get_key(self, kid: str | None, alg: str) -> jwt.PyJWK | None: ...


__all__ = ["JwksCache", "KeySet", "LocalKeySet", "select_key"]


class LocalKeySet:
    """The public keys of a local key source, reloaded on an unknown ``kid``.

    :param load: returns the public JWKs (e.g. ``key_source.list_public_keys``).
    :param cooldown: the least seconds between two reloads for unknown kids.
    """

    def __init__(
        self,
        load: t.Callable[[], t.Sequence[dict[str, t.Any]]],
        *,
        cooldown: float = 1,
        max_age: float = 60,
        clock: Clock = system_clock,
    ) -> None:
        self._load = load
        self._cooldown = cooldown
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list[jwt.PyJWK] | None = None
        self._loaded_at = 0.0

    def _reload(self, now: float) -> None:
        keys = []
        for jwk in self._load():
            try:
                keys.append(jwt.PyJWK(jwk))
            except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError):
                continue
        self._keys = keys
        self._loaded_at = now

    def get_key(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        with self._lock:
            now = self._clock()
            try:
                if self._keys is None or now - self._loaded_at >= self._max_age:
                    self._reload(now)
                key = select_key(self._keys or (), kid, alg)
                if key is None and now - self._loaded_at >= self._cooldown:
                    self._reload(now)
                    key = select_key(self._keys or (), kid, alg)
            except (JwksUnavailable, BackstageError):
                raise  # e.g. StorageUnavailable: a 503, not a bad token
            except Exception as exc:  # the store failed: no keys, fail closed
                raise JwksUnavailable("local key store unavailable") from exc
            return key


class UnusableHeader(Exception):
    """The token's header names an algorithm, key id or ``crit`` we do not accept."""


def decode_with_key_set(
    token: PeekedToken,
    key_set: KeySet,
    algorithms: t.Sequence[str],
) -> t.Mapping[str, t.Any]:
    """Verify ``token``'s signature with the key its header names; return its claims.

    The algorithm is pinned to ``algorithms`` and the key comes only from
    ``key_set`` (``jku``, ``jwk``, ``x5u`` and ``x5c`` are never used). No
    claim is checked but the types of ``sub`` and ``jti`` (see
    :func:`~flask_backstage_auth.auth.jose.verify_jwt`).

    :raises UnusableHeader: a refused ``alg``, a non-string ``kid``, or ``crit``.
    :raises LookupError: the key set has no such key.
    :raises JwksUnavailable: no key set could be had.
    :raises jwt.PyJWTError: the signature or the token is bad.
    """
    header = token.header
    if header is None:
        raise token.error("Invalid token")
    alg = header.get("alg")
    kid = header.get("kid")
    if alg not in algorithms or (kid is not None and not isinstance(kid, str)) or "crit" in header:
        raise UnusableHeader("header")
    key = key_set.get_key(kid, t.cast(str, alg))
    if key is None:
        raise LookupError("no key for the token's kid")
    return verify_jwt(token, key, (t.cast(str, alg),))
