"""Permission checks, as Backstage's ``PermissionsService`` (ALLOW and DENY only).

A service principal's ``accessRestrictions`` are enforced first; then, with
``permission.enabled: true``, the configured :class:`PermissionPolicy`
decides. With permissions disabled, whatever passes the restrictions is
allowed.
"""

from __future__ import annotations

import enum
import typing as t
from dataclasses import dataclass, field

from flask_backstage_auth.audit.refusals import audit_denial
from flask_backstage_auth.audit.service import AuditorService
from flask_backstage_auth.config.reader import ConfigReader, as_reader
from flask_backstage_auth.credentials import (
    PERMISSION_ACTIONS,
    Credentials,
    Principal,
    ServicePrincipal,
    UserPrincipal,
)
from flask_backstage_auth.errors import ConfigError, NotAllowedError

#: What a permission does to its resource.
PermissionAction = t.Literal["create", "read", "update", "delete"]

NOOP_TOKEN_MANAGER_MESSAGE = (
    "Service-to-service authentication must be configured before enabling permissions."
    " Read more here https://backstage.io/docs/auth/service-to-service-auth"
)

NO_POLICY_MESSAGE = (
    "permission.enabled is true but no permission policy was given;"
    " pass one: BackstageAuth(app, permission_policy=...), or"
    " PermissionsService(policy=...)"
)


class AuthorizeResult(enum.Enum):
    """The outcome of an authorization."""

    ALLOW = "ALLOW"
    DENY = "DENY"


@dataclass(frozen=True)
class PolicyDecision:
    """A policy's answer to one :class:`PolicyQuery`."""

    result: AuthorizeResult


ALLOW = PolicyDecision(AuthorizeResult.ALLOW)
DENY = PolicyDecision(AuthorizeResult.DENY)


@dataclass(frozen=True)
class PermissionAttributes:
    """Generic attributes of a permission; only ``action`` for now."""

    action: PermissionAction | None = None


@dataclass(frozen=True)
class Permission:
    """A named permission, basic or bound to a resource type.

    Build it with :func:`create_permission`, which validates.
    """

    name: str
    attributes: PermissionAttributes = field(default_factory=PermissionAttributes)
    resource_type: str | None = None

    @property
    def type(self) -> t.Literal["basic", "resource"]:
        """``"resource"`` when bound to a resource type, else ``"basic"``."""
        return "resource" if self.resource_type else "basic"


def create_permission(
    name: str,
    attributes: t.Mapping[str, t.Any] | None = None,
    resource_type: str | None = None,
) -> Permission:
    """A validated :class:`Permission`, e.g. ``create_permission("catalog.entity.read",
    {"action": "read"}, "catalog-entity")``.

    :raises ValueError: an empty name, an unknown attribute, an action other
        than create/read/update/delete, or an empty resource type.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("A permission name must be a non-empty string")
    attributes = dict(attributes or {})
    unknown = sorted(str(key) for key in attributes if key != "action")
    if unknown:
        raise ValueError(f"Unknown permission attribute(s): {', '.join(unknown)}")
    action = attributes.get("action")
    if action is not None and action not in PERMISSION_ACTIONS:
        raise ValueError(
            f"Invalid permission action {action!r}; expected one of {', '.join(PERMISSION_ACTIONS)}"
        )
    if resource_type is not None and (not isinstance(resource_type, str) or not resource_type):
        raise ValueError("A permission resource type must be a non-empty string")
    return Permission(
        name, PermissionAttributes(t.cast("PermissionAction | None", action)), resource_type
    )


@dataclass(frozen=True)
class PolicyQuery:
    """What a policy is asked: a permission, optionally for one resource."""

    permission: Permission
    resource_ref: str | None = None


class PermissionPolicy(t.Protocol):
    """Decides whether ``credentials`` may use ``query.permission``."""

    def handle(self, query: PolicyQuery, credentials: Credentials) -> PolicyDecision:
        """The decision; raising denies the request (the error propagates)."""


class AllowAllPolicy:
    """Allows everything (Backstage's ``AllowAllPermissionPolicy``)."""

    def handle(self, query: PolicyQuery, credentials: Credentials) -> PolicyDecision:
        return ALLOW


class DenyAllPolicy:
    """Denies everything."""

    def handle(self, query: PolicyQuery, credentials: Credentials) -> PolicyDecision:
        return DENY


def is_restricted_out(principal: Principal, permission: Permission) -> bool:
    """Whether a service principal's access restrictions forbid ``permission``.

    Only the restriction rule: a listed ``permission_names`` must contain the
    name; listed ``actions`` must contain the permission's action (a permission
    without an action is then refused). Unrestricted principals pass.
    """
    if not isinstance(principal, (ServicePrincipal, UserPrincipal, UserPrincipal)):
        return False
    restrictions = principal.access_restrictions
    if restrictions is None:
        return False
    if restrictions.permission_names is not None:
        if permission.name not in restrictions.permission_names:
            return True
    if restrictions.actions is not None:
        action = permission.attributes.action
        if action is None or action not in restrictions.actions:
            return True
    return False


class PermissionsService:
    """Authorizes permissions: access restrictions first, then the policy.

    :param enabled: ``permission.enabled``; when false, every permission that
        passes the access restrictions is allowed and the policy is not asked.
    :param policy: required when ``enabled``.
    :param token_manager: when ``enabled``, an insecure (noop) manager is
        refused.
    :raises ConfigError: ``enabled`` without a policy, or with a noop token
        manager.
    """

    #: Where denials are audited (``permission-denied``; the extension sets it).
    auditor: AuditorService | None = None

    def __init__(
        self,
        *,
        enabled: bool,
        policy: PermissionPolicy | None,
        token_manager: object | None = None,
    ) -> None:
        if enabled:
            if getattr(token_manager, "is_insecure", False):
                raise ConfigError(NOOP_TOKEN_MANAGER_MESSAGE)
            if policy is None:
                raise ConfigError(NO_POLICY_MESSAGE)
        self.enabled = enabled
        self.policy = policy

    @classmethod
    def from_config(
        cls,
        config: ConfigReader | t.Mapping[str, t.Any] | None,
        *,
        policy: PermissionPolicy | None = None,
        token_manager: object | None = None,
    ) -> PermissionsService:
        """A service reading ``permission.enabled`` (default false).

        :raises ConfigError: the value is not a boolean, or see the constructor.
        """
        enabled = as_reader(config).get_bool("permission.enabled")
        return cls(enabled=enabled, policy=policy, token_manager=token_manager)

    def authorize(
        self,
        credentials: Credentials,
        permission: Permission,
        *,
        resource_ref: str | None = None,
    ) -> PolicyDecision:
        """The decision for one permission. A policy's exception propagates."""
        return self._decide(credentials, PolicyQuery(permission, resource_ref))

    def authorize_many(
        self, credentials: Credentials, queries: t.Sequence[PolicyQuery]
    ) -> list[PolicyDecision]:
        """The decisions for several queries, in order."""
        return [self._decide(credentials, query) for query in queries]

    def require(
        self,
        credentials: Credentials,
        permission: Permission,
        *,
        resource_ref: str | None = None,
    ) -> None:
        """Return if allowed.

        :raises NotAllowedError: ``Permission denied: <permission name>``.
        """
        decision = self.authorize(credentials, permission, resource_ref=resource_ref)
        if decision.result is not AuthorizeResult.ALLOW:
            raise NotAllowedError(f"Permission denied: {permission.name}")

    def _decide(self, credentials: Credentials, query: PolicyQuery) -> PolicyDecision:
        if is_restricted_out(credentials.principal, query.permission):
            audit_denial(self.auditor, credentials, query, "access-restrictions")
            return DENY
        if not self.enabled:
            return ALLOW
        if self.policy is None:  # only if mutated after __init__; fail closed
            raise ConfigError(NO_POLICY_MESSAGE)
        decision = self.policy.handle(query, credentials)
        if not isinstance(decision, PolicyDecision) or not isinstance(
            decision.result, AuthorizeResult
        ):
            # Fail closed on a malformed answer rather than guess.
            raise TypeError(
                f"Permission policy {type(self.policy).__name__} returned"
                f" {type(decision).__name__}, expected a PolicyDecision"
            )
        if decision.result is AuthorizeResult.DENY:
            audit_denial(self.auditor, credentials, query, "policy")
        return decision
