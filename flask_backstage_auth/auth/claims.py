"""Claim checks shared by every token kind.

PyJWT's own time checks are switched off everywhere (they read the real clock
and coerce numeric strings); these functions check NumericDates against the
injected clock with jose's semantics: a token is expired when ``exp <= now -
leeway`` and not yet valid when ``nbf > now + leeway``.
"""

from __future__ import annotations

import math
import typing as t


class InvalidClaims(Exception):
    """A token's claims are unacceptable. The message never echoes a value."""


def is_numeric_date(value: object) -> bool:
    """A JSON number that is finite (booleans are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_times(
    claims: t.Mapping[str, t.Any],
    *,
    now: float,
    leeway: float = 0,
    require_exp: bool = True,
    require_iat: bool = False,
    max_lifetime: float | None = None,
    max_lifetime_leeway: float = 0,
    reject_future_iat: bool = False,
    iat_leeway: float | None = None,
) -> None:
    """Check ``exp``, ``nbf`` and ``iat``.

    :param max_lifetime: when given, ``exp`` may be at most this many seconds
        (plus ``max_lifetime_leeway``) after ``now``.
    :param reject_future_iat: refuse an ``iat`` after ``now + iat_leeway``.
    :param iat_leeway: seconds an ``iat`` may be ahead of ``now`` (default: ``leeway``).
    :raises InvalidClaims: with a message naming the claim.
    """
    exp = claims.get("exp")
    if exp is None:
        if require_exp or "exp" in claims:
            raise InvalidClaims('missing or invalid "exp" claim')
    else:
        if not is_numeric_date(exp):
            raise InvalidClaims('"exp" claim must be a number')
        if exp <= now - leeway:
            raise InvalidClaims('"exp" claim timestamp check failed (token expired)')
        if max_lifetime is not None and exp > now + max_lifetime + max_lifetime_leeway:
            raise InvalidClaims(
                f'"exp" claim is more than {int(max_lifetime)} seconds in the future'
            )
    if "nbf" in claims:
        nbf = claims["nbf"]
        if not is_numeric_date(nbf):
            raise InvalidClaims('"nbf" claim must be a number')
        if nbf > now + leeway:
            raise InvalidClaims('"nbf" claim timestamp check failed (not yet valid)')
    if "iat" in claims or require_iat:
        iat = claims.get("iat")
        if not is_numeric_date(iat):
            raise InvalidClaims('missing or invalid "iat" claim')
        ahead = leeway if iat_leeway is None else iat_leeway
        if reject_future_iat and t.cast(float, iat) > now + ahead:
            raise InvalidClaims('"iat" claim is in the future')
