"""A token split once, and the PyJWT objects every token kind signs and verifies with.

:func:`peek` splits and decodes a bearer token once, exactly as PyJWT loads a
compact JWS; every handler reads the same :class:`PeekedToken` to decide
whether the token is its kind. A handler then verifies the signature once,
on the parts already split, with PyJWT's own algorithm objects
(:func:`verify_jwt`, :class:`HmacKeys`): the algorithm is pinned by the
handler, and the checks are those of ``jwt.decode`` with every claim check
off (claims are checked by :mod:`flask_backstage_auth.auth.claims`).

HMAC keys: PyJWT warns about keys under 32 bytes. Backstage's own recipe makes
24-byte secrets and operators share them with Backstage, so we enforce our own
floor of 16 bytes at configuration time (:mod:`flask_backstage_auth.legacy.secrets`)
and use an HS256 whose key-length check does not warn.
"""

from __future__ import annotations

import base64
import json
import re
import typing as t
import warnings
from dataclasses import dataclass, field

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import InvalidJTIError, InvalidSubjectError
from jwt.warnings import InsecureKeyLengthWarning

# Compact JWS only: three non-empty base64url segments, nothing else.
COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class PeekedToken:
    """A bearer token, split and decoded once; nothing in it is verified.

    ``header`` is set when PyJWT would load the token as a compact JWS (three
    canonical base64url segments, a JSON object header with a string ``kid``
    and a ``crit`` PyJWT supports, ``b64`` not false); ``payload`` when the
    payload is a JSON object as well. Treat both as read-only: every handler
    reads the same ones.
    """

    token: str = field(repr=False)
    header: t.Mapping[str, t.Any] | None = None
    payload: t.Mapping[str, t.Any] | None = field(default=None, repr=False)
    #: The bytes the signature covers (``<header>.<payload>`` as sent).
    signing_input: bytes = field(default=b"", repr=False)
    signature: bytes = field(default=b"", repr=False)
    #: The token has the shape of a compact JWS (three base64url segments).
    compact: bool = False
    #: The PyJWT error that loading the token would raise, when ``header`` is ``None``.
    error: t.Type[jwt.PyJWTError] = jwt.DecodeError


def _b64url(segment: bytes) -> bytes:
    """A base64url segment without padding, decoded; only its canonical form decodes (as PyJWT)."""
    decoded = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != segment:
        raise ValueError("not canonical base64url")
    return decoded


def _valid_crit(header: t.Mapping[str, t.Any]) -> bool:
    # PyJWS._validate_crit: a non-empty list of supported extensions ("b64"), each present.
    crit = header["crit"]
    return (
        isinstance(crit, list)
        and len(crit) > 0
        and all(isinstance(ext, str) and ext == "b64" and ext in header for ext in crit)
    )


def peek(token: str) -> PeekedToken:
    """Split ``token`` once: its header, payload, signing input and signature, unverified."""
    if COMPACT_JWS.fullmatch(token) is None:
        return PeekedToken(token)
    signing_input, _, encoded_signature = token.encode("ascii").rpartition(b".")
    encoded_header, _, encoded_payload = signing_input.partition(b".")
    try:
        header = json.loads(_b64url(encoded_header))
        # b64=false needs an empty payload segment, which a compact JWS never has.
        if not isinstance(header, dict) or header.get("b64", True) is False:
            return PeekedToken(token, compact=True)
        raw_payload = _b64url(encoded_payload)
        signature = _b64url(encoded_signature)
    except (ValueError, RecursionError):  # binascii.Error and UnicodeDecodeError included
        return PeekedToken(token, compact=True)
    if ("kid" in header and not isinstance(header["kid"], str)) or (
        "crit" in header and not _valid_crit(header)
    ):
        return PeekedToken(token, compact=True, error=jwt.InvalidTokenError)
    try:
        payload = json.loads(raw_payload)
    except (ValueError, RecursionError):
        payload = None
    return PeekedToken(
        token,
        header,
        payload if isinstance(payload, dict) else None,
        signing_input,
        signature,
        compact=True,
    )


def verify_jwt(
    token: PeekedToken, key: jwt.PyJWK, algorithms: t.Sequence[str]
) -> t.Mapping[str, t.Any]:
    """Verify the signature of a peeked JWT with ``key``; return its claims (none checked).

    The checks of ``jwt.decode(token, key, algorithms, options=...)`` with the
    time, audience and issuer checks off: the header's ``alg`` is one of
    ``algorithms`` and the key's own, PyJWT's algorithm object verifies the
    signature, the payload is a JSON object, and ``sub`` and ``jti`` are
    strings when present.

    :raises jwt.PyJWTError: the token is malformed, or the signature is bad.
    """
    header = token.header
    if header is None:
        raise token.error("Invalid token")
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg or alg not in algorithms:
        raise jwt.InvalidAlgorithmError("The specified alg value is not allowed")
    if alg != key.algorithm_name:
        raise jwt.InvalidAlgorithmError("Token algorithm does not match the key's algorithm")
    algorithm = key.Algorithm
    prepared = algorithm.prepare_key(key.key)
    short_key = algorithm.check_key_length(prepared)
    if short_key:
        warnings.warn(short_key, InsecureKeyLengthWarning, stacklevel=2)
    if not algorithm.verify(token.signing_input, prepared, token.signature):
        raise jwt.InvalidSignatureError("Signature verification failed")
    claims = token.payload
    if claims is None:
        raise jwt.DecodeError("Invalid payload string: must be a json object")
    if "sub" in claims and not isinstance(claims["sub"], str):
        raise InvalidSubjectError("Subject must be a string")
    if "jti" in claims and not isinstance(claims["jti"], str):
        raise InvalidJTIError("JWT ID must be a string")
    return claims


class _HMACWithConfiguredFloor(HMACAlgorithm):
    def check_key_length(self, key: bytes) -> str | None:
        return None


_HS256_ALGORITHM = _HMACWithConfiguredFloor(HMACAlgorithm.SHA256)


def _hs256_jws() -> jwt.PyJWS:
    jws = jwt.PyJWS(algorithms=["HS256"])
    jws.unregister_algorithm("HS256")
    jws.register_algorithm("HS256", _HS256_ALGORITHM)
    return jws


_HS256 = _hs256_jws()


class HmacKeys:
    """HS256 keys, each prepared once by PyJWT, which refuses secrets shaped like
    asymmetric keys, certificates or JWKs; tried in order."""

    def __init__(self, keys: t.Sequence[bytes]) -> None:
        self.keys = tuple(keys)
        prepared: list[bytes | str] = []
        for key in self.keys:
            try:
                prepared.append(_HS256_ALGORITHM.prepare_key(key))
            except jwt.InvalidKeyError as exc:
                prepared.append(str(exc))  # refused when its turn comes, as PyJWT would
        self._prepared = tuple(prepared)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def signed(self, token: PeekedToken) -> bool:
        """Whether one of the keys made the HS256 signature of ``token``.

        The caller has checked that the header's ``alg`` is ``HS256``.

        :raises jwt.InvalidKeyError: a key tried before the one that signed is
            one PyJWT refuses as an HMAC secret.
        """
        for key in self._prepared:
            if isinstance(key, str):
                raise jwt.InvalidKeyError(key)
            if _HS256_ALGORITHM.verify(token.signing_input, key, token.signature):
                return True
        return False


def encode_hs256(claims: t.Mapping[str, t.Any], key: bytes) -> str:
    """Sign ``claims`` with HS256 and a protected header of ``{"alg":"HS256"}`` only."""
    payload = json.dumps(dict(claims), separators=(",", ":")).encode()
    return _HS256.encode(payload, key, algorithm="HS256", headers={"typ": None})
