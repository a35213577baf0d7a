"""Test helpers: mock credentials and tokens, in the spirit of Backstage's
``mockCredentials``.

Mock tokens are accepted only by an app with ``TESTING = True`` and
``BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS = True``::

    app.config.update(TESTING=True, BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS=True)
    client.get("/api/catalog/entities", headers=mock_credentials.user_header("user:default/jane"))

The pytest plugin (:mod:`flask_backstage_auth.testing.pytest_plugin`) exposes these as
fixtures.
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

__all__ = ["MockCredentials", "mock_credentials", "bearer_header"]


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


#: A ready instance.
mock_credentials = MockCredentials()
