"""The ``app`` plugin: a health check open to all, and ``whoami``."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from flask_backstage_auth import AuthenticationError, get_middleware_credentials

from ..environment import PluginEnvironment


def create_plugin(env: PluginEnvironment) -> Blueprint:
    """The app blueprint, served under ``/api/app``."""
    bp = Blueprint(env.plugin_id, __name__, url_prefix=f"/api/{env.plugin_id}")

    @bp.get("/health")
    def health() -> ResponseReturnValue:
        return jsonify({"status": "ok"})

    @bp.get("/whoami")
    def whoami() -> ResponseReturnValue:
        credentials = get_middleware_credentials(request.environ)
        if credentials is None:  # the middleware always sets it; fail closed anyway
            raise AuthenticationError("Authentication is required")
        return jsonify(credentials.to_dict())

    return bp
