"""Legacy service-to-service tokens: HS256 JWTs with ``sub: backstage-server``.

Both :class:`~flask_backstage_auth.legacy.token_manager.ServerTokenManager` and the
``externalAccess`` ``legacy`` handler verify through :func:`verify_peeked_legacy_token`:
the token is split once (:func:`~flask_backstage_auth.auth.jose.peek`), and each
key checks the signature of those parts, never parsing the token again.
"""

from __future__ import annotations

import typing as t

import jwt

from flask_backstage_auth.auth.claims import InvalidClaims, check_times
from flask_backstage_auth.auth.jose import COMPACT_JWS, HmacKeys, PeekedToken, encode_hs256, peek

ALGORITHM = "HS256"
SUBJECT = "backstage-server"
#: Lifetime of a token we mint, and the most we accept at verification.
TOKEN_LIFETIME = 3600

#: Longer strings are refused before any parsing.
MAX_TOKEN_LENGTH = 8 * 1024

#: ``typ`` values of other Backstage token kinds: never a legacy token.
OTHER_BACKSTAGE_TYPES = frozenset(
    {"vnd.backstage.user", "vnd.backstage.limited-user", "vnd.backstage.plugin"}
)


class InvalidToken(Exception):
    """The token is not a valid legacy token; the message says why."""


class SignatureMismatch(InvalidToken):
    """The token is well formed but no key produced its signature."""


def is_compact_jws(token: object, max_length: int = MAX_TOKEN_LENGTH) -> bool:
    """A string that is three non-empty base64url segments, within size."""
    return (
        isinstance(token, str)
        and len(token) <= max_length
        and COMPACT_JWS.fullmatch(token) is not None
    )


def looks_like_legacy_token(token: PeekedToken | str) -> bool:
    """Backstage's duck-type test for the ``legacy`` external handler.

    HS256 header, ``sub == "backstage-server"``, no ``aud``. Nothing is verified.
    """
    peeked = token if isinstance(token, PeekedToken) else peek(token)
    header, payload = peeked.header, peeked.payload
    return (
        header is not None
        and payload is not None
        and len(peeked.token) <= MAX_TOKEN_LENGTH
        and header.get("alg") == ALGORITHM
        and payload.get("sub") == SUBJECT
        and "aud" not in payload
    )


def _peek_legacy(token: object) -> PeekedToken:
    if not isinstance(token, str):
        raise InvalidToken("token must be a string")
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("token is too long")
    peeked = peek(token)
    if not peeked.compact:
        raise InvalidToken("token is not a compact JWS")
    return peeked


def verify_legacy_token(
    token: object,
    keys: t.Sequence[bytes],
    *,
    now: float,
    leeway: float = 0,
    max_lifetime_leeway: float = 60,
) -> dict[str, t.Any]:
    """Verify a legacy token against each key in order; return its claims.

    Checks: compact JWS, header ``alg`` exactly HS256 and no other Backstage
    ``typ``, no ``crit``, an HMAC-SHA256 signature from one of ``keys``,
    ``sub == "backstage-server"``, no ``aud``, a numeric ``exp`` in the future
    and at most an hour (plus ``max_lifetime_leeway``) ahead, numeric
    ``nbf``/``iat`` when present.

    :raises SignatureMismatch: no key verified the signature.
    :raises InvalidToken: anything else is wrong; the message says what.
    """
    return verify_peeked_legacy_token(
        _peek_legacy(token),
        HmacKeys(keys),
        now=now,
        leeway=leeway,
        max_lifetime_leeway=max_lifetime_leeway,
    )


def verify_peeked_legacy_token(
    token: PeekedToken,
    keys: HmacKeys,
    *,
    now: float,
    leeway: float = 0,
    max_lifetime_leeway: float = 60,
) -> dict[str, t.Any]:
    """:func:`verify_legacy_token` for a token already split, whose size and
    shape were checked; the signature is checked once per key, the token is
    never parsed again."""
    if not keys:
        raise SignatureMismatch("no verification keys are configured")
    header = token.header
    if header is None:
        raise InvalidToken(f"malformed token ({token.error.__name__})")
    if header.get("alg") != ALGORITHM:
        raise InvalidToken(f"illegal alg, expected {ALGORITHM}")
    try:
        signed = keys.signed(token)
    except jwt.InvalidKeyError as exc:
        raise InvalidToken(f"malformed token ({type(exc).__name__})") from exc
    if not signed:
        raise SignatureMismatch("signature verification failed")
    if token.payload is None:
        raise InvalidToken("malformed token (DecodeError)")
    claims = dict(token.payload)
    # alg is HS256 already; the rest of the header is ours to check.
    if header.get("typ") in OTHER_BACKSTAGE_TYPES:
        raise InvalidToken("token type is not a service-to-service token")
    if "crit" in header or "b64" in header:
        raise InvalidToken("unsupported critical header parameter")
    if claims.get("sub") != SUBJECT:
        raise InvalidToken(f'illegal sub, expected "{SUBJECT}"')
    if "aud" in claims:
        raise InvalidToken("a service-to-service token carries no aud claim")
    try:
        check_times(
            claims,
            now=now,
            leeway=leeway,
            require_exp=True,
            max_lifetime=TOKEN_LIFETIME,
            max_lifetime_leeway=max_lifetime_leeway,
        )
    except InvalidClaims as exc:
        raise InvalidToken(str(exc)) from exc
    return claims


def mint_legacy_token(key: bytes, *, now: float) -> str:
    """A token exactly as Backstage mints it: header ``{"alg":"HS256"}``."""
    payload = {"sub": SUBJECT, "exp": int(now) + TOKEN_LIFETIME}
    return encode_hs256(payload, key)


class LegacyTokenContext:
    """Keys for ``legacy`` external access, and the subject they grant."""

    def __init__(
        self,
        keys: t.Sequence[bytes],
        subject: str,
        clock: t.Callable[[], float],
        leeway: float = 0,
        max_lifetime_leeway: float = 60,
    ) -> None:
        self.keys = tuple(keys)
        #: The keys, prepared once for every verification.
        self.hmac_keys = HmacKeys(self.keys)
        self.subject = subject
        self.clock = clock
        self.leeway = leeway
        self.max_lifetime_leeway = max_lifetime_leeway


def verify_external_legacy_token(
    token: PeekedToken | str, context: LegacyTokenContext
) -> dict[str, t.Any] | None:
    """Backstage's ``legacy`` external handler, failing closed.

    ``None`` when the token is not a legacy token or no key signed it (the next
    handler is tried). A legacy token signed with one of the keys but otherwise
    invalid (expired, no ``exp``...) raises :class:`InvalidToken`: Backstage
    answers 500 there, we answer 401, and we require ``exp``.
    """
    peeked = token if isinstance(token, PeekedToken) else peek(token)
    if not looks_like_legacy_token(peeked):
        return None
    try:
        return _verify_in_context(peeked, context)
    except SignatureMismatch:
        return None


def verify_in_context(token: object, context: LegacyTokenContext) -> dict[str, t.Any]:
    """:func:`verify_legacy_token` with the keys, clock and leeways of ``context``."""
    return _verify_in_context(_peek_legacy(token), context)


def _verify_in_context(token: PeekedToken, context: LegacyTokenContext) -> dict[str, t.Any]:
    return verify_peeked_legacy_token(
        token,
        context.hmac_keys,
        now=context.clock(),
        leeway=context.leeway,
        max_lifetime_leeway=context.max_lifetime_leeway,
    )
