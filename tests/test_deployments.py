"""Seed 001's asymmetric key set-up, with three deployments talking over HTTP.

catalog: keys [catalog, scaffolder, search]; scaffolder: [scaffolder];
search: [search]. The first key signs, all keys verify, so search and
scaffolder reach the catalog, the catalog reaches neither, and scaffolder and
search do not reach each other.
"""

from __future__ import annotations

import contextlib
import re
import typing as t

import pytest
import requests
from flask import Blueprint, Flask, jsonify

from flask_backstage_auth import ServerTokenManager, create_require_authentication_middleware
from flask_backstage_auth.client import plugin_session
from flask_backstage_auth.discovery import HostDiscovery
from tests.conftest import LiveServer, new_secret

PLUGINS = ("catalog", "scaffolder", "search")


def deployment(plugin: str, secrets: list[str], endpoints: dict[str, str]) -> Flask:
    config = {
        "backend": {
            "baseUrl": "http://127.0.0.1:1",
            "auth": {"keys": [{"secret": s} for s in secrets]},
        },
        "discovery": {
            "endpoints": [{"target": url, "plugins": [name]} for name, url in endpoints.items()]
        },
    }
    token_manager = ServerTokenManager.from_config(config)
    discovery = HostDiscovery.from_config(config)
    session = plugin_session(token_manager)
    app = Flask(f"deployment-{plugin}")
    bp = Blueprint(plugin, __name__, url_prefix=f"/api/{plugin}")

    @bp.get("/ping")
    def ping() -> t.Any:
        return jsonify({"plugin": plugin})

    @bp.get("/reach/<target>")
    def reach(target: str) -> t.Any:
        response = session.get(f"{discovery.get_base_url(target)}/ping", timeout=5)
        return jsonify({"status": response.status_code})

    app.register_blueprint(bp)
    guard = create_require_authentication_middleware(None, token_manager)
    # /reach is the test's trigger for an outgoing call; /ping is what is guarded.
    exempt = guard.unless(path=re.compile(rf"/api/{plugin}/reach/[a-z]+"))
    app.wsgi_app = exempt.wrap(app.wsgi_app, prefix=f"/api/{plugin}")  # type: ignore[method-assign]
    return app


@pytest.fixture(scope="module")
def servers() -> t.Iterator[dict[str, str]]:
    key = {name: new_secret() for name in PLUGINS}
    key_sets = {
        "catalog": [key["catalog"], key["scaffolder"], key["search"]],
        "scaffolder": [key["scaffolder"]],
        "search": [key["search"]],
    }
    placeholders = {name: LiveServer(None) for name in PLUGINS}
    urls = {name: f"{server.url}/api/{name}" for name, server in placeholders.items()}
    with contextlib.ExitStack() as stack:
        for name, server in placeholders.items():
            server.server.app = deployment(name, key_sets[name], urls)
            stack.enter_context(server)
        yield {name: server.url for name, server in placeholders.items()}


@pytest.mark.parametrize(
    ("caller", "target", "reachable"),
    [
        ("search", "catalog", True),
        ("scaffolder", "catalog", True),
        ("catalog", "search", False),
        ("catalog", "scaffolder", False),
        ("scaffolder", "search", False),
        ("search", "scaffolder", False),
    ],
)
def test_asymmetric_trust(
    servers: dict[str, str], caller: str, target: str, reachable: bool
) -> None:
    response = requests.get(f"{servers[caller]}/api/{caller}/reach/{target}", timeout=10)
    assert response.status_code == 200
    assert response.json()["status"] == (200 if reachable else 401)


def test_anonymous_callers_reach_nobody(servers: dict[str, str]) -> None:
    for name, url in servers.items():
        assert requests.get(f"{url}/api/{name}/ping", timeout=10).status_code == 401


def test_key_rotation_keeps_old_tokens_valid_until_removed() -> None:
    old, new = new_secret(), new_secret()

    def keys(*secrets: str) -> dict[str, t.Any]:
        return {"backend": {"auth": {"keys": [{"secret": s} for s in secrets]}}}

    old_token = ServerTokenManager.from_config(keys(old)).get_token().token
    rotating = ServerTokenManager.from_config(keys(new, old))  # new signs, old still verifies
    rotating.authenticate(old_token)
    ServerTokenManager.from_config(keys(old, new)).authenticate(rotating.get_token().token)
    with pytest.raises(Exception, match="Invalid server token"):
        ServerTokenManager.from_config(keys(new)).authenticate(old_token)
