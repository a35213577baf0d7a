"""Checks of what a caller asks for: names, group refs, scopes, dates and numbers.

Shared by the REST API (values from a JSON body) and the command line. Each
function takes the raw value and returns it checked, or raises
:class:`~flask_backstage_auth.errors.InputError` naming the field (a 400 in
the API, a usage error on the command line). No Flask here.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import typing as t

from flask_backstage_auth.access_tokens.settings import DAY
from flask_backstage_auth.errors import InputError

MAX_DESCRIPTION = 500
MAX_REASON = 500
MAX_SCOPES = 100

_NAME = re.compile(r"[a-z0-9-]{1,100}")
_ENTITY_PART = re.compile(r"[a-z0-9]+(?:[-_.][a-z0-9]+)*")


def optional_string(value: object, field: str, *, max_length: int) -> str | None:
    """A string of at most ``max_length`` characters, or ``None`` when absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{field} must be a string")
    if len(value) > max_length:
        raise InputError(f"{field} must be at most {max_length} characters")
    return value


def validate_name(value: object) -> str:
    """A token name: 1-100 characters of ``a-z``, ``0-9`` and ``-``."""
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        raise InputError("name must be 1-100 characters of a-z, 0-9 and '-'")
    return value


def normalize_group_ref(value: object, field: str = "groupEntityRef") -> str:
    """``group:<namespace>/<name>`` in lower case (``group:name``: the default namespace).

    :raises InputError: not a group entity ref.
    """
    message = f"{field} must be a group entity ref, 'group:<namespace>/<name>'"
    if not isinstance(value, str) or len(value) > 200:
        raise InputError(message)
    ref = value.strip().lower()
    if not ref.startswith("group:"):
        raise InputError(message)
    rest = ref[len("group:") :]
    namespace, _, name = rest.rpartition("/")
    if not _:
        namespace = "default"
    if not (_ENTITY_PART.fullmatch(namespace) and _ENTITY_PART.fullmatch(name)):
        raise InputError(message)
    if len(namespace) > 63 or len(name) > 63:
        raise InputError(message)
    return f"group:{namespace}/{name}"


def scope_list(raw: object) -> list[str]:
    """A non-empty list of at most 100 scope ids, deduplicated in order."""
    if (
        not isinstance(raw, list)
        or not raw
        or len(raw) > MAX_SCOPES
        or not all(isinstance(s, str) for s in raw)
    ):
        raise InputError("scopes must be a non-empty list of scope ids")
    return list(dict.fromkeys(t.cast(t.List[str], raw)))


def shown(values: t.Sequence[str]) -> str:
    """Up to ten values, each cut to 100 characters, for a message."""
    return ", ".join(repr(value[:100]) for value in values[:10])


def parse_iso(value: object, field: str) -> float:
    """Epoch seconds of an ISO 8601 date-time (UTC when it has no offset)."""
    message = f"{field} must be an ISO 8601 date-time"
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        raise InputError(message)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(message) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    try:
        return moment.timestamp()
    except (OverflowError, ValueError, OSError):  # pragma: no cover - platform limits
        raise InputError(message) from None


def integer(value: object, field: str, low: int, high: int) -> int:
    """An integer (or an integral float) between ``low`` and ``high``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{field} must be an integer between {low} and {high}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise InputError(f"{field} must be an integer between {low} and {high}")
        value = int(value)
    if not low <= value <= high:
        raise InputError(f"{field} must be an integer between {low} and {high}")
    return value


def resolve_expiry(
    expires_at: object, expires_in_days: object, now: float, *, default: float, maximum: float
) -> float:
    """The expiry asked for by ``expiresAt`` or ``expiresInDays``, else ``now + default``."""
    if expires_at is not None and expires_in_days is not None:
        raise InputError("Give either expiresAt or expiresInDays, not both")
    if expires_in_days is not None:
        max_days = max(1, int(maximum // DAY))
        return now + integer(expires_in_days, "expiresInDays", 1, max_days) * DAY
    if expires_at is not None:
        epoch = parse_iso(expires_at, "expiresAt")
        if epoch <= now:
            raise InputError("expiresAt must be in the future")
        if epoch > now + maximum:
            raise InputError(f"expiresAt must be at most {int(maximum // DAY)} days in the future")
        return epoch
    return now + default
