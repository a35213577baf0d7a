"""The extension: protection by default, the barrier, services, errors."""

from __future__ import annotations

import logging
import typing as t

import pytest
from flask import Blueprint, Flask, jsonify

from flask_backstage_auth import (
    AuthenticationError,
    BackstageAuth,
    ConfigError,
    ServerTokenManager,
    get_credentials,
)
from flask_backstage_auth.testing.mocks import MockCredentials, bearer_header
from tests.conftest import new_secret

STATIC = "static-token-for-tests"


def plugin(name: str) -> Blueprint:
    bp = Blueprint(name, __name__, url_prefix=f"/api/{name}")

    @bp.get("/things")
    def things() -> t.Any:
        return jsonify({"plugin": name, **get_credentials().to_dict()})

    @bp.post("/things")
    def create() -> t.Any:
        return jsonify({"created": True}), 201

    return bp


def make_app(backstage: dict[str, t.Any] | None = None, **config: t.Any) -> Flask:
    """An app with the extension registered."""
    app = _make_app(backstage, **config)
    BackstageAuth(app)
    return app


def _make_app(backstage: dict[str, t.Any] | None = None, **config: t.Any) -> Flask:
    app = Flask("extension-test", static_folder=None)
    app.config.update({"TESTING": True, "BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS": True, **config})
    app.config["BACKSTAGE_CONFIG"] = backstage or {
        "backend": {
            "auth": {
                "externalAccess": [
                    {"type": "static", "options": {"token": STATIC, "subject": "tests"}},
                ]
            }
        }
    }
    app.register_blueprint(plugin("catalog"))

    @app.get("/")
    def index() -> str:
        return "index"

    return app


def test_one_line_protects_every_route() -> None:
    app = Flask("bare", static_folder="static")
    app.config["BACKSTAGE_CONFIG"] = {}

    @app.get("/hello")
    def hello() -> str:
        return "hello"

    bp = Blueprint("early", __name__, url_prefix="/api/early")
    bp.add_url_rule("/x", "x", lambda: "x")
    app.register_blueprint(bp)
    BackstageAuth(app)  # production mode, no configuration at all
    late = Blueprint("late", __name__, url_prefix="/api/late")
    late.add_url_rule("/x", "x", lambda: "x")
    app.register_blueprint(late)
    client = app.test_client()
    for path in (
        "/hello",
        "/api/early/x",
        "/api/late/x",
        "/static/x.css",
        "/nope",
        "/api/early/nope",
    ):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.get_json()["error"]["message"] == "Missing credentials"
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert client.open("/hello", method=method).status_code == 401


def test_error_body_is_backstages() -> None:
    response = make_app().test_client().get("/api/catalog/things?token=secret-in-query")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.mimetype == "application/json"
    assert response.get_json() == {
        "error": {"name": "AuthenticationError", "message": "Missing credentials"},
        "request": {"method": "GET", "url": "/things"},
        "response": {"statusCode": 401},
    }


def test_credentials_reach_the_view(mock_credentials: MockCredentials) -> None:
    client = make_app().test_client()
    as_user = client.get(
        "/api/catalog/things", headers=mock_credentials.user_header("user:default/jane")
    )
    assert as_user.get_json()["principal"] == {"type": "user", "userEntityRef": "user:default/jane"}
    as_static = client.get("/api/catalog/things", headers=bearer_header(STATIC))
    assert as_static.get_json()["principal"] == {"type": "service", "subject": "tests"}
    bad = client.get("/api/catalog/things", headers=bearer_header("nope-nope-nope"))
    assert bad.status_code == 401
    assert bad.get_json()["error"]["message"] == "Illegal token"


def test_limited_user_token_is_refused_by_default(mock_credentials: MockCredentials) -> None:
    client = make_app().test_client()
    response = client.get(
        "/api/catalog/things", headers=bearer_header(mock_credentials.limited_user_token())
    )
    assert response.status_code == 401
    assert response.get_json()["error"]["message"] == "Illegal limited user token"


def test_unmatched_urls_do_not_reveal_what_exists(mock_credentials: MockCredentials) -> None:
    client = make_app().test_client()
    assert client.get("/api/catalog/secret-admin").status_code == 401
    assert client.get("/api/catalog/things").status_code == 401
    assert client.get("/unknown").status_code == 401
    assert (
        client.delete("/api/catalog/things").status_code == 401
    )  # 405 for callers with credentials
    headers = mock_credentials.service_header()
    assert client.get("/api/catalog/secret-admin", headers=headers).status_code == 404
    assert client.delete("/api/catalog/things", headers=headers).status_code == 405


def test_automatic_options_answer_without_running_a_view() -> None:
    response = make_app().test_client().options("/api/catalog/things")
    assert response.status_code == 200
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST", "OPTIONS"}


def test_explicit_options_views_are_protected() -> None:
    app = make_app()
    calls = []

    @app.route("/preflight", methods=["OPTIONS"])
    def preflight() -> str:
        calls.append(1)
        return "custom"

    assert app.test_client().options("/preflight").status_code == 401
    assert calls == []


def test_dangerously_disable_default_auth_policy(
    caplog: pytest.LogCaptureFixture, mock_credentials: MockCredentials
) -> None:
    with caplog.at_level(logging.WARNING):
        app = make_app({"backend": {"auth": {"dangerouslyDisableDefaultAuthPolicy": True}}})
    assert "dangerouslyDisableDefaultAuthPolicy" in caplog.text
    client = app.test_client()
    anonymous = client.get("/api/catalog/things")
    assert anonymous.status_code == 200
    assert anonymous.get_json()["principal"] == {"type": "none"}
    # tokens are still read and checked by the services
    user = client.get("/api/catalog/things", headers=mock_credentials.user_header())
    assert user.get_json()["principal"]["type"] == "user"
    with app.test_request_context("/api/catalog/things"):
        token = (
            BackstageAuth()
            .auth("catalog")
            .get_plugin_request_token(on_behalf_of=get_credentials(), target_plugin_id="search")
        )
        assert token.token == ""


def test_double_registration_and_missing_extension() -> None:
    app = _make_app()
    BackstageAuth(app)
    with pytest.raises(RuntimeError, match="already registered"):
        BackstageAuth(app)
    with pytest.raises(RuntimeError, match="not registered"):
        BackstageAuth.state(Flask("other"))


def test_factory_pattern_keeps_apps_apart() -> None:
    ext = BackstageAuth()
    one, two = (
        _make_app(),
        _make_app({"backend": {"auth": {"dangerouslyDisableDefaultAuthPolicy": True}}}),
    )
    ext.init_app(one)
    ext.init_app(two)
    assert one.test_client().get("/").status_code == 401
    assert two.test_client().get("/").status_code == 200
    assert BackstageAuth.state(one) is not BackstageAuth.state(two)


def test_production_without_keys_starts_and_issues_plugin_tokens() -> None:
    app = Flask("prod")
    app.config["BACKSTAGE_CONFIG"] = {}
    BackstageAuth(app)
    app.register_blueprint(plugin("catalog"))
    state = BackstageAuth.state(app)
    with pytest.raises(ConfigError, match="Unable to generate legacy token"):
        state.token_manager.get_token()
    auth = state.auth("search")
    token = auth.get_plugin_request_token(
        on_behalf_of=auth.get_own_service_credentials(), target_plugin_id="catalog"
    ).token
    response = app.test_client().get("/api/catalog/things", headers=bearer_header(token))
    assert response.get_json()["principal"] == {"type": "service", "subject": "plugin:search"}


def test_plugin_request_tokens() -> None:
    secret = new_secret()
    app = _make_app({"backend": {"auth": {"keys": [{"secret": secret}]}}})
    BackstageAuth(app)
    app.register_blueprint(plugin("scaffolder"))
    auth = BackstageAuth.state(app).auth("search")
    own = auth.get_own_service_credentials()
    assert own.principal.to_dict() == {"type": "service", "subject": "plugin:search"}
    token = auth.get_plugin_request_token(on_behalf_of=own, target_plugin_id="catalog").token
    client = app.test_client()
    response = client.get("/api/catalog/things", headers=bearer_header(token))
    assert response.get_json()["principal"] == {"type": "service", "subject": "plugin:search"}
    # a token for the catalog is refused by another plugin
    other = client.get("/api/scaffolder/things", headers=bearer_header(token))
    assert other.status_code == 401
    assert other.get_json()["error"]["message"] == "Failed plugin token verification"
    # legacy service tokens still work
    legacy = ServerTokenManager.from_config({"backend": {"auth": {"keys": [{"secret": secret}]}}})
    response = client.get("/api/catalog/things", headers=bearer_header(legacy.get_token().token))
    assert response.get_json()["principal"]["subject"] == "external:backstage-plugin"
    with pytest.raises(AuthenticationError, match="credential type 'none'"):
        auth.get_plugin_request_token(
            on_behalf_of=auth.get_none_credentials(), target_plugin_id="catalog"
        )


def test_http_auth_allow_semantics(mock_credentials: MockCredentials) -> None:
    app = _make_app()
    BackstageAuth(app)
    bp = Blueprint("users-only", __name__, url_prefix="/api/users-only")

    @bp.get("/me")
    def me() -> t.Any:
        creds = BackstageAuth().http_auth().credentials(allow=["user"])
        return jsonify(creds.to_dict())

    app.register_blueprint(bp)
    client = app.test_client()
    assert (
        client.get("/api/users-only/me", headers=mock_credentials.user_header()).status_code == 200
    )
    denied = client.get("/api/users-only/me", headers=mock_credentials.service_header())
    assert denied.status_code == 403
    assert denied.get_json()["error"] == {
        "name": "NotAllowedError",
        "message": "This endpoint does not allow 'service' credentials",
    }
    assert "WWW-Authenticate" not in denied.headers


def test_mock_tokens_need_testing() -> None:
    app = Flask("prod")
    app.config.update(BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS=True, BACKSTAGE_CONFIG={})
    with pytest.raises(ConfigError, match="TESTING"):
        BackstageAuth(app)
    plain = _make_app(BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS=False)
    BackstageAuth(plain)
    response = plain.test_client().get(
        "/api/catalog/things", headers=MockCredentials().user_header()
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("BACKSTAGE_AUTH_LEEWAY", -1),
        ("BACKSTAGE_AUTH_CACHE_SIZE", "big"),
        ("BACKSTAGE_AUTH_PLUGIN_PREFIX", "api"),
    ],
)
def test_invalid_settings_fail_at_startup(key: str, value: t.Any) -> None:
    app = _make_app(**{key: value})
    with pytest.raises(ConfigError, match=key):
        BackstageAuth(app)


def test_get_credentials_outside_a_request() -> None:
    with pytest.raises(RuntimeError):
        get_credentials()


def test_permission_enabled_with_noop_token_manager_refuses_to_start() -> None:
    app = _make_app({"permission": {"enabled": True}})
    with pytest.raises(ConfigError, match="Service-to-service authentication must be configured"):
        BackstageAuth(app, token_manager=ServerTokenManager.noop())
