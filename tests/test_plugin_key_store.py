"""backend.auth.pluginKeyStore: static PEM keys and the configuration errors."""

from __future__ import annotations

import typing as t
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask

from flask_backstage_auth import BackstageAuth, ConfigError
from flask_backstage_auth.testing.mocks import bearer_header
from tests.test_plugin_tokens import whoami_plugin


def write_pair(folder: Path, name: str, key: t.Any | None = None) -> tuple[Path, Path]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    private = folder / f"{name}.key.pem"
    public = folder / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def static_app(keys: list[dict[str, t.Any]], **store: t.Any) -> Flask:
    app = Flask("static-keys", static_folder=None)
    app.config["BACKSTAGE_CONFIG"] = {
        "backend": {
            "auth": {"pluginKeyStore": {"type": "static", "static": {"keys": keys}, **store}}
        }
    }
    BackstageAuth(app)
    app.register_blueprint(whoami_plugin("catalog"))
    return app


def test_static_keys_sign_with_the_first_and_publish_all(tmp_path: Path) -> None:
    first_private, first_public = write_pair(tmp_path, "first")
    _, second_public = write_pair(tmp_path, "second")
    app = static_app(
        [
            {
                "publicKeyFile": str(first_public),
                "privateKeyFile": str(first_private),
                "keyId": "k1",
            },
            {"publicKeyFile": str(second_public), "keyId": "k2"},
        ]
    )
    jwks = app.test_client().get("/api/catalog/.backstage/auth/v1/jwks.json").get_json()["keys"]
    assert [k["kid"] for k in jwks] == ["k1", "k2"]
    auth = BackstageAuth.state(app).auth("search")
    token = auth.get_plugin_request_token(
        on_behalf_of=auth.get_own_service_credentials(), target_plugin_id="catalog"
    ).token
    assert jwt.get_unverified_header(token)["kid"] == "k1"
    response = app.test_client().get("/api/catalog/whoami", headers=bearer_header(token))
    assert response.get_json()["principal"]["subject"] == "plugin:search"
    # a second app with the same static keys verifies the first's tokens: stable keys for replicas
    replica = static_app(
        [{"publicKeyFile": str(first_public), "privateKeyFile": str(first_private), "keyId": "k1"}]
    )
    BackstageAuth.state(replica).auth("search")  # search is local there too
    assert (
        replica.test_client().get("/api/catalog/whoami", headers=bearer_header(token)).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([], "At least one key pair must be provided in static.keys"),
        (
            [{"publicKeyFile": "PUB", "keyId": "k1"}],
            "Private key for signing must be provided in the first key pair",
        ),
        (
            [{"publicKeyFile": "missing.pem", "privateKeyFile": "PRIV", "keyId": "k1"}],
            "Cannot read",
        ),
        ([{"publicKeyFile": "PUB", "privateKeyFile": "PRIV"}], "keyId"),
        (
            [
                {
                    "publicKeyFile": "PUB",
                    "privateKeyFile": "PRIV",
                    "keyId": "k1",
                    "algorithm": "RS256",
                }
            ],
            "ES256",
        ),
        ([{"publicKeyFile": "RSA", "privateKeyFile": "PRIV", "keyId": "k1"}], "P-256"),
        (
            [{"publicKeyFile": "PRIV", "privateKeyFile": "PRIV", "keyId": "k1"}],
            "not a PEM public key",
        ),
    ],
)
def test_static_key_errors(tmp_path: Path, keys: list[dict[str, t.Any]], message: str) -> None:
    private, public = write_pair(tmp_path, "good")
    _, rsa_public = write_pair(
        tmp_path, "rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    paths = {"PUB": str(public), "PRIV": str(private), "RSA": str(rsa_public)}
    resolved = [
        {k: paths.get(v, str(tmp_path / v) if k.endswith("File") else v) for k, v in entry.items()}
        for entry in keys
    ]
    with pytest.raises(ConfigError, match=message):
        static_app(resolved)


def test_unknown_key_store_type() -> None:
    app = Flask("bad-store")
    app.config["BACKSTAGE_CONFIG"] = {"backend": {"auth": {"pluginKeyStore": {"type": "vault"}}}}
    with pytest.raises(ConfigError) as info:
        BackstageAuth(app)
    assert str(info.value) == (
        "Unsupported config value backend.auth.pluginKeyStore.type 'vault';"
        " expected one of 'database', 'static'"
    )
