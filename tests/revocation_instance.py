"""One app instance for the multi-instance revocation tests, as its own process.

``python -m tests.revocation_instance DATABASE_URL PORT REVOCATION_CHECK_SECONDS``
serves ``/api/catalog/whoami`` (any access token with a catalog scope) and
``/healthz`` on 127.0.0.1:PORT with Werkzeug's threaded server, until killed.
The database's tables must exist.
"""

from __future__ import annotations

import sys
import typing as t

from flask import Blueprint, Flask, jsonify
from flask_sqlalchemy import SQLAlchemy
from werkzeug.serving import make_server

from flask_backstage_auth import BackstageAuth, get_credentials
from flask_backstage_auth.access_tokens.extension import AccessTokens


def build(database_url: str, revocation_check: float, *, push: bool = True) -> Flask:
    app = Flask("revocation-instance", static_folder=None)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url,
        BACKSTAGE_AUTH_DEVELOPMENT=False,
        BACKSTAGE_CONFIG={
            "backend": {"baseUrl": "http://127.0.0.1:7007"},
            "accessTokens": {
                "service": {"revocationCheckSeconds": revocation_check, "revocationPush": push}
            },
        },
    )
    db = SQLAlchemy()
    db.init_app(app)
    BackstageAuth(app, db=db)
    AccessTokens(app, register_blueprint=False, usage_writes="background")
    catalog = Blueprint("catalog", __name__, url_prefix="/api/catalog")

    @catalog.get("/whoami")
    def whoami() -> t.Any:
        return jsonify(get_credentials().to_dict())

    app.register_blueprint(catalog)
    app.get("/healthz")(lambda: "ok")
    return app


def main(argv: t.Sequence[str]) -> None:
    database_url, port, revocation_check = argv
    app = build(database_url, float(revocation_check))
    make_server("127.0.0.1", int(port), app, threaded=True).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
