"""The ``http_auth`` services' index of recent ``Authorization`` headers.

A repeated header skips parsing and the verifier, but never outlives the
verifier's cache entry it holds: revocation, eviction, expiry and a disabled
cache all reach it.
"""

from __future__ import annotations

import typing as t

import pytest
from flask import Blueprint, Flask, jsonify

from flask_backstage_auth import BackstageAuth, ServicePrincipal, add_auth_policy
from flask_backstage_auth.auth.jose import PeekedToken
from flask_backstage_auth.auth.service import VerifiedToken
from flask_backstage_auth.auth.user.handler import create_limited_user_token
from flask_backstage_auth.auth_backend.extension import AuthBackend

JANE = "user:default/jane"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Handler:
    """Accepts ``good-<n>`` tokens while they are not revoked; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.revoked: set[str] = set()

    def __call__(self, peeked: PeekedToken) -> VerifiedToken | None:
        token = peeked.token
        if not token.startswith("good-"):
            return None
        self.calls.append(token)
        if token in self.revoked:
            from flask_backstage_auth.errors import AuthenticationError

            raise AuthenticationError("Revoked")
        return VerifiedToken(ServicePrincipal(f"svc:{token}"), revocation_id=token)


def make_app(clock: Clock, handler: Handler, **config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(BACKSTAGE_AUTH_DEVELOPMENT=False, **config)
    app.config["BACKSTAGE_CONFIG"] = {
        "backend": {"auth": {"keys": [{"secret": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}]}}
    }
    BackstageAuth(app, clock=clock)
    bp = Blueprint("catalog", __name__, url_prefix="/api/catalog")

    @bp.route("/whoami", methods=["GET", "POST"])
    def whoami() -> t.Any:
        from flask_backstage_auth import get_credentials

        return jsonify(get_credentials().principal.to_dict())

    app.register_blueprint(bp)
    with app.app_context():
        BackstageAuth.register_token_handler(handler, stage="first-party")
    return app


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def handler() -> Handler:
    return Handler()


def get(app: Flask, header: str, method: str = "GET") -> t.Any:
    return app.test_client().open(
        "/api/catalog/whoami", method=method, headers={"Authorization": header}
    )


def test_a_repeated_header_is_verified_once(clock: Clock, handler: Handler) -> None:
    app = make_app(clock, handler)
    for _ in range(3):
        assert get(app, "Bearer good-1").get_json()["subject"] == "svc:good-1"
    assert handler.calls == ["good-1"]


def test_a_revocation_reaches_an_indexed_header(clock: Clock, handler: Handler) -> None:
    app = make_app(clock, handler)
    assert get(app, "Bearer good-1").status_code == 200
    handler.revoked.add("good-1")
    BackstageAuth.state(app).verifier.forget_revocation_id("good-1")
    response = get(app, "Bearer good-1")
    assert response.status_code == 401
    assert handler.calls == ["good-1", "good-1"]


@pytest.mark.parametrize("how", ["forget", "clear"])
def test_forgetting_reaches_an_indexed_header(clock: Clock, handler: Handler, how: str) -> None:
    app = make_app(clock, handler)
    assert get(app, "Bearer good-1").status_code == 200
    handler.revoked.add("good-1")
    verifier = BackstageAuth.state(app).verifier
    verifier.forget("good-1") if how == "forget" else verifier.clear()
    assert get(app, "Bearer good-1").status_code == 401


def test_an_evicted_entry_is_not_served_from_the_index(clock: Clock, handler: Handler) -> None:
    """Evicted from a full cache, a token can no longer be forgotten: the index
    must not keep accepting it."""
    app = make_app(clock, handler, BACKSTAGE_AUTH_CACHE_SIZE=2)
    assert get(app, "Bearer good-1").status_code == 200
    verifier = BackstageAuth.state(app).verifier
    verifier.verify("good-2")  # other plugins' requests fill the shared cache
    verifier.verify("good-3")  # and evict good-1
    handler.revoked.add("good-1")
    BackstageAuth.state(app).verifier.forget_revocation_id("good-1")  # finds nothing
    assert get(app, "Bearer good-1").status_code == 401


def test_expiry_reaches_an_indexed_header(clock: Clock, handler: Handler) -> None:
    app = make_app(clock, handler, BACKSTAGE_AUTH_CACHE_TTL=10)
    assert get(app, "Bearer good-1").status_code == 200
    clock.now += 9
    assert get(app, "Bearer good-1").status_code == 200
    assert handler.calls == ["good-1"]
    clock.now += 2
    handler.revoked.add("good-1")
    assert get(app, "Bearer good-1").status_code == 401


def test_no_cache_means_no_index(clock: Clock, handler: Handler) -> None:
    app = make_app(clock, handler, BACKSTAGE_AUTH_CACHE_SIZE=0)
    for _ in range(3):
        assert get(app, "Bearer good-1").status_code == 200
    assert handler.calls == ["good-1"] * 3


def test_only_the_plain_header_form_is_indexed(clock: Clock, handler: Handler) -> None:
    """One valid token in many spellings must not grow the index (memory)."""
    app = make_app(clock, handler)
    for spaces in range(1, 40):
        assert get(app, "Bearer" + " " * spaces + "good-1").status_code == 200
    for scheme in ("bearer", "BEARER", "BeArEr"):
        assert get(app, f"{scheme} good-1").status_code == 200
    recent = BackstageAuth.state(app).http_auth("catalog")._recent
    assert len(recent[False]) <= 4  # "Bearer good-1" and the three other cases
    assert all(len(header) == len("good-1") + 7 for header in recent[False])


def test_the_index_is_bounded(clock: Clock, handler: Handler) -> None:
    app = make_app(clock, handler, BACKSTAGE_AUTH_CACHE_SIZE=5)
    for n in range(20):
        assert get(app, f"Bearer good-{n}").status_code == 200
    recent = BackstageAuth.state(app).http_auth("catalog")._recent
    assert len(recent[False]) <= 5


class TestLimitedTokens:
    """A limited token indexed for a GET never serves a POST, nor a route
    without ``user-cookie``."""

    @pytest.fixture
    def app(self) -> Flask:
        app = Flask(__name__)
        app.config.update(BACKSTAGE_AUTH_DEVELOPMENT=True)
        BackstageAuth(app)
        AuthBackend(app)
        bp = Blueprint("catalog", __name__, url_prefix="/api/catalog")
        add_auth_policy(bp, path="/docs", allow="user-cookie")

        @bp.route("/docs", methods=["GET", "POST"])
        def docs() -> t.Any:
            return jsonify(ok=True)

        @bp.get("/entities")
        def entities() -> t.Any:
            return jsonify(ok=True)

        app.register_blueprint(bp)
        return app

    def test_get_then_post_and_another_route(self, app: Flask) -> None:
        with app.app_context():
            full = AuthBackend.state(app).issuer.issue_token(JANE, [JANE]).token
        limited = create_limited_user_token(full)[0]
        client = app.test_client()
        header = {"Authorization": f"Bearer {limited}"}
        assert client.get("/api/catalog/docs", headers=header).status_code == 200
        assert client.get("/api/catalog/docs", headers=header).status_code == 200
        assert client.post("/api/catalog/docs", headers=header).status_code == 401
        assert client.get("/api/catalog/entities", headers=header).status_code == 401
        full_header = {"Authorization": f"Bearer {full}"}
        assert client.post("/api/catalog/docs", headers=full_header).status_code == 200
