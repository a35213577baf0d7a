from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_backstage_auth import ServerTokenManager
from flask_backstage_auth.config import ConfigReader
from tests.conftest import LiveServer, new_secret


def test_health_is_open(client: FlaskClient) -> None:
    response = client.get("/api/app/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/catalog/entities"),
        ("GET", "/api/catalog/entities/by-name/component/default/petstore"),
        ("POST", "/api/catalog/entities"),
        ("POST", "/api/search/index"),
        ("GET", "/api/search/query?term=pet"),
        ("GET", "/api/techdocs/static/docs/index.html"),
        ("GET", "/api/techdocs/documents"),
        ("GET", "/api/app/whoami"),
    ],
)
def test_protected_routes_need_a_token(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method, json={"kind": "x"} if method == "POST" else None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    body = response.get_json()
    assert body["error"] == {"name": "AuthenticationError", "message": "Missing credentials"}
    assert body["response"] == {"statusCode": 401}
    bad = client.open(path, method=method, headers={"Authorization": "Bearer not.a.token"})
    assert bad.status_code == 401
    assert bad.get_json()["error"]["message"] == "Illegal token"


def test_catalog_with_a_token(client: FlaskClient, auth_headers: dict[str, str]) -> None:
    entities = client.get("/api/catalog/entities", headers=auth_headers).get_json()
    assert {e["metadata"]["name"] for e in entities} >= {"petstore", "team-a"}
    one = client.get(
        "/api/catalog/entities/by-name/Component/default/petstore", headers=auth_headers
    )
    assert one.status_code == 200
    assert one.get_json()["spec"]["owner"] == "group:default/team-a"
    missing = client.get(
        "/api/catalog/entities/by-name/component/default/nope", headers=auth_headers
    )
    assert missing.status_code == 404
    assert missing.get_json()["error"]["name"] == "NotFoundError"


def test_catalog_create(client: FlaskClient, auth_headers: dict[str, str]) -> None:
    entity = {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "new-service"},
        "spec": {"type": "service"},
    }
    created = client.post("/api/catalog/entities", json=entity, headers=auth_headers)
    assert created.status_code == 201
    assert created.get_json()["metadata"]["namespace"] == "default"
    again = client.post("/api/catalog/entities", json=entity, headers=auth_headers)
    assert again.status_code == 409
    for bad in ({}, {"kind": "Component"}, [], "text"):
        response = client.post("/api/catalog/entities", json=bad, headers=auth_headers)
        assert response.status_code == 400
        assert response.get_json()["error"]["name"] == "InputError"
    fetched = client.get(
        "/api/catalog/entities/by-name/component/default/new-service", headers=auth_headers
    )
    assert fetched.status_code == 200


def test_catalog_paging_and_bad_arguments(
    client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    page = client.get("/api/catalog/entities?offset=1&limit=2", headers=auth_headers).get_json()
    assert len(page) == 2
    assert client.get("/api/catalog/entities?limit=-1", headers=auth_headers).status_code == 400


def test_techdocs_css_is_exempt_and_html_is_not(
    client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    with client.get("/api/techdocs/static/docs/site.css") as css:
        assert css.status_code == 200
        assert b"font-family" in css.data
    assert client.get("/api/techdocs/static/docs/index.html").status_code == 401
    with client.get(
        "/api/techdocs/static/docs/getting-started/index.html", headers=auth_headers
    ) as html:
        assert html.status_code == 200 and b"Getting started" in html.data
    # a path leaving the docs folder is a 404, even with a token
    escape = client.get("/api/techdocs/static/docs/../../__init__.py", headers=auth_headers)
    assert escape.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/api/techdocs/static/docs/../static/docs/index.html.css",
        "/api/techdocs/static/docs/%2e%2e/docs/index.html",
        "/api/techdocs/static/docs//site.css",
        "/api/techdocs/static/docs/./site.css",
        "/api/techdocs/static/docs/getting-started%2findex.html",
        "/api/techdocs/static/docs/index.html?x=.css",
        "/api/techdocs/static/docs/index.html%00.css",
        "/api/techdocs/static/docs/index.html/.css",
        "/api/techdocs/static/docs/SITE.CSS",
        "/api/techdocs/static/docs/index.html.CSS",
        "/api/catalog/entities.css",
        "/api/techdocs/static/docs/..\\index.html.css",
    ],
)
def test_css_exemption_resists_path_tricks(client: FlaskClient, path: str) -> None:
    with client.get(path) as response:
        # 404: an exempt-looking path that names no file; never the document
        assert response.status_code in (401, 404)
        assert b"<html" not in response.data.lower()
    if not path.endswith("/.css"):
        assert response.status_code == 401


def test_whoami_describes_the_caller(client: FlaskClient, auth_headers: dict[str, str]) -> None:
    response = client.get("/api/app/whoami", headers=auth_headers)
    assert response.status_code == 200
    assert response.get_json() == {
        "principal": {"type": "service", "subject": "external:backstage-plugin"}
    }


def test_unknown_routes_do_not_leak_to_anonymous_callers(
    client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    assert client.get("/api/unknown").status_code == 401
    assert client.get("/api/catalog/unknown").status_code == 401
    response = client.get("/api/catalog/unknown", headers=auth_headers)
    assert response.status_code == 404
    assert response.get_json()["error"]["name"] == "NotFoundError"


STATIC = {"Authorization": "Bearer example-catalog-reader-token"}


def test_development_static_token_is_restricted_to_the_catalog() -> None:
    from example_app import create_app

    client = create_app({"TESTING": True}).test_client()  # the shipped app-config.yaml
    entities = client.get("/api/catalog/entities", headers=STATIC)
    assert entities.status_code == 200
    me = client.get("/api/app/whoami", headers=STATIC)
    assert me.status_code == 403
    assert (
        me.get_json()["error"]["message"]
        == "This token's access is restricted to plugin(s) 'catalog'"
    )
    assert client.post("/api/search/index", headers=STATIC).status_code == 403
    # restricted to action "read": creating an entity is refused by the permission check
    created = client.post(
        "/api/catalog/entities",
        headers=STATIC,
        json={"kind": "Component", "metadata": {"name": "x"}},
    )
    assert created.status_code == 403
    assert created.get_json()["error"] == {
        "name": "NotAllowedError",
        "message": "Permission denied: catalog.entity.create",
    }


def test_production_config_drops_the_development_token(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from example_app import HERE, create_app

    monkeypatch.setenv(
        "BACKSTAGE_APP_CONFIG",
        os.pathsep.join([str(HERE / "app-config.yaml"), str(HERE / "app-config.production.yaml")]),
    )
    monkeypatch.setenv("BACKEND_SECRET", new_secret())
    monkeypatch.setenv("CATALOG_READER_TOKEN", new_secret())
    client = create_app().test_client()
    assert client.get("/api/catalog/entities", headers=STATIC).status_code == 401


def test_techdocs_pages_through_the_user_cookie(app: Flask) -> None:
    from flask_backstage_auth.testing.mocks import mock_credentials

    client = app.test_client()
    client.set_cookie(*mock_credentials.limited_user_cookie("user:default/reader"))
    with client.get("/api/techdocs/static/docs/index.html") as page:
        assert page.status_code == 200
        assert b"Example documentation" in page.data
    assert client.get("/api/techdocs/documents").status_code == 401  # cookie: static docs only
    assert client.post("/api/catalog/entities", json={}).status_code == 401
    me = app.test_client().get(
        "/api/app/whoami", headers=mock_credentials.user_header("user:default/jane")
    )
    assert me.get_json() == {"principal": {"type": "user", "userEntityRef": "user:default/jane"}}


def _live_config(app: Flask) -> ConfigReader:
    return ConfigReader(app.config["BACKSTAGE_CONFIG"])


def _serve(app: Flask) -> LiveServer:
    from urllib.parse import urlsplit

    base = urlsplit(_live_config(app).get_string("backend.baseUrl"))
    server = LiveServer(app)
    # bind the live server where backend.baseUrl points
    server.server.server_close()
    from werkzeug.serving import make_server

    server.server = make_server("127.0.0.1", base.port or 80, app, threaded=True)
    server.url = f"http://127.0.0.1:{base.port}"
    import threading

    server.thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    return server


def test_search_indexer_calls_the_catalog_over_http(
    app: Flask, auth_headers: dict[str, str]
) -> None:
    with _serve(app) as server:
        import requests

        rebuilt = requests.post(f"{server.url}/api/search/index", headers=auth_headers, timeout=10)
        assert rebuilt.status_code == 200, rebuilt.text
        counts = rebuilt.json()["indexed"]
        assert counts["software-catalog"] >= 4
        assert counts["techdocs"] >= 2
        found = requests.get(
            f"{server.url}/api/search/query?term=pet store", headers=auth_headers, timeout=10
        )
        titles = [r["document"]["title"] for r in found.json()["results"]]
        assert titles == ["petstore"]
        docs = requests.get(
            f"{server.url}/api/search/query?term=getting", headers=auth_headers, timeout=10
        )
        assert [r["type"] for r in docs.json()["results"]] == ["techdocs"]


def test_search_indexer_fails_clearly_when_the_catalog_rejects_it(secret: str) -> None:
    """The catalog lives in another deployment, with keys of its own."""
    from example_app import create_app
    from tests.conftest import free_port

    catalog_port, search_port = free_port(), free_port()
    catalog_app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": "sqlite://",  # a database of its own
            "BACKSTAGE_CONFIG": {
                "backend": {
                    "baseUrl": f"http://127.0.0.1:{catalog_port}",
                    "auth": {"keys": [{"secret": new_secret()}]},
                }
            },
        }
    )
    search_app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": "sqlite://",  # a database of its own
            "BACKSTAGE_CONFIG": {
                "backend": {
                    "baseUrl": f"http://127.0.0.1:{search_port}",
                    "auth": {"keys": [{"secret": secret}]},
                },
                "discovery": {
                    "endpoints": [
                        {
                            "target": f"http://127.0.0.1:{catalog_port}/api/{{{{pluginId}}}}",
                            "plugins": ["catalog"],
                        }
                    ]
                },
            },
        }
    )
    token = (
        ServerTokenManager.from_config({"backend": {"auth": {"keys": [{"secret": secret}]}}})
        .get_token()
        .token
    )
    with _serve(catalog_app), _serve(search_app) as search:
        import requests

        response = requests.post(
            f"{search.url}/api/search/index",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert message.startswith("Catalog collator:")
    assert "answered 401" in message
    assert "Failed plugin token verification" in message
    assert token not in response.text


def test_create_app_reads_backstage_app_config(
    tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from example_app import create_app

    secret = new_secret()
    base = tmp_path / "app-config.yaml"
    base.write_text("backend:\n  baseUrl: http://127.0.0.1:7007\n", encoding="utf-8")
    prod = tmp_path / "app-config.production.yaml"
    prod.write_text(
        "backend:\n  auth:\n    keys:\n      - secret: ${BACKEND_SECRET}\n", encoding="utf-8"
    )
    import os

    monkeypatch.setenv("BACKSTAGE_APP_CONFIG", os.pathsep.join([str(base), str(prod)]))
    monkeypatch.setenv("BACKEND_SECRET", secret)
    app = create_app()
    assert app.config["BACKSTAGE_CONFIG"]["backend"]["auth"]["keys"] == [{"secret": secret}]
    token = ServerTokenManager.from_config(app.config["BACKSTAGE_CONFIG"]).get_token().token
    assert (
        app.test_client()
        .get("/api/catalog/entities", headers={"Authorization": f"Bearer {token}"})
        .status_code
        == 200
    )


def test_production_without_keys_starts_on_plugin_tokens(
    tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No shared secret: plugins still call each other with plugin tokens."""
    from example_app import create_app
    from flask_backstage_auth import BackstageAuth, ConfigError

    config = tmp_path / "app-config.yaml"
    config.write_text("backend:\n  baseUrl: http://127.0.0.1:7007\n", encoding="utf-8")
    monkeypatch.setenv("BACKSTAGE_APP_CONFIG", str(config))
    app = create_app()
    state = BackstageAuth.state(app)
    with pytest.raises(ConfigError, match="backend.auth.keys"):
        state.token_manager.get_token()
    search = state.auth("search")
    token = search.get_plugin_request_token(
        on_behalf_of=search.get_own_service_credentials(), target_plugin_id="catalog"
    ).token
    response = app.test_client().get(
        "/api/catalog/entities", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
    assert BackstageAuth.state(create_app({"TESTING": True})).token_manager.generated_key


def _guest_token(client: FlaskClient) -> str:
    response = client.post("/api/auth/guest/refresh")
    assert response.status_code == 200
    identity = response.get_json()["backstageIdentity"]
    assert identity["identity"]["userEntityRef"] == "user:development/guest"
    return t.cast(str, identity["token"])


def test_guest_signs_in_during_development_only(tmp_path: t.Any) -> None:
    from example_app import create_app

    dev = create_app({"TESTING": True}).test_client()
    token = _guest_token(dev)
    me = dev.get("/api/app/whoami", headers={"Authorization": f"Bearer {token}"})
    assert me.get_json() == {
        "principal": {"type": "user", "userEntityRef": "user:development/guest"}
    }
    prod = create_app({"BACKSTAGE_AUTH_DEVELOPMENT": False}).test_client()
    refused = prod.post("/api/auth/guest/refresh")
    assert refused.status_code == 403
    assert "outside of a development environment" in refused.get_json()["error"]["message"]


def test_a_browser_session_reads_docs_through_the_cookie() -> None:
    from example_app import create_app

    client = create_app({"TESTING": True}).test_client()
    token = _guest_token(client)
    assert client.get("/api/techdocs/static/docs/index.html").status_code == 401
    issued = client.get(
        "/api/techdocs/.backstage/auth/v1/cookie", headers={"Authorization": f"Bearer {token}"}
    )
    assert issued.status_code == 200
    assert issued.get_json()["expiresAt"].endswith("Z")
    assert "backstage-auth=" in issued.headers["Set-Cookie"]
    assert "HttpOnly" in issued.headers["Set-Cookie"]
    with client.get("/api/techdocs/static/docs/getting-started/index.html") as page:
        assert page.status_code == 200 and b"Getting started" in page.data
    # the cookie is for reading docs, not for the API
    assert client.get("/api/catalog/entities").status_code == 401
    assert client.delete("/api/techdocs/.backstage/auth/v1/cookie").status_code == 401
    signed_out = client.delete(
        "/api/techdocs/.backstage/auth/v1/cookie", headers={"Authorization": f"Bearer {token}"}
    )
    assert signed_out.status_code == 204
    assert client.get("/api/techdocs/static/docs/index.html").status_code == 401


def test_search_calls_the_catalog_on_behalf_of_the_user(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    client = app.test_client()
    token = _guest_token(client)
    with _serve(app) as server:
        import requests

        with caplog.at_level(logging.INFO, logger="example_app.catalog"):
            rebuilt = requests.post(
                f"{server.url}/api/search/index",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
    assert rebuilt.status_code == 200, rebuilt.text
    callers = [r.getMessage() for r in caplog.records if r.name == "example_app.catalog"]
    assert callers == [
        "Entities listed by backstageCredentials{userPrincipal{user:development/guest,"
        "actor=servicePrincipal{plugin:search}}}"
    ]


def test_two_example_instances_share_keys_across_a_rotation(tmp_path: t.Any) -> None:
    from example_app import create_app
    from flask_backstage_auth import BackstageAuth

    now = [1_900_000_000.0]
    database = {
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'shared.sqlite'}",
        "TESTING": True,
    }
    one = create_app(database, clock=lambda: now[0])
    two = create_app(database, clock=lambda: now[0])
    search = BackstageAuth.state(one).auth("search")

    def token() -> str:
        return search.get_plugin_request_token(
            on_behalf_of=search.get_own_service_credentials(), target_plugin_id="catalog"
        ).token

    def opens_two(value: str) -> bool:
        reply = two.test_client().get(
            "/api/catalog/entities", headers={"Authorization": f"Bearer {value}"}
        )
        return reply.status_code == 200

    before = token()
    assert opens_two(before)
    now[0] += 3601  # the first key's hour is over: a new key signs
    after = token()
    assert opens_two(after)
    now[0] += 1800
    assert opens_two(token())
    for app in (one, two):
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def example_database(request: pytest.FixtureRequest, tmp_path: t.Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'walkthrough.sqlite'}"
    from tests.conftest import _pg_url_in

    url = _pg_url_in(request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_schema"))
    return t.cast(str, url.render_as_string(hide_password=False))


def test_access_token_walkthrough(example_database: str) -> None:
    """The README's walk-through: create a catalog:read token, use it, revoke it."""
    from example_app import create_app

    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": example_database})
    try:
        client = app.test_client()
        admin = {"Authorization": f"Bearer {_guest_token(client)}"}
        created = client.post(
            "/api/access-tokens/service/",
            headers=admin,
            json={
                "name": "catalog-reader",
                "description": "reads the catalog for CI",
                "groupEntityRef": "group:default/team-a",
                "scopes": ["catalog:read"],
                "expiresInDays": 30,
            },
        )
        assert created.status_code == 201, created.get_data(as_text=True)
        raw = created.get_json()["rawToken"]
        token_id = created.get_json()["token"]["id"]
        assert raw.startswith("bsat_")
        as_token = {"Authorization": f"Bearer {raw}"}
        assert client.get("/api/catalog/entities", headers=as_token).status_code == 200
        refused = client.post("/api/search/index", headers=as_token)
        assert refused.status_code == 403
        assert "restricted to plugin(s) 'catalog'" in refused.get_json()["error"]["message"]
        write = client.post(
            "/api/catalog/entities",
            headers=as_token,
            json={"kind": "Component", "metadata": {"name": "x"}},
        )
        assert write.status_code == 403
        listed = client.get("/api/access-tokens/service/?status=active", headers=admin).get_json()
        assert [t["name"] for t in listed["tokens"]] == ["catalog-reader"]
        assert raw not in json.dumps(listed)
        revoked = client.delete(
            f"/api/access-tokens/service/{token_id}", headers=admin, json={"reason": "demo"}
        )
        assert revoked.status_code == 204
        for method, path in (
            ("GET", "/api/catalog/entities"),
            ("POST", "/api/search/index"),
            ("GET", "/api/app/whoami"),
        ):
            response = client.open(path, method=method, headers=as_token)
            assert response.status_code == 401, path
        # the token itself may not manage tokens, and a plain user is no admin
    finally:
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()


class _BackstageAuthBackend:
    """A stand-in for a Node backend's auth plugin: its user-token key set."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self.keys: dict[str, t.Any] = {}
        self.requests: list[str] = []
        self.rotate()
        self._ec = ec

    def rotate(self) -> str:
        from cryptography.hazmat.primitives.asymmetric import ec

        kid = f"key-{len(self.keys) + 1}"
        self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        return kid

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        from jwt.algorithms import ECAlgorithm

        path = environ["PATH_INFO"]
        self.requests.append(path)
        if path != "/api/auth/.well-known/jwks.json":
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error": {"name": "NotFoundError", "message": "Not found"}}']
        keys = [
            {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": "ES256"}
            for kid, key in self.keys.items()
        ]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"keys": keys}).encode()]

    def user_token(self, kid: str, sub: str = "user:default/jane", key: t.Any = None) -> str:
        import time as clock

        import jwt

        now = int(clock.time())
        claims = {
            "iss": "http://127.0.0.1:7007/api/auth",
            "sub": sub,
            "ent": [sub],
            "aud": "backstage",
            "iat": now,
            "exp": now + 3600,
        }
        return jwt.encode(
            claims,
            key or self.keys[kid],
            algorithm="ES256",
            headers={"typ": "vnd.backstage.user", "kid": kid},
        )


def _backstage_layered_config(auth_url: str) -> dict[str, t.Any]:
    from flask_backstage_auth.config import load_app_config

    here = Path(__file__).parents[1] / "example_app"
    document = load_app_config(here / "app-config.yaml", here / "app-config.backstage.yaml")
    (endpoint,) = document["discovery"]["endpoints"]
    assert endpoint == {"target": "http://127.0.0.1:7007/api/{{pluginId}}", "plugins": ["auth"]}
    endpoint["target"] = f"{auth_url}/api/{{{{pluginId}}}}"
    document["techdocs"]["docsDir"] = str(here / "docs")
    return document


def test_beside_a_backstage_backend_the_example_uses_its_auth_plugin() -> None:
    """app-config.backstage.yaml: no /api/auth here; Backstage's user tokens verify."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from example_app import create_app
    from flask_backstage_auth import AuthBackend, BackstageAuth

    backstage = _BackstageAuthBackend()
    with LiveServer(backstage) as node:
        app = create_app({"BACKSTAGE_CONFIG": _backstage_layered_config(node.url)})
        state = BackstageAuth.state(app)
        assert state.discovery.get_base_url("auth") == f"{node.url}/api/auth"
        assert state.discovery.get_base_url("catalog") == "http://127.0.0.1:7008/api/catalog"
        assert not any(rule.rule.startswith("/api/auth") for rule in app.url_map.iter_rules())
        assert not any(isinstance(ext, AuthBackend) for ext in app.extensions.values())
        assert "auth" not in app.blueprints
        client = app.test_client()
        token = backstage.user_token("key-1")
        headers = {"Authorization": f"Bearer {token}"}
        me = client.get("/api/app/whoami", headers=headers)
        assert me.status_code == 200, me.get_data(as_text=True)
        assert me.get_json()["principal"] == {"type": "user", "userEntityRef": "user:default/jane"}
        assert client.get("/api/catalog/entities", headers=headers).status_code == 200
        assert client.post("/api/auth/guest/refresh", headers=headers).status_code == 404
        assert client.get("/api/auth/.well-known/jwks.json", headers=headers).status_code == 404
        # The Node backend restarts with a new key: its first tokens verify at once.
        new_kid = backstage.rotate()
        fresh = {"Authorization": f"Bearer {backstage.user_token(new_kid)}"}
        assert client.get("/api/app/whoami", headers=fresh).status_code == 200
        assert backstage.requests.count("/api/auth/.well-known/jwks.json") == 2
        # A token naming Backstage's kid but signed by another key is refused.
        forged = backstage.user_token(new_kid, key=ec.generate_private_key(ec.SECP256R1()))
        refused = client.get("/api/app/whoami", headers={"Authorization": f"Bearer {forged}"})
        assert refused.status_code == 401
        assert refused.get_json()["error"]["message"] == "Failed user token verification"
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()


def test_the_backstage_config_layers_through_backstage_app_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from example_app import create_app

    here = Path(__file__).parents[1] / "example_app"
    monkeypatch.setenv(
        "BACKSTAGE_APP_CONFIG",
        os.pathsep.join([str(here / "app-config.yaml"), str(here / "app-config.backstage.yaml")]),
    )
    app = create_app()
    document = app.config["BACKSTAGE_CONFIG"]
    assert document["backend"]["listen"]["port"] == 7008
    assert document["backend"]["auth"]["externalAccess"] == []
    assert "auth" not in app.blueprints and "catalog" in app.blueprints
    assert "access-tokens" in app.blueprints


def test_plugins_placed_on_another_backend_are_not_served_here() -> None:
    """Beside an organisation's Backstage: its auth and catalog, not the example's."""
    from example_app import create_app
    from flask_backstage_auth import AuthBackend

    elsewhere = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": "sqlite://",
            "BACKSTAGE_CONFIG": {
                "backend": {"baseUrl": "http://127.0.0.1:7007"},
                "discovery": {
                    "endpoints": [
                        {
                            "target": "http://127.0.0.1:1/api/{{pluginId}}",
                            "plugins": ["auth", "catalog"],
                        }
                    ]
                },
            },
        }
    )
    assert {"auth", "catalog"}.isdisjoint(elsewhere.blueprints)
    assert {"app", "search", "techdocs"} <= set(elsewhere.blueprints)
    with pytest.raises(RuntimeError):
        AuthBackend.state(elsewhere)
    rules = [rule.rule for rule in elsewhere.url_map.iter_rules()]
    assert not [r for r in rules if r.startswith(("/api/auth/", "/api/catalog/"))]
    assert "/api/search/index" in rules
    client = elsewhere.test_client()
    assert client.post("/api/auth/guest/refresh").status_code == 401  # no open route there
    # A user token is checked with the keys of the auth plugin elsewhere,
    # which cannot be fetched here: refused.
    home = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    token = home.test_client().post("/api/auth/guest/refresh").get_json()["backstageIdentity"]
    response = client.get("/api/app/whoami", headers={"Authorization": f"Bearer {token['token']}"})
    assert response.status_code == 401


def test_every_error_is_json_by_the_one_setting(
    client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    assert client.application.config["BACKSTAGE_AUTH_JSON_ERRORS"] is True
    missing = client.get("/api/catalog/no-such-route", headers=auth_headers)
    assert (missing.status_code, missing.get_json()["error"]["name"]) == (404, "NotFoundError")
    assert missing.get_json()["request"] == {"method": "GET", "url": "/no-such-route"}
    wrong = client.delete("/api/app/health", headers=auth_headers)
    assert (wrong.status_code, wrong.get_json()["response"]) == (405, {"statusCode": 405})


@pytest.mark.parametrize("plugin_id", ["search", "techdocs", "app", "access-tokens"])
def test_any_example_plugin_placed_elsewhere_is_not_served_here(plugin_id: str) -> None:
    from example_app import create_app

    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": "sqlite://",
            "BACKSTAGE_CONFIG": {
                "backend": {"baseUrl": "http://127.0.0.1:7008"},
                "discovery": {
                    "endpoints": [
                        {"target": "http://127.0.0.1:7007/api/{{pluginId}}", "plugins": [plugin_id]}
                    ]
                },
            },
        }
    )
    assert plugin_id not in app.blueprints
    assert {"auth", "catalog", "search", "techdocs", "app", "access-tokens"} - {plugin_id} <= set(
        app.blueprints
    )
