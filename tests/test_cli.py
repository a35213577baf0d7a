from __future__ import annotations

import base64

from flask import Flask

from flask_backstage_auth import BackstageAuth, ServerTokenManager
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
    BackstageAuth(app)
    runner = app.test_cli_runner()
    token = runner.invoke(args=["backstage-auth", "mint-token"]).output.strip()
    result = runner.invoke(args=["backstage-auth", "verify-token", token])
    assert result.exit_code == 0, result.output
    assert "valid: accepted by externalAccess legacy (backend.auth.keys[0])" in result.output
    assert "principal: service external:backstage-plugin" in result.output

    other_app = make_app([new_secret()])
    BackstageAuth(other_app)
    other = other_app.test_cli_runner()
    result = other.invoke(args=["backstage-auth", "verify-token", token])
    assert result.exit_code == 1
    assert "invalid: Illegal token (no handler recognised it)" in result.output

    result = other.invoke(args=["backstage-auth", "verify-token", "-"], input="not-a-token\n")
    assert result.exit_code == 1
    assert "hint: neither a JWS" in result.output


def test_mint_token_needs_configured_keys() -> None:
    result = make_app(None).test_cli_runner().invoke(args=["backstage-auth", "mint-token"])
    assert result.exit_code != 0
    assert "backend.auth.keys" in result.output


def test_entry_point_is_declared() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="flask.commands")}
    assert names.get("backstage-auth") == "flask_backstage_auth.cli:cli"
