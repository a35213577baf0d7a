"""The example app with ``app-config.production.yaml`` layered on is production:
no guest provider, no generated key, no development admin; in process and as
``python -m example_app``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest
import requests

from flask_backstage_auth import BackstageAuth, ConfigError
from flask_backstage_auth.cli import cli
from tests.conftest import free_port, new_secret

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "example_app" / "app-config.yaml"
PRODUCTION = ROOT / "example_app" / "app-config.production.yaml"
GUEST = "user:development/guest"


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"BACKEND_SECRET": new_secret(), "CATALOG_READER_TOKEN": new_secret()}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BACKSTAGE_APP_CONFIG", os.pathsep.join([str(BASE), str(PRODUCTION)]))
    return env


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("testing", [False, True])
def test_the_production_layer_is_production_mode(
    production_env: dict[str, str], testing: bool
) -> None:
    """Even under TESTING: the configuration, not the runner, decides."""
    from example_app import create_app

    app = create_app({"TESTING": True} if testing else None)
    state = BackstageAuth.state(app)
    assert state.settings.development is False
    assert not getattr(state.token_manager, "generated_key", False)
    policy = t.cast(t.Any, state.permissions.policy)
    assert GUEST not in policy.admins
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith("example-backend.production.sqlite")

    client = app.test_client()
    refused = client.post("/api/auth/guest/refresh")
    assert refused.status_code == 403
    assert "outside of a development environment" in refused.get_json()["error"]["message"]
    # The development static token is gone; the production one reads the catalog only.
    assert (
        client.get(
            "/api/catalog/entities", headers=_bearer("example-catalog-reader-token")
        ).status_code
        == 401
    )
    reader = _bearer(production_env["CATALOG_READER_TOKEN"])
    assert client.get("/api/catalog/entities", headers=reader).status_code == 200
    assert client.get("/api/app/whoami", headers=reader).status_code == 403

    # mint-token signs with the legacy entry's secret; every plugin accepts it.
    app.cli.add_command(cli)
    minted = app.test_cli_runner().invoke(args=["backstage-auth", "mint-token"])
    assert minted.exit_code == 0, minted.output
    token = minted.output.strip()
    whoami = client.get("/api/app/whoami", headers=_bearer(token))
    assert whoami.status_code == 200
    assert whoami.get_json()["principal"] == {"type": "service", "subject": "example-operator"}
    verified = app.test_cli_runner().invoke(args=["backstage-auth", "verify-token", token])
    assert "accepted by externalAccess legacy (backend.auth.externalAccess[0])" in verified.output


def test_the_development_config_alone_is_development(monkeypatch: pytest.MonkeyPatch) -> None:
    from example_app import create_app

    monkeypatch.setenv("BACKSTAGE_APP_CONFIG", str(BASE))
    app = create_app()  # neither debug nor testing: the config says development
    state = BackstageAuth.state(app)
    assert state.settings.development is True
    assert GUEST in t.cast(t.Any, state.permissions.policy).admins
    assert app.test_client().post("/api/auth/guest/refresh").status_code == 200


@pytest.mark.parametrize("missing", ["BACKEND_SECRET", "CATALOG_READER_TOKEN"])
def test_production_needs_its_secrets(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    from example_app import create_app

    monkeypatch.delenv(missing)
    with pytest.raises(ConfigError, match=missing):
        create_app()


def _serve(env: dict[str, str], port: int) -> tuple[subprocess.Popen[str], bool]:
    server = subprocess.Popen(
        [sys.executable, "-m", "example_app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            requests.get(f"http://127.0.0.1:{port}/api/app/health", timeout=2)
            return server, True
        except requests.ConnectionError:
            time.sleep(0.2)
    return server, False


def _stop(server: subprocess.Popen[str]) -> str:
    server.terminate()
    try:
        output, _ = server.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # pragma: no cover
        server.kill()
        output, _ = server.communicate()
    return output


def test_python_m_example_app_in_production(tmp_path: Path) -> None:
    port = free_port()
    port_config = tmp_path / "app-config.port.yaml"
    port_config.write_text(
        f"backend:\n  baseUrl: http://127.0.0.1:{port}\n  listen:\n    port: {port}\n"
        f"  database:\n    connection: {tmp_path / 'production.sqlite'}\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKSTAGE_", "PYTEST"))}
    reader = new_secret()
    env.update(
        BACKEND_SECRET=new_secret(),
        CATALOG_READER_TOKEN=reader,
        BACKSTAGE_APP_CONFIG=os.pathsep.join([str(BASE), str(PRODUCTION), str(port_config)]),
    )
    server, up = _serve(env, port)
    try:
        assert up, _stop(server)
        base = f"http://127.0.0.1:{port}"
        refused = requests.post(f"{base}/api/auth/guest/refresh", timeout=5)
        assert refused.status_code == 403
        assert requests.get(f"{base}/api/catalog/entities", headers=_bearer(reader), timeout=5).ok
        anonymous = requests.get(f"{base}/api/access-tokens/service-tokens", timeout=5)
        assert anonymous.status_code == 401
    finally:
        output = _stop(server)
    assert "generat" not in output.lower(), output  # no generated development key
    assert "Traceback" not in output
    assert (tmp_path / "production.sqlite").is_file()
