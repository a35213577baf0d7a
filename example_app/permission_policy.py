"""The example's permission policy.

Token management (``access-tokens:*``) is for administrators: in development,
the guest user is one; nobody else is, unless configured in
``accessTokens.admins``. Group delegation: a user who owns a group (the group
is among their ownership refs, from the ``user_info`` service: the token's
``ent``, else the auth backend's ``/v1/userinfo``) manages that group's
service tokens. Everything else is allowed (access restrictions of scoped
tokens still apply; the permissions service checks them first).
"""

from __future__ import annotations

import typing as t

from flask_backstage_auth import BackstageAuth, Credentials
from flask_backstage_auth.permissions import ALLOW, DENY, PolicyDecision, PolicyQuery
from flask_backstage_auth.user_info import UserInfoService

GUEST = "user:development/guest"


def _app_user_info() -> UserInfoService:
    return BackstageAuth.state().user_info


class ExamplePolicy:
    """Admins manage tokens, owners of a group its service tokens; the rest is open.

    :param user_info: gives the ``user_info`` service (default: the current app's).
    """

    def __init__(
        self,
        admins: t.Iterable[str],
        *,
        development: bool,
        user_info: t.Callable[[], UserInfoService] = _app_user_info,
    ) -> None:
        self.admins = frozenset(admins) | ({GUEST} if development else frozenset())
        self.user_info = user_info

    def handle(self, query: PolicyQuery, credentials: Credentials) -> PolicyDecision:
        if not query.permission.name.startswith("access-tokens:"):
            return ALLOW
        if query.permission.name.startswith("access-tokens:personal:"):
            return ALLOW  # every user manages their own personal tokens
        principal = credentials.principal
        if principal.type != "user":
            return DENY
        if principal.user_entity_ref in self.admins:
            return ALLOW
        group = query.resource_ref
        if not group or not group.startswith("group:"):
            return DENY  # the unfiltered list, or no group: admins only
        # Raises (the request fails, nothing is allowed) when ownership cannot be told.
        owned = self.user_info().get_user_info(credentials).ownership_entity_refs
        return ALLOW if group in owned else DENY
