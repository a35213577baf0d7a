"""Test helpers: mock credentials, real tables and tokens (``tokens``), and the pytest plugin."""

from __future__ import annotations

from flask_backstage_auth.testing.mocks import (
    MockCredentials,
    MockUserInfoService,
    bearer_header,
    mock_credentials,
)

__all__ = ["MockCredentials", "MockUserInfoService", "bearer_header", "mock_credentials"]
