"""Errors like Flask's own: Werkzeug's exception classes, Backstage's body,
``BACKSTAGE_AUTH_JSON_ERRORS`` for every error of the app."""

from __future__ import annotations

import typing as t

import pytest
from flask import Blueprint, Flask, jsonify
from werkzeug.exceptions import (
    BadRequest,
    Conflict,
    Forbidden,
    HTTPException,
    NotFound,
    NotImplemented,
    RequestEntityTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)

from flask_backstage_auth import BackstageAuth, BackstageError, errors
from flask_backstage_auth.access_tokens.ratelimit import TooManyRequestsError
from flask_backstage_auth.auth_backend.extension import NotImplementedHttpError
from flask_backstage_auth.router.policies import unauthenticated
from flask_backstage_auth.testing.mocks import MockCredentials

MOCK = MockCredentials()


@pytest.mark.parametrize(
    ("ours", "werkzeugs", "code"),
    [
        (errors.InputError, BadRequest, 400),
        (errors.AuthenticationError, Unauthorized, 401),
        (errors.NotAllowedError, Forbidden, 403),
        (errors.NotFoundError, NotFound, 404),
        (errors.ConflictError, Conflict, 409),
        (errors.PayloadTooLargeError, RequestEntityTooLarge, 413),
        (TooManyRequestsError, TooManyRequests, 429),
        (NotImplementedHttpError, NotImplemented, 501),
        (errors.ServiceUnavailableError, ServiceUnavailable, 503),
    ],
)
def test_each_error_is_werkzeugs_exception_for_its_status(
    ours: type[BackstageError], werkzeugs: type[HTTPException], code: int
) -> None:
    error = ours("no")
    assert isinstance(error, werkzeugs) and isinstance(error, BackstageError)
    assert error.code == code == werkzeugs.code
    response = error.get_response({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"})
    assert response.status_code == code
    assert response.content_type == "application/json; charset=utf-8"
    assert response.get_json()["error"] == {"name": error.error_name, "message": "no"}  # type: ignore[attr-defined]


def _app(**config: t.Any) -> Flask:
    app = Flask("http-errors", static_folder=None)
    app.config.update(
        {"TESTING": True, "BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS": True, "BACKSTAGE_CONFIG": {}}
    )
    app.config.update(config)
    catalog = Blueprint("catalog", __name__, url_prefix="/api/catalog")

    @catalog.get("/entities")
    def entities() -> t.Any:
        return jsonify([])

    @catalog.post("/entities/")
    def create() -> t.Any:
        return jsonify({}), 201

    @catalog.get("/users-only")
    def users_only() -> t.Any:
        BackstageAuth.state().http_auth("catalog").credentials(allow=["user"])
        return jsonify({})

    @catalog.get("/boom")
    @unauthenticated
    def boom() -> t.Any:
        raise RuntimeError("password=hunter2 at /srv/secret.py")

    entities_api = Blueprint("entities", __name__, url_prefix="/v2")
    entities_api.add_url_rule("/one", "one", lambda: "one")
    catalog.register_blueprint(entities_api)
    app.register_blueprint(catalog)

    @app.get("/root-thing")
    def root_thing() -> str:
        return "root"

    BackstageAuth(app)
    return app


def test_errorhandler_401_and_403_receive_the_librarys_refusals() -> None:
    app = _app()
    seen: list[HTTPException] = []

    @app.errorhandler(401)
    def unauthorized(error: Unauthorized) -> t.Any:
        seen.append(error)
        return jsonify(custom=401, message=error.description), 401

    @app.errorhandler(403)
    def forbidden(error: Forbidden) -> t.Any:
        seen.append(error)
        return jsonify(custom=403, message=error.description), 403

    client = app.test_client()
    anonymous = client.get("/api/catalog/entities")
    assert (anonymous.status_code, anonymous.get_json()) == (
        401,
        {"custom": 401, "message": "Missing credentials"},
    )
    service = client.get("/api/catalog/users-only", headers=MOCK.service_header())
    assert (service.status_code, service.get_json()) == (
        403,
        {"custom": 403, "message": "This endpoint does not allow 'service' credentials"},
    )
    assert [type(e) for e in seen] == [errors.AuthenticationError, errors.NotAllowedError]


def test_an_http_exception_handler_receives_them_too() -> None:
    app = _app()

    @app.errorhandler(HTTPException)
    def any_http(error: HTTPException) -> t.Any:
        return jsonify(code=error.code, backstage=isinstance(error, BackstageError)), error.code

    client = app.test_client()
    assert client.get("/api/catalog/entities").get_json() == {"code": 401, "backstage": True}
    assert client.get("/api/catalog/nope", headers=MOCK.user_header()).get_json() == {
        "code": 404,
        "backstage": False,  # Werkzeug's own 404 goes to the same handler
    }


def test_without_a_handler_the_body_is_backstages() -> None:
    client = _app().test_client()
    anonymous = client.get("/api/catalog/entities?token=secret-in-query")
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    assert anonymous.content_type == "application/json; charset=utf-8"
    assert anonymous.get_json() == {
        "error": {"name": "AuthenticationError", "message": "Missing credentials"},
        "request": {"method": "GET", "url": "/entities"},  # as the plugin router sees it
        "response": {"statusCode": 401},
    }
    service = client.get("/api/catalog/users-only", headers=MOCK.service_header())
    assert service.get_json() == {
        "error": {
            "name": "NotAllowedError",
            "message": "This endpoint does not allow 'service' credentials",
        },
        "request": {"method": "GET", "url": "/users-only"},
        "response": {"statusCode": 403},
    }
    assert "WWW-Authenticate" not in service.headers


@pytest.mark.parametrize(
    ("path", "url"),
    [
        ("/api/catalog", "/"),  # the mount itself: Express's req.url is "/"
        ("/api/catalog/", "/"),
        ("/api/catalog/entities", "/entities"),
        ("/api/catalog/v2/one", "/v2/one"),  # a nested blueprint: the plugin's mount
        ("/api/catalog/not/routed", "/not/routed"),  # unrouted, inside the plugin
        ("/api/catalogue/x", "/api/catalogue/x"),  # not the catalog: a segment boundary
        ("/root-thing", "/root-thing"),  # outside every plugin: the whole path
        ("/nowhere", "/nowhere"),
    ],
)
def test_request_url_is_relative_to_the_plugin_mount(path: str, url: str) -> None:
    response = _app().test_client().get(path + "?access_token=leak")
    assert response.status_code == 401
    assert response.get_json()["request"] == {"method": "GET", "url": url}


def test_request_url_under_a_script_name() -> None:
    client = _app().test_client()
    inside = client.get("/api/catalog/entities", environ_overrides={"SCRIPT_NAME": "/backend"})
    assert inside.get_json()["request"]["url"] == "/entities"
    outside = client.get("/root-thing", environ_overrides={"SCRIPT_NAME": "/backend"})
    assert outside.get_json()["request"]["url"] == "/backend/root-thing"


def test_flasks_own_errors_are_werkzeugs_pages_by_default() -> None:
    client = _app().test_client()
    missing = client.get("/api/catalog/nope", headers=MOCK.user_header())
    assert missing.status_code == 404 and missing.mimetype == "text/html"


def test_json_errors_setting_defaults_off() -> None:
    app = _app()
    assert app.config["BACKSTAGE_AUTH_JSON_ERRORS"] is False
    assert BackstageAuth.state(app).settings.json_errors is False


def test_json_errors_make_every_http_error_backstages() -> None:
    app = _app(BACKSTAGE_AUTH_JSON_ERRORS=True)
    client = app.test_client()
    user = MOCK.user_header()

    missing = client.get("/api/catalog/nope?x=1", headers=user)
    assert missing.content_type == "application/json; charset=utf-8"
    assert missing.get_json() == {
        "error": {"name": "NotFoundError", "message": NotFound.description},
        "request": {"method": "GET", "url": "/nope"},
        "response": {"statusCode": 404},
    }
    outside = client.get("/nowhere", headers=user)
    assert outside.get_json()["request"] == {"method": "GET", "url": "/nowhere"}

    wrong_method = client.delete("/api/catalog/entities", headers=user)
    assert wrong_method.status_code == 405
    assert wrong_method.get_json()["error"]["name"] == "Error"
    assert wrong_method.get_json()["response"] == {"statusCode": 405}
    assert set(wrong_method.headers["Allow"].split(", ")) >= {"GET", "HEAD", "OPTIONS"}

    created = client.post("/api/catalog/entities/", headers=user)
    assert created.status_code == 201  # the setting changes errors only
    extra_slash = client.get("/api/catalog/v2/one/", headers=user)
    assert extra_slash.status_code == 404  # an extra slash never redirects
    assert extra_slash.get_json()["error"]["name"] == "NotFoundError"


def test_json_errors_give_a_routing_redirect_a_json_body() -> None:
    app = _app(BACKSTAGE_AUTH_JSON_ERRORS=True)
    bp = Blueprint("search", __name__, url_prefix="/api/search")
    bp.add_url_rule("/index/", "index", lambda: ("indexed", 201), methods=["POST"])
    app.register_blueprint(bp)
    response = app.test_client().post("/api/search/index?q=1", headers=MOCK.user_header())
    assert response.status_code == 308
    assert response.headers["Location"].endswith("/api/search/index/?q=1")
    assert response.content_type == "application/json; charset=utf-8"
    assert response.get_json() == {
        "error": {"name": "Error", "message": "Permanent Redirect"},
        "request": {"method": "POST", "url": "/index"},
        "response": {"statusCode": 308},
    }
    plain = _app()  # the setting off: Werkzeug's page, as Flask's
    plain.register_blueprint(bp)
    off = plain.test_client().post("/api/search/index", headers=MOCK.user_header())
    assert (off.status_code, off.mimetype) == (308, "text/html")


def test_json_errors_never_show_a_500s_cause(caplog: pytest.LogCaptureFixture) -> None:
    app = _app(BACKSTAGE_AUTH_JSON_ERRORS=True, PROPAGATE_EXCEPTIONS=False)
    response = app.test_client().get("/api/catalog/boom")
    assert response.status_code == 500
    assert response.get_json() == {
        "error": {"name": "Error", "message": "Internal server error"},
        "request": {"method": "GET", "url": "/boom"},
        "response": {"statusCode": 500},
    }
    body = response.get_data(as_text=True)
    assert "hunter2" not in body and "Traceback" not in body and "RuntimeError" not in body
    assert "hunter2" in caplog.text  # Flask logs it, as it does without the setting


def test_an_apps_own_status_handler_beats_the_setting() -> None:
    app = _app(BACKSTAGE_AUTH_JSON_ERRORS=True)

    @app.errorhandler(404)
    def not_found(error: NotFound) -> t.Any:
        return "my own 404", 404

    response = app.test_client().get("/api/catalog/nope", headers=MOCK.user_header())
    assert response.get_data(as_text=True) == "my own 404"
