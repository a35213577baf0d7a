"""Backstage's ``DefaultUserInfoService``: the user and what they own, from ``ent`` or userinfo.

The user token is read **without verification**: credentials are only ever
made from tokens that were verified when they were made, and the token is
sent, as it is, to the auth backend when it has no ``ent`` claim.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from flask_backstage_auth.auth.mock import LIMITED_USER_PREFIX, USER_PREFIX
from flask_backstage_auth.auth.user.handler import unverified_parts
from flask_backstage_auth.credentials import Credentials
from flask_backstage_auth.errors import (
    AuthenticationError,
    BackstageError,
    InputError,
    NotAllowedError,
    ServiceUnavailableError,
)

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.user_info.client import UserInfoClient

#: Backstage's messages.
NOT_USER_MESSAGE = "Only user credentials are supported"
MISSING_TOKEN_MESSAGE = "User credentials is unexpectedly missing token"
SUB_MESSAGE = "User entity ref must be a string"
UNDETERMINED_MESSAGE = "Ownership entity refs can not be determined"
NOT_STRINGS_MESSAGE = "Ownership entity refs must be an array of strings"
#: Ours: user credentials whose token is not a Backstage user token (a
#: personal access token); the auth backend could not tell their ownership.
NOT_A_USER_TOKEN_MESSAGE = (
    "User info is only available for credentials made from a Backstage user token"
)
#: Ours: the auth backend answered about another user.
OTHER_USER_MESSAGE = "The auth backend answered with the user info of another user"


@dataclass(frozen=True)
class BackstageUserInfo:
    """Backstage's ``BackstageUserInfo``: who a user is and what they own."""

    user_entity_ref: str
    ownership_entity_refs: tuple[str, ...] = ()


class UserInfoService(t.Protocol):
    """Backstage's ``UserInfoService``."""

    def get_user_info(self, credentials: Credentials) -> BackstageUserInfo: ...


def parse_ownership_entity_refs(
    value: object, error: t.Type[BackstageError] = AuthenticationError
) -> tuple[str, ...]:
    """``value`` as ownership refs: a list of strings (Backstage's check).

    :raises BackstageError: of class ``error``, ``Ownership entity refs must
        be an array of strings``.
    """
    if not isinstance(value, list) or not all(isinstance(ref, str) for ref in value):
        raise error(NOT_STRINGS_MESSAGE)
    return tuple(value)


def _absent(value: object) -> bool:
    """JavaScript's ``!value``: what makes Backstage ask the auth backend (``[]`` does not)."""
    return (
        value is None
        or value is False
        or value == ""
        or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0)
    )


def is_mock_token(token: str) -> bool:
    """A mock user token (:mod:`flask_backstage_auth.auth.mock`)."""
    return any(token == p or token.startswith(p + ":") for p in (USER_PREFIX, LIMITED_USER_PREFIX))


def user_token_claims(credentials: Credentials) -> tuple[str, t.Mapping[str, t.Any], str]:
    """``(user entity ref, payload, token)`` of user credentials, unverified.

    :raises InputError: not user credentials.
    :raises AuthenticationError: no token, or a ``sub`` that is not a string.
    :raises NotAllowedError: the token is not a JWT (a personal access token).
    """
    if credentials.principal.type != "user":
        raise InputError(NOT_USER_MESSAGE)
    token = credentials.token
    if not token:
        raise AuthenticationError(MISSING_TOKEN_MESSAGE)
    parts = unverified_parts(token)
    if parts is None:
        raise NotAllowedError(NOT_A_USER_TOKEN_MESSAGE)
    payload = parts[1]
    sub = payload.get("sub")
    if not isinstance(sub, str):
        raise AuthenticationError(SUB_MESSAGE)
    return sub, payload, token


class DefaultUserInfoService:
    """Backstage's ``DefaultUserInfoService``.

    The user entity ref is the token's ``sub``; the ownership refs its ``ent``
    claim, else the ``ent`` of the auth backend's ``GET /v1/userinfo``
    answer, asked with the user's own token (a limited one included).

    :param client: the userinfo endpoint.
    :param accept_mock_tokens: mock user tokens (tests only) own themselves,
        as Backstage's ``mockServices.userInfo()`` says.
    """

    def __init__(self, client: UserInfoClient, *, accept_mock_tokens: bool = False) -> None:
        self.client = client
        self._accept_mock_tokens = accept_mock_tokens

    def get_user_info(self, credentials: Credentials) -> BackstageUserInfo:
        """Who the user of ``credentials`` is and what they own.

        Backstage throws plain errors (500) where we pick a status:

        :raises InputError: 400, not user credentials.
        :raises AuthenticationError: 401, no token, a ``sub`` that is not a
            string or an ``ent`` claim that is not a list of strings.
        :raises NotAllowedError: 403, the token is not a Backstage user token.
        :raises ResponseError: the auth backend refused (its 4xx status).
        :raises ServiceUnavailableError: 503, the auth backend could not be
            asked in time, failed, or answered without usable ownership refs.
        """
        principal = credentials.principal
        token = credentials.token
        if self._accept_mock_tokens and principal.type == "user" and token and is_mock_token(token):
            ref = principal.user_entity_ref
            return BackstageUserInfo(ref, (ref,))
        sub, payload, token = user_token_claims(credentials)
        return resolve_user_info(sub, payload, token, self.client)


def resolve_user_info(
    sub: str, payload: t.Mapping[str, t.Any], token: str, client: UserInfoClient | None
) -> BackstageUserInfo:
    """The user info of a decoded user token: its ``ent``, else the auth backend's.

    :param client: the userinfo endpoint; ``None`` (no discovery) fails closed
        for a token without ``ent``.
    :raises AuthenticationError: the token's ``ent`` is not a list of strings.
    :raises ResponseError: the auth backend refused.
    :raises ServiceUnavailableError: no ``ent`` and no usable answer.
    """
    ent = payload.get("ent")
    if not _absent(ent):
        return BackstageUserInfo(sub, parse_ownership_entity_refs(ent))
    if client is None:
        raise ServiceUnavailableError(UNDETERMINED_MESSAGE)
    claims = client.fetch_claims(token)
    if "sub" in claims and claims["sub"] != sub:
        raise ServiceUnavailableError(OTHER_USER_MESSAGE)
    ent = claims.get("ent")
    if _absent(ent):
        raise ServiceUnavailableError(UNDETERMINED_MESSAGE)
    return BackstageUserInfo(sub, parse_ownership_entity_refs(ent, ServiceUnavailableError))
