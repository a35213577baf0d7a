"""Test helpers: mock credentials, real tables and tokens (``tokens``), audit capture
and the pytest plugin."""

from __future__ import annotations

from flask_backstage_auth.testing.audit import AuditCapture, capture_audit
from flask_backstage_auth.testing.mocks import (
    MockCredentials,
    MockUserInfoService,
    bearer_header,
    mock_credentials,
)

__all__ = [
    "AuditCapture",
    "MockCredentials",
    "MockUserInfoService",
    "bearer_header",
    "capture_audit",
    "mock_credentials",
]
