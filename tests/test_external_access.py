"""``backend.auth.externalAccess`` through real Flask apps.

Each test builds an app with two plugins (blueprints ``catalog`` at
``/api/catalog`` and ``search`` at ``/api/search``) whose view echoes the
caller's credentials, and sends bearer tokens with the test client. Static,
legacy, jwks and custom handler entries are covered, with Backstage's messages
and status codes (see the reference, section 5) and our documented deviations.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets as random
import threading
import time
import typing as t

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Blueprint, Flask, jsonify
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from flask_backstage_auth import (
    AuthenticationError,
    BackstageAuth,
    ConfigError,
    ServerTokenManager,
    get_credentials,
)
from flask_backstage_auth.auth.external.types import ExternalTokenHandler, ExternalTokenResult
from flask_backstage_auth.config import ConfigReader
from tests.conftest import VECTORS, LiveServer, free_port, new_secret

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

T0 = 1_800_000_000.0
PLUGINS = ("catalog", "search")
EXTERNAL = "backend.auth.externalAccess"


# -- helpers ------------------------------------------------------------------


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_app(
    external_access: list[dict[str, t.Any]] | None = None,
    *,
    keys: list[str] | None = None,
    clock: t.Callable[[], float] | None = None,
    handlers: t.Sequence[ExternalTokenHandler[t.Any]] = (),
    settings: dict[str, t.Any] | None = None,
) -> Flask:
    """An app with the ``catalog`` and ``search`` plugins and ``BackstageAuth``."""
    auth: dict[str, t.Any] = {}
    if external_access is not None:
        auth["externalAccess"] = external_access
    if keys is not None:
        auth["keys"] = [{"secret": s} for s in keys]
    app = Flask(__name__)
    app.config["TESTING"] = True
    app.config["BACKSTAGE_CONFIG"] = {"backend": {"auth": auth}}
    app.config.update(settings or {})
    for plugin in PLUGINS:
        blueprint = Blueprint(plugin, __name__, url_prefix=f"/api/{plugin}")
        blueprint.add_url_rule("/whoami", "whoami", lambda: jsonify(get_credentials().to_dict()))
        app.register_blueprint(blueprint)
    BackstageAuth(app, clock=clock or FakeClock(), external_token_handlers=handlers)
    return app


class Reply(t.NamedTuple):
    status: int
    body: dict[str, t.Any]
    headers: dict[str, str]

    @property
    def subject(self) -> str | None:
        return t.cast("str | None", self.body.get("principal", {}).get("subject"))

    @property
    def message(self) -> str:
        return t.cast(str, self.body.get("error", {}).get("message", ""))


def call(
    app: Flask,
    token: str | None,
    plugin: str = "catalog",
    *,
    header: str | None = None,
    environ: dict[str, t.Any] | None = None,
) -> Reply:
    """GET ``/api/<plugin>/whoami`` with ``Authorization: Bearer <token>``."""
    headers = {}
    if header is not None:
        headers["Authorization"] = header
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    with app.test_client() as client:
        response = client.get(f"/api/{plugin}/whoami", headers=headers, environ_base=environ or {})
        try:
            body = response.get_json(silent=True) or {}
            return Reply(response.status_code, body, dict(response.headers))
        finally:
            response.close()


def static_entry(
    token: str, subject: str = "ci-bot", restrictions: list[dict[str, t.Any]] | None = None
) -> dict[str, t.Any]:
    entry: dict[str, t.Any] = {"type": "static", "options": {"token": token, "subject": subject}}
    if restrictions is not None:
        entry["accessRestrictions"] = restrictions
    return entry


def legacy_entry(
    secret: str, subject: str = "legacy-client", restrictions: list[dict[str, t.Any]] | None = None
) -> dict[str, t.Any]:
    entry: dict[str, t.Any] = {"type": "legacy", "options": {"secret": secret, "subject": subject}}
    if restrictions is not None:
        entry["accessRestrictions"] = restrictions
    return entry


def mint_legacy(secret: str, clock: t.Callable[[], float]) -> str:
    """A token from our ServerTokenManager, as Backstage mints it."""
    manager = ServerTokenManager.from_config(
        {"backend": {"auth": {"keys": [{"secret": secret}]}}}, clock=clock
    )
    return manager.get_token().token


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hs256_by_hand(header: dict[str, t.Any], claims: dict[str, t.Any], key: bytes) -> str:
    """An HS256 token with any key (PyJWT refuses PEM keys for HMAC)."""

    def segment(value: dict[str, t.Any]) -> str:
        return b64url(json.dumps(value, separators=(",", ":")).encode())

    signing_input = f"{segment(header)}.{segment(claims)}"
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def illegal_token_body(plugin: str = "catalog") -> dict[str, t.Any]:
    return {
        "error": {"name": "AuthenticationError", "message": "Illegal token"},
        "request": {"method": "GET", "url": "/whoami"},
        "response": {"statusCode": 401},
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# -- 1. static ------------------------------------------------------------------


def test_static_token_accepted_with_verbatim_subject(clock: FakeClock) -> None:
    token = "s3cr3t-static-" + random.token_urlsafe(16)
    app = make_app([static_entry(token, subject="my-ci:bot/1")], clock=clock)
    for plugin in PLUGINS:
        reply = call(app, token, plugin)
        assert reply.status == 200
        assert reply.body == {"principal": {"type": "service", "subject": "my-ci:bot/1"}}


def test_static_token_of_exactly_eight_characters(clock: FakeClock) -> None:
    app = make_app([static_entry("12345678")], clock=clock)
    assert call(app, "12345678").subject == "ci-bot"


@pytest.mark.parametrize(
    "sent",
    [
        "wrong-token-value",
        "s3cr3t-static-token-x",  # the configured token plus a suffix
        "s3cr3t-static-toke",  # a prefix of it
        "S3CR3T-STATIC-TOKEN",  # another case
    ],
)
def test_wrong_static_token_is_illegal(sent: str, clock: FakeClock) -> None:
    app = make_app([static_entry("s3cr3t-static-token")], clock=clock)
    reply = call(app, sent)
    assert reply.status == 401
    assert reply.body == illegal_token_body()
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert reply.headers["Content-Type"].startswith("application/json")


TOKEN_VALUE = "abcdefgh-do-not-leak-0123"

# (entries, Backstage's message text, the index of the offending entry)
STATIC_CONFIG_ERRORS: dict[str, tuple[list[dict[str, t.Any]], str, int]] = {
    "token-shorter-than-8": (
        [static_entry("1234567")],
        "Illegal token, must be at least 8 characters length",
        0,
    ),
    "token-with-spaces": (
        [static_entry("abcdefgh do-not-leak 0123")],
        "Illegal token, must be a set of non-space characters",
        0,
    ),
    "token-with-tab": (
        [static_entry("abcdefgh\tdo-not-leak-0123")],
        "Illegal token, must be a set of non-space characters",
        0,
    ),
    "subject-with-spaces": (
        [static_entry(TOKEN_VALUE, subject="ci bot")],
        "Illegal subject, must be a set of non-space characters",
        0,
    ),
    "missing-options": (
        [static_entry("other-token-123"), {"type": "static"}],
        "Missing required config value at 'backend.auth.externalAccess[1].options.token'",
        1,
    ),
    "missing-subject": (
        [{"type": "static", "options": {"token": TOKEN_VALUE}}],
        "Missing required config value at 'backend.auth.externalAccess[0].options.subject'",
        0,
    ),
    "token-not-a-string": (
        [{"type": "static", "options": {"token": 12345678, "subject": "x"}}],
        "Invalid type in config for key 'backend.auth.externalAccess[0].options.token',"
        " expected a string",
        0,
    ),
    "duplicate-static-token": (
        [static_entry(TOKEN_VALUE, "first"), static_entry(TOKEN_VALUE, "second")],
        "Static externalAccess token was declared more than once",
        1,
    ),
    "unknown-type": (
        [static_entry("other-token-123"), {"type": "magic", "options": {"token": TOKEN_VALUE}}],
        "Unknown type 'magic' in backend.auth.externalAccess,"
        " expected one of 'static', 'legacy', 'jwks'",
        1,
    ),
    "restriction-unknown-key": (
        [static_entry(TOKEN_VALUE, restrictions=[{"plugin": "catalog", "plugins": "x"}])],
        "Invalid key 'plugins' in 'accessRestrictions' config, expected one of"
        " 'plugin', 'permission', 'permissionAttribute'",
        0,
    ),
    "restriction-missing-plugin": (
        [static_entry(TOKEN_VALUE, restrictions=[{"permission": "catalog.entity.read"}])],
        "Missing required config value at"
        " 'backend.auth.externalAccess[0].accessRestrictions[0].plugin'",
        0,
    ),
    "restriction-duplicate-plugin": (
        [
            static_entry("other-token-123"),
            static_entry(TOKEN_VALUE, restrictions=[{"plugin": "catalog"}, {"plugin": "catalog"}]),
        ],
        "Attempted to declare 'accessRestrictions' twice for plugin 'catalog',"
        " which is not permitted",
        1,
    ),
    "restriction-permission-attribute-key": (
        [
            static_entry(
                TOKEN_VALUE,
                restrictions=[{"plugin": "catalog", "permissionAttribute": {"verb": "read"}}],
            )
        ],
        "Invalid key 'verb' in 'permissionAttribute' config, expected 'action'",
        0,
    ),
    "restriction-invalid-action": (
        [
            static_entry("other-token-123"),
            static_entry(
                TOKEN_VALUE,
                restrictions=[
                    {"plugin": "catalog", "permissionAttribute": {"action": ["read", "execute"]}}
                ],
            ),
        ],
        "Invalid value 'execute' at 'action' in 'permissionAttributes' config,"
        " valid values are 'create', 'read', 'update', 'delete'",
        1,
    ),
}


@pytest.mark.parametrize("case", list(STATIC_CONFIG_ERRORS))
def test_static_config_error_has_backstage_message(case: str) -> None:
    entries, message, _ = STATIC_CONFIG_ERRORS[case]
    with pytest.raises(ConfigError) as info:
        make_app(entries)
    text = str(info.value)
    assert message in text
    assert TOKEN_VALUE not in text
    assert "do-not-leak" not in text


@pytest.mark.parametrize("case", list(STATIC_CONFIG_ERRORS))
def test_static_config_error_names_entry_path(case: str) -> None:
    """Every error names the offending entry (duplicate plugin and invalid action once did not)."""
    entries, _, index = STATIC_CONFIG_ERRORS[case]
    with pytest.raises(ConfigError) as info:
        make_app(entries)
    assert f"{EXTERNAL}[{index}]" in str(info.value)


def test_unknown_type_lists_custom_types_too() -> None:
    custom = ExternalTokenHandler(
        type="header-token", initialize=lambda options: None, verify_token=lambda tok, ctx: None
    )
    with pytest.raises(ConfigError) as info:
        make_app([{"type": "nope", "options": {}}], handlers=[custom])
    assert (
        "Unknown type 'nope' in backend.auth.externalAccess, expected one of"
        " 'static', 'legacy', 'jwks', 'header-token'"
    ) in str(info.value)
    assert f"{EXTERNAL}[0].type" in str(info.value)


def test_missing_type_is_a_config_error_naming_the_entry() -> None:
    with pytest.raises(ConfigError) as info:
        make_app([{"options": {"token": TOKEN_VALUE, "subject": "x"}}])
    assert f"{EXTERNAL}[0].type" in str(info.value)
    assert TOKEN_VALUE not in str(info.value)


# -- 2. accessRestrictions --------------------------------------------------------


def test_restricted_token_reaches_only_its_plugin(clock: FakeClock) -> None:
    token = "restricted-" + random.token_urlsafe(16)
    restrictions = [
        {
            "plugin": "catalog",
            "permission": [
                "catalog.entity.read, catalog.entity.read catalog.location.read",
                "catalog.entity.refresh,catalog.location.read",
            ],
            "permissionAttribute": {"action": ["read", "update read"]},
        }
    ]
    app = make_app([static_entry(token, "restricted-bot", restrictions)], clock=clock)

    ok = call(app, token, "catalog")
    assert ok.status == 200
    assert ok.body["principal"] == {
        "type": "service",
        "subject": "restricted-bot",
        "accessRestrictions": {
            "permissionNames": [
                "catalog.entity.read",
                "catalog.location.read",
                "catalog.entity.refresh",
            ],
            "permissionAttributes": {"action": ["read", "update"]},
        },
    }

    denied = call(app, token, "search")
    assert denied.status == 403
    assert denied.body == {
        "error": {
            "name": "NotAllowedError",
            "message": "This token's access is restricted to plugin(s) 'catalog'",
        },
        "request": {"method": "GET", "url": "/whoami"},
        "response": {"statusCode": 403},
    }


def test_restriction_with_a_single_permission_string(clock: FakeClock) -> None:
    token = "one-permission-token"
    restrictions = [{"plugin": "catalog", "permission": "catalog.entity.read"}]
    app = make_app([static_entry(token, restrictions=restrictions)], clock=clock)
    assert call(app, token).body["principal"]["accessRestrictions"] == {
        "permissionNames": ["catalog.entity.read"]
    }


def test_restriction_without_permissions_surfaces_an_empty_restriction(clock: FakeClock) -> None:
    token = "plugin-only-token"
    app = make_app([static_entry(token, restrictions=[{"plugin": "catalog"}])], clock=clock)
    assert call(app, token).body["principal"]["accessRestrictions"] == {}


def test_two_plugins_are_listed_in_config_order(clock: FakeClock) -> None:
    token = "two-plugins-token"
    restrictions = [{"plugin": "scaffolder"}, {"plugin": "catalog"}]
    app = make_app([static_entry(token, restrictions=restrictions)], clock=clock)
    assert call(app, token, "catalog").status == 200
    denied = call(app, token, "search")
    assert denied.status == 403
    assert (
        denied.message == "This token's access is restricted to plugin(s) 'scaffolder', 'catalog'"
    )


def test_empty_restrictions_mean_unrestricted(clock: FakeClock) -> None:
    token = "unrestricted-token"
    app = make_app([static_entry(token, restrictions=[])], clock=clock)
    for plugin in PLUGINS:
        reply = call(app, token, plugin)
        assert reply.status == 200
        assert "accessRestrictions" not in reply.body["principal"]


def test_restrictions_apply_to_a_cached_verification(clock: FakeClock) -> None:
    token = "cached-restricted-token"
    app = make_app([static_entry(token, restrictions=[{"plugin": "catalog"}])], clock=clock)
    for _ in range(2):
        assert call(app, token, "catalog").status == 200
        assert call(app, token, "search").status == 403


# -- 3. legacy --------------------------------------------------------------------


def test_legacy_entry_accepts_a_minted_token(clock: FakeClock) -> None:
    secret = new_secret()
    app = make_app([legacy_entry(secret, "my-legacy-caller")], clock=clock)
    token = mint_legacy(secret, clock)
    for plugin in PLUGINS:
        reply = call(app, token, plugin)
        assert reply.status == 200
        assert reply.body == {"principal": {"type": "service", "subject": "my-legacy-caller"}}


def test_legacy_entry_with_restrictions(clock: FakeClock) -> None:
    secret = new_secret()
    restrictions = [{"plugin": "catalog", "permissionAttribute": {"action": "read"}}]
    app = make_app([legacy_entry(secret, "ro-client", restrictions)], clock=clock)
    token = mint_legacy(secret, clock)
    ok = call(app, token, "catalog")
    assert ok.status == 200
    assert ok.body["principal"] == {
        "type": "service",
        "subject": "ro-client",
        "accessRestrictions": {"permissionAttributes": {"action": ["read"]}},
    }
    denied = call(app, token, "search")
    assert denied.status == 403
    assert denied.message == "This token's access is restricted to plugin(s) 'catalog'"


def test_expired_legacy_token_is_401_not_500(clock: FakeClock) -> None:
    """Backstage answers 500 (a raw jose error); we answer 401."""
    secret = new_secret()
    token = mint_legacy(secret, clock)
    clock.advance(3600)  # exp == now: expired
    app = make_app([legacy_entry(secret)], clock=clock)
    reply = call(app, token)
    assert reply.status == 401
    assert reply.message.startswith("Invalid legacy token")
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert token not in json.dumps(reply.body)


def test_legacy_token_without_exp_is_401(clock: FakeClock) -> None:
    """Backstage's new backend accepts it; we require ``exp``."""
    secret = new_secret()
    token = jwt.encode({"sub": "backstage-server"}, secret_key(secret), algorithm="HS256")
    app = make_app([legacy_entry(secret)], clock=clock)
    reply = call(app, token)
    assert reply.status == 401
    assert reply.message.startswith("Invalid legacy token")


def test_legacy_token_living_longer_than_an_hour_is_401(clock: FakeClock) -> None:
    secret = new_secret()
    claims = {"sub": "backstage-server", "exp": int(clock()) + 10 * 3600}
    token = jwt.encode(claims, secret_key(secret), algorithm="HS256")
    app = make_app([legacy_entry(secret)], clock=clock)
    assert call(app, token).status == 401


def test_legacy_falls_through_to_the_next_entry(clock: FakeClock) -> None:
    first, second, stranger = new_secret(), new_secret(), new_secret()
    app = make_app([legacy_entry(first, "first"), legacy_entry(second, "second")], clock=clock)
    assert call(app, mint_legacy(first, clock)).subject == "first"
    assert call(app, mint_legacy(second, clock)).subject == "second"
    reply = call(app, mint_legacy(stranger, clock))
    assert reply.status == 401
    assert reply.body == illegal_token_body()


def test_entries_are_tried_in_config_order(clock: FakeClock) -> None:
    secret = new_secret()
    app = make_app([legacy_entry(secret, "wins"), legacy_entry(secret, "never")], clock=clock)
    assert call(app, mint_legacy(secret, clock)).subject == "wins"


def test_expired_token_for_the_first_entry_does_not_fall_through(clock: FakeClock) -> None:
    """A legacy token the first entry's key signed is judged by that entry alone."""
    secret = new_secret()
    token = mint_legacy(secret, clock)
    clock.advance(7200)
    app = make_app([legacy_entry(secret, "a"), legacy_entry(secret, "b")], clock=clock)
    reply = call(app, token)
    assert reply.status == 401
    assert reply.message.startswith("Invalid legacy token")


def test_backend_auth_keys_get_the_plugin_subject(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    secret = new_secret()
    with caplog.at_level("WARNING"):
        app = make_app(keys=[secret], clock=clock)
    assert "DEPRECATION WARNING: The backend.auth.keys config has been replaced" in caplog.text
    reply = call(app, mint_legacy(secret, clock))
    assert reply.status == 200
    assert reply.body == {"principal": {"type": "service", "subject": "external:backstage-plugin"}}


def test_backend_auth_keys_come_after_external_access(clock: FakeClock) -> None:
    shared, keys_only = new_secret(), new_secret()
    app = make_app(
        [legacy_entry(shared, "from-external-access")], keys=[shared, keys_only], clock=clock
    )
    assert call(app, mint_legacy(shared, clock)).subject == "from-external-access"
    assert call(app, mint_legacy(keys_only, clock)).subject == "external:backstage-plugin"


def test_restricted_legacy_entry_is_not_bypassed_by_backend_auth_keys(clock: FakeClock) -> None:
    """The same secret unrestricted in backend.auth.keys is refused at start-up.

    Backstage would let the first entry decide (here the restricted one for
    new plugins), while its token manager accepted the secret everywhere; we
    refuse the ambiguity (tests/test_legacy_restrictions.py has the variations).
    """
    secret = new_secret()
    with pytest.raises(ConfigError) as info:
        make_app([legacy_entry(secret, "ro", [{"plugin": "catalog"}])], keys=[secret], clock=clock)
    message = str(info.value)
    assert f"'{EXTERNAL}[0]'" in message
    assert "'backend.auth.keys[0]'" in message
    assert secret not in message


@pytest.mark.parametrize(
    ("options", "message", "path"),
    [
        ({"subject": "x"}, "Missing required config value at", f"{EXTERNAL}[0].options.secret"),
        (
            {"secret": "SECRET"},
            "Missing required config value at",
            f"{EXTERNAL}[0].options.subject",
        ),
        (
            {"secret": "SECRET", "subject": "two words"},
            "Illegal subject, must be a set of non-space characters",
            f"{EXTERNAL}[0].options.subject",
        ),
        ({"secret": "SECRET with space", "subject": "x"}, "", f"{EXTERNAL}[0].options.secret"),
        ({"secret": "c2VjcmV0", "subject": "x"}, "", f"{EXTERNAL}[0].options.secret"),
    ],
    ids=["missing-secret", "missing-subject", "subject-with-space", "secret-with-space", "short"],
)
def test_legacy_config_errors(options: dict[str, str], message: str, path: str) -> None:
    secret = new_secret()
    options = {k: v.replace("SECRET", secret) for k, v in options.items()}
    with pytest.raises(ConfigError) as info:
        make_app([{"type": "legacy", "options": options}])
    text = str(info.value)
    assert message in text
    assert path in text
    assert secret not in text


# -- 3b. legacy vectors -----------------------------------------------------------

LEGACY_VECTORS = [
    v
    for v in VECTORS["legacy_tokens"]
    # Tokens Backstage could not put in a bearer header were never sent to its backend.
    if v["expected"] == "config_reject" or v["backstage_external_legacy"] is not None
]


@pytest.mark.parametrize("vector", LEGACY_VECTORS, ids=[v["id"] for v in LEGACY_VECTORS])
def test_legacy_vector_through_external_access(vector: dict[str, t.Any]) -> None:
    """One ``legacy`` entry per secret (subject ``legacy-client``), clock at ``verify_at``."""
    entries = [legacy_entry(secret) for secret in vector["secrets"]]
    backstage = vector["backstage_external_legacy"]
    expected = vector["expected"]
    if expected == "config_reject":
        with pytest.raises(ConfigError):
            make_app(entries, clock=lambda: vector["verify_at"])
        return
    app = make_app(entries, clock=lambda: vector["verify_at"])
    reply = call(app, vector["token"])
    assert reply.status in (200, 401)  # never 500, whatever Backstage answered
    if expected == "accept":
        assert backstage == 200
        assert reply.status == 200
        assert reply.subject == "legacy-client"
    elif expected == "reject":
        # 401 where Backstage said 401; where it crashed (500) or accepted a token our
        # policy refuses (no exp, exp too far ahead), we answer exactly 401.
        assert reply.status == 401
        assert reply.headers["WWW-Authenticate"] == "Bearer"
    else:
        assert expected == "either"
        if reply.status == 200:
            assert reply.subject == "legacy-client"


def test_legacy_vectors_cover_every_backstage_outcome() -> None:
    outcomes = {(v["backstage_external_legacy"], v["expected"]) for v in LEGACY_VECTORS}
    assert {(200, "accept"), (401, "reject"), (500, "reject")} <= outcomes


# -- 4. jwks ----------------------------------------------------------------------

EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_KEY_2 = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ATTACKER_KEY = ec.generate_private_key(ec.SECP256R1())


def public_jwk(private: t.Any, kid: str) -> dict[str, t.Any]:
    if isinstance(private, ec.EllipticCurvePrivateKey):
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
        alg = "ES256"
    else:
        jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
        alg = "RS256"
    return {**jwk, "kid": kid, "alg": alg}


def public_pem(private: t.Any) -> bytes:
    return t.cast(
        bytes,
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


class KeySetApp:
    """A WSGI app serving ``{"keys": [...]}`` and counting requests."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.url = ""
        self.reset()

    def reset(self, url: str = "") -> None:
        self.url = url or self.url
        self.keys = [public_jwk(EC_KEY, "ec-1"), public_jwk(RSA_KEY, "rsa-1")]
        self.fetches = 0
        self.status = 200
        self.delay = 0.0
        self.redirect_to: str | None = None
        self.release.clear()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        with self.lock:
            self.fetches += 1
        if self.delay:
            self.release.wait(self.delay)
        if self.redirect_to:
            start_response("302 Found", [("Location", self.redirect_to), ("Content-Length", "0")])
            return [b""]
        body = json.dumps({"keys": self.keys}).encode() if self.status == 200 else b"{}"
        start_response(
            f"{self.status} X",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]


@pytest.fixture(scope="module")
def _key_set_servers() -> t.Iterator[tuple[KeySetApp, KeySetApp]]:
    main, other = KeySetApp(), KeySetApp()
    with LiveServer(main) as main_server, LiveServer(other) as other_server:
        main.reset(f"{main_server.url}/.well-known/jwks.json")
        other.reset(f"{other_server.url}/attacker/jwks.json")
        try:
            yield main, other
        finally:
            main.release.set()
            other.release.set()


@pytest.fixture
def key_set(_key_set_servers: tuple[KeySetApp, KeySetApp]) -> t.Iterator[KeySetApp]:
    """The configured JWKS endpoint, reset for each test."""
    main, _ = _key_set_servers
    main.reset()
    yield main
    main.release.set()


@pytest.fixture
def other_server(_key_set_servers: tuple[KeySetApp, KeySetApp]) -> t.Iterator[KeySetApp]:
    """A second endpoint, for ``jku`` headers and redirects: it must see no request."""
    _, other = _key_set_servers
    other.reset()
    other.keys = [public_jwk(ATTACKER_KEY, "ec-1"), public_jwk(ATTACKER_KEY, "attacker")]
    yield other
    other.release.set()


def jwks_entry(url: str, **options: t.Any) -> dict[str, t.Any]:
    return {"type": "jwks", "options": {"url": url, **options}}


def jwks_app(url: str, clock: FakeClock, *, cache: bool = False, **options: t.Any) -> Flask:
    settings: dict[str, t.Any] = {"BACKSTAGE_AUTH_JWKS_TIMEOUT": 2}
    if not cache:
        settings["BACKSTAGE_AUTH_CACHE_SIZE"] = 0  # every request runs the handler
    return make_app([jwks_entry(url, **options)], clock=clock, settings=settings)


def sign(
    clock: FakeClock,
    *,
    key: t.Any = EC_KEY,
    alg: str = "ES256",
    kid: str | None = "ec-1",
    headers: dict[str, t.Any] | None = None,
    **claims: t.Any,
) -> str:
    payload: dict[str, t.Any] = {"sub": "my-service", "exp": int(clock()) + 600}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    all_headers = dict(headers or {})
    if kid is not None:
        all_headers["kid"] = kid
    return jwt.encode(payload, key, algorithm=alg, headers=all_headers)


def test_jwks_token_gives_an_external_subject(key_set: KeySetApp, clock: FakeClock) -> None:
    app = jwks_app(key_set.url, clock)
    reply = call(app, sign(clock))
    assert reply.status == 200
    assert reply.body == {"principal": {"type": "service", "subject": "external:my-service"}}
    rsa_reply = call(app, sign(clock, key=RSA_KEY, alg="RS256", kid="rsa-1", sub="rsa-svc"))
    assert rsa_reply.subject == "external:rsa-svc"
    assert key_set.fetches == 1


def test_jwks_subject_prefix(key_set: KeySetApp, clock: FakeClock) -> None:
    app = jwks_app(key_set.url, clock, subjectPrefix="ci")
    assert call(app, sign(clock, sub="runner-7")).subject == "external:ci:runner-7"


def test_jwks_entry_with_restrictions(key_set: KeySetApp, clock: FakeClock) -> None:
    entry = {**jwks_entry(key_set.url), "accessRestrictions": [{"plugin": "search"}]}
    app = make_app([entry], clock=clock)
    token = sign(clock)
    assert call(app, token, "search").status == 200
    denied = call(app, token, "catalog")
    assert denied.status == 403
    assert denied.message == "This token's access is restricted to plugin(s) 'search'"


ISSUERS = ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    "configured",
    [ISSUERS, "https://a.example, https://b.example", "https://a.example https://b.example"],
    ids=["list", "comma-string", "space-string"],
)
@pytest.mark.parametrize(
    ("iss", "accepted"),
    [
        ("https://a.example", True),
        ("https://b.example", True),
        ("https://c.example", False),
        (None, False),
        ("https://a.example/", False),
    ],
    ids=["first", "second", "other", "missing", "trailing-slash"],
)
def test_jwks_issuer(
    configured: t.Any, iss: str | None, accepted: bool, key_set: KeySetApp, clock: FakeClock
) -> None:
    app = jwks_app(key_set.url, clock, issuer=configured)
    reply = call(app, sign(clock, iss=iss))
    if accepted:
        assert reply.status == 200
    else:
        assert reply.status == 401
        assert reply.body == illegal_token_body()


@pytest.mark.parametrize(
    "configured",
    [["backstage", "catalog-api"], "backstage,catalog-api", "backstage, catalog-api"],
    ids=["list", "comma-string", "comma-space-string"],
)
@pytest.mark.parametrize(
    ("aud", "accepted"),
    [
        ("backstage", True),
        ("catalog-api", True),
        (["other", "catalog-api"], True),
        ("other", False),
        (["other", "another"], False),
        (None, False),
        ("backstage,catalog-api", False),
    ],
    ids=["first", "second", "list-with-one", "other", "list-without", "missing", "joined"],
)
def test_jwks_audience(
    configured: t.Any, aud: t.Any, accepted: bool, key_set: KeySetApp, clock: FakeClock
) -> None:
    app = jwks_app(key_set.url, clock, audience=configured)
    reply = call(app, sign(clock, aud=aud))
    assert reply.status == (200 if accepted else 401)


def test_jwks_without_configured_audience_accepts_any_audience(
    key_set: KeySetApp, clock: FakeClock
) -> None:
    app = jwks_app(key_set.url, clock)
    assert call(app, sign(clock, aud="whatever")).status == 200


@pytest.mark.parametrize(
    ("configured", "es256", "rs256"),
    [
        ("ES256", True, False),
        ("RS256", False, True),
        ("ES256, RS256", True, True),
        (["RS256", "ES256"], True, True),
    ],
)
def test_jwks_algorithm_restriction(
    configured: t.Any, es256: bool, rs256: bool, key_set: KeySetApp, clock: FakeClock
) -> None:
    app = jwks_app(key_set.url, clock, algorithm=configured)
    assert call(app, sign(clock)).status == (200 if es256 else 401)
    rsa_token = sign(clock, key=RSA_KEY, alg="RS256", kid="rsa-1")
    assert call(app, rsa_token).status == (200 if rs256 else 401)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": None},
        {"sub": ""},
        {"sub": 42},
        {"exp": None},  # our deviation: exp is required
        {"exp": int(T0)},  # expired: exp <= now
        {"exp": int(T0) - 60},
        {"exp": str(int(T0) + 600)},
        {"nbf": int(T0) + 60},
        {"iat": "yesterday"},
    ],
    ids=[
        "no-sub",
        "empty-sub",
        "numeric-sub",
        "no-exp",
        "exp-now",
        "expired",
        "exp-string",
        "nbf-future",
        "iat-string",
    ],
)
def test_jwks_bad_claims_are_illegal(
    claims: dict[str, t.Any], key_set: KeySetApp, clock: FakeClock
) -> None:
    app = jwks_app(key_set.url, clock)
    reply = call(app, sign(clock, **claims))
    assert reply.status == 401
    assert reply.body == illegal_token_body()


def test_jwks_token_signed_by_another_key(key_set: KeySetApp, clock: FakeClock) -> None:
    app = jwks_app(key_set.url, clock)
    assert call(app, sign(clock, key=ATTACKER_KEY)).status == 401
    # An ES256 header naming the RSA key, and the other way round.
    assert call(app, sign(clock, kid="rsa-1")).status == 401
    assert call(app, sign(clock, key=RSA_KEY, alg="RS256", kid="ec-1")).status == 401


def test_jwks_alg_none_and_hmac_confusion_make_no_fetch(
    key_set: KeySetApp, clock: FakeClock
) -> None:
    # A symmetric key in the set is never usable, whatever its "alg".
    oct_secret = random.token_bytes(32)
    key_set.keys = [
        *key_set.keys,
        {"kty": "oct", "k": b64url(oct_secret), "kid": "oct-1", "alg": "HS256"},
    ]
    app = jwks_app(key_set.url, clock)
    claims = {"sub": "my-service", "exp": int(clock()) + 600}
    forged = [
        jwt.encode(claims, "", algorithm="none", headers={"kid": "ec-1"}),
        sign(clock).rsplit(".", 1)[0] + ".",  # a real ES256 token, signature stripped
        hs256_by_hand({"alg": "none", "kid": "ec-1"}, claims, b""),
        jwt.encode(claims, oct_secret, algorithm="HS256", headers={"kid": "oct-1"}),
    ]
    for kid, private in (("ec-1", EC_KEY), ("rsa-1", RSA_KEY)):
        jwk_text = json.dumps(public_jwk(private, kid)).encode()
        for key in (public_pem(private), jwk_text):
            header = {"alg": "HS256", "typ": "JWT", "kid": kid}
            forged.append(hs256_by_hand(header, claims, key))
            forged.append(hs256_by_hand(header, {**claims, "sub": "backstage-server"}, key))
    for token in forged:
        reply = call(app, token)
        assert reply.status == 401
        assert reply.body == illegal_token_body()
    assert key_set.fetches == 0  # refused before any fetch
    assert call(app, sign(clock)).status == 200
    assert key_set.fetches == 1


def test_jwks_ignores_keys_and_urls_in_the_token(
    key_set: KeySetApp, other_server: KeySetApp, clock: FakeClock
) -> None:
    app = jwks_app(key_set.url, clock)
    attacker_jwk = public_jwk(ATTACKER_KEY, "attacker")
    for kid in ("ec-1", "attacker"):
        headers = {
            "jku": other_server.url,
            "x5u": other_server.url,
            "jwk": attacker_jwk,
        }
        token = sign(clock, key=ATTACKER_KEY, kid=kid, headers=headers)
        reply = call(app, token)
        assert reply.status == 401
        assert reply.body == illegal_token_body()
    assert other_server.fetches == 0
    assert key_set.fetches >= 1
    # The same headers on a token the configured key signed change nothing.
    signed = sign(clock, headers={"jku": other_server.url, "jwk": attacker_jwk})
    assert call(app, signed).status == 200
    assert other_server.fetches == 0


def test_jwks_crit_header_is_refused(key_set: KeySetApp, clock: FakeClock) -> None:
    app = jwks_app(key_set.url, clock)
    token = sign(clock, headers={"crit": ["exp"]})
    assert call(app, token).status == 401


def test_jwks_forged_kids_cause_at_most_one_refetch_per_cooldown(
    key_set: KeySetApp, clock: FakeClock
) -> None:
    app = jwks_app(key_set.url, clock)
    assert call(app, sign(clock)).status == 200
    assert key_set.fetches == 1

    def forged() -> str:
        return sign(clock, key=ATTACKER_KEY, kid=random.token_hex(8))

    for _ in range(20):
        assert call(app, forged()).status == 401
    assert key_set.fetches == 1  # within the cooldown of the first fetch: none
    clock.advance(30)
    for _ in range(20):
        assert call(app, forged()).status == 401
    assert key_set.fetches == 2  # one refetch for the whole burst
    clock.advance(29)
    for _ in range(20):
        assert call(app, forged()).status == 401
    assert key_set.fetches == 2
    assert call(app, sign(clock)).status == 200
    assert key_set.fetches == 2


def test_jwks_forged_kids_on_a_fresh_cache(key_set: KeySetApp, clock: FakeClock) -> None:
    app = jwks_app(key_set.url, clock)
    for _ in range(20):
        assert call(app, sign(clock, key=ATTACKER_KEY, kid=random.token_hex(8))).status == 401
    assert key_set.fetches == 1


def test_jwks_one_fetch_per_request_even_without_cooldown(
    key_set: KeySetApp, clock: FakeClock
) -> None:
    """Security rule 10: at most one JWKS fetch per request, even with a cooldown of 0."""
    app = make_app(
        [jwks_entry(key_set.url)],
        clock=clock,
        settings={"BACKSTAGE_AUTH_JWKS_COOLDOWN": 0, "BACKSTAGE_AUTH_CACHE_SIZE": 0},
    )
    assert call(app, sign(clock, kid="unknown-kid")).status == 401
    assert key_set.fetches <= 1


def test_jwks_new_kid_is_picked_up_after_the_cooldown(key_set: KeySetApp, clock: FakeClock) -> None:
    app = jwks_app(key_set.url, clock)
    assert call(app, sign(clock)).status == 200
    key_set.keys = [*key_set.keys, public_jwk(EC_KEY_2, "ec-2")]
    rotated = sign(clock, key=EC_KEY_2, kid="ec-2")
    assert call(app, rotated).status == 401  # cooldown: no refetch yet
    clock.advance(30)
    assert call(app, sign(clock, key=EC_KEY_2, kid="ec-2")).status == 200
    assert key_set.fetches == 2


def test_jwks_server_error_is_401_then_recovers_after_cooldown(
    key_set: KeySetApp, clock: FakeClock
) -> None:
    key_set.status = 500
    app = jwks_app(key_set.url, clock)
    reply = call(app, sign(clock))
    assert reply.status == 401
    assert reply.body == illegal_token_body()
    assert key_set.fetches == 1
    key_set.status = 200
    assert call(app, sign(clock)).status == 401  # no retry within the cooldown
    assert key_set.fetches == 1
    clock.advance(30)
    assert call(app, sign(clock)).status == 200
    assert key_set.fetches == 2


@pytest.mark.parametrize(
    "payload",
    [b"not json", b'{"keys": "nope"}', b"[]", b'{"keys": [{"kty": "EC"}]}'],
    ids=["not-json", "keys-not-a-list", "array", "broken-key"],
)
def test_jwks_malformed_key_set_is_401(
    payload: bytes, key_set: KeySetApp, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def serve(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        with key_set.lock:
            key_set.fetches += 1
        start_response("200 OK", [("Content-Length", str(len(payload)))])
        return [payload]

    monkeypatch.setattr(KeySetApp, "__call__", lambda self, e, s: serve(e, s))
    app = jwks_app(key_set.url, clock)
    assert call(app, sign(clock)).status == 401
    assert key_set.fetches == 1


def test_jwks_server_not_listening_is_401(clock: FakeClock) -> None:
    app = jwks_app(f"http://127.0.0.1:{free_port()}/jwks.json", clock)
    reply = call(app, sign(clock))
    assert reply.status == 401
    assert reply.body == illegal_token_body()


def test_jwks_slow_server_is_401_within_the_timeout(key_set: KeySetApp, clock: FakeClock) -> None:
    key_set.delay = 5
    app = make_app(
        [jwks_entry(key_set.url)],
        clock=clock,
        settings={"BACKSTAGE_AUTH_JWKS_TIMEOUT": 0.5, "BACKSTAGE_AUTH_CACHE_SIZE": 0},
    )
    started = time.monotonic()
    reply = call(app, sign(clock))
    elapsed = time.monotonic() - started
    key_set.release.set()
    assert reply.status == 401
    assert 0.4 <= elapsed < 1.5
    # Within the cooldown, the next request does not wait on the server again.
    started = time.monotonic()
    assert call(app, sign(clock)).status == 401
    assert time.monotonic() - started < 0.3


def test_jwks_last_good_key_set_is_kept_when_a_refetch_fails(
    key_set: KeySetApp, clock: FakeClock
) -> None:
    app = jwks_app(key_set.url, clock)
    token = sign(clock, exp=int(clock()) + 3600)
    assert call(app, token).status == 200
    key_set.status = 500
    clock.advance(601)  # the key set is stale: refetched, and the fetch fails
    assert call(app, token).status == 200  # a known kid: the refetch runs in the background
    cache = BackstageAuth.state(app).external_access.entries[0].context.cache
    deadline = time.monotonic() + 5
    while (key_set.fetches < 2 or cache._flight is not None) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert key_set.fetches == 2
    assert call(app, token).status == 200  # the last good set is kept
    clock.advance(31)  # an unknown kid after the cooldown: refetch fails again
    assert call(app, sign(clock, key=ATTACKER_KEY, kid="unknown")).status == 401
    assert key_set.fetches == 3
    assert call(app, token).status == 200


def test_jwks_fetch_does_not_follow_redirects(
    key_set: KeySetApp, other_server: KeySetApp, clock: FakeClock
) -> None:
    """Keys come from the configured URL only; jose does not follow redirects either."""
    key_set.redirect_to = other_server.url
    app = jwks_app(key_set.url, clock)
    reply = call(app, sign(clock, key=ATTACKER_KEY, kid="attacker"))
    assert other_server.fetches == 0
    assert reply.status == 401


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "not a url"}, "Illegal JWKS URL, must be a set of non-space characters"),
        ({"url": "https://idp.example/ jwks.json"}, "Illegal JWKS URL, must be a set of non-space"),
        ({"url": "not-a-url"}, "Illegal JWKS URL, must be an http(s) URL"),
        ({"url": "ftp://idp.example/jwks.json"}, "Illegal JWKS URL, must be an http(s) URL"),
        ({"url": "file:///etc/jwks.json"}, "Illegal JWKS URL, must be an http(s) URL"),
        ({"url": "https:///jwks.json"}, "Illegal JWKS URL, must be an http(s) URL"),
        ({}, "Missing required config value at 'backend.auth.externalAccess[0].options.url'"),
        (
            {"url": "https://idp.example/jwks.json", "algorithm": "HS256"},
            "Unsupported algorithm 'HS256' at backend.auth.externalAccess[0].options.algorithm",
        ),
        (
            {"url": "https://idp.example/jwks.json", "algorithm": "ES256, none"},
            "Unsupported algorithm 'none'",
        ),
        (
            {"url": "https://idp.example/jwks.json", "subjectPrefix": 7},
            "backend.auth.externalAccess[0].options.subjectPrefix",
        ),
    ],
    ids=[
        "spaces",
        "inner-space",
        "no-scheme",
        "ftp",
        "file",
        "no-host",
        "missing",
        "hs256",
        "none",
        "prefix-not-string",
    ],
)
def test_jwks_config_errors(options: dict[str, t.Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_app([{"type": "jwks", "options": options}])
    assert message in str(info.value)
    assert f"{EXTERNAL}[0]" in str(info.value)


# -- 5. custom handlers -------------------------------------------------------------


class HeaderTokenContext(t.NamedTuple):
    token: str
    subject: str


def header_token_handler(
    seen: list[ConfigReader] | None = None, calls: list[str] | None = None
) -> ExternalTokenHandler[HeaderTokenContext]:
    def initialize(options: ConfigReader) -> HeaderTokenContext:
        if seen is not None:
            seen.append(options)
        return HeaderTokenContext(options.get_string("value"), options.get_string("subject"))

    def verify(token: str, context: HeaderTokenContext) -> ExternalTokenResult | None:
        if calls is not None:
            calls.append(token)
        if token == context.token:
            return ExternalTokenResult(subject=context.subject)
        return None

    return ExternalTokenHandler(type="header-token", initialize=initialize, verify_token=verify)


def test_custom_handler_works_in_config(clock: FakeClock) -> None:
    seen: list[ConfigReader] = []
    entries = [
        static_entry("static-token-123", "static-bot"),
        {
            "type": "header-token",
            "options": {"value": "custom-token-xyz", "subject": "custom:bot", "extra": {"n": 1}},
            "accessRestrictions": [{"plugin": "catalog"}],
        },
    ]
    app = make_app(entries, clock=clock, handlers=[header_token_handler(seen)])
    assert len(seen) == 1
    options = seen[0]
    assert isinstance(options, ConfigReader)
    assert options.prefix == f"{EXTERNAL}[1].options"
    assert options.get_config("extra").get("n") == 1
    assert call(app, "custom-token-xyz").body == {
        "principal": {"type": "service", "subject": "custom:bot", "accessRestrictions": {}}
    }
    assert call(app, "custom-token-xyz", "search").status == 403
    assert call(app, "static-token-123").subject == "static-bot"
    assert call(app, "other-token-123").status == 401


def test_custom_handler_config_errors_propagate() -> None:
    with pytest.raises(ConfigError) as info:
        make_app(
            [{"type": "header-token", "options": {"subject": "x"}}],
            handlers=[header_token_handler()],
        )
    assert f"{EXTERNAL}[0].options.value" in str(info.value)


def test_duplicate_handler_type_is_a_config_error() -> None:
    duplicate = ExternalTokenHandler(
        type="static", initialize=lambda options: None, verify_token=lambda tok, ctx: None
    )
    with pytest.raises(ConfigError) as info:
        make_app([], handlers=[duplicate])
    assert (
        "Duplicate external token handler type 'static', each handler must have a unique type"
        in str(info.value)
    )
    with pytest.raises(ConfigError, match="Duplicate external token handler type 'header-token'"):
        make_app([], handlers=[header_token_handler(), header_token_handler()])


def test_custom_handler_errors(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    def refuse(token: str, context: object) -> ExternalTokenResult | None:
        if token == "refused-token":
            raise AuthenticationError("Token revoked")
        raise RuntimeError("handler bug with a secret-ish detail")

    handler = ExternalTokenHandler(
        type="flaky", initialize=lambda options: None, verify_token=refuse
    )
    app = make_app([{"type": "flaky"}], clock=clock, handlers=[handler])
    refused = call(app, "refused-token")
    assert refused.status == 401
    assert refused.message == "Token revoked"
    with caplog.at_level("ERROR"):
        crashed = call(app, "crashing-token")
    assert crashed.status == 401  # fail closed, never 500
    assert crashed.body == illegal_token_body()
    assert "secret-ish" not in json.dumps(crashed.body)


# -- 6. caching -------------------------------------------------------------------------


def counting_static_handler(calls: list[str]) -> ExternalTokenHandler[t.Any]:
    """The built-in static handler under another type, counting verifications."""
    from flask_backstage_auth.auth.external.static import static_token_handler

    def verify(token: str, context: t.Any) -> ExternalTokenResult | None:
        calls.append(token)
        return static_token_handler.verify_token(token, context)

    return ExternalTokenHandler(
        type="counted-static", initialize=static_token_handler.initialize, verify_token=verify
    )


def test_verified_static_token_is_cached_for_the_ttl(clock: FakeClock) -> None:
    calls: list[str] = []
    token = "cached-static-token"
    entry = {"type": "counted-static", "options": {"token": token, "subject": "cached-bot"}}
    app = make_app(
        [entry],
        clock=clock,
        handlers=[counting_static_handler(calls)],
        settings={"BACKSTAGE_AUTH_CACHE_TTL": 60},
    )
    assert call(app, token, "catalog").subject == "cached-bot"
    assert call(app, token, "search").subject == "cached-bot"
    clock.advance(59.9)
    assert call(app, token).subject == "cached-bot"
    assert calls == [token]
    clock.advance(0.1)  # the TTL is over: verified again
    assert call(app, token).subject == "cached-bot"
    assert calls == [token, token]
    # Failures are never cached.
    for _ in range(2):
        assert call(app, "not-the-token").status == 401
    assert calls == [token, token, "not-the-token", "not-the-token"]


def test_cache_can_be_disabled(clock: FakeClock) -> None:
    calls: list[str] = []
    token = "uncached-static-token"
    entry = {"type": "counted-static", "options": {"token": token, "subject": "bot"}}
    app = make_app(
        [entry],
        clock=clock,
        handlers=[counting_static_handler(calls)],
        settings={"BACKSTAGE_AUTH_CACHE_SIZE": 0},
    )
    for _ in range(3):
        assert call(app, token).status == 200
    assert len(calls) == 3


def test_cached_legacy_token_is_refused_after_its_exp(clock: FakeClock) -> None:
    secret = new_secret()
    app = make_app(
        [legacy_entry(secret)], clock=clock, settings={"BACKSTAGE_AUTH_CACHE_TTL": 1_000_000}
    )
    token = mint_legacy(secret, clock)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert call(app, token).status == 200
    clock.now = exp - 1
    assert call(app, token).status == 200
    clock.now = exp
    reply = call(app, token)
    assert reply.status == 401
    assert reply.message.startswith("Invalid legacy token")


def test_cached_jwks_token_is_refused_after_its_exp(key_set: KeySetApp, clock: FakeClock) -> None:
    app = jwks_app(key_set.url, clock, cache=True)
    token = sign(clock, exp=int(clock()) + 100)
    assert call(app, token).status == 200
    clock.advance(99)
    assert call(app, token).status == 200
    clock.advance(1)
    assert call(app, token).status == 401


# -- 7. hostile headers ----------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Bearer " + "a" * 40 * 1024,
        "Bearer " + "eyJhbGciOiJIUzI1NiJ9." + "A" * 40 * 1024 + ".sig",
        "Bearer " + "x" * 12 * 1024,  # within the header limit, beyond the legacy token limit
        "Bearer é.é.é",
        "Bearer ÿþ\x00\x01junk",
        "Bearer \x7f\x80\x81\x9f",
        "Bearer eyJhbGciOiJIUzI1NiJ9.é.x",
        "Bearer " + "Ã©" * 1000,
    ],
    ids=[
        "40kb",
        "40kb-jws",
        "12kb",
        "latin1-jws",
        "nul",
        "c1-controls",
        "latin1-payload",
        "mojibake",
    ],
)
def test_hostile_header_is_401_never_500(header: str, clock: FakeClock) -> None:
    app = make_app(
        [static_entry("static-token-123"), legacy_entry(new_secret())],
        clock=clock,
    )
    reply = call(app, None, header=header)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == "Bearer"


def test_hostile_header_with_surrogates_in_the_environ(clock: FakeClock) -> None:
    app = make_app([static_entry("static-token-123")], clock=clock)
    reply = call(app, None, environ={"HTTP_AUTHORIZATION": "Bearer ab\udcffcd.\udc80.x"})
    assert reply.status == 401


def test_hostile_tokens_reach_a_jwks_entry_without_500(
    key_set: KeySetApp, clock: FakeClock
) -> None:
    app = jwks_app(key_set.url, clock)
    for header in ("Bearer " + "a" * 40 * 1024, "Bearer é.é.é", "Bearer a.b.c", "Bearer ..."):
        assert call(app, None, header=header).status == 401
    assert key_set.fetches == 0


@pytest.mark.parametrize(
    "typ", ["vnd.backstage.user", "vnd.backstage.plugin", "vnd.backstage.limited-user"]
)
def test_jwks_never_turns_backstage_tokens_into_external_callers(
    key_set: KeySetApp, clock: FakeClock, typ: str
) -> None:
    app = jwks_app(key_set.url, clock)
    assert call(app, sign(clock, headers={"typ": typ}, aud="backstage")).status == 401
    assert call(app, sign(clock, headers={"typ": "JWT"})).status == 200
