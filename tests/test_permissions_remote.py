"""The permission backend decides: two apps over HTTP.

The plugin app (``catalog``, with the ``auth`` backend for real user tokens)
has ``permission.enabled: true`` and no local policy; the permission backend
(tests/permission_backend.py, Backstage's ``/authorize`` contract) is another
Flask app that verifies the catalog's plugin tokens with its published keys
and applies conditions through the catalog's ``apply-conditions`` endpoint.
"""

from __future__ import annotations

import json
import typing as t
import uuid

import pytest
from flask import Blueprint, Flask, Response, jsonify, request

from flask_backstage_auth import AuthBackend, BackstageAuth, get_credentials
from flask_backstage_auth.credentials import (
    NONE_CREDENTIALS,
    AccessRestrictions,
    Credentials,
    UserPrincipal,
)
from flask_backstage_auth.permissions import (
    AuthorizeResult,
    ConditionalPolicyDecision,
    PermissionBackendUnavailable,
    PolicyQuery,
    create_condition_exports,
    create_condition_filter,
    create_permission,
    create_permission_rule,
)
from tests.conftest import LiveServer, free_port
from tests.permission_backend import Policy, Recorder, create_backend

ENTITY_READ = create_permission("catalog.entity.read", {"action": "read"}, "catalog-entity")
ENTITY_DELETE = create_permission("catalog.entity.delete", {"action": "delete"}, "catalog-entity")
ENTITY_CREATE = create_permission("catalog.entity.create", {"action": "create"})
JANE = "user:default/jane"
ENTITIES = {
    "component:default/mine": {"owner": JANE},
    "component:default/theirs": {"owner": "user:default/other"},
}
IS_OWNER = create_permission_rule(
    name="IS_OWNER",
    description="Owned by the user",
    resource_type="catalog-entity",
    params_schema={"type": "object", "properties": {"owner": {"type": "string"}}},
    validate_params=lambda params: params["owner"],
    apply=lambda entity, params: entity["owner"] == params["owner"],
    to_query=lambda params: ("owner", params["owner"]),
)
CONDITIONS = create_condition_exports(
    plugin_id="catalog", resource_type="catalog-entity", rules={"is_owner": IS_OWNER}
)
PERMISSIONS = {p.name: p for p in (ENTITY_READ, ENTITY_DELETE, ENTITY_CREATE)}


def owner_policy(permission: dict[str, t.Any], user: str | None) -> dict[str, t.Any]:
    """Read: allowed; delete: own entities only; create: denied."""
    if permission["name"] == "catalog.entity.read":
        return {"result": "ALLOW"}
    if permission["name"] == "catalog.entity.delete" and user:
        return CONDITIONS.create_conditional_decision(
            ENTITY_DELETE, CONDITIONS.conditions["is_owner"](owner=user)
        ).to_dict()
    return {"result": "DENY"}


def catalog_app(urls: dict[str, str], own_url: str, **permission: t.Any) -> Flask:
    app = Flask("catalog", static_folder=None)
    app.config["BACKSTAGE_CONFIG"] = {
        "backend": {"baseUrl": own_url},
        "permission": {"enabled": True, **permission},
        "auth": {"providers": {"guest": {}}},
        "discovery": {
            "endpoints": [{"target": url, "plugins": [plugin]} for plugin, url in urls.items()]
        },
    }
    auth = BackstageAuth(app)
    AuthBackend(app)
    bp = Blueprint("catalog", __name__, url_prefix="/api/catalog")

    @bp.get("/check/<name>")
    def check(name: str) -> Response:
        decision = auth.permissions.authorize(
            get_credentials(), PERMISSIONS[name], resource_ref=request.args.get("ref")
        )
        return jsonify({"result": decision.result.value})

    @bp.get("/entities")
    def entities() -> Response:
        decision = auth.permissions.authorize_conditional(get_credentials(), ENTITY_DELETE)
        if isinstance(decision, ConditionalPolicyDecision):
            ruleset = auth.permissions_registry().get_permission_ruleset("catalog-entity")
            keep = create_condition_filter(ruleset)(decision.conditions)
            names = [ref for ref, entity in ENTITIES.items() if keep(entity)]
        elif decision.result is AuthorizeResult.ALLOW:
            names = list(ENTITIES)
        else:
            names = []
        return jsonify({"deletable": names, "result": decision.result.value})

    app.register_blueprint(bp)
    with app.app_context():
        auth.permissions_registry("catalog").add_resource_type(
            "catalog-entity",
            get_resources=lambda refs: [ENTITIES.get(ref) for ref in refs],
            rules=[IS_OWNER],
            permissions=[ENTITY_READ, ENTITY_DELETE],
        )
    return app


class Deployment(t.NamedTuple):
    catalog: Flask
    recorder: Recorder
    catalog_url: str


@pytest.fixture
def deploy() -> t.Iterator[t.Callable[..., Deployment]]:
    """Start the catalog and a permission backend; ``deploy(policy, **permission_config)``."""
    started: list[LiveServer] = []

    def start(policy: Policy = owner_policy, **permission: t.Any) -> Deployment:
        catalog_server, backend_server = LiveServer(None), LiveServer(None)
        catalog_url = catalog_server.url
        urls = {
            "permission": f"{backend_server.url}/api/permission",
            "catalog": f"{catalog_url}/api/catalog",
            "auth": f"{catalog_url}/api/auth",
        }
        recorder = Recorder(policy)
        catalog = catalog_app(urls, catalog_url, **permission)
        catalog_server.server.app = catalog
        backend_server.server.app = create_backend(recorder, urls=urls)
        for server in (catalog_server, backend_server):
            server.__enter__()
            started.append(server)
        return Deployment(catalog, recorder, catalog_url)

    yield start
    for server in started:
        server.__exit__(None, None, None)


def user_headers(app: Flask, sub: str = JANE) -> dict[str, str]:
    token = AuthBackend.state(app).issuer.issue_token(sub, [sub]).token
    return {"Authorization": f"Bearer {token}"}


def get(deployment: Deployment, path: str, sub: str = JANE) -> t.Any:
    import requests

    return requests.get(
        f"{deployment.catalog_url}/api/catalog{path}",
        headers=user_headers(deployment.catalog, sub),
        timeout=15,
    )


# -- the backend decides -----------------------------------------------------


def test_the_backend_decides_for_a_user_with_backstages_request(deploy: t.Any) -> None:
    deployment = deploy()
    assert get(deployment, "/check/catalog.entity.read?ref=component:default/x").json() == {
        "result": "ALLOW"
    }
    assert get(deployment, "/check/catalog.entity.create").json() == {"result": "DENY"}
    first = deployment.recorder.bodies[0]["items"]
    assert len(first) == 1
    item = first[0]
    assert str(uuid.UUID(item["id"])) == item["id"]
    assert item["permission"] == {
        "type": "resource",
        "name": "catalog.entity.read",
        "attributes": {"action": "read"},
        "resourceType": "catalog-entity",
    }
    assert item["resourceRef"] == "component:default/x"
    basic = deployment.recorder.bodies[1]["items"][0]
    assert basic["permission"] == {
        "type": "basic",
        "name": "catalog.entity.create",
        "attributes": {"action": "create"},
    }
    assert "resourceRef" not in basic
    # a plugin token on behalf of the user, from the catalog
    assert deployment.recorder.principals[0] == {
        "type": "user",
        "userEntityRef": JANE,
        "actor": {"type": "service", "subject": "plugin:catalog"},
    }


def test_a_conditional_decision_for_a_ref_is_applied_by_the_plugin(deploy: t.Any) -> None:
    deployment = deploy()
    mine = get(deployment, "/check/catalog.entity.delete?ref=component:default/mine")
    theirs = get(deployment, "/check/catalog.entity.delete?ref=component:default/theirs")
    missing = get(deployment, "/check/catalog.entity.delete?ref=component:default/none")
    assert [r.json()["result"] for r in (mine, theirs, missing)] == ["ALLOW", "DENY", "DENY"]
    # the permission backend called the catalog's apply-conditions, and got Backstage's shape
    applied = deployment.recorder.applied[0]["items"][0]
    assert set(applied) == {"id", "result"} and applied["result"] == "ALLOW"


def test_authorize_conditional_returns_the_conditions(deploy: t.Any) -> None:
    deployment = deploy()
    reply = get(deployment, "/entities")
    assert reply.json() == {"deletable": ["component:default/mine"], "result": "CONDITIONAL"}
    item = deployment.recorder.bodies[0]["items"][0]
    assert "resourceRef" not in item
    other = get(deployment, "/entities", sub="user:default/other")
    assert other.json()["deletable"] == ["component:default/theirs"]


def test_many_queries_are_one_request(deploy: t.Any) -> None:
    deployment = deploy()
    with deployment.catalog.test_request_context("/api/catalog/entities"):
        service = BackstageAuth.state(deployment.catalog).permissions
        jane = (
            BackstageAuth.state(deployment.catalog)
            .auth("catalog")
            .authenticate(user_headers(deployment.catalog)["Authorization"][7:])
        )
        decisions = service.authorize_many(
            jane,
            [
                PolicyQuery(ENTITY_READ, "component:default/a"),
                PolicyQuery(ENTITY_CREATE),
                PolicyQuery(ENTITY_DELETE, "component:default/mine"),
                PolicyQuery(ENTITY_DELETE, "component:default/theirs"),
            ],
        )
    assert [d.result.value for d in decisions] == ["ALLOW", "DENY", "ALLOW", "DENY"]
    assert len(deployment.recorder.bodies) == 1
    ids = [item["id"] for item in deployment.recorder.bodies[0]["items"]]
    assert len(set(ids)) == 4


def test_experimental_batched_requests_group_refs_per_permission(deploy: t.Any) -> None:
    deployment = deploy(EXPERIMENTAL_enableBatchedRequests=True)
    with deployment.catalog.test_request_context("/api/catalog/entities"):
        state = BackstageAuth.state(deployment.catalog)
        jane = state.auth("catalog").authenticate(
            user_headers(deployment.catalog)["Authorization"][7:]
        )
        decisions = state.permissions.authorize_many(
            jane,
            [
                PolicyQuery(ENTITY_DELETE, "component:default/theirs"),
                PolicyQuery(ENTITY_READ, "component:default/a"),
                PolicyQuery(ENTITY_DELETE, "component:default/mine"),
                PolicyQuery(ENTITY_READ, "component:default/b"),
            ],
        )
    assert [d.result.value for d in decisions] == ["DENY", "ALLOW", "ALLOW", "ALLOW"]
    items = deployment.recorder.bodies[0]["items"]
    by_name = {item["permission"]["name"]: item for item in items}
    assert len(items) == 2
    assert by_name["catalog.entity.delete"]["resourceRef"] == [
        "component:default/theirs",
        "component:default/mine",
    ]
    assert by_name["catalog.entity.read"]["resourceRef"] == [
        "component:default/a",
        "component:default/b",
    ]


# -- decided without asking ----------------------------------------------------


def test_service_principals_are_decided_by_their_restrictions_alone(deploy: t.Any) -> None:
    deployment = deploy(lambda permission, user: {"result": "DENY"})
    state = BackstageAuth.state(deployment.catalog)
    with deployment.catalog.test_request_context("/api/catalog/entities"):
        service = state.auth("search").get_own_service_credentials()
        assert state.permissions.authorize(service, ENTITY_DELETE).result is AuthorizeResult.ALLOW
    assert deployment.recorder.bodies == []


def test_restrictions_are_enforced_before_asking(deploy: t.Any) -> None:
    deployment = deploy(lambda permission, user: {"result": "ALLOW"})
    restricted = Credentials(
        UserPrincipal(JANE, access_restrictions=AccessRestrictions(permission_names=("x",))),
        token="unused",
    )
    state = BackstageAuth.state(deployment.catalog)
    with deployment.catalog.test_request_context("/api/catalog/entities"):
        assert state.permissions.authorize(restricted, ENTITY_READ).result is AuthorizeResult.DENY
        assert (
            state.permissions.authorize_conditional(restricted, ENTITY_DELETE).result
            is AuthorizeResult.DENY
        )
    assert deployment.recorder.arrived == []


def test_credentials_that_cannot_be_delegated_are_denied_unasked(deploy: t.Any) -> None:
    """A user whose restrictions leave ``permission`` out: no token, so no ALLOW."""
    deployment = deploy(lambda permission, user: {"result": "ALLOW"})
    scoped = Credentials(
        UserPrincipal(JANE, access_restrictions=AccessRestrictions()),
        token="bspat_x",
        all_access_restrictions={"catalog": AccessRestrictions()},
    )
    state = BackstageAuth.state(deployment.catalog)
    with deployment.catalog.test_request_context("/api/catalog/entities"):
        assert state.permissions.authorize(scoped, ENTITY_READ).result is AuthorizeResult.DENY
    assert deployment.recorder.arrived == []


def test_none_credentials_send_no_token(deploy: t.Any) -> None:
    deployment = deploy()
    state = BackstageAuth.state(deployment.catalog)
    with deployment.catalog.test_request_context("/api/catalog/entities"):
        # the backend's default auth policy refuses anonymous callers: 401, so 503 here
        with pytest.raises(PermissionBackendUnavailable, match="answered 401"):
            state.permissions.authorize(NONE_CREDENTIALS, ENTITY_READ)
    assert deployment.recorder.arrived == [None]


# -- failing closed -------------------------------------------------------------


def _answer(status: int, body: t.Any) -> t.Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return lambda request_body, answer: (status, data)


def _rewrite(change: t.Callable[[dict[str, t.Any], dict[str, t.Any]], t.Any]) -> t.Any:
    def tamper(request_body: dict[str, t.Any], answer: dict[str, t.Any]) -> tuple[int, bytes]:
        return 200, json.dumps(change(request_body, answer)).encode()

    return tamper


def _allow_all_ids(body: dict[str, t.Any], answer: dict[str, t.Any]) -> t.Any:
    return {"items": [{"id": i["id"], "result": "ALLOW"} for i in body["items"]]}


BROKEN = {
    "5xx": _answer(500, {"error": {"name": "Error", "message": "boom"}}),
    "4xx": _answer(400, {"error": {"name": "InputError", "message": "bad"}}),
    "not-json": _answer(200, b"<html>ALLOW</html>"),
    "no-items": _answer(200, {"result": "ALLOW"}),
    "items-not-a-list": _answer(200, {"items": {"result": "ALLOW"}}),
    "missing-item": _rewrite(lambda body, answer: {"items": []}),
    "unasked-id": _rewrite(lambda body, answer: {"items": [{"id": "other", "result": "ALLOW"}]}),
    "extra-id": _rewrite(
        lambda body, answer: {
            "items": [*_allow_all_ids(body, answer)["items"], {"id": "x", "result": "ALLOW"}]
        }
    ),
    "duplicate-id": _rewrite(
        lambda body, answer: {"items": _allow_all_ids(body, answer)["items"] * 2}
    ),
    "unknown-result": _rewrite(
        lambda body, answer: {"items": [{"id": i["id"], "result": "allow"} for i in body["items"]]}
    ),
    "conditional-for-basic": _rewrite(
        lambda body, answer: {
            "items": [
                {
                    "id": i["id"],
                    "result": "CONDITIONAL",
                    "pluginId": "catalog",
                    "resourceType": "catalog-entity",
                    "conditions": {"rule": "IS_OWNER", "resourceType": "catalog-entity"},
                }
                for i in body["items"]
            ]
        }
    ),
    "too-large": _answer(200, {"items": [], "pad": "x" * (2 * 1024 * 1024)}),
    "deep": _answer(200, b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
}


@pytest.mark.parametrize("mode", sorted(BROKEN))
def test_a_broken_backend_is_a_503_never_an_allow(deploy: t.Any, mode: str) -> None:
    deployment = deploy(lambda permission, user: {"result": "ALLOW"})
    deployment.recorder.tamper = BROKEN[mode]
    reply = get(deployment, "/check/catalog.entity.create")
    assert reply.status_code == 503, reply.text
    body = reply.json()
    assert body["error"]["name"] == "ServiceUnavailableError"
    assert "permission backend" in body["error"]["message"]
    assert body["response"] == {"statusCode": 503}
    assert "Bearer" not in reply.text and "ey" not in body["error"]["message"]


CONDITIONAL_BROKEN = {
    "conditions-of-another-type": {"resourceType": "other"},
    "malformed-conditions": {"conditions": {"anyOf": []}},
    "mixed-conditions": {"conditions": {"allOf": [], "rule": "IS_OWNER"}},
    "no-plugin-id": {"pluginId": None},
}


@pytest.mark.parametrize("mode", sorted(CONDITIONAL_BROKEN))
def test_a_malformed_conditional_decision_is_a_503(deploy: t.Any, mode: str) -> None:
    deployment = deploy()
    patch = CONDITIONAL_BROKEN[mode]
    deployment.recorder.tamper = _rewrite(
        lambda body, answer: {"items": [{**item, **patch} for item in answer["items"]]}
    )
    reply = get(deployment, "/entities")
    assert reply.status_code == 503, reply.text
    assert reply.json()["error"]["name"] == "ServiceUnavailableError"


def test_a_conditional_answer_to_authorize_is_a_503(deploy: t.Any) -> None:
    """authorize() takes ALLOW or DENY only, even for a resource permission."""
    deployment = deploy()
    deployment.recorder.tamper = _rewrite(
        lambda body, answer: {
            "items": [{"id": i["id"], **owner_policy(i["permission"], JANE)} for i in body["items"]]
        }
    )
    reply = get(deployment, "/check/catalog.entity.delete")
    assert reply.status_code == 503
    assert "expected ALLOW or DENY" in reply.json()["error"]["message"]


def test_a_batched_answer_of_the_wrong_length_is_a_503(deploy: t.Any) -> None:
    deployment = deploy(EXPERIMENTAL_enableBatchedRequests=True)
    deployment.recorder.tamper = _rewrite(
        lambda body, answer: {
            "items": [{"id": i["id"], "result": ["ALLOW"] * 3} for i in body["items"]]
        }
    )
    state = BackstageAuth.state(deployment.catalog)
    with deployment.catalog.test_request_context("/api/catalog/entities"):
        jane = state.auth("catalog").authenticate(
            user_headers(deployment.catalog)["Authorization"][7:]
        )
        with pytest.raises(PermissionBackendUnavailable, match="do(es)? not match"):
            state.permissions.authorize_many(
                jane,
                [
                    PolicyQuery(ENTITY_READ, "component:default/a"),
                    PolicyQuery(ENTITY_READ, "component:default/b"),
                ],
            )


def test_a_slow_backend_is_a_503(deploy: t.Any) -> None:
    deployment = deploy(lambda permission, user: {"result": "ALLOW"})
    deployment.recorder.delay = 1.5
    client = BackstageAuth.state(deployment.catalog).permissions.client
    assert client is not None
    client.timeout = 0.5
    reply = get(deployment, "/check/catalog.entity.create")
    assert reply.status_code == 503
    assert reply.json()["error"]["message"] == "The permission backend did not answer in time"


def test_a_backend_that_is_down_is_a_503() -> None:
    own = LiveServer(None)
    urls = {"permission": f"http://127.0.0.1:{free_port()}/api/permission"}
    catalog = catalog_app(urls, own.url)
    own.server.app = catalog
    import requests

    with own:
        reply = requests.get(
            f"{own.url}/api/catalog/check/catalog.entity.create",
            headers=user_headers(catalog),
            timeout=15,
        )
    assert reply.status_code == 503
    assert reply.json()["error"] == {
        "name": "ServiceUnavailableError",
        "message": "The permission backend could not be reached",
    }


def test_the_remote_client_imports_requests_only_when_it_calls() -> None:
    import subprocess
    import sys
    import textwrap

    probe = textwrap.dedent(
        """
        import sys
        from flask import Flask
        from flask_backstage_auth import BackstageAuth
        app = Flask("lean", static_folder=None)
        app.config["BACKSTAGE_CONFIG"] = {
            "backend": {"auth": {"keys": [{"secret": "a-test-secret-of-enough-length-0123456789"}]}},
            "permission": {"enabled": True},
        }
        auth = BackstageAuth(app)
        with app.app_context():
            assert auth.permissions.remote
        print("requests" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


def test_a_backend_that_trickles_its_answer_is_cut_at_the_deadline() -> None:
    """Each byte arrives in time for a read timeout; the whole call still has one deadline."""
    import time

    def trickle(environ: dict[str, t.Any], start_response: t.Any) -> t.Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        for byte in b'{"items": []}' + b" " * 100:
            time.sleep(0.05)
            yield bytes([byte])

    backend, own = LiveServer(trickle), LiveServer(None)
    catalog = catalog_app({"permission": f"{backend.url}/api/permission"}, own.url)
    own.server.app = catalog
    client = BackstageAuth.state(catalog).permissions.client
    assert client is not None
    client.timeout = 0.5
    import requests

    with backend, own:
        started = time.monotonic()
        reply = requests.get(
            f"{own.url}/api/catalog/check/catalog.entity.create",
            headers=user_headers(catalog),
            timeout=15,
        )
        elapsed = time.monotonic() - started
    assert reply.status_code == 503
    assert reply.json()["error"]["message"] == "The permission backend did not answer in time"
    assert elapsed < 3
