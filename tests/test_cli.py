from __future__ import annotations

import base64

import pytest
from flask import Flask

from flask_backstage_auth import ServerTokenManager
from flask_backstage_auth.cli import cli
from tests.conftest import new_secret


def make_app(keys: list[str] | None) -> Flask:
    app = Flask("cli-test")
    auth = {"keys": [{"secret": k} for k in keys]} if keys is not None else {}
    app.config["BACKSTAGE_CONFIG"] = {"backend": {"auth": auth}}
    app.cli.add_command(cli)
    return app


def test_generate_secret() -> None:
    runner = make_app(None).test_cli_runner()
    result = runner.invoke(args=["backstage-auth", "generate-secret"])
    assert result.exit_code == 0
    assert len(base64.b64decode(result.output.strip())) == 24
    result = runner.invoke(args=["backstage-auth", "generate-secret", "--bytes", "48"])
    assert len(base64.b64decode(result.output.strip())) == 48
    result = runner.invoke(args=["backstage-auth", "generate-secret", "--bytes", "4"])
    assert result.exit_code != 0


def test_minted_token_is_accepted_by_the_configured_keys() -> None:
    secret = new_secret()
    result = make_app([secret]).test_cli_runner().invoke(args=["backstage-auth", "mint-token"])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    ServerTokenManager.from_config(
        {"backend": {"auth": {"keys": [{"secret": secret}]}}}
    ).authenticate(token)


def test_verify_token_valid_and_invalid() -> None:
    secret = new_secret()
    app = make_app([secret])
    runner = app.test_cli_runner()
    token = runner.invoke(args=["backstage-auth", "mint-token"]).output.strip()
    result = runner.invoke(args=["backstage-auth", "verify-token", token])
    assert result.exit_code == 0
    assert "valid: sub=backstage-server" in result.output

    other = make_app([new_secret()]).test_cli_runner()
    result = other.invoke(args=["backstage-auth", "verify-token", token])
    assert result.exit_code == 1
    assert "invalid: Invalid server token" in result.output
    assert "signature verification failed" in result.output

    result = other.invoke(args=["backstage-auth", "verify-token", "-"], input="not-a-token\n")
    assert result.exit_code == 1
    assert "not a compact JWS" in result.output


@pytest.mark.parametrize("command", ["mint-token", "verify-token"])
def test_token_commands_need_configured_keys(command: str) -> None:
    result = (
        make_app(None)
        .test_cli_runner()
        .invoke(args=["backstage-auth", command, "x"][: 2 if command == "mint-token" else 3])
    )
    assert result.exit_code != 0
    assert "backend.auth.keys" in result.output


def test_entry_point_is_declared() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="flask.commands")}
    assert names.get("backstage-auth") == "flask_backstage_auth.cli:cli"
