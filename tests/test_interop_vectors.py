"""Every Backstage-made vector gives the verdict the vector file expects."""

from __future__ import annotations

import typing as t

import pytest

from flask_backstage_auth import AuthenticationError, ConfigError, ServerTokenManager
from flask_backstage_auth.legacy.secrets import decode_backstage_secret, validate_secret
from tests.conftest import VECTORS

SECRETS = VECTORS["secrets"]
LEGACY_TOKENS = VECTORS["legacy_tokens"]


def _keys_config(secrets: list[str]) -> dict[str, t.Any]:
    return {"backend": {"auth": {"keys": [{"secret": s} for s in secrets]}}}


@pytest.mark.parametrize("vector", SECRETS, ids=[s["id"] for s in SECRETS])
def test_secret_decodes_to_backstage_key(vector: dict[str, t.Any]) -> None:
    assert decode_backstage_secret(vector["secret"]).hex() == vector["backstage_key_hex"]


@pytest.mark.parametrize("vector", SECRETS, ids=[s["id"] for s in SECRETS])
def test_secret_policy(vector: dict[str, t.Any]) -> None:
    path = "backend.auth.keys[0].secret"
    if vector["expected_config"] == "ok":
        assert validate_secret(vector["secret"], path).hex() == vector["expected_key_hex"]
    else:
        with pytest.raises(ConfigError) as info:
            validate_secret(vector["secret"], path)
        assert path in str(info.value)
        if len(vector["secret"].strip()) >= 8:
            assert vector["secret"] not in str(info.value)


@pytest.mark.parametrize("vector", LEGACY_TOKENS, ids=[v["id"] for v in LEGACY_TOKENS])
def test_legacy_token_verdict(vector: dict[str, t.Any]) -> None:
    config = _keys_config(vector["secrets"])
    if vector["expected"] == "config_reject":
        with pytest.raises(ConfigError):
            ServerTokenManager.from_config(config)
        return
    manager = ServerTokenManager.from_config(config, clock=lambda: vector["verify_at"])
    try:
        manager.authenticate(vector["token"])
        verdict = "accept"
    except AuthenticationError as error:
        verdict = "reject"
        assert error.description.startswith("Invalid server token")
    if vector["expected"] != "either":
        assert verdict == vector["expected"]


def test_vectors_cover_both_verdicts() -> None:
    verdicts = {v["expected"] for v in LEGACY_TOKENS}
    assert {"accept", "reject", "config_reject"} <= verdicts
    assert len(LEGACY_TOKENS) >= 100


@pytest.mark.parametrize(
    "vector",
    [
        v
        for v in LEGACY_TOKENS
        if v["minted_by"].startswith("backstage ServerTokenManager") and v["expected"] == "accept"
    ][:4],
    ids=lambda v: v["id"],
)
def test_backstage_minted_token_opens_the_catalog(vector: dict[str, t.Any]) -> None:
    """A token minted by Backstage's own ServerTokenManager opens a protected route."""
    from example_app import create_app

    app = create_app(
        {
            "TESTING": True,
            "BACKSTAGE_CONFIG": {
                "backend": {
                    "baseUrl": "http://127.0.0.1:7007",
                    "auth": {"keys": [{"secret": s} for s in vector["secrets"]]},
                },
            },
        },
        clock=lambda: vector["verify_at"],  # the vector's clock rule
    )
    client = app.test_client()
    response = client.get(
        "/api/catalog/entities", headers={"Authorization": f"Bearer {vector['token']}"}
    )
    assert response.status_code == 200
    assert any(e["metadata"]["name"] == "petstore" for e in response.get_json())
    assert client.get("/api/catalog/entities").status_code == 401


def test_our_tokens_have_backstage_shape() -> None:
    """Header and claims byte-compatible with the tokens Backstage minted."""
    import base64
    import json

    reference = next(v for v in LEGACY_TOKENS if v["id"] == "stm-a")
    manager = ServerTokenManager.from_config(
        _keys_config(reference["secrets"]), clock=lambda: reference["minted_at"]
    )
    ours = manager.get_token().token
    assert ours.split(".")[:2] == reference["token"].split(".")[:2]
    assert ours == reference["token"]  # same key, same second: the same bytes
    header = json.loads(base64.urlsafe_b64decode(ours.split(".")[0] + "=="))
    assert header == {"alg": "HS256"}
