"""``flask backstage-auth verify-token``: every kind of token the app accepts,
through the app's own verifier, and exactly why one is refused."""

from __future__ import annotations

import base64
import time
import typing as t

import jwt
import pytest
from click.testing import Result
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_backstage_auth import AuthBackend, BackstageAuth
from flask_backstage_auth.access_tokens.extension import AccessTokens
from flask_backstage_auth.auth.user.handler import create_limited_user_token
from flask_backstage_auth.cli import cli
from flask_backstage_auth.testing.tokens import (
    create_backstage_tables,
    issue_access_token,
    issue_user_token,
)
from tests.conftest import LiveServer, free_port, new_secret

STATIC = "example-catalog-reader-token"  # the README's static token
KEYS_SECRET = new_secret()
LEGACY_SECRET = new_secret()


def full_app(
    *,
    development: bool = False,
    base_url: str = "http://localhost:7007",
    auth_backend: bool = True,
    **settings: t.Any,
) -> Flask:
    """Every token kind: keys, a static and a legacy entry, AuthBackend, AccessTokens."""
    app = Flask("verify-token-app", static_folder=None)
    app.config.update(
        SQLALCHEMY_DATABASE_URI="sqlite://",
        BACKSTAGE_AUTH_DEVELOPMENT=development,
        BACKSTAGE_CONFIG={
            "backend": {
                "baseUrl": base_url,
                "auth": {
                    "keys": [{"secret": KEYS_SECRET}],
                    "externalAccess": [
                        {
                            "type": "static",
                            "options": {"token": STATIC, "subject": "example-catalog-reader"},
                            "accessRestrictions": [
                                {"plugin": "catalog", "permissionAttribute": {"action": "read"}}
                            ],
                        },
                        {
                            "type": "legacy",
                            "options": {"secret": LEGACY_SECRET, "subject": "ci-pipeline"},
                            "accessRestrictions": [{"plugin": "catalog"}, {"plugin": "search"}],
                        },
                    ],
                },
            },
            "accessTokens": {"personal": {"enabled": True}},
        },
        **settings,
    )
    db = SQLAlchemy()
    db.init_app(app)
    BackstageAuth(app, db=db)
    if auth_backend:
        AuthBackend(app)
    AccessTokens(app)
    create_backstage_tables(app)
    app.cli.add_command(cli)
    return app


@pytest.fixture
def app() -> Flask:
    return full_app()


def verify(app: Flask, *args: str, stdin: str | None = None) -> Result:
    result = app.test_cli_runner().invoke(
        args=["backstage-auth", "verify-token", *args], input=stdin
    )
    return result


def legacy_token(secret: str, **claims: t.Any) -> str:
    payload = {"sub": "backstage-server", "exp": int(time.time()) + 3600, **claims}
    return jwt.encode(payload, base64.b64decode(secret), algorithm="HS256", headers={"typ": None})


def lines(result: Result) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in result.output.splitlines() if ": " in line)


# -- accepted ------------------------------------------------------------------------------


def test_the_readmes_static_token(app: Flask) -> None:
    result = verify(app, STATIC)
    assert result.exit_code == 0, result.output
    out = lines(result)
    assert out["valid"] == "accepted by externalAccess static (backend.auth.externalAccess[0])"
    assert out["principal"] == "service example-catalog-reader"
    assert out["expires"] == "never"
    assert out["restrictions"] == 'only catalog {"permissionAttributes": {"action": ["read"]}}'
    assert STATIC not in result.output


def test_a_legacy_entrys_token_with_its_restrictions_and_plugins(app: Flask) -> None:
    token = legacy_token(LEGACY_SECRET)
    result = verify(app, token, "--plugin", "catalog", "--plugin", "techdocs")
    assert result.exit_code == 1  # one of the plugins refuses
    out = lines(result)
    assert out["valid"] == "accepted by externalAccess legacy (backend.auth.externalAccess[1])"
    assert out["principal"] == "service ci-pipeline"
    assert 3590 <= int(out["expires"].split()[1]) <= 3600
    assert out["restrictions"] == "only catalog; search"
    assert out["plugin catalog"] == "accepted"
    assert out["plugin techdocs"] == (
        "refused (403 This token's access is restricted to plugin(s) 'catalog', 'search')"
    )
    assert token not in result.output and LEGACY_SECRET not in result.output


def test_a_backend_auth_keys_token_as_mint_token_prints_it(app: Flask) -> None:
    minted = app.test_cli_runner().invoke(args=["backstage-auth", "mint-token"])
    token = minted.output.strip()
    result = verify(app, "-", stdin=token + "\n")
    assert result.exit_code == 0, result.output
    out = lines(result)
    assert out["valid"] == "accepted by externalAccess legacy (backend.auth.keys[0])"
    assert out["principal"] == "service external:backstage-plugin"
    assert out["restrictions"] == "none (every plugin)"
    assert token not in result.output


def test_a_user_token_and_its_limited_form(app: Flask) -> None:
    token = issue_user_token(app, "user:default/jane")
    result = verify(app, token, "--plugin", "catalog")
    assert result.exit_code == 0, result.output
    out = lines(result)
    assert out["valid"] == "accepted by user token"
    assert out["principal"] == "user user:default/jane"
    assert "limited" not in out
    assert out["plugin catalog"] == "accepted"

    limited = create_limited_user_token(token)[0]
    result = verify(app, limited)
    assert result.exit_code == 0, result.output
    out = lines(result)
    assert out["valid"] == "accepted by user token"
    assert out["limited"].startswith("yes")
    assert token not in result.output and limited not in result.output


def test_a_plugin_token_on_behalf_of_a_user(app: Flask) -> None:
    search = BackstageAuth.state(app).auth("search")
    with app.test_request_context():
        user = search.authenticate(issue_user_token(app, "user:default/jane"))
        token = search.get_plugin_request_token(on_behalf_of=user, target_plugin_id="catalog").token
    result = verify(app, token, "--plugin", "catalog", "--plugin", "techdocs")
    out = lines(result)
    assert out["valid"] == "accepted by plugin token"
    assert out["principal"] == "user user:default/jane (actor: service plugin:search)"
    assert out["audience"] == "catalog"
    assert out["plugin catalog"] == "accepted"
    assert out["plugin techdocs"] == "refused (401 Failed plugin token verification)"
    assert result.exit_code == 1


def test_a_service_plugin_token(app: Flask) -> None:
    search = BackstageAuth.state(app).auth("search")
    token = search.get_plugin_request_token(
        on_behalf_of=search.get_own_service_credentials(), target_plugin_id="catalog"
    ).token
    result = verify(app, token)
    assert result.exit_code == 0, result.output
    out = lines(result)
    assert out["valid"] == "accepted by plugin token"
    assert out["principal"] == "service plugin:search"


@pytest.mark.parametrize("kind", ["service", "personal"])
def test_an_access_token(app: Flask, kind: t.Literal["service", "personal"]) -> None:
    token = issue_access_token(app, scopes=["catalog:read"], kind=kind)
    result = verify(app, token, "--plugin", "catalog", "--plugin", "scaffolder")
    out = lines(result)
    assert out["valid"] == "accepted by access token"
    expected = "user user:default/test" if kind == "personal" else "service"
    assert out["principal"].startswith(expected)
    assert out["restrictions"].startswith("only catalog")
    assert out["plugin catalog"] == "accepted"
    assert out["plugin scaffolder"].startswith("refused (403")
    assert result.exit_code == 1
    assert token not in result.output


def test_tokens_verified_with_another_apps_jwks() -> None:
    """A user token of a remote auth backend, a plugin token of a remote plugin:
    the keys come from their JWKS endpoints, over HTTP, as for the barrier."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    issuer = full_app(base_url=base_url)
    here = full_app(base_url=base_url, auth_backend=False, BACKSTAGE_AUTH_JWKS_TIMEOUT=5)
    user_token = issue_user_token(issuer, "user:default/remote")
    search = BackstageAuth.state(issuer).auth("search")
    plugin_token = search.get_plugin_request_token(
        on_behalf_of=search.get_own_service_credentials(), target_plugin_id="catalog"
    ).token
    with LiveServer(issuer, port):
        result = verify(here, user_token)
        assert result.exit_code == 0, result.output
        assert lines(result)["valid"] == "accepted by user token"
        assert lines(result)["principal"] == "user user:default/remote"
        result = verify(here, plugin_token)
        assert result.exit_code == 0, result.output
        assert lines(result)["principal"] == "service plugin:search"
    # The same tokens, signed by keys the JWKS does not hold: refused by their handler.
    other = full_app()
    forged_user = issue_user_token(other, "user:default/remote")
    with LiveServer(issuer, port):
        result = verify(here, forged_user)
    assert result.exit_code == 1
    assert "(refused by user token)" in result.output.splitlines()[0]


# -- refused -------------------------------------------------------------------------------


def test_an_unknown_token_lists_the_handlers_tried(app: Flask) -> None:
    result = verify(app, "not-a-token")
    assert result.exit_code == 1
    assert "invalid: Illegal token (no handler recognised it)" in result.output
    tried = lines(result)["tried"]
    assert tried == "plugin token, user token, externalAccess, access token"
    assert "hint: neither a JWS nor a configured static token" in result.output
    assert "not-a-token" not in result.output

    result = verify(app, legacy_token(new_secret()))
    assert "hint: an HS256 token that no configured secret" in result.output


@pytest.mark.parametrize(
    "variant",
    ["static-prefix", "static-case", "static-whitespace", "wrong-secret", "expired", "aud"],
)
def test_near_misses_are_refused(app: Flask, variant: str) -> None:
    token = {
        "static-prefix": STATIC + "x",
        "static-case": STATIC.upper(),
        "static-whitespace": f" {STATIC}",
        "wrong-secret": legacy_token(new_secret()),
        "expired": legacy_token(LEGACY_SECRET, exp=int(time.time()) - 120),
        "aud": legacy_token(LEGACY_SECRET, aud="catalog"),
    }[variant]
    result = verify(app, token)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("invalid: ")
    assert "valid: accepted" not in result.output
    assert token.strip() not in result.output


def test_a_tampered_user_token_is_refused_by_the_user_token_handler(app: Flask) -> None:
    token = issue_user_token(app)
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    result = verify(app, forged)
    assert result.exit_code == 1
    assert "(refused by user token)" in result.output.splitlines()[0]


def test_a_revoked_access_token_is_refused_by_the_access_token_handler(app: Flask) -> None:
    from flask_backstage_auth.access_tokens.format import DISPLAY_PREFIX_LENGTH, hash_token
    from flask_backstage_auth.access_tokens.service import Operator

    token = issue_access_token(app, scopes=["catalog:read"])
    state = AccessTokens.state(app)
    with app.app_context():
        match, _ = state.store.find_by_digest(hash_token(token), token[:DISPLAY_PREFIX_LENGTH])
        assert match is not None
        state.service.revoke(Operator("pytest"), "service", match.record.id, reason="test")
    result = verify(app, token)
    assert result.exit_code == 1
    assert "(refused by access token)" in result.output.splitlines()[0]
    assert token not in result.output


def test_development_apps_say_why_another_processs_token_may_fail() -> None:
    app = full_app(development=True)
    result = verify(app, "not-a-token")
    assert result.exit_code == 1
    assert "development app" in result.output


def test_an_app_without_backstage_auth() -> None:
    app = Flask("bare")
    app.cli.add_command(cli)
    result = verify(app, STATIC)
    assert result.exit_code == 1
    assert "no BackstageAuth" in result.output


def test_a_failing_handler_is_named_and_fails_closed(app: Flask) -> None:
    """A handler bug refuses the token (never accepts it), and says which handler."""

    def broken(token: t.Any) -> None:
        raise RuntimeError("boom")

    BackstageAuth.register_token_handler(broken, stage="first-party", app=app, name="broken kind")
    result = verify(app, STATIC)
    assert result.exit_code == 1
    assert "invalid: Illegal token (refused by broken kind)" in result.output


def test_an_unavailable_service_is_not_a_verdict(app: Flask) -> None:
    from flask_backstage_auth.errors import ServiceUnavailableError

    def unavailable(token: t.Any) -> None:
        raise ServiceUnavailableError("the key store database is unavailable")

    BackstageAuth.register_token_handler(unavailable, stage="first-party", app=app)
    result = verify(app, STATIC)
    assert result.exit_code == 1
    assert "could not verify: the key store database is unavailable" in result.output
    assert "valid" not in result.output


def test_an_unnamed_handler_is_named_by_its_qualname(app: Flask) -> None:
    from flask_backstage_auth.auth.service import VerifiedToken
    from flask_backstage_auth.credentials import ServicePrincipal

    def house_tokens(token: t.Any) -> VerifiedToken | None:
        if token.token != "house-token-123":
            return None
        return VerifiedToken(ServicePrincipal("house"))

    BackstageAuth.register_token_handler(house_tokens, stage="late", app=app)
    result = verify(app, "house-token-123")
    assert result.exit_code == 0, result.output
    assert "accepted by test_an_unnamed_handler_is_named_by_its_qualname.<locals>.house_tokens" in (
        result.output
    )
    result = verify(app, "zzz")
    assert "house_tokens" in lines(result)["tried"]


def test_a_jws_of_another_algorithm_gets_a_hint(app: Flask) -> None:
    token = jwt.encode({"sub": "x"}, "k" * 64, algorithm="HS512")
    result = verify(app, token)
    assert result.exit_code == 1
    assert "hint: a JWS signed with 'HS512'" in result.output
