"""Plugin-to-plugin tokens (``vnd.backstage.plugin``), ES256, as in Backstage's new system.

A plugin signs a token for one target plugin (``aud``) with this app's key
source; the target verifies it with the **source** plugin's published keys
(``<source base URL>/.backstage/auth/v1/jwks.json``, found through
discovery), or directly with this app's key source when the source plugin is
one of its own.
"""

from __future__ import annotations

import logging
import re
import typing as t
from dataclasses import dataclass

import jwt

from ..clock import Clock
from ..discovery import HostDiscovery
from ..errors import AuthenticationError
from .claims import InvalidClaims, check_times
from .jwks import JwksCache, JwksUnavailable
from .key_sets import KeySet, UnusableHeader, decode_with_key_set
from .keys import KeySource
from .user import UserTokenHandler, VerifiedUserToken, unverified_parts

logger = logging.getLogger(__name__)

PLUGIN_TYP = "vnd.backstage.plugin"
#: Lifetime of the tokens we issue, and the longest we accept.
PLUGIN_TOKEN_LIFETIME = 3600
JWKS_PATH = "/.backstage/auth/v1/jwks.json"
_PLUGIN_ID = re.compile(r"[a-z0-9_-]+", re.IGNORECASE)


@dataclass(frozen=True)
class VerifiedPluginToken:
    """A plugin token: who sent it, for whom, and on whose behalf."""

    source_plugin_id: str
    audiences: tuple[str, ...]
    expires_at: float
    #: The user it acts for (its ``obo`` limited user token), if any.
    on_behalf_of: VerifiedUserToken | None = None
    obo_token: str | None = None


class PluginTokenHandler:
    """Issues and verifies plugin tokens.

    :param key_source: this app's signing keys.
    :param discovery: finds other plugins' JWKS.
    :param local_plugins: the plugin ids this app serves (their keys are ours).
    :param user_tokens: verifies the ``obo`` claim.
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
        max_lifetime_leeway: float = 60,
        jwks_timeout: float = 5,
        jwks_cooldown: float = 30,
    ) -> None:
        self.key_source = key_source
        self._local_key_set = local_key_set
        self._discovery = discovery
        self._local_plugins = local_plugins
        self._user_tokens = user_tokens
        self._clock = clock
        self._leeway = leeway
        self._max_lifetime_leeway = max_lifetime_leeway
        self._jwks_timeout = jwks_timeout
        self._jwks_cooldown = jwks_cooldown
        self._remote: dict[str, JwksCache] = {}

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
        cache = self._remote.get(url)
        if cache is None:
            cache = self._remote[url] = JwksCache(
                url, timeout=self._jwks_timeout, cooldown=self._jwks_cooldown, clock=self._clock
            )
        return cache

    def verify(self, token: str) -> VerifiedPluginToken | None:
        """The verified plugin token; ``None`` when it is not a plugin token.

        :raises AuthenticationError: a plugin token that does not verify.
        """
        parts = unverified_parts(token)
        if parts is None:
            return None
        header, payload = parts
        if header.get("typ") != PLUGIN_TYP:
            return None
        sub = payload.get("sub")
        if not isinstance(sub, str) or not _PLUGIN_ID.fullmatch(sub):
            raise AuthenticationError("Invalid plugin token: forbidden subject format")
        try:
            claims = self._verify_signature(token, header, self._key_set_for(sub))
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
            user = self._user_tokens.verify(obo) if isinstance(obo, str) else None
        except AuthenticationError:
            user = None
        if user is None:
            raise AuthenticationError("Invalid user token in plugin token obo claim")
        return VerifiedPluginToken(sub, audiences, float(claims["exp"]), user, obo)

    def _verify_signature(
        self, token: str, header: t.Mapping[str, t.Any], key_set: KeySet
    ) -> dict[str, t.Any]:
        claims = decode_with_key_set(token, header, key_set, ("ES256",))
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
            max_lifetime_leeway=self._max_lifetime_leeway,
        )
        return claims
