"""The local policy: decisions made in this process, for standalone apps.

What Backstage's permission backend does with its policy, without the
backend: the policy answers each query; a conditional answer for one resource
is applied to it through the owning plugin's
:class:`~flask_backstage_auth.permissions.integration.PermissionIntegration`
when that plugin is served here.
"""

from __future__ import annotations

import typing as t

from flask_backstage_auth.permissions.model import (
    ALLOW,
    DENY,
    AuthorizeResult,
    ConditionalPolicyDecision,
    Permission,
    PolicyDecision,
    PolicyQuery,
    QueryDecision,
)

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.credentials import Credentials
    from flask_backstage_auth.permissions.integration import PermissionIntegration


class PermissionPolicy(t.Protocol):
    """Decides whether ``credentials`` may use ``query.permission``."""

    def handle(self, query: PolicyQuery, credentials: Credentials) -> QueryDecision:
        """The decision; raising denies the request (the error propagates).

        A :class:`~flask_backstage_auth.permissions.ConditionalPolicyDecision`
        is allowed for resource permissions only.
        """


class AllowAllPolicy:
    """Allows everything (Backstage's ``AllowAllPermissionPolicy``)."""

    def handle(self, query: PolicyQuery, credentials: Credentials) -> QueryDecision:
        return ALLOW


class DenyAllPolicy:
    """Denies everything."""

    def handle(self, query: PolicyQuery, credentials: Credentials) -> QueryDecision:
        return DENY


class LocalPolicyEvaluator:
    """Asks a :class:`PermissionPolicy`; a malformed answer raises ``TypeError``.

    :param integrations: the integration of a plugin served here, or ``None``;
        used to apply a conditional decision to one resource.
    """

    def __init__(
        self,
        policy: PermissionPolicy,
        integrations: t.Callable[[str], PermissionIntegration | None] | None = None,
    ) -> None:
        self.policy = policy
        self._integrations = integrations

    def authorize(
        self, credentials: Credentials, queries: t.Sequence[PolicyQuery]
    ) -> list[PolicyDecision]:
        """A definitive decision per query, in order."""
        decisions = []
        for query in queries:
            decision = self._ask(query, credentials)
            if isinstance(decision, ConditionalPolicyDecision):
                decision = self._apply(query, decision)
            decisions.append(decision)
        return decisions

    def authorize_conditional(
        self, credentials: Credentials, permissions: t.Sequence[Permission]
    ) -> list[QueryDecision]:
        """A decision per permission (conditions left to the caller to apply)."""
        return [self._ask(PolicyQuery(permission), credentials) for permission in permissions]

    def _ask(self, query: PolicyQuery, credentials: Credentials) -> QueryDecision:
        decision = self.policy.handle(query, credentials)
        if isinstance(decision, ConditionalPolicyDecision):
            permission = query.permission
            if not permission.resource_type:
                raise TypeError(
                    "Conditional decision returned from permission policy for non-resource"
                    f" permission {permission.name}"
                )
            if decision.resource_type != permission.resource_type:
                raise TypeError(
                    "Invalid resource conditions returned from permission policy for"
                    f" permission {permission.name}"
                )
            return decision
        if not isinstance(decision, PolicyDecision) or decision.result not in (
            AuthorizeResult.ALLOW,
            AuthorizeResult.DENY,
        ):
            # Fail closed on a malformed answer rather than guess.
            what = type(decision).__name__
            if isinstance(decision, PolicyDecision):
                what = f"PolicyDecision({decision.result!r})"
            raise TypeError(
                f"Permission policy {type(self.policy).__name__} returned {what}, expected"
                " a PolicyDecision of ALLOW or DENY, or a ConditionalPolicyDecision"
            )
        return decision

    def _apply(self, query: PolicyQuery, decision: ConditionalPolicyDecision) -> PolicyDecision:
        integration = self._integrations(decision.plugin_id) if self._integrations else None
        if query.resource_ref is None or integration is None:
            raise TypeError(
                f"Permission policy {type(self.policy).__name__} returned a conditional decision"
                f" for {query.permission.name}, which needs a resourceRef and plugin"
                f" '{decision.plugin_id}' served here to apply it; use authorize_conditional"
            )
        allowed = integration.apply_to_refs(
            decision.resource_type, [query.resource_ref], decision.conditions
        )[0]
        return ALLOW if allowed else DENY
