"""Auth policies: matching rules, precedence, scoping, path tricks, the cookie."""

from __future__ import annotations

import typing as t

import pytest
from flask import Blueprint, Flask, jsonify

from flask_backstage_auth import (
    BackstageAuth,
    add_auth_policy,
    allow_user_cookie,
    get_credentials,
    unauthenticated,
)
from flask_backstage_auth.router.policies import AuthPolicy, compile_policy_path
from flask_backstage_auth.testing.mocks import MockCredentials, bearer_header

mock = MockCredentials()


@pytest.mark.parametrize(
    ("policy_path", "path", "matches"),
    [
        ("/", "/anything/at/all", True),
        ("*", "/", True),
        ("/static", "/static", True),
        ("/static", "/static/", True),
        ("/static", "/static/a/b.css", True),
        ("/static", "/staticx", False),
        ("/static", "/Static/a", False),  # case-sensitive, as Flask routes
        ("/static/", "/static/a", True),
        ("/static/:id", "/static/abc", True),
        ("/static/:id", "/static/abc/def", True),
        ("/static/:id", "/static", False),
        ("/static/:id", "/static/", False),
        ("/a/:x/c", "/a/b/c", True),
        ("/a/:x/c", "/a/b/d", False),
        ("/a/:x/c", "/a//c", False),
        ("/health", "/healthz", False),
        ("/v1.0", "/v1x0", False),  # literal, not a regex
    ],
)
def test_policy_path_rules(policy_path: str, path: str, matches: bool) -> None:
    assert AuthPolicy.create(policy_path, "unauthenticated").matches(path) is matches


@pytest.mark.parametrize(
    "bad", ["static", "/a/(b)", "/a/*", "/a/../b", "/a/./b", "/a/:", "/a/b?", ""]
)
def test_invalid_policy_paths(bad: str) -> None:
    with pytest.raises(ValueError):
        compile_policy_path(bad)


@pytest.mark.parametrize("allow", ["public", "user", "", None, "UNAUTHENTICATED"])
def test_invalid_allow_is_an_error_at_registration(allow: t.Any) -> None:
    with pytest.raises(ValueError, match="Invalid auth policy"):
        add_auth_policy(Blueprint("x", __name__), path="/", allow=allow)
    app = Flask("x")
    app.config["BACKSTAGE_CONFIG"] = {}
    ext = BackstageAuth(app)
    with pytest.raises(ValueError):
        ext.add_auth_policy("x", path="/", allow=allow, app=app)


def plugin(name: str) -> Blueprint:
    bp = Blueprint(name, __name__, url_prefix=f"/api/{name}")

    def describe(**_: str) -> t.Any:
        return jsonify(get_credentials().to_dict())

    for rule in (
        "/health",
        "/static/<path:path>",
        "/private",
        "/items/<item_id>/public",
        "/items/<item_id>",
    ):
        bp.add_url_rule(
            rule,
            rule.replace("/", "_").replace("<", "").replace(">", "").replace(":", ""),
            describe,
            methods=["GET", "HEAD", "POST"],
        )
    return bp


@pytest.fixture
def app() -> Flask:
    app = Flask("policies", static_folder=None)
    app.config.update(TESTING=True, BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS=True, BACKSTAGE_CONFIG={})
    ext = BackstageAuth(app)
    techdocs = plugin("techdocs")
    add_auth_policy(techdocs, path="/static", allow="user-cookie")
    app.register_blueprint(techdocs)
    app.register_blueprint(plugin("app"))
    app.register_blueprint(plugin("appx"))
    app.register_blueprint(plugin("catalog"))
    ext.add_auth_policy("app", path="/health", allow="unauthenticated", app=app)
    ext.add_auth_policy("catalog", path="/items/:id/public", allow="unauthenticated", app=app)

    decorated = Blueprint("decorated", __name__, url_prefix="/api/decorated")

    @decorated.get("/open")
    @unauthenticated
    def open_view() -> t.Any:
        return jsonify(get_credentials().to_dict())

    @decorated.get("/plain")
    @unauthenticated
    def plain_view() -> str:
        return "plain"

    @decorated.get("/cookie")
    @allow_user_cookie
    def cookie_view() -> t.Any:
        return jsonify(get_credentials().to_dict())

    @decorated.get("/closed")
    def closed_view() -> t.Any:
        return jsonify(get_credentials().to_dict())

    app.register_blueprint(decorated)
    return app


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/app/health", 200),
        ("/api/app/private", 401),
        ("/api/appx/health", 401),  # another plugin, even with a shared prefix
        ("/api/catalog/health", 401),
        ("/api/catalog/items/42/public", 200),
        ("/api/catalog/items/42", 401),
        ("/api/decorated/open", 200),
        ("/api/decorated/closed", 401),
        ("/api/techdocs/static/index.html", 401),  # user-cookie still needs credentials
    ],
)
def test_anonymous_access_follows_policies(app: Flask, path: str, status: int) -> None:
    assert app.test_client().get(path).status_code == status


@pytest.mark.parametrize(
    "path",
    [
        "/api/app/health/../private",
        "/api/app/./health",
        "/api/app//health",
        "/api/app/health%2f..%2fprivate",
        "/api/app/%2e%2e/app/health",
        "/api/APP/health",
        "/api/app/Health",
        "/api/catalog/items/42/public/../../42",
        "/api/catalog/items/%2e%2e/public",
        "/api/app/health\\..\\private",
    ],
)
def test_path_tricks_never_get_a_policy(app: Flask, path: str) -> None:
    response = app.test_client().get(path)
    assert response.status_code == 401, path


def test_unauthenticated_ignores_invalid_tokens(app: Flask) -> None:
    response = app.test_client().get("/api/decorated/plain", headers=bearer_header("garbage-token"))
    assert response.status_code == 200
    client = app.test_client()
    client.set_cookie("backstage-auth", "garbage-cookie")
    assert client.get("/api/decorated/plain").status_code == 200


def test_a_view_asking_for_credentials_still_gets_token_errors(app: Flask) -> None:
    # As in Backstage: the barrier lets the request in, the view's own
    # http_auth.credentials() call still refuses an invalid token.
    response = app.test_client().get("/api/app/health", headers=bearer_header("garbage-token"))
    assert response.status_code == 401
    assert response.get_json()["error"]["message"] == "Illegal token"


def test_unauthenticated_view_still_sees_valid_credentials(app: Flask) -> None:
    response = app.test_client().get("/api/app/health", headers=mock.user_header("user:default/x"))
    assert response.get_json()["principal"]["userEntityRef"] == "user:default/x"


def test_policy_registered_after_requests_applies(app: Flask) -> None:
    BackstageAuth().add_auth_policy("catalog", path="/private", allow="unauthenticated", app=app)
    assert app.test_client().get("/api/catalog/private").status_code == 200


class TestUserCookie:
    cookie = mock.limited_user_token("user:default/reader")

    def client(self, app: Flask, value: str | None = None) -> t.Any:
        client = app.test_client()
        client.set_cookie("backstage-auth", value if value is not None else self.cookie)
        return client

    def test_cookie_opens_user_cookie_routes_for_safe_methods(self, app: Flask) -> None:
        for path in ("/api/techdocs/static/index.html", "/api/decorated/cookie"):
            response = self.client(app).get(path)
            assert response.status_code == 200, path
            assert response.get_json()["principal"]["userEntityRef"] == "user:default/reader"
            assert self.client(app).head(path).status_code == 200
            assert self.client(app).post(path).status_code in (401, 405)

    def test_cookie_is_ignored_elsewhere(self, app: Flask) -> None:
        assert self.client(app).get("/api/techdocs/private").status_code == 401
        assert self.client(app).get("/api/decorated/closed").status_code == 401

    def test_header_wins_with_no_fallback(self, app: Flask) -> None:
        client = self.client(app)
        bad_header = client.get("/api/techdocs/static/a", headers=bearer_header("bad-token-value"))
        assert bad_header.status_code == 401
        malformed = client.get("/api/techdocs/static/a", headers={"Authorization": "Basic abc"})
        assert malformed.status_code == 401
        service = client.get("/api/techdocs/static/a", headers=mock.service_header())
        assert service.get_json()["principal"]["type"] == "service"

    def test_service_tokens_in_the_cookie_are_refused(self, app: Flask) -> None:
        response = self.client(app, mock.service_token()).get("/api/techdocs/static/a")
        assert response.status_code == 401
        assert "non-user" in response.get_json()["error"]["message"]

    def test_limited_token_in_the_header_only_where_cookies_are_allowed(self, app: Flask) -> None:
        headers = bearer_header(self.cookie)
        client = app.test_client()
        assert client.get("/api/techdocs/static/a", headers=headers).status_code == 200
        assert client.get("/api/techdocs/private", headers=headers).status_code == 401

    def test_cookie_path_tricks(self, app: Flask) -> None:
        for path in (
            "/api/techdocs/static/../private",
            "/api/techdocs//static/a",
            "/api/techdocs/Static/a",
        ):
            assert self.client(app).get(path).status_code == 401, path


def test_precedence_unauthenticated_beats_user_cookie() -> None:
    app = Flask("precedence", static_folder=None)
    app.config.update(TESTING=True, BACKSTAGE_CONFIG={})
    ext = BackstageAuth(app)
    bp = plugin("docs")
    add_auth_policy(bp, path="/", allow="user-cookie")
    add_auth_policy(bp, path="/health", allow="unauthenticated")
    app.register_blueprint(bp)
    ext.add_auth_policy("docs", path="/static", allow="user-cookie", app=app)
    client = app.test_client()
    assert client.get("/api/docs/health").status_code == 200
    assert client.get("/api/docs/private").status_code == 401


def test_disabled_default_policy_makes_policies_irrelevant() -> None:
    app = Flask("disabled", static_folder=None)
    app.config.update(
        BACKSTAGE_CONFIG={"backend": {"auth": {"dangerouslyDisableDefaultAuthPolicy": True}}}
    )
    BackstageAuth(app)
    app.register_blueprint(plugin("catalog"))
    assert app.test_client().get("/api/catalog/private").status_code == 200
