"""What the library logs, audit events included: never a token or a secret, and
no warning that a user can do nothing about.

The first test runs an app through every token kind with everything logged
(DEBUG, tracebacks, the audit fields) and looks for any 16-character piece of
any token or secret in it. The others run the README's minimal snippet and a
``TESTING`` app and look for warnings.
"""

from __future__ import annotations

import base64
import logging
import re
import typing as t
from pathlib import Path

import pytest
from flask import Blueprint, Flask, jsonify
from flask_sqlalchemy import SQLAlchemy

import flask_backstage_auth.db.cli
from flask_backstage_auth import AuthBackend, BackstageAuth, get_credentials
from flask_backstage_auth.access_tokens.extension import AccessTokens
from flask_backstage_auth.audit import AuditJsonFormatter
from flask_backstage_auth.auth.user.handler import create_limited_user_token
from flask_backstage_auth.testing import mock_credentials
from tests.test_audit import assert_no_secret

ROOT = Path(__file__).parents[1]
ALICE = "user:default/alice"
TEAM = "group:default/team-a"
LEGACY_SECRET = base64.b64encode(b"a-legacy-secret-of-32-bytes-long").decode()
STATIC_TOKEN = "static-token-for-the-catalog-0123456789"
TOKENS = "/api/access-tokens"


class Everything(logging.Handler):
    """Every record of every logger, formatted with its traceback and its audit fields."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []
        self._plain = logging.Formatter("%(levelname)s %(name)s %(message)s")
        self._audit = AuditJsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self._plain.format(record))
        self.lines.append(self._audit.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def everything() -> t.Iterator[Everything]:
    handler = Everything()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def production_app() -> Flask:
    app = Flask("logging-app", static_folder=None)
    app.config.update(
        SQLALCHEMY_DATABASE_URI="sqlite://",
        BACKSTAGE_AUTH_DEVELOPMENT=False,
        BACKSTAGE_CONFIG={
            "backend": {
                "baseUrl": "http://localhost:7007",
                "auth": {
                    "externalAccess": [
                        {"type": "legacy", "options": {"secret": LEGACY_SECRET, "subject": "ci"}},
                        {
                            "type": "static",
                            "options": {"token": STATIC_TOKEN, "subject": "reader"},
                            "accessRestrictions": [{"plugin": "catalog"}],
                        },
                    ]
                },
            },
            "accessTokens": {"personal": {"enabled": True}},
        },
    )
    db = SQLAlchemy()
    db.init_app(app)
    BackstageAuth(app, db=db)
    with app.app_context():
        flask_backstage_auth.db.cli.upgrade_database(db.engine)
    AuthBackend(app)
    for name in ("catalog", "search"):
        bp = Blueprint(name, __name__, url_prefix=f"/api/{name}")
        bp.get("/whoami")(lambda: jsonify(get_credentials().to_dict()))
        app.register_blueprint(bp)
    AccessTokens(app, usage_writes="inline")
    return app


def test_no_token_or_secret_is_ever_logged(everything: Everything) -> None:
    app = production_app()
    client = app.test_client()
    state = BackstageAuth.state(app)
    user = AuthBackend.state(app).issuer.issue_token(ALICE, [ALICE]).token
    limited = create_limited_user_token(user)[0]
    with app.app_context():
        legacy = state.token_manager.get_token().token
        search = state.auth("search")
        plugin = search.get_plugin_request_token(
            on_behalf_of=search.get_own_service_credentials(), target_plugin_id="catalog"
        ).token
        obo = search.get_plugin_request_token(
            on_behalf_of=search.authenticate(user), target_plugin_id="catalog"
        ).token
    admin = {"Authorization": f"Bearer {user}"}

    def call(token: str, path: str = "/api/catalog/whoami", method: str = "GET") -> int:
        return client.open(
            path, method=method, headers={"Authorization": f"Bearer {token}"}
        ).status_code

    created = client.post(
        f"{TOKENS}/service/",
        json={"name": "ci", "groupEntityRef": TEAM, "scopes": ["catalog:read"]},
        headers=admin,
    ).get_json()
    service_token, service_id = created["rawToken"], created["token"]["id"]
    personal = client.post(
        f"{TOKENS}/personal/", json={"name": "me", "scopes": ["catalog:read"]}, headers=admin
    ).get_json()["rawToken"]
    rotated = client.post(
        f"{TOKENS}/service/{service_id}/rotate", json={"graceSeconds": 60}, headers=admin
    ).get_json()["rawToken"]

    expected = {
        user: 200,
        legacy: 200,
        plugin: 200,
        obo: 200,
        STATIC_TOKEN: 200,
        service_token: 200,  # in its grace
        rotated: 200,
        personal: 200,
    }
    for token, status in expected.items():
        assert call(token) == status
    assert call(STATIC_TOKEN, "/api/search/whoami") == 403  # restricted to the catalog
    assert call(rotated, "/api/search/whoami") == 403
    assert call(plugin, "/api/search/whoami") == 401  # for another audience
    assert call(limited) == 401  # a limited token as a bearer, for a full route
    client.set_cookie("backstage-auth", limited)
    assert client.get(f"{TOKENS}/service/{service_id}").status_code == 200
    client.delete_cookie("backstage-auth")
    tampered = [
        user[:-4] + "AAAA",
        legacy[:-4] + "AAAA",
        rotated[:-1] + ("A" if rotated[-1] != "A" else "B"),  # a bad checksum
        "bsat_" + "x" * 40,
        mock_credentials.user_token(),  # no mock tokens in production
    ]
    for token in tampered:
        assert call(token) == 401
    client.delete(f"{TOKENS}/service/{service_id}", json={"reason": "done"}, headers=admin)
    assert call(rotated) == 401
    assert call(service_token) == 401
    report = client.post(f"{TOKENS}/service/revoke", json={"tokens": [personal, rotated]})
    assert report.get_json() == {"revoked": 1}
    assert call(personal) == 401

    secrets = [
        user,
        limited,
        legacy,
        plugin,
        obo,
        STATIC_TOKEN,
        service_token,
        rotated,
        personal,
        LEGACY_SECRET,
        *tampered[:-1],  # a mock token is no secret: its JSON holds the user's ref
    ]
    # JWTs share their header's encoding: look at what is each one's own.
    pieces = [part for s in secrets for part in (s.split(".")[1:] if s.count(".") == 2 else [s])]
    assert everything.records, "nothing was logged"
    assert any(r.name == "flask_backstage_auth.audit" for r in everything.records)
    assert_no_secret(everything.text, pieces)


# -- warnings a user can do nothing about --------------------------------------------------


def readme_snippet() -> str:
    text = (ROOT / "README.rst").read_text(encoding="utf-8")
    section = text.split("The extension\n-------------\n", 1)[1]
    block = section.split(".. code-block:: python\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines)


def warnings_of(records: t.Sequence[logging.LogRecord]) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in records
        if r.levelno >= logging.WARNING and r.name.startswith("flask_backstage_auth")
    ]


def run_snippet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, testing: bool) -> Flask:
    (tmp_path / "app-config.yaml").write_text("backend:\n  baseUrl: http://localhost:7007\n")
    monkeypatch.chdir(tmp_path)
    source = readme_snippet()
    assert "BackstageAuth(app)" in source
    if testing:
        source = source.replace(
            "app = Flask(__name__)\n",
            "app = Flask(__name__)\n"
            "app.config.update(TESTING=True, BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS=True)\n",
        )
    namespace: dict[str, t.Any] = {"__name__": "readme_snippet"}
    exec(compile(source, "README.rst", "exec"), namespace)
    return t.cast(Flask, namespace["app"])


def serve_a_little(app: Flask, headers: t.Sequence[dict[str, str]] = ()) -> None:
    client = app.test_client()
    assert client.get("/api/catalog/health").status_code == 200
    assert client.get("/api/catalog/public/x").status_code == 200
    assert client.get("/api/catalog/entities").status_code == 401
    assert client.get("/api/catalog/static/1").status_code == 401
    for header in headers:
        assert client.get("/api/catalog/entities", headers=header).status_code == 200


def test_the_readme_snippet_logs_no_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, everything: Everything
) -> None:
    app = run_snippet(tmp_path, monkeypatch, testing=False)
    serve_a_little(app)
    assert warnings_of(everything.records) == []


def test_a_testing_app_logs_no_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, everything: Everything
) -> None:
    app = run_snippet(tmp_path, monkeypatch, testing=True)
    with app.app_context():
        auth = BackstageAuth.state(app).auth("search")
        plugin = auth.get_plugin_request_token(
            on_behalf_of=auth.get_own_service_credentials(), target_plugin_id="catalog"
        ).token
    serve_a_little(
        app,
        [
            mock_credentials.user_header(),
            mock_credentials.service_header(),
            {"Authorization": f"Bearer {plugin}"},
        ],
    )
    assert warnings_of(everything.records) == []
    # What it did log at INFO says what a production app would be told.
    messages = [r.getMessage() for r in everything.records]
    assert any(re.match("Generated a secret for service-to-service", m) for m in messages)
    assert any(m.startswith("Plugin keys are kept in this process only") for m in messages)


def test_production_is_still_told_about_process_only_plugin_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, everything: Everything
) -> None:
    app = run_snippet(tmp_path, monkeypatch, testing=False)
    assert warnings_of(everything.records) == []  # nothing yet: no plugin token signed
    with app.app_context():
        auth = BackstageAuth.state(app).auth("search")
        for _ in range(2):
            auth.get_plugin_request_token(
                on_behalf_of=auth.get_own_service_credentials(), target_plugin_id="catalog"
            )
    (warning,) = warnings_of(everything.records)
    assert "Plugin keys are kept in this process only" in warning
