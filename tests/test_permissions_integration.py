"""Each plugin's ``/.well-known/backstage/permissions/`` endpoints (Backstage's
``createPermissionIntegrationRouter`` behind ``permissionsRegistry``)."""

from __future__ import annotations

import json
import typing as t

import pytest
from flask import Blueprint, Flask, jsonify
from flask.testing import FlaskClient

from flask_backstage_auth import AuthBackend, BackstageAuth
from flask_backstage_auth.permissions import create_permission, create_permission_rule
from flask_backstage_auth.permissions.rules import EMPTY_PARAMS_SCHEMA

METADATA = "/api/catalog/.well-known/backstage/permissions/metadata"
APPLY = "/api/catalog/.well-known/backstage/permissions/apply-conditions"
ENTITY_READ = create_permission("catalog.entity.read", {"action": "read"}, "catalog-entity")
ENTITY_CREATE = create_permission("catalog.entity.create", {"action": "create"})
ENTITIES = {"a": {"owner": "jane", "kind": "Component"}, "b": {"owner": "bob", "kind": "API"}}
IS_OWNER = create_permission_rule(
    name="IS_OWNER",
    description="Owned by",
    resource_type="catalog-entity",
    params_schema={"type": "object", "properties": {"owner": {"type": "string"}}},
    validate_params=lambda params: params["owner"].upper(),
    apply=lambda entity, params: entity["owner"] == params["owner"],
    to_query=lambda params: params,
)
IS_API = create_permission_rule(
    name="IS_API",
    description="An API",
    resource_type="catalog-entity",
    apply=lambda entity, params: entity["kind"] == "API",
    to_query=lambda params: "kind = API",
)
OWNED_BY_JANE = {"rule": "IS_OWNER", "resourceType": "catalog-entity", "params": {"owner": "jane"}}


def make_app() -> Flask:
    app = Flask("integration", static_folder=None)
    app.config["BACKSTAGE_CONFIG"] = {
        "backend": {"baseUrl": "http://localhost:7007"},
        "auth": {"providers": {"guest": {}}},
    }
    auth = BackstageAuth(app)
    AuthBackend(app)
    for name in ("catalog", "search"):
        bp = Blueprint(name, __name__, url_prefix=f"/api/{name}")
        bp.get("/ping")(lambda: jsonify({}))
        app.register_blueprint(bp)
    registry = auth.permissions_registry("catalog", app=app)
    registry.add_permissions([ENTITY_CREATE])
    registry.add_resource_type(
        "catalog-entity",
        get_resources=lambda refs: {ref: ENTITIES[ref] for ref in refs if ref in ENTITIES},
        rules=[IS_OWNER, IS_API],
        permissions=[ENTITY_READ],
    )
    registry.add_resource_type("catalog-location")  # no loader
    return app


@pytest.fixture
def app() -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def service(app: Flask, source: str = "permission", target: str = "catalog") -> dict[str, str]:
    auth = BackstageAuth.state(app).auth(source)
    token = auth.get_plugin_request_token(
        on_behalf_of=auth.get_own_service_credentials(), target_plugin_id=target
    ).token
    return {"Authorization": f"Bearer {token}"}


def user(app: Flask, sub: str = "user:default/jane") -> dict[str, str]:
    return {
        "Authorization": f"Bearer {AuthBackend.state(app).issuer.issue_token(sub, [sub]).token}"
    }


def on_behalf_of_user(app: Flask, source: str) -> dict[str, str]:
    """A plugin token from ``source`` on behalf of a user (actor ``plugin:<source>``)."""
    auth = BackstageAuth.state(app).auth(source)
    with app.test_request_context("/api/search/ping"):
        jane = auth.authenticate(user(app)["Authorization"][7:])
    token = auth.get_plugin_request_token(on_behalf_of=jane, target_plugin_id="catalog").token
    return {"Authorization": f"Bearer {token}"}


def apply(client: FlaskClient, app: Flask, body: t.Any, **kwargs: t.Any) -> t.Any:
    headers = kwargs.pop("headers", None) or service(app)
    return client.post(APPLY, json=body, headers=headers, **kwargs)


def item(ref: t.Any = "a", conditions: t.Any = None, **extra: t.Any) -> dict[str, t.Any]:
    return {
        "id": "1",
        "resourceRef": ref,
        "resourceType": "catalog-entity",
        "conditions": conditions or OWNED_BY_JANE,
        **extra,
    }


# -- metadata ------------------------------------------------------------------


def test_metadata_has_backstages_shape(client: FlaskClient, app: Flask) -> None:
    reply = client.get(METADATA, headers=user(app))
    assert reply.status_code == 200
    assert reply.get_json() == {
        "permissions": [
            {"type": "basic", "name": "catalog.entity.create", "attributes": {"action": "create"}},
            {
                "type": "resource",
                "name": "catalog.entity.read",
                "attributes": {"action": "read"},
                "resourceType": "catalog-entity",
            },
        ],
        "rules": [
            {
                "name": "IS_OWNER",
                "description": "Owned by",
                "resourceType": "catalog-entity",
                "paramsSchema": {"type": "object", "properties": {"owner": {"type": "string"}}},
            },
            {
                "name": "IS_API",
                "description": "An API",
                "resourceType": "catalog-entity",
                "paramsSchema": dict(EMPTY_PARAMS_SCHEMA),
            },
        ],
    }


def test_metadata_needs_credentials_like_any_route(client: FlaskClient) -> None:
    reply = client.get(METADATA)
    assert reply.status_code == 401
    assert reply.get_json()["error"]["name"] == "AuthenticationError"


def test_only_plugins_with_an_integration_serve_it(client: FlaskClient, app: Flask) -> None:
    assert client.get(METADATA.replace("catalog", "search"), headers=user(app)).status_code == 404
    # an unknown plugin is no plugin of ours
    assert client.get(METADATA.replace("catalog", "nope"), headers=user(app)).status_code == 404
    # other methods and endpoints are not served
    assert client.post(METADATA, headers=service(app)).status_code == 404
    assert client.get(APPLY, headers=service(app)).status_code == 404
    other = METADATA.replace("metadata", "other")
    assert client.get(other, headers=service(app)).status_code == 404


def test_the_access_tokens_plugin_publishes_its_permissions() -> None:
    import flask_backstage_auth.db.cli  # noqa: F401  (build_app reaches it as an attribute)
    from flask_backstage_auth.access_tokens.permissions import ALL_PERMISSIONS
    from tests.test_access_tokens_api import FakeClock, build_app

    app = build_app(FakeClock())
    metadata = BackstageAuth.state(app).permission_integrations.get("access-tokens").metadata()
    assert metadata == {"permissions": [p.to_dict() for p in ALL_PERMISSIONS], "rules": []}
    assert len(metadata["permissions"]) == 6
    headers = service(app, target="access-tokens")
    reply = app.test_client().get(
        "/api/access-tokens/.well-known/backstage/permissions/metadata", headers=headers
    )
    assert reply.status_code == 200 and reply.get_json() == metadata


# -- apply-conditions: results ----------------------------------------------------


def test_apply_conditions_answers_per_item(client: FlaskClient, app: Flask) -> None:
    body = {
        "items": [
            item("a"),
            {**item("b"), "id": "2"},
            {**item("missing"), "id": "3"},
            {**item("b", {"not": OWNED_BY_JANE}), "id": "4"},
            {
                **item(
                    "a",
                    {
                        "allOf": [
                            OWNED_BY_JANE,
                            {"anyOf": [{"rule": "IS_API", "resourceType": "catalog-entity"}]},
                        ]
                    },
                ),
                "id": "5",
            },
        ]
    }
    reply = apply(client, app, body)
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json() == {
        "items": [
            {"id": "1", "result": "ALLOW"},
            {"id": "2", "result": "DENY"},
            {"id": "3", "result": "DENY"},
            {"id": "4", "result": "ALLOW"},
            {"id": "5", "result": "DENY"},
        ]
    }


def test_batched_resource_refs_get_a_list(client: FlaskClient, app: Flask) -> None:
    reply = apply(client, app, {"items": [item(["b", "a", "missing", "a"])]})
    assert reply.get_json() == {
        "items": [{"id": "1", "result": ["DENY", "ALLOW", "DENY", "ALLOW"]}]
    }


def test_the_decisions_other_keys_are_ignored(client: FlaskClient, app: Flask) -> None:
    """The permission backend sends ``{id, resourceRef, ...decision}``."""
    body = {"items": [item(result="CONDITIONAL", pluginId="catalog")]}
    assert apply(client, app, body).get_json() == {"items": [{"id": "1", "result": "ALLOW"}]}


def test_the_permission_backend_on_behalf_of_a_user_may_call(
    client: FlaskClient, app: Flask
) -> None:
    reply = apply(client, app, {"items": [item()]}, headers=on_behalf_of_user(app, "permission"))
    assert reply.status_code == 200
    assert reply.get_json()["items"][0]["result"] == "ALLOW"


# -- apply-conditions: who may call ---------------------------------------------


@pytest.mark.parametrize("caller", ["none", "user", "other-service", "other-actor"])
def test_only_the_permission_backend_may_apply_conditions(
    client: FlaskClient, app: Flask, caller: str
) -> None:
    headers = {
        "none": {},
        "user": user(app),
        "other-service": service(app, source="search"),
        "other-actor": on_behalf_of_user(app, "search"),
    }[caller]
    reply = client.post(APPLY, json={"items": [item()]}, headers=headers)
    assert reply.status_code == (401 if caller == "none" else 403)
    assert reply.get_json()["error"]["name"] in ("AuthenticationError", "NotAllowedError")
    assert "ALLOW" not in reply.get_data(as_text=True)


def test_the_caller_is_checked_before_the_body_is_read(client: FlaskClient, app: Flask) -> None:
    reply = client.post(
        APPLY, data=b"{not json", headers={**user(app), "Content-Type": "application/json"}
    )
    assert reply.status_code == 403


# -- apply-conditions: bad input ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "expected {items"),
        ({"items": {}}, "expected {items"),
        ({"items": ["x"]}, "items[0] must be an object"),
        ({"items": [{**item(), "id": 1}]}, "id must be a string"),
        ({"items": [item(ref=[])]}, "resourceRef must be a string or a non-empty array"),
        ({"items": [item(ref=["a", 1])]}, "resourceRef"),
        ({"items": [{**item(), "resourceType": None}]}, "resourceType must be a string"),
        ({"items": [item(conditions={"anyOf": []})]}, "non-empty array"),
        (
            {"items": [item(conditions={"allOf": [OWNED_BY_JANE], "not": OWNED_BY_JANE})]},
            "expected one of",
        ),
        ({"items": [item(conditions={"rule": "IS_OWNER"})]}, "expected one of"),
        (
            {"items": [item(conditions={**OWNED_BY_JANE, "params": ["jane"]})]},
            "params must be an object",
        ),
        (
            {"items": [item(conditions={"rule": "NOPE", "resourceType": "catalog-entity"})]},
            "Permission rule 'NOPE' does not exist for resource type 'catalog-entity'",
        ),
        (
            {"items": [item(conditions={**OWNED_BY_JANE, "params": {}})]},
            "Parameters to rule are invalid; caused by KeyError",
        ),
        (
            {"items": [item(conditions={**OWNED_BY_JANE, "resourceType": "other"})]},
            "is for resource type 'catalog-entity', not 'other'",
        ),
        (
            {"items": [{**item(), "resourceType": "x"}, {**item(), "resourceType": "y"}]},
            "Unexpected resource types: x, y.",
        ),
    ],
)
def test_bad_requests_are_400(client: FlaskClient, app: Flask, body: t.Any, message: str) -> None:
    reply = apply(client, app, body)
    assert reply.status_code == 400, reply.get_json()
    error = reply.get_json()["error"]
    assert error["name"] == "InputError"
    assert message in error["message"]


def test_deeply_nested_conditions_are_refused(client: FlaskClient, app: Flask) -> None:
    conditions: dict[str, t.Any] = OWNED_BY_JANE
    for _ in range(40):
        conditions = {"not": conditions}
    reply = apply(client, app, {"items": [item(conditions=conditions)]})
    assert reply.status_code == 400
    assert "nested deeper than 32" in reply.get_json()["error"]["message"]
    # absurdly nested JSON is not JSON to us (no RecursionError, no 500)
    data = b'{"items": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    reply = client.post(
        APPLY, data=data, headers={**service(app), "Content-Type": "application/json"}
    )
    assert reply.status_code == 400


def test_not_json_is_400(client: FlaskClient, app: Flask) -> None:
    headers = service(app)
    reply = client.post(APPLY, data=b"{", headers={**headers, "Content-Type": "application/json"})
    assert reply.status_code == 400
    reply = client.post(
        APPLY, data=json.dumps({"items": []}), headers={**headers, "Content-Type": "text/plain"}
    )
    assert reply.status_code == 400
    assert reply.get_json()["error"]["name"] == "InputError"


def test_bodies_are_bounded(client: FlaskClient, app: Flask) -> None:
    padding = "x" * (100 * 1024)
    reply = apply(client, app, {"items": [], "pad": padding})
    assert reply.status_code == 413
    assert reply.get_json()["error"]["name"] == "PayloadTooLargeError"
    # just under the limit is read
    fits = {"items": [], "pad": "x" * (100 * 1024 - 40)}
    assert apply(client, app, fits).status_code == 200


def test_a_resource_type_without_a_loader_is_501(client: FlaskClient, app: Flask) -> None:
    reply = apply(client, app, {"items": [{**item(), "resourceType": "catalog-location"}]})
    assert reply.status_code == 501
    assert reply.get_json()["error"] == {
        "name": "NotImplementedError",
        "message": "This plugin does not expose any permission rule or can't evaluate the"
        " conditions request for catalog-location",
    }


def test_a_loader_whose_answer_does_not_fit_is_an_error_not_an_allow(app: Flask) -> None:
    registry = BackstageAuth.state(app).permission_integrations.get("search")
    registry.add_resource_type(
        "search-doc", get_resources=lambda refs: [{"owner": "jane"}], rules=[]
    )
    reply = app.test_client().post(
        "/api/search/.well-known/backstage/permissions/apply-conditions",
        json={
            "items": [
                {
                    "id": "1",
                    "resourceRef": ["x", "y"],
                    "resourceType": "search-doc",
                    "conditions": {"not": {"rule": "R", "resourceType": "search-doc"}},
                }
            ]
        },
        headers=service(app, target="search"),
    )
    assert reply.status_code == 500
    assert reply.get_json()["error"]["message"] == (
        "The resources loaded for search-doc do not match the refs asked for"
    )


def test_registration_errors() -> None:
    app = make_app()
    registry = BackstageAuth.state(app).permission_integrations.get("catalog")
    with pytest.raises(ValueError, match="already exists"):
        registry.add_resource_type("catalog-entity")
    with pytest.raises(ValueError, match="with name 'IS_OWNER' because it already exists"):
        registry.add_permission_rules([IS_OWNER])
    with pytest.raises(ValueError, match="not 'other'"):
        registry.add_resource_type("other", rules=[IS_API])


def test_a_failing_rule_or_loader_is_a_json_500(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(entity: t.Any, params: t.Mapping[str, t.Any]) -> bool:
        raise RuntimeError("secret detail")

    registry = BackstageAuth.state(app).permission_integrations.get("search")
    registry.add_resource_type(
        "search-doc",
        get_resources=lambda refs: [{} for _ in refs],
        rules=[
            create_permission_rule(
                name="BROKEN",
                description="",
                resource_type="search-doc",
                apply=broken,
                to_query=str,
            )
        ],
    )
    reply = app.test_client().post(
        "/api/search/.well-known/backstage/permissions/apply-conditions",
        json={
            "items": [
                {
                    "id": "1",
                    "resourceRef": "x",
                    "resourceType": "search-doc",
                    "conditions": {"not": {"rule": "BROKEN", "resourceType": "search-doc"}},
                }
            ]
        },
        headers=service(app, target="search"),
    )
    assert reply.status_code == 500
    assert reply.get_json()["error"] == {
        "name": "Error",
        "message": "Failed to apply permission conditions",
    }
    assert "secret detail" not in reply.get_data(as_text=True)
    assert "Applying permission conditions for 'search' failed" in caplog.text
