"""An example Backstage-style backend on Flask: several plugins, one process.

``create_app()`` reads ``example_app/app-config.yaml`` (or the files named in
``BACKSTAGE_APP_CONFIG``, separated by ``os.pathsep``) and wires the plugins
the way Backstage's new backend system does: ``BackstageAuth`` protects every
plugin by default, and plugins open what they must with auth policies
(``app/health`` unauthenticated, techdocs pages under ``user-cookie``, their
stylesheets unauthenticated). Plugins call each other with plugin tokens whose
keys live in ``backend.database``; the ``auth`` plugin signs users in (the
guest provider, in development).

A plugin that ``discovery.endpoints`` places on another backend (``auth``,
``catalog``, ``permission``, any of the example's: a Backstage backend of the
organisation, see ``app-config.backstage.yaml``) is not served here: user
tokens are then verified with that ``auth`` plugin's keys, and with
``permission`` elsewhere no local policy is installed: the decisions are the
permission backend's.
"""

from __future__ import annotations

import os
import time
import typing as t
from pathlib import Path

from flask import Blueprint, Flask
from flask_sqlalchemy import SQLAlchemy

from example_app.environment import make_create_env
from example_app.permission_policy import ExamplePolicy
from example_app.plugins import app as app_plugin
from example_app.plugins import catalog, search, techdocs
from flask_backstage_auth import AuthBackend, BackstageAuth, ConfigError
from flask_backstage_auth.access_tokens.extension import AccessTokens
from flask_backstage_auth.clock import Clock
from flask_backstage_auth.config import CONFIG_KEY, ConfigReader, load_app_config
from flask_backstage_auth.config.timeouts import DatabaseTimeouts
from flask_backstage_auth.db.guard import engine_options
from flask_backstage_auth.db.startup import migrate_at_startup
from flask_backstage_auth.discovery import HostDiscovery

HERE = Path(__file__).parent
DEFAULT_CONFIG = HERE / "app-config.yaml"


def _config_files() -> list[str]:
    named = os.environ.get("BACKSTAGE_APP_CONFIG")
    if named:
        return [p for p in named.split(os.pathsep) if p]
    return [str(DEFAULT_CONFIG)]


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


def create_app(config: t.Mapping[str, t.Any] | None = None, *, clock: Clock = time.time) -> Flask:
    """Build the example backend.

    :param config: merged into ``app.config``; a ``BACKSTAGE_CONFIG`` entry
        replaces the document read from the app-config files.
    :param clock: the time source of token verification (for tests).
    """
    app = Flask(__name__)
    # Every error of the app (404, 405, 500...) in Backstage's JSON shape.
    app.config["BACKSTAGE_AUTH_JSON_ERRORS"] = True
    files = _config_files()
    app.config[CONFIG_KEY] = load_app_config(*files)
    app.config["EXAMPLE_CONFIG_DIR"] = str(Path(files[-1]).resolve().parent)
    if config:
        app.config.update(config)

    backstage = ConfigReader(app.config[CONFIG_KEY])
    app.config.setdefault("SQLALCHEMY_DATABASE_URI", _database_url(app, backstage))
    # Bounded waits on the database (connect, pool checkout; SQLite's busy
    # timeout): the library's own transactions add statement and lock timeouts.
    timeouts = DatabaseTimeouts.from_config(app.config)
    app.config.setdefault(
        "SQLALCHEMY_ENGINE_OPTIONS", engine_options(app.config["SQLALCHEMY_DATABASE_URI"], timeouts)
    )
    db = SQLAlchemy()
    db.init_app(app)
    # example.development: true in app-config.yaml, false in the production layer;
    # absent (another config), the library's rule: app.debug or app.testing.
    if backstage.has("example.development"):
        app.config.setdefault(
            "BACKSTAGE_AUTH_DEVELOPMENT", backstage.get_bool("example.development")
        )
    setting = app.config.get("BACKSTAGE_AUTH_DEVELOPMENT")
    development = bool(app.debug or app.testing) if setting is None else bool(setting)
    elsewhere = HostDiscovery.from_config(backstage).has_endpoint
    # The deployment's permission backend decides when discovery puts it elsewhere.
    policy = (
        None
        if elsewhere("permission")
        else ExamplePolicy(backstage.get("accessTokens.admins", []) or [], development=development)
    )
    # Plugin keys and access tokens live in the database, shared by every instance.
    BackstageAuth(app, db=db, clock=clock, permission_policy=policy)
    # The production way is the release step, `flask backstage-auth db upgrade`
    # (example.migrateAtStart: false); in development every worker may migrate
    # as it starts, under the migration lock, and starts even when that fails.
    if backstage.get_bool("example.migrateAtStart", True):
        with app.app_context():
            migrate_at_startup(db.engine, timeouts=timeouts)
    if not elsewhere("auth"):
        AuthBackend(app)  # the auth plugin: user tokens, and the guest provider in development
    if not elsewhere("access-tokens"):
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
        if not elsewhere(plugin_id):  # a plugin lives in one backend
            app.register_blueprint(create_plugin())
    return app
