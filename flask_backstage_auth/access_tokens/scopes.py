"""The scope catalogue, and how scopes become access restrictions.

A scope names one plugin and the actions it allows there. A token's scopes
become the access restrictions of its principal, which the extension enforces:
a plugin no scope names answers 403, and a permission whose action no scope
allows is denied.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from flask_backstage_auth.config.reader import ConfigReader
from flask_backstage_auth.credentials import PERMISSION_ACTIONS, AccessRestrictions
from flask_backstage_auth.errors import ConfigError


@dataclass(frozen=True)
class Scope:
    """One scope: ``id`` (e.g. ``catalog:read``), its plugin and allowed actions."""

    id: str
    description: str
    plugin: str
    actions: tuple[str, ...]

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "id": self.id,
            "description": self.description,
            "plugin": self.plugin,
            "actions": list(self.actions),
        }


#: The reference plugin's default scopes. Writing implies reading.
DEFAULT_SCOPES: tuple[Scope, ...] = (
    Scope("catalog:read", "Read catalog entities", "catalog", ("read",)),
    Scope(
        "catalog:write",
        "Read, create, update and delete catalog entities",
        "catalog",
        ("read", "create", "update", "delete"),
    ),
    Scope("techdocs:read", "Read TechDocs documentation", "techdocs", ("read",)),
    Scope("scaffolder:read", "Read scaffolder templates and tasks", "scaffolder", ("read",)),
    Scope("scaffolder:execute", "Run scaffolder templates", "scaffolder", ("read", "create")),
)


class ScopeCatalogue:
    """The scopes tokens may carry: the defaults, then config, then code."""

    def __init__(self, scopes: t.Iterable[Scope] = DEFAULT_SCOPES) -> None:
        self._scopes: dict[str, Scope] = {}
        for scope in scopes:
            self.add(scope)

    @classmethod
    def from_config(cls, config: ConfigReader, extra: t.Iterable[Scope] = ()) -> ScopeCatalogue:
        """Defaults, ``accessTokens.service.scopes`` entries, then ``extra``."""
        catalogue = cls()
        for entry in config.get_config_list("accessTokens.service.scopes"):
            actions = entry.get("actions", ["read"])
            if not isinstance(actions, list) or not all(a in PERMISSION_ACTIONS for a in actions):
                raise ConfigError(
                    f"{entry.path('actions')} must list actions among"
                    " 'create', 'read', 'update', 'delete'"
                )
            catalogue.add(
                Scope(
                    entry.get_string("id"),
                    entry.get_string("description", entry.get_string("id")),
                    entry.get_string("plugin"),
                    tuple(actions),
                ),
                path=entry.prefix,
            )
        for scope in extra:
            catalogue.add(scope)
        return catalogue

    def add(self, scope: Scope, *, path: str = "") -> None:
        if not scope.id or any(ch.isspace() for ch in scope.id):
            raise ConfigError(f"Invalid scope id {scope.id!r} {path}".strip())
        if scope.id in self._scopes and self._scopes[scope.id] != scope:
            raise ConfigError(f"Scope '{scope.id}' is declared twice {path}".strip())
        self._scopes[scope.id] = scope

    def __contains__(self, scope_id: object) -> bool:
        return scope_id in self._scopes

    def all(self) -> list[Scope]:
        return list(self._scopes.values())

    def unknown(self, scope_ids: t.Iterable[str]) -> list[str]:
        return [s for s in scope_ids if s not in self._scopes]

    def restrictions(self, scope_ids: t.Iterable[str]) -> dict[str, AccessRestrictions]:
        """Plugin id → the actions the scopes allow there (unknown scopes allow nothing)."""
        actions: dict[str, list[str]] = {}
        for scope_id in scope_ids:
            scope = self._scopes.get(scope_id)
            if scope is None:
                continue
            allowed = actions.setdefault(scope.plugin, [])
            allowed.extend(a for a in scope.actions if a not in allowed)
        return {
            plugin: AccessRestrictions(actions=tuple(sorted(allowed)))
            for plugin, allowed in actions.items()
        }
