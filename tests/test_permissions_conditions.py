"""Rules, criteria trees, transformers, condition exports, and a local policy's
conditional decisions."""

from __future__ import annotations

import typing as t

import pytest

from flask_backstage_auth.credentials import Credentials, UserPrincipal
from flask_backstage_auth.errors import InputError
from flask_backstage_auth.legacy.token_manager import ServerTokenManager
from flask_backstage_auth.permissions import (
    ALLOW,
    DENY,
    AuthorizeResult,
    ConditionalPolicyDecision,
    PermissionIntegration,
    PermissionsService,
    PolicyQuery,
    QueryDecision,
    apply_conditions,
    create_condition_exports,
    create_condition_filter,
    create_condition_transformer,
    create_permission,
    create_permission_rule,
    parse_criteria,
)

READ = create_permission("doc.read", {"action": "read"}, "doc")
CREATE = create_permission("doc.create", {"action": "create"})
JANE = Credentials(UserPrincipal("user:default/jane"))
DOCS = {"d1": {"owner": "jane", "tags": ["a"]}, "d2": {"owner": "bob", "tags": ["b"]}}


def _owner(params: t.Mapping[str, t.Any]) -> None:
    if not isinstance(params.get("owner"), str):
        raise ValueError("owner must be a string")


OWNER = create_permission_rule(
    name="OWNER",
    description="owned by",
    resource_type="doc",
    validate_params=_owner,
    apply=lambda doc, p: doc["owner"] == p["owner"],
    to_query=lambda p: f"owner = {p['owner']}",
)
TAGGED = create_permission_rule(
    name="TAGGED",
    description="has the tag",
    resource_type="doc",
    apply=lambda doc, p: p["tag"] in doc["tags"],
    to_query=lambda p: f"tag = {p['tag']}",
)
RULES = [OWNER, TAGGED]
EXPORTS = create_condition_exports(
    plugin_id="docs", resource_type="doc", rules={"owner": OWNER, "tagged": TAGGED}
)
C = EXPORTS.conditions


# -- rules -----------------------------------------------------------------------


def test_create_permission_rule_validates() -> None:
    with pytest.raises(ValueError, match="name"):
        create_permission_rule(
            name="", description="", resource_type="doc", apply=bool, to_query=str
        )
    with pytest.raises(ValueError, match="resource type"):
        create_permission_rule(name="R", description="", resource_type="", apply=bool, to_query=str)
    with pytest.raises(ValueError, match="type 'object'"):
        create_permission_rule(
            name="R",
            description="",
            resource_type="doc",
            apply=bool,
            to_query=str,
            params_schema={"type": "string"},
        )


# -- condition exports -----------------------------------------------------------


def test_condition_factories_make_backstages_conditions() -> None:
    assert C["owner"](owner="jane") == {
        "rule": "OWNER",
        "resourceType": "doc",
        "params": {"owner": "jane"},
    }
    assert C["tagged"]({"tag": "a"}) == {
        "rule": "TAGGED",
        "resourceType": "doc",
        "params": {"tag": "a"},
    }
    assert C["owner"]() == {"rule": "OWNER", "resourceType": "doc"}
    decision = EXPORTS.create_conditional_decision(READ, {"anyOf": [C["owner"](owner="jane")]})
    assert decision.to_dict() == {
        "result": "CONDITIONAL",
        "pluginId": "docs",
        "resourceType": "doc",
        "conditions": {
            "anyOf": [{"rule": "OWNER", "resourceType": "doc", "params": {"owner": "jane"}}]
        },
    }
    with pytest.raises(ValueError, match="not of resource type 'doc'"):
        EXPORTS.create_conditional_decision(CREATE, C["owner"](owner="jane"))
    with pytest.raises(ValueError, match="not 'other'"):
        create_condition_exports(plugin_id="docs", resource_type="other", rules={"owner": OWNER})


# -- parse_criteria --------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        {},
        {"allOf": []},
        {"anyOf": "x"},
        {"not": None},
        {"allOf": [C["owner"](owner="x")], "anyOf": [C["owner"](owner="x")]},
        {"rule": "OWNER"},
        {"rule": 1, "resourceType": "doc"},
        {"rule": "OWNER", "resourceType": "doc", "params": None},
        {"rule": "OWNER", "resourceType": "doc", "extra": 1},
    ],
)
def test_parse_criteria_refuses_malformed_trees(value: t.Any) -> None:
    with pytest.raises(InputError, match="Invalid conditions"):
        parse_criteria(value)


def test_parse_criteria_keeps_valid_trees_and_bounds_depth() -> None:
    tree = {"allOf": [{"not": C["owner"](owner="x")}, {"anyOf": [C["tagged"](tag="a")]}]}
    assert parse_criteria(tree) == tree
    deep: t.Any = C["owner"](owner="x")
    for _ in range(3):
        deep = {"not": deep}
    assert parse_criteria(deep, max_depth=4) == deep
    with pytest.raises(InputError, match="deeper than 3"):
        parse_criteria(deep, max_depth=3)


# -- apply_conditions --------------------------------------------------------------


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        (C["owner"](owner="jane"), {"d1"}),
        ({"not": C["owner"](owner="jane")}, {"d2"}),
        ({"anyOf": [C["owner"](owner="jane"), C["tagged"](tag="b")]}, {"d1", "d2"}),
        ({"allOf": [C["owner"](owner="jane"), C["tagged"](tag="b")]}, set()),
        ({"allOf": [C["owner"](owner="bob"), {"not": C["tagged"](tag="a")}]}, {"d2"}),
    ],
)
def test_apply_conditions(tree: t.Any, expected: set[str]) -> None:
    assert {ref for ref, doc in DOCS.items() if apply_conditions(tree, doc, RULES)} == expected
    keep = create_condition_filter(RULES)(tree)
    assert {ref for ref, doc in DOCS.items() if keep(doc)} == expected


def test_no_resource_never_meets_conditions() -> None:
    assert apply_conditions({"not": C["owner"](owner="jane")}, None, RULES) is False


def test_unknown_rules_and_bad_params_are_refused() -> None:
    with pytest.raises(InputError, match="Unexpected permission rule: NOPE"):
        apply_conditions({"rule": "NOPE", "resourceType": "doc"}, DOCS["d1"], RULES)
    with pytest.raises(InputError, match="Parameters to rule are invalid; caused by ValueError"):
        apply_conditions(C["owner"](owner=3), DOCS["d1"], RULES)
    with pytest.raises(InputError, match="not 'img'"):
        apply_conditions({"rule": "OWNER", "resourceType": "img"}, DOCS["d1"], RULES)
    # the filter checks before any resource is tested
    with pytest.raises(InputError):
        create_condition_filter(RULES)({"not": C["owner"]()})


# -- transformers ------------------------------------------------------------------


def test_transformer_maps_to_backstages_shape() -> None:
    transform = create_condition_transformer({"o": OWNER, "t": TAGGED})
    tree = {"allOf": [C["owner"](owner="jane"), {"not": {"anyOf": [C["tagged"](tag="a")]}}]}
    assert transform(tree) == {"allOf": ["owner = jane", {"not": {"anyOf": ["tag = a"]}}]}


def test_transformer_folds_into_one_filter() -> None:
    transform = create_condition_transformer(
        RULES,
        all_of=lambda qs: "(" + " AND ".join(qs) + ")",
        any_of=lambda qs: "(" + " OR ".join(qs) + ")",
        not_=lambda q: f"NOT {q}",
    )
    tree = {"anyOf": [C["owner"](owner="jane"), {"not": C["tagged"](tag="b")}]}
    assert transform(tree) == "(owner = jane OR NOT tag = b)"
    with pytest.raises(TypeError):
        create_condition_transformer(RULES, all_of=lambda qs: qs[0])
    with pytest.raises(InputError, match="invalid"):
        transform(C["owner"]())
    with pytest.raises(ValueError, match="Duplicate"):
        create_condition_transformer([OWNER, OWNER])


# -- a local policy's conditional decisions -----------------------------------------


class ConditionalPolicy:
    def handle(self, query: PolicyQuery, credentials: Credentials) -> QueryDecision:
        if query.permission.resource_type == "doc":
            return EXPORTS.create_conditional_decision(query.permission, C["owner"](owner="jane"))
        return DENY


def local_service(policy: t.Any, integration: PermissionIntegration | None) -> PermissionsService:
    return PermissionsService(
        enabled=True,
        policy=policy,
        token_manager=ServerTokenManager([b"k" * 32]),
        integrations=lambda plugin_id: integration if plugin_id == "docs" else None,
    )


def docs_integration() -> PermissionIntegration:
    integration = PermissionIntegration("docs")
    integration.add_resource_type(
        "doc", get_resources=lambda refs: [DOCS.get(r) for r in refs], rules=RULES
    )
    return integration


def test_local_conditional_decisions() -> None:
    service = local_service(ConditionalPolicy(), docs_integration())
    decision = service.authorize_conditional(JANE, READ)
    assert isinstance(decision, ConditionalPolicyDecision)
    assert decision.result is AuthorizeResult.CONDITIONAL
    assert decision.conditions == C["owner"](owner="jane")
    # applied to one resource through the owning plugin's integration
    assert service.authorize(JANE, READ, resource_ref="d1") == ALLOW
    assert service.authorize(JANE, READ, resource_ref="d2") == DENY
    assert service.authorize(JANE, READ, resource_ref="missing") == DENY
    assert service.authorize(JANE, CREATE) == DENY
    with pytest.raises(ValueError, match="resource permission"):
        service.authorize_conditional(JANE, CREATE)


def test_a_local_conditional_decision_that_cannot_be_applied_is_no_allow() -> None:
    service = local_service(ConditionalPolicy(), None)
    with pytest.raises(TypeError, match="needs a resourceRef"):
        service.authorize(JANE, READ, resource_ref="d1")
    with pytest.raises(TypeError, match="needs a resourceRef"):
        local_service(ConditionalPolicy(), docs_integration()).authorize(JANE, READ)


@pytest.mark.parametrize(
    "decision",
    [
        ConditionalPolicyDecision(
            "docs", "doc", C["owner"](owner="jane")
        ),  # for a basic permission
        ConditionalPolicyDecision("docs", "img", C["owner"](owner="jane")),  # another type
    ],
)
def test_a_local_policy_may_not_misuse_conditions(decision: ConditionalPolicyDecision) -> None:
    class Bad:
        def handle(self, query: PolicyQuery, credentials: Credentials) -> QueryDecision:
            return decision

    service = local_service(Bad(), docs_integration())
    permission = CREATE if decision.resource_type == "doc" else READ
    with pytest.raises(TypeError, match="permission policy for"):
        service.authorize(JANE, permission, resource_ref="d1")


def test_disabled_permissions_allow_conditional_queries() -> None:
    service = PermissionsService(enabled=False)
    assert service.authorize_conditional(JANE, READ) == ALLOW
