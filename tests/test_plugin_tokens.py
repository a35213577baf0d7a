"""Plugin-to-plugin tokens: Backstage's vectors, our tokens, the JWKS endpoint."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import typing as t
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Blueprint, Flask, jsonify

from flask_backstage_auth import AuthenticationError, BackstageAuth, get_credentials
from flask_backstage_auth.testing.mocks import bearer_header
from tests.conftest import VECTORS, LiveServer

PLUGIN_VECTORS = VECTORS["plugin_tokens"]


class JwksPeer:
    """A peer backend serving ``/api/<plugin>/.backstage/auth/v1/jwks.json`` from a dict."""

    def __init__(self, jwks_by_plugin: dict[str, t.Any]) -> None:
        self.jwks_by_plugin = jwks_by_plugin
        self.requests: list[str] = []

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        self.requests.append(path)
        parts = path.strip("/").split("/")
        if (
            len(parts) == 6
            and parts[0] == "api"
            and parts[2:] == [".backstage", "auth", "v1", "jwks.json"]
        ):
            jwks = self.jwks_by_plugin.get(parts[1])
            if jwks is not None:
                start_response("200 OK", [("Content-Type", "application/json")])
                return [json.dumps(jwks).encode()]
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"error": "not found"}']


def whoami_plugin(name: str) -> Blueprint:
    bp = Blueprint(name, __name__, url_prefix=f"/api/{name}")

    @bp.get("/whoami")
    def whoami() -> t.Any:
        return jsonify(get_credentials().to_dict())

    return bp


def app_for(
    peer_url: str,
    clock: t.Callable[[], float] | None = None,
    plugins: t.Sequence[str] = ("catalog",),
) -> Flask:
    app = Flask("plugin-tokens", static_folder=None)
    app.config.update(TESTING=True)
    app.config["BACKSTAGE_CONFIG"] = {
        "backend": {"baseUrl": "http://127.0.0.1:1"},
        "discovery": {
            "endpoints": [
                {
                    "target": f"{peer_url}/api/{{{{pluginId}}}}",
                    "plugins": ["search", "Search", "scaffolder", "peer"],
                }
            ]
        },
    }
    if clock is not None:
        BackstageAuth(app, clock=clock)
    else:
        BackstageAuth(app)
    for name in plugins:
        app.register_blueprint(whoami_plugin(name))
    return app


@pytest.fixture(scope="module")
def backstage_peer() -> t.Iterator[str]:
    """Serves the JWKS that verified the Backstage-minted vector tokens."""
    with LiveServer(JwksPeer(PLUGIN_VECTORS["jwks_by_plugin"])) as server:
        yield server.url


@pytest.mark.parametrize(
    "vector", PLUGIN_VECTORS["tokens"], ids=[v["id"] for v in PLUGIN_VECTORS["tokens"]]
)
def test_backstage_plugin_token_verdicts(backstage_peer: str, vector: dict[str, t.Any]) -> None:
    target = vector["target_plugin_id"]
    app = app_for(backstage_peer, clock=lambda: vector["verify_at"], plugins=(target,))
    response = app.test_client().get(
        f"/api/{target}/whoami", headers=bearer_header(vector["token"])
    )
    assert response.status_code in (200, 401), response.get_data(as_text=True)
    verdict = "accept" if response.status_code == 200 else "reject"
    if vector["expected"] != "either":
        assert verdict == vector["expected"], response.get_data(as_text=True)
    if verdict == "accept":
        subject = response.get_json()["principal"]["subject"]
        assert subject.lower() == vector["expected_subject"].lower()
    else:
        assert vector["token"] not in response.get_data(as_text=True)


def test_messages_match_backstage_for_known_rejections(backstage_peer: str) -> None:
    by_id = {v["id"]: v for v in PLUGIN_VECTORS["tokens"]}
    for vector_id, message in [
        ("crafted-sub-forbidden-format", "Invalid plugin token: forbidden subject format"),
        ("crafted-obo-garbage", "Invalid user token in plugin token obo claim"),
        ("crafted-expired", "Failed plugin token verification"),
        ("crafted-wrong-aud", "Failed plugin token verification"),
    ]:
        vector = by_id[vector_id]
        app = app_for(backstage_peer, clock=lambda v=vector: v["verify_at"])
        body = (
            app.test_client()
            .get("/api/catalog/whoami", headers=bearer_header(vector["token"]))
            .get_json()
        )
        assert body["error"]["message"] == message, vector_id
    unknown = by_id["crafted-sub-unknown-plugin"]
    app = app_for(backstage_peer, clock=lambda: unknown["verify_at"])
    body = (
        app.test_client()
        .get("/api/catalog/whoami", headers=bearer_header(unknown["token"]))
        .get_json()
    )
    assert body["error"]["message"].startswith(
        "Received a plugin token where the source 'scaffolder' plugin"
    )


def decode_segment(segment: str) -> dict[str, t.Any]:
    return t.cast(
        t.Dict[str, t.Any],
        json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))),
    )


def test_our_tokens_have_backstages_shape() -> None:
    app = app_for("http://127.0.0.1:1")
    state = BackstageAuth.state(app)
    auth = state.auth("search")
    token = auth.get_plugin_request_token(
        on_behalf_of=auth.get_own_service_credentials(), target_plugin_id="catalog"
    ).token
    header_segment, payload_segment, _ = token.split(".")
    header, claims = decode_segment(header_segment), decode_segment(payload_segment)
    assert header["typ"] == "vnd.backstage.plugin" and header["alg"] == "ES256" and header["kid"]
    assert set(claims) == {"sub", "aud", "iat", "exp"}
    assert claims["sub"] == "search" and claims["aud"] == "catalog"
    assert claims["exp"] - claims["iat"] == 3600
    # the published JWKS verifies it, with the published kid
    jwks = app.test_client().get("/api/search/.backstage/auth/v1/jwks.json")
    assert jwks.status_code == 200
    keys = jwks.get_json()["keys"]
    assert [k["kid"] for k in keys] == [header["kid"]]
    assert keys[0]["kty"] == "EC" and keys[0]["crv"] == "P-256" and "d" not in keys[0]
    decoded = jwt.decode(token, jwt.PyJWK(keys[0]).key, algorithms=["ES256"], audience="catalog")
    assert decoded["sub"] == "search"


def test_jwks_endpoint_is_open_for_local_plugins_only() -> None:
    app = app_for("http://127.0.0.1:1")
    client = app.test_client()
    assert client.get("/api/catalog/.backstage/auth/v1/jwks.json").status_code == 200
    assert (
        client.get("/api/unknown/.backstage/auth/v1/jwks.json").status_code == 401
    )  # no such plugin
    assert client.post("/api/catalog/.backstage/auth/v1/jwks.json").status_code == 401
    assert client.get("/api/catalog/.backstage/auth/v1/../v1/jwks.json").status_code == 401


def test_two_instances_trust_each_other_through_discovery() -> None:
    """Two deployments: each verifies the other's tokens with its published keys."""
    placeholders = {name: LiveServer(None) for name in ("a", "b")}
    urls = {name: server.url for name, server in placeholders.items()}

    def deployment(own: str, other: str) -> Flask:
        app = Flask(f"deployment-{own}", static_folder=None)
        app.config["BACKSTAGE_CONFIG"] = {
            "backend": {"baseUrl": urls[own]},
            "discovery": {
                "endpoints": [{"target": f"{urls[other]}/api/{{{{pluginId}}}}", "plugins": [other]}]
            },
        }
        BackstageAuth(app)
        app.register_blueprint(whoami_plugin(own))
        return app

    apps = {"a": deployment("a", "b"), "b": deployment("b", "a")}
    for name, server in placeholders.items():
        server.server.app = apps[name]
    import requests

    with placeholders["a"], placeholders["b"]:
        auth_a = BackstageAuth.state(apps["a"]).auth("a")
        token = auth_a.get_plugin_request_token(
            on_behalf_of=auth_a.get_own_service_credentials(), target_plugin_id="b"
        ).token
        reply = requests.get(f"{urls['b']}/api/b/whoami", headers=bearer_header(token), timeout=10)
        assert reply.status_code == 200
        assert reply.json()["principal"] == {"type": "service", "subject": "plugin:a"}
        # a token a wrote for itself is not for b
        self_token = auth_a.get_plugin_request_token(
            on_behalf_of=auth_a.get_own_service_credentials(), target_plugin_id="a"
        ).token
        assert (
            requests.get(
                f"{urls['b']}/api/b/whoami", headers=bearer_header(self_token), timeout=10
            ).status_code
            == 401
        )


def _forge(claims: dict[str, t.Any], key: t.Any, headers: dict[str, t.Any]) -> str:
    return jwt.encode(
        claims, key, algorithm="ES256", headers={"typ": "vnd.backstage.plugin", **headers}
    )


def test_forged_tokens_are_refused(backstage_peer: str, tmp_path: Path) -> None:
    app = app_for(backstage_peer)
    client = app.test_client()
    now = int(BackstageAuth.state(app).clock())
    claims = {"sub": "search", "aud": "catalog", "iat": now, "exp": now + 600}
    attacker = ec.generate_private_key(ec.SECP256R1())
    attacker_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(attacker.public_key()))
    kid = PLUGIN_VECTORS["key_id"]
    for headers in (
        {"kid": kid},  # right kid, wrong key
        {"kid": "forged-kid"},
        {"kid": kid, "jwk": attacker_jwk},
        {"kid": kid, "jku": "http://127.0.0.1:1/evil.json"},
        {"kid": kid, "x5u": "http://127.0.0.1:1/evil.pem"},
    ):
        response = client.get(
            "/api/catalog/whoami", headers=bearer_header(_forge(claims, attacker, headers))
        )
        assert response.status_code == 401, headers
    # HS256 with the published public key as the secret
    public = jwt.PyJWK(PLUGIN_VECTORS["jwks_by_plugin"]["search"]["keys"][0]).key
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps({'typ': 'vnd.backstage.plugin', 'alg': 'HS256', 'kid': kid}).encode())}.{b64(json.dumps(claims).encode())}"
    confused = (
        f"{signing_input}.{b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"
    )
    assert client.get("/api/catalog/whoami", headers=bearer_header(confused)).status_code == 401


def test_unreachable_peer_fails_closed_then_recovers() -> None:
    peer = JwksPeer({})
    now = [1_900_000_000.0]
    with LiveServer(peer) as server:
        app = app_for(server.url, clock=lambda: now[0])
        other = Flask("other", static_folder=None)
        other.config.update(TESTING=True, BACKSTAGE_CONFIG={})
        BackstageAuth(other, clock=lambda: now[0])
        auth = BackstageAuth.state(other).auth("peer")
        token = auth.get_plugin_request_token(
            on_behalf_of=auth.get_own_service_credentials(), target_plugin_id="catalog"
        ).token
        client = app.test_client()
        refused = client.get("/api/catalog/whoami", headers=bearer_header(token))
        assert refused.status_code == 401
        assert "does not have a JWKS endpoint" in refused.get_json()["error"]["message"]
        peer.jwks_by_plugin["peer"] = (
            other.test_client().get("/api/peer/.backstage/auth/v1/jwks.json").get_json()
        )
        # within the cooldown, a forced reload (as Backstage's JwksClient): accepted at once
        assert client.get("/api/catalog/whoami", headers=bearer_header(token)).status_code == 200
        assert peer.requests.count("/api/peer/.backstage/auth/v1/jwks.json") == 2


def test_plugin_request_token_errors() -> None:
    app = app_for("http://127.0.0.1:1")
    auth = BackstageAuth.state(app).auth("search")
    with pytest.raises(AuthenticationError, match="credential type 'none'"):
        auth.get_plugin_request_token(
            on_behalf_of=auth.get_none_credentials(), target_plugin_id="catalog"
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> t.Iterator[str]:
    """One database for two app instances, with our migrations applied."""
    import sqlalchemy as sa

    from flask_backstage_auth.db.cli import upgrade_database
    from tests.conftest import _pg_url_in

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        postgres_url = request.getfixturevalue("postgres_url")
        schema = request.getfixturevalue("pg_schema")
        url = _pg_url_in(postgres_url, schema).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    try:
        upgrade_database(engine)
    finally:
        engine.dispose()
    yield url


def test_two_instances_sharing_a_database_across_a_key_rotation(shared_database_url: str) -> None:
    """Same plugins on two instances: each verifies the other's tokens from the shared keys."""
    now = [1_900_000_000.0]

    def instance(name: str) -> Flask:
        app = Flask(name, static_folder=None)
        app.config.update(BACKSTAGE_AUTH_DATABASE_URI=shared_database_url)
        app.config["BACKSTAGE_CONFIG"] = {"backend": {"baseUrl": "http://127.0.0.1:1"}}
        BackstageAuth(app, clock=lambda: now[0])
        app.register_blueprint(whoami_plugin("catalog"))
        app.register_blueprint(whoami_plugin("search"))
        return app

    one, two = instance("one"), instance("two")
    try:
        search_on_one = BackstageAuth.state(one).auth("search")
        own = search_on_one.get_own_service_credentials()

        def mint() -> str:
            return search_on_one.get_plugin_request_token(
                on_behalf_of=own, target_plugin_id="catalog"
            ).token

        def accepted_by_two(token: str) -> bool:
            return (
                two.test_client()
                .get("/api/catalog/whoami", headers=bearer_header(token))
                .status_code
                == 200
            )

        first = mint()
        assert accepted_by_two(first)
        now[0] += 3590
        before_rotation = mint()
        now[0] += 11  # past the key's hour: the next token uses a new key
        after_rotation = mint()
        assert (
            jwt.get_unverified_header(after_rotation)["kid"]
            != jwt.get_unverified_header(before_rotation)["kid"]
        )
        assert accepted_by_two(after_rotation)
        assert accepted_by_two(before_rotation)  # the old public key is still listed
        assert not accepted_by_two(first)  # expired, whatever the keys
        served = (
            two.test_client().get("/api/search/.backstage/auth/v1/jwks.json").get_json()["keys"]
        )
        assert len(served) == 2  # both instances serve both keys
    finally:
        for app in (one, two):
            database = BackstageAuth.state(app).database
            if database is not None:
                database().dispose()
