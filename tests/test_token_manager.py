from __future__ import annotations

import base64
import json
import logging
import random
import threading
import typing as t

import jwt
import pytest

from flask_backstage_auth import AuthenticationError, ConfigError, ServerTokenManager
from flask_backstage_auth.legacy.secrets import decode_backstage_secret, generate_secret
from flask_backstage_auth.legacy.token_manager import NoopTokenManager
from tests.conftest import new_secret


class FakeClock:
    def __init__(self, now: float = 1_800_000_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def keys_config(*secrets: str) -> dict[str, t.Any]:
    return {"backend": {"auth": {"keys": [{"secret": s} for s in secrets]}}}


def claims_of(token: str) -> dict[str, t.Any]:
    payload = token.split(".")[1]
    return t.cast(t.Dict[str, t.Any], json.loads(base64.urlsafe_b64decode(payload + "==")))


def test_noop_manager_accepts_anything_and_is_insecure() -> None:
    manager = ServerTokenManager.noop()
    assert isinstance(manager, NoopTokenManager)
    assert manager.is_insecure is True
    assert manager.get_token().token == ""
    for token in ("", "garbage", "a.b.c"):
        assert manager.authenticate(token) is None


def test_token_shape_and_lifetime() -> None:
    clock = FakeClock()
    manager = ServerTokenManager.from_config(keys_config(new_secret()), clock=clock)
    assert manager.is_insecure is False
    token = manager.get_token().token
    assert jwt.get_unverified_header(token) == {"alg": "HS256"}
    assert claims_of(token) == {"sub": "backstage-server", "exp": int(clock.now) + 3600}


def test_token_is_reused_for_ten_minutes() -> None:
    clock = FakeClock()
    manager = ServerTokenManager.from_config(keys_config(new_secret()), clock=clock)
    first = manager.get_token().token
    clock.now += 9 * 60
    assert manager.get_token().token == first
    clock.now += 2 * 60
    second = manager.get_token().token
    assert second != first
    manager.authenticate(first)  # both stay valid until their own exp
    manager.authenticate(second)


def test_get_token_is_thread_safe() -> None:
    manager = ServerTokenManager.from_config(keys_config(new_secret()))
    seen: set[str] = set()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            seen.add(manager.get_token().token)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 1


def test_first_key_signs_all_keys_verify() -> None:
    a, b, c = new_secret(), new_secret(), new_secret()
    verifier = ServerTokenManager.from_config(keys_config(a, b, c))
    for secret in (a, b, c):
        signer = ServerTokenManager.from_config(keys_config(secret, a))
        verifier.authenticate(signer.get_token().token)
    token = verifier.get_token().token
    ServerTokenManager.from_config(keys_config(a)).authenticate(token)
    with pytest.raises(AuthenticationError):
        ServerTokenManager.from_config(keys_config(b, c)).authenticate(token)


def test_legacy_external_access_secrets_verify() -> None:
    a, b = new_secret(), new_secret()
    config = {
        "backend": {
            "auth": {
                "keys": [{"secret": a}],
                "externalAccess": [
                    {"type": "static", "options": {"token": "x" * 20, "subject": "s"}},
                    {"type": "legacy", "options": {"secret": b, "subject": "ext"}},
                ],
            }
        }
    }
    manager = ServerTokenManager.from_config(config)
    assert manager.key_count == 2
    manager.authenticate(ServerTokenManager.from_config(keys_config(b)).get_token().token)


def _forge(key: bytes, claims: dict[str, t.Any], algorithm: str = "HS256", **headers: t.Any) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers or None)


@pytest.fixture
def signed() -> t.Callable[..., str]:
    secret = generate_secret(64)  # long enough for PyJWT's HS512 advice
    key = decode_backstage_secret(secret)

    def make(claims: dict[str, t.Any], algorithm: str = "HS256", **headers: t.Any) -> str:
        return _forge(key, claims, algorithm, **headers)

    make.secret = secret  # type: ignore[attr-defined]
    return make


NOW = 1_800_000_000


@pytest.mark.parametrize(
    ("claims", "algorithm", "reason"),
    [
        ({"sub": "backstage-server", "exp": NOW - 1}, "HS256", "expired"),
        ({"sub": "backstage-server", "exp": NOW}, "HS256", "expired"),
        ({"sub": "backstage-server"}, "HS256", '"exp"'),
        ({"sub": "backstage-server", "exp": str(NOW + 60)}, "HS256", '"exp"'),
        ({"sub": "backstage-server", "exp": True}, "HS256", '"exp"'),
        ({"sub": "backstage-server", "exp": NOW + 3600 + 61}, "HS256", "seconds in the future"),
        ({"sub": "other", "exp": NOW + 60}, "HS256", "illegal sub"),
        ({"exp": NOW + 60}, "HS256", "illegal sub"),
        ({"sub": "backstage-server", "exp": NOW + 60, "aud": "catalog"}, "HS256", "aud"),
        ({"sub": "backstage-server", "exp": NOW + 60, "nbf": NOW + 30}, "HS256", "nbf"),
        ({"sub": "backstage-server", "exp": NOW + 60}, "HS384", "illegal alg"),
        ({"sub": "backstage-server", "exp": NOW + 60}, "HS512", "illegal alg"),
    ],
)
def test_rejections_say_why(
    signed: t.Callable[..., str], claims: dict[str, t.Any], algorithm: str, reason: str
) -> None:
    manager = ServerTokenManager.from_config(
        keys_config(signed.secret),
        clock=lambda: NOW,  # type: ignore[attr-defined]
    )
    token = signed(claims, algorithm)
    with pytest.raises(AuthenticationError) as info:
        manager.authenticate(token)
    assert info.value.description.startswith("Invalid server token; caused by InvalidToken")
    assert reason in info.value.description
    assert token not in info.value.description


def test_leeway_is_configurable(signed: t.Callable[..., str]) -> None:
    secret = signed.secret  # type: ignore[attr-defined]
    token = signed({"sub": "backstage-server", "exp": NOW - 5})
    strict = ServerTokenManager.from_config(keys_config(secret), clock=lambda: NOW)
    lenient = ServerTokenManager.from_config(keys_config(secret), clock=lambda: NOW, leeway=10)
    with pytest.raises(AuthenticationError):
        strict.authenticate(token)
    lenient.authenticate(token)
    far = signed({"sub": "backstage-server", "exp": NOW + 3600 + 100})
    with pytest.raises(AuthenticationError):
        strict.authenticate(far)
    ServerTokenManager.from_config(
        keys_config(secret), clock=lambda: NOW, max_lifetime_leeway=200
    ).authenticate(far)


def test_alg_none_and_tampering(signed: t.Callable[..., str]) -> None:
    manager = ServerTokenManager.from_config(
        keys_config(signed.secret),
        clock=lambda: NOW,  # type: ignore[attr-defined]
    )
    good = signed({"sub": "backstage-server", "exp": NOW + 60})
    manager.authenticate(good)
    header, payload, signature = good.split(".")
    none_header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    other_payload = (
        base64.urlsafe_b64encode(json.dumps({"sub": "backstage-server", "exp": NOW + 120}).encode())
        .rstrip(b"=")
        .decode()
    )
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for bad in (
        f"{none_header}.{payload}.",
        f"{none_header}.{payload}.{signature}",
        f"{header}.{other_payload}.{signature}",
        f"{header}.{payload}.{flipped}",
        f"{header}.{payload}",
        f"{header}.{payload}.{signature}.{signature}",
    ):
        with pytest.raises(AuthenticationError):
            manager.authenticate(bad)


@pytest.mark.parametrize(
    "junk",
    [
        None,
        42,
        b"bytes",
        "",
        " ",
        "not a jwt",
        "a.b.c",
        "...",
        "x" * 100_000,
        "\x00\x00",
        "é.é.é",
        ["list"],
        {"dict": 1},
    ],
    ids=lambda j: type(j).__name__ + str(len(j) if hasattr(j, "__len__") else ""),
)
def test_authenticate_only_ever_raises_authentication_error(junk: t.Any) -> None:
    manager = ServerTokenManager.from_config(keys_config(new_secret()))
    with pytest.raises(AuthenticationError):
        manager.authenticate(junk)


def test_random_mutations_never_crash() -> None:
    manager = ServerTokenManager.from_config(keys_config(new_secret()))
    token = manager.get_token().token
    rng = random.Random(1234)
    alphabet = "ABCxyz019-_.=+/ \n{}\"'"
    accepted = 0
    for _ in range(500):
        chars = list(token)
        for _ in range(rng.randint(1, 4)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        mutated = "".join(chars)
        try:
            manager.authenticate(mutated)
            accepted += 1
        except AuthenticationError:
            pass
    assert accepted < 50  # only changes to unused signature bits may survive


def test_development_generates_a_per_process_key(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        one = ServerTokenManager.from_config({}, development=True)
    assert "DEVELOPMENT USE ONLY" in caplog.text
    two = ServerTokenManager.from_config({}, development=True)
    assert one.generated_key and two.generated_key
    one.authenticate(one.get_token().token)
    with pytest.raises(AuthenticationError):
        two.authenticate(one.get_token().token)


def test_production_without_keys_refuses_to_start() -> None:
    with pytest.raises(ConfigError) as info:
        ServerTokenManager.from_config({"backend": {"auth": {}}})
    assert "backend.auth.keys" in str(info.value)


@pytest.mark.parametrize(
    ("entry", "path"),
    [
        ({}, "backend.auth.keys[1].secret"),
        ({"secret": "has spaces in it but is long"}, "backend.auth.keys[1].secret"),
        ({"secret": "c2VjcmV0"}, "backend.auth.keys[1].secret"),
        ({"secret": 12345678901234567890}, "backend.auth.keys[1].secret"),
    ],
)
def test_malformed_key_entries_name_their_path(entry: dict[str, t.Any], path: str) -> None:
    config = {"backend": {"auth": {"keys": [{"secret": new_secret()}, entry]}}}
    with pytest.raises(ConfigError) as info:
        ServerTokenManager.from_config(config)
    assert path in str(info.value)


def test_keys_must_be_a_list_of_objects() -> None:
    with pytest.raises(ConfigError, match=r"backend\.auth\.keys"):
        ServerTokenManager.from_config({"backend": {"auth": {"keys": "secret"}}})
    with pytest.raises(ConfigError, match=r"backend\.auth\.keys\[0\]"):
        ServerTokenManager.from_config({"backend": {"auth": {"keys": ["secret"]}}})


def test_legacy_external_access_without_secret() -> None:
    config = {
        "backend": {"auth": {"externalAccess": [{"type": "legacy", "options": {"subject": "x"}}]}}
    }
    with pytest.raises(ConfigError, match=r"backend\.auth\.externalAccess\[0\]\.options\.secret"):
        ServerTokenManager.from_config(config)


def test_generate_secret() -> None:
    secret = generate_secret()
    assert len(base64.b64decode(secret)) == 24
    assert generate_secret() != secret
    with pytest.raises(ValueError):
        generate_secret(8)
