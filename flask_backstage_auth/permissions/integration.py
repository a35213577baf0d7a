"""A plugin's side of the permission framework: its permissions, resource types
and rules, and the two endpoints the permission backend calls (Backstage's
``createPermissionIntegrationRouter`` and ``permissionsRegistry`` service).

* ``GET <plugin>/.well-known/backstage/permissions/metadata``:
  ``{"permissions": [...], "rules": [{name, description, resourceType, paramsSchema}]}``.
* ``POST <plugin>/.well-known/backstage/permissions/apply-conditions``:
  ``{"items": [{id, resourceRef (a string or a non-empty list), resourceType,
  conditions}]}`` gives ``{"items": [{id, result}]}``, each ``result``
  ``ALLOW``/``DENY`` (a list of them for a list of refs).

The router serves them (``router/integration.py``); this module knows the
shapes. Register at set-up, before the app serves requests::

    registry = auth.permissions_registry("catalog")
    registry.add_resource_type(
        "catalog-entity", get_resources=load_entities, rules=[is_owner],
        permissions=[entity_read],
    )
"""

from __future__ import annotations

import threading
import typing as t
from dataclasses import dataclass

from flask_backstage_auth.errors import BackstageError, InputError
from flask_backstage_auth.permissions.conditions import (
    PermissionCriteria,
    apply_conditions,
    parse_criteria,
)
from flask_backstage_auth.permissions.model import Permission
from flask_backstage_auth.permissions.rules import PermissionRule

WELL_KNOWN_PATH = "/.well-known/backstage/permissions/"

#: Loads resources by ref: a sequence in the order of the refs (``None`` for a
#: missing one), or a mapping from ref to resource.
GetResources = t.Callable[[t.List[str]], t.Union[t.Sequence[t.Any], t.Mapping[str, t.Any]]]


class NotImplementedBackstageError(BackstageError):
    """501: the plugin cannot do what was asked (Backstage's ``NotImplementedError``)."""

    code = 501
    error_name = "NotImplementedError"


@dataclass(frozen=True)
class ResourceType:
    """A resource type a plugin owns and can load."""

    resource_type: str
    get_resources: GetResources | None


class _Ruleset:
    def __init__(self, integration: PermissionIntegration, resource_type: str) -> None:
        self._integration = integration
        self._resource_type = resource_type

    def get_rule_by_name(self, name: str) -> PermissionRule[t.Any, t.Any]:
        return self._integration.get_rule(self._resource_type, name)


class PermissionIntegration:
    """The permissions, resource types and rules of one plugin.

    :param plugin_id: the plugin; the endpoints are served under its mount.
    """

    def __init__(self, plugin_id: str) -> None:
        self.plugin_id = plugin_id
        self._lock = threading.Lock()
        self._permissions: dict[str, Permission] = {}
        self._rules: dict[str, dict[str, PermissionRule[t.Any, t.Any]]] = {}
        self._serialized_rules: list[dict[str, t.Any]] = []
        self._resources: dict[str, ResourceType] = {}

    def add_permissions(self, permissions: t.Iterable[Permission]) -> None:
        """Publish ``permissions`` in the metadata (a later one of a name replaces the earlier)."""
        with self._lock:
            for permission in permissions:
                self._permissions[permission.name] = permission

    def add_permission_rules(self, rules: t.Iterable[PermissionRule[t.Any, t.Any]]) -> None:
        """Add rules to their resource types.

        :raises ValueError: a rule of that name already exists for its type.
        """
        with self._lock:
            for rule in rules:
                by_name = self._rules.setdefault(rule.resource_type, {})
                if rule.name in by_name:
                    raise ValueError(
                        f"Refused to add permission rule for type '{rule.resource_type}'"
                        f" with name '{rule.name}' because it already exists"
                    )
                by_name[rule.name] = rule
                self._serialized_rules.append(rule.to_dict())

    def add_resource_type(
        self,
        resource_type: str,
        *,
        get_resources: GetResources | None = None,
        rules: t.Iterable[PermissionRule[t.Any, t.Any]] = (),
        permissions: t.Iterable[Permission] = (),
    ) -> None:
        """Own ``resource_type``: conditions on it may be applied here.

        :param get_resources: loads resources by ref, for ``apply-conditions``;
            without it those requests get 501.
        :raises ValueError: the type is already added, or a rule is of another type.
        """
        rules = list(rules)
        for rule in rules:
            if rule.resource_type != resource_type:
                raise ValueError(
                    f"Permission rule '{rule.name}' is for resource type"
                    f" '{rule.resource_type}', not '{resource_type}'"
                )
        with self._lock:
            if resource_type in self._resources:
                raise ValueError(
                    f"Refused to add permission resource with type '{resource_type}'"
                    " because it already exists"
                )
            self._resources[resource_type] = ResourceType(resource_type, get_resources)
        self.add_permission_rules(rules)
        self.add_permissions(permissions)

    def has_resource_type(self, resource_type: str) -> bool:
        return resource_type in self._resources

    def get_rule(self, resource_type: str, name: str) -> PermissionRule[t.Any, t.Any]:
        """The rule ``name`` of ``resource_type``.

        :raises InputError: there is none.
        """
        rule = self._rules.get(resource_type, {}).get(name)
        if rule is None:
            raise InputError(
                f"Permission rule '{name}' does not exist for resource type '{resource_type}'"
            )
        return rule

    def get_permission_ruleset(self, resource_type: str) -> _Ruleset:
        """The rules of ``resource_type``, for ``apply_conditions`` and the
        transformers (Backstage's ``getPermissionRuleset``)."""
        return _Ruleset(self, resource_type)

    def metadata(self) -> dict[str, t.Any]:
        """The ``metadata`` endpoint's body."""
        with self._lock:
            return {
                "permissions": [p.to_dict() for p in self._permissions.values()],
                "rules": [dict(rule) for rule in self._serialized_rules],
            }

    def load_resources(self, resource_type: str, refs: t.Sequence[str]) -> dict[str, t.Any]:
        """The resources of ``refs`` by ref (each loaded once; a missing one is ``None``).

        :raises NotImplementedBackstageError: the type has no loader.
        :raises BackstageError: the loader's answer does not fit the refs.
        """
        resource = self._resources.get(resource_type)
        if resource is None or resource.get_resources is None:
            raise NotImplementedBackstageError(
                "This plugin does not expose any permission rule or can't evaluate the"
                f" conditions request for {resource_type}"
            )
        unique = list(dict.fromkeys(refs))
        loaded = resource.get_resources(unique)
        if isinstance(loaded, t.Mapping):
            return {ref: loaded.get(ref) for ref in unique}
        loaded = list(loaded)
        if len(loaded) != len(unique):
            # Which resource belongs to which ref is unknown: decide nothing.
            raise BackstageError(
                f"The resources loaded for {resource_type} do not match the refs asked for"
            )
        return dict(zip(unique, loaded))

    def apply_to_refs(
        self, resource_type: str, refs: t.Sequence[str], conditions: PermissionCriteria
    ) -> list[bool]:
        """Whether each resource of ``refs`` meets ``conditions`` (a missing one never does)."""
        resources = self.load_resources(resource_type, refs)
        ruleset = self.get_permission_ruleset(resource_type)
        return [apply_conditions(conditions, resources.get(ref), ruleset) for ref in refs]

    def apply_conditions(self, body: object) -> dict[str, t.Any]:
        """The ``apply-conditions`` endpoint: its response body for a parsed request body.

        :raises InputError: a malformed request, an unknown resource type, rule
            or parameters.
        :raises NotImplementedBackstageError: a resource type without a loader.
        """
        items = _parse_apply_request(body)
        unknown = [
            item["resourceType"]
            for item in items
            if not self.has_resource_type(item["resourceType"])
        ]
        if unknown:
            raise InputError(f"Unexpected resource types: {', '.join(unknown)}.")
        resources: dict[str, dict[str, t.Any]] = {}
        for resource_type in dict.fromkeys(item["resourceType"] for item in items):
            refs = [
                ref
                for item in items
                if item["resourceType"] == resource_type
                for ref in item["refs"]
            ]
            resources[resource_type] = self.load_resources(resource_type, refs)
        answers = []
        for item in items:
            loaded = resources[item["resourceType"]]
            ruleset = self.get_permission_ruleset(item["resourceType"])
            results = [
                "ALLOW"
                if apply_conditions(item["conditions"], loaded.get(ref), ruleset)
                else "DENY"
                for ref in item["refs"]
            ]
            answers.append({"id": item["id"], "result": results if item["many"] else results[0]})
        return {"items": answers}


def _parse_apply_request(body: object) -> list[dict[str, t.Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise InputError("Invalid request: expected {items: [...]}")
    items = []
    for index, item in enumerate(body["items"]):
        where = f"items[{index}]"
        if not isinstance(item, dict):
            raise InputError(f"Invalid request: {where} must be an object")
        # Other keys (the decision's result, pluginId) are ignored, as Backstage's schema does.
        item_id, ref, resource_type = (
            item.get("id"),
            item.get("resourceRef"),
            item.get("resourceType"),
        )
        if not isinstance(item_id, str):
            raise InputError(f"Invalid request: {where}.id must be a string")
        if not isinstance(resource_type, str):
            raise InputError(f"Invalid request: {where}.resourceType must be a string")
        if isinstance(ref, str):
            refs, many = [ref], False
        elif isinstance(ref, list) and ref and all(isinstance(r, str) for r in ref):
            refs, many = list(ref), True
        else:
            raise InputError(
                f"Invalid request: {where}.resourceRef must be a string"
                " or a non-empty array of strings"
            )
        conditions = parse_criteria(item.get("conditions"))
        items.append(
            {
                "id": item_id,
                "refs": refs,
                "many": many,
                "resourceType": resource_type,
                "conditions": conditions,
            }
        )
    return items


class PermissionIntegrations:
    """The integration of each plugin of one app, made on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_plugin: dict[str, PermissionIntegration] = {}

    def get(self, plugin_id: str) -> PermissionIntegration:
        """The integration of ``plugin_id`` (made now if it has none)."""
        with self._lock:
            integration = self._by_plugin.get(plugin_id)
            if integration is None:
                integration = self._by_plugin[plugin_id] = PermissionIntegration(plugin_id)
            return integration

    def find(self, plugin_id: str) -> PermissionIntegration | None:
        """The integration of ``plugin_id`` if it has one (its endpoints exist only then)."""
        return self._by_plugin.get(plugin_id)
