"""``PermissionsService``: access restrictions first, then who decides.

The order of Backstage's ``ServerPermissionClient``:

1. the caller's access restrictions deny what they do not cover;
2. with ``permission.enabled: false``, the rest is allowed;
3. with a local :class:`~flask_backstage_auth.permissions.PermissionPolicy`,
   it decides (for every principal, as before);
4. else the deployment's permission backend decides, except for service
   principals, whose restrictions are the whole decision (Backstage never asks
   the backend for them: its ``/authorize`` accepts users and ``none`` only).
"""

from __future__ import annotations

import typing as t

from flask_backstage_auth.audit.refusals import audit_denial
from flask_backstage_auth.audit.service import AuditorService
from flask_backstage_auth.config.reader import ConfigReader, as_reader
from flask_backstage_auth.credentials import (
    Credentials,
    Principal,
    ServicePrincipal,
    UserPrincipal,
)
from flask_backstage_auth.errors import ConfigError, NotAllowedError
from flask_backstage_auth.permissions.local import LocalPolicyEvaluator, PermissionPolicy
from flask_backstage_auth.permissions.model import (
    ALLOW,
    DENY,
    AuthorizeResult,
    Permission,
    PolicyDecision,
    PolicyQuery,
    QueryDecision,
)
from flask_backstage_auth.permissions.remote import PermissionClient

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.permissions.integration import PermissionIntegration

NOOP_TOKEN_MANAGER_MESSAGE = (
    "Service-to-service authentication must be configured before enabling permissions."
    " Read more here https://backstage.io/docs/auth/service-to-service-auth"
)

NO_POLICY_MESSAGE = (
    "permission.enabled is true but no permission policy was given and no permission"
    " backend to ask; pass one: BackstageAuth(app, permission_policy=...), or"
    " PermissionsService(policy=...) or PermissionsService(client=...)"
)


def is_restricted_out(principal: Principal, permission: Permission) -> bool:
    """Whether a principal's access restrictions forbid ``permission``.

    Only the restriction rule: a listed ``permission_names`` must contain the
    name; listed ``actions`` must contain the permission's action (a permission
    without an action is then refused). Unrestricted principals pass.
    """
    if not isinstance(principal, (ServicePrincipal, UserPrincipal)):
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
    """Authorizes permissions: access restrictions first, then the policy or
    the permission backend.

    :param enabled: ``permission.enabled``; when false, every permission that
        passes the access restrictions is allowed and nobody is asked.
    :param policy: a local policy (standalone apps); it takes precedence.
    :param client: the permission backend, asked without a ``policy``.
    :param token_manager: when ``enabled``, an insecure (noop) manager is refused.
    :param integrations: the permission integration of a plugin served here
        (to apply a local policy's conditional decision to one resource).
    :raises ConfigError: ``enabled`` without a policy or client, or with a
        noop token manager.
    """

    #: Where denials are audited (``permission-denied``; the extension sets it).
    auditor: AuditorService | None = None

    def __init__(
        self,
        *,
        enabled: bool,
        policy: PermissionPolicy | None = None,
        token_manager: object | None = None,
        client: PermissionClient | None = None,
        integrations: t.Callable[[str], PermissionIntegration | None] | None = None,
    ) -> None:
        if enabled:
            if getattr(token_manager, "is_insecure", False):
                raise ConfigError(NOOP_TOKEN_MANAGER_MESSAGE)
            if policy is None and client is None:
                raise ConfigError(NO_POLICY_MESSAGE)
        self.enabled = enabled
        self.policy = policy
        self.client = client
        self._integrations = integrations

    @classmethod
    def from_config(
        cls,
        config: ConfigReader | t.Mapping[str, t.Any] | None,
        *,
        policy: PermissionPolicy | None = None,
        token_manager: object | None = None,
        client: t.Callable[[bool], PermissionClient] | None = None,
        integrations: t.Callable[[str], PermissionIntegration | None] | None = None,
    ) -> PermissionsService:
        """A service reading ``permission.enabled`` (default false) and
        ``permission.EXPERIMENTAL_enableBatchedRequests``.

        :param client: makes the permission backend's client (given the
            batching flag), used when enabled without a ``policy``.
        :raises ConfigError: a value is not a boolean, or see the constructor.
        """
        reader = as_reader(config)
        enabled = reader.get_bool("permission.enabled")
        batched = reader.get_bool("permission.EXPERIMENTAL_enableBatchedRequests")
        remote = client(batched) if enabled and policy is None and client is not None else None
        return cls(
            enabled=enabled,
            policy=policy,
            token_manager=token_manager,
            client=remote,
            integrations=integrations,
        )

    @property
    def remote(self) -> bool:
        """Whether the permission backend decides (no local policy)."""
        return self.enabled and self.policy is None and self.client is not None

    def authorize(
        self,
        credentials: Credentials,
        permission: Permission,
        *,
        resource_ref: str | None = None,
    ) -> PolicyDecision:
        """The decision (ALLOW or DENY) for one permission.

        :raises PermissionBackendUnavailable: the permission backend gave no
            valid answer (503). A local policy's exception propagates.
        """
        return self.authorize_many(credentials, [PolicyQuery(permission, resource_ref)])[0]

    def authorize_many(
        self, credentials: Credentials, queries: t.Sequence[PolicyQuery]
    ) -> list[PolicyDecision]:
        """The decisions for several queries, in order (one call to the permission backend)."""
        decisions: list[PolicyDecision | None] = [
            self._precheck(credentials, query.permission) for query in queries
        ]
        asked = [i for i, decision in enumerate(decisions) if decision is None]
        if asked:
            answers = self._evaluator().authorize(credentials, [queries[i] for i in asked])
            for index, answer in zip(asked, answers):
                decisions[index] = answer
        self._audit_denials(credentials, queries, decisions, asked)
        return t.cast("list[PolicyDecision]", decisions)

    def authorize_conditional(
        self, credentials: Credentials, permission: Permission
    ) -> QueryDecision:
        """ALLOW, DENY or a :class:`~flask_backstage_auth.permissions.ConditionalPolicyDecision`
        for a resource permission, for filtering many resources at once: apply
        the conditions with the plugin's rules (``apply_conditions``,
        ``create_condition_transformer``).

        :raises ValueError: a basic permission.
        :raises PermissionBackendUnavailable: no valid answer (503).
        """
        return self.authorize_conditional_many(credentials, [permission])[0]

    def authorize_conditional_many(
        self, credentials: Credentials, permissions: t.Sequence[Permission]
    ) -> list[QueryDecision]:
        """:meth:`authorize_conditional` for several permissions, in order."""
        for permission in permissions:
            if not permission.resource_type:
                raise ValueError(
                    f"authorize_conditional needs a resource permission, not {permission.name}"
                )
        decisions: list[QueryDecision | None] = [
            self._precheck(credentials, permission) for permission in permissions
        ]
        asked = [i for i, decision in enumerate(decisions) if decision is None]
        if asked:
            answers = self._evaluator().authorize_conditional(
                credentials, [permissions[i] for i in asked]
            )
            for index, answer in zip(asked, answers):
                decisions[index] = answer
        self._audit_denials(credentials, [PolicyQuery(p) for p in permissions], decisions, asked)
        return t.cast("list[QueryDecision]", decisions)

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

    def _audit_denials(
        self,
        credentials: Credentials,
        queries: t.Sequence[PolicyQuery],
        decisions: t.Sequence[QueryDecision | None],
        asked: t.Collection[int],
    ) -> None:
        asked = set(asked)
        for index, (query, decision) in enumerate(zip(queries, decisions)):
            if getattr(decision, "result", None) is AuthorizeResult.DENY:
                by: t.Literal["policy", "access-restrictions"] = (
                    "policy" if index in asked else "access-restrictions"
                )
                audit_denial(self.auditor, credentials, query.permission, query.resource_ref, by)

    def _precheck(self, credentials: Credentials, permission: Permission) -> PolicyDecision | None:
        """The decision made without asking anyone, if there is one."""
        if is_restricted_out(credentials.principal, permission):
            return DENY
        if not self.enabled:
            return ALLOW
        if self.remote and credentials.principal.type == "service":
            return ALLOW
        return None

    def _evaluator(self) -> LocalPolicyEvaluator | PermissionClient:
        if self.policy is not None:
            return LocalPolicyEvaluator(self.policy, self._integrations)
        if self.client is None:  # only if mutated after __init__; fail closed
            raise ConfigError(NO_POLICY_MESSAGE)
        return self.client
