"""The contract of ``externalAccess`` token handlers (built-in and custom).

A handler has a ``type`` (the ``externalAccess[].type`` it serves), an
``initialize(options)`` that validates the entry's ``options`` at start-up and
returns a context, and ``verify_token(token, context)`` that returns a result
when the token is one of its own, ``None`` when it is not (the next entry is
tried), or raises :class:`~flask_backstage_auth.errors.AuthenticationError`
for a token that is its own kind but invalid.

A handler may also give ``verify_peeked(token, context)``, which receives the
token already split (a :class:`~flask_backstage_auth.auth.jose.PeekedToken`,
shared by every handler) instead of the string; the built-in types do, so
that a token is parsed once whatever the number of entries.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

from flask_backstage_auth.auth.jose import PeekedToken
from flask_backstage_auth.config.reader import ConfigReader

C = t.TypeVar("C")


@dataclass(frozen=True)
class ExternalTokenResult:
    """A verified external token: its subject, and when it stops being valid."""

    subject: str
    expires_at: float | None = None
    claims: t.Mapping[str, t.Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ExternalTokenHandler(t.Generic[C]):
    """A handler type for ``backend.auth.externalAccess``.

    Register custom ones with ``BackstageAuth(external_token_handlers=[...])``.
    """

    type: str
    initialize: t.Callable[[ConfigReader], C]
    verify_token: t.Callable[[str, C], ExternalTokenResult | None]
    #: Used instead of ``verify_token`` when given: the same answer, for the
    #: token already split.
    verify_peeked: t.Callable[[PeekedToken, C], ExternalTokenResult | None] | None = None
