"""Permission rules: what a conditional decision's conditions name (Backstage's
``createPermissionRule``).

A rule tests one resource (``apply``) and turns into a query filter
(``to_query``), for the resource type it belongs to::

    is_owner = create_permission_rule(
        name="IS_OWNER",
        description="Allow resources owned by the given user",
        resource_type="catalog-entity",
        params_schema={"type": "object", "properties": {"owner": {"type": "string"}},
                       "required": ["owner"], "additionalProperties": False},
        validate_params=lambda params: params["owner"],
        apply=lambda entity, params: entity["owner"] == params["owner"],
        to_query=lambda params: Entity.owner == params["owner"],
    )
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from flask_backstage_auth.errors import InputError

R = t.TypeVar("R")
Q = t.TypeVar("Q")

#: What ``zod-to-json-schema`` makes of ``z.object({})``: the schema Backstage
#: publishes for a rule without parameters.
EMPTY_PARAMS_SCHEMA: t.Mapping[str, t.Any] = {
    "type": "object",
    "properties": {},
    "additionalProperties": False,
    "$schema": "http://json-schema.org/draft-07/schema#",
}


@dataclass(frozen=True, eq=False)
class PermissionRule(t.Generic[R, Q]):
    """One rule of a resource type. Build it with :func:`create_permission_rule`."""

    name: str
    description: str
    resource_type: str
    #: Whether a resource meets the rule, given the condition's parameters.
    apply: t.Callable[[R, t.Mapping[str, t.Any]], bool]
    #: The rule as a query filter, given the condition's parameters.
    to_query: t.Callable[[t.Mapping[str, t.Any]], Q]
    #: The JSON Schema of the parameters, published in the plugin's metadata.
    params_schema: t.Mapping[str, t.Any] | None = None
    #: Checks the parameters (raise to refuse them); Backstage's ``zod`` parse.
    validate_params: t.Callable[[t.Mapping[str, t.Any]], object] | None = None

    def check_params(self, params: t.Mapping[str, t.Any] | None) -> t.Mapping[str, t.Any]:
        """The parameters to apply the rule with (``{}`` when none).

        :raises InputError: ``Parameters to rule are invalid``, with the
            validator's reason.
        """
        given: t.Mapping[str, t.Any] = params if params is not None else {}
        if self.validate_params is not None:
            try:
                self.validate_params(given)
            except Exception as exc:  # the validator's reason, whatever its kind
                raise InputError("Parameters to rule are invalid", exc) from None
        return given

    def to_dict(self) -> dict[str, t.Any]:
        """The metadata entry: ``{name, description, resourceType, paramsSchema}``."""
        return {
            "name": self.name,
            "description": self.description,
            "resourceType": self.resource_type,
            "paramsSchema": dict(self.params_schema or EMPTY_PARAMS_SCHEMA),
        }


def create_permission_rule(
    *,
    name: str,
    description: str,
    resource_type: str,
    apply: t.Callable[[R, t.Mapping[str, t.Any]], bool],
    to_query: t.Callable[[t.Mapping[str, t.Any]], Q],
    params_schema: t.Mapping[str, t.Any] | None = None,
    validate_params: t.Callable[[t.Mapping[str, t.Any]], object] | None = None,
) -> PermissionRule[R, Q]:
    """A validated :class:`PermissionRule`.

    :param params_schema: a JSON Schema object (``{"type": "object", ...}``)
        describing the parameters; default: no parameters.
    :param validate_params: called with a condition's parameters before the
        rule is applied or turned into a query; raising refuses them (e.g. a
        pydantic model's ``model_validate``).
    :raises ValueError: an empty name or resource type, or a schema that is
        not a JSON object schema.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("A permission rule name must be a non-empty string")
    if not isinstance(resource_type, str) or not resource_type:
        raise ValueError(f"Permission rule '{name}' needs a resource type")
    if params_schema is not None and (
        not isinstance(params_schema, t.Mapping) or params_schema.get("type") != "object"
    ):
        raise ValueError(
            f"Permission rule '{name}' parameter schema must be a JSON Schema of type 'object'"
        )
    return PermissionRule(
        name, description, resource_type, apply, to_query, params_schema, validate_params
    )


class PermissionRuleset(t.Protocol[R, Q]):
    """The rules of one resource type, by name (Backstage's ``PermissionRuleset``)."""

    def get_rule_by_name(self, name: str) -> PermissionRule[R, Q]:
        """The rule; raises :class:`~flask_backstage_auth.errors.InputError` when unknown."""


#: Rules as a plugin holds them: a ruleset, a mapping (e.g. by export name), or a sequence.
Rules = t.Union[
    "PermissionRuleset[R, Q]",
    t.Mapping[str, PermissionRule[R, Q]],
    t.Iterable[PermissionRule[R, Q]],
]


class RulesByName(t.Generic[R, Q]):
    """A ruleset of some rules (Backstage's ``createGetRule``).

    :raises ValueError: two rules share a name.
    """

    def __init__(self, rules: t.Iterable[PermissionRule[R, Q]]) -> None:
        self._rules: dict[str, PermissionRule[R, Q]] = {}
        for rule in rules:
            if rule.name in self._rules:
                raise ValueError(f"Duplicate permission rule '{rule.name}'")
            self._rules[rule.name] = rule

    def get_rule_by_name(self, name: str) -> PermissionRule[R, Q]:
        rule = self._rules.get(name)
        if rule is None:
            raise InputError(f"Unexpected permission rule: {name}")
        return rule


def as_ruleset(rules: Rules[R, Q]) -> PermissionRuleset[R, Q]:
    """``rules`` as a ruleset."""
    if hasattr(rules, "get_rule_by_name"):
        return t.cast("PermissionRuleset[R, Q]", rules)
    if isinstance(rules, t.Mapping):
        return RulesByName(rules.values())
    return RulesByName(rules)
