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
    :param max_age: seconds after which the keys are reloaded; a token whose
        key is known does not wait for that: the reload runs in a thread of
        its own while the loaded keys keep verifying.
    :param max_stale: seconds loaded keys keep verifying while reloads fail
        (the store is down); after that, verification fails closed (503).

    No lock is held across ``load``: a request never waits for another's
    reload, only for its own when it needs keys this set does not have.
    """

    def __init__(
        self,
        load: t.Callable[[], t.Sequence[dict[str, t.Any]]],
        *,
        cooldown: float = 1,
        max_age: float = 60,
        max_stale: float = 3600,
        clock: Clock = system_clock,
    ) -> None:
        self._load = load
        self._cooldown = cooldown
        self._max_age = max_age
        self._max_stale = max_stale
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list[jwt.PyJWK] | None = None
        self._loaded_at = 0.0  # when the keys were last loaded (or found stale)
        self._fresh_at = 0.0  # when a load last succeeded
        self._refreshing = False

    def _reload(self, now: float) -> list[jwt.PyJWK]:
        keys = []
        for jwk in self._load():
            try:
                keys.append(jwt.PyJWK(jwk))
            except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError):
                continue
        with self._lock:
            self._keys = keys
            self._loaded_at = self._fresh_at = now
        return keys

    def _reload_or_raise(self, now: float) -> list[jwt.PyJWK]:
        try:
            return self._reload(now)
        except (JwksUnavailable, BackstageError):
            raise  # e.g. StorageUnavailable: a 503, not a bad token
        except Exception as exc:  # the store failed: no keys, fail closed
            raise JwksUnavailable("local key store unavailable") from exc

    def _refresh_in_background(self, now: float) -> None:
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True
            self._loaded_at = now  # the next refresh is max_age away, whatever happens

        def run() -> None:
            try:
                self._reload(now)
            except Exception:  # noqa: BLE001 - the store logs its outage; the keys stay
                pass
            finally:
                with self._lock:
                    self._refreshing = False

        threading.Thread(target=run, name="local-key-set-refresh", daemon=True).start()

    def get_key(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        now = self._clock()
        with self._lock:
            keys, loaded_at, fresh_at = self._keys, self._loaded_at, self._fresh_at
        if keys is None or now - fresh_at >= self._max_stale:
            keys = self._reload_or_raise(now)
            loaded_at = now
        elif now - loaded_at >= self._max_age:
            self._refresh_in_background(now)
        key = select_key(keys, kid, alg)
        if key is None and now - loaded_at >= self._cooldown:
            keys = self._reload_or_raise(now)
            key = select_key(keys, kid, alg)
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
