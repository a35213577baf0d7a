from __future__ import annotations

import json
import typing as t

import pytest
from werkzeug.wrappers import Response

from flask_backstage_auth.config.reader import ConfigReader
from flask_backstage_auth.credentials import (
    NONE_CREDENTIALS,
    AccessRestrictions,
    Credentials,
    ServicePrincipal,
    UserPrincipal,
)
from flask_backstage_auth.errors import ConfigError, NotAllowedError
from flask_backstage_auth.legacy.token_manager import ServerTokenManager
from flask_backstage_auth.permissions import (
    AllowAllPolicy,
    AuthorizeResult,
    DenyAllPolicy,
    Permission,
    PermissionAttributes,
    PermissionsService,
    PolicyDecision,
    PolicyQuery,
    create_permission,
    is_restricted_out,
)

NOOP_MESSAGE = (
    "Service-to-service authentication must be configured before enabling permissions."
    " Read more here https://backstage.io/docs/auth/service-to-service-auth"
)

READ = create_permission("catalog.entity.read", {"action": "read"}, "catalog-entity")
DELETE = create_permission("catalog.entity.delete", {"action": "delete"}, "catalog-entity")
REFRESH = create_permission("catalog.entity.refresh")  # no action

USER = Credentials(UserPrincipal("user:default/jane"))
SERVICE = Credentials(ServicePrincipal("plugin:search"))


def restricted(
    names: t.Sequence[str] | None = None, actions: t.Sequence[str] | None = None
) -> Credentials:
    restrictions = AccessRestrictions(
        tuple(names) if names is not None else None,
        tuple(actions) if actions is not None else None,
    )
    return Credentials(ServicePrincipal("external:ci", restrictions))


class RecordingPolicy:
    """Answers ``result`` and records every call."""

    def __init__(self, result: AuthorizeResult = AuthorizeResult.ALLOW) -> None:
        self.result = result
        self.calls: list[tuple[PolicyQuery, Credentials]] = []

    def handle(self, query: PolicyQuery, credentials: Credentials) -> PolicyDecision:
        self.calls.append((query, credentials))
        return PolicyDecision(self.result)


class BrokenPolicy:
    def handle(self, query: PolicyQuery, credentials: Credentials) -> PolicyDecision:
        raise RuntimeError("policy backend down")


def enabled(policy: t.Any) -> PermissionsService:
    return PermissionsService(
        enabled=True, policy=policy, token_manager=ServerTokenManager([b"k" * 32])
    )


# create_permission


def test_create_permission_basic_and_resource() -> None:
    basic = create_permission("catalog.entity.create", {"action": "create"})
    assert basic == Permission("catalog.entity.create", PermissionAttributes("create"))
    assert basic.type == "basic"
    assert basic.resource_type is None
    assert READ.type == "resource"
    assert READ.resource_type == "catalog-entity"
    assert READ.attributes.action == "read"
    assert REFRESH.attributes == PermissionAttributes(None)


@pytest.mark.parametrize("action", ["create", "read", "update", "delete"])
def test_create_permission_accepts_every_action(action: str) -> None:
    assert create_permission("p", {"action": action}).attributes.action == action


@pytest.mark.parametrize("name", ["", None, 3])
def test_create_permission_rejects_bad_name(name: t.Any) -> None:
    with pytest.raises(ValueError, match="name"):
        create_permission(name)


@pytest.mark.parametrize("action", ["READ", "execute", "", 1])
def test_create_permission_rejects_bad_action(action: t.Any) -> None:
    with pytest.raises(ValueError, match="action"):
        create_permission("p", {"action": action})


def test_create_permission_rejects_unknown_attribute_and_empty_resource_type() -> None:
    with pytest.raises(ValueError, match="verb"):
        create_permission("p", {"verb": "read"})
    with pytest.raises(ValueError, match="resource type"):
        create_permission("p", None, "")


def test_permission_is_frozen() -> None:
    with pytest.raises(AttributeError):
        READ.name = "other"  # type: ignore[misc]


# access restrictions


def test_restriction_by_permission_name() -> None:
    creds = restricted(names=["catalog.entity.read"])
    service = enabled(AllowAllPolicy())
    assert service.authorize(creds, READ).result is AuthorizeResult.ALLOW
    assert service.authorize(creds, DELETE).result is AuthorizeResult.DENY
    assert is_restricted_out(creds.principal, DELETE)
    assert not is_restricted_out(creds.principal, READ)


def test_restriction_by_action() -> None:
    creds = restricted(actions=["read"])
    service = enabled(AllowAllPolicy())
    assert service.authorize(creds, READ).result is AuthorizeResult.ALLOW
    assert service.authorize(creds, DELETE).result is AuthorizeResult.DENY


def test_action_restriction_denies_permission_without_action() -> None:
    creds = restricted(actions=["read", "create", "update", "delete"])
    assert is_restricted_out(creds.principal, REFRESH)
    assert enabled(AllowAllPolicy()).authorize(creds, REFRESH).result is AuthorizeResult.DENY


def test_restriction_by_name_and_action_both_must_match() -> None:
    creds = restricted(names=["catalog.entity.read", "catalog.entity.delete"], actions=["read"])
    service = enabled(AllowAllPolicy())
    assert service.authorize(creds, READ).result is AuthorizeResult.ALLOW
    # name listed, action not
    assert service.authorize(creds, DELETE).result is AuthorizeResult.DENY
    # action matches, name not listed
    other_read = create_permission("scaffolder.template.read", {"action": "read"})
    assert service.authorize(creds, other_read).result is AuthorizeResult.DENY


def test_empty_restriction_lists_deny_everything() -> None:
    assert is_restricted_out(restricted(names=[]).principal, READ)
    assert is_restricted_out(restricted(actions=[]).principal, READ)


def test_restriction_applies_even_when_disabled_and_skips_the_policy() -> None:
    policy = RecordingPolicy()
    creds = restricted(names=["catalog.entity.read"])
    disabled = PermissionsService(enabled=False, policy=policy)
    assert disabled.authorize(creds, DELETE).result is AuthorizeResult.DENY
    assert enabled(policy).authorize(creds, DELETE).result is AuthorizeResult.DENY
    assert policy.calls == []


@pytest.mark.parametrize(
    "creds",
    [
        USER,
        SERVICE,
        Credentials(ServicePrincipal("external:ci", AccessRestrictions())),
        NONE_CREDENTIALS,
    ],
    ids=["user", "service", "service-empty-restrictions", "none"],
)
def test_unrestricted_principals_reach_the_policy(creds: Credentials) -> None:
    assert not is_restricted_out(creds.principal, REFRESH)
    policy = RecordingPolicy(AuthorizeResult.DENY)
    assert enabled(policy).authorize(creds, REFRESH).result is AuthorizeResult.DENY
    assert policy.calls == [(PolicyQuery(REFRESH), creds)]


def test_user_with_restricted_actor_is_not_restricted() -> None:
    actor = ServicePrincipal("plugin:x", AccessRestrictions(permission_names=()))
    assert not is_restricted_out(UserPrincipal("user:default/jane", actor), READ)


# enabled / disabled


def test_disabled_allows_without_calling_the_policy() -> None:
    policy = RecordingPolicy(AuthorizeResult.DENY)
    service = PermissionsService(enabled=False, policy=policy)
    assert service.authorize(USER, DELETE).result is AuthorizeResult.ALLOW
    assert service.authorize(SERVICE, REFRESH, resource_ref="component:default/x") == (
        PolicyDecision(AuthorizeResult.ALLOW)
    )
    assert policy.calls == []


def test_disabled_needs_no_policy_and_accepts_a_noop_token_manager() -> None:
    service = PermissionsService(
        enabled=False, policy=None, token_manager=ServerTokenManager.noop()
    )
    assert service.authorize(USER, DELETE).result is AuthorizeResult.ALLOW


@pytest.mark.parametrize("result", [AuthorizeResult.ALLOW, AuthorizeResult.DENY])
def test_enabled_returns_the_policy_decision(result: AuthorizeResult) -> None:
    policy = RecordingPolicy(result)
    decision = enabled(policy).authorize(USER, READ, resource_ref="component:default/x")
    assert decision == PolicyDecision(result)
    assert len(policy.calls) == 1
    query, creds = policy.calls[0]
    assert query == PolicyQuery(READ, "component:default/x")
    assert query.permission is READ
    assert creds is USER


def test_ready_policies() -> None:
    assert enabled(AllowAllPolicy()).authorize(USER, DELETE).result is AuthorizeResult.ALLOW
    assert enabled(DenyAllPolicy()).authorize(USER, READ).result is AuthorizeResult.DENY


def test_enabled_without_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="policy"):
        PermissionsService(enabled=True, policy=None, token_manager=ServerTokenManager([b"k" * 32]))


def test_enabled_with_noop_token_manager_refuses_to_start() -> None:
    with pytest.raises(ConfigError) as info:
        PermissionsService(
            enabled=True, policy=AllowAllPolicy(), token_manager=ServerTokenManager.noop()
        )
    assert str(info.value) == NOOP_MESSAGE


def test_enabled_with_real_token_manager_starts() -> None:
    service = PermissionsService(
        enabled=True, policy=DenyAllPolicy(), token_manager=ServerTokenManager([b"k" * 32])
    )
    assert service.enabled is True
    assert service.authorize(USER, READ).result is AuthorizeResult.DENY


def test_authorize_many_keeps_order_and_applies_restrictions() -> None:
    policy = RecordingPolicy(AuthorizeResult.ALLOW)
    creds = restricted(actions=["read"])
    queries = [PolicyQuery(READ, "component:default/a"), PolicyQuery(DELETE), PolicyQuery(READ)]
    decisions = enabled(policy).authorize_many(creds, queries)
    assert [d.result for d in decisions] == [
        AuthorizeResult.ALLOW,
        AuthorizeResult.DENY,
        AuthorizeResult.ALLOW,
    ]
    assert [q for q, _ in policy.calls] == [queries[0], queries[2]]
    assert enabled(policy).authorize_many(creds, []) == []


# from_config


@pytest.mark.parametrize("value", [True, "true", "TRUE"])
def test_from_config_enabled(value: t.Any) -> None:
    policy = RecordingPolicy(AuthorizeResult.DENY)
    service = PermissionsService.from_config(
        {"permission": {"enabled": value}},
        policy=policy,
        token_manager=ServerTokenManager([b"k" * 32]),
    )
    assert service.enabled is True
    assert service.authorize(USER, READ).result is AuthorizeResult.DENY
    assert len(policy.calls) == 1


@pytest.mark.parametrize(
    "config",
    [
        None,
        {},
        {"permission": {}},
        {"permission": {"enabled": False}},
        {"permission": {"enabled": "false"}},
    ],
)
def test_from_config_disabled(config: t.Any) -> None:
    policy = RecordingPolicy(AuthorizeResult.DENY)
    service = PermissionsService.from_config(config, policy=policy)
    assert service.enabled is False
    assert service.authorize(USER, READ).result is AuthorizeResult.ALLOW
    assert policy.calls == []


def test_from_config_accepts_a_reader() -> None:
    reader = ConfigReader({"permission": {"enabled": True}})
    service = PermissionsService.from_config(
        reader, policy=AllowAllPolicy(), token_manager=ServerTokenManager([b"k" * 32])
    )
    assert service.enabled is True


@pytest.mark.parametrize("value", ["yes", 1, ["true"]])
def test_from_config_non_boolean_is_a_config_error(value: t.Any) -> None:
    with pytest.raises(ConfigError, match=r"permission\.enabled"):
        PermissionsService.from_config({"permission": {"enabled": value}}, policy=AllowAllPolicy())


def test_from_config_enabled_checks_token_manager_and_policy() -> None:
    config = {"permission": {"enabled": "true"}}
    with pytest.raises(ConfigError) as info:
        PermissionsService.from_config(
            config, policy=AllowAllPolicy(), token_manager=ServerTokenManager.noop()
        )
    assert str(info.value) == NOOP_MESSAGE
    with pytest.raises(ConfigError, match="policy"):
        PermissionsService.from_config(config, token_manager=ServerTokenManager([b"k" * 32]))


# require


def test_require_passes_when_allowed() -> None:
    policy = RecordingPolicy(AuthorizeResult.ALLOW)
    enabled(policy).require(USER, READ, resource_ref="component:default/x")
    assert policy.calls == [(PolicyQuery(READ, "component:default/x"), USER)]


def test_require_raises_not_allowed_with_backstage_body() -> None:
    service = enabled(DenyAllPolicy())
    with pytest.raises(NotAllowedError) as info:
        service.require(USER, DELETE, resource_ref="component:default/secret-thing")
    error = info.value
    assert error.code == 403
    assert error.message == "Permission denied: catalog.entity.delete"
    response = t.cast(Response, error.get_response())
    assert response.status_code == 403
    assert response.headers["Content-Type"].startswith("application/json")
    body = json.loads(response.get_data(as_text=True))
    assert body == {
        "error": {"name": "NotAllowedError", "message": "Permission denied: catalog.entity.delete"},
        "response": {"statusCode": 403},
    }
    assert "secret-thing" not in response.get_data(as_text=True)
    assert "jane" not in response.get_data(as_text=True)


def test_require_denies_restricted_service() -> None:
    with pytest.raises(NotAllowedError, match=r"Permission denied: catalog\.entity\.delete$"):
        enabled(AllowAllPolicy()).require(restricted(actions=["read"]), DELETE)


# failing closed


def test_policy_exception_propagates() -> None:
    service = enabled(BrokenPolicy())
    with pytest.raises(RuntimeError, match="policy backend down"):
        service.authorize(USER, READ)
    with pytest.raises(RuntimeError, match="policy backend down"):
        service.require(USER, READ)
    with pytest.raises(RuntimeError, match="policy backend down"):
        service.authorize_many(USER, [PolicyQuery(READ)])


@pytest.mark.parametrize(
    "answer",
    [
        None,
        "ALLOW",
        PolicyDecision("ALLOW"),  # type: ignore[arg-type]
        # CONDITIONAL without conditions is no decision at all
        PolicyDecision(AuthorizeResult.CONDITIONAL),
    ],
)
def test_malformed_policy_answer_is_not_an_allow(answer: t.Any) -> None:
    class Malformed:
        def handle(self, query: PolicyQuery, credentials: Credentials) -> t.Any:
            return answer

    service = enabled(Malformed())
    with pytest.raises(TypeError, match="expected a PolicyDecision"):
        service.authorize(USER, READ)
    with pytest.raises(TypeError):
        service.require(USER, READ)
