"""The permissions that gate token management (checked with the token's owner as resource)."""

from __future__ import annotations

from flask_backstage_auth.permissions import Permission, create_permission

SERVICE_RESOURCE_TYPE = "access-token-service"
PERSONAL_RESOURCE_TYPE = "access-token-user"

SERVICE_READ: Permission = create_permission(
    "access-tokens:service:read", {"action": "read"}, resource_type=SERVICE_RESOURCE_TYPE
)
SERVICE_WRITE: Permission = create_permission(
    "access-tokens:service:write", {"action": "create"}, resource_type=SERVICE_RESOURCE_TYPE
)
SERVICE_REVOKE: Permission = create_permission(
    "access-tokens:service:revoke", {"action": "delete"}, resource_type=SERVICE_RESOURCE_TYPE
)
PERSONAL_READ: Permission = create_permission(
    "access-tokens:personal:read", {"action": "read"}, resource_type=PERSONAL_RESOURCE_TYPE
)
PERSONAL_WRITE: Permission = create_permission(
    "access-tokens:personal:write", {"action": "create"}, resource_type=PERSONAL_RESOURCE_TYPE
)
PERSONAL_REVOKE: Permission = create_permission(
    "access-tokens:personal:revoke", {"action": "delete"}, resource_type=PERSONAL_RESOURCE_TYPE
)

ALL_PERMISSIONS: tuple[Permission, ...] = (
    SERVICE_READ,
    SERVICE_WRITE,
    SERVICE_REVOKE,
    PERSONAL_READ,
    PERSONAL_WRITE,
    PERSONAL_REVOKE,
)
