"""Search: an index built by collators that call other plugins over HTTP.

The collators are those of seed 000 under the new auth services: each asks
``auth.get_plugin_request_token(on_behalf_of=<own service credentials>,
target_plugin_id=...)`` for a token on every request (through
:func:`flask_backstage_auth.client.plugin_session`) and reaches the other plugin
through discovery, i.e. ``backend.baseUrl``.
"""

from __future__ import annotations

import threading
import typing as t

import requests
from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from example_app.environment import PluginEnvironment
from flask_backstage_auth import AuthService, BackstageError, get_credentials
from flask_backstage_auth.client import plugin_session
from flask_backstage_auth.discovery import HostDiscovery

Document = t.Dict[str, str]


class CollatorError(BackstageError):
    """A collator's upstream call failed (502, Backstage's ``ResponseError``)."""

    code = 502
    error_name = "ResponseError"


class Collator(t.Protocol):
    type: str

    def collect(self) -> list[Document]: ...


def _fetch_json(session: requests.Session, url: str, what: str, timeout: float) -> t.Any:
    try:
        response = session.get(url, timeout=timeout)
    except requests.RequestException as exc:
        raise CollatorError(f"{what}: request to {url} failed ({type(exc).__name__})") from None
    if response.status_code != 200:
        message = ""
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        detail = f": {message}" if message else ""
        raise CollatorError(f"{what}: {url} answered {response.status_code}{detail}")
    try:
        return response.json()
    except ValueError:
        raise CollatorError(f"{what}: {url} did not answer JSON") from None


class CatalogCollator:
    """Every catalog entity, fetched in pages with ``offset``/``limit``."""

    type = "software-catalog"

    def __init__(
        self,
        discovery: HostDiscovery,
        auth: AuthService,
        batch_size: int = 500,
        timeout: float = 10,
    ) -> None:
        self.discovery = discovery
        # On behalf of whoever asked for the rebuild: the catalog sees that
        # user (or service), with ``plugin:search`` as the actor.
        self.session = plugin_session(
            auth=auth, target_plugin_id="catalog", on_behalf_of=get_credentials
        )
        self.batch_size = batch_size
        self.timeout = timeout

    def collect(self) -> list[Document]:
        base = self.discovery.get_base_url("catalog")
        documents: list[Document] = []
        offset = 0
        while True:
            url = f"{base}/entities?offset={offset}&limit={self.batch_size}"
            page = _fetch_json(self.session, url, "Catalog collator", self.timeout)
            if not isinstance(page, list):
                raise CollatorError("Catalog collator: the catalog answered an unexpected body")
            for entity in page:
                metadata = entity.get("metadata", {})
                namespace = metadata.get("namespace", "default")
                documents.append(
                    {
                        "title": metadata.get("title") or metadata.get("name", ""),
                        "text": metadata.get("description", ""),
                        "location": "/catalog/{}/{}/{}".format(
                            namespace, entity.get("kind", "").lower(), metadata.get("name", "")
                        ),
                        "type": self.type,
                    }
                )
            if len(page) < self.batch_size:
                return documents
            offset += self.batch_size


class TechDocsCollator:
    """Every TechDocs page, from the techdocs plugin's listing."""

    type = "techdocs"

    def __init__(self, discovery: HostDiscovery, auth: AuthService, timeout: float = 10) -> None:
        self.discovery = discovery
        self.session = plugin_session(auth=auth, target_plugin_id="techdocs")
        self.timeout = timeout

    def collect(self) -> list[Document]:
        base = self.discovery.get_base_url("techdocs")
        pages = _fetch_json(self.session, f"{base}/documents", "TechDocs collator", self.timeout)
        if not isinstance(pages, list):
            raise CollatorError("TechDocs collator: techdocs answered an unexpected body")
        return [
            {
                "title": page.get("title", ""),
                "text": page.get("text", ""),
                "location": f"/docs/{page.get('path', '')}",
                "type": self.type,
            }
            for page in pages
        ]


class SearchIndex:
    """Documents in memory, replaced whole by each rebuild."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._documents: list[Document] = []

    def replace(self, documents: list[Document]) -> None:
        with self._lock:
            self._documents = list(documents)

    def query(self, term: str) -> list[Document]:
        needle = term.lower()
        with self._lock:
            return [
                d
                for d in self._documents
                if needle in d["title"].lower() or needle in d["text"].lower()
            ]

    def __len__(self) -> int:
        with self._lock:
            return len(self._documents)


def create_plugin(env: PluginEnvironment) -> Blueprint:
    """The search blueprint, served under ``/api/search``."""
    index = SearchIndex()
    collators: list[Collator] = [
        CatalogCollator(env.discovery, env.auth),
        TechDocsCollator(env.discovery, env.auth),
    ]
    bp = Blueprint(env.plugin_id, __name__, url_prefix=f"/api/{env.plugin_id}")

    @bp.post("/index")
    def rebuild_index() -> ResponseReturnValue:
        documents: list[Document] = []
        counts = {}
        for collator in collators:
            collected = collator.collect()
            counts[collator.type] = len(collected)
            documents.extend(collected)
        index.replace(documents)
        env.logger.info("Search index rebuilt with %d documents", len(documents))
        return jsonify({"indexed": counts, "total": len(documents)})

    @bp.get("/query")
    def query() -> ResponseReturnValue:
        term = request.args.get("term", "")
        results = index.query(term) if term else []
        return jsonify({"results": [{"type": d["type"], "document": d} for d in results]})

    return bp
