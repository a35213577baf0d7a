"""Mock tokens for tests, in the spirit of Backstage's ``mockCredentials``.

Accepted only by an app with ``TESTING`` on and
``BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS`` set; never in production.

* ``mock-user-token`` or ``mock-user-token:{"sub": "user:default/x"}``
* ``mock-limited-user-token[:{...}]``: a limited user token
* ``mock-service-token`` or ``mock-service-token:{"sub": "plugin:x"}``
* ``mock-invalid-user-token`` / ``mock-invalid-service-token``: rejected
"""

from __future__ import annotations

import json
import typing as t

from flask_backstage_auth.auth.jose import PeekedToken
from flask_backstage_auth.credentials import ServicePrincipal, UserPrincipal
from flask_backstage_auth.errors import AuthenticationError

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.auth.service import VerifiedToken

DEFAULT_USER = "user:default/mock"
DEFAULT_SERVICE = "external:test-service"

USER_PREFIX = "mock-user-token"
LIMITED_USER_PREFIX = "mock-limited-user-token"
SERVICE_PREFIX = "mock-service-token"


def mock_token(prefix: str, sub: str | None = None) -> str:
    """A mock token string of kind ``prefix`` for subject ``sub``."""
    return prefix if sub is None else prefix + ":" + json.dumps({"sub": sub}, separators=(",", ":"))


def _payload(token: str, prefix: str) -> dict[str, t.Any] | None:
    if token == prefix:
        return {}
    if not token.startswith(prefix + ":"):
        return None
    try:
        payload = json.loads(token[len(prefix) + 1 :])
    except ValueError:
        raise AuthenticationError("Invalid mock token") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("sub", ""), str):
        raise AuthenticationError("Invalid mock token")
    return payload


def verify_mock_token(peeked: PeekedToken) -> VerifiedToken | None:
    """The mock credentials a mock token stands for, ``None`` for other tokens."""
    from flask_backstage_auth.auth.service import VerifiedToken

    token = peeked.token
    if token == "mock-invalid-user-token":
        raise AuthenticationError("User token is invalid")
    if token == "mock-invalid-service-token":
        raise AuthenticationError("Service token is invalid")
    for prefix, limited in ((USER_PREFIX, False), (LIMITED_USER_PREFIX, True)):
        payload = _payload(token, prefix)
        if payload is not None:
            return VerifiedToken(UserPrincipal(payload.get("sub") or DEFAULT_USER), limited=limited)
    payload = _payload(token, SERVICE_PREFIX)
    if payload is not None:
        return VerifiedToken(ServicePrincipal(payload.get("sub") or DEFAULT_SERVICE))
    return None
