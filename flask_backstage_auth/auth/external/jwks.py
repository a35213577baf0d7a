"""``externalAccess`` entries of type ``jwks``: tokens from an outside issuer."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import jwt

from flask_backstage_auth.auth.claims import InvalidClaims, check_times
from flask_backstage_auth.auth.external.types import ExternalTokenHandler, ExternalTokenResult
from flask_backstage_auth.auth.jose import PeekedToken, peek
from flask_backstage_auth.auth.jwks import (
    ASYMMETRIC_ALGORITHMS,
    JwksCache,
    JwksFetcher,
    JwksUnavailable,
)
from flask_backstage_auth.auth.key_sets import UnusableHeader, decode_with_key_set
from flask_backstage_auth.clock import Clock
from flask_backstage_auth.config.reader import ConfigReader
from flask_backstage_auth.errors import ConfigError
from flask_backstage_auth.legacy.tokens import MAX_TOKEN_LENGTH

_NON_SPACE = re.compile(r"\S+")
_SPLIT = re.compile(r"[\s,]+")


def _string_list(options: ConfigReader, key: str) -> tuple[str, ...] | None:
    """A string or list of strings, split on spaces/commas and deduplicated."""
    value = options.get(key)
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{options.path(key)} must be a string or a list of strings")
    seen: dict[str, None] = {}
    for item in items:
        for part in _SPLIT.split(item):
            if part:
                seen[part] = None
    return tuple(seen) or None


class JwksContext:
    def __init__(
        self,
        cache: JwksCache,
        algorithms: tuple[str, ...] | None,
        issuers: tuple[str, ...] | None,
        audiences: tuple[str, ...] | None,
        subject_prefix: str | None,
        clock: Clock,
        leeway: float,
    ) -> None:
        self.cache = cache
        self.algorithms = algorithms
        self.issuers = issuers
        self.audiences = audiences
        self.subject_prefix = subject_prefix
        self.clock = clock
        self.leeway = leeway


def jwks_token_handler(
    *,
    clock: Clock,
    leeway: float = 0,
    timeout: float = 5,
    cooldown: float = 30,
    fetcher: JwksFetcher | None = None,
) -> ExternalTokenHandler[JwksContext]:
    """The ``jwks`` handler, with the extension's clock and fetch settings.

    :param fetcher: fetches every entry's key set (default: one with ``timeout``).
    """
    jwks_fetcher = fetcher or JwksFetcher(timeout=timeout)

    def initialize(options: ConfigReader) -> JwksContext:
        url = options.get_string("url")
        if not _NON_SPACE.fullmatch(url):
            raise ConfigError(
                "Illegal JWKS URL, must be a set of non-space characters"
                f" (at {options.path('url')})"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"Illegal JWKS URL, must be an http(s) URL (at {options.path('url')})"
            )
        algorithms = _string_list(options, "algorithm")
        if algorithms:
            unsupported = [a for a in algorithms if a not in ASYMMETRIC_ALGORITHMS]
            if unsupported:
                raise ConfigError(
                    f"Unsupported algorithm '{unsupported[0]}' at {options.path('algorithm')};"
                    " JWKS tokens must use an asymmetric algorithm"
                )
        prefix = options.get_optional_string("subjectPrefix")
        return JwksContext(
            JwksCache(url, fetcher=jwks_fetcher, cooldown=cooldown, clock=clock),
            algorithms,
            _string_list(options, "issuer"),
            _string_list(options, "audience"),
            prefix,
            clock,
            leeway,
        )

    def verify_peeked(token: PeekedToken, context: JwksContext) -> ExternalTokenResult | None:
        header = token.header
        if header is None or token.payload is None or len(token.token) > MAX_TOKEN_LENGTH:
            return None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS or "crit" in header:
            return None
        typ = header.get("typ")
        if isinstance(typ, str) and typ.startswith("vnd.backstage."):
            # Backstage's own user and plugin tokens are never external callers,
            # even when a jwks entry points at Backstage's key set.
            return None
        allowed = context.algorithms if context.algorithms is not None else (alg,)
        try:
            claims = decode_with_key_set(token, context.cache, allowed)
            check_times(claims, now=context.clock(), leeway=context.leeway, require_exp=True)
        except (jwt.PyJWTError, InvalidClaims, UnusableHeader, LookupError, JwksUnavailable):
            return None
        if context.issuers is not None and claims.get("iss") not in context.issuers:
            return None
        if context.audiences is not None:
            aud = claims.get("aud")
            values = aud if isinstance(aud, list) else [aud]
            if not any(isinstance(v, str) and v in context.audiences for v in values):
                return None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            return None
        subject = (
            f"external:{context.subject_prefix}:{sub}"
            if context.subject_prefix
            else f"external:{sub}"
        )
        return ExternalTokenResult(subject=subject, expires_at=claims["exp"], claims=claims)

    def verify(token: str, context: JwksContext) -> ExternalTokenResult | None:
        return verify_peeked(peek(token), context) if isinstance(token, str) else None

    return ExternalTokenHandler(
        type="jwks", initialize=initialize, verify_token=verify, verify_peeked=verify_peeked
    )
