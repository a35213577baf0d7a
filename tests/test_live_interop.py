"""Our tokens against the real Backstage packages (opt-in: needs Node and the harness).

Run with ``FLASK_BACKSTAGE_AUTH_LIVE_INTEROP=1`` after
``bash ../shared/interop/live/setup.sh --no-venv`` (it installs the pinned
Backstage packages into /tmp/bs-interop). The scripts come from
``../shared/interop/live`` (or ``$BS_INTEROP_LIVE``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import typing as t
from pathlib import Path

import pytest
from flask import Flask

from flask_backstage_auth import BackstageAuth, ServerTokenManager
from flask_backstage_auth.legacy.secrets import generate_secret
from tests.conftest import LiveServer

LIVE = Path(
    os.environ.get("BS_INTEROP_LIVE", Path(__file__).parents[2] / "shared" / "interop" / "live")
)

pytestmark = pytest.mark.skipif(
    os.environ.get("FLASK_BACKSTAGE_AUTH_LIVE_INTEROP") != "1"
    or shutil.which("node") is None
    or not (LIVE / "verify-external.js").exists()
    or not Path(os.environ.get("BS_INTEROP_DIR", "/tmp/bs-interop"), "node_modules").exists(),
    reason="live interop: set FLASK_BACKSTAGE_AUTH_LIVE_INTEROP=1, with Node and the harness installed",
)


def node(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(LIVE / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_legacy_token_accepted_by_server_token_manager() -> None:
    secret, other = generate_secret(), generate_secret()
    token = (
        ServerTokenManager.from_config({"backend": {"auth": {"keys": [{"secret": secret}]}}})
        .get_token()
        .token
    )
    assert node("verify-legacy.js", token, secret).returncode == 0
    assert node("verify-legacy.js", token, other, secret).returncode == 0
    assert node("verify-legacy.js", token, other).returncode == 1


def test_legacy_token_accepted_by_the_new_backend() -> None:
    secret = generate_secret()
    token = (
        ServerTokenManager.from_config({"backend": {"auth": {"keys": [{"secret": secret}]}}})
        .get_token()
        .token
    )
    entries = json.dumps([{"type": "legacy", "options": {"secret": secret, "subject": "python"}}])
    result = node("verify-external.js", token, entries)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"subject":"python"' in result.stdout


def test_plugin_token_accepted_by_the_new_backend() -> None:
    server = LiveServer(None)
    app = Flask("py-backend")
    app.config["BACKSTAGE_CONFIG"] = {"backend": {"baseUrl": server.url}}
    BackstageAuth(app)
    server.server.app = app
    auth = BackstageAuth.state(app).auth("search")
    token = auth.get_plugin_request_token(
        on_behalf_of=auth.get_own_service_credentials(), target_plugin_id="echo"
    ).token
    config: dict[str, t.Any] = {
        "backend": {},
        "discovery": {
            "endpoints": [{"target": f"{server.url}/api/{{{{pluginId}}}}", "plugins": ["search"]}]
        },
    }
    with server:
        result = node("verify-external.js", token, json.dumps(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"subject":"plugin:search"' in result.stdout


def test_user_token_accepted_by_the_new_backend() -> None:
    """A user token from our AuthBackend, checked by Backstage against our auth JWKS."""
    from flask_backstage_auth import AuthBackend

    server = LiveServer(None)
    app = Flask("py-auth")
    app.config["BACKSTAGE_CONFIG"] = {"backend": {"baseUrl": server.url}}
    BackstageAuth(app)
    AuthBackend(app)
    server.server.app = app
    token = (
        AuthBackend.state(app).issuer.issue_token("user:default/jane", ["user:default/jane"]).token
    )
    config: dict[str, t.Any] = {
        "backend": {},
        "discovery": {
            "endpoints": [{"target": f"{server.url}/api/{{{{pluginId}}}}", "plugins": ["auth"]}]
        },
    }
    with server:
        result = node("verify-external.js", token, json.dumps(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"userEntityRef":"user:default/jane"' in result.stdout
