"""One pass over each token, and the published token-handler registry.

A never-seen token is split once (``auth.jose.peek``) and verified once, by
PyJWT's own algorithm objects on the parts already split; the split accepts
exactly what PyJWT's loader accepts, and the verification exactly what
``jwt.decode`` accepts. Handlers are registered through
``BackstageAuth.register_token_handler`` and run in the documented order.
"""

from __future__ import annotations

import base64
import json
import random
import typing as t

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Blueprint, Flask, jsonify
from jwt.algorithms import ECAlgorithm

from flask_backstage_auth import AuthenticationError, BackstageAuth, get_credentials
from flask_backstage_auth.auth import jose
from flask_backstage_auth.auth.jose import COMPACT_JWS, HmacKeys, PeekedToken, peek, verify_jwt
from flask_backstage_auth.auth.key_sets import LocalKeySet
from flask_backstage_auth.auth.plugin.keys import InMemoryPublicKeyStore, RotatingKeySource
from flask_backstage_auth.auth.service import VerifiedToken
from flask_backstage_auth.auth_backend.extension import AuthBackend, UserTokenIssuer
from flask_backstage_auth.credentials import AccessRestrictions, NonePrincipal, ServicePrincipal
from flask_backstage_auth.legacy.secrets import decode_backstage_secret
from flask_backstage_auth.legacy.token_manager import ServerTokenManager
from flask_backstage_auth.testing.mocks import bearer_header
from tests.conftest import new_secret

#: ``jwt.decode`` with every claim check off, as the handlers verified before.
NO_CLAIM_CHECKS: t.Any = {
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
}
NOW = 1_800_000_000
USER = "user:default/jane"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_hs256(header: bytes, payload: bytes, key: bytes) -> str:
    """A compact JWS with exactly these header and payload bytes, signed by PyJWT."""
    signing_input = f"{b64(header)}.{b64(payload)}".encode()
    algorithm = jwt.get_algorithm_by_name("HS256")
    return f"{signing_input.decode()}.{b64(algorithm.sign(signing_input, key))}"


def sign_es256(header: bytes, payload: bytes, private_key: t.Any) -> str:
    signing_input = f"{b64(header)}.{b64(payload)}".encode()
    signature = ECAlgorithm(ECAlgorithm.SHA256).sign(signing_input, private_key)
    return f"{signing_input.decode()}.{b64(signature)}"


HS_KEY = b"k" * 32
GOOD_PAYLOAD = json.dumps({"sub": "backstage-server", "exp": NOW + 60}).encode()
HEADERS = [
    b'{"alg":"HS256"}',
    b'{"alg":"HS256","typ":"JWT","kid":"a"}',
    b'{"alg":"HS256","kid":5}',
    b'{"alg":"HS256","kid":null}',
    b'{"alg":"HS256","crit":["b64"],"b64":true}',
    b'{"alg":"HS256","crit":["b64"]}',
    b'{"alg":"HS256","crit":[]}',
    b'{"alg":"HS256","crit":"b64","b64":true}',
    b'{"alg":"HS256","crit":["exp"],"exp":1}',
    b'{"alg":"HS256","crit":[1]}',
    b'{"alg":"HS256","b64":false}',
    b'{"alg":"HS256","b64":"no"}',
    b'{"alg":"none"}',
    b'{"alg":["HS256"]}',
    b"{}",
    b"[]",
    b'"HS256"',
    b"null",
    b"{not json",
    b"\xff\xfe{}",
    '{"alg":"HS256"}'.encode("utf-16"),
    b"[" * 100_000 + b"]" * 100_000,
]
PAYLOADS = [
    GOOD_PAYLOAD,
    b"{}",
    b"[]",
    b"42",
    b"not json",
    b'{"sub":1}',
    b'{"sub":"x","jti":2}',
    b'{"exp":1e999}',
    b"{" * 50_000,
]


def corpus() -> list[str]:
    """Tokens PyJWT loads, and many it does not: crafted headers and payloads, mutations."""
    tokens = [sign_hs256(header, payload, HS_KEY) for header in HEADERS for payload in PAYLOADS]
    good = sign_hs256(HEADERS[0], GOOD_PAYLOAD, HS_KEY)
    header, payload, signature = good.split(".")
    tokens += [
        f"{header}.{payload}.{signature[:-1]}",  # a segment of 4n+1 characters
        f"{header}.{payload}.{signature[:-1]}B",  # non-canonical: unused bits set
        f"{header[:-1]}.{payload}.{signature}",
        f"{header}.{payload}.{signature}=",  # padding: not a compact JWS here
        f"{header}..{signature}",
        f"{header}.{payload}",
        f"{header}.{payload}.{signature}.{signature}",
        "not a token",
        "",
    ]
    rng = random.Random(2026)
    alphabet = "ABCxyz019-_.="
    for _ in range(400):
        chars = list(rng.choice(tokens[:60]))
        for _ in range(rng.randint(1, 3)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        tokens.append("".join(chars))
    return tokens


CORPUS = corpus()


def pyjwt_load(token: str) -> tuple[t.Any, t.Any, type[Exception] | None]:
    """What PyJWT's loader makes of a token: header, unverified payload, its error."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        return None, None, type(exc)
    try:
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        payload = None
    return header, payload, None


def test_peek_loads_what_pyjwt_loads_and_nothing_else() -> None:
    loaded = 0
    for token in CORPUS:
        peeked = peek(token)
        if COMPACT_JWS.fullmatch(token) is None:
            # The shape is checked first, as before: PyJWT's padded forms are refused too.
            assert peeked.header is None and peeked.payload is None and not peeked.compact
            continue
        header, payload, error = pyjwt_load(token)
        assert peeked.compact
        assert peeked.header == header, token[:80]
        assert peeked.payload == payload, token[:80]
        if error is not None:
            assert peeked.error is error, token[:80]
        else:
            loaded += 1
    assert loaded > 50  # the corpus holds both kinds


def test_hs256_verification_is_pyjwt_s_on_the_split_parts() -> None:
    keys = HmacKeys([b"o" * 32, HS_KEY])
    checked = 0
    for token in CORPUS:
        peeked = peek(token)
        if peeked.header is None or peeked.header.get("alg") != "HS256":
            continue
        try:
            jwt.PyJWS().decode_complete(token, HS_KEY, algorithms=["HS256"])
            expected = True
        except jwt.InvalidSignatureError:
            expected = False
        except jwt.PyJWTError:
            continue  # refused before the signature: never reaches HmacKeys
        assert keys.signed(peeked) is expected, token[:80]
        checked += 1
    assert checked > 50


@pytest.fixture(scope="module")
def es_key() -> tuple[t.Any, jwt.PyJWK]:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return private, jwt.PyJWK({**jwk, "kid": "k1", "alg": "ES256"})


def test_es256_verification_accepts_what_jwt_decode_accepts(
    es_key: tuple[t.Any, jwt.PyJWK],
) -> None:
    private, public = es_key
    other = ec.generate_private_key(ec.SECP256R1())
    payloads = [
        b'{"sub":"user:default/jane","exp":1}',
        b'{"sub":1}',
        b'{"jti":1}',
        b'{"jti":"a","sub":"b"}',
        b"[]",
        b"not json",
    ]
    headers = [
        b'{"alg":"ES256","kid":"k1"}',
        b'{"alg":"ES384","kid":"k1"}',
        b'{"alg":"HS256","kid":"k1"}',
        b'{"alg":"none"}',
        b"{}",
    ]
    tokens = [
        sign_es256(header, payload, key)
        for header in headers
        for payload in payloads
        for key in (private, other)
    ]
    # Algorithm confusion: an HS256 token keyed with the public key's own bytes.
    raw = public.key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    tokens.append(sign_hs256(headers[2], payloads[0], raw))
    rng = random.Random(7)
    for _ in range(100):
        chars = list(tokens[0])
        chars[rng.randrange(len(chars))] = rng.choice("AZaz09-_")
        tokens.append("".join(chars))
    accepted = 0
    for token in tokens:
        try:
            expected = jwt.decode(token, public, algorithms=["ES256"], options=NO_CLAIM_CHECKS)
        except jwt.PyJWTError:
            expected = None
        try:
            ours = dict(verify_jwt(peek(token), public, ("ES256",)))
        except jwt.PyJWTError:
            ours = None
        assert ours == expected, token[:80]
        accepted += ours is not None
    assert accepted >= 2  # the good tokens (and the harmless mutations of unused bits)


# -- through the HTTP interface, in production mode --------------------------------


def whoami() -> Blueprint:
    bp = Blueprint("catalog", __name__, url_prefix="/api/catalog")

    @bp.get("/whoami")
    def view() -> t.Any:
        return jsonify(get_credentials().to_dict())

    @bp.post("/whoami")
    def change() -> t.Any:
        return jsonify(get_credentials().to_dict())

    return bp


STATIC_TOKEN = "static-token-for-the-registry"


def clock() -> float:
    return NOW


def production_app(secret: str, *, auth_backend: bool = True) -> Flask:
    """Service tokens come last of four entries: static, legacy (another secret), jwks, keys."""
    app = Flask("one-pass", static_folder=None)
    app.config["BACKSTAGE_CONFIG"] = {
        "backend": {
            "baseUrl": "http://127.0.0.1:1",
            "auth": {
                "keys": [{"secret": secret}],
                "externalAccess": [
                    {"type": "static", "options": {"token": STATIC_TOKEN, "subject": "static"}},
                    {"type": "legacy", "options": {"secret": new_secret(), "subject": "other"}},
                    {"type": "jwks", "options": {"url": "http://127.0.0.1:1/jwks.json"}},
                ],
            },
        }
    }
    BackstageAuth(app, clock=clock)
    if auth_backend:
        AuthBackend(app)
    app.register_blueprint(whoami())
    assert not app.testing and not app.debug
    return app


class Counts:
    """How often a token is split and signatures checked, and whether PyJWT parses it again."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.segments = 0
        self.loads = 0
        self.hmac = 0
        decode, load = jose._b64url, jwt.api_jws.PyJWS._load
        verify = jose._HS256_ALGORITHM.verify

        def count_segment(segment: bytes) -> bytes:
            self.segments += 1
            return decode(segment)

        def count_load(jws: jwt.PyJWS, token: t.Any) -> t.Any:
            self.loads += 1
            return load(jws, token)

        def count_hmac(*args: t.Any) -> bool:
            self.hmac += 1
            return verify(*args)

        monkeypatch.setattr(jose, "_b64url", count_segment)
        monkeypatch.setattr(jwt.api_jws.PyJWS, "_load", count_load)
        monkeypatch.setattr(jose._HS256_ALGORITHM, "verify", count_hmac)


def service_token(secret: str, **claims: t.Any) -> str:
    return jwt.encode(
        {"sub": "backstage-server", "exp": NOW + 60, **claims},
        decode_backstage_secret(secret),
        algorithm="HS256",
        headers={"typ": None},
    )


def test_a_never_seen_service_token_is_split_once_and_each_key_checks_it_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = new_secret()
    app = production_app(secret, auth_backend=False)
    client = app.test_client()
    counts = Counts(monkeypatch)
    response = client.get("/api/catalog/whoami", headers=bearer_header(service_token(secret)))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["principal"]["subject"] == "external:backstage-plugin"
    # Three segments decoded once; the legacy entry's key, then backend.auth.keys' key.
    assert (counts.segments, counts.loads, counts.hmac) == (3, 0, 2)
    # Another method, another token signed by no configured key: split once too, refused.
    counts.segments = counts.hmac = 0
    forged = service_token(new_secret(), jti="forged")
    refused = client.post("/api/catalog/whoami", headers=bearer_header(forged))
    assert refused.status_code == 401
    assert forged not in refused.get_data(as_text=True)
    assert (counts.segments, counts.loads, counts.hmac) == (3, 0, 2)


def test_user_and_plugin_tokens_are_split_once(monkeypatch: pytest.MonkeyPatch) -> None:
    app = production_app(new_secret())
    client = app.test_client()
    user = AuthBackend.state(app).issuer.issue_token(USER, [USER]).token
    with app.test_request_context("/api/catalog/whoami", headers=bearer_header(user)):
        credentials = BackstageAuth.state().auth("catalog").authenticate(user)
        state = BackstageAuth.state()
        service = state.auth("scaffolder").get_own_service_credentials()
        plugin = state.auth("scaffolder").get_plugin_request_token(
            on_behalf_of=service, target_plugin_id="catalog"
        )
        obo = state.auth("scaffolder").get_plugin_request_token(
            on_behalf_of=credentials, target_plugin_id="catalog"
        )
    state.verifier.clear()
    counts = Counts(monkeypatch)
    for token, subject, segments in (
        (user, USER, 3),
        (plugin.token, "plugin:scaffolder", 3),
        (obo.token, USER, 6),  # the plugin token, then the limited user token it carries
    ):
        counts.segments = 0
        response = client.get("/api/catalog/whoami", headers=bearer_header(token))
        assert response.status_code == 200, response.get_json()
        principal = response.get_json()["principal"]
        assert principal.get("userEntityRef", principal.get("subject")) == subject
        assert (counts.segments, counts.loads) == (segments, 0)
        # Repeated: the verification is cached, nothing is split again.
        assert client.get("/api/catalog/whoami", headers=bearer_header(token)).status_code == 200
        assert counts.segments == segments


def test_legacy_crit_and_kid_are_refused_whoever_signed() -> None:
    secret = new_secret()
    key = decode_backstage_secret(secret)
    manager = ServerTokenManager.from_config(
        {"backend": {"auth": {"keys": [{"secret": secret}]}}}, clock=lambda: NOW
    )
    app = production_app(secret, auth_backend=False)
    for header, reason in (
        (b'{"alg":"HS256","crit":["b64"],"b64":true}', "unsupported critical header parameter"),
        (b'{"alg":"HS256","b64":true}', "unsupported critical header parameter"),
        (b'{"alg":"HS256","crit":["exp"],"exp":1}', "malformed token (InvalidTokenError)"),
        (b'{"alg":"HS256","kid":5}', "malformed token (InvalidTokenError)"),
        (b'{"alg":"HS256","b64":false}', "malformed token (DecodeError)"),
    ):
        token = sign_hs256(header, GOOD_PAYLOAD, key)
        with pytest.raises(AuthenticationError) as info:
            manager.authenticate(token)
        assert reason in info.value.description
        for method in ("get", "post"):
            response = getattr(app.test_client(), method)(
                "/api/catalog/whoami", headers=bearer_header(token)
            )
            assert response.status_code == 401
            assert token not in response.get_data(as_text=True)


def test_a_payload_that_is_not_json_is_malformed_only_once_a_key_signed_it() -> None:
    key = b"s" * 32
    token = sign_hs256(b'{"alg":"HS256"}', b"[1]", key)
    signed = ServerTokenManager([key], clock=lambda: NOW)
    with pytest.raises(AuthenticationError, match=r"malformed token \(DecodeError\)"):
        signed.authenticate(token)
    unsigned = ServerTokenManager([b"u" * 32], clock=lambda: NOW)
    with pytest.raises(AuthenticationError, match="SignatureMismatch"):
        unsigned.authenticate(token)


# -- the registry ----------------------------------------------------------------


class Recorder:
    """A handler that records what it is offered and recognises one token."""

    def __init__(self, recognises: str, subject: str, log: list[str]) -> None:
        self.recognises = recognises
        self.subject = subject
        self.log = log

    def __call__(self, token: PeekedToken) -> VerifiedToken | None:
        self.log.append(f"{self.subject}:{token.token}")
        if token.token == self.recognises:
            return VerifiedToken(ServicePrincipal(self.subject))
        return None


def subject_of(app: Flask, token: str, method: str = "get") -> tuple[int, t.Any]:
    response = getattr(app.test_client(), method)(
        "/api/catalog/whoami", headers=bearer_header(token)
    )
    body = response.get_json()
    return response.status_code, body["principal"].get(
        "subject"
    ) if response.status_code == 200 else body


def test_first_party_handlers_run_after_user_tokens_and_before_external_access() -> None:
    app = production_app(new_secret())
    log: list[str] = []
    BackstageAuth.register_token_handler(
        Recorder(STATIC_TOKEN, "first-party", log), stage="first-party", app=app
    )
    # It sees the static token before its externalAccess entry does, and wins.
    assert subject_of(app, STATIC_TOKEN) == (200, "first-party")
    assert subject_of(app, STATIC_TOKEN + "x", "post")[0] == 401
    assert log == [f"first-party:{STATIC_TOKEN}", f"first-party:{STATIC_TOKEN}x"]
    # A user token is decided before it: the handler never sees one.
    user = AuthBackend.state(app).issuer.issue_token(USER, [USER]).token
    assert (
        app.test_client().get("/api/catalog/whoami", headers=bearer_header(user)).status_code == 200
    )
    assert len(log) == 2


def test_late_handlers_run_after_external_access_and_legacy_keys_in_order() -> None:
    secret = new_secret()
    app = production_app(secret, auth_backend=False)
    log: list[str] = []
    BackstageAuth.register_token_handler(Recorder("one-token", "one", log), app=app)
    BackstageAuth.register_token_handler(Recorder("two-token", "two", log), stage="late", app=app)
    assert subject_of(app, STATIC_TOKEN) == (200, "static")
    assert subject_of(app, service_token(secret)) == (200, "external:backstage-plugin")
    assert log == []  # recognised earlier: never offered to a late handler
    assert subject_of(app, "two-token") == (200, "two")
    assert log == ["one:two-token", "two:two-token"]
    log.clear()
    status, body = subject_of(app, "nobody-knows-this-token", "post")
    assert (status, body["error"]["message"]) == (401, "Illegal token")
    assert log == ["one:nobody-knows-this-token", "two:nobody-knows-this-token"]


def test_registered_handlers_get_the_token_split_and_fail_closed() -> None:
    secret = new_secret()
    app = production_app(secret, auth_backend=False)
    seen: list[PeekedToken] = []

    def failing(token: PeekedToken) -> VerifiedToken | None:
        seen.append(token)
        if token.header is not None and token.header.get("kid") == "revoked":
            raise AuthenticationError("Token revoked")
        raise RuntimeError("a handler bug")

    BackstageAuth.register_token_handler(failing, app=app)
    revoked = jwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256", headers={"kid": "revoked"})
    status, body = subject_of(app, revoked)
    assert (status, body["error"]["message"]) == (401, "Token revoked")
    assert seen[-1].header == {"alg": "HS256", "kid": "revoked", "typ": "JWT"}
    assert seen[-1].payload == {"sub": "x"}
    status, body = subject_of(app, "crashing-token", "post")
    assert (status, body["error"]["message"]) == (401, "Illegal token")  # never a 500
    assert "a handler bug" not in json.dumps(body)


def test_unknown_stage_is_refused() -> None:
    app = production_app(new_secret(), auth_backend=False)
    with pytest.raises(ValueError, match="Unknown token handler stage 'early'"):
        BackstageAuth.register_token_handler(
            lambda token: None,
            stage="early",
            app=app,
        )


def test_use_user_token_keys_trusts_exactly_that_key_set() -> None:
    app = production_app(new_secret(), auth_backend=False)
    source = RotatingKeySource(InMemoryPublicKeyStore(), clock=clock)
    issuer = UserTokenIssuer(source, issuer="http://127.0.0.1:1/api/auth", clock=clock)
    stranger = UserTokenIssuer(
        RotatingKeySource(InMemoryPublicKeyStore(), clock=clock),
        issuer="http://127.0.0.1:1/api/auth",
        clock=clock,
    )
    token = issuer.issue_token(USER, [USER]).token
    # The auth plugin's published keys cannot be fetched: refused, never accepted.
    assert subject_of(app, token)[0] == 401
    BackstageAuth.use_user_token_keys(
        LocalKeySet(source.list_public_keys, cooldown=0, clock=clock), app=app
    )
    response = app.test_client().get("/api/catalog/whoami", headers=bearer_header(token))
    assert response.status_code == 200
    assert response.get_json()["principal"]["userEntityRef"] == USER
    assert subject_of(app, stranger.issue_token(USER, [USER]).token, "post")[0] == 401
    # The user of a plugin token's obo claim is verified with the same keys.
    with app.test_request_context():
        state = BackstageAuth.state()
        credentials = state.auth("catalog").authenticate(token)
        obo = state.auth("scaffolder").get_plugin_request_token(
            on_behalf_of=credentials, target_plugin_id="catalog"
        )
    response = app.test_client().get("/api/catalog/whoami", headers=bearer_header(obo.token))
    assert response.status_code == 200
    assert response.get_json()["principal"]["actor"]["subject"] == "plugin:scaffolder"


def test_a_handler_claiming_none_credentials_opens_nothing() -> None:
    app = production_app(new_secret(), auth_backend=False)
    restrictions = {"catalog": AccessRestrictions()}

    def none(token: PeekedToken) -> VerifiedToken | None:
        return VerifiedToken(NonePrincipal(), restrictions=restrictions)

    BackstageAuth.register_token_handler(none, app=app)
    for method in ("get", "post"):
        status, body = subject_of(app, "a-token-nobody-else-knows", method)
        assert status == 401
        assert body["error"]["name"] == "AuthenticationError"
