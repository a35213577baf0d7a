"""pytest fixtures for apps that use flask-backstage-auth.

Installed through the ``pytest11`` entry point. The fixtures that need an app
use pytest-flask's ``app`` fixture (or one of your own of that name):

* ``mock_credentials``: a :class:`~flask_backstage_auth.testing.mocks.MockCredentials`;
* ``backstage_service_token``: a real service token from the app's token manager;
* ``backstage_service_headers``: the ``Authorization`` header for it;
* ``backstage_user_headers``: a mock user's header (the app must accept mock
  tokens, see :mod:`flask_backstage_auth.testing.mocks`);
* ``backstage_tables``: the library's tables in the app's database (its
  Alembic branch, as ``flask backstage-auth db upgrade``);
* ``backstage_user_token``: a real user token of ``user:default/test``, signed
  by the app's ``AuthBackend`` (implies ``backstage_tables`` when the app has
  a database, where its key is published);
* ``backstage_access_token``: a real service access token (``bsat_``) of
  ``group:default/test`` with the scope ``catalog:read``, created by the app's
  ``AccessTokens`` (implies ``backstage_tables``);
* ``backstage_audit``: the app's audit events during the test
  (:class:`~flask_backstage_auth.testing.audit.AuditCapture`).

For other users, owners or scopes, call the helpers of
:mod:`flask_backstage_auth.testing.tokens` the fixtures use.
"""

from __future__ import annotations

import typing as t

import pytest

from flask_backstage_auth.testing.audit import AuditCapture, capture_audit
from flask_backstage_auth.testing.mocks import MockCredentials, bearer_header
from flask_backstage_auth.testing.mocks import mock_credentials as _mock_credentials
from flask_backstage_auth.testing.tokens import (
    create_backstage_tables,
    issue_access_token,
    issue_user_token,
)

if t.TYPE_CHECKING:  # pragma: no cover
    from flask import Flask


@pytest.fixture
def mock_credentials() -> MockCredentials:
    """Mock credentials, tokens and headers of every kind."""
    return _mock_credentials


@pytest.fixture
def backstage_service_token(app: Flask) -> str:
    """A real service-to-service token that ``app`` accepts."""
    from flask_backstage_auth.extension import BackstageAuth

    return BackstageAuth.state(app).token_manager.get_token().token


@pytest.fixture
def backstage_service_headers(backstage_service_token: str) -> dict[str, str]:
    """``Authorization`` header carrying :func:`backstage_service_token`."""
    return bearer_header(backstage_service_token)


@pytest.fixture
def backstage_user_headers(mock_credentials: MockCredentials) -> dict[str, str]:
    """``Authorization`` header of the mock user ``user:default/mock``."""
    return mock_credentials.user_header()


@pytest.fixture
def backstage_tables(app: Flask) -> None:
    """The library's tables in the database of ``app``'s ``BackstageAuth``."""
    create_backstage_tables(app)


@pytest.fixture
def backstage_user_token(app: Flask) -> str:
    """A user token of ``user:default/test``, signed by ``app``'s ``AuthBackend``.

    With a database, its key is published there: implies ``backstage_tables``.
    """
    from flask_backstage_auth.extension import BackstageAuth

    if BackstageAuth.state(app).database is not None:
        create_backstage_tables(app)
    return issue_user_token(app)


@pytest.fixture
def backstage_access_token(app: Flask, backstage_tables: None) -> str:
    """A service access token of ``group:default/test`` with scope ``catalog:read``."""
    return issue_access_token(app, scopes=["catalog:read"])


@pytest.fixture
def backstage_audit(app: Flask) -> t.Iterator[AuditCapture]:
    """Every audit event ``app`` logs during the test."""
    with capture_audit(app) as capture:
        yield capture
