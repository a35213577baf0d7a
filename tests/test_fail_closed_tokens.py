"""Token branches that grant access or fail closed, through HTTP in production mode.

User tokens from before tokens had a ``typ``, the limited form of a user
token in its rarer shapes, the ``jwks`` handler's refusal of Backstage's own
token kinds, ``crit`` on legacy tokens. Real keys and real tokens: user tokens
from :class:`AuthBackend`'s issuer (or signed with its key), legacy tokens with
the configured secret, ``jwks`` tokens with a key served over HTTP.
"""

from __future__ import annotations

import base64
import json
import time
import typing as t

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Blueprint, Flask, Response, jsonify
from flask.testing import FlaskClient
from jwt.algorithms import ECAlgorithm, HMACAlgorithm

from flask_backstage_auth import (
    AuthenticationError,
    BackstageAuth,
    Credentials,
    ServicePrincipal,
    UserPrincipal,
    get_credentials,
)
from flask_backstage_auth.auth.user.handler import (
    LIMITED_USER_TYP,
    USER_TYP,
    create_limited_user_token,
    limited_signing_input,
)
from flask_backstage_auth.auth_backend.extension import AuthBackend
from flask_backstage_auth.router.policies import add_auth_policy
from tests.conftest import LiveServer, new_secret

BASE_URL = "http://localhost:7007"
JANE = "user:default/jane"
LEGACY_SECRET = base64.b64encode(b"an external legacy secret, 32+ bytes long").decode()


def make_app(external_access: list[dict[str, t.Any]] | None = None) -> Flask:
    """BackstageAuth + AuthBackend in production mode, with ``catalog`` and ``search``."""
    app = Flask("fail-closed-tokens", static_folder=None)
    app.config.update(
        BACKSTAGE_AUTH_DEVELOPMENT=False,
        BACKSTAGE_AUTH_JWKS_TIMEOUT=2,
        BACKSTAGE_CONFIG={
            "backend": {
                "baseUrl": BASE_URL,
                "auth": {
                    "keys": [{"secret": new_secret()}],
                    "externalAccess": external_access or [],
                },
            }
        },
    )
    BackstageAuth(app)
    AuthBackend(app)
    catalog = Blueprint("catalog", __name__, url_prefix="/api/catalog")
    add_auth_policy(catalog, path="/docs/call", allow="user-cookie")

    @catalog.route("/entities", methods=["GET", "POST"])
    def entities() -> Response:
        return jsonify(get_credentials().to_dict())

    @catalog.get("/docs/call/<target>")
    def call(target: str) -> Response:
        """A plugin token for ``target`` on behalf of the caller (here: a cookie user)."""
        token = (
            BackstageAuth.state()
            .auth("catalog")
            .get_plugin_request_token(on_behalf_of=get_credentials(), target_plugin_id=target)
            .token
        )
        return jsonify(token=token)

    search = Blueprint("search", __name__, url_prefix="/api/search")

    @search.get("/query")
    def query() -> Response:
        return jsonify(get_credentials().to_dict())

    app.register_blueprint(catalog)
    app.register_blueprint(search)
    return app


@pytest.fixture
def app() -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_message(response: t.Any) -> str:
    return t.cast(str, response.get_json()["error"]["message"])


def user_token(app: Flask) -> str:
    return AuthBackend.state(app).issuer.issue_token(JANE, [JANE]).token


def sign_as_auth_backend(app: Flask, payload: dict[str, t.Any], headers: dict[str, t.Any]) -> str:
    """``payload`` signed with the auth backend's real signing key."""
    key = AuthBackend.state(app).issuer.key_source.get_signing_key()
    return jwt.encode(payload, key.private_key, algorithm="ES256", headers=headers)


def untyped_user_token(app: Flask, **claims: t.Any) -> str:
    """A user token as issued before tokens had a ``typ``: ``aud: backstage``, no ``iat``.

    ``claims`` override the payload; a ``None`` value removes the claim.
    """
    key = AuthBackend.state(app).issuer.key_source.get_signing_key()
    now = int(time.time())
    payload: dict[str, t.Any] = {"sub": JANE, "ent": [JANE], "aud": "backstage", "exp": now + 600}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    # PyJWT writes "typ": "JWT" unless given an empty one, which it then drops.
    return sign_as_auth_backend(app, payload, {"kid": key.kid, "typ": ""})


# -- user tokens without typ ------------------------------------------------------


class TestUserTokensWithoutTyp:
    def test_the_token_has_no_typ_and_no_iat(self, app: Flask) -> None:
        token = untyped_user_token(app)
        assert "typ" not in jwt.get_unverified_header(token)
        assert "iat" not in jwt.decode(token, options={"verify_signature": False})

    def test_accepted_as_the_user(self, app: Flask, client: FlaskClient) -> None:
        response = client.get("/api/catalog/entities", headers=bearer(untyped_user_token(app)))
        assert response.status_code == 200
        assert response.get_json() == {"principal": {"type": "user", "userEntityRef": JANE}}

    @pytest.mark.parametrize(
        "claims",
        [
            pytest.param({"exp": None}, id="no-exp"),
            pytest.param({"exp": 1_000_000_000}, id="expired"),
            pytest.param({"exp": int(time.time()) + 2 * 86_400}, id="longer-than-a-day"),
            pytest.param({"iat": int(time.time()) + 3600}, id="issued-in-the-future"),
            pytest.param({"sub": ""}, id="empty-sub"),
            pytest.param({"sub": None}, id="no-sub"),
        ],
    )
    def test_refused_when_a_claim_is_wrong(
        self, app: Flask, client: FlaskClient, claims: dict[str, t.Any]
    ) -> None:
        token = untyped_user_token(app, **claims)
        for method in ("GET", "POST"):
            response = client.open("/api/catalog/entities", method=method, headers=bearer(token))
            assert response.status_code == 401, (method, response.get_json())
            assert token not in response.get_data(as_text=True)

    @pytest.mark.parametrize(
        "aud",
        [
            pytest.param(["backstage"], id="aud-as-a-list"),
            pytest.param("Backstage", id="aud-in-another-case"),
            pytest.param("catalog", id="another-aud"),
            pytest.param(None, id="no-aud"),
        ],
    )
    def test_without_aud_backstage_it_is_no_user_token(
        self, app: Flask, client: FlaskClient, aud: t.Any
    ) -> None:
        # Only ``aud == "backstage"`` (compared strictly, as Backstage's jose)
        # marks an untyped token as a user's; anything else is nobody's token.
        response = client.get(
            "/api/catalog/entities", headers=bearer(untyped_user_token(app, aud=aud))
        )
        assert response.status_code == 401
        assert error_message(response) == "Illegal token"

    def test_typ_jwt_is_no_user_token(self, app: Flask, client: FlaskClient) -> None:
        key = AuthBackend.state(app).issuer.key_source.get_signing_key()
        payload = jwt.decode(untyped_user_token(app), options={"verify_signature": False})
        token = sign_as_auth_backend(app, payload, {"kid": key.kid, "typ": "JWT"})
        response = client.get("/api/catalog/entities", headers=bearer(token))
        assert response.status_code == 401
        assert error_message(response) == "Illegal token"

    def test_signed_with_another_key(self, app: Flask, client: FlaskClient) -> None:
        kid = AuthBackend.state(app).issuer.key_source.get_signing_key().kid
        payload = jwt.decode(untyped_user_token(app), options={"verify_signature": False})
        forged = jwt.encode(
            payload,
            ec.generate_private_key(ec.SECP256R1()),
            algorithm="ES256",
            headers={"kid": kid},
        )
        assert "typ" in jwt.get_unverified_header(forged)  # PyJWT's "JWT": make it untyped
        header = base64.urlsafe_b64encode(json.dumps({"alg": "ES256", "kid": kid}).encode()).rstrip(
            b"="
        )
        untyped_forged = header.decode() + forged[forged.index(".") :]
        response = client.get("/api/catalog/entities", headers=bearer(untyped_forged))
        assert response.status_code == 401
        assert error_message(response) == "Failed user token verification"


# -- the limited form of a user token -----------------------------------------------


class TestLimitedTokens:
    def test_a_limited_token_is_passed_on_as_it_is(self, app: Flask, client: FlaskClient) -> None:
        limited, _ = create_limited_user_token(user_token(app))
        browser = app.test_client()
        browser.set_cookie("backstage-auth", limited)
        response = browser.get("/api/catalog/docs/call/search")
        assert response.status_code == 200, response.get_json()
        plugin_token = response.get_json()["token"]
        claims = jwt.decode(plugin_token, options={"verify_signature": False})
        assert claims["obo"] == limited  # never widened, never re-made
        # and the target plugin accepts it as the user, acting through catalog
        called = client.get("/api/search/query", headers=bearer(plugin_token))
        assert called.status_code == 200
        assert called.get_json()["principal"] == {
            "type": "user",
            "userEntityRef": JANE,
            "actor": {"type": "service", "subject": "plugin:catalog"},
        }

    def test_a_limited_token_is_refused_where_limited_access_is_not_allowed(
        self, app: Flask, client: FlaskClient
    ) -> None:
        limited, _ = create_limited_user_token(user_token(app))
        for path in ("/api/catalog/entities", "/api/search/query"):
            response = client.get(path, headers=bearer(limited))
            assert response.status_code == 401
            assert error_message(response) == "Illegal limited user token"

    @staticmethod
    def _user_token_without_kid(app: Flask, uip_key: ec.EllipticCurvePrivateKey) -> str:
        """A full user token with no ``kid``; its ``uip`` signed with ``uip_key``."""
        key = AuthBackend.state(app).issuer.key_source.get_signing_key()
        now = int(time.time())
        header = {"typ": USER_TYP, "alg": "ES256"}
        claims = {"sub": JANE, "iat": now, "exp": now + 600}
        uip = ECAlgorithm(ECAlgorithm.SHA256).sign(limited_signing_input(header, claims), uip_key)
        payload = {
            **claims,
            "ent": [JANE],
            "aud": "backstage",
            "uip": base64.urlsafe_b64encode(uip).rstrip(b"=").decode(),
        }
        return jwt.encode(payload, key.private_key, algorithm="ES256", headers=header)

    def test_a_user_token_without_kid(self, app: Flask, client: FlaskClient) -> None:
        """Its limited form has no ``kid`` either (as Backstage's), and verifies."""
        key = AuthBackend.state(app).issuer.key_source.get_signing_key()
        full = self._user_token_without_kid(app, key.private_key)
        assert "kid" not in jwt.get_unverified_header(full)
        assert client.get("/api/catalog/entities", headers=bearer(full)).status_code == 200
        limited, expires_at = create_limited_user_token(full)
        assert jwt.get_unverified_header(limited) == {"typ": LIMITED_USER_TYP, "alg": "ES256"}
        assert expires_at == jwt.decode(full, options={"verify_signature": False})["exp"]
        browser = app.test_client()
        browser.set_cookie("backstage-auth", limited)
        response = browser.get("/api/catalog/docs/call/search")
        assert response.status_code == 200
        plugin_token = response.get_json()["token"]
        assert jwt.decode(plugin_token, options={"verify_signature": False})["obo"] == limited
        called = client.get("/api/search/query", headers=bearer(plugin_token))
        assert called.status_code == 200
        assert called.get_json()["principal"]["userEntityRef"] == JANE

    def test_a_limited_token_whose_uip_another_key_signed(
        self, app: Flask, client: FlaskClient
    ) -> None:
        full = self._user_token_without_kid(app, ec.generate_private_key(ec.SECP256R1()))
        # The full token itself is genuine; only its limited form is forged.
        assert client.get("/api/catalog/entities", headers=bearer(full)).status_code == 200
        limited, _ = create_limited_user_token(full)
        browser = app.test_client()
        browser.set_cookie("backstage-auth", limited)
        response = browser.get("/api/catalog/docs/call/search")
        assert response.status_code == 401
        assert error_message(response) == "Failed user token verification"

    @pytest.mark.parametrize("obo", ["forged", "expired", "full-of-another-key", "legacy", "junk"])
    def test_a_plugin_token_whose_obo_does_not_verify(
        self, app: Flask, client: FlaskClient, obo: str
    ) -> None:
        """The plugin token is genuine (catalog's own key); the user in it is not."""
        state = BackstageAuth.state(app)
        now = int(time.time())
        kid = AuthBackend.state(app).issuer.key_source.get_signing_key().kid
        payload = {"sub": JANE, "ent": [JANE], "aud": "backstage", "iat": now - 7200}
        tokens = {
            "forged": lambda: create_limited_user_token(
                self._user_token_without_kid(app, ec.generate_private_key(ec.SECP256R1()))
            )[0],
            "expired": lambda: sign_as_auth_backend(
                app, {**payload, "exp": now - 3600}, {"typ": USER_TYP, "kid": kid}
            ),
            "full-of-another-key": lambda: jwt.encode(
                {**payload, "iat": now, "exp": now + 600},
                ec.generate_private_key(ec.SECP256R1()),
                algorithm="ES256",
                headers={"typ": USER_TYP, "kid": kid},
            ),
            "legacy": lambda: state.token_manager.get_token().token,
            "junk": lambda: "not-a-token",
        }
        plugin_token = state.plugin_tokens.issue_token(
            plugin_id="catalog", target_plugin_id="search", obo_token=tokens[obo]()
        )
        response = client.get("/api/search/query", headers=bearer(plugin_token))
        assert response.status_code == 401
        assert error_message(response) == "Invalid user token in plugin token obo claim"
        # the positive control: the same plugin token, a genuine limited token
        genuine = state.plugin_tokens.issue_token(
            plugin_id="catalog",
            target_plugin_id="search",
            obo_token=create_limited_user_token(user_token(app))[0],
        )
        assert client.get("/api/search/query", headers=bearer(genuine)).status_code == 200

    def test_the_cookie_endpoint_issues_on_get_only(self, app: Flask, client: FlaskClient) -> None:
        path = "/api/catalog/.backstage/auth/v1/cookie"
        token = user_token(app)
        issued = client.get(path, headers=bearer(token))
        assert issued.status_code == 200
        assert "backstage-auth=" in issued.headers.get("Set-Cookie", "")
        for method in ("POST", "PUT", "PATCH"):
            response = client.open(path, method=method, headers=bearer(token))
            assert response.status_code == 404, method
            assert "Set-Cookie" not in response.headers

    @pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "ey.ey.ey"])
    def test_no_limited_form_of_a_malformed_token(self, token: str) -> None:
        with pytest.raises(AuthenticationError, match="invalid token type"):
            create_limited_user_token(token)


class TestLimitedTokensFromHandMadeCredentials:
    """``AuthService.get_limited_user_token`` and ``get_plugin_request_token`` refuse
    credentials they cannot derive a limited token from, instead of guessing."""

    def test_service_credentials(self, app: Flask) -> None:
        auth = BackstageAuth.state(app).auth("catalog")
        with pytest.raises(AuthenticationError, match="non-user principal"):
            auth.get_limited_user_token(Credentials(ServicePrincipal("plugin:search")))

    def test_user_credentials_without_a_token(self, app: Flask) -> None:
        auth = BackstageAuth.state(app).auth("catalog")
        credentials = Credentials(UserPrincipal(JANE))
        with pytest.raises(AuthenticationError, match="unexpectedly missing token"):
            auth.get_limited_user_token(credentials)
        with pytest.raises(AuthenticationError, match="unexpectedly missing token"):
            auth.get_plugin_request_token(on_behalf_of=credentials, target_plugin_id="search")

    def _without_exp(self, app: Flask) -> str:
        payload = jwt.decode(user_token(app), options={"verify_signature": False})
        del payload["exp"]
        key = AuthBackend.state(app).issuer.key_source.get_signing_key()
        return sign_as_auth_backend(app, payload, {"typ": USER_TYP, "kid": key.kid})

    def test_no_expiry_anywhere(self, app: Flask) -> None:
        auth = BackstageAuth.state(app).auth("catalog")
        credentials = Credentials(UserPrincipal(JANE), token=self._without_exp(app))
        with pytest.raises(AuthenticationError, match="missing expiration"):
            auth.get_limited_user_token(credentials)

    def test_the_credentials_expiry_when_the_token_has_none(self, app: Flask) -> None:
        auth = BackstageAuth.state(app).auth("catalog")
        expires_at = time.time() + 300
        credentials = Credentials(
            UserPrincipal(JANE), token=self._without_exp(app), expires_at=expires_at
        )
        limited = auth.get_limited_user_token(credentials)
        assert limited.expires_at == expires_at
        assert jwt.get_unverified_header(limited.token)["typ"] == LIMITED_USER_TYP


# -- the jwks handler never takes Backstage's own token kinds -----------------------

JWKS_KEY = ec.generate_private_key(ec.SECP256R1())


def _jwks_app(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
    jwk = json.loads(ECAlgorithm.to_jwk(JWKS_KEY.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "ext-1", "alg": "ES256", "use": "sig"}]}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


@pytest.fixture(scope="module")
def jwks_url() -> t.Iterator[str]:
    with LiveServer(_jwks_app) as server:
        yield f"{server.url}/.well-known/jwks.json"


def external_token(typ: str) -> str:
    now = int(time.time())
    payload = {"sub": "deployer", "iat": now, "exp": now + 600, "aud": "backstage"}
    return jwt.encode(payload, JWKS_KEY, algorithm="ES256", headers={"kid": "ext-1", "typ": typ})


class TestJwksRefusesBackstageTokenKinds:
    @pytest.fixture
    def jwks_client(self, jwks_url: str) -> FlaskClient:
        return make_app([{"type": "jwks", "options": {"url": jwks_url}}]).test_client()

    def test_a_plain_jwt_is_an_external_caller(self, jwks_client: FlaskClient) -> None:
        response = jwks_client.get("/api/catalog/entities", headers=bearer(external_token("JWT")))
        assert response.status_code == 200
        assert response.get_json() == {
            "principal": {"type": "service", "subject": "external:deployer"}
        }

    @pytest.mark.parametrize(
        "typ",
        [
            # Kinds no first-party handler takes, so only the jwks handler's own
            # refusal stands between them and an external identity.
            "vnd.backstage.service",
            "vnd.backstage.user.v2",
            "vnd.backstage.plugin+jwt",
            "vnd.backstage.limited-user2",
            "vnd.backstage.",
        ],
    )
    def test_any_backstage_typ_is_refused(self, jwks_client: FlaskClient, typ: str) -> None:
        token = external_token(typ)
        for path in ("/api/catalog/entities", "/api/search/query"):
            response = jwks_client.get(path, headers=bearer(token))
            assert response.status_code == 401, (typ, path)
            assert error_message(response) == "Illegal token"


# -- crit on legacy tokens ---------------------------------------------------------


def _b64url_json(value: dict[str, t.Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def legacy_token(key: bytes, header: dict[str, t.Any] | None = None) -> str:
    """A legacy token signed with ``key``, its header exactly ``header`` (PyJWT's
    ``encode`` would drop ``"b64": true``, so the JWS is put together here and
    signed by PyJWT's HS256)."""
    payload = {"sub": "backstage-server", "exp": int(time.time()) + 600}
    signing_input = f"{_b64url_json(header or {'alg': 'HS256'})}.{_b64url_json(payload)}"
    signature = HMACAlgorithm(HMACAlgorithm.SHA256).sign(signing_input.encode(), key)
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


#: Headers PyJWT accepts (``b64`` is an extension it knows) and a legacy token never has.
CRITICAL_HEADERS = [
    pytest.param({"alg": "HS256", "b64": True, "crit": ["b64"]}, id="crit-b64"),
    pytest.param({"alg": "HS256", "typ": "JWT", "b64": True, "crit": ["b64"]}, id="crit-typ-jwt"),
    pytest.param({"alg": "HS256", "b64": True}, id="b64-without-crit"),
]


class TestCritOnLegacyTokens:
    """A legacy token carries no critical header parameter at all, even one PyJWT
    knows and lets through."""

    @pytest.mark.parametrize("header", CRITICAL_HEADERS)
    def test_the_token_managers_keys(
        self, app: Flask, client: FlaskClient, header: dict[str, t.Any]
    ) -> None:
        key = BackstageAuth.state(app).token_manager.verification_keys[0]
        accepted = client.get("/api/catalog/entities", headers=bearer(legacy_token(key)))
        assert accepted.status_code == 200
        assert accepted.get_json()["principal"]["type"] == "service"
        crit = legacy_token(key, header)
        jwt.decode(crit, key, algorithms=["HS256"])  # PyJWT itself lets it through
        for method in ("GET", "POST"):
            response = client.open("/api/catalog/entities", method=method, headers=bearer(crit))
            assert response.status_code == 401
            assert "unsupported critical header parameter" in error_message(response)
        with pytest.raises(AuthenticationError, match="unsupported critical header"):
            BackstageAuth.state(app).token_manager.authenticate(crit)

    @pytest.mark.parametrize("header", CRITICAL_HEADERS)
    def test_an_external_legacy_entry(self, header: dict[str, t.Any]) -> None:
        client = make_app(
            [{"type": "legacy", "options": {"secret": LEGACY_SECRET, "subject": "old-ci"}}]
        ).test_client()
        key = base64.b64decode(LEGACY_SECRET)
        accepted = client.get("/api/catalog/entities", headers=bearer(legacy_token(key)))
        assert accepted.status_code == 200
        assert accepted.get_json()["principal"]["subject"] == "old-ci"
        response = client.get("/api/catalog/entities", headers=bearer(legacy_token(key, header)))
        assert response.status_code == 401
        assert "unsupported critical header parameter" in error_message(response)
