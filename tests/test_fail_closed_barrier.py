"""The credentials barrier fails closed: an unexpected error, or a mount it cannot read.

Production mode, no ``TESTING`` mock tokens. An error inside the barrier
answers a generic 401 and runs no view; a policy whose mount routing does not
let us read, or whose mount the path is not under, opens nothing.
"""

from __future__ import annotations

import logging
import typing as t

import pytest
from flask import Blueprint, Flask, Response, jsonify
from flask.testing import FlaskClient

from flask_backstage_auth import BackstageAuth, get_credentials
from flask_backstage_auth.auth.service import AuthService
from flask_backstage_auth.auth.user.handler import create_limited_user_token
from flask_backstage_auth.auth_backend.extension import AuthBackend
from flask_backstage_auth.router.policies import add_auth_policy
from tests.conftest import new_secret

JANE = "user:default/jane"


class Backend:
    """A production-mode app, and the views that ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.app = app = Flask("fail-closed-barrier", static_folder=None)
        app.config.update(
            BACKSTAGE_AUTH_DEVELOPMENT=False,
            BACKSTAGE_CONFIG={
                "backend": {
                    "baseUrl": "http://localhost:7007",
                    "auth": {"keys": [{"secret": new_secret()}]},
                }
            },
        )
        self.auth = BackstageAuth(app)
        AuthBackend(app)

    def blueprint(self, name: str, **options: t.Any) -> Blueprint:
        bp = Blueprint(name, __name__, **options)
        ran = self.ran

        @bp.route("/entities", methods=["GET", "POST", "DELETE"])
        @bp.route("/docs/<path:page>", methods=["GET", "POST"])
        @bp.route("/public", methods=["GET", "POST"])
        def view(**variables: str) -> Response:
            ran.append(name)
            return jsonify(get_credentials().to_dict())

        return bp

    @property
    def client(self) -> FlaskClient:
        return self.app.test_client()

    def service_token(self) -> str:
        return BackstageAuth.state(self.app).token_manager.get_token().token

    def user_token(self) -> str:
        return AuthBackend.state(self.app).issuer.issue_token(JANE, [JANE]).token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_generic_401(response: t.Any, *secrets: str) -> None:
    assert response.status_code == 401
    assert response.get_json()["error"] == {
        "name": "AuthenticationError",
        "message": "Authentication failed",
    }
    body = response.get_data(as_text=True)
    assert "boom" not in body
    for secret in secrets:
        assert secret not in body


# -- the barrier's catch-all ----------------------------------------------------------


class TestAnUnexpectedErrorFailsClosed:
    @pytest.fixture
    def backend(self) -> Backend:
        backend = Backend()
        catalog = backend.blueprint("catalog", url_prefix="/api/catalog")
        add_auth_policy(catalog, path="/docs", allow="user-cookie")
        backend.app.register_blueprint(catalog)
        return backend

    @pytest.fixture
    def broken(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """Every authentication raises an error the barrier does not expect."""
        tokens: list[str] = []

        def boom(self: AuthService, token: str, **kwargs: t.Any) -> t.NoReturn:
            tokens.append(token)
            raise RuntimeError(f"boom {token}")

        monkeypatch.setattr(AuthService, "authenticate_entry", boom)
        return tokens

    @pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
    def test_a_bearer_token(
        self,
        backend: Backend,
        broken: list[str],
        method: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        token = backend.service_token()
        with caplog.at_level(logging.ERROR, "flask_backstage_auth"):
            response = backend.client.open(
                "/api/catalog/entities", method=method, headers=bearer(token)
            )
        assert broken == [token]  # the error came from where we made it
        assert_generic_401(response, token)
        assert backend.ran == []
        logged = [r for r in caplog.records if "barrier failed unexpectedly" in r.getMessage()]
        assert len(logged) == 1
        assert token not in caplog.text.replace(f"boom {token}", "")  # only in our own message

    def test_a_user_cookie_route(self, backend: Backend, broken: list[str]) -> None:
        limited, _ = create_limited_user_token(backend.user_token())
        browser = backend.client
        browser.set_cookie("backstage-auth", limited)
        response = browser.get("/api/catalog/docs/page")
        assert broken == [limited]
        assert_generic_401(response, limited)
        bearer_response = backend.client.get("/api/catalog/docs/page", headers=bearer(limited))
        assert_generic_401(bearer_response, limited)
        assert backend.ran == []

    def test_an_unrouted_url_under_a_plugin(self, backend: Backend, broken: list[str]) -> None:
        token = backend.user_token()
        response = backend.client.get("/api/catalog/nothing/here", headers=bearer(token))
        assert_generic_401(response, token)  # a 401, not the 404 a valid token would get

    def test_nothing_is_remembered_from_the_failure(
        self, backend: Backend, monkeypatch: pytest.MonkeyPatch, broken: list[str]
    ) -> None:
        token = backend.service_token()
        client = backend.client
        assert client.get("/api/catalog/entities", headers=bearer(token)).status_code == 401
        monkeypatch.undo()  # authentication works again
        response = client.get("/api/catalog/entities", headers=bearer(token))
        assert response.status_code == 200
        assert response.get_json()["principal"]["type"] == "service"
        assert backend.ran == ["catalog"]

    def test_a_route_that_needs_no_credentials_is_not_affected(
        self, backend: Backend, broken: list[str]
    ) -> None:
        """The positive control: ``unauthenticated`` decides before any token is read."""
        backend.auth.add_auth_policy(
            "catalog", path="/public", allow="unauthenticated", app=backend.app
        )
        response = backend.client.get("/api/catalog/public")
        assert response.status_code == 200
        assert response.get_json() == {"principal": {"type": "none"}}
        assert broken == []


# -- policies at mounts the barrier cannot read -----------------------------------------


class TestMountsThatCannotBeRead:
    def test_a_rule_in_a_blueprints_name_that_the_blueprint_does_not_have(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An app-level rule with a ``reports.`` endpoint: no mount, so no policy of
        ``reports`` applies to it (and the policy is reported as unmatchable)."""
        backend = Backend()
        reports = backend.blueprint("reports")
        add_auth_policy(reports, path="/", allow="unauthenticated")
        backend.app.register_blueprint(reports, url_prefix="/r")
        backend.app.add_url_rule("/elsewhere", "reports.extra", lambda: "extra")
        client = backend.client
        with caplog.at_level(logging.WARNING, "flask_backstage_auth"):
            assert client.get("/elsewhere").status_code == 401
        assert client.get("/r/entities").status_code == 200  # its own rules: open
        assert client.get("/r/nothing").status_code == 401  # unrouted: no mount to be under
        assert client.get("/elsewhere", headers=bearer(backend.service_token())).status_code == 200
        warned = [r.getMessage() for r in caplog.records if "can never match" in r.getMessage()]
        assert any("'reports'" in m and "could not be read" in m for m in warned), warned

    def test_a_blueprint_without_rules(self, caplog: pytest.LogCaptureFixture) -> None:
        backend = Backend()
        empty = Blueprint("empty", __name__)
        add_auth_policy(empty, path="/", allow="unauthenticated")
        backend.app.register_blueprint(empty, url_prefix="/api/empty")
        with caplog.at_level(logging.WARNING, "flask_backstage_auth"):
            assert backend.client.get("/api/empty/x").status_code == 401
        warned = [r.getMessage() for r in caplog.records if "can never match" in r.getMessage()]
        assert any("'empty'" in m and "could not be read" in m for m in warned), warned

    def test_a_mount_with_a_url_variable_opens_nothing(self) -> None:
        """``/<tenant>/reports`` is no path prefix: its policies never apply."""
        backend = Backend()
        reports = backend.blueprint("reports")
        add_auth_policy(reports, path="/public", allow="unauthenticated")
        backend.app.register_blueprint(reports, url_prefix="/<tenant>/reports")
        client = backend.client
        assert client.get("/acme/reports/public").status_code == 401
        token = backend.service_token()
        assert client.get("/acme/reports/public", headers=bearer(token)).status_code == 200


class TestMoreMounts:
    def test_a_rule_at_the_mount_itself(self) -> None:
        backend = Backend()
        root = Blueprint("reports", __name__)
        ran = backend.ran

        @root.get("")
        @root.get("/private")
        def view() -> str:
            ran.append("reports")
            return "ok"

        backend.app.register_blueprint(root, url_prefix="/internal/reports")
        backend.auth.add_auth_policy("reports", path="/", allow="unauthenticated", app=backend.app)
        client = backend.client
        assert client.get("/internal/reports").status_code == 200
        assert client.get("/internal/reports/private").status_code == 200
        assert client.get("/internal/reportsx").status_code == 401
        assert client.get("/api/reports").status_code == 401

    def test_a_root_rule_and_a_narrower_policy(self) -> None:
        backend = Backend()
        root = Blueprint("reports", __name__)

        @root.get("")
        @root.get("/public")
        def view() -> str:
            return "ok"

        add_auth_policy(root, path="/public", allow="unauthenticated")
        backend.app.register_blueprint(root, url_prefix="/internal/reports")
        client = backend.client
        assert client.get("/internal/reports/public").status_code == 200
        assert client.get("/internal/reports").status_code == 401

    def test_a_parent_whose_child_has_no_prefix(self) -> None:
        """A parent without rules reads its mount from a child mounted at its root."""
        backend = Backend()
        parent = Blueprint("parent", __name__)
        parent.register_blueprint(backend.blueprint("child"))
        backend.app.register_blueprint(parent, url_prefix="/p")
        backend.auth.add_auth_policy(
            "parent", path="/public", allow="unauthenticated", app=backend.app
        )
        client = backend.client
        assert client.get("/p/public").status_code == 200
        assert client.get("/p/entities").status_code == 401
        assert client.get("/public").status_code == 401  # not under the mount
        assert client.get("/api/parent/public").status_code == 401

    def test_a_parent_with_a_child_without_rules_and_two_with(self) -> None:
        backend = Backend()
        parent = Blueprint("parent", __name__)
        hooks = Blueprint("hooks", __name__)  # only hooks, no rules: no mount of its own
        hooks.before_request(lambda: None)
        parent.register_blueprint(hooks, url_prefix="/hooks")
        parent.register_blueprint(backend.blueprint("first"), url_prefix="/one")
        parent.register_blueprint(backend.blueprint("second"), url_prefix="/two")
        backend.app.register_blueprint(parent, url_prefix="/p")
        backend.auth.add_auth_policy(
            "parent", path="/two/public", allow="unauthenticated", app=backend.app
        )
        client = backend.client
        assert client.get("/p/two/public").status_code == 200
        assert client.get("/p/one/public").status_code == 401
        assert client.get("/p/two/entities").status_code == 401
        assert client.get("/two/public").status_code == 401
        assert backend.ran == ["second"]

    def test_the_same_child_twice_under_one_parent(self) -> None:
        backend = Backend()
        parent = Blueprint("parent", __name__)
        child = backend.blueprint("child")
        parent.register_blueprint(child, url_prefix="/a")
        parent.register_blueprint(child, url_prefix="/b", name="again")
        backend.app.register_blueprint(parent, url_prefix="/p")
        backend.auth.add_auth_policy(
            "parent", path="/b/public", allow="unauthenticated", app=backend.app
        )
        client = backend.client
        assert client.get("/p/b/public").status_code == 200
        assert client.get("/p/a/public").status_code == 401

    @pytest.mark.parametrize("inner_first", [True, False])
    def test_unrouted_urls_belong_to_the_longest_mount(self, inner_first: bool) -> None:
        backend = Backend()
        outer = backend.blueprint("outer")
        inner = backend.blueprint("inner")
        add_auth_policy(inner, path="/", allow="unauthenticated")
        registrations = [(inner, "/api/inner"), (outer, "/api")]
        for blueprint, prefix in registrations if inner_first else registrations[::-1]:
            backend.app.register_blueprint(blueprint, url_prefix=prefix)
        client = backend.client
        assert client.get("/api/inner/nothing").status_code == 404  # inner's: open, unrouted
        assert client.get("/api/nothing").status_code == 401  # outer's: closed
        assert client.get("/api/innerx").status_code == 401
        assert client.get("/api/entities").status_code == 401
        assert client.get("/api/inner/entities").status_code == 200
