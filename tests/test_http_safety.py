"""Bodies are bounded before they are read (413), and secrets are never cached (no-store).

Chunked bodies (``Transfer-Encoding: chunked``, no ``Content-Length``) go
through a real WSGI server, Werkzeug's, which terminates the input stream;
the test client covers the declared ``Content-Length`` and the same stream.
"""

from __future__ import annotations

import http.client
import io
import json
import typing as t
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_backstage_auth.router.safety import MAX_BODY
from tests.access_token_app import TEAM, bearer, build, user_token
from tests.conftest import LiveServer

BASE = "/api/access-tokens"
COOKIE = f"{BASE}/.backstage/auth/v1/cookie"
TOO_LARGE = {
    "name": "PayloadTooLargeError",
    "message": f"The request body must not exceed {MAX_BODY} bytes",
}


@pytest.fixture
def app() -> Flask:
    return build(guest=True)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def padded(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes."""
    head, tail = b'{"tokens": [], "pad": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def chunked_post(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, t.Any]:
    """POST ``body`` in 8 KiB chunks, without a Content-Length, over a real socket."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
        connection.request(
            "POST",
            path,
            body=chunks,
            headers={"Content-Type": "application/json", **headers},
            encode_chunked=True,
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def streamed(client: FlaskClient, path: str, body: bytes, **kwargs: t.Any) -> t.Any:
    """A chunked body (no Content-Length), on a stream the server says it terminates."""
    headers = {"Transfer-Encoding": "chunked", **kwargs.pop("headers", {})}
    response = client.post(
        path,
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers=headers,
        environ_overrides={"wsgi.input_terminated": True},
        **kwargs,
    )
    assert response.request.content_length is None
    return response


# -- bounded bodies -------------------------------------------------------------


def test_a_declared_body_over_the_limit_is_413_before_it_is_read(
    app: Flask, client: FlaskClient
) -> None:
    owner = bearer(user_token(app))
    token = client.post(
        f"{BASE}/service/",
        json={"name": "ci", "groupEntityRef": TEAM, "scopes": ["catalog:read"]},
        headers=owner,
    ).get_json()["token"]
    big = padded(MAX_BODY + 1)
    for method, path, headers in (
        ("POST", f"{BASE}/service/revoke", {}),  # the unauthenticated leak report
        ("POST", f"{BASE}/service/", owner),
        ("PATCH", f"{BASE}/service/{token['id']}", owner),
        ("POST", f"{BASE}/service/{token['id']}/rotate", owner),
        ("POST", f"{BASE}/service/{token['id']}/revoke", owner),
        ("DELETE", f"{BASE}/service/{token['id']}", owner),
        ("POST", f"{BASE}/personal/", owner),
    ):
        response = client.open(
            path, method=method, data=big, content_type="application/json", headers=headers
        )
        assert response.status_code == 413, (method, path, response.get_data(as_text=True))
        assert response.get_json()["error"] == TOO_LARGE
        assert response.get_json()["response"] == {"statusCode": 413}
    listed = client.get(f"{BASE}/service/", headers=owner).get_json()["tokens"]
    assert listed == [token]


def test_a_body_at_the_limit_is_read(client: FlaskClient) -> None:
    for send in (
        lambda body: client.post(
            f"{BASE}/service/revoke", data=body, content_type="application/json"
        ),
        lambda body: streamed(client, f"{BASE}/service/revoke", body),
    ):
        response = send(padded(MAX_BODY))
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json() == {"revoked": 0}


def test_a_streamed_body_over_the_limit_is_413(app: Flask, client: FlaskClient) -> None:
    response = streamed(client, f"{BASE}/service/revoke", padded(MAX_BODY + 1))
    assert response.status_code == 413
    assert response.get_json()["error"] == TOO_LARGE
    owner = bearer(user_token(app))
    response = streamed(client, f"{BASE}/service/", padded(4 * MAX_BODY), headers=owner)
    assert response.status_code == 413
    assert client.get(f"{BASE}/service/", headers=owner).get_json()["total"] == 0


def test_chunked_bodies_through_a_real_server(app: Flask) -> None:
    owner = bearer(user_token(app))
    with LiveServer(app) as server:
        # Under the limit, a chunked body is read like any other.
        status, body = chunked_post(server.url, f"{BASE}/service/revoke", padded(1000), {})
        assert (status, body) == (200, {"revoked": 0})
        create = json.dumps(
            {"name": "chunked", "groupEntityRef": TEAM, "scopes": ["catalog:read"]}
        ).encode()
        status, body = chunked_post(server.url, f"{BASE}/service/", create, owner)
        assert status == 201 and body["token"]["name"] == "chunked"
        # Over it: 413, for the anonymous leak report and for a signed-in create.
        big = padded(MAX_BODY + 1)
        status, body = chunked_post(server.url, f"{BASE}/service/revoke", big, {})
        assert status == 413 and body["error"] == TOO_LARGE
        status, body = chunked_post(server.url, f"{BASE}/service/", big, owner)
        assert status == 413 and body["error"] == TOO_LARGE
    listed = app.test_client().get(f"{BASE}/service/", headers=owner).get_json()["tokens"]
    assert [token["name"] for token in listed] == ["chunked"]


def test_the_apps_smaller_limit_wins() -> None:
    app = build(MAX_CONTENT_LENGTH=100)
    response = app.test_client().post(
        f"{BASE}/service/revoke", data=padded(101), content_type="application/json"
    )
    assert response.status_code == 413
    assert response.get_json()["error"]["message"] == "The request body must not exceed 100 bytes"
    ok = app.test_client().post(
        f"{BASE}/service/revoke", data=padded(100), content_type="application/json"
    )
    assert ok.status_code == 200


def test_the_auth_backend_and_the_cookie_endpoint_bound_bodies(
    app: Flask, client: FlaskClient
) -> None:
    """They read no body: a declared one over the limit is refused before any work."""
    owner = bearer(user_token(app))
    big = padded(MAX_BODY + 1)
    for method, path, headers in (
        ("GET", COOKIE, owner),
        ("DELETE", COOKIE, owner),
        ("GET", "/api/catalog/.backstage/auth/v1/cookie", owner),
        ("GET", "/api/auth/.well-known/jwks.json", {}),
        ("GET", "/api/catalog/.backstage/auth/v1/jwks.json", {}),
    ):
        response = client.open(path, method=method, data=big, headers=headers)
        assert response.status_code == 413, (method, path, response.get_data(as_text=True))
        assert response.get_json()["error"] == TOO_LARGE
        assert "Set-Cookie" not in response.headers
    # Without a body they work.
    assert client.get(COOKIE, headers=owner).status_code == 200
    assert client.get("/api/auth/.well-known/jwks.json").status_code == 200
    assert client.get("/api/catalog/.backstage/auth/v1/jwks.json").status_code == 200


def test_guest_refresh_bounds_its_body(client: FlaskClient) -> None:
    big = padded(MAX_BODY + 1)
    response = client.post("/api/auth/guest/refresh", data=big, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"] == TOO_LARGE
    assert "backstageIdentity" not in response.get_data(as_text=True)
    assert client.post("/api/auth/guest/refresh").status_code == 200


# -- secrets are never cached -----------------------------------------------------


@pytest.mark.parametrize("kind", ["service", "personal"])
def test_create_and_rotate_answers_are_no_store(app: Flask, client: FlaskClient, kind: str) -> None:
    owner = bearer(user_token(app))
    body: dict[str, t.Any] = {"name": "ci", "scopes": ["catalog:read"]}
    if kind == "service":
        body["groupEntityRef"] = TEAM
    created = client.post(f"{BASE}/{kind}/", json=body, headers=owner)
    assert created.status_code == 201 and "rawToken" in created.get_json()
    assert created.headers["Cache-Control"] == "no-store"
    token_id = created.get_json()["token"]["id"]
    rotated = client.post(f"{BASE}/{kind}/{token_id}/rotate", json={}, headers=owner)
    assert rotated.status_code == 200 and "rawToken" in rotated.get_json()
    assert rotated.headers["Cache-Control"] == "no-store"


def test_cookie_answers_are_no_store(app: Flask, client: FlaskClient) -> None:
    owner = bearer(user_token(app))
    for plugin in ("access-tokens", "catalog"):
        issued = client.get(f"/api/{plugin}/.backstage/auth/v1/cookie", headers=owner)
        assert issued.status_code == 200
        assert "backstage-auth=" in issued.headers["Set-Cookie"]  # it carries a token
        assert issued.headers["Cache-Control"] == "no-store"
        cleared = client.delete(f"/api/{plugin}/.backstage/auth/v1/cookie", headers=owner)
        assert cleared.status_code == 204
        assert cleared.headers["Cache-Control"] == "no-store"


def test_guest_refresh_answers_are_no_store(client: FlaskClient) -> None:
    for method in ("GET", "POST"):
        response = client.open("/api/auth/guest/refresh", method=method)
        assert response.status_code == 200
        assert response.get_json()["backstageIdentity"]["token"]
        assert response.headers["Cache-Control"] == "no-store"
