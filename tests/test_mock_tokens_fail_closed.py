"""Mock tokens fail closed: the invalid ones and malformed ones are 401s.

Mock tokens exist only with ``TESTING`` and ``BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS``
on; even there, a mock token that is documented as invalid, or whose payload is
not ``{"sub": "<string>"}``, never becomes credentials.
"""

from __future__ import annotations

import pytest
from flask import Blueprint, Flask, Response, jsonify
from flask.testing import FlaskClient

from flask_backstage_auth import BackstageAuth, get_credentials
from tests.conftest import new_secret


def make_app(*, testing: bool = True) -> Flask:
    app = Flask("mock-tokens", static_folder=None)
    app.config.update(
        TESTING=testing,
        BACKSTAGE_AUTH_DEVELOPMENT=False,
        BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS=testing,
        BACKSTAGE_CONFIG={"backend": {"auth": {"keys": [{"secret": new_secret()}]}}},
    )
    BackstageAuth(app)
    catalog = Blueprint("catalog", __name__, url_prefix="/api/catalog")

    @catalog.route("/entities", methods=["GET", "POST"])
    def entities() -> Response:
        return jsonify(get_credentials().to_dict())

    app.register_blueprint(catalog)
    return app


@pytest.fixture
def client() -> FlaskClient:
    return make_app().test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_valid_mock_token_is_accepted(client: FlaskClient) -> None:
    """The positive control."""
    response = client.get(
        "/api/catalog/entities", headers=bearer('mock-user-token:{"sub":"user:default/x"}')
    )
    assert response.status_code == 200
    assert response.get_json()["principal"] == {
        "type": "user",
        "userEntityRef": "user:default/x",
    }


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("mock-invalid-user-token", "User token is invalid"),
        ("mock-invalid-service-token", "Service token is invalid"),
        ("mock-user-token:{notjson", "Invalid mock token"),
        ("mock-user-token:[1]", "Invalid mock token"),
        ('mock-user-token:{"sub":5}', "Invalid mock token"),
        ('mock-limited-user-token:{"sub":null}', "Invalid mock token"),
        ("mock-service-token:null", "Invalid mock token"),
        ('mock-service-token:"plugin:x"', "Invalid mock token"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_refused(client: FlaskClient, token: str, message: str, method: str) -> None:
    response = client.open("/api/catalog/entities", method=method, headers=bearer(token))
    assert response.status_code == 401
    assert response.get_json()["error"] == {"name": "AuthenticationError", "message": message}


@pytest.mark.parametrize(
    "token", ["mock-user-token", "mock-service-token", 'mock-user-token:{"sub":"user:default/x"}']
)
def test_never_outside_testing(token: str) -> None:
    response = (
        make_app(testing=False).test_client().get("/api/catalog/entities", headers=bearer(token))
    )
    assert response.status_code == 401
    assert response.get_json()["error"]["message"] == "Illegal token"
