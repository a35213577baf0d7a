"""An example Backstage-style backend on Flask: several plugins, one process.

``create_app()`` reads ``example_app/app-config.yaml`` (or the files named in
``BACKSTAGE_APP_CONFIG``, separated by ``os.pathsep``) and wires the plugins
the way Backstage's old backend did (seed 000 and seed 004): one
``ServerTokenManager`` shared by every plugin, and a require-authentication
middleware in front of every plugin but the health check and the CSS files.
"""

from __future__ import annotations

import os
import re
import typing as t
from pathlib import Path

from flask import Flask
from werkzeug.exceptions import HTTPException

from flask_backstage_auth import (
    CONFIG_KEY,
    BackstageError,
    ConfigReader,
    HostDiscovery,
    ServerTokenManager,
    create_require_authentication_middleware,
    load_app_config,
)

from .environment import make_create_env
from .plugins import app as app_plugin
from .plugins import catalog, search, techdocs

HERE = Path(__file__).parent
DEFAULT_CONFIG = HERE / "app-config.yaml"
#: The exemption seed 004 gives for TechDocs stylesheets.
TECHDOCS_CSS = re.compile(r"^/api/techdocs/static/docs/.+\.css")


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


def create_app(config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Build the example backend.

    :param config: merged into ``app.config``; a ``BACKSTAGE_CONFIG`` entry
        replaces the document read from the app-config files.
    """
    app = Flask(__name__)
    files = _config_files()
    app.config[CONFIG_KEY] = load_app_config(*files)
    app.config["EXAMPLE_CONFIG_DIR"] = str(Path(files[-1]).resolve().parent)
    if config:
        app.config.update(config)

    backstage = ConfigReader(app.config[CONFIG_KEY])
    development = bool(app.debug or app.testing or app.config.get("BACKSTAGE_AUTH_DEVELOPMENT"))
    token_manager = ServerTokenManager.from_config(
        backstage, logger=app.logger, development=development
    )
    discovery = HostDiscovery.from_config(backstage)
    create_env = make_create_env(backstage, discovery, token_manager)

    docs_dir = Path(backstage.get_string("techdocs.docsDir", "docs"))
    if not docs_dir.is_absolute():
        docs_dir = Path(app.config["EXAMPLE_CONFIG_DIR"]) / docs_dir
    app.register_blueprint(catalog.create_plugin(create_env("catalog")))
    app.register_blueprint(search.create_plugin(create_env("search")))
    app.register_blueprint(techdocs.create_plugin(create_env("techdocs"), docs_dir))
    app.register_blueprint(app_plugin.create_plugin(create_env("app")))
    app.register_error_handler(HTTPException, _json_http_error)

    # Seed 004: authenticated routes behind the middleware, the rest open.
    require_authentication = create_require_authentication_middleware(None, token_manager)
    wsgi = app.wsgi_app
    wsgi = require_authentication.wrap(wsgi, prefix="/api/catalog")
    wsgi = require_authentication.wrap(wsgi, prefix="/api/search")
    wsgi = require_authentication.unless(path=TECHDOCS_CSS).wrap(wsgi, prefix="/api/techdocs")
    wsgi = require_authentication.unless(path="/api/app/health").wrap(wsgi, prefix="/api/app")
    app.wsgi_app = wsgi  # type: ignore[method-assign]

    app.extensions["example_app"] = {"token_manager": token_manager, "discovery": discovery}
    return app
