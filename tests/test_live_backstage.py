"""The example app beside a real Backstage backend (opt-in: needs Node and npm).

Run with ``FLASK_BACKSTAGE_AUTH_LIVE_BACKSTAGE=1``. The exact pins of
``tests/live_backstage/package.json`` are installed into ``$BS_LIVE_DIR``
(default ``/tmp/bs-live``; cached) by ``tests/live_backstage/install.sh``, and
``tests/live_backstage/index.js`` starts a real ``createBackend()`` with the
auth backend (guest provider), the permission backend (the policy in
index.js), the catalog (``catalog-entities.yaml``) and ``nodeprobe``, a test
plugin that calls Flask. The example app serves the other plugins, with
``discovery.endpoints`` pointing ``auth``, ``permission``, ``catalog`` and
``nodeprobe`` at Node, and Node's pointing the Flask plugins at Flask. Only
plugin tokens and user tokens cross between them: no shared secret.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import typing as t
from pathlib import Path

import pytest
import requests
from flask import Blueprint, Flask, jsonify, request
from flask.typing import ResponseReturnValue

from flask_backstage_auth import BackstageAuth, get_credentials
from flask_backstage_auth.client import plugin_session
from flask_backstage_auth.errors import InputError, NotFoundError
from flask_backstage_auth.permissions import create_permission
from tests.conftest import LiveServer, free_port

HERE = Path(__file__).parent / "live_backstage"
LIVE_DIR = Path(os.environ.get("BS_LIVE_DIR", "/tmp/bs-live"))
INSTALL_TIMEOUT = 600  # seconds; a cold install took 1.5 to 4 minutes here
START_TIMEOUT = 120  # seconds until the backend serves the guest with its catalog groups
GUEST = "user:development/guest"
TEAM = "group:default/team-live"

pytestmark = pytest.mark.skipif(
    os.environ.get("FLASK_BACKSTAGE_AUTH_LIVE_BACKSTAGE") != "1"
    or shutil.which("node") is None
    or shutil.which("npm") is None,
    reason="live Backstage: set FLASK_BACKSTAGE_AUTH_LIVE_BACKSTAGE=1, with node and npm",
)


class NodeBackend:
    """``node tests/live_backstage/index.js`` on a loopback port, with a bounded start."""

    def __init__(self, port: int, flask_url: str, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.flask_url = flask_url
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(
            os.environ,
            BS_LIVE_DIR=str(LIVE_DIR),
            BS_LIVE_PORT=str(self.port),
            BS_LIVE_FLASK_URL=self.flask_url,
            LOG_LEVEL="warn",
        )
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                ["node", str(HERE / "index.js")],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Backstage backend exited:\n{self.log_tail()}")
            try:
                identity = self.guest_identity()
                if TEAM in identity["identity"]["ownershipEntityRefs"]:
                    return  # auth is up, and the catalog has processed the guest
            except (requests.RequestException, KeyError, ValueError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the Backstage backend did not start in time:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def guest_identity(self) -> dict[str, t.Any]:
        response = requests.get(f"{self.url}/api/auth/guest/refresh", timeout=10)
        response.raise_for_status()
        return t.cast(t.Dict[str, t.Any], response.json()["backstageIdentity"])

    def guest_token(self) -> str:
        return t.cast(str, self.guest_identity()["token"])

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


# A Flask plugin of the test, beside the example's: its views use the app's
# services, its documents are the resources of the conditional decision.
DOCUMENTS: dict[str, dict[str, t.Any]] = {
    "doc-public": {"tags": ["public"], "owner": "group:default/team-other"},
    "doc-team": {"tags": [], "owner": TEAM},
    "doc-secret": {"tags": [], "owner": "group:default/team-other"},
}
RESTRICTED = create_permission("search.query.restricted")
OPEN = create_permission("livecheck.open")
DOCUMENT_READ = create_permission(
    "livecheck.document.read", {"action": "read"}, resource_type="livecheck-document"
)


def _matches(criteria: object, document: t.Mapping[str, t.Any]) -> bool:
    """The livecheck plugin's permission rules over Backstage's criteria shape.

    :raises InputError: malformed criteria or an unknown rule (never a guess:
        under ``not``, a guess would allow).
    """
    if not isinstance(criteria, dict):
        raise InputError("criteria must be objects")
    for key, combine in (("allOf", all), ("anyOf", any)):
        if key in criteria:
            if not isinstance(criteria[key], list) or not criteria[key]:
                raise InputError(f"{key} must be a non-empty list")
            return combine([_matches(c, document) for c in criteria[key]])
    if "not" in criteria:
        return not _matches(criteria["not"], document)
    params = criteria.get("params")
    rule = criteria.get("rule")
    if rule == "HAS_TAG" and isinstance(params, dict) and isinstance(params.get("tag"), str):
        return params["tag"] in document["tags"]
    if (
        rule == "IS_OWNED_BY"
        and isinstance(params, dict)
        and isinstance(params.get("owners"), list)
    ):
        return document["owner"] in params["owners"]
    raise InputError("unknown rule or bad params")


def livecheck_plugin() -> Blueprint:
    bp = Blueprint("livecheck", __name__, url_prefix="/api/livecheck")
    ext = BackstageAuth()

    @bp.get("/me")
    def me() -> ResponseReturnValue:
        return jsonify({"principal": get_credentials().principal.to_dict()})

    @bp.get("/userinfo")
    def userinfo() -> ResponseReturnValue:
        info = ext.user_info.get_user_info(get_credentials())
        return jsonify(
            {
                "userEntityRef": info.user_entity_ref,
                "ownershipEntityRefs": list(info.ownership_entity_refs),
            }
        )

    @bp.get("/open")
    def open_view() -> ResponseReturnValue:
        ext.permissions.require(get_credentials(), OPEN)
        return jsonify({"ok": True})

    @bp.get("/restricted")
    def restricted() -> ResponseReturnValue:
        ext.permissions.require(get_credentials(), RESTRICTED)
        return jsonify({"ok": True})

    @bp.get("/documents/<name>")
    def document(name: str) -> ResponseReturnValue:
        if name not in DOCUMENTS:
            raise NotFoundError(f"No document {name}")
        ext.permissions.require(get_credentials(), DOCUMENT_READ, resource_ref=name)
        return jsonify({"name": name, **DOCUMENTS[name]})

    # Called by the permission backend (with its plugin token) for a
    # CONDITIONAL decision on a resourceRef: the rules are the plugin's.
    @bp.post("/.well-known/backstage/permissions/apply-conditions")
    def apply_conditions() -> ResponseReturnValue:
        principal = get_credentials().principal
        caller = getattr(principal, "actor", None) or principal
        if getattr(caller, "subject", None) != "plugin:permission":
            raise NotFoundError("Not found")
        body = request.get_json(silent=True)
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise InputError("items must be a list of objects")
        answers = []
        for item in items:
            refs = item.get("resourceRef")
            many = isinstance(refs, list)
            conditions = item.get("conditions")
            if not isinstance(item.get("id"), str) or not isinstance(conditions, dict):
                raise InputError("each item needs an id and conditions")
            results = [
                "ALLOW"
                if item.get("resourceType") == "livecheck-document"
                and isinstance(ref, str)
                and ref in DOCUMENTS
                and _matches(conditions, DOCUMENTS[ref])
                else "DENY"
                for ref in (refs if many else [refs])
            ]
            answers.append({"id": item["id"], "result": results if many else results[0]})
        return jsonify({"items": answers})

    return bp


class Live(t.NamedTuple):
    node: NodeBackend
    flask: LiveServer
    app: Flask


def _example_app(flask_url: str, node_url: str, database: Path, permissions: bool) -> Flask:
    from example_app import create_app

    app = create_app(
        {
            "TESTING": True,
            # The default, stated: the rotation proof must hold with it (an
            # unknown kid forces a refetch at once, within a bounded budget).
            "BACKSTAGE_AUTH_JWKS_COOLDOWN": 30,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}",
            "BACKSTAGE_CONFIG": {
                "backend": {"baseUrl": flask_url},
                "discovery": {
                    "endpoints": [
                        {
                            "target": f"{node_url}/api/{{{{pluginId}}}}",
                            "plugins": ["auth", "permission", "catalog", "nodeprobe"],
                        }
                    ]
                },
                "permission": {"enabled": permissions},
                "techdocs": {"docsDir": "docs"},
            },
        }
    )
    app.register_blueprint(livecheck_plugin())
    return app


@pytest.fixture(scope="module")
def installed() -> None:
    """The pinned packages in ``$BS_LIVE_DIR`` (a no-op when cached)."""
    subprocess.run(
        ["bash", str(HERE / "install.sh")],
        env=dict(os.environ, BS_LIVE_DIR=str(LIVE_DIR)),
        check=True,
        timeout=INSTALL_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def live_pair(folder: Path) -> t.Iterator[Live]:
    """The example app and a Backstage backend of its own, each pointing at the other."""
    flask = LiveServer(None)
    node = NodeBackend(free_port(), flask.url, folder / "backstage.log")
    # The deployment's permission backend decides (no local policy).
    app = _example_app(flask.url, node.url, folder / "example.sqlite", permissions=True)
    flask.server.app = app
    with flask:
        node.start()
        try:
            yield Live(node, flask, app)
        finally:
            node.stop()


@pytest.fixture(scope="module")
def live(installed: None, tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Live]:
    with live_pair(tmp_path_factory.mktemp("live-backstage")) as pair:
        yield pair


def _get(url: str, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(url, headers=headers, timeout=20)


def test_a_guest_signed_in_on_node_is_a_user_in_flask(live: Live) -> None:
    token = live.node.guest_token()
    response = _get(f"{live.flask.url}/api/livecheck/me", token)
    assert response.status_code == 200, response.text
    assert response.json()["principal"] == {"type": "user", "userEntityRef": GUEST}


def test_flask_refuses_what_node_did_not_sign(live: Live) -> None:
    token = live.node.guest_token()
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    for bad in (None, forged, f"{head}.{payload}."):
        response = _get(f"{live.flask.url}/api/livecheck/me", bad)
        assert response.status_code == 401, (bad, response.text)
        assert response.json()["error"]["name"] == "AuthenticationError"
        assert token not in response.text


def test_flask_refuses_a_user_token_from_another_key_with_nodes_kid(live: Live) -> None:
    """The next try: Node's header and claims, signed by a key of the attacker."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    token = live.node.guest_token()
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode(
        claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers=header
    )
    response = _get(f"{live.flask.url}/api/livecheck/me", forged)
    assert response.status_code == 401, response.text
    assert _get(f"{live.flask.url}/api/livecheck/me", token).status_code == 200


def test_flask_reads_the_users_ownership_from_the_node_auth_backend(live: Live) -> None:
    response = _get(f"{live.flask.url}/api/livecheck/userinfo", live.node.guest_token())
    assert response.status_code == 200, response.text
    assert response.json() == {
        "userEntityRef": GUEST,
        "ownershipEntityRefs": [GUEST, TEAM],  # the catalog's memberOf, via /v1/userinfo
    }


def test_the_org_policy_denies_in_a_flask_view(live: Live) -> None:
    token = live.node.guest_token()
    allowed = _get(f"{live.flask.url}/api/livecheck/open", token)
    assert allowed.status_code == 200, allowed.text
    denied = _get(f"{live.flask.url}/api/livecheck/restricted", token)
    assert denied.status_code == 403, denied.text
    assert denied.json()["error"] == {
        "name": "NotAllowedError",
        "message": "Permission denied: search.query.restricted",
    }


def test_a_conditional_decision_is_applied_to_flask_resources(live: Live) -> None:
    token = live.node.guest_token()
    # The policy: tagged public, or owned by one of the user's ownership refs.
    status = {
        name: _get(f"{live.flask.url}/api/livecheck/documents/{name}", token).status_code
        for name in DOCUMENTS
    }
    assert status == {"doc-public": 200, "doc-team": 200, "doc-secret": 403}


def _authorize_on_node(live: Live, token: str, items: list[dict[str, t.Any]]) -> t.Any:
    """POST /api/permission/authorize from the livecheck plugin, on behalf of the user."""
    with live.app.test_request_context():
        auth = BackstageAuth.state(live.app).auth("livecheck")
        session = plugin_session(
            auth=auth, target_plugin_id="permission", on_behalf_of=auth.authenticate(token)
        )
        response = session.post(
            f"{live.node.url}/api/permission/authorize", json={"items": items}, timeout=20
        )
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_the_permission_backend_decides_for_flask_and_applies_conditions_there(
    live: Live,
) -> None:
    """The Node half of the permission proofs, with the library's plugin tokens only."""
    token = live.node.guest_token()
    basic = [
        {"id": name, "permission": {"type": "basic", "name": name, "attributes": {}}}
        for name in (RESTRICTED.name, OPEN.name)
    ]
    resource = {
        "type": "resource",
        "name": DOCUMENT_READ.name,
        "attributes": {"action": "read"},
        "resourceType": "livecheck-document",
    }
    by_ref = [{"id": name, "resourceRef": name, "permission": resource} for name in DOCUMENTS]
    answers = _authorize_on_node(live, token, [*basic, *by_ref])
    # The conditions were applied by the livecheck plugin's apply-conditions.
    assert {a["id"]: a["result"] for a in answers} == {
        RESTRICTED.name: "DENY",
        OPEN.name: "ALLOW",
        "doc-public": "ALLOW",
        "doc-team": "ALLOW",
        "doc-secret": "DENY",
    }
    # Without a resourceRef, the conditions come back for Flask to apply.
    (conditional,) = _authorize_on_node(live, token, [{"id": "all", "permission": resource}])
    assert conditional["result"] == "CONDITIONAL"
    assert (conditional["pluginId"], conditional["resourceType"]) == (
        "livecheck",
        "livecheck-document",
    )
    visible = [n for n, d in DOCUMENTS.items() if _matches(conditional["conditions"], d)]
    assert visible == ["doc-public", "doc-team"]


def test_apply_conditions_is_refused_to_other_callers(live: Live) -> None:
    """Only the permission backend may ask the livecheck plugin to apply conditions."""
    token = live.node.guest_token()
    body = {
        "items": [
            {
                "id": "1",
                "resourceRef": "doc-secret",
                "resourceType": "livecheck-document",
                "conditions": {"rule": "HAS_TAG", "params": {"tag": "public"}},
            }
        ]
    }
    url = f"{live.flask.url}/api/livecheck/.well-known/backstage/permissions/apply-conditions"
    assert requests.post(url, json=body, timeout=20).status_code == 401
    as_user = requests.post(
        url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=20
    )
    assert as_user.status_code == 404


@pytest.mark.parametrize(
    "criteria",
    [
        {"not": {"rule": "NO_SUCH_RULE", "params": {}}},
        {"not": {"rule": "IS_OWNED_BY", "params": {"owners": TEAM}}},  # a string, not a list
        {"anyOf": []},
        {"rule": "HAS_TAG", "params": "public"},
        ["HAS_TAG"],
    ],
)
def test_malformed_conditions_are_refused_not_guessed(criteria: object) -> None:
    with pytest.raises(InputError):
        _matches(criteria, DOCUMENTS["doc-team"])


def test_flask_calls_the_node_catalog_on_behalf_of_the_user(live: Live) -> None:
    token = live.node.guest_token()
    response = requests.post(
        f"{live.flask.url}/api/search/index",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    # The seven entities of catalog-entities.yaml (the file Location among them).
    assert response.json()["indexed"]["software-catalog"] == 7
    found = _get(f"{live.flask.url}/api/search/query?term=owned by the guest", token)
    assert [r["document"]["location"] for r in found.json()["results"]] == [
        "/catalog/default/component/live-petstore"
    ]
    # Node sees the user, with the Flask plugin as the actor.
    with live.app.test_request_context():
        auth = BackstageAuth.state(live.app).auth("search")
        user = auth.authenticate(token)
        whoami = plugin_session(auth=auth, target_plugin_id="nodeprobe", on_behalf_of=user).get(
            f"{live.node.url}/api/nodeprobe/whoami", timeout=20
        )
        assert whoami.status_code == 200, whoami.text
        assert whoami.json()["principal"] == {
            "type": "user",
            "userEntityRef": GUEST,
            "actor": {"type": "service", "subject": "plugin:search"},
        }
        # A token for another target is refused by Node.
        wrong = plugin_session(auth=auth, target_plugin_id="catalog", on_behalf_of=user).get(
            f"{live.node.url}/api/nodeprobe/whoami", timeout=20
        )
        assert wrong.status_code == 401, wrong.text


def test_flask_refuses_the_search_index_without_credentials(live: Live) -> None:
    assert requests.post(f"{live.flask.url}/api/search/index", timeout=30).status_code == 401


def _node_calls_flask(live: Live, token: str, **query: str) -> requests.Response:
    params = {"target": "app", "path": "/whoami", **query}
    return requests.get(
        f"{live.node.url}/api/nodeprobe/call",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_a_node_plugin_calls_flask(live: Live) -> None:
    token = live.node.guest_token()
    as_user = _node_calls_flask(live, token)
    assert as_user.status_code == 200, as_user.text
    assert as_user.json()["status"] == 200, as_user.text
    assert as_user.json()["body"]["principal"] == {
        "type": "user",
        "userEntityRef": GUEST,
        "actor": {"type": "service", "subject": "plugin:nodeprobe"},
    }
    as_service = _node_calls_flask(live, token, **{"as": "service"})
    assert as_service.json()["status"] == 200, as_service.text
    assert as_service.json()["body"]["principal"] == {
        "type": "service",
        "subject": "plugin:nodeprobe",
    }


def test_a_restarted_backends_new_keys_are_accepted_at_once(
    installed: None, tmp_path: Path
) -> None:
    # A pair of its own: the shared backend keeps its keys for the other tests.
    with live_pair(tmp_path) as own:
        before = own.node.guest_token()
        assert _get(f"{own.flask.url}/api/livecheck/me", before).status_code == 200
        assert _node_calls_flask(own, before).json()["status"] == 200
        own.node.restart()  # in-memory key stores: new user and plugin keys
        after = own.node.guest_token()
        assert after.split(".")[0] != before.split(".")[0]  # another kid
        first_try = {
            "user token": _get(f"{own.flask.url}/api/livecheck/me", after).status_code,
            "plugin token": _node_calls_flask(own, after).json()["status"],
        }
        assert first_try == {"user token": 200, "plugin token": 200}
