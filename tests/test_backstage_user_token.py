"""A user token minted by a real Backstage auth backend, verified here (offline)."""

from __future__ import annotations

import base64
import json
import typing as t

import pytest
from flask import Blueprint, Flask, jsonify

from flask_backstage_auth import AuthenticationError, BackstageAuth, get_credentials
from flask_backstage_auth.auth.user.handler import create_limited_user_token
from flask_backstage_auth.testing.mocks import bearer_header
from tests.conftest import DATA, LiveServer

with open(DATA / "backstage_user_token.json", encoding="utf-8") as _file:
    VECTOR: dict[str, t.Any] = json.load(_file)


class AuthJwks:
    """Serves the captured key set where Backstage served it."""

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/api/auth/.well-known/jwks.json":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(VECTOR["jwks"]).encode()]
        start_response("404 Not Found", [])
        return [b""]


@pytest.fixture(scope="module")
def auth_server() -> t.Iterator[str]:
    with LiveServer(AuthJwks()) as server:
        yield server.url


@pytest.fixture
def app(auth_server: str) -> Flask:
    app = Flask("verifies-backstage-users", static_folder=None)
    app.config["BACKSTAGE_CONFIG"] = {
        "backend": {"baseUrl": "http://127.0.0.1:1"},
        "discovery": {
            "endpoints": [{"target": f"{auth_server}/api/{{{{pluginId}}}}", "plugins": ["auth"]}]
        },
    }
    BackstageAuth(app, clock=lambda: VECTOR["verify_at"])
    bp = Blueprint("catalog", __name__, url_prefix="/api/catalog")
    bp.add_url_rule("/whoami", "whoami", lambda: jsonify(get_credentials().to_dict()))
    app.register_blueprint(bp)
    return app


def test_a_backstage_user_token_authenticates(app: Flask) -> None:
    response = app.test_client().get("/api/catalog/whoami", headers=bearer_header(VECTOR["token"]))
    assert response.status_code == 200
    assert response.get_json() == {
        "principal": {"type": "user", "userEntityRef": VECTOR["expected_user_entity_ref"]}
    }


def test_its_limited_form_verifies_with_backstages_key(app: Flask) -> None:
    limited, expires_at = create_limited_user_token(VECTOR["token"])
    header = json.loads(base64.urlsafe_b64decode(limited.split(".")[0] + "=="))
    assert header["typ"] == "vnd.backstage.limited-user"
    auth = BackstageAuth.state(app).auth("catalog")
    credentials = auth.authenticate(limited, allow_limited_access=True)
    assert credentials.principal.to_dict()["userEntityRef"] == VECTOR["expected_user_entity_ref"]
    assert credentials.expires_at == expires_at
    with pytest.raises(AuthenticationError, match="Illegal limited user token"):
        auth.authenticate(limited)


def test_tampering_or_a_late_clock_is_refused(auth_server: str, app: Flask) -> None:
    header, payload, signature = VECTOR["token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "user:default/admin"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = f"{header}.{forged_payload}.{signature}"
    assert (
        app.test_client().get("/api/catalog/whoami", headers=bearer_header(forged)).status_code
        == 401
    )
    late = Flask("late", static_folder=None)
    late.config["BACKSTAGE_CONFIG"] = app.config["BACKSTAGE_CONFIG"]
    BackstageAuth(late, clock=lambda: VECTOR["verify_at"] + 86_400)
    with pytest.raises(AuthenticationError, match="Failed user token verification"):
        BackstageAuth.state(late).auth("catalog").authenticate(VECTOR["token"])


def test_our_issuer_writes_backstages_header_and_claims(app: Flask) -> None:
    """Same header bytes layout and the claims Backstage's own token carries."""
    from flask_backstage_auth import AuthBackend

    AuthBackend(app)
    ours = AuthBackend.state(app).issuer.issue_token("user:development/guest", []).token

    def parts(token: str) -> tuple[dict[str, t.Any], dict[str, t.Any]]:
        header, payload, _ = token.split(".")
        decode = lambda s: json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))  # noqa: E731
        return decode(header), decode(payload)

    their_header, their_claims = parts(VECTOR["token"])
    our_header, our_claims = parts(ours)
    assert list(our_header) == list(their_header) == ["typ", "alg", "kid"]
    assert {k: v for k, v in our_header.items() if k != "kid"} == {
        k: v for k, v in their_header.items() if k != "kid"
    }
    assert set(their_claims) <= set(our_claims)
    assert our_claims["aud"] == their_claims["aud"] == "backstage"
