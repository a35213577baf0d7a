"""The example's permission policy.

Token management (``access-tokens:*``) is for administrators: in development,
the guest user is one; nobody else is, unless configured in
``accessTokens.admins``. Everything else is allowed (access restrictions of
scoped tokens still apply; the permissions service checks them first).
"""

from __future__ import annotations

import typing as t

from flask_backstage_auth import Credentials
from flask_backstage_auth.permissions import ALLOW, DENY, PolicyDecision, PolicyQuery

GUEST = "user:development/guest"


class ExamplePolicy:
    """Admins manage tokens; the rest is open."""

    def __init__(self, admins: t.Iterable[str], *, development: bool) -> None:
        self.admins = frozenset(admins) | ({GUEST} if development else frozenset())

    def handle(self, query: PolicyQuery, credentials: Credentials) -> PolicyDecision:
        if not query.permission.name.startswith("access-tokens:"):
            return ALLOW
        if query.permission.name.startswith("access-tokens:personal:"):
            return ALLOW  # every user manages their own personal tokens
        principal = credentials.principal
        user = getattr(principal, "user_entity_ref", None)
        return ALLOW if principal.type == "user" and user in self.admins else DENY
