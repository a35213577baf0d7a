"""The request path as routing sees it, and the test that makes it trustworthy.

Exemptions and auth policies only ever *add* access, so they only apply to a
path that routing cannot read differently from the way we matched it: one
without dot segments, empty segments, backslashes, control characters,
percent signs or invalid UTF-8, and whose raw form had no encoded ``/``,
``.``, ``\\`` or ``%``.
"""

from __future__ import annotations

import posixpath
import re
import typing as t

if t.TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import WSGIEnvironment

_ENCODED_SEPARATOR = re.compile(r"%(2f|2e|5c|25)", re.IGNORECASE)
_FORBIDDEN_CHARACTER = re.compile(r"[\x00-\x1f\x7f\\%\ufffd]")


def routing_path(environ: WSGIEnvironment) -> str:
    """``PATH_INFO`` decoded exactly as Werkzeug decodes it for routing."""
    raw = environ.get("PATH_INFO") or "/"
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")


def raw_request_path(environ: WSGIEnvironment) -> str | None:
    """The undecoded path the client sent, when the server reports it."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not isinstance(raw, str):
        return None
    return raw.split("?", 1)[0]


def is_clean_path(path: str) -> bool:
    """A path whose every segment is a plain, non-empty name.

    A single trailing slash is allowed; ``.``/``..`` segments, ``//``,
    backslashes, control characters, ``%`` and U+FFFD are not.
    """
    if not path.startswith("/") or _FORBIDDEN_CHARACTER.search(path):
        return False
    segments = path[1:].split("/")
    if segments and segments[-1] == "":
        segments = segments[:-1]
    return all(segment not in ("", ".", "..") for segment in segments)


def is_trustworthy_request_path(environ: WSGIEnvironment) -> bool:
    """Whether this request's path may receive an exemption or a policy."""
    if not is_clean_path(routing_path(environ)):
        return False
    raw = raw_request_path(environ)
    return raw is None or not _ENCODED_SEPARATOR.search(raw)


def normalize_path(path: str) -> str:
    """Collapse slashes and dot segments: used only to widen protection."""
    collapsed = re.sub(r"[/\\]+", "/", path)
    normalized = posixpath.normpath(collapsed) if collapsed else "/"
    return normalized if normalized.startswith("/") else "/" + normalized


def is_under_prefix(path: str, prefix: str) -> bool:
    """``path`` equals ``prefix`` or continues it at a segment boundary."""
    prefix = prefix.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")
