"""Remote JSON Web Key Sets: fetched, cached, refreshed with restraint.

Parsing is PyJWT's (:class:`jwt.PyJWKSet`). The cache keeps the last good set
when a fetch fails, refetches on an unknown ``kid`` at most once per cooldown
(so forged ``kid`` values cannot cause a fetch storm), and never uses a URL or
key carried inside a token (``jku``, ``jwk``, ``x5u``, ``x5c`` are ignored).
"""

from __future__ import annotations

import logging
import threading
import typing as t

import jwt
import requests

from ..clock import Clock, system_clock

logger = logging.getLogger(__name__)

#: Asymmetric algorithms a JWKS key may verify; HMAC and ``none`` never.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def select_key(keys: t.Sequence[jwt.PyJWK], kid: str | None, alg: str) -> jwt.PyJWK | None:
    """The one key matching ``kid`` (when given) and ``alg``; ``None`` unless exactly one."""
    candidates = [
        key for key in keys if key.algorithm_name == alg and (kid is None or key.key_id == kid)
    ]
    return candidates[0] if len(candidates) == 1 else None


class JwksUnavailable(Exception):
    """No key set could be had from the endpoint."""


class JwksCache:
    """The keys served at one URL.

    :param url: the http(s) URL of the key set.
    :param timeout: seconds for one fetch.
    :param cooldown: the least seconds between two fetches triggered by an
        unknown ``kid``.
    :param max_age: seconds after which the set is fetched again.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5,
        cooldown: float = 30,
        max_age: float = 600,
        clock: Clock = system_clock,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.cooldown = cooldown
        self.max_age = max_age
        self._clock = clock
        self._session = session or requests.Session()
        self._lock = threading.Lock()
        self._keys: list[jwt.PyJWK] | None = None
        self._fetched_at: float | None = None  # last good fetch
        self._attempted_at: float | None = None  # last attempt, good or bad

    def _fetch(self) -> list[jwt.PyJWK]:
        # No redirects: keys come from the configured URL and nowhere else.
        response = self._session.get(self.url, timeout=self.timeout, allow_redirects=False)
        if response.status_code != 200:
            raise JwksUnavailable(f"Failed to fetch jwks.json, {response.status_code}")
        try:
            data = response.json()
        except ValueError as exc:
            raise JwksUnavailable("Invalid jwks.json response, not JSON") from exc
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise JwksUnavailable("Invalid jwks.json response, missing keys")
        usable = []
        for entry in data["keys"]:
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError):
                continue  # a key we cannot use is skipped, as jose does
            if key.algorithm_name in ASYMMETRIC_ALGORITHMS:
                usable.append(key)
        return usable

    def _refresh(self, now: float) -> None:
        self._attempted_at = now
        try:
            self._keys = self._fetch()
            self._fetched_at = now
        except (requests.RequestException, JwksUnavailable) as exc:
            logger.warning("Could not fetch the key set at %s: %s", self.url, type(exc).__name__)

    def get_key(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """The key for ``kid`` and ``alg``; ``None`` when the set has no such key.

        :raises JwksUnavailable: no key set has ever been fetched.
        """
        with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self.max_age
            refreshed = False
            if stale and self._cooled_down(now):
                self._refresh(now)
                refreshed = True
            key = self._select(kid, alg)
            # An unknown kid may trigger one fetch, never a second in the same call.
            if key is None and not refreshed and self._keys is not None and self._cooled_down(now):
                self._refresh(now)
                key = self._select(kid, alg)
            if self._keys is None:
                raise JwksUnavailable(f"No key set available from {self.url}")
            return key

    def _cooled_down(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.cooldown

    def _select(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        return select_key(self._keys or (), kid, alg)
