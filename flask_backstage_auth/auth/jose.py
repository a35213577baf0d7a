"""The PyJWT objects every token kind signs and verifies with.

HMAC keys: PyJWT warns about keys under 32 bytes. Backstage's own recipe makes
24-byte secrets and operators share them with Backstage, so we enforce our own
floor of 16 bytes at configuration time (:mod:`flask_backstage_auth.legacy.secrets`)
and use a PyJWS whose HS256 does not warn.
"""

from __future__ import annotations

import json
import typing as t

import jwt
from jwt.algorithms import HMACAlgorithm


class _HMACWithConfiguredFloor(HMACAlgorithm):
    def check_key_length(self, key: bytes) -> str | None:
        return None


def _hs256_jws() -> jwt.PyJWS:
    jws = jwt.PyJWS(algorithms=["HS256"])
    jws.unregister_algorithm("HS256")
    jws.register_algorithm("HS256", _HMACWithConfiguredFloor(HMACAlgorithm.SHA256))
    return jws


_HS256 = _hs256_jws()


def encode_hs256(claims: t.Mapping[str, t.Any], key: bytes) -> str:
    """Sign ``claims`` with HS256 and a protected header of ``{"alg":"HS256"}`` only."""
    payload = json.dumps(dict(claims), separators=(",", ":")).encode()
    return _HS256.encode(payload, key, algorithm="HS256", headers={"typ": None})


def decode_hs256(token: str, key: bytes) -> tuple[dict[str, t.Any], dict[str, t.Any]]:
    """Verify an HS256 signature; return the header and the claims (none checked).

    :raises jwt.InvalidAlgorithmError: the header's ``alg`` is not HS256.
    :raises jwt.InvalidSignatureError: the key did not make the signature.
    :raises jwt.DecodeError: the token or its payload is malformed.
    """
    decoded = _HS256.decode_complete(token, key, algorithms=["HS256"])
    try:
        claims = json.loads(decoded["payload"])
    except ValueError as exc:
        raise jwt.DecodeError("Invalid payload string") from exc
    if not isinstance(claims, dict):
        raise jwt.DecodeError("Invalid payload string: must be a json object")
    return decoded["header"], claims
