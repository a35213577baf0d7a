"""The ``app`` plugin: a health check open to all, and ``whoami``."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from example_app.environment import PluginEnvironment
from flask_backstage_auth import add_auth_policy, get_credentials


def create_plugin(env: PluginEnvironment) -> Blueprint:
    """The app blueprint, served under ``/api/app``."""
    bp = Blueprint(env.plugin_id, __name__, url_prefix=f"/api/{env.plugin_id}")
    add_auth_policy(bp, path="/health", allow="unauthenticated")

    @bp.get("/health")
    def health() -> ResponseReturnValue:
        return jsonify({"status": "ok"})

    @bp.get("/whoami")
    def whoami() -> ResponseReturnValue:
        return jsonify(get_credentials().to_dict())

    return bp
