"""Permissions, queries and decisions, as Backstage's ``plugin-permission-common``."""

from __future__ import annotations

import enum
import typing as t
from dataclasses import dataclass, field

from flask_backstage_auth.credentials import PERMISSION_ACTIONS

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.permissions.conditions import PermissionCriteria

#: What a permission does to its resource.
PermissionAction = t.Literal["create", "read", "update", "delete"]


class AuthorizeResult(enum.Enum):
    """The outcome of an authorization."""

    ALLOW = "ALLOW"
    DENY = "DENY"
    #: Allowed for the resources that meet the decision's conditions.
    CONDITIONAL = "CONDITIONAL"


@dataclass(frozen=True)
class PolicyDecision:
    """A definitive answer: ``ALLOW`` or ``DENY``."""

    result: AuthorizeResult


ALLOW = PolicyDecision(AuthorizeResult.ALLOW)
DENY = PolicyDecision(AuthorizeResult.DENY)


@dataclass(frozen=True)
class ConditionalPolicyDecision:
    """Allowed where ``conditions`` hold for the resource (Backstage's
    ``ConditionalPolicyDecision``); only for resource permissions.

    :param plugin_id: the plugin that owns the resource type and its rules.
    """

    plugin_id: str
    resource_type: str
    conditions: PermissionCriteria
    result: t.Literal[AuthorizeResult.CONDITIONAL] = field(
        default=AuthorizeResult.CONDITIONAL, init=False
    )

    def to_dict(self) -> dict[str, t.Any]:
        """The wire form: ``{result, pluginId, resourceType, conditions}``."""
        return {
            "result": "CONDITIONAL",
            "pluginId": self.plugin_id,
            "resourceType": self.resource_type,
            "conditions": self.conditions,
        }


#: What :meth:`~flask_backstage_auth.permissions.PermissionsService.authorize_conditional`
#: answers.
QueryDecision = t.Union[PolicyDecision, ConditionalPolicyDecision]


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

    def to_dict(self) -> dict[str, t.Any]:
        """The wire form, as Backstage's ``createPermission`` builds it."""
        attributes: dict[str, t.Any] = {}
        if self.attributes.action is not None:
            attributes["action"] = self.attributes.action
        data: dict[str, t.Any] = {"type": self.type, "name": self.name, "attributes": attributes}
        if self.resource_type:
            data["resourceType"] = self.resource_type
        return data


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


def is_resource_permission(permission: Permission, resource_type: str | None = None) -> bool:
    """Whether ``permission`` is bound to a resource type (``resource_type``, if given)."""
    if not permission.resource_type:
        return False
    return resource_type is None or permission.resource_type == resource_type


@dataclass(frozen=True)
class PolicyQuery:
    """What a policy is asked: a permission, optionally for one resource."""

    permission: Permission
    resource_ref: str | None = None
