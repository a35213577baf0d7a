"""Plugin-to-plugin tokens (``vnd.backstage.plugin``), ES256, as in Backstage's new system.

A plugin signs a token for one target plugin (``aud``) with this app's key
source; the target verifies it with the **source** plugin's published keys
(``<source base URL>/.backstage/auth/v1/jwks.json``, found through
discovery), or directly with this app's key source when the source plugin is
one of its own.

A token's ``sub`` is not authenticated until its signature is checked, so
the key sets of plugins that only ``backend.baseUrl`` finds (any ``sub`` an
attacker writes) are bounded: their fetches share a :class:`FetchBudget`,
failed URLs are remembered for a cooldown in a bounded table, and good sets
live in a bounded cache. Plugins this app serves, or that
``discovery.endpoints`` names, are bounded by configuration instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import typing as t
from collections import OrderedDict
from dataclasses import dataclass

import jwt

from flask_backstage_auth.auth.claims import InvalidClaims, check_times
from flask_backstage_auth.auth.jose import PeekedToken, peek
from flask_backstage_auth.auth.jwks import (
    DEFAULT_FETCH_BUDGET,
    FetchBudget,
    JwksCache,
    JwksFetcher,
    JwksUnavailable,
    default_fetcher,
    forced_reloads,
)
from flask_backstage_auth.auth.key_sets import KeySet, UnusableHeader, decode_with_key_set
from flask_backstage_auth.auth.plugin.keys import KeySource
from flask_backstage_auth.auth.user.handler import (
    MAX_JWT_LENGTH,
    UserTokenHandler,
    VerifiedUserToken,
)
from flask_backstage_auth.clock import Clock
from flask_backstage_auth.discovery import HostDiscovery
from flask_backstage_auth.errors import AuthenticationError

logger = logging.getLogger(__name__)

PLUGIN_TYP = "vnd.backstage.plugin"
#: Lifetime of the tokens we issue, and the longest we accept.
PLUGIN_TOKEN_LIFETIME = 3600
JWKS_PATH = "/.backstage/auth/v1/jwks.json"
_PLUGIN_ID = re.compile(r"[a-z0-9_-]+", re.IGNORECASE)
#: Key sets kept for plugins that only ``backend.baseUrl`` finds.
KEY_SET_CACHE_SIZE = 100
#: Failed key-set URLs remembered (each for the JWKS cooldown).
FAILED_CACHE_SIZE = 1000


@dataclass(frozen=True)
class VerifiedPluginToken:
    """A plugin token: who sent it, for whom, and on whose behalf."""

    source_plugin_id: str
    audiences: tuple[str, ...]
    expires_at: float
    #: The user it acts for (its ``obo`` limited user token), if any.
    on_behalf_of: VerifiedUserToken | None = None
    obo_token: str | None = None


class _LazyKeySet:
    def __init__(self, resolve: t.Callable[[], KeySet]) -> None:
        self._resolve = resolve

    def get_key(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        return self._resolve().get_key(kid, alg)


class PluginTokenHandler:
    """Issues and verifies plugin tokens.

    :param key_source: this app's signing keys.
    :param discovery: finds other plugins' JWKS.
    :param local_plugins: the plugin ids this app serves (their keys are ours).
    :param user_tokens: verifies the ``obo`` claim.
    :param jwks_fetcher: fetches other plugins' key sets.
    :param fetch_budget: the fetches allowed for plugins that only
        ``backend.baseUrl`` finds (default: 5 a second).
    :param iat_leeway: seconds a token's ``iat`` may be in the future.
    """

    def __init__(
        self,
        key_source: KeySource,
        local_key_set: KeySet,
        *,
        discovery: HostDiscovery,
        local_plugins: t.Callable[[], t.Collection[str]],
        user_tokens: UserTokenHandler,
        clock: Clock,
        leeway: float = 0,
        iat_leeway: float = 0,
        max_lifetime_leeway: float = 60,
        jwks_cooldown: float = 30,
        jwks_fetcher: JwksFetcher | None = None,
        fetch_budget: FetchBudget | None = None,
    ) -> None:
        self.key_source = key_source
        self._local_key_set = local_key_set
        self._discovery = discovery
        self._local_plugins = local_plugins
        self._user_tokens = user_tokens
        self._clock = clock
        self._leeway = leeway
        self._iat_leeway = iat_leeway
        self._max_lifetime_leeway = max_lifetime_leeway
        self._jwks_cooldown = jwks_cooldown
        self._fetcher = jwks_fetcher or default_fetcher()
        self._budget = fetch_budget or FetchBudget(DEFAULT_FETCH_BUDGET, clock=clock)
        self._lock = threading.Lock()
        # discovery.endpoints plugins: as many as the configuration names.
        self._configured: dict[str, JwksCache] = {}
        # backend.baseUrl plugins: good sets (least recently used first),
        # fetches not yet settled, and failures by URL digest (with when).
        self._cached: OrderedDict[str, JwksCache] = OrderedDict()
        self._pending: dict[str, JwksCache] = {}
        self._failed: OrderedDict[bytes, float] = OrderedDict()

    # -- issuing ---------------------------------------------------------

    def issue_token(
        self,
        *,
        plugin_id: str,
        target_plugin_id: str,
        obo_token: str | None = None,
        obo_expires_at: float | None = None,
    ) -> str:
        """A token from ``plugin_id`` for ``target_plugin_id``, valid one hour
        (or until the user's limited token expires)."""
        key = self.key_source.get_signing_key()
        iat = int(self._clock())
        exp = iat + PLUGIN_TOKEN_LIFETIME
        claims: dict[str, t.Any] = {"sub": plugin_id, "aud": target_plugin_id, "iat": iat}
        if obo_token is not None:
            if obo_expires_at is not None:
                exp = min(exp, int(obo_expires_at))
            claims["exp"] = exp
            claims["obo"] = obo_token
        else:
            claims["exp"] = exp
        return jwt.encode(
            claims,
            key.private_key,
            algorithm=key.algorithm,
            headers={"typ": PLUGIN_TYP, "kid": key.kid},
        )

    # -- verifying -------------------------------------------------------

    def _key_set_for(self, plugin_id: str) -> KeySet:
        if plugin_id in self._local_plugins():
            return self._local_key_set
        url = self._discovery.get_base_url(plugin_id) + JWKS_PATH
        if self._discovery.has_endpoint(plugin_id):
            with self._lock:
                cache = self._configured.get(url)
                if cache is None:
                    cache = self._configured[url] = self._new_cache(url)
            return cache
        # Resolved only when the key is asked for: after the header's checks.
        return _LazyKeySet(lambda: self._base_url_key_set(url))

    def _new_cache(self, url: str, budget: FetchBudget | None = None) -> JwksCache:
        return JwksCache(
            url,
            fetcher=self._fetcher,
            cooldown=self._jwks_cooldown,
            clock=self._clock,
            budget=budget,
            forced=forced_reloads(self._clock),
            on_settled=self._settled if budget is not None else None,
        )

    def _base_url_key_set(self, url: str) -> KeySet:
        """The key set at ``url`` when only ``backend.baseUrl`` led there: any
        ``sub`` does, so new URLs cost budget and failures are remembered."""
        digest = hashlib.sha256(url.encode()).digest()
        with self._lock:
            cache = self._cached.get(url)
            if cache is not None:
                self._cached.move_to_end(url)
                return cache
            cache = self._pending.get(url)
            if cache is not None:
                return cache
            failed_at = self._failed.get(digest)
            if failed_at is not None and 0 <= self._clock() - failed_at < self._jwks_cooldown:
                raise JwksUnavailable("fetched and failed recently")
            cache = self._new_cache(url, self._budget)
            if not cache.start_fetch():
                raise JwksUnavailable("no fetch left in the budget")
            self._pending[url] = cache
            return cache

    def _settled(self, cache: JwksCache) -> None:
        """A fetch for a ``backend.baseUrl`` plugin ended: keep its set, or its failure."""
        with self._lock:
            if self._pending.get(cache.url) is not cache:
                return  # a refresh of a set already kept (or dropped)
            del self._pending[cache.url]
            if cache.has_keys:
                self._cached[cache.url] = cache
                while len(self._cached) > KEY_SET_CACHE_SIZE:
                    self._cached.popitem(last=False)
            else:
                digest = hashlib.sha256(cache.url.encode()).digest()
                self._failed.pop(digest, None)
                self._failed[digest] = self._clock()
                while len(self._failed) > FAILED_CACHE_SIZE:
                    self._failed.popitem(last=False)

    def verify(self, token: PeekedToken) -> VerifiedPluginToken | None:
        """The verified plugin token; ``None`` when it is not a plugin token.

        :raises AuthenticationError: a plugin token that does not verify.
        """
        header, payload = token.header, token.payload
        if header is None or payload is None or len(token.token) > MAX_JWT_LENGTH:
            return None
        if header.get("typ") != PLUGIN_TYP:
            return None
        sub = payload.get("sub")
        if not isinstance(sub, str) or not _PLUGIN_ID.fullmatch(sub):
            raise AuthenticationError("Invalid plugin token: forbidden subject format")
        try:
            claims = self._verify_signature(token, self._key_set_for(sub))
        except JwksUnavailable:
            raise AuthenticationError(
                f"Received a plugin token where the source '{sub}' plugin unexpectedly does"
                " not have a JWKS endpoint. The target plugin needs to be migrated to be"
                " installed in an app using the new backend system."
            ) from None
        except (jwt.PyJWTError, InvalidClaims, UnusableHeader, LookupError) as exc:
            logger.info("Failed to verify incoming plugin token: %s", type(exc).__name__)
            raise AuthenticationError("Failed plugin token verification") from None
        aud = claims["aud"]
        audiences = tuple(
            a for a in (aud if isinstance(aud, list) else [aud]) if isinstance(a, str)
        )
        obo = claims.get("obo")
        if obo is None:
            return VerifiedPluginToken(sub, audiences, float(claims["exp"]))
        try:
            user = self._user_tokens.verify(peek(obo)) if isinstance(obo, str) else None
        except AuthenticationError:
            user = None
        if user is None:
            raise AuthenticationError("Invalid user token in plugin token obo claim")
        return VerifiedPluginToken(sub, audiences, float(claims["exp"]), user, obo)

    def _verify_signature(self, token: PeekedToken, key_set: KeySet) -> t.Mapping[str, t.Any]:
        claims = decode_with_key_set(token, key_set, ("ES256",))
        for claim in ("iat", "exp", "sub", "aud"):
            if claim not in claims:
                raise InvalidClaims(f"missing {claim}")
        check_times(
            claims,
            now=self._clock(),
            leeway=self._leeway,
            require_exp=True,
            require_iat=True,
            max_lifetime=PLUGIN_TOKEN_LIFETIME,
            # a token from a clock ahead within the iat leeway is accepted whole
            max_lifetime_leeway=max(self._max_lifetime_leeway, self._iat_leeway),
            reject_future_iat=True,
            iat_leeway=self._iat_leeway,
        )
        return claims
