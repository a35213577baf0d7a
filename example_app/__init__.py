"""An example Backstage-style backend on Flask: several plugins, one process.

``create_app()`` reads ``example_app/app-config.yaml`` (or the files named in
``BACKSTAGE_APP_CONFIG``, separated by ``os.pathsep``) and wires the plugins
the way Backstage's new backend system does: ``BackstageAuth`` protects every
plugin by default, and plugins open what they must with auth policies
(``app/health`` unauthenticated, techdocs pages under ``user-cookie``, their
stylesheets unauthenticated). Plugins call each other with plugin tokens whose
keys live in ``backend.database``; the ``auth`` plugin signs users in (the
guest provider, in development).

Beside a real Backstage backend (``app-config.backstage.yaml``), a plugin
that ``discovery.endpoints`` sends to another backend is not mounted here:
with ``auth`` sent to Backstage's, user tokens are verified with that auth
backend's keys and this app mounts no ``AuthBackend``.
"""

from __future__ import annotations

import os
import time
import typing as t
from pathlib import Path

from flask import Blueprint, Flask
from flask_sqlalchemy import SQLAlchemy
from werkzeug.exceptions import HTTPException

from example_app.environment import make_create_env
from example_app.permission_policy import ExamplePolicy
from example_app.plugins import app as app_plugin
from example_app.plugins import catalog, search, techdocs
from flask_backstage_auth import AuthBackend, BackstageAuth, BackstageError, ConfigError
from flask_backstage_auth.access_tokens.extension import AccessTokens
from flask_backstage_auth.clock import Clock
from flask_backstage_auth.config import CONFIG_KEY, ConfigReader, load_app_config
from flask_backstage_auth.db.cli import upgrade_database

HERE = Path(__file__).parent
DEFAULT_CONFIG = HERE / "app-config.yaml"


def _config_files() -> list[str]:
    named = os.environ.get("BACKSTAGE_APP_CONFIG")
    if named:
        return [p for p in named.split(os.pathsep) if p]
    return [str(DEFAULT_CONFIG)]


class _GenericHTTPError(BackstageError):
    """Werkzeug's own errors (404, 405, 500), in Backstage's JSON shape."""


def _json_http_error(error: HTTPException) -> t.Any:
    if isinstance(error, BackstageError):
        return error
    generic = _GenericHTTPError(error.description or error.name)
    generic.code = error.code or 500
    generic.error_name = {404: "NotFoundError", 405: "InputError"}.get(generic.code, "Error")
    if generic.code >= 500:
        generic.description = "Internal server error"
    return generic


def _database_url(app: Flask, config: ConfigReader) -> str:
    """``backend.database`` as a SQLAlchemy URL (Backstage's ``client``/``connection``)."""
    database = config.get_config("backend.database")
    client = database.get_string("client", "sqlite3")
    connection = database.get_string("connection", "example-backend.sqlite")
    if client in ("sqlite3", "better-sqlite3"):
        if connection == ":memory:":
            return "sqlite://"
        path = Path(connection)
        if not path.is_absolute():
            Path(app.instance_path).mkdir(parents=True, exist_ok=True)
            path = Path(app.instance_path) / path
        return f"sqlite:///{path}"
    if client == "pg":
        return connection.replace("postgresql://", "postgresql+psycopg://", 1)
    raise ConfigError(f"Unsupported backend.database.client '{client}'; use 'sqlite3' or 'pg'")


def _served_elsewhere(app: Flask, plugin_id: str) -> bool:
    """Whether ``discovery.endpoints`` sends ``plugin_id`` to a backend other than this one."""
    state = BackstageAuth.state(app)
    if not state.discovery.has_endpoint(plugin_id):
        return False
    backend = ConfigReader(app.config[CONFIG_KEY]).get_string(
        "backend.baseUrl", "http://localhost:7007"
    )
    here = f"{backend.rstrip('/')}{state.settings.plugin_prefix}/{plugin_id}"
    return state.discovery.get_base_url(plugin_id).rstrip("/") != here


def create_app(config: t.Mapping[str, t.Any] | None = None, *, clock: Clock = time.time) -> Flask:
    """Build the example backend.

    :param config: merged into ``app.config``; a ``BACKSTAGE_CONFIG`` entry
        replaces the document read from the app-config files.
    :param clock: the time source of token verification (for tests).
    """
    app = Flask(__name__)
    files = _config_files()
    app.config[CONFIG_KEY] = load_app_config(*files)
    app.config["EXAMPLE_CONFIG_DIR"] = str(Path(files[-1]).resolve().parent)
    if config:
        app.config.update(config)

    backstage = ConfigReader(app.config[CONFIG_KEY])
    app.config.setdefault("SQLALCHEMY_DATABASE_URI", _database_url(app, backstage))
    db = SQLAlchemy()
    db.init_app(app)
    development = bool(app.debug or app.testing or app.config.get("BACKSTAGE_AUTH_DEVELOPMENT"))
    policy = ExamplePolicy(backstage.get("accessTokens.admins", []) or [], development=development)
    # Plugin keys and access tokens live in the database, shared by every instance.
    BackstageAuth(app, db=db, clock=clock, permission_policy=policy)
    with app.app_context():
        upgrade_database(db.engine)  # as Backstage plugins migrate at start-up
    if not _served_elsewhere(app, "auth"):
        AuthBackend(app)  # the auth plugin: user tokens, and the guest provider in development
    # (else user tokens verify with the keys of the auth backend discovery names)
    if not _served_elsewhere(app, "access-tokens"):
        AccessTokens(app)  # /api/access-tokens: long-lived scoped tokens
    create_env = make_create_env(app, backstage)

    docs_dir = Path(backstage.get_string("techdocs.docsDir", "docs"))
    if not docs_dir.is_absolute():
        docs_dir = Path(app.config["EXAMPLE_CONFIG_DIR"]) / docs_dir
    plugins: dict[str, t.Callable[[], Blueprint]] = {
        "catalog": lambda: catalog.create_plugin(create_env("catalog")),
        "search": lambda: search.create_plugin(create_env("search")),
        "techdocs": lambda: techdocs.create_plugin(create_env("techdocs"), docs_dir),
        "app": lambda: app_plugin.create_plugin(create_env("app")),
    }
    for plugin_id, create_plugin in plugins.items():
        if not _served_elsewhere(app, plugin_id):  # a plugin lives in one backend only
            app.register_blueprint(create_plugin())
    app.register_error_handler(HTTPException, _json_http_error)
    return app
