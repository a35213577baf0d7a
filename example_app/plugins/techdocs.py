"""TechDocs: static documentation files, and a listing for the search indexer.

Pages are served under a ``user-cookie`` policy, so a browser that holds the
``backstage-auth`` cookie can load them; stylesheets are open to all.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from flask import Blueprint, jsonify, send_from_directory
from flask.typing import ResponseReturnValue

from example_app.environment import PluginEnvironment
from flask_backstage_auth import add_auth_policy, unauthenticated

_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def _document(root: Path, file: Path) -> dict[str, str]:
    source = file.read_text(encoding="utf-8")
    title = _TITLE.search(source)
    body = _TAG.sub(" ", _TITLE.sub(" ", source))
    return {
        "title": html.unescape(title.group(1).strip()) if title else file.stem,
        "text": " ".join(html.unescape(body).split()),
        "path": file.relative_to(root).as_posix(),
    }


def create_plugin(env: PluginEnvironment, docs_dir: Path) -> Blueprint:
    """The techdocs blueprint, served under ``/api/techdocs``."""
    bp = Blueprint(env.plugin_id, __name__, url_prefix=f"/api/{env.plugin_id}")
    add_auth_policy(bp, path="/static/docs", allow="user-cookie")
    root = docs_dir.resolve()

    @bp.get("/static/docs/<path:name>.css")
    @unauthenticated
    def stylesheet(name: str) -> ResponseReturnValue:
        return send_from_directory(root, f"{name}.css")

    @bp.get("/static/docs/<path:path>")
    def static_docs(path: str) -> ResponseReturnValue:
        # send_from_directory refuses paths that leave ``root`` (404).
        return send_from_directory(root, path)

    @bp.get("/documents")
    def documents() -> ResponseReturnValue:
        files = sorted(root.rglob("*.html"))
        return jsonify([_document(root, file) for file in files])

    return bp
