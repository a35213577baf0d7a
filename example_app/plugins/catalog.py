"""The catalog: a small in-memory entity store."""

from __future__ import annotations

import copy
import threading
import typing as t

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from example_app.environment import PluginEnvironment
from flask_backstage_auth import get_credentials
from flask_backstage_auth.errors import ConflictError, InputError, NotFoundError
from flask_backstage_auth.permissions import create_permission

SEED_ENTITIES: list[dict[str, t.Any]] = [
    {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {
            "name": "petstore",
            "namespace": "default",
            "description": "The pet store API",
        },
        "spec": {"type": "service", "lifecycle": "production", "owner": "group:default/team-a"},
    },
    {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {
            "name": "search-ui",
            "namespace": "default",
            "description": "Search front end",
        },
        "spec": {"type": "website", "lifecycle": "experimental", "owner": "group:default/team-b"},
    },
    {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Group",
        "metadata": {"name": "team-a", "namespace": "default", "description": "Team A"},
        "spec": {"type": "team", "children": []},
    },
    {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "User",
        "metadata": {"name": "guest", "namespace": "development", "description": "The guest user"},
        "spec": {"memberOf": ["group:default/team-a"]},
    },
]


#: Checked on every read; a token restricted to other actions is refused.
ENTITY_READ = create_permission(
    "catalog.entity.read", {"action": "read"}, resource_type="catalog-entity"
)
ENTITY_CREATE = create_permission("catalog.entity.create", {"action": "create"})


class EntityStore:
    """Entities by ``kind:namespace/name`` (case-insensitive, as Backstage)."""

    def __init__(self, entities: t.Iterable[dict[str, t.Any]] = ()) -> None:
        self._lock = threading.Lock()
        self._entities: dict[str, dict[str, t.Any]] = {}
        for entity in entities:
            self.add(entity)

    @staticmethod
    def ref(kind: str, namespace: str, name: str) -> str:
        return f"{kind}:{namespace}/{name}".lower()

    def add(self, entity: dict[str, t.Any]) -> dict[str, t.Any]:
        entity = copy.deepcopy(entity)
        metadata = entity["metadata"]
        metadata.setdefault("namespace", "default")
        key = self.ref(entity["kind"], metadata["namespace"], metadata["name"])
        with self._lock:
            if key in self._entities:
                raise ConflictError(f"Entity {key} already exists")
            self._entities[key] = entity
        return copy.deepcopy(entity)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, t.Any] | None:
        with self._lock:
            entity = self._entities.get(self.ref(kind, namespace, name))
        return copy.deepcopy(entity) if entity else None

    def list(self, offset: int, limit: int, kind: str | None = None) -> list[dict[str, t.Any]]:
        with self._lock:
            entities = [
                e
                for e in self._entities.values()
                if kind is None or e["kind"].lower() == kind.lower()
            ]
        return copy.deepcopy(entities[offset : offset + limit])


def _validate_entity(body: object) -> dict[str, t.Any]:
    if not isinstance(body, dict):
        raise InputError("Entity must be a JSON object")
    kind = body.get("kind")
    metadata = body.get("metadata")
    if not isinstance(kind, str) or not kind:
        raise InputError("Entity must have a kind")
    if (
        not isinstance(metadata, dict)
        or not isinstance(metadata.get("name"), str)
        or not metadata["name"]
    ):
        raise InputError("Entity must have metadata.name")
    namespace = metadata.get("namespace", "default")
    if not isinstance(namespace, str) or not namespace:
        raise InputError("metadata.namespace must be a string")
    return body


def _int_arg(name: str, default: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise InputError(f"{name} must be a non-negative integer")
    return min(int(raw), maximum)


def create_plugin(env: PluginEnvironment) -> Blueprint:
    """The catalog blueprint, served under ``/api/catalog``."""
    store = EntityStore(SEED_ENTITIES)
    bp = Blueprint(env.plugin_id, __name__, url_prefix=f"/api/{env.plugin_id}")

    @bp.get("/entities")
    def list_entities() -> ResponseReturnValue:
        credentials = get_credentials()
        env.permissions.require(credentials, ENTITY_READ)
        env.logger.info("Entities listed by %s", credentials)
        offset = _int_arg("offset", 0, 10**9)
        limit = _int_arg("limit", 500, 1000)
        return jsonify(store.list(offset, limit, request.args.get("kind")))

    @bp.get("/entities/by-name/<kind>/<namespace>/<name>")
    def get_entity(kind: str, namespace: str, name: str) -> ResponseReturnValue:
        env.permissions.require(
            get_credentials(), ENTITY_READ, resource_ref=EntityStore.ref(kind, namespace, name)
        )
        entity = store.get(kind, namespace, name)
        if entity is None:
            raise NotFoundError(
                f"No entity named '{name}' of kind '{kind}' in namespace '{namespace}'"
            )
        return jsonify(entity)

    @bp.post("/entities")
    def add_entity() -> ResponseReturnValue:
        env.permissions.require(get_credentials(), ENTITY_CREATE)
        entity = _validate_entity(request.get_json(silent=True))
        return jsonify(store.add(entity)), 201

    return bp
