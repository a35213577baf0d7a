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

    A ``kid`` already loaded never waits for a reload; reloads run one at a time.

    :param load: returns the public JWKs (e.g. ``key_source.list_public_keys``).
    :param cooldown: the least seconds between two reloads for unknown kids.
    :param max_age: seconds after which the keys are reloaded; a token whose
        key is loaded does not wait for that: the reload runs in a thread of
        its own while the loaded keys keep verifying.
    :param max_stale: seconds loaded keys keep verifying while reloads fail
        (the store is down); after that, verification fails closed (503).
    """

    #: Seconds between two background reloads while they fail.
    RETRY = 5.0

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
        self._max_stale = max(max_stale, max_age)
        self._clock = clock
        self._lock = threading.Lock()  # one reload at a time
        # The keys and when they were loaded, replaced as one (read without the lock).
        self._loaded: tuple[list[jwt.PyJWK], float] | None = None
        self._next_refresh = 0.0  # no background reload before (guarded by _lock's holder)

    def _reload(self, now: float) -> list[jwt.PyJWK]:
        keys = []
        for jwk in self._load():
            try:
                keys.append(jwt.PyJWK(jwk))
            except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError):
                continue
        self._loaded = (keys, now)
        return keys

    def _within(self, now: float, age: float) -> list[jwt.PyJWK] | None:
        loaded = self._loaded
        if loaded is None or not 0 <= now - loaded[1] < age:
            return None
        return loaded[0]

    def _refresh_in_background(self, now: float) -> None:
        if now < self._next_refresh or not self._lock.acquire(blocking=False):
            return  # a reload is running, or the last one failed a moment ago
        self._next_refresh = now + self.RETRY

        def run() -> None:
            try:
                self._reload(self._clock())
            except Exception:  # noqa: BLE001 - the store logs its outage; the keys stay
                pass
            finally:
                self._lock.release()

        try:
            threading.Thread(target=run, name="local-key-set-refresh", daemon=True).start()
        except RuntimeError:  # no new threads at interpreter shutdown
            self._lock.release()

    def get_key(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        seen = self._loaded
        now = self._clock()
        keys = self._within(now, self._max_age)
        key = select_key(keys, kid, alg) if keys is not None else None
        if key is not None:
            return key
        if keys is None:
            stale = self._within(now, self._max_stale)
            key = select_key(stale, kid, alg) if stale is not None else None
            if key is not None:  # loaded, but due for a reload: not this request's wait
                self._refresh_in_background(now)
                return key
        with self._lock:
            now = self._clock()
            try:
                loaded = self._loaded
                keys = self._within(now, self._max_age)
                if keys is not None and loaded is not seen:
                    key = select_key(keys, kid, alg)  # reloaded while this call waited
                    if key is not None:
                        return key
                if keys is None:
                    keys = self._reload(now)
                elif loaded is not None and now - loaded[1] >= self._cooldown:
                    keys = self._reload(now)  # an unknown kid: perhaps a key just stored
                return select_key(keys, kid, alg)
            except (JwksUnavailable, BackstageError):
                raise  # e.g. StorageUnavailable: a 503, not a bad token
            except Exception as exc:  # the store failed: no keys, fail closed
                raise JwksUnavailable("local key store unavailable") from exc


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
