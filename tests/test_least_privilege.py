"""Least privilege: a credential's limits travel with it (docs/security.rst, "Least privilege").

Production mode (no ``TESTING``, no mock tokens), real keys and real tokens:
user tokens from :class:`AuthBackend`'s issuer, plugin tokens from this app's
key source, static ``externalAccess`` tokens with access restrictions.
"""

from __future__ import annotations

import base64
import json
import typing as t

import jwt
import pytest
from flask import Blueprint, Flask, Response, jsonify
from flask.testing import FlaskClient

from flask_backstage_auth import (
    AuthBackend,
    AuthenticationError,
    BackstageAuth,
    Credentials,
    NotAllowedError,
    add_auth_policy,
    get_credentials,
)
from flask_backstage_auth.auth.user.handler import USER_TYP, create_limited_user_token
from tests.conftest import new_secret

BASE_URL = "http://localhost:7007"
JANE = "user:default/jane"
OPEN_TOKEN = "open-static-token-0123456789"
CATALOG_ONLY = "catalog-only-static-token-0123456789"
CATALOG_AND_SEARCH = "catalog-and-search-static-token-0123456789"
CATALOG_READ = "catalog-read-only-static-token-0123456789"
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def make_app() -> Flask:
    app = Flask("least-privilege", static_folder=None)
    app.config.update(
        {
            "BACKSTAGE_AUTH_DEVELOPMENT": False,
            "BACKSTAGE_CONFIG": {
                "backend": {
                    "baseUrl": BASE_URL,
                    "auth": {
                        "keys": [{"secret": new_secret()}],
                        "externalAccess": [
                            {"type": "static", "options": {"token": OPEN_TOKEN, "subject": "ci"}},
                            {
                                "type": "static",
                                "options": {"token": CATALOG_ONLY, "subject": "catalog-bot"},
                                "accessRestrictions": [{"plugin": "catalog"}],
                            },
                            {
                                "type": "static",
                                "options": {"token": CATALOG_AND_SEARCH, "subject": "two-bot"},
                                "accessRestrictions": [{"plugin": "catalog"}, {"plugin": "search"}],
                            },
                            {
                                "type": "static",
                                "options": {"token": CATALOG_READ, "subject": "reader-bot"},
                                "accessRestrictions": [
                                    {
                                        "plugin": "catalog",
                                        "permission": "catalog.entity.read",
                                        "permissionAttribute": {"action": "read"},
                                    },
                                    {"plugin": "search"},
                                ],
                            },
                        ],
                    },
                },
            },
        }
    )
    BackstageAuth(app)
    AuthBackend(app)

    catalog = Blueprint("catalog", __name__, url_prefix="/api/catalog")
    add_auth_policy(catalog, path="/docs", allow="user-cookie")

    @catalog.route("/docs/<path:p>", methods=["GET", "HEAD", *WRITE_METHODS])
    def docs(p: str) -> Response:
        credentials = get_credentials()
        return jsonify({"limited": credentials.limited, **credentials.to_dict()})

    @catalog.route("/entities", methods=["GET", *WRITE_METHODS])
    def entities() -> Response:
        return jsonify(get_credentials().to_dict())

    @catalog.post("/call/<target>")
    def call(target: str) -> Response:
        auth = BackstageAuth.state().auth("catalog")
        token = auth.get_plugin_request_token(
            on_behalf_of=get_credentials(), target_plugin_id=target
        ).token
        return jsonify({"token": bool(token)})

    @catalog.get("/restrictions")
    def restrictions() -> Response:
        every = get_credentials().all_access_restrictions
        return jsonify(None if every is None else {k: v.to_dict() for k, v in every.items()})

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


def bearer(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


def user_token(app: Flask, sub: str = JANE) -> str:
    return AuthBackend.state(app).issuer.issue_token(sub, [sub]).token


def message(response: t.Any) -> str:
    return t.cast(str, response.get_json()["error"]["message"])


def _b64(data: dict[str, t.Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def signed_user_token(app: Flask, *, drop_uip: bool = False, typ: str | None = USER_TYP) -> str:
    """A user token signed with the auth backend's real key, with ``uip`` or ``typ`` removed."""
    full = user_token(app)
    header = jwt.get_unverified_header(full)
    payload = jwt.decode(full, options={"verify_signature": False})
    if drop_uip:
        del payload["uip"]
    # PyJWT drops an empty typ (by default it writes "JWT").
    headers = {"kid": header["kid"], "typ": typ or ""}
    key = AuthBackend.state(app).issuer.key_source.get_signing_key()
    return jwt.encode(payload, key.private_key, algorithm="ES256", headers=headers)


# -- limited user credentials never change anything ------------------------------


class TestLimitedCredentials:
    def test_credentials_say_whether_they_are_limited(
        self, app: Flask, client: FlaskClient
    ) -> None:
        full = user_token(app)
        limited = create_limited_user_token(full)[0]
        assert client.get("/api/catalog/docs/a", headers=bearer(limited)).get_json()["limited"]
        assert not client.get("/api/catalog/docs/a", headers=bearer(full)).get_json()["limited"]
        client.set_cookie("backstage-auth", limited)
        assert client.get("/api/catalog/docs/a").get_json()["limited"] is True

    @pytest.mark.parametrize("method", WRITE_METHODS)
    @pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
    def test_a_limited_bearer_changes_nothing(
        self, app: Flask, client: FlaskClient, method: str, scheme: str
    ) -> None:
        limited = create_limited_user_token(user_token(app))[0]
        response = client.open(
            "/api/catalog/docs/a", method=method, headers=bearer(limited, scheme)
        )
        assert response.status_code == 401
        assert message(response) == "Illegal limited user token"
        # the same token reads
        assert client.get("/api/catalog/docs/a", headers=bearer(limited, scheme)).status_code == 200

    @pytest.mark.parametrize("method", WRITE_METHODS)
    def test_a_limited_cookie_changes_nothing(
        self, app: Flask, client: FlaskClient, method: str
    ) -> None:
        client.set_cookie("backstage-auth", create_limited_user_token(user_token(app))[0])
        response = client.open("/api/catalog/docs/a", method=method)
        assert response.status_code == 401
        assert message(response) == "Missing credentials"

    def test_the_header_name_case_does_not_matter(self, app: Flask) -> None:
        limited = create_limited_user_token(user_token(app))[0]
        environ = {"HTTP_AUTHORIZATION": f"Bearer {limited}"}
        with app.test_request_context("/api/catalog/docs/a", method="POST", environ_base=environ):
            with pytest.raises(AuthenticationError, match="Illegal limited user token"):
                BackstageAuth.state().http_auth("catalog").credentials(allow_limited_access=True)
        client = app.test_client()
        response = client.post(
            "/api/catalog/docs/a", headers={"authorization": f"Bearer {limited}"}
        )
        assert response.status_code == 401

    @pytest.mark.parametrize("method", ["GET", *WRITE_METHODS])
    def test_a_limited_bearer_never_reaches_a_route_without_user_cookie(
        self, app: Flask, client: FlaskClient, method: str
    ) -> None:
        limited = create_limited_user_token(user_token(app))[0]
        response = client.open("/api/catalog/entities", method=method, headers=bearer(limited))
        assert response.status_code == 401
        assert message(response) == "Illegal limited user token"

    def test_the_obo_part_of_a_plugin_token_on_its_own_changes_nothing(
        self, app: Flask, client: FlaskClient
    ) -> None:
        full = user_token(app)
        with app.test_request_context():
            auth = BackstageAuth.state(app).auth("search")
            plugin_token = auth.get_plugin_request_token(
                on_behalf_of=auth.authenticate(full), target_plugin_id="catalog"
            ).token
        obo = jwt.decode(plugin_token, options={"verify_signature": False})["obo"]
        response = client.post("/api/catalog/docs/a", headers=bearer(obo))
        assert response.status_code == 401
        assert message(response) == "Illegal limited user token"
        reading = client.get("/api/catalog/docs/a", headers=bearer(obo))
        assert reading.status_code == 200 and reading.get_json()["limited"] is True
        # The plugin token itself is a full call of the plugin, as in Backstage.
        writing = client.post("/api/catalog/docs/a", headers=bearer(plugin_token))
        assert writing.status_code == 200 and writing.get_json()["limited"] is False

    def test_full_tokens_still_write(self, app: Flask, client: FlaskClient) -> None:
        for method in WRITE_METHODS:
            response = client.open(
                "/api/catalog/docs/a", method=method, headers=bearer(user_token(app))
            )
            assert response.status_code == 200
            assert response.get_json()["limited"] is False


class TestNoLimitedFormMeansNoToken:
    """A user token without a limited form never has the full token handed out instead."""

    @pytest.mark.parametrize(
        ("kwargs", "reason"),
        [
            ({"drop_uip": True}, "missing user identity proof"),
            ({"typ": None}, "invalid token type"),
        ],
    )
    def test_no_limited_token(self, app: Flask, kwargs: dict[str, t.Any], reason: str) -> None:
        token = signed_user_token(app, **kwargs)
        with pytest.raises(AuthenticationError, match=reason):
            create_limited_user_token(token)
        with app.test_request_context():
            auth = BackstageAuth.state(app).auth("catalog")
            credentials = Credentials(auth.authenticate(token).principal, token=token)
            with pytest.raises(AuthenticationError, match=reason):
                auth.get_limited_user_token(credentials)
            with pytest.raises(AuthenticationError, match=reason):
                auth.get_plugin_request_token(on_behalf_of=credentials, target_plugin_id="search")

    @pytest.mark.parametrize("kwargs", [{"drop_uip": True}, {"typ": None}])
    def test_no_cookie_holds_the_full_token(
        self, app: Flask, client: FlaskClient, kwargs: dict[str, t.Any]
    ) -> None:
        token = signed_user_token(app, **kwargs)
        response = client.get("/api/catalog/.backstage/auth/v1/cookie", headers=bearer(token))
        assert response.status_code == 401
        assert "Set-Cookie" not in response.headers
        assert token not in response.get_data(as_text=True)

    def test_no_on_behalf_of_call_carries_the_full_token(
        self, app: Flask, client: FlaskClient
    ) -> None:
        token = signed_user_token(app, drop_uip=True)
        response = client.post("/api/catalog/call/search", headers=bearer(token))
        assert response.status_code == 401
        assert message(response) == (
            "Failed to create limited user token, missing user identity proof"
        )


# -- restricted credentials cannot be widened ------------------------------------


class TestDelegation:
    """``get_plugin_request_token`` as Backstage's ``DefaultAuthService``, messages verbatim."""

    def test_an_unrestricted_service_delegates_anywhere(self, client: FlaskClient) -> None:
        response = client.post("/api/catalog/call/search", headers=bearer(OPEN_TOKEN))
        assert response.status_code == 200

    @pytest.mark.parametrize("target", ["search", "scaffolder", "catalog-x"])
    def test_a_target_outside_the_restrictions(self, client: FlaskClient, target: str) -> None:
        response = client.post(f"/api/catalog/call/{target}", headers=bearer(CATALOG_ONLY))
        assert response.status_code == 403
        assert message(response) == (
            f"Access to target plugin '{target}' is not included in token's access restrictions"
        )

    def test_a_target_inside_the_restrictions(self, client: FlaskClient) -> None:
        response = client.post("/api/catalog/call/search", headers=bearer(CATALOG_AND_SEARCH))
        assert response.status_code == 200
        response = client.post("/api/catalog/call/catalog", headers=bearer(CATALOG_ONLY))
        assert response.status_code == 200

    def test_permission_restricted_access_cannot_be_delegated(self, client: FlaskClient) -> None:
        response = client.post("/api/catalog/call/catalog", headers=bearer(CATALOG_READ))
        assert response.status_code == 403
        assert message(response) == (
            "Access to target plugin 'catalog' is restricted and cannot be delegated"
        )
        # its unrestricted entry may be delegated
        assert (
            client.post("/api/catalog/call/search", headers=bearer(CATALOG_READ)).status_code == 200
        )

    def test_credentials_carry_the_whole_restriction_set(self, client: FlaskClient) -> None:
        response = client.get("/api/catalog/restrictions", headers=bearer(CATALOG_READ))
        assert response.get_json() == {
            "catalog": {
                "permissionNames": ["catalog.entity.read"],
                "permissionAttributes": {"action": ["read"]},
            },
            "search": {},
        }
        assert (
            client.get("/api/catalog/restrictions", headers=bearer(OPEN_TOKEN)).get_json() is None
        )

    def test_hand_made_restricted_credentials_without_the_set_fail_closed(self, app: Flask) -> None:
        with app.test_request_context("/api/catalog/entities", headers=bearer(CATALOG_ONLY)):
            auth = BackstageAuth.state().auth("catalog")
            principal = auth.authenticate(CATALOG_ONLY).principal
            with pytest.raises(NotAllowedError, match="not included"):
                auth.get_plugin_request_token(
                    on_behalf_of=Credentials(principal), target_plugin_id="catalog"
                )

    def test_the_issued_token_is_accepted_by_the_target(
        self, app: Flask, client: FlaskClient
    ) -> None:
        with app.test_request_context():
            auth = BackstageAuth.state(app).auth("catalog")
            credentials = auth.authenticate(CATALOG_AND_SEARCH)
            token = auth.get_plugin_request_token(
                on_behalf_of=credentials, target_plugin_id="search"
            ).token
        response = client.get("/api/search/query", headers=bearer(token))
        assert response.get_json()["principal"]["subject"] == "plugin:catalog"
