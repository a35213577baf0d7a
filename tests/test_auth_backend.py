"""The auth backend: user tokens as Backstage issues them, and the guest provider."""

from __future__ import annotations

import base64
import copy
import json
import typing as t

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Blueprint, Flask, jsonify
from flask.testing import FlaskClient

from flask_backstage_auth import AuthenticationError, BackstageAuth, ConfigError, get_credentials
from flask_backstage_auth.auth.plugin.keys import InMemoryPublicKeyStore, RotatingKeySource
from flask_backstage_auth.auth.user.handler import (
    LIMITED_USER_TYP,
    USER_TYP,
    create_limited_user_token,
)
from flask_backstage_auth.auth_backend.extension import (
    EXTENSION_KEY,
    GUEST_NOT_ALLOWED_MESSAGE,
    AuthBackend,
    UserTokenIssuer,
    is_entity_ref,
)

BASE_URL = "http://localhost:7007"
GUEST = "user:development/guest"
CONFIG: dict[str, t.Any] = {
    "backend": {"baseUrl": BASE_URL},
    "auth": {"providers": {"guest": {}}},
}
REFRESH = "/api/auth/guest/refresh"
JWKS = "/api/auth/.well-known/jwks.json"
START = 1_700_000_000.0
#: PyJWT checks times against the real clock; our tokens are issued at START.
AT_START: t.Any = {"verify_exp": False, "verify_iat": False}


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_app(
    backstage: dict[str, t.Any] | None = None,
    *,
    clock: FakeClock | None = None,
    key_source: t.Any = None,
    **settings: t.Any,
) -> Flask:
    app = Flask("auth-backend-test", static_folder=None)
    app.config.update({"TESTING": True, **settings})
    app.config["BACKSTAGE_CONFIG"] = copy.deepcopy(CONFIG if backstage is None else backstage)
    BackstageAuth(app, clock=clock or FakeClock())
    AuthBackend(app, key_source=key_source)
    catalog = Blueprint("catalog", __name__, url_prefix="/api/catalog")

    @catalog.get("/<path:rest>")
    def whoami(rest: str) -> t.Any:
        return jsonify(get_credentials().to_dict())

    app.register_blueprint(catalog)
    return app


def with_guest(**guest: t.Any) -> dict[str, t.Any]:
    config = copy.deepcopy(CONFIG)
    config["auth"]["providers"]["guest"] = guest
    return config


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sign_in(client: FlaskClient, method: str = "GET") -> dict[str, t.Any]:
    response = client.open(REFRESH, method=method)
    assert response.status_code == 200, response.get_data(as_text=True)
    return t.cast(t.Dict[str, t.Any], response.get_json())


def guest_token(app: Flask) -> str:
    return t.cast(str, sign_in(app.test_client())["backstageIdentity"]["token"])


def b64_json(segment: str) -> t.Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def jwk_for(client: FlaskClient, kid: str) -> jwt.PyJWK:
    keys = client.get(JWKS).get_json()["keys"]
    matches = [key for key in keys if key["kid"] == kid]
    assert len(matches) == 1
    return jwt.PyJWK(matches[0])


def principal(client: FlaskClient, token: str) -> t.Any:
    response = client.get("/api/catalog/entities", headers=bearer(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["principal"]


# -- the guest provider ------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_guest_sign_in_gives_backstage_identity_that_opens_plugins(method: str) -> None:
    app = make_app()
    client = app.test_client()
    response = client.open(REFRESH, method=method)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    token = body["backstageIdentity"]["token"]
    assert body == {
        "profile": {},
        "providerInfo": {},
        "backstageIdentity": {
            "token": token,
            "expiresInSeconds": 3600,
            "identity": {
                "type": "user",
                "userEntityRef": GUEST,
                "ownershipEntityRefs": [GUEST],
            },
        },
    }
    assert principal(client, token) == {"type": "user", "userEntityRef": GUEST}


def test_catalog_refuses_anonymous_callers_while_auth_plugin_is_open() -> None:
    client = make_app().test_client()
    assert client.get("/api/catalog/entities").status_code == 401
    assert client.get(JWKS).status_code == 200
    assert client.get("/api/auth/unknown").status_code == 404


@pytest.mark.parametrize("omit", [None, True, False])
def test_token_header_and_claims_are_backstages(omit: bool | None) -> None:
    # auth.omitIdentityTokenOwnershipClaim: Backstage's default (since
    # plugin-auth-backend 0.28) is true, which leaves ent out.
    config = copy.deepcopy(CONFIG)
    if omit is not None:
        config["auth"]["omitIdentityTokenOwnershipClaim"] = omit
    app = make_app(config)
    client = app.test_client()
    token = sign_in(client)["backstageIdentity"]["token"]
    header_b64, payload_b64, _ = token.split(".")
    kid = AuthBackend.state(app).issuer.key_source.get_signing_key().kid
    # byte for byte: Backstage's header and claim order
    raw_header = base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4))
    assert (
        raw_header
        == json.dumps({"typ": USER_TYP, "alg": "ES256", "kid": kid}, separators=(",", ":")).encode()
    )
    claims = b64_json(payload_b64)
    if omit is False:
        assert list(claims) == ["iss", "sub", "ent", "aud", "iat", "exp", "uip"]
        assert claims["ent"] == [GUEST]
    else:
        assert list(claims) == ["iss", "sub", "aud", "iat", "exp", "uip"]
    assert claims["iss"] == f"{BASE_URL}/api/auth"
    assert claims["sub"] == GUEST
    assert claims["aud"] == "backstage"
    assert claims["iat"] == int(START)
    assert claims["exp"] - claims["iat"] == 3600
    assert isinstance(claims["uip"], str) and "=" not in claims["uip"]
    # and it verifies with the served key
    verified = jwt.decode(
        token, jwk_for(client, kid), algorithms=["ES256"], audience="backstage", options=AT_START
    )
    assert verified == claims


def test_configured_guest_identity() -> None:
    app = make_app(
        with_guest(
            userEntityRef="user:default/alice",
            ownershipEntityRefs=["user:default/alice", "group:default/team"],
        )
    )
    client = app.test_client()
    identity = sign_in(client)["backstageIdentity"]
    assert identity["identity"] == {
        "type": "user",
        "userEntityRef": "user:default/alice",
        "ownershipEntityRefs": ["user:default/alice", "group:default/team"],
    }
    claims = b64_json(identity["token"].split(".")[1])
    assert claims["sub"] == "user:default/alice"
    assert "ent" not in claims  # Backstage's default: ownership is served by /v1/userinfo
    userinfo = client.get("/api/auth/v1/userinfo", headers=bearer(identity["token"]))
    assert userinfo.get_json()["claims"]["ent"] == ["user:default/alice", "group:default/team"]
    assert principal(client, identity["token"])["userEntityRef"] == "user:default/alice"


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        (None, 3600),
        (1200, 1200),
        (60, 600),
        (10**6, 86_400),
        ({"minutes": 30}, 1800),
        ({"hours": 1, "minutes": 30}, 5400),
        ({"days": 2}, 86_400),
    ],
)
def test_token_expiration_from_config_is_clamped(configured: t.Any, expected: int) -> None:
    config = copy.deepcopy(CONFIG)
    if configured is not None:
        config["auth"]["backstageTokenExpiration"] = configured
    app = make_app(config)
    identity = sign_in(app.test_client())["backstageIdentity"]
    claims = b64_json(identity["token"].split(".")[1])
    assert claims["exp"] - claims["iat"] == expected
    assert identity["expiresInSeconds"] == expected


def test_expires_in_seconds_counts_from_now() -> None:
    clock = FakeClock(START + 0.75)
    identity = sign_in(make_app(clock=clock).test_client())["backstageIdentity"]
    claims = b64_json(identity["token"].split(".")[1])
    assert claims["iat"] == int(START)
    assert identity["expiresInSeconds"] == 3599  # Math.round(3599.25)


@pytest.mark.parametrize(
    ("auth", "path"),
    [
        ({"backstageTokenExpiration": "1h"}, "auth.backstageTokenExpiration"),
        ({"backstageTokenExpiration": True}, "auth.backstageTokenExpiration"),
        ({"backstageTokenExpiration": {"fortnights": 1}}, "auth.backstageTokenExpiration"),
        ({"backstageTokenExpiration": {"hours": "2"}}, "auth.backstageTokenExpiration"),
        ({"providers": {"guest": "on"}}, "auth.providers.guest"),
        ({"providers": {"guest": {"userEntityRef": 42}}}, "auth.providers.guest.userEntityRef"),
        (
            {"providers": {"guest": {"userEntityRef": "guest"}}},
            "auth.providers.guest.userEntityRef",
        ),
        (
            {"providers": {"guest": {"ownershipEntityRefs": "group:default/team"}}},
            "auth.providers.guest.ownershipEntityRefs",
        ),
        (
            {"providers": {"guest": {"ownershipEntityRefs": ["group:default/team", 1]}}},
            "auth.providers.guest.ownershipEntityRefs",
        ),
        (
            {"providers": {"guest": {"dangerouslyAllowOutsideDevelopment": "yes"}}},
            "auth.providers.guest.dangerouslyAllowOutsideDevelopment",
        ),
    ],
)
def test_invalid_config_is_refused_at_init(auth: dict[str, t.Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_app({"backend": {"baseUrl": BASE_URL}, "auth": auth})
    assert f"'{path}'" in str(info.value)


# -- production --------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_guest_is_refused_outside_development(method: str) -> None:
    app = make_app(TESTING=False, BACKSTAGE_AUTH_DEVELOPMENT=False)
    client = app.test_client()
    response = client.open(REFRESH, method=method)
    assert response.status_code == 403
    assert response.get_json()["error"] == {
        "name": "NotAllowedError",
        "message": GUEST_NOT_ALLOWED_MESSAGE,
    }
    assert GUEST_NOT_ALLOWED_MESSAGE == (
        "The guest provider cannot be used outside of a development environment unless"
        " 'auth.providers.guest.dangerouslyAllowOutsideDevelopment' is enabled"
    )
    assert client.get(JWKS).status_code == 200


def test_development_setting_decides_not_testing() -> None:
    refused = make_app(TESTING=True, BACKSTAGE_AUTH_DEVELOPMENT=False).test_client()
    assert refused.get(REFRESH).status_code == 403
    allowed = make_app(TESTING=False, BACKSTAGE_AUTH_DEVELOPMENT=True).test_client()
    assert allowed.get(REFRESH).status_code == 200


@pytest.mark.parametrize("flag", [True, "true"])
def test_guest_can_be_allowed_outside_development(flag: t.Any) -> None:
    app = make_app(
        with_guest(dangerouslyAllowOutsideDevelopment=flag),
        TESTING=False,
        BACKSTAGE_AUTH_DEVELOPMENT=False,
    )
    client = app.test_client()
    token = sign_in(client, "POST")["backstageIdentity"]["token"]
    assert principal(client, token) == {"type": "user", "userEntityRef": GUEST}


def test_explicit_false_flag_still_refuses_in_production() -> None:
    app = make_app(
        with_guest(dangerouslyAllowOutsideDevelopment=False),
        TESTING=False,
        BACKSTAGE_AUTH_DEVELOPMENT=False,
    )
    assert app.test_client().get(REFRESH).status_code == 403


# -- routes ------------------------------------------------------------------


def test_without_guest_config_only_the_jwks_is_served() -> None:
    app = make_app({"backend": {"baseUrl": BASE_URL}})
    client = app.test_client()
    for path in (REFRESH, "/api/auth/guest/start", "/api/auth/guest/handler/frame"):
        for method in ("GET", "POST"):
            assert client.open(path, method=method).status_code == 404, (path, method)
    response = client.get(JWKS)
    assert response.status_code == 200
    assert response.get_json() == {"keys": []}  # no token issued yet
    issued = AuthBackend.state(app).issuer.issue_token(GUEST, [GUEST])
    assert principal(client, issued.token)["userEntityRef"] == GUEST
    assert len(client.get(JWKS).get_json()["keys"]) == 1


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/api/auth/guest/start", "GET"),
        ("/api/auth/guest/handler/frame", "GET"),
        ("/api/auth/guest/handler/frame", "POST"),
    ],
)
def test_start_and_frame_are_not_implemented(path: str, method: str) -> None:
    response = make_app().test_client().open(path, method=method)
    assert response.status_code == 501
    assert response.get_json() == {
        "error": {"name": "NotImplementedError", "message": "Not implemented"},
        "request": {"method": method, "url": path.removeprefix("/api/auth")},
        "response": {"statusCode": 501},
    }


def test_jwks_lists_user_token_keys_not_plugin_keys() -> None:
    app = make_app()
    client = app.test_client()
    state = BackstageAuth.state(app)
    auth = state.auth("search")
    plugin_token = auth.get_plugin_request_token(
        on_behalf_of=auth.get_own_service_credentials(), target_plugin_id="catalog"
    ).token
    plugin_kid = jwt.get_unverified_header(plugin_token)["kid"]
    user_kid = jwt.get_unverified_header(guest_token(app))["kid"]
    kids = [key["kid"] for key in client.get(JWKS).get_json()["keys"]]
    assert user_kid in kids
    assert plugin_kid not in kids
    for key in client.get(JWKS).get_json()["keys"]:
        assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}  # no private "d"


# -- limited tokens and plugin tokens ------------------------------------------


def test_limited_token_verifies_with_the_served_jwks() -> None:
    app = make_app()
    client = app.test_client()
    token = guest_token(app)
    limited, expires_at = create_limited_user_token(token)
    full_claims = b64_json(token.split(".")[1])
    assert limited != token
    assert limited.split(".")[2] == full_claims["uip"]
    assert expires_at == full_claims["exp"]
    header = jwt.get_unverified_header(limited)
    assert header["typ"] == LIMITED_USER_TYP
    key = jwk_for(client, header["kid"])
    claims = jwt.decode(limited, key, algorithms=["ES256"], options=AT_START)
    assert claims == {
        "sub": GUEST,
        "iat": full_claims["iat"],
        "exp": full_claims["exp"],
    }
    # a uip from another key does not verify
    other = ec.generate_private_key(ec.SECP256R1())
    other_key = jwt.PyJWK(json.loads(jwt.algorithms.ECAlgorithm.to_jwk(other.public_key())))
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(limited, other_key, algorithms=["ES256"], options=AT_START)


def test_limited_token_only_where_limited_access_is_allowed() -> None:
    app = make_app()
    token = guest_token(app)
    limited, _ = create_limited_user_token(token)
    catalog = BackstageAuth.state(app).auth("catalog")
    with pytest.raises(AuthenticationError) as info:
        catalog.authenticate(limited)
    assert info.value.code == 401
    assert info.value.message == "Illegal limited user token"
    credentials = catalog.authenticate(limited, allow_limited_access=True)
    assert credentials.to_dict() == {"principal": {"type": "user", "userEntityRef": GUEST}}
    # as a bearer token on an ordinary route: refused
    response = app.test_client().get("/api/catalog/entities", headers=bearer(limited))
    assert response.status_code == 401
    assert response.get_json()["error"]["message"] == "Illegal limited user token"


def test_plugin_request_token_on_behalf_of_the_guest() -> None:
    app = make_app()
    client = app.test_client()
    token = guest_token(app)
    search = BackstageAuth.state(app).auth("search")
    credentials = search.authenticate(token)
    assert credentials.to_dict() == {"principal": {"type": "user", "userEntityRef": GUEST}}
    plugin_token = search.get_plugin_request_token(
        on_behalf_of=credentials, target_plugin_id="catalog"
    ).token
    assert principal(client, plugin_token) == {
        "type": "user",
        "userEntityRef": GUEST,
        "actor": {"type": "service", "subject": "plugin:search"},
    }
    claims = jwt.decode(plugin_token, options={"verify_signature": False})
    assert claims["obo"] == create_limited_user_token(token)[0]


# -- tokens that must be refused -------------------------------------------------


def signing_key(app: Flask) -> t.Any:
    return AuthBackend.state(app).issuer.key_source.get_signing_key()


def forge(
    app: Flask,
    *,
    header: dict[str, t.Any] | None = None,
    drop: tuple[str, ...] = (),
    private_key: t.Any = None,
    **claims: t.Any,
) -> str:
    """A user token signed with the app's key, unless told otherwise."""
    key = signing_key(app)
    iat = int(START)
    payload: dict[str, t.Any] = {
        "iss": f"{BASE_URL}/api/auth",
        "sub": GUEST,
        "ent": [GUEST],
        "aud": "backstage",
        "iat": iat,
        "exp": iat + 3600,
        **claims,
    }
    for name in drop:
        del payload[name]
    headers = {"typ": USER_TYP, "alg": "ES256", "kid": key.kid, **(header or {})}
    return jwt.encode(
        payload,
        private_key if private_key is not None else key.private_key,
        algorithm="ES256",
        headers=headers,
        sort_headers=False,
    )


def assert_refused(client: FlaskClient, token: str, message: str | None = None) -> None:
    response = client.get("/api/catalog/entities", headers=bearer(token))
    assert response.status_code == 401
    body = response.get_data(as_text=True)
    assert token not in body
    for segment in token.split("."):
        if len(segment) > 16:
            assert segment not in body
    error = response.get_json()["error"]
    assert error["name"] == "AuthenticationError"
    if message is not None:
        assert error["message"] == message


def test_forged_control_token_is_accepted() -> None:
    # The forging helper makes valid tokens: each refusal below is its mutation's.
    app = make_app()
    assert principal(app.test_client(), forge(app)) == {"type": "user", "userEntityRef": GUEST}


def _tampered(app: Flask) -> str:
    token = forge(app)
    header, _, signature = token.split(".")
    payload = b64_json(token.split(".")[1])
    payload["sub"] = "user:default/admin"
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return f"{header}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}.{signature}"


def _alg_none(app: Flask) -> str:
    header = {"typ": USER_TYP, "alg": "none", "kid": signing_key(app).kid}
    payload = b64_json(forge(app).split(".")[1])

    def part(value: t.Any) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part(header)}.{part(payload)}."


def _plugin_key(app: Flask) -> str:
    key = BackstageAuth.state(app).key_source.get_signing_key()
    return forge(app, header={"kid": key.kid}, private_key=key.private_key)


FORGERIES: dict[str, t.Callable[[Flask], str]] = {
    "future iat": lambda app: forge(app, iat=int(START) + 120, exp=int(START) + 3600),
    "lifetime over a day": lambda app: forge(app, exp=int(START) + 2 * 86_400),
    "tampered": _tampered,
    "another key, same kid": lambda app: forge(
        app, private_key=ec.generate_private_key(ec.SECP256R1())
    ),
    "unknown kid": lambda app: forge(
        app, header={"kid": "unknown"}, private_key=ec.generate_private_key(ec.SECP256R1())
    ),
    "unknown kid, our key": lambda app: forge(app, header={"kid": "unknown"}),
    "alg none": _alg_none,
    "wrong typ": lambda app: forge(app, header={"typ": "JWT"}),
    "missing sub": lambda app: forge(app, drop=("sub",)),
    "missing iat": lambda app: forge(app, drop=("iat",)),
    "missing exp": lambda app: forge(app, drop=("exp",)),
    "signed with a plugin key": _plugin_key,
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_invalid_user_tokens_are_refused(name: str) -> None:
    app = make_app()
    token = FORGERIES[name](app)
    assert_refused(app.test_client(), token)
    with pytest.raises(AuthenticationError):
        BackstageAuth.state(app).auth("catalog").authenticate(token, allow_limited_access=True)


def test_refusal_messages() -> None:
    app = make_app()
    client = app.test_client()
    assert_refused(client, forge(app, drop=("sub",)), "No user sub found in token")
    assert_refused(client, forge(app, drop=("exp",)), "Failed user token verification")
    assert_refused(client, forge(app, header={"typ": "JWT"}), "Illegal token")


def test_expired_tokens_are_refused() -> None:
    clock = FakeClock()
    app = make_app(clock=clock)
    client = app.test_client()
    token = guest_token(app)
    limited, _ = create_limited_user_token(token)
    catalog = BackstageAuth.state(app).auth("catalog")
    assert principal(client, token)["userEntityRef"] == GUEST
    assert catalog.authenticate(limited, allow_limited_access=True).principal.type == "user"
    clock.now = START + 3599
    assert principal(client, token)["userEntityRef"] == GUEST
    clock.now = START + 3600
    assert_refused(client, token, "Failed user token verification")
    with pytest.raises(AuthenticationError):
        catalog.authenticate(limited, allow_limited_access=True)


def test_token_from_another_auth_backend_is_refused() -> None:
    ours = make_app()
    theirs = make_app()
    token = guest_token(theirs)
    assert principal(theirs.test_client(), token)["userEntityRef"] == GUEST
    assert_refused(ours.test_client(), token, "Failed user token verification")
    limited, _ = create_limited_user_token(token)
    with pytest.raises(AuthenticationError):
        BackstageAuth.state(ours).auth("catalog").authenticate(limited, allow_limited_access=True)


def test_instances_sharing_a_key_source_accept_each_others_tokens() -> None:
    clock = FakeClock()
    shared = RotatingKeySource(InMemoryPublicKeyStore(), clock=clock)
    one = make_app(clock=clock, key_source=shared)
    two = make_app(clock=clock, key_source=shared)
    token = guest_token(one)
    assert principal(two.test_client(), token)["userEntityRef"] == GUEST
    kid = jwt.get_unverified_header(token)["kid"]
    assert jwk_for(two.test_client(), kid).key_id == kid


def test_rotated_keys_are_picked_up_at_once() -> None:
    clock = FakeClock()
    config = copy.deepcopy(CONFIG)
    config["auth"]["backstageTokenExpiration"] = 7200
    app = make_app(config, clock=clock)
    client = app.test_client()
    first = guest_token(app)
    clock.now = START + 7100
    assert principal(client, first)["userEntityRef"] == GUEST  # keys loaded now
    clock.now = START + 7300  # the key rotates once a token lifetime (here 2 h) is over
    second = guest_token(app)  # signed with a new key
    first_kid = jwt.get_unverified_header(first)["kid"]
    second_kid = jwt.get_unverified_header(second)["kid"]
    assert first_kid != second_kid
    assert principal(client, second)["userEntityRef"] == GUEST  # the new key, at once
    kids = {key["kid"] for key in client.get(JWKS).get_json()["keys"]}
    assert kids == {first_kid, second_kid}


# -- the issuer on its own ---------------------------------------------------------


def make_issuer(**options: t.Any) -> UserTokenIssuer:
    clock = FakeClock()
    source = RotatingKeySource(InMemoryPublicKeyStore(), clock=clock)
    return UserTokenIssuer(source, issuer=f"{BASE_URL}/api/auth", clock=clock, **options)


def test_issuer_custom_claims_come_first_and_never_override() -> None:
    issuer = make_issuer(expiration=900)
    issued = issuer.issue_token(
        "user:default/alice",
        ["group:default/team"],
        {"custom": {"a": 1}, "sub": "user:default/mallory", "aud": "other"},
    )
    claims = b64_json(issued.token.split(".")[1])
    assert list(claims) == ["custom", "sub", "aud", "iss", "ent", "iat", "exp", "uip"]
    assert claims["custom"] == {"a": 1}
    assert claims["sub"] == "user:default/alice"
    assert claims["aud"] == "backstage"
    assert claims["ent"] == ["group:default/team"]
    assert claims["exp"] == int(START) + 900
    assert issued.expires_at == claims["exp"]
    limited, _ = create_limited_user_token(issued.token)
    public = jwt.PyJWK(issuer.key_source.list_public_keys()[0])
    assert (
        jwt.decode(limited, public, algorithms=["ES256"], options=AT_START)["sub"]
        == "user:default/alice"
    )


@pytest.mark.parametrize(
    "sub",
    ["guest", "", "user:", ":default/guest", "user:/guest", "default/guest", "user:default/"],
)
def test_issuer_refuses_subjects_that_are_not_entity_refs(sub: str) -> None:
    assert not is_entity_ref(sub)
    with pytest.raises(ValueError, match="not a valid EntityRef"):
        make_issuer().issue_token(sub, [])


@pytest.mark.parametrize("sub", ["user:default/guest", "user:guest", "user:a/b/c"])
def test_issuer_accepts_what_backstage_parses(sub: str) -> None:
    assert is_entity_ref(sub)
    assert make_issuer().issue_token(sub, [sub]).token.count(".") == 2


def test_issuer_refuses_oversized_tokens() -> None:
    issuer = make_issuer()
    many = [f"group:default/team-{i:05d}" for i in range(1500)]
    with pytest.raises(ValueError, match="excessively large"):
        issuer.issue_token(GUEST, many)
    assert len(issuer.issue_token(GUEST, many[:100]).token) <= 32_768


@pytest.mark.parametrize("ent", ["group:default/team", [GUEST, 1]])
def test_issuer_refuses_bad_ownership(ent: t.Any) -> None:
    with pytest.raises(ValueError, match="ent"):
        make_issuer().issue_token(GUEST, ent)


@pytest.mark.parametrize("expiration", [0, -1, 86_401, 1.5, True, float("inf")])
def test_issuer_refuses_bad_expiration(expiration: t.Any) -> None:
    with pytest.raises(ValueError, match="expiration"):
        make_issuer(expiration=expiration)


# -- the extension -----------------------------------------------------------------


def test_extension_needs_backstage_auth_first() -> None:
    app = Flask("no-auth")
    app.config["BACKSTAGE_CONFIG"] = copy.deepcopy(CONFIG)
    with pytest.raises(RuntimeError, match="BackstageAuth"):
        AuthBackend(app)
    assert EXTENSION_KEY not in app.extensions
    assert "auth" not in app.blueprints


def test_init_app_pattern_and_double_registration() -> None:
    app = Flask("init-app")
    app.config.update(TESTING=True, BACKSTAGE_CONFIG=copy.deepcopy(CONFIG))
    BackstageAuth(app)
    backend = AuthBackend()
    assert EXTENSION_KEY not in app.extensions
    backend.init_app(app)
    assert AuthBackend.state(app) is app.extensions[EXTENSION_KEY]
    assert app.blueprints["auth"].url_prefix == "/api/auth"
    with pytest.raises(RuntimeError, match="already registered"):
        backend.init_app(app)
    with pytest.raises(RuntimeError, match="not registered"):
        AuthBackend.state(Flask("other"))
