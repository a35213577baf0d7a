"""Test helpers: mock credentials and tokens, in the spirit of Backstage's
``mockCredentials``.

Mock tokens are accepted only by an app with ``TESTING = True`` and
``BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS = True``::

    app.config.update(TESTING=True, BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS=True)
    client.get("/api/catalog/entities", headers=mock_credentials.user_header("user:default/jane"))

The pytest plugin (:mod:`flask_backstage_auth.testing.pytest_plugin`) exposes these as
fixtures. :class:`MockUserInfoService` stands in for the ``user_info`` service
in a plugin's unit tests (Backstage's ``mockServices.userInfo()``); an app that
accepts mock tokens answers the same for them with its real service.
"""

from __future__ import annotations

from flask_backstage_auth.auth.mock import (
    DEFAULT_SERVICE,
    DEFAULT_USER,
    LIMITED_USER_PREFIX,
    SERVICE_PREFIX,
    USER_PREFIX,
    mock_token,
)
from flask_backstage_auth.credentials import (
    Credentials,
    NonePrincipal,
    ServicePrincipal,
    UserPrincipal,
)
from flask_backstage_auth.errors import InputError
from flask_backstage_auth.user_info.service import BackstageUserInfo

__all__ = ["MockCredentials", "MockUserInfoService", "mock_credentials", "bearer_header"]


def bearer_header(token: str) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}``."""
    return {"Authorization": f"Bearer {token}"}


class MockCredentials:
    """Credentials, mock tokens and headers of every kind."""

    #: A token the mock handler rejects as an invalid user token.
    invalid_user_token = "mock-invalid-user-token"
    #: A token the mock handler rejects as an invalid service token.
    invalid_service_token = "mock-invalid-service-token"

    def user(self, user_entity_ref: str = DEFAULT_USER) -> Credentials:
        return Credentials(
            UserPrincipal(user_entity_ref), token=mock_token(USER_PREFIX, user_entity_ref)
        )

    def limited_user(self, user_entity_ref: str = DEFAULT_USER) -> Credentials:
        return Credentials(
            UserPrincipal(user_entity_ref),
            token=mock_token(LIMITED_USER_PREFIX, user_entity_ref),
        )

    def service(self, subject: str = DEFAULT_SERVICE) -> Credentials:
        return Credentials(ServicePrincipal(subject), token=mock_token(SERVICE_PREFIX, subject))

    def none(self) -> Credentials:
        return Credentials(NonePrincipal())

    def user_token(self, user_entity_ref: str = DEFAULT_USER) -> str:
        return mock_token(USER_PREFIX, user_entity_ref)

    def limited_user_token(self, user_entity_ref: str = DEFAULT_USER) -> str:
        return mock_token(LIMITED_USER_PREFIX, user_entity_ref)

    def service_token(self, subject: str = DEFAULT_SERVICE) -> str:
        return mock_token(SERVICE_PREFIX, subject)

    def user_header(self, user_entity_ref: str = DEFAULT_USER) -> dict[str, str]:
        return bearer_header(self.user_token(user_entity_ref))

    def limited_user_cookie(self, user_entity_ref: str = DEFAULT_USER) -> tuple[str, str]:
        """``(name, value)`` of a ``backstage-auth`` cookie with a limited user token."""
        return ("backstage-auth", self.limited_user_token(user_entity_ref))

    def service_header(self, subject: str = DEFAULT_SERVICE) -> dict[str, str]:
        return bearer_header(self.service_token(subject))


class MockUserInfoService:
    """Backstage's ``MockUserInfoService``: a user owns themselves, or what ``ownership`` says.

    :param ownership_entity_refs: the ownership of every user (default: the
        user alone).
    :raises InputError: (from ``get_user_info``) not user credentials, with
        Backstage's message.
    """

    def __init__(self, ownership_entity_refs: tuple[str, ...] | None = None) -> None:
        self.ownership_entity_refs = ownership_entity_refs

    def get_user_info(self, credentials: Credentials) -> BackstageUserInfo:
        principal = credentials.principal
        if not isinstance(principal, UserPrincipal):
            raise InputError(f"User info not available for principal type '{principal.type}'")
        ref = principal.user_entity_ref
        refs = self.ownership_entity_refs
        return BackstageUserInfo(ref, refs if refs is not None else (ref,))


#: A ready instance.
mock_credentials = MockCredentials()
