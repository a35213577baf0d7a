"""The ``user_info`` service: who a user is and what they own (Backstage's ``UserInfoService``).

::

    info = auth.user_info.get_user_info(credentials)
    info.user_entity_ref          # "user:default/jane"
    info.ownership_entity_refs    # ("user:default/jane", "group:default/team-a")

Since plugin-auth-backend 0.28 (``auth.omitIdentityTokenOwnershipClaim``,
default ``true``) user tokens carry no ``ent`` claim: ownership then comes
from the auth backend's ``GET <auth>/v1/userinfo``, found through discovery,
as Backstage's ``DefaultUserInfoService`` does. A token that still has ``ent``
is read locally. Answers are cached per token for 5 seconds
(``CachedUserInfoService``); failures are never cached.

Fail closed: when the endpoint cannot be reached, is slow (a bounded
deadline, ``BACKSTAGE_AUTH_USER_INFO_TIMEOUT``) or answers something that is
not a user info document, the call raises a 503
:class:`~flask_backstage_auth.errors.ServiceUnavailableError`; it never
returns an empty or guessed ownership. Only user credentials have user info
(a limited user token, and a plugin acting on behalf of a user, included).

* :mod:`.service`: :class:`BackstageUserInfo`, the protocol, :class:`DefaultUserInfoService`;
* :mod:`.client`: the bounded HTTP call to the userinfo endpoint;
* :mod:`.cache`: :class:`CachedUserInfoService`.
"""

from __future__ import annotations

from flask_backstage_auth.user_info.cache import CachedUserInfoService
from flask_backstage_auth.user_info.client import ResponseError, UserInfoClient
from flask_backstage_auth.user_info.service import (
    BackstageUserInfo,
    DefaultUserInfoService,
    UserInfoService,
    parse_ownership_entity_refs,
)

__all__ = [
    "BackstageUserInfo",
    "CachedUserInfoService",
    "DefaultUserInfoService",
    "ResponseError",
    "UserInfoClient",
    "UserInfoService",
    "parse_ownership_entity_refs",
]
