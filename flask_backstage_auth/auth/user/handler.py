"""Backstage user tokens (``vnd.backstage.user``) and limited user tokens.

Issued by an auth backend (Backstage's, or :mod:`flask_backstage_auth.auth_backend.extension`),
ES256-signed, verified with the auth backend's key set. A limited user token
carries only ``sub``, ``iat`` and ``exp``; its signature is the full token's
``uip`` claim, so it verifies with the same key (reference §3.6).
"""

from __future__ import annotations

import base64
import json
import logging
import typing as t
from dataclasses import dataclass

import jwt

from flask_backstage_auth.auth.claims import InvalidClaims, check_times
from flask_backstage_auth.auth.jose import PeekedToken, peek
from flask_backstage_auth.auth.jwks import JwksUnavailable
from flask_backstage_auth.auth.key_sets import KeySet, UnusableHeader, decode_with_key_set
from flask_backstage_auth.errors import AuthenticationError

logger = logging.getLogger(__name__)

USER_TYP = "vnd.backstage.user"
LIMITED_USER_TYP = "vnd.backstage.limited-user"
USER_AUDIENCE = "backstage"
#: Backstage refuses user tokens longer than this (they carry ownership refs).
MAX_JWT_LENGTH = 32_768
#: Backstage clamps user token lifetimes to 24 hours; we refuse longer ones.
MAX_USER_TOKEN_LIFETIME = 86_400


@dataclass(frozen=True)
class VerifiedUserToken:
    user_entity_ref: str
    expires_at: float
    limited: bool


def _b64url_json(value: t.Mapping[str, t.Any]) -> str:
    raw = json.dumps(dict(value), separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unverified_parts(token: str) -> tuple[t.Mapping[str, t.Any], t.Mapping[str, t.Any]] | None:
    """Header and payload of a compact JWS, unverified; ``None`` if malformed."""
    if not isinstance(token, str) or len(token) > MAX_JWT_LENGTH:
        return None
    peeked = peek(token)
    if peeked.header is None or peeked.payload is None:
        return None
    return peeked.header, peeked.payload


class UserTokenHandler:
    """Verifies user tokens with the auth backend's keys.

    :param key_set: the auth backend's public keys (see :meth:`use_key_set`).
    :param leeway: seconds of clock skew on ``exp`` and ``nbf``.
    :param iat_leeway: seconds the issuer's clock may be ahead: how far ``iat``
        may be in the future, and ``exp`` beyond the 24-hour cap.
    """

    def __init__(
        self,
        key_set: KeySet,
        *,
        clock: t.Callable[[], float],
        leeway: float = 0,
        iat_leeway: float = 0,
    ) -> None:
        self.key_set = key_set
        self._clock = clock
        self._leeway = leeway
        self._iat_leeway = iat_leeway

    def use_key_set(self, key_set: KeySet) -> None:
        """Verify user tokens with ``key_set`` from now on (an auth backend in this app)."""
        self.key_set = key_set

    def verify(self, token: PeekedToken) -> VerifiedUserToken | None:
        """The user of ``token``; ``None`` when it is not a user token.

        :raises AuthenticationError: a user token that does not verify.
        """
        header, payload = token.header, token.payload
        if header is None or payload is None or len(token.token) > MAX_JWT_LENGTH:
            return None
        typ = header.get("typ")
        if typ == USER_TYP or typ == LIMITED_USER_TYP:
            legacy = False
        elif typ is None and payload.get("aud") == USER_AUDIENCE:
            legacy = True  # a user token from before tokens had a typ
        else:
            return None
        try:
            claims = decode_with_key_set(token, self.key_set, ("ES256",))
            if legacy and claims.get("aud") != USER_AUDIENCE:
                raise InvalidClaims("aud")
            check_times(
                claims,
                now=self._clock(),
                leeway=self._leeway,
                require_exp=True,
                require_iat=not legacy,
                max_lifetime=MAX_USER_TOKEN_LIFETIME,
                max_lifetime_leeway=self._iat_leeway,
                reject_future_iat=True,
                iat_leeway=self._iat_leeway,
            )
        except (jwt.PyJWTError, InvalidClaims, UnusableHeader, JwksUnavailable, LookupError) as exc:
            logger.info("Failed user token verification: %s", type(exc).__name__)
            raise AuthenticationError("Failed user token verification") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthenticationError("No user sub found in token")
        return VerifiedUserToken(sub, float(claims["exp"]), typ == LIMITED_USER_TYP)


def create_limited_user_token(full_token: str) -> tuple[str, float]:
    """The limited form of a user token, and its expiry, byte for byte as Backstage.

    A limited token is returned as it is. A full token is never handed out in
    place of its limited form: without ``uip`` there is none (as Backstage),
    and a user token from before tokens had a ``typ`` has none either
    (Backstage returns the full token; we refuse).

    :raises AuthenticationError: not a user token, or one without a limited form.
    """
    parts = unverified_parts(full_token)
    if parts is None:
        raise AuthenticationError("Failed to create limited user token, invalid token type")
    header, payload = parts
    exp = payload.get("exp")
    expires_at = float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else 0
    typ = header.get("typ")
    if typ == LIMITED_USER_TYP:
        return full_token, expires_at
    if typ != USER_TYP:
        raise AuthenticationError("Failed to create limited user token, invalid token type")
    uip = payload.get("uip")
    if not isinstance(uip, str) or not uip:
        raise AuthenticationError(
            "Failed to create limited user token, missing user identity proof"
        )
    limited_header: dict[str, t.Any] = {"typ": LIMITED_USER_TYP, "alg": header.get("alg")}
    if header.get("kid") is not None:
        limited_header["kid"] = header["kid"]
    limited_payload = {"sub": payload.get("sub"), "iat": payload.get("iat"), "exp": exp}
    token = f"{_b64url_json(limited_header)}.{_b64url_json(limited_payload)}.{uip}"
    return token, expires_at


def limited_signing_input(header: t.Mapping[str, t.Any], claims: t.Mapping[str, t.Any]) -> bytes:
    """The bytes an issuer signs to make ``uip`` (the limited token's first two parts)."""
    limited_header: dict[str, t.Any] = {"typ": LIMITED_USER_TYP, "alg": header["alg"]}
    if header.get("kid") is not None:
        limited_header["kid"] = header["kid"]
    limited_payload = {"sub": claims["sub"], "iat": claims["iat"], "exp": claims["exp"]}
    return f"{_b64url_json(limited_header)}.{_b64url_json(limited_payload)}".encode("ascii")
