"""The WSGI app that ``bench_server.py`` serves with gunicorn.

One process holds every stack the benchmark compares, each mounted under its
own prefix so that one server (same workers, same sockets) answers them all:

* ``/bare``: Flask without any auth (the unprotected route, the baseline);
* ``/library``: :class:`~flask_backstage_auth.BackstageAuth` with real keys:
  ``backend.auth.keys`` (legacy HS256 service tokens), and ``discovery``
  pointing ``auth`` (user tokens) and ``scaffolder`` (plugin tokens) at the
  bench's JWKS server; ``/library/api/catalog/open`` is opened with
  ``@unauthenticated``;
* ``/pyjwt-hs256`` and ``/pyjwt-es256``: a plain ``before_request`` hook
  doing one ``jwt.decode`` (a service token, a user token);
* ``/fjwt``: Flask-JWT-Extended's ``@jwt_required()`` (when installed).

Every stack serves the same view, ``GET <mount>/api/catalog/entities``.
gunicorn loads ``server_app:app``; the settings come from the JSON file named
by ``BENCH_SERVER_CONFIG`` (written by ``bench_server.py``).
"""

from __future__ import annotations

import json
import os
import typing as t

import jwt
from flask import Blueprint, Flask, jsonify, request
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from flask_backstage_auth import BackstageAuth
from flask_backstage_auth.legacy.secrets import decode_backstage_secret
from flask_backstage_auth.router.policies import unauthenticated

CONFIG_ENV = "BENCH_SERVER_CONFIG"
ENTITIES = [{"kind": "Component", "metadata": {"name": "petstore"}}]
#: The plugin whose tokens the library verifies (its JWKS is on the bench's JWKS server).
ISSUING_PLUGIN = "scaffolder"

View = t.Callable[..., t.Any]


def catalog(guard: t.Callable[[View], View] | None = None) -> Blueprint:
    """The catalog plugin: the one view every stack serves."""
    bp = Blueprint("catalog", __name__, url_prefix="/api/catalog")

    def entities() -> t.Any:
        return jsonify(ENTITIES)

    bp.add_url_rule("/entities", view_func=guard(entities) if guard else entities)
    return bp


def bare_app() -> Flask:
    app = Flask("bare", static_folder=None)
    app.register_blueprint(catalog())
    return app


def library_app(settings: t.Mapping[str, t.Any]) -> Flask:
    app = Flask("library", static_folder=None)
    app.config["BACKSTAGE_CONFIG"] = {
        "backend": {
            "baseUrl": settings["base_url"],
            "auth": {"keys": [{"secret": settings["backend_secret"]}]},
        },
        "discovery": {
            "endpoints": [
                {
                    "target": settings["jwks_base"] + "/api/{{pluginId}}",
                    "plugins": ["auth", ISSUING_PLUGIN],
                }
            ]
        },
    }
    BackstageAuth(app)
    bp = catalog()

    @bp.get("/open")
    @unauthenticated
    def open_entities() -> t.Any:
        return jsonify(ENTITIES)

    app.register_blueprint(bp)
    return app


def pyjwt_app(name: str, key: t.Any, algorithm: str, **decode_options: t.Any) -> Flask:
    """What an app without the library would write: one hook, one ``jwt.decode``."""
    app = Flask(name, static_folder=None)

    @app.before_request
    def authenticate() -> t.Any:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return jsonify(error="Unauthorized"), 401
        try:
            jwt.decode(token, key, algorithms=[algorithm], **decode_options)
        except jwt.PyJWTError:
            return jsonify(error="Unauthorized"), 401
        return None

    app.register_blueprint(catalog())
    return app


def fjwt_app(secret: str) -> Flask | None:
    """Flask-JWT-Extended's ``@jwt_required()``; ``None`` when it is not installed."""
    try:
        from flask_jwt_extended import JWTManager, jwt_required
    except ImportError:
        return None
    app = Flask("fjwt", static_folder=None)
    app.config["JWT_SECRET_KEY"] = secret
    JWTManager(app)
    app.register_blueprint(catalog(jwt_required()))
    return app


def create_app(settings: t.Mapping[str, t.Any]) -> t.Any:
    """Every stack behind one WSGI callable (see the module docstring)."""
    user_key = jwt.PyJWK(settings["user_public_jwk"]).key
    mounts: dict[str, t.Any] = {
        "/bare": bare_app(),
        "/library": library_app(settings),
        "/pyjwt-hs256": pyjwt_app(
            "pyjwt-hs256",
            decode_backstage_secret(settings["backend_secret"]),
            "HS256",
            subject="backstage-server",
            options={"require": ["exp", "sub"]},
        ),
        "/pyjwt-es256": pyjwt_app(
            "pyjwt-es256",
            user_key,
            "ES256",
            audience="backstage",
            options={"require": ["exp", "iat", "sub", "aud"]},
        ),
    }
    fjwt = fjwt_app(settings["fjwt_secret"])
    if fjwt is not None:
        mounts["/fjwt"] = fjwt
    return DispatcherMiddleware(NotFound(), mounts)


def _from_environment() -> t.Any:
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return None
    with open(path, encoding="utf-8") as file:
        return create_app(json.load(file))


app = _from_environment()
