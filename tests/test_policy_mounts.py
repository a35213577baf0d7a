"""Policies follow how routing really mounts a plugin (docs/security.rst, "Least privilege").

A path policy is relative to the mount the URL rule that matched was
registered at (``register_blueprint(url_prefix=...)``, the blueprint's own
prefix, a parent's, or none), never to a guess of ``/api/<name>``. Production
mode; no credentials, so a 401 shows a policy did not apply.
"""

from __future__ import annotations

import logging

import pytest
from flask import Blueprint, Flask

from flask_backstage_auth import BackstageAuth, add_auth_policy
from flask_backstage_auth.router.mounts import Mounts, own_rules
from tests.conftest import new_secret


def make_app() -> tuple[Flask, BackstageAuth]:
    app = Flask("mounts", static_folder=None)
    app.config.update(
        {
            "BACKSTAGE_AUTH_DEVELOPMENT": False,
            "BACKSTAGE_CONFIG": {"backend": {"auth": {"keys": [{"secret": new_secret()}]}}},
        }
    )
    return app, BackstageAuth(app)


def reports_blueprint(name: str = "reports", url_prefix: str | None = None) -> Blueprint:
    bp = Blueprint(name, __name__, url_prefix=url_prefix)
    add_auth_policy(bp, path="/public", allow="unauthenticated")

    @bp.get("/public")
    @bp.get("/public/<path:rest>")
    def public(rest: str = "") -> str:
        return "public"

    @bp.get("/private")
    def private() -> str:
        return "private"

    return bp


class TestMounts:
    def test_register_blueprint_url_prefix(self) -> None:
        app, _ = make_app()
        app.register_blueprint(reports_blueprint(), url_prefix="/internal/reports")
        client = app.test_client()
        assert client.get("/internal/reports/public").status_code == 200
        assert client.get("/internal/reports/public/a/b").status_code == 200
        assert client.get("/internal/reports/private").status_code == 401
        # not at the mount a guess would give
        assert client.get("/api/reports/public").status_code == 401

    def test_no_prefix_at_all(self) -> None:
        app, _ = make_app()
        app.register_blueprint(reports_blueprint())
        client = app.test_client()
        assert client.get("/public").status_code == 200
        assert client.get("/private").status_code == 401
        assert client.get("/api/reports/public").status_code == 401

    def test_the_blueprints_own_prefix_overridden(self) -> None:
        app, _ = make_app()
        app.register_blueprint(reports_blueprint(url_prefix="/api/reports"), url_prefix="/r")
        client = app.test_client()
        assert client.get("/r/public").status_code == 200
        assert client.get("/api/reports/public").status_code == 401

    def test_one_blueprint_at_two_mounts(self) -> None:
        app, _ = make_app()
        bp = reports_blueprint()
        app.register_blueprint(bp, url_prefix="/a")
        app.register_blueprint(bp, url_prefix="/b", name="reports_b")
        client = app.test_client()
        assert client.get("/a/public").status_code == 200
        assert client.get("/b/public").status_code == 200
        assert client.get("/b/private").status_code == 401

    def test_a_plugin_policy_at_a_custom_mount(self) -> None:
        app, auth = make_app()
        bp = Blueprint("reports", __name__)

        @bp.get("/open/x")
        @bp.get("/closed")
        def view() -> str:
            return "ok"

        app.register_blueprint(bp, url_prefix="/internal/reports")
        auth.add_auth_policy("reports", path="/open", allow="unauthenticated", app=app)
        client = app.test_client()
        assert client.get("/internal/reports/open/x").status_code == 200
        assert client.get("/internal/reports/closed").status_code == 401
        assert client.get("/api/reports/open/x").status_code == 401

    def test_unrouted_urls_under_a_custom_mount(self) -> None:
        app, auth = make_app()
        bp = reports_blueprint()
        app.register_blueprint(bp, url_prefix="/internal/reports")
        client = app.test_client()
        # An open path that routes nowhere is a 404, at the real mount only.
        assert client.get("/internal/reports/public-not").status_code == 401
        auth.add_auth_policy("reports", path="/", allow="unauthenticated", app=app)
        assert client.get("/internal/reports/nothing/here").status_code == 404
        assert client.get("/api/reports/nothing/here").status_code == 401
        assert client.get("/internal/reportsx").status_code == 401

    def test_nested_blueprints(self) -> None:
        app, auth = make_app()
        parent = Blueprint("parent", __name__, url_prefix="/api/parent")
        child = Blueprint("child", __name__, url_prefix="/child")
        add_auth_policy(child, path="/open", allow="unauthenticated")

        @child.get("/open")
        @child.get("/open2")
        @child.get("/closed")
        def view() -> str:
            return "ok"

        parent.register_blueprint(child)
        app.register_blueprint(parent, url_prefix="/p")
        auth.add_auth_policy("parent", path="/child/open2", allow="unauthenticated", app=app)
        client = app.test_client()
        assert client.get("/p/child/open").status_code == 200
        assert client.get("/p/child/open2").status_code == 200
        assert client.get("/p/child/closed").status_code == 401
        assert client.get("/api/parent/child/open").status_code == 401
        with app.app_context():
            mounts = Mounts(app)
            assert mounts.of("parent.child") == "/p/child"
            assert mounts.of("parent") == "/p"  # read back from its child: it has no rules

    def test_policies_of_the_app_itself(self) -> None:
        app, auth = make_app()
        auth.add_auth_policy(None, path="/healthz", allow="unauthenticated", app=app)

        @app.get("/healthz")
        @app.get("/metrics")
        def health() -> str:
            return "ok"

        client = app.test_client()
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 401

    def test_own_rules_reads_no_other_recorded_function(self) -> None:
        bp = Blueprint("b", __name__, url_prefix="/b")
        calls: list[object] = []
        bp.record(calls.append)

        @bp.get("/x/<int:n>")
        def x(n: int) -> str:
            return "x"

        bp.add_url_rule("", "root", lambda: "root")
        assert own_rules(bp) == {"x": ["/x/<int:n>"], "root": [""]}
        assert calls == []


class TestUnmatchablePoliciesWarn:
    def test_a_policy_for_an_unknown_plugin(self, caplog: pytest.LogCaptureFixture) -> None:
        app, auth = make_app()
        app.register_blueprint(reports_blueprint(), url_prefix="/r")
        auth.add_auth_policy("repotrs", path="/public", allow="unauthenticated", app=app)
        with caplog.at_level(logging.WARNING, "flask_backstage_auth"):
            app.test_client().get("/r/private")
        assert any(
            "can never match" in r.getMessage() and "'repotrs'" in r.getMessage()
            for r in caplog.records
        )

    def test_a_path_no_route_matches(self, caplog: pytest.LogCaptureFixture) -> None:
        app, auth = make_app()
        app.register_blueprint(reports_blueprint(), url_prefix="/r")
        auth.add_auth_policy("reports", path="/pubic", allow="unauthenticated", app=app)
        with caplog.at_level(logging.WARNING, "flask_backstage_auth"):
            app.test_client().get("/r/private")
        messages = [r.getMessage() for r in caplog.records if "can never match" in r.getMessage()]
        assert len(messages) == 1 and "'/pubic'" in messages[0] and "/r" in messages[0]

    def test_policies_that_match_do_not_warn(self, caplog: pytest.LogCaptureFixture) -> None:
        app, auth = make_app()
        bp = reports_blueprint()
        add_auth_policy(bp, path="/public/:name", allow="user-cookie")
        app.register_blueprint(bp, url_prefix="/r")
        auth.add_auth_policy("reports", path="/", allow="user-cookie", app=app)
        with caplog.at_level(logging.WARNING, "flask_backstage_auth"):
            app.test_client().get("/r/private")
            app.test_client().get("/r/private")
        assert not [r for r in caplog.records if "can never match" in r.getMessage()]
