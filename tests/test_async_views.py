"""``async def`` views: the barrier, ``get_credentials()`` and ``http_auth`` work
in them, and ``plugin_async_client`` calls other plugins with the same tokens."""

from __future__ import annotations

import typing as t

import pytest
from flask import Blueprint, Flask, jsonify

from flask_backstage_auth import AuthBackend, BackstageAuth, add_auth_policy, get_credentials
from flask_backstage_auth.client import plugin_async_client
from tests.conftest import LiveServer, new_secret

pytest.importorskip("asgiref")  # Flask's async views need flask[async]
httpx = pytest.importorskip("httpx")

USER = "user:default/jane"


class Holder:
    """A WSGI callable whose app is set once the server's URL is known."""

    app: t.Any = None

    def __call__(self, environ: t.Any, start_response: t.Any) -> t.Any:
        return self.app(environ, start_response)


def make_app(base_url: str) -> Flask:
    app = Flask(__name__)
    app.config.update(
        BACKSTAGE_AUTH_DEVELOPMENT=False,
        BACKSTAGE_CONFIG={
            "backend": {"baseUrl": base_url, "auth": {"keys": [{"secret": new_secret()}]}},
            "auth": {"providers": {"guest": {"dangerouslyAllowOutsideDevelopment": True}}},
        },
    )
    BackstageAuth(app)
    AuthBackend(app)

    catalog = Blueprint("catalog", __name__, url_prefix="/api/catalog")
    add_auth_policy(catalog, path="/docs", allow="user-cookie")

    @catalog.get("/whoami")
    async def whoami() -> t.Any:
        return jsonify(get_credentials().principal.to_dict())

    @catalog.get("/docs")
    async def docs() -> t.Any:
        credentials = (
            BackstageAuth.state()
            .http_auth("catalog")
            .credentials(allow=("user",), allow_limited_access=True)
        )
        return jsonify(user=credentials.principal.to_dict(), limited=credentials.limited)

    search = Blueprint("search", __name__, url_prefix="/api/search")

    @search.get("/query")
    async def query() -> t.Any:
        auth = BackstageAuth.state().auth("search")
        base = BackstageAuth.state().discovery.get_base_url("catalog")
        async with plugin_async_client(
            auth=auth, target_plugin_id="catalog", on_behalf_of=get_credentials
        ) as client:
            answer = await client.get(f"{base}/whoami")
        return jsonify(status=answer.status_code, catalog_saw=answer.json())

    app.register_blueprint(catalog)
    app.register_blueprint(search)
    return app


@pytest.fixture
def served() -> t.Iterator[tuple[Flask, str]]:
    holder = Holder()
    with LiveServer(holder) as server:
        holder.app = make_app(server.url)
        yield holder.app, server.url


def user_token(app: Flask) -> str:
    with app.app_context():
        return AuthBackend.state(app).issuer.issue_token(USER, [USER]).token


def test_the_barrier_guards_async_views(served: tuple[Flask, str]) -> None:
    app, base = served
    assert httpx.get(f"{base}/api/catalog/whoami", timeout=10).status_code == 401
    bad = httpx.get(
        f"{base}/api/catalog/whoami", headers={"Authorization": "Bearer nope"}, timeout=10
    )
    assert bad.status_code == 401
    good = httpx.get(
        f"{base}/api/catalog/whoami",
        headers={"Authorization": f"Bearer {user_token(app)}"},
        timeout=10,
    )
    assert good.status_code == 200
    assert good.json() == {"type": "user", "userEntityRef": USER}


def test_http_auth_and_the_cookie_in_an_async_view(served: tuple[Flask, str]) -> None:
    app, _ = served
    client = app.test_client()
    token = user_token(app)
    issued = client.get(
        "/api/catalog/.backstage/auth/v1/cookie", headers={"Authorization": f"Bearer {token}"}
    )
    assert issued.status_code == 200
    answer = client.get("/api/catalog/docs")  # the cookie only
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json() == {"user": {"type": "user", "userEntityRef": USER}, "limited": True}
    client.delete_cookie("backstage-auth")
    assert client.get("/api/catalog/docs").status_code == 401


def test_plugin_async_client_calls_another_plugin_on_behalf_of_the_user(
    served: tuple[Flask, str],
) -> None:
    app, base = served
    answer = httpx.get(
        f"{base}/api/search/query",
        headers={"Authorization": f"Bearer {user_token(app)}"},
        timeout=20,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "status": 200,
        "catalog_saw": {
            "type": "user",
            "userEntityRef": USER,
            "actor": {"type": "service", "subject": "plugin:search"},
        },
    }


def test_plugin_async_client_arguments() -> None:
    with pytest.raises(TypeError):
        plugin_async_client()
    with pytest.raises(TypeError):
        plugin_async_client(auth=t.cast(t.Any, object()))  # no target
