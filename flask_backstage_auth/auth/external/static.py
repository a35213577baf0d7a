"""``externalAccess`` entries of type ``static``: fixed bearer tokens."""

from __future__ import annotations

import hashlib
import hmac
import re

from flask_backstage_auth.auth.external.types import ExternalTokenHandler, ExternalTokenResult
from flask_backstage_auth.config.reader import ConfigReader
from flask_backstage_auth.errors import ConfigError

_NON_SPACE = re.compile(r"\S+")
MIN_STATIC_TOKEN_LENGTH = 8


class StaticTokenContext:
    """One configured token, kept as a SHA-256 digest."""

    def __init__(self, token: str, subject: str) -> None:
        self.digest = hashlib.sha256(token.encode()).digest()
        self.subject = subject


def _initialize(options: ConfigReader) -> StaticTokenContext:
    token = options.get_string("token")
    subject = options.get_string("subject")
    if not _NON_SPACE.fullmatch(token):
        raise ConfigError(
            f"Illegal token, must be a set of non-space characters (at {options.path('token')})"
        )
    if len(token) < MIN_STATIC_TOKEN_LENGTH:
        raise ConfigError(
            f"Illegal token, must be at least 8 characters length (at {options.path('token')})"
        )
    if not _NON_SPACE.fullmatch(subject):
        raise ConfigError(
            f"Illegal subject, must be a set of non-space characters (at {options.path('subject')})"
        )
    return StaticTokenContext(token, subject)


def _verify(token: str, context: StaticTokenContext) -> ExternalTokenResult | None:
    # Constant time: compare digests, never the tokens' characters.
    digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
    if hmac.compare_digest(digest, context.digest):
        return ExternalTokenResult(subject=context.subject)
    return None


static_token_handler: ExternalTokenHandler[StaticTokenContext] = ExternalTokenHandler(
    type="static", initialize=_initialize, verify_token=_verify
)
