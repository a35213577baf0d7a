"""One memo of a request's credentials (``flask_backstage_auth.http_auth.memo``).

The barrier, a plugin's ``http_auth``, ``get_credentials()`` and the legacy
middleware all read the same memo: a token is authenticated once per request,
plugin and ``allow_limited_access`` value, and the route is looked up once.
The memo keeps the rules it memoises: the cookie counts on GET and HEAD only,
limited credentials never pass for another method, and a refusal is never
memoised as "no credentials".

Production mode, real tokens: user tokens from :class:`AuthBackend`'s issuer,
their limited form, a static ``externalAccess`` token.
"""

from __future__ import annotations

import typing as t

import pytest
from flask import Blueprint, Flask, Response, jsonify, request
from flask.testing import FlaskClient

from flask_backstage_auth import (
    AuthBackend,
    BackstageAuth,
    BackstageError,
    get_credentials,
)
from flask_backstage_auth.auth.user.handler import create_limited_user_token
from flask_backstage_auth.http_auth.memo import ESTABLISHED_KEY
from flask_backstage_auth.http_auth.service import USER_COOKIE_NAME
from flask_backstage_auth.legacy.middleware import (
    ENVIRON_CREDENTIALS_KEY,
    LEGACY_SERVICE_SUBJECT,
    create_require_authentication_middleware,
    get_middleware_credentials,
)
from flask_backstage_auth.legacy.secrets import generate_secret
from flask_backstage_auth.legacy.token_manager import ServerTokenManager
from flask_backstage_auth.router.policies import add_auth_policy, unauthenticated

JANE = "user:default/jane"
JOHN = "user:default/john"
STATIC_TOKEN = "static-token-for-the-memo-tests-0123456"
LEGACY_SECRET = generate_secret(32)
CHANGING_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def outcome(call: t.Callable[[], t.Any]) -> dict[str, t.Any]:
    """What a reader gave: the principal, or the status and message of its refusal."""
    try:
        credentials = call()
    except BackstageError as error:
        return {"status": error.code, "message": error.description}
    return {"principal": credentials.principal.to_dict(), "limited": credentials.limited}


def make_app() -> Flask:
    app = Flask("memo-test", static_folder=None)
    app.config.update(
        BACKSTAGE_AUTH_DEVELOPMENT=False,
        BACKSTAGE_CONFIG={
            "backend": {
                "baseUrl": "http://localhost:7007",
                "auth": {
                    "externalAccess": [
                        {"type": "static", "options": {"token": STATIC_TOKEN, "subject": "ci"}},
                        {"type": "legacy", "options": {"secret": LEGACY_SECRET, "subject": "old"}},
                    ]
                },
            }
        },
    )
    BackstageAuth(app)
    AuthBackend(app)
    catalog = Blueprint("catalog", __name__, url_prefix="/api/catalog")
    add_auth_policy(catalog, path="/docs", allow="user-cookie")

    def http_auth(**options: t.Any) -> t.Any:
        return BackstageAuth.state().http_auth("catalog").credentials(**options)

    @catalog.route("/things", methods=["GET", "HEAD", *CHANGING_METHODS])
    def things() -> Response:
        credentials = get_credentials()
        return jsonify(
            {
                "principal": credentials.principal.to_dict(),
                "middleware_sees_it": get_middleware_credentials(request.environ) is credentials,
                "http_auth_gives_it": http_auth() is credentials,
                "allowed_gives_it": http_auth(allow=["user", "service"]) is credentials,
            }
        )

    @catalog.route("/docs/<path:page>", methods=["GET", "HEAD", *CHANGING_METHODS])
    def docs(page: str) -> Response:
        return jsonify(
            {
                "established": outcome(get_credentials),
                "without_limited": outcome(http_auth),
                "user_without_limited": outcome(lambda: http_auth(allow=["user"])),
                "with_limited": outcome(lambda: http_auth(allow_limited_access=True)),
            }
        )

    @catalog.route("/open", methods=["GET", *CHANGING_METHODS])
    @unauthenticated
    def open_view() -> Response:
        return jsonify(
            {
                "first": outcome(lambda: http_auth(allow_limited_access=True)),
                "again": outcome(lambda: http_auth(allow_limited_access=True)),
                "get_credentials": outcome(get_credentials),
            }
        )

    app.register_blueprint(catalog)
    return app


@pytest.fixture
def app() -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def user_token(app: Flask, user: str = JANE) -> str:
    return AuthBackend.state(app).issuer.issue_token(user, [user]).token


def limited_token(app: Flask, user: str = JANE) -> str:
    return create_limited_user_token(user_token(app, user))[0]


def legacy_manager() -> ServerTokenManager:
    """An old plugin's token manager, with the secret of the app's ``legacy`` entry."""
    return ServerTokenManager.from_config(
        {"backend": {"auth": {"keys": [{"secret": LEGACY_SECRET}]}}}
    )


def bearer(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


class Counter:
    """Counts the calls of one method of one object (the real method still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> None:
        self.calls = 0
        real = getattr(target, name)

        def counted(*args: t.Any, **kwargs: t.Any) -> t.Any:
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(target, name, counted)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
@pytest.mark.parametrize("kind", ["user", "static"])
def test_every_reader_gets_the_barriers_credentials_from_one_authentication(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch, kind: str, scheme: str
) -> None:
    token = user_token(app) if kind == "user" else STATIC_TOKEN
    authentications = Counter(
        monkeypatch, BackstageAuth.state(app).auth("catalog"), "authenticate_entry"
    )
    response = client.get("/api/catalog/things", headers=bearer(token, scheme))
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    expected = (
        {"type": "user", "userEntityRef": JANE}
        if kind == "user"
        else {
            "type": "service",
            "subject": "ci",
        }
    )
    assert body == {
        "principal": expected,
        "middleware_sees_it": True,
        "http_auth_gives_it": True,
        "allowed_gives_it": True,
    }
    # The barrier, get_credentials(), the middleware's reader and two http_auth
    # calls: the token is authenticated once.
    assert authentications.calls == 1


def test_the_route_is_looked_up_once_per_request(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = Counter(monkeypatch, BackstageAuth.state(app).barrier.routes, "route")
    assert client.get("/api/catalog/things", headers=bearer(user_token(app))).status_code == 200
    assert lookups.calls == 1
    assert client.post("/api/catalog/things").status_code == 401
    assert lookups.calls == 2
    assert client.get("/api/catalog/docs/x", headers=bearer(user_token(app))).status_code == 200
    assert lookups.calls == 3


def test_the_memo_lasts_one_request_only(app: Flask, client: FlaskClient) -> None:
    jane = client.get("/api/catalog/things", headers=bearer(user_token(app, JANE)))
    john = client.get("/api/catalog/things", headers=bearer(user_token(app, JOHN)))
    assert jane.get_json()["principal"]["userEntityRef"] == JANE
    assert john.get_json()["principal"]["userEntityRef"] == JOHN
    assert client.get("/api/catalog/things").status_code == 401


def test_the_cookie_is_memoised_for_limited_access_only(app: Flask, client: FlaskClient) -> None:
    client.set_cookie(USER_COOKIE_NAME, limited_token(app))
    response = client.get("/api/catalog/docs/intro")
    assert response.status_code == 200, response.get_data(as_text=True)
    jane = {"type": "user", "userEntityRef": JANE}
    assert response.get_json() == {
        "established": {"principal": jane, "limited": True},
        # The same request without limited access: the cookie does not count.
        "without_limited": {"principal": {"type": "none"}, "limited": False},
        "user_without_limited": {"status": 401, "message": "Missing credentials"},
        "with_limited": {"principal": jane, "limited": True},
    }


@pytest.mark.parametrize("method", CHANGING_METHODS)
def test_the_cookie_never_counts_for_a_change(app: Flask, client: FlaskClient, method: str) -> None:
    client.set_cookie(USER_COOKIE_NAME, limited_token(app))
    response = client.open("/api/catalog/docs/intro", method=method)
    assert response.status_code == 401
    assert response.get_json()["error"]["message"] == "Missing credentials"
    # A route open to all: a view asking for limited access still gets none.
    opened = client.open("/api/catalog/open", method=method)
    assert opened.status_code == 200
    assert opened.get_json()["first"] == {"principal": {"type": "none"}, "limited": False}


def test_the_cookie_counts_for_head(app: Flask, client: FlaskClient) -> None:
    client.set_cookie(USER_COOKIE_NAME, limited_token(app))
    assert client.head("/api/catalog/docs/intro").status_code == 200
    # The name is case-sensitive: another spelling is no cookie of ours.
    client.delete_cookie(USER_COOKIE_NAME)
    client.set_cookie(USER_COOKIE_NAME.title(), limited_token(app))
    assert client.get("/api/catalog/docs/intro").status_code == 401


@pytest.mark.parametrize("method", CHANGING_METHODS)
def test_a_limited_bearer_token_is_refused_for_a_change(
    app: Flask, client: FlaskClient, method: str
) -> None:
    token = limited_token(app)
    assert client.get("/api/catalog/docs/intro", headers=bearer(token)).status_code == 200
    refused = client.open("/api/catalog/docs/intro", method=method, headers=bearer(token))
    assert refused.status_code == 401
    assert refused.get_json()["error"]["message"] == "Illegal limited user token"
    # Nor on a route without a policy, whatever the method.
    assert client.get("/api/catalog/things", headers=bearer(token)).status_code == 401
    # On a route open to all, a view asking for limited access is refused too.
    opened = client.open("/api/catalog/open", method=method, headers=bearer(token))
    assert opened.get_json()["first"] == {"status": 401, "message": "Illegal limited user token"}


def test_a_refusal_is_not_memoised_as_no_credentials(app: Flask, client: FlaskClient) -> None:
    response = client.get("/api/catalog/open", headers=bearer("not-a-valid-token"))
    assert response.status_code == 200
    refused = {"status": 401, "message": "Illegal token"}
    assert response.get_json() == {"first": refused, "again": refused, "get_credentials": refused}


def test_a_later_gate_replaces_the_established_credentials(app: Flask, client: FlaskClient) -> None:
    """An old plugin's own middleware runs after the barrier: views see what it established."""
    manager = legacy_manager()
    old = Blueprint("old", __name__, url_prefix="/api/old")
    require_auth = create_require_authentication_middleware(None, manager)

    @old.before_request
    def guard() -> None:
        request.environ[ENVIRON_CREDENTIALS_KEY] = require_auth.authenticate(request.environ)

    @old.get("/whoami")
    def whoami() -> Response:
        return jsonify(get_credentials().principal.to_dict())

    app.register_blueprint(old)
    response = client.get("/api/old/whoami", headers=bearer(manager.get_token().token))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"type": "service", "subject": LEGACY_SERVICE_SUBJECT}


def test_without_the_extension_get_credentials_reads_the_middlewares_memo() -> None:
    manager = legacy_manager()
    app = Flask("middleware-only", static_folder=None)

    @app.get("/api/catalog/x")
    def view() -> Response:
        return jsonify(get_credentials().principal.to_dict())

    app.wsgi_app = create_require_authentication_middleware(None, manager).wrap(  # type: ignore[method-assign]
        app.wsgi_app, prefix="/api/catalog"
    )
    client = app.test_client()
    response = client.get("/api/catalog/x", headers=bearer(manager.get_token().token))
    assert response.get_json() == {"type": "service", "subject": LEGACY_SERVICE_SUBJECT}
    assert client.get("/api/catalog/x").status_code == 401
    assert ESTABLISHED_KEY == ENVIRON_CREDENTIALS_KEY == "flask_backstage_auth.credentials"


def test_a_value_that_is_not_credentials_is_no_memo(app: Flask) -> None:
    with app.test_request_context(environ_base={ESTABLISHED_KEY: "forged"}):
        assert get_middleware_credentials(request.environ) is None
        # Not taken for credentials: the request's own (none) are read instead.
        assert get_credentials().principal.type == "none"


def test_the_barrier_uses_the_service_not_its_own_reading(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A view's ``http_auth.credentials()`` and the barrier share one code path."""
    calls = Counter(monkeypatch, BackstageAuth.state(app).http_auth("catalog"), "credentials")
    assert client.get("/api/catalog/things", headers=bearer(user_token(app))).status_code == 200
    assert calls.calls == 1 + 2  # the barrier's call, then the view's two
