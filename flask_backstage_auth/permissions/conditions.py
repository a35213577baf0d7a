"""Conditions: the criteria tree of a conditional decision, and what a plugin does with it.

A tree is JSON, as on Backstage's wire: a condition
``{"rule": "IS_OWNER", "resourceType": "catalog-entity", "params": {...}}``, or
``{"allOf": [...]}``, ``{"anyOf": [...]}`` (non-empty), ``{"not": ...}``.

* :func:`parse_criteria` checks a tree that came from elsewhere (bounded depth).
* :func:`apply_conditions` tests one resource against it (Backstage's
  ``applyConditions``; no resource is a no).
* :func:`create_condition_transformer` maps it to the rules' queries
  (``createConditionTransformer``), optionally folded into one filter.
* :func:`create_condition_exports` gives a plugin's condition factories and
  ``create_conditional_decision`` for policies (``createConditionExports``).
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from flask_backstage_auth.errors import InputError
from flask_backstage_auth.permissions.model import ConditionalPolicyDecision, Permission
from flask_backstage_auth.permissions.rules import PermissionRule, Rules, as_ruleset

R = t.TypeVar("R")
Q = t.TypeVar("Q")

#: How deep a tree may nest (Backstage sets none; real policies use a few levels).
MAX_CRITERIA_DEPTH = 32


class _ConditionBase(t.TypedDict):
    rule: str
    resourceType: str


class PermissionCondition(_ConditionBase, total=False):
    """``{"rule", "resourceType", "params"?}``: one rule to meet."""

    params: dict[str, t.Any]


class AllOfCriteria(t.TypedDict):
    allOf: list[PermissionCriteria]


class AnyOfCriteria(t.TypedDict):
    anyOf: list[PermissionCriteria]


# ``not`` is a keyword: declared the functional way.
NotCriteria = t.TypedDict("NotCriteria", {"not": "PermissionCriteria"})

#: A criteria tree.
PermissionCriteria = t.Union[PermissionCondition, AllOfCriteria, AnyOfCriteria, NotCriteria]

#: What a transformer makes of a tree without combinators: the same tree, each
#: condition replaced by its rule's query.
TransformedCriteria = t.Any

_CONDITION_KEYS = frozenset(("rule", "resourceType", "params"))


def parse_criteria(value: object, *, max_depth: int = MAX_CRITERIA_DEPTH) -> PermissionCriteria:
    """``value`` as a criteria tree, checked (and copied).

    Stricter than Backstage's schema, which drops unknown keys: a node must be
    exactly one of the four forms.

    :raises InputError: anything else, or a tree deeper than ``max_depth``.
    """
    return _parse(value, "conditions", 1, max_depth)


def _parse(value: object, path: str, depth: int, max_depth: int) -> PermissionCriteria:
    if depth > max_depth:
        raise InputError(f"Invalid conditions: nested deeper than {max_depth} at {path}")
    if not isinstance(value, dict):
        raise InputError(f"Invalid conditions: expected an object at {path}")
    keys = set(value)
    if keys in ({"allOf"}, {"anyOf"}):
        (key,) = keys
        children = value[key]
        if not isinstance(children, list) or not children:
            raise InputError(f"Invalid conditions: {path}.{key} must be a non-empty array")
        parsed = [
            _parse(child, f"{path}.{key}[{index}]", depth + 1, max_depth)
            for index, child in enumerate(children)
        ]
        return t.cast(PermissionCriteria, {key: parsed})
    if keys == {"not"}:
        return t.cast(
            PermissionCriteria, {"not": _parse(value["not"], f"{path}.not", depth + 1, max_depth)}
        )
    if "rule" in keys and "resourceType" in keys and keys <= _CONDITION_KEYS:
        rule, resource_type = value["rule"], value["resourceType"]
        if not isinstance(rule, str) or not isinstance(resource_type, str):
            raise InputError(f"Invalid conditions: rule and resourceType must be strings at {path}")
        condition: PermissionCondition = {"rule": rule, "resourceType": resource_type}
        if "params" in value:
            params = value["params"]
            if not isinstance(params, dict):
                raise InputError(f"Invalid conditions: params must be an object at {path}")
            condition["params"] = params
        return condition
    raise InputError(
        f"Invalid conditions: expected one of allOf, anyOf, not or a rule condition at {path}"
    )


def _rule_of(
    condition: PermissionCondition, get_rule: t.Callable[[str], PermissionRule[R, Q]]
) -> PermissionRule[R, Q]:
    rule = get_rule(condition["rule"])
    if rule.resource_type != condition["resourceType"]:
        raise InputError(
            f"Permission rule '{rule.name}' is for resource type '{rule.resource_type}',"
            f" not '{condition['resourceType']}'"
        )
    return rule


def apply_conditions(
    criteria: PermissionCriteria, resource: R | None, rules: Rules[R, t.Any]
) -> bool:
    """Whether ``resource`` meets ``criteria``; no resource (``None``) never does.

    :raises InputError: an unknown rule, a rule of another resource type, or
        parameters its rule refuses.
    """
    if resource is None:
        return False
    return _apply(criteria, resource, as_ruleset(rules).get_rule_by_name)


def _apply(
    criteria: PermissionCriteria,
    resource: R,
    get_rule: t.Callable[[str], PermissionRule[R, t.Any]],
) -> bool:
    if "allOf" in criteria:
        return all(
            _apply(child, resource, get_rule) for child in t.cast(AllOfCriteria, criteria)["allOf"]
        )
    if "anyOf" in criteria:
        return any(
            _apply(child, resource, get_rule) for child in t.cast(AnyOfCriteria, criteria)["anyOf"]
        )
    if "not" in criteria:
        return not _apply(t.cast(t.Mapping[str, t.Any], criteria)["not"], resource, get_rule)
    condition = criteria
    rule = _rule_of(condition, get_rule)
    return bool(rule.apply(resource, rule.check_params(condition.get("params"))))


def create_condition_transformer(
    rules: Rules[t.Any, Q],
    *,
    all_of: t.Callable[[list[Q]], Q] | None = None,
    any_of: t.Callable[[list[Q]], Q] | None = None,
    not_: t.Callable[[Q], Q] | None = None,
) -> t.Callable[[PermissionCriteria], t.Any]:
    """A function from a criteria tree to the rules' queries.

    Without combinators it returns Backstage's shape (``{"allOf": [q, ...]}``,
    ``{"anyOf": ...}``, ``{"not": q}``, each condition its rule's
    ``to_query(params)``). With all three it folds the tree into one query,
    e.g. ``all_of=lambda qs: sa.and_(*qs)``, ``any_of=lambda qs: sa.or_(*qs)``,
    ``not_=sa.not_`` for an SQLAlchemy filter.

    The transformer raises :class:`~flask_backstage_auth.errors.InputError` for
    an unknown rule or refused parameters.
    """
    combinators = (all_of, any_of, not_)
    if any(combinators) and not all(combinators):
        raise TypeError("give all of all_of, any_of and not_, or none of them")
    get_rule = as_ruleset(rules).get_rule_by_name

    def transform(criteria: PermissionCriteria) -> t.Any:
        if "allOf" in criteria:
            children = [transform(c) for c in t.cast(AllOfCriteria, criteria)["allOf"]]
            return all_of(children) if all_of else {"allOf": children}
        if "anyOf" in criteria:
            children = [transform(c) for c in t.cast(AnyOfCriteria, criteria)["anyOf"]]
            return any_of(children) if any_of else {"anyOf": children}
        if "not" in criteria:
            child = transform(t.cast(t.Mapping[str, t.Any], criteria)["not"])
            return not_(child) if not_ else {"not": child}
        condition = criteria
        rule = _rule_of(condition, get_rule)
        return rule.to_query(rule.check_params(condition.get("params")))

    return transform


def create_condition_filter(
    rules: Rules[R, t.Any],
) -> t.Callable[[PermissionCriteria], t.Callable[[R], bool]]:
    """A function from a criteria tree to a predicate on resources, for
    filtering a plugin's own objects in Python (``filter(pred, entities)``).

    Rules and parameters are checked when the predicate is made, so a bad
    tree fails before any resource is tested.
    """
    ruleset = as_ruleset(rules)

    def check(criteria: PermissionCriteria) -> None:
        node = t.cast(t.Mapping[str, t.Any], criteria)
        if "allOf" in node or "anyOf" in node:
            for child in node.get("allOf") or node["anyOf"]:
                check(child)
        elif "not" in node:
            check(node["not"])
        else:
            condition = t.cast(PermissionCondition, criteria)
            _rule_of(condition, ruleset.get_rule_by_name).check_params(condition.get("params"))

    def make(criteria: PermissionCriteria) -> t.Callable[[R], bool]:
        check(criteria)
        return lambda resource: apply_conditions(criteria, resource, ruleset)

    return make


ConditionFactory = t.Callable[..., PermissionCondition]


@dataclass(frozen=True)
class ConditionExports:
    """What :func:`create_condition_exports` gives a plugin's policy authors."""

    plugin_id: str
    resource_type: str
    #: One factory per rule, by the key it was given: ``conditions["is_owner"](owner=...)``.
    conditions: t.Mapping[str, ConditionFactory]

    def create_conditional_decision(
        self, permission: Permission, conditions: PermissionCriteria
    ) -> ConditionalPolicyDecision:
        """A ``CONDITIONAL`` decision for ``permission`` (of this resource type).

        :raises ValueError: the permission is not of this resource type (a
            decision the permission backend would refuse anyway).
        """
        if permission.resource_type != self.resource_type:
            raise ValueError(
                f"Permission '{permission.name}' is not of resource type '{self.resource_type}'"
            )
        return ConditionalPolicyDecision(self.plugin_id, self.resource_type, conditions)


def _condition_factory(rule: PermissionRule[t.Any, t.Any]) -> ConditionFactory:
    def factory(
        params: t.Mapping[str, t.Any] | None = None, **kwargs: t.Any
    ) -> PermissionCondition:
        condition: PermissionCondition = {"rule": rule.name, "resourceType": rule.resource_type}
        merged = {**(params or {}), **kwargs}
        if params is not None or kwargs:
            condition["params"] = merged
        return condition

    factory.__name__ = rule.name
    factory.__doc__ = rule.description
    return factory


def create_condition_exports(
    *,
    plugin_id: str,
    resource_type: str,
    rules: t.Mapping[str, PermissionRule[t.Any, t.Any]],
) -> ConditionExports:
    """Condition factories for ``rules`` and a conditional-decision builder
    (Backstage's ``createConditionExports``).

    :raises ValueError: a rule of another resource type.
    """
    for rule in rules.values():
        if rule.resource_type != resource_type:
            raise ValueError(
                f"Permission rule '{rule.name}' is for resource type '{rule.resource_type}',"
                f" not '{resource_type}'"
            )
    return ConditionExports(
        plugin_id, resource_type, {key: _condition_factory(rule) for key, rule in rules.items()}
    )
