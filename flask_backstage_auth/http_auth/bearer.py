"""Reading a bearer token from an ``Authorization`` header, as Backstage does."""

from __future__ import annotations

import re

# Backstage's /^Bearer[ ]+(\S+)$/i with JavaScript's \s and $ semantics, which
# differ from Python's (see tests/data/README): this class is JavaScript's \S.
_JS_NON_SPACE = "[^\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
_BEARER = re.compile(f"Bearer[ ]+({_JS_NON_SPACE}+)", re.IGNORECASE | re.ASCII)

#: Headers longer than this are not parsed at all (no token).
MAX_AUTHORIZATION_HEADER_LENGTH = 16 * 1024


def get_bearer_token(header: object) -> str | None:
    """The token of a ``Bearer`` header, or ``None`` when there is none.

    Anything that is not a well-formed bearer header (another scheme, a tab
    separator, trailing text, an oversized value) gives ``None``, which callers
    treat as "no credentials", exactly like Backstage.
    """
    if not isinstance(header, str) or len(header) > MAX_AUTHORIZATION_HEADER_LENGTH:
        return None
    # Fast path for the common case, an ASCII token: the same answer as the
    # regex, whose only ASCII spaces are these six; anything else is left to it.
    scheme = header[:7]
    if scheme == "Bearer " or (scheme.isascii() and scheme.lower() == "bearer "):
        token = header[7:].lstrip(" ")
        if (
            token
            and token.isascii()
            and " " not in token
            and "\t" not in token
            and "\n" not in token
            and "\r" not in token
            and "\v" not in token
            and "\f" not in token
        ):
            return token
    match = _BEARER.fullmatch(header)
    return match.group(1) if match else None
