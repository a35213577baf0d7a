"""The access token format: an identifiable prefix, 256 random bits, a checksum.

``bsat_`` (service) or ``bspat_`` (personal), then 43 base62 characters of
randomness, then a 6-character base62 CRC32 of everything before it. Secret
scanners can recognise and verify the format offline, and :func:`parse`
rejects a mistyped or invented token without touching the database.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import typing as t
import zlib
from dataclasses import dataclass

TokenKind = t.Literal["service", "personal"]

PREFIXES: dict[str, TokenKind] = {"bsat_": "service", "bspat_": "personal"}
PREFIX_OF: dict[str, str] = {kind: prefix for prefix, kind in PREFIXES.items()}
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RANDOM_LENGTH = 43  # 62**43 > 2**256
_CHECKSUM_LENGTH = 6
#: How many leading characters are shown to identify a token (never enough to use it).
DISPLAY_PREFIX_LENGTH = 12
_SHAPE = re.compile(
    rf"(bsat_|bspat_)([0-9A-Za-z]{{{_RANDOM_LENGTH}}})([0-9A-Za-z]{{{_CHECKSUM_LENGTH}}})"
)


def _base62(number: int, length: int) -> str:
    digits = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECKSUM_LENGTH)


@dataclass(frozen=True)
class NewToken:
    """A freshly made token: the secret (shown once), its digest, its display prefix."""

    value: str
    digest: str
    display_prefix: str


def hash_token(value: str) -> str:
    """The stored form of a token: SHA-256, hex (the secret has 256 random bits)."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def generate_token(kind: TokenKind) -> NewToken:
    """A new random token of ``kind``."""
    body = PREFIX_OF[kind] + _base62(secrets.randbelow(62**_RANDOM_LENGTH), _RANDOM_LENGTH)
    value = body + _checksum(body)
    return NewToken(value, hash_token(value), value[:DISPLAY_PREFIX_LENGTH])


def parse(value: object) -> TokenKind | None:
    """The kind of a well-formed token with a valid checksum; ``None`` otherwise."""
    if not isinstance(value, str):
        return None
    match = _SHAPE.fullmatch(value)
    if match is None:
        return None
    prefix, random_part, checksum = match.groups()
    if _checksum(prefix + random_part) != checksum:
        return None
    return PREFIXES[prefix]


def looks_like_access_token(value: object) -> bool:
    """Cheap test: does it carry one of our prefixes (valid or not)?"""
    return isinstance(value, str) and value.startswith(tuple(PREFIXES))
