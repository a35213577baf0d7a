"""Importing the package, and an app without a database, stay lean.

The database stack (SQLAlchemy, Flask-SQLAlchemy, Alembic), ``requests`` and
``limits``/``redis`` are imported only by the features that use them: a
configured database, a key-set fetch, an outgoing session, a shared
rate-limit store (tests/test_shared_limits.py). Each check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("sqlalchemy", "flask_sqlalchemy", "alembic", "requests", "urllib3", "limits", "redis")
#: Modules ``import flask_backstage_auth`` may add to those of ``import flask``
#: (about 140 today: ours, PyJWT, cryptography, PyYAML; 450 with the database stack).
MAX_NEW_MODULES = 200

_PROBE = """
import json, sys
import flask
before = set(sys.modules)
import flask_backstage_auth
after_import = set(sys.modules)
from flask import Blueprint, Flask, jsonify
from flask_backstage_auth import BackstageAuth
app = Flask("lean", static_folder=None)
app.config["BACKSTAGE_CONFIG"] = {"backend": {"auth": {"keys": [{"secret": SECRET}]}}}
auth = BackstageAuth(app)
bp = Blueprint("catalog", __name__, url_prefix="/api/catalog")
bp.get("/entities")(lambda: jsonify([]))
app.register_blueprint(bp)
with app.app_context():
    token = auth.token_manager.get_token().token
client = app.test_client()
served = [
    client.get("/api/catalog/entities", headers={"Authorization": "Bearer " + token}).status_code,
    client.get("/api/catalog/entities").status_code,
]
EXTRA
print(json.dumps({
    "new_on_import": len(after_import - before),
    "heavy_on_import": sorted(m for m in after_import if m.split(".")[0] in HEAVY),
    "heavy_after_serving": sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY)),
    "served": served,
}))
"""


def probe(extra: str = "") -> dict[str, object]:
    """What a fresh interpreter imported for the package, an app and ``extra``."""
    from flask_backstage_auth.legacy.secrets import generate_secret

    code = f"HEAVY = {HEAVY!r}\nSECRET = {generate_secret(32)!r}\n" + textwrap.dedent(
        _PROBE
    ).replace("EXTRA", textwrap.dedent(extra))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_an_app_without_a_database_imports_neither_the_database_stack_nor_requests() -> None:
    found = probe()
    assert found["served"] == [200, 401]
    assert found["heavy_on_import"] == []
    assert found["heavy_after_serving"] == []
    new = found["new_on_import"]
    assert isinstance(new, int) and 0 < new <= MAX_NEW_MODULES


@pytest.mark.parametrize(
    ("feature", "expected"),
    [
        # A configured database: the database stack, not requests.
        (
            'app2 = Flask("db", static_folder=None)\n'
            'app2.config["BACKSTAGE_AUTH_DATABASE_URI"] = "sqlite://"\n'
            "BackstageAuth(app2)\n"
            "assert BackstageAuth.state(app2).database is not None\n",
            ["sqlalchemy"],
        ),
        # An outgoing session: requests.
        (
            "from flask_backstage_auth.client import plugin_session\n"
            "plugin_session(BackstageAuth.state(app).token_manager)\n",
            ["requests", "urllib3"],
        ),
        # A key-set fetch: requests, at the fetch.
        (
            "from flask_backstage_auth.auth.jwks import JwksFetcher\nJwksFetcher().session\n",
            ["requests", "urllib3"],
        ),
    ],
    ids=["database", "session", "jwks-fetch"],
)
def test_each_feature_imports_what_it_needs(feature: str, expected: list[str]) -> None:
    found = probe(feature)
    assert found["heavy_on_import"] == []
    imported = found["heavy_after_serving"]
    assert isinstance(imported, list)
    assert [name for name in expected if name in imported] == expected
    if "sqlalchemy" not in expected:
        assert "sqlalchemy" not in imported
