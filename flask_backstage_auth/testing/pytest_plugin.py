"""pytest fixtures for apps that use flask-backstage-auth.

Installed through the ``pytest11`` entry point. The fixtures that need an app
use pytest-flask's ``app`` fixture (or one of your own of that name):

* ``mock_credentials``: a :class:`~flask_backstage_auth.testing.mocks.MockCredentials`;
* ``backstage_service_token``: a real service token from the app's token manager;
* ``backstage_service_headers``: the ``Authorization`` header for it;
* ``backstage_user_headers``: a mock user's header (the app must accept mock
  tokens, see :mod:`flask_backstage_auth.testing.mocks`);
* ``backstage_audit``: the app's audit events during the test
  (:class:`~flask_backstage_auth.testing.audit.AuditCapture`).
"""

from __future__ import annotations

import typing as t

import pytest

from flask_backstage_auth.testing.audit import AuditCapture, capture_audit
from flask_backstage_auth.testing.mocks import MockCredentials, bearer_header
from flask_backstage_auth.testing.mocks import mock_credentials as _mock_credentials

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
def backstage_audit(app: Flask) -> t.Iterator[AuditCapture]:
    """Every audit event ``app`` logs during the test."""
    with capture_audit(app) as capture:
        yield capture
