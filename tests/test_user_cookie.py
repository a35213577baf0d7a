"""The ``backstage-auth`` user cookie, end to end.

Issuing (``GET/DELETE /api/<plugin>/.backstage/auth/v1/cookie``, reference
§3.3 and §3.4), reading it on ``user-cookie`` routes, the reissue rules the
frontend relies on (§3.7), the plugin JWKS endpoint, and our deviations from
Backstage (security rule 8 and the deviations table): the header always wins,
only user tokens are accepted from the cookie, another user's cookie is
replaced, and the cookie is host-only with ``SameSite=Lax`` by default.

Tokens are real: user tokens come from :class:`AuthBackend` (the guest
provider, or its issuer for other users), service tokens are plugin tokens or
a configured ``externalAccess`` static token. Time is a fake clock.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import typing as t
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import pytest
from flask import Blueprint, Flask, Response, jsonify
from flask.testing import FlaskClient

from flask_backstage_auth import (
    AuthBackend,
    AuthenticationError,
    BackstageAuth,
    ConfigError,
    Credentials,
    NonePrincipal,
    NotAllowedError,
    ServicePrincipal,
    add_auth_policy,
    get_credentials,
)
from flask_backstage_auth.auth.user.handler import (
    LIMITED_USER_TYP,
    USER_TYP,
    create_limited_user_token,
)
from flask_backstage_auth.http_auth.service import (
    COOKIE_METHODS,
    COOKIE_REISSUE_THRESHOLD,
    USER_COOKIE_NAME,
    CookieSettings,
    IssuedCookie,
)

START = 1_700_000_000.0
BASE_URL = "http://localhost:7007"
GUEST = "user:development/guest"
OTHER = "user:default/other"
JANE = "user:default/jane"
COOKIE_ENDPOINT = "/api/techdocs/.backstage/auth/v1/cookie"
STATIC_TOKEN = "static-token-for-the-cookie-tests-0123"
RESTRICTED_TOKEN = "restricted-static-token-for-catalog-0123"
CONFIG: dict[str, t.Any] = {
    "backend": {
        "baseUrl": BASE_URL,
        "auth": {
            "externalAccess": [
                {"type": "static", "options": {"token": STATIC_TOKEN, "subject": "ci-bot"}},
                {
                    "type": "static",
                    "options": {"token": RESTRICTED_TOKEN, "subject": "catalog-bot"},
                    "accessRestrictions": [{"plugin": "catalog"}],
                },
            ]
        },
    },
    "auth": {"providers": {"guest": {}}},
}
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


# -- helpers ------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_app(
    clock: FakeClock | None = None, *, base_url: str = BASE_URL, **settings: t.Any
) -> Flask:
    app = Flask("user-cookie-test", static_folder=None)
    config = copy.deepcopy(CONFIG)
    config["backend"]["baseUrl"] = base_url
    app.config.update({"TESTING": True, "BACKSTAGE_CONFIG": config, **settings})
    BackstageAuth(app, clock=clock or FakeClock())
    AuthBackend(app)

    techdocs = Blueprint("techdocs", __name__, url_prefix="/api/techdocs")
    add_auth_policy(techdocs, path="/static", allow="user-cookie")

    @techdocs.route("/static/<path:p>", methods=["GET", "POST"])
    def static_file(p: str) -> Response:
        return jsonify(get_credentials().to_dict())

    @techdocs.get("/private")
    def private() -> Response:
        return jsonify(get_credentials().to_dict())

    catalog = Blueprint("catalog", __name__, url_prefix="/api/catalog")

    @catalog.get("/<path:rest>")
    def catalog_view(rest: str) -> Response:
        return jsonify(get_credentials().to_dict())

    app.register_blueprint(techdocs)
    app.register_blueprint(catalog)
    return app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> Flask:
    return make_app(clock)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def guest_token(client: FlaskClient) -> str:
    """A real user token for the guest, from the auth backend's guest provider."""
    response = client.get("/api/auth/guest/refresh")
    assert response.status_code == 200
    token = response.get_json()["backstageIdentity"]["token"]
    assert isinstance(token, str)
    return token


def user_token(app: Flask, sub: str) -> str:
    """A real user token for any user, from the auth backend's issuer."""
    return AuthBackend.state(app).issuer.issue_token(sub, [sub]).token


def service_token(app: Flask, target: str = "techdocs") -> str:
    """A plugin token from ``search`` to ``target`` (service principal ``plugin:search``)."""
    search = BackstageAuth.state(app).auth("search")
    return search.get_plugin_request_token(
        on_behalf_of=search.get_own_service_credentials(), target_plugin_id=target
    ).token


def segments(token: str) -> tuple[dict[str, t.Any], dict[str, t.Any], str]:
    """Header, payload (key order kept) and raw signature of a compact JWS."""
    head, body, signature = token.split(".")

    def decode(part: str) -> dict[str, t.Any]:
        return t.cast(
            t.Dict[str, t.Any], json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        )

    return decode(head), decode(body), signature


def exp_of(token: str) -> float:
    return float(segments(token)[1]["exp"])


def iso(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def parse_iso_z(value: str) -> datetime:
    assert ISO_Z.fullmatch(value), value
    return datetime.fromisoformat(value[:-1] + "+00:00")


def set_cookies(response: t.Any) -> list[tuple[str, str, dict[str, str | None]]]:
    """``(name, value, attributes)`` of every ``Set-Cookie``; attribute names lowercased."""
    parsed = []
    for header in response.headers.getlist("Set-Cookie"):
        first, *params = header.split(";")
        name, _, value = first.strip().partition("=")
        attributes: dict[str, str | None] = {}
        for param in params:
            key, sep, val = param.strip().partition("=")
            attributes[key.lower()] = val if sep else None
        parsed.append((name, value, attributes))
    return parsed


def the_cookie(response: t.Any) -> tuple[str, dict[str, str | None]]:
    """The one ``backstage-auth`` Set-Cookie of a response: ``(value, attributes)``."""
    cookies = set_cookies(response)
    assert [name for name, _, _ in cookies] == [USER_COOKIE_NAME], cookies
    return cookies[0][1], cookies[0][2]


def error_message(response: t.Any) -> str:
    return t.cast(str, response.get_json()["error"]["message"])


def principal(response: t.Any) -> dict[str, t.Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return t.cast(t.Dict[str, t.Any], response.get_json()["principal"])


def is_cleared(attributes: dict[str, str | None]) -> bool:
    if attributes.get("max-age") == "0":
        return True
    expires = attributes.get("expires")
    return expires is not None and parsedate_to_datetime(expires).timestamp() <= 0


# -- 1. issuing the cookie ----------------------------------------------------


class TestIssue:
    def test_answers_the_expiry_of_the_token(self, client: FlaskClient) -> None:
        token = guest_token(client)
        response = client.get(COOKIE_ENDPOINT, headers=bearer(token))
        assert response.status_code == 200
        assert response.mimetype == "application/json"
        body = response.get_json()
        assert list(body) == ["expiresAt"]
        assert parse_iso_z(body["expiresAt"]) == iso(exp_of(token))
        assert exp_of(token) == START + 3600

    def test_sets_a_host_only_http_only_secure_lax_cookie(self, client: FlaskClient) -> None:
        token = guest_token(client)
        value, attributes = the_cookie(client.get(COOKIE_ENDPOINT, headers=bearer(token)))
        assert value
        assert "httponly" in attributes
        assert attributes["path"] == "/"
        assert attributes["samesite"] == "Lax"
        assert "secure" in attributes  # baseUrl host is localhost: secure, as Backstage
        assert "domain" not in attributes  # host-only (Backstage sets Domain)
        assert attributes["expires"] is not None
        assert parsedate_to_datetime(attributes["expires"]) == iso(exp_of(token))

    def test_the_cookie_holds_the_limited_token(self, app: Flask, client: FlaskClient) -> None:
        token = guest_token(client)
        value, _ = the_cookie(client.get(COOKIE_ENDPOINT, headers=bearer(token)))
        limited, expires_at = create_limited_user_token(token)
        assert value == limited
        assert value != token
        assert expires_at == exp_of(token)

        full_header, full_payload, _ = segments(token)
        header, payload, signature = segments(value)
        assert full_header["typ"] == USER_TYP
        assert header == {
            "typ": LIMITED_USER_TYP,
            "alg": "ES256",
            "kid": full_header["kid"],
        }
        assert list(payload) == ["sub", "iat", "exp"]
        assert payload == {
            "sub": GUEST,
            "iat": full_payload["iat"],
            "exp": full_payload["exp"],
        }
        assert "ent" not in payload
        assert signature == full_payload["uip"]
        # It is a real, verifying token (the auth backend signed these bytes).
        credentials = (
            BackstageAuth.state(app).auth("techdocs").authenticate(value, allow_limited_access=True)
        )
        assert credentials.principal.to_dict() == {"type": "user", "userEntityRef": GUEST}

    def test_any_user_token_can_get_a_cookie(self, app: Flask, client: FlaskClient) -> None:
        token = user_token(app, JANE)
        response = client.get(COOKIE_ENDPOINT, headers=bearer(token))
        assert response.status_code == 200
        value, _ = the_cookie(response)
        assert segments(value)[1]["sub"] == JANE
        assert principal(client.get("/api/techdocs/static/index.html")) == {
            "type": "user",
            "userEntityRef": JANE,
        }

    @pytest.mark.parametrize(
        ("base_url", "secure"),
        [
            ("http://localhost:7007", True),
            ("http://127.0.0.1:7007", False),
            ("http://backstage.internal:7007", False),
            ("https://backstage.example.com", True),
        ],
    )
    def test_secure_follows_the_external_base_url(self, base_url: str, secure: bool) -> None:
        app = make_app(FakeClock(), base_url=base_url)
        client = app.test_client()
        response = client.get(COOKIE_ENDPOINT, headers=bearer(user_token(app, JANE)))
        _, attributes = the_cookie(response)
        assert ("secure" in attributes) is secure
        assert attributes["samesite"] == "Lax"
        assert "domain" not in attributes
        assert BackstageAuth.state(app).cookie == CookieSettings(secure=secure, samesite="Lax")

    def test_a_limited_token_cannot_mint_a_cookie(self, client: FlaskClient) -> None:
        limited = create_limited_user_token(guest_token(client))[0]
        response = client.get(COOKIE_ENDPOINT, headers=bearer(limited))
        assert response.status_code == 401
        assert error_message(response) == "Illegal limited user token"
        assert set_cookies(response) == []

    def test_the_cookie_alone_cannot_refresh_itself(self, client: FlaskClient) -> None:
        # The cookie endpoint is not a user-cookie route: the frontend sends its bearer.
        client.set_cookie(USER_COOKIE_NAME, create_limited_user_token(guest_token(client))[0])
        response = client.get(COOKIE_ENDPOINT)
        assert response.status_code == 401
        assert error_message(response) == "Missing credentials"
        assert set_cookies(response) == []


# -- 2. where the cookie opens, and where it does not -------------------------


class TestCookieUse:
    @pytest.fixture
    def cookie_client(self, client: FlaskClient) -> FlaskClient:
        """A client whose jar holds the guest's cookie, got from the endpoint."""
        response = client.get(COOKIE_ENDPOINT, headers=bearer(guest_token(client)))
        assert response.status_code == 200
        assert client.get_cookie(USER_COOKIE_NAME) is not None
        return client

    def test_opens_get_on_the_user_cookie_route(self, cookie_client: FlaskClient) -> None:
        for path in ("/api/techdocs/static/x", "/api/techdocs/static/a/b/index.html"):
            assert principal(cookie_client.get(path)) == {"type": "user", "userEntityRef": GUEST}

    def test_opens_head(self, cookie_client: FlaskClient) -> None:
        assert "HEAD" in COOKIE_METHODS
        response = cookie_client.head("/api/techdocs/static/x")
        assert response.status_code == 200
        assert response.get_data() == b""

    def test_not_post_to_the_same_path(self, cookie_client: FlaskClient) -> None:
        response = cookie_client.post("/api/techdocs/static/x")
        assert response.status_code == 401
        assert error_message(response) == "Missing credentials"
        assert response.headers["WWW-Authenticate"] == "Bearer"

    def test_not_a_route_without_the_policy(self, cookie_client: FlaskClient) -> None:
        response = cookie_client.get("/api/techdocs/private")
        assert response.status_code == 401
        assert error_message(response) == "Missing credentials"

    def test_not_another_plugin(self, cookie_client: FlaskClient) -> None:
        response = cookie_client.get("/api/catalog/entities")
        assert response.status_code == 401
        assert error_message(response) == "Missing credentials"

    def test_limited_token_is_refused_as_a_bearer_on_private(self, client: FlaskClient) -> None:
        limited = create_limited_user_token(guest_token(client))[0]
        response = client.get("/api/techdocs/private", headers=bearer(limited))
        assert response.status_code == 401
        assert error_message(response) == "Illegal limited user token"
        # Where limited access is allowed, the bearer may carry it (as Backstage).
        assert principal(client.get("/api/techdocs/static/x", headers=bearer(limited))) == {
            "type": "user",
            "userEntityRef": GUEST,
        }

    def test_the_full_token_still_opens_private(self, client: FlaskClient) -> None:
        token = guest_token(client)
        assert principal(client.get("/api/techdocs/private", headers=bearer(token))) == {
            "type": "user",
            "userEntityRef": GUEST,
        }


# -- 3. who may ask for a cookie ----------------------------------------------


class TestWhoMayAsk:
    def test_without_credentials(self, client: FlaskClient) -> None:
        response = client.get(COOKIE_ENDPOINT)
        assert response.status_code == 401
        assert error_message(response) == "Missing credentials"
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert set_cookies(response) == []

    def test_a_plugin_service_token_is_forbidden(self, app: Flask, client: FlaskClient) -> None:
        token = service_token(app)
        assert principal(client.get("/api/techdocs/private", headers=bearer(token))) == {
            "type": "service",
            "subject": "plugin:search",
        }
        response = client.get(COOKIE_ENDPOINT, headers=bearer(token))
        assert response.status_code == 403
        assert error_message(response) == "This endpoint does not allow 'service' credentials"
        assert set_cookies(response) == []

    def test_a_static_external_access_token_is_forbidden(self, client: FlaskClient) -> None:
        assert principal(client.get("/api/techdocs/private", headers=bearer(STATIC_TOKEN))) == {
            "type": "service",
            "subject": "ci-bot",
        }
        response = client.get(COOKIE_ENDPOINT, headers=bearer(STATIC_TOKEN))
        assert response.status_code == 403
        assert error_message(response) == "This endpoint does not allow 'service' credentials"
        assert set_cookies(response) == []

    def test_an_invalid_bearer(self, client: FlaskClient) -> None:
        response = client.get(COOKIE_ENDPOINT, headers=bearer("not-a-token-at-all"))
        assert response.status_code == 401
        assert error_message(response) == "Illegal token"
        assert set_cookies(response) == []


# -- 4. reissue rules ---------------------------------------------------------


class TestReissue:
    def test_a_cookie_far_from_expiry_is_kept(self, clock: FakeClock, client: FlaskClient) -> None:
        token = guest_token(client)
        first = client.get(COOKIE_ENDPOINT, headers=bearer(token))
        expires_at = first.get_json()["expiresAt"]
        value, _ = the_cookie(first)
        assert client.get_cookie(USER_COOKIE_NAME).value == value  # type: ignore[union-attr]

        clock.now += 600
        second = client.get(COOKIE_ENDPOINT, headers=bearer(token))
        assert second.status_code == 200
        assert second.get_json() == {"expiresAt": expires_at}
        assert set_cookies(second) == []

    def test_kept_even_when_the_bearer_is_a_newer_token(
        self, clock: FakeClock, client: FlaskClient
    ) -> None:
        old = guest_token(client)
        client.get(COOKIE_ENDPOINT, headers=bearer(old))
        clock.now += 1200
        new = guest_token(client)
        assert exp_of(new) == exp_of(old) + 1200
        response = client.get(COOKIE_ENDPOINT, headers=bearer(new))
        assert parse_iso_z(response.get_json()["expiresAt"]) == iso(exp_of(old))
        assert set_cookies(response) == []

    def test_a_cookie_near_expiry_is_reissued(self, clock: FakeClock, client: FlaskClient) -> None:
        old = guest_token(client)
        client.get(COOKIE_ENDPOINT, headers=bearer(old))
        clock.now = exp_of(old) - (COOKIE_REISSUE_THRESHOLD - 1)
        new = guest_token(client)  # what the frontend holds by now
        response = client.get(COOKIE_ENDPOINT, headers=bearer(new))
        assert response.status_code == 200
        assert parse_iso_z(response.get_json()["expiresAt"]) == iso(exp_of(new))
        value, attributes = the_cookie(response)
        assert value == create_limited_user_token(new)[0]
        assert parsedate_to_datetime(attributes["expires"] or "") == iso(exp_of(new))
        assert client.get_cookie(USER_COOKIE_NAME).value == value  # type: ignore[union-attr]

    def test_near_expiry_with_the_same_token_sets_the_cookie_again(
        self, clock: FakeClock, client: FlaskClient
    ) -> None:
        token = guest_token(client)
        client.get(COOKIE_ENDPOINT, headers=bearer(token))
        clock.now = exp_of(token) - 60
        response = client.get(COOKIE_ENDPOINT, headers=bearer(token))
        value, _ = the_cookie(response)
        assert value == create_limited_user_token(token)[0]
        assert parse_iso_z(response.get_json()["expiresAt"]) == iso(exp_of(token))

    @pytest.mark.parametrize(
        ("left", "reissued"),
        [
            (COOKIE_REISSUE_THRESHOLD + 1, False),
            (COOKIE_REISSUE_THRESHOLD, True),  # "more than 5 minutes away" keeps it
            (COOKIE_REISSUE_THRESHOLD - 1, True),
        ],
    )
    def test_the_five_minute_threshold(
        self, clock: FakeClock, client: FlaskClient, left: int, reissued: bool
    ) -> None:
        assert COOKIE_REISSUE_THRESHOLD == 300
        old = guest_token(client)
        client.get(COOKIE_ENDPOINT, headers=bearer(old))
        clock.now = exp_of(old) - left
        new = guest_token(client)
        response = client.get(COOKIE_ENDPOINT, headers=bearer(new))
        expected = exp_of(new) if reissued else exp_of(old)
        assert parse_iso_z(response.get_json()["expiresAt"]) == iso(expected)
        assert bool(set_cookies(response)) is reissued

    def test_another_users_cookie_is_replaced(self, app: Flask, client: FlaskClient) -> None:
        # Backstage keeps any valid user cookie; we replace another user's.
        other = create_limited_user_token(user_token(app, OTHER))[0]
        client.set_cookie(USER_COOKIE_NAME, other)
        assert principal(client.get("/api/techdocs/static/x"))["userEntityRef"] == OTHER

        token = guest_token(client)
        response = client.get(COOKIE_ENDPOINT, headers=bearer(token))
        assert response.status_code == 200
        assert parse_iso_z(response.get_json()["expiresAt"]) == iso(exp_of(token))
        value, _ = the_cookie(response)
        assert value == create_limited_user_token(token)[0]
        assert principal(client.get("/api/techdocs/static/x"))["userEntityRef"] == GUEST

    @pytest.mark.parametrize("existing", ["garbage", "a.b.c", "service", "static", "expired"])
    def test_an_unusable_existing_cookie_is_replaced(
        self, app: Flask, clock: FakeClock, client: FlaskClient, existing: str
    ) -> None:
        if existing == "service":
            value = service_token(app)
        elif existing == "static":
            value = STATIC_TOKEN
        elif existing == "expired":
            value = create_limited_user_token(guest_token(client))[0]
            clock.now += 3601
        else:
            value = existing
        client.set_cookie(USER_COOKIE_NAME, value)
        token = guest_token(client)
        response = client.get(COOKIE_ENDPOINT, headers=bearer(token))
        assert response.status_code == 200
        assert parse_iso_z(response.get_json()["expiresAt"]) == iso(exp_of(token))
        assert the_cookie(response)[0] == create_limited_user_token(token)[0]

    def test_a_restricted_service_token_in_the_cookie_does_not_block_issuing(
        self, client: FlaskClient
    ) -> None:
        client.set_cookie(USER_COOKIE_NAME, RESTRICTED_TOKEN)
        token = guest_token(client)
        response = client.get(COOKIE_ENDPOINT, headers=bearer(token))
        assert response.status_code == 200
        assert the_cookie(response)[0] == create_limited_user_token(token)[0]


# -- 5. clearing the cookie ---------------------------------------------------


class TestDelete:
    def test_delete_clears_the_cookie(self, client: FlaskClient) -> None:
        token = guest_token(client)
        client.get(COOKIE_ENDPOINT, headers=bearer(token))
        assert client.get_cookie(USER_COOKIE_NAME) is not None

        response = client.delete(COOKIE_ENDPOINT, headers=bearer(token))
        assert response.status_code == 204
        assert response.get_data() == b""
        value, attributes = the_cookie(response)
        assert value == ""
        assert is_cleared(attributes)
        # The same attributes as when it was set, or a browser would not match it.
        assert attributes["path"] == "/"
        assert "domain" not in attributes
        assert "httponly" in attributes
        assert "secure" in attributes
        assert attributes["samesite"] == "Lax"
        assert client.get_cookie(USER_COOKIE_NAME) is None
        assert client.get("/api/techdocs/static/x").status_code == 401

    def test_delete_needs_credentials(self, client: FlaskClient) -> None:
        response = client.delete(COOKIE_ENDPOINT)
        assert response.status_code == 401
        assert error_message(response) == "Missing credentials"
        assert set_cookies(response) == []

    def test_the_cookie_cannot_delete_itself(self, client: FlaskClient) -> None:
        client.set_cookie(USER_COOKIE_NAME, create_limited_user_token(guest_token(client))[0])
        response = client.delete(COOKIE_ENDPOINT)
        assert response.status_code == 401
        assert set_cookies(response) == []


# -- 6. the header wins, with no fallback to the cookie -----------------------


class TestHeaderWins:
    @pytest.fixture
    def cookie_client(self, client: FlaskClient) -> FlaskClient:
        client.set_cookie(USER_COOKIE_NAME, create_limited_user_token(guest_token(client))[0])
        assert client.get("/api/techdocs/static/x").status_code == 200
        return client

    def test_an_invalid_bearer_is_not_rescued_by_the_cookie(
        self, cookie_client: FlaskClient
    ) -> None:
        response = cookie_client.get(
            "/api/techdocs/static/x", headers=bearer("invalid-token-value")
        )
        assert response.status_code == 401
        assert error_message(response) == "Illegal token"

    @pytest.mark.parametrize(
        "authorization", ["Basic x", "Basic dXNlcjpwYXNz", "", "Bearer", "Bearer  ", "Token abc"]
    )
    def test_a_malformed_header_is_not_rescued_by_the_cookie(
        self, cookie_client: FlaskClient, authorization: str
    ) -> None:
        # Stricter than Backstage, which falls back to the cookie.
        response = cookie_client.get(
            "/api/techdocs/static/x", headers={"Authorization": authorization}
        )
        assert response.status_code == 401
        assert error_message(response) == "Missing credentials"

    def test_an_expired_bearer_is_not_rescued_by_the_cookie(
        self, app: Flask, clock: FakeClock, client: FlaskClient
    ) -> None:
        expired = user_token(app, OTHER)
        clock.now += 1800
        client.set_cookie(USER_COOKIE_NAME, create_limited_user_token(guest_token(client))[0])
        clock.now += 1801  # OTHER's token is past exp, the guest's cookie is not
        assert client.get("/api/techdocs/static/x").status_code == 200
        response = client.get("/api/techdocs/static/x", headers=bearer(expired))
        assert response.status_code == 401
        assert error_message(response) == "Failed user token verification"

    def test_a_valid_bearer_wins_over_the_cookie(
        self, app: Flask, cookie_client: FlaskClient
    ) -> None:
        response = cookie_client.get(
            "/api/techdocs/static/x", headers=bearer(user_token(app, JANE))
        )
        assert principal(response) == {"type": "user", "userEntityRef": JANE}
        service = cookie_client.get("/api/techdocs/static/x", headers=bearer(STATIC_TOKEN))
        assert principal(service) == {"type": "service", "subject": "ci-bot"}


# -- 7. what the cookie may hold ----------------------------------------------


class TestCookieContent:
    def get_with_cookie(self, client: FlaskClient, value: str) -> t.Any:
        client.set_cookie(USER_COOKIE_NAME, value)
        return client.get("/api/techdocs/static/x")

    def test_a_plugin_service_token_is_refused(self, app: Flask, client: FlaskClient) -> None:
        token = service_token(app)
        assert client.get("/api/techdocs/private", headers=bearer(token)).status_code == 200
        response = self.get_with_cookie(client, token)
        assert response.status_code == 401
        assert error_message(response) == "Refused cookie credentials for non-user principal"

    def test_a_static_token_is_refused(self, client: FlaskClient) -> None:
        response = self.get_with_cookie(client, STATIC_TOKEN)
        assert response.status_code == 401
        assert error_message(response) == "Refused cookie credentials for non-user principal"

    def test_a_restricted_static_token_is_denied(self, client: FlaskClient) -> None:
        response = self.get_with_cookie(client, RESTRICTED_TOKEN)
        assert response.status_code in (401, 403)
        assert "principal" not in response.get_json()

    def test_a_restricted_static_token_is_a_401_like_any_non_user_cookie(
        self, client: FlaskClient
    ) -> None:
        response = self.get_with_cookie(client, RESTRICTED_TOKEN)
        assert response.status_code == 401
        assert error_message(response) == "Refused cookie credentials for non-user principal"

    @pytest.mark.parametrize("value", ["garbage", "a.b.c", "e30.e30.e30", "x" * 40_000])
    def test_garbage_is_refused(self, app: Flask, value: str) -> None:
        # A raw Cookie header: the test client warns about (and browsers drop) huge cookies.
        client = app.test_client(use_cookies=False)
        headers = {"Cookie": f"{USER_COOKIE_NAME}={value}"}
        response = client.get("/api/techdocs/static/x", headers=headers)
        assert response.status_code == 401
        assert error_message(response) == "Illegal token"

    def test_a_tampered_limited_token_is_refused(self, app: Flask, client: FlaskClient) -> None:
        limited = create_limited_user_token(guest_token(client))[0]
        head, _, signature = limited.split(".")
        forged_payload = (
            base64.urlsafe_b64encode(
                json.dumps(
                    {"sub": JANE, **{k: v for k, v in segments(limited)[1].items() if k != "sub"}},
                    separators=(",", ":"),
                ).encode()
            )
            .rstrip(b"=")
            .decode()
        )
        response = self.get_with_cookie(client, f"{head}.{forged_payload}.{signature}")
        assert response.status_code == 401
        assert error_message(response) == "Failed user token verification"

    def test_an_expired_cookie_is_refused(self, clock: FakeClock, client: FlaskClient) -> None:
        token = guest_token(client)
        response = client.get(COOKIE_ENDPOINT, headers=bearer(token))
        assert response.status_code == 200
        assert client.get("/api/techdocs/static/x").status_code == 200  # cached as valid
        clock.now = exp_of(token) + 1
        response = client.get("/api/techdocs/static/x")
        assert response.status_code == 401
        assert error_message(response) == "Failed user token verification"

    def test_an_empty_cookie_is_no_credentials(self, client: FlaskClient) -> None:
        response = self.get_with_cookie(client, "")
        assert response.status_code == 401
        assert error_message(response) == "Missing credentials"


# -- 8. the SameSite setting --------------------------------------------------


class TestSameSite:
    @pytest.mark.parametrize("samesite", ["Strict", "None", "Lax"])
    def test_the_setting_changes_the_attribute(self, samesite: str) -> None:
        app = make_app(FakeClock(), BACKSTAGE_AUTH_COOKIE_SAMESITE=samesite)
        assert BackstageAuth.state(app).cookie.samesite == samesite
        client = app.test_client()
        token = user_token(app, JANE)
        _, issued = the_cookie(client.get(COOKIE_ENDPOINT, headers=bearer(token)))
        assert issued["samesite"] == samesite
        assert "secure" in issued
        _, cleared = the_cookie(client.delete(COOKIE_ENDPOINT, headers=bearer(token)))
        assert cleared["samesite"] == samesite

    def test_the_default_is_lax(self, app: Flask) -> None:
        assert app.config["BACKSTAGE_AUTH_COOKIE_SAMESITE"] == "Lax"
        assert BackstageAuth.state(app).cookie.samesite == "Lax"

    @pytest.mark.parametrize("samesite", ["lax", "strict", "none", "", None, "Off", True])
    def test_an_invalid_value_is_a_config_error(self, samesite: object) -> None:
        app = Flask("samesite-invalid", static_folder=None)
        app.config.update(
            TESTING=True,
            BACKSTAGE_CONFIG=copy.deepcopy(CONFIG),
            BACKSTAGE_AUTH_COOKIE_SAMESITE=samesite,
        )
        with pytest.raises(ConfigError, match="BACKSTAGE_AUTH_COOKIE_SAMESITE"):
            BackstageAuth(app)


# -- 9. the plugin JWKS endpoint ----------------------------------------------


class TestJwks:
    @pytest.mark.parametrize("plugin", ["techdocs", "auth", "catalog"])
    def test_open_without_credentials(self, app: Flask, client: FlaskClient, plugin: str) -> None:
        kid = segments(service_token(app))[0]["kid"]
        response = client.get(f"/api/{plugin}/.backstage/auth/v1/jwks.json")
        assert response.status_code == 200
        keys = response.get_json()["keys"]
        assert isinstance(keys, list)
        assert kid in [key["kid"] for key in keys]
        assert all("d" not in key for key in keys)  # public halves only
        assert set_cookies(response) == []

    def test_head_is_open_too(self, client: FlaskClient) -> None:
        assert client.head("/api/techdocs/.backstage/auth/v1/jwks.json").status_code == 200

    def test_invalid_credentials_do_not_matter(self, client: FlaskClient) -> None:
        response = client.get(
            "/api/techdocs/.backstage/auth/v1/jwks.json", headers=bearer("junk-token-value")
        )
        assert response.status_code == 200
        assert "keys" in response.get_json()

    @pytest.mark.parametrize(
        "path",
        [
            "/api/techdocs/.backstage/auth/v1/../v1/jwks.json",
            "/api/techdocs/.backstage/auth/v1/./jwks.json",
            "/api/techdocs//.backstage/auth/v1/jwks.json",
            "/api/techdocs/.backstage/auth/v1//jwks.json",
            "/api//techdocs/.backstage/auth/v1/jwks.json",
            "/api/techdocs/.backstage/auth/v1/jwks.json/",
            "/api/techdocs/.backstage/auth/v1/jwks.jsonx",
            "/api/nosuch/.backstage/auth/v1/jwks.json",
            "/api/techdocs/static/.backstage/auth/v1/jwks.json",
            # Encoded separators: routing decodes them, so they never qualify.
            "/api/techdocs%2F.backstage/auth/v1/jwks.json",
            "/api/techdocs/%2Ebackstage/auth/v1/jwks.json",
            "/api/techdocs/.backstage/auth/v1/jwks%2Ejson",
        ],
    )
    def test_path_tricks_are_not_served(self, client: FlaskClient, path: str) -> None:
        response = client.get(path)
        assert response.status_code == 401, path
        assert error_message(response) == "Missing credentials"

    def test_post_is_not_served(self, client: FlaskClient) -> None:
        assert client.post("/api/techdocs/.backstage/auth/v1/jwks.json").status_code == 401

    @pytest.mark.parametrize(
        "path",
        [
            "/api/techdocs/.backstage/auth/v1/../v1/cookie",
            "/api/techdocs//.backstage/auth/v1/cookie",
            "/api/nosuch/.backstage/auth/v1/cookie",
            "/api/techdocs%2F.backstage/auth/v1/cookie",
        ],
    )
    def test_cookie_endpoint_path_tricks_issue_nothing(
        self, client: FlaskClient, path: str
    ) -> None:
        response = client.get(path, headers=bearer(guest_token(client)))
        assert response.status_code != 200
        assert set_cookies(response) == []


# -- 10. HttpAuthService.issue_user_cookie directly ---------------------------


class TestIssueUserCookieDirectly:
    def test_none_credentials_clear_the_cookie(self, app: Flask, clock: FakeClock) -> None:
        http_auth = BackstageAuth.state(app).http_auth("techdocs")
        with app.test_request_context("/api/techdocs/x"):
            response = Response()
            issued = http_auth.issue_user_cookie(response, credentials=Credentials(NonePrincipal()))
        assert issued == IssuedCookie(clock.now)
        assert parse_iso_z(issued.to_dict()["expiresAt"]) == iso(clock.now)
        value, attributes = the_cookie(response)
        assert value == ""
        assert is_cleared(attributes)

    @pytest.mark.parametrize(
        "credentials",
        [
            Credentials(ServicePrincipal("plugin:search"), token="x"),
            Credentials(ServicePrincipal("external:ci-bot")),
        ],
    )
    def test_non_user_credentials_are_refused(self, app: Flask, credentials: Credentials) -> None:
        http_auth = BackstageAuth.state(app).http_auth("techdocs")
        with app.test_request_context("/api/techdocs/x"):
            response = Response()
            with pytest.raises(AuthenticationError) as info:
                http_auth.issue_user_cookie(response, credentials=credentials)
        assert info.value.message == "Refused to issue cookie for non-user principal"
        assert info.value.code == 401
        assert set_cookies(response) == []

    def test_explicit_user_credentials(self, app: Flask, client: FlaskClient) -> None:
        token = guest_token(client)
        http_auth = BackstageAuth.state(app).http_auth("techdocs")
        credentials = http_auth.auth.authenticate(token)
        with app.test_request_context("/api/techdocs/x"):
            response = Response()
            issued = http_auth.issue_user_cookie(response, credentials=credentials)
        assert issued == IssuedCookie(exp_of(token))
        assert the_cookie(response)[0] == create_limited_user_token(token)[0]

    def test_the_request_credentials_by_default(self, app: Flask, client: FlaskClient) -> None:
        token = guest_token(client)
        http_auth = BackstageAuth.state(app).http_auth("techdocs")
        with app.test_request_context("/api/techdocs/x", headers=bearer(token)):
            response = Response()
            issued = http_auth.issue_user_cookie(response)
        assert issued.expires_at == exp_of(token)
        assert the_cookie(response)[0] == create_limited_user_token(token)[0]

    def test_no_request_credentials(self, app: Flask) -> None:
        http_auth = BackstageAuth.state(app).http_auth("techdocs")
        with app.test_request_context("/api/techdocs/x"):
            response = Response()
            with pytest.raises(AuthenticationError) as info:
                http_auth.issue_user_cookie(response)
        assert info.value.message == "Missing credentials"
        assert set_cookies(response) == []

    def test_service_request_credentials(self, app: Flask) -> None:
        http_auth = BackstageAuth.state(app).http_auth("techdocs")
        with app.test_request_context("/api/techdocs/x", headers=bearer(STATIC_TOKEN)):
            response = Response()
            with pytest.raises(NotAllowedError) as info:
                http_auth.issue_user_cookie(response)
        assert info.value.message == "This endpoint does not allow 'service' credentials"
        assert info.value.code == 403
        assert set_cookies(response) == []


def test_a_plugin_token_on_behalf_of_a_user_is_not_a_cookie(
    app: Flask, client: FlaskClient
) -> None:
    """The cookie holds only the user's own token, never a plugin acting for them."""
    from flask_backstage_auth import BackstageAuth

    state = BackstageAuth.state(app)
    full = guest_token(client)
    user = state.auth("techdocs").authenticate(full)
    acting = (
        state.auth("search")
        .get_plugin_request_token(on_behalf_of=user, target_plugin_id="techdocs")
        .token
    )
    as_bearer = app.test_client().get("/api/techdocs/static/x", headers=bearer(acting))
    assert principal(as_bearer)["actor"] == {"type": "service", "subject": "plugin:search"}
    jar = app.test_client()
    jar.set_cookie("backstage-auth", acting)
    refused = jar.get("/api/techdocs/static/x")
    assert refused.status_code == 401
    assert error_message(refused) == "Refused cookie credentials for non-user principal"
