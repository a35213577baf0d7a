"""Shared HMAC secrets: Backstage's lenient decoding, and our stricter checks.

This is the one place that knows how Backstage turns a configured secret into
key bytes (``jose.base64url.decode``, i.e. Node's ``Buffer.from(s, 'base64')``):
both alphabets, padding optional, decoding stops at the first ``=``, characters
outside the alphabet are skipped. The interop vectors pin every rule here.
"""

from __future__ import annotations

import base64
import re
import secrets as _random

from flask_backstage_auth.errors import ConfigError

#: The fewest key bytes we accept (Backstage accepts even 0).
MIN_SECRET_BYTES = 16

_NODE_ALPHABET = re.compile(r"[^A-Za-z0-9+/]")
_ALLOWED_SECRET = re.compile(r"[A-Za-z0-9+/_=-]+")


def decode_backstage_secret(secret: str) -> bytes:
    """Decode a secret exactly as Backstage does. Never raises for a string."""
    text = secret.split("=", 1)[0].replace("-", "+").replace("_", "/")
    text = _NODE_ALPHABET.sub("", text)
    if len(text) % 4 == 1:  # Node drops a lone trailing character
        text = text[:-1]
    return base64.b64decode(text + "=" * (-len(text) % 4))


def validate_secret(secret: object, path: str) -> bytes:
    """Decode a configured secret, refusing what our policy refuses.

    :param path: the config path, e.g. ``backend.auth.keys[0].secret``, named in
        the error. The secret itself is never part of the message.
    :raises ConfigError: not a string, holds whitespace or characters outside
        the base64 alphabets, or decodes to fewer than :data:`MIN_SECRET_BYTES`.
    """
    if not isinstance(secret, str) or secret == "":
        raise ConfigError(f"{path} must be a non-empty string")
    if any(ch.isspace() for ch in secret):
        raise ConfigError(f"{path} must not contain whitespace")
    if not _ALLOWED_SECRET.fullmatch(secret):
        raise ConfigError(f"{path} must be a base64 string (standard or URL-safe alphabet)")
    key = decode_backstage_secret(secret)
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{path} decodes to {len(key)} bytes; at least {MIN_SECRET_BYTES} are"
            " required (generate one with 'flask backstage-auth generate-secret')"
        )
    return key


def generate_secret(num_bytes: int = 24) -> str:
    """A new random secret, base64 encoded: the seed's ``node -p`` recipe."""
    if num_bytes < MIN_SECRET_BYTES:
        raise ValueError(f"a secret needs at least {MIN_SECRET_BYTES} bytes")
    return base64.b64encode(_random.token_bytes(num_bytes)).decode("ascii")
