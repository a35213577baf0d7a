"""Permissions, as Backstage's ``PermissionsService`` and permission framework.

:class:`PermissionsService` enforces a caller's ``accessRestrictions`` first;
then, with ``permission.enabled: true``, a local :class:`PermissionPolicy`
decides (standalone apps), or else the deployment's permission backend
(``POST <permission>/authorize``). With permissions disabled, whatever passes
the restrictions is allowed. Resource permissions may get a conditional
decision, which the plugin owning the resource type applies with its rules.

One concern per module:

* ``model``: permissions, queries, decisions;
* ``service``: the service and the restriction rule;
* ``local``: the local policy and its evaluator;
* ``remote``: the permission backend's client;
* ``rules`` and ``conditions``: permission rules, criteria trees, applying
  and transforming them, condition exports for policies;
* ``integration``: a plugin's permissions, resource types and rules, and its
  ``/.well-known/backstage/permissions/`` endpoints.
"""

from __future__ import annotations

# Importable from here as before; documented in flask_backstage_auth.credentials.
from flask_backstage_auth.credentials import PERMISSION_ACTIONS as PERMISSION_ACTIONS
from flask_backstage_auth.credentials import Credentials as Credentials
from flask_backstage_auth.credentials import Principal as Principal
from flask_backstage_auth.credentials import ServicePrincipal as ServicePrincipal
from flask_backstage_auth.credentials import UserPrincipal as UserPrincipal
from flask_backstage_auth.permissions.conditions import (
    MAX_CRITERIA_DEPTH,
    ConditionExports,
    PermissionCondition,
    PermissionCriteria,
    apply_conditions,
    create_condition_exports,
    create_condition_filter,
    create_condition_transformer,
    parse_criteria,
)
from flask_backstage_auth.permissions.integration import (
    NotImplementedBackstageError,
    PermissionIntegration,
)
from flask_backstage_auth.permissions.local import (
    AllowAllPolicy,
    DenyAllPolicy,
    LocalPolicyEvaluator,
    PermissionPolicy,
)
from flask_backstage_auth.permissions.model import (
    ALLOW,
    DENY,
    AuthorizeResult,
    ConditionalPolicyDecision,
    Permission,
    PermissionAction,
    PermissionAttributes,
    PolicyDecision,
    PolicyQuery,
    QueryDecision,
    create_permission,
    is_resource_permission,
)
from flask_backstage_auth.permissions.remote import PermissionBackendUnavailable, PermissionClient
from flask_backstage_auth.permissions.rules import (
    PermissionRule,
    PermissionRuleset,
    create_permission_rule,
)
from flask_backstage_auth.permissions.service import (
    NO_POLICY_MESSAGE,
    NOOP_TOKEN_MANAGER_MESSAGE,
    PermissionsService,
    is_restricted_out,
)

__all__ = [
    "ALLOW",
    "DENY",
    "MAX_CRITERIA_DEPTH",
    "NOOP_TOKEN_MANAGER_MESSAGE",
    "NO_POLICY_MESSAGE",
    "AllowAllPolicy",
    "AuthorizeResult",
    "ConditionExports",
    "ConditionalPolicyDecision",
    "DenyAllPolicy",
    "LocalPolicyEvaluator",
    "NotImplementedBackstageError",
    "Permission",
    "PermissionAction",
    "PermissionAttributes",
    "PermissionBackendUnavailable",
    "PermissionClient",
    "PermissionCondition",
    "PermissionCriteria",
    "PermissionIntegration",
    "PermissionPolicy",
    "PermissionRule",
    "PermissionRuleset",
    "PermissionsService",
    "PolicyDecision",
    "PolicyQuery",
    "QueryDecision",
    "apply_conditions",
    "create_condition_exports",
    "create_condition_filter",
    "create_condition_transformer",
    "create_permission",
    "create_permission_rule",
    "is_resource_permission",
    "is_restricted_out",
    "parse_criteria",
]
