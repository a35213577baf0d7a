from __future__ import annotations

import json
import os
import socket
import threading
import typing as t
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.pool import NullPool
from werkzeug.serving import BaseWSGIServer, make_server

DATA = Path(__file__).parent / "data"

POSTGRES_URL = os.environ.get(
    "BACKSTAGE_AUTH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def load_vectors() -> dict[str, t.Any]:
    """The Backstage interop vectors (see tests/data/README.rst)."""
    with open(DATA / "backstage_vectors.json", encoding="utf-8") as file:
        return t.cast(t.Dict[str, t.Any], json.load(file))


VECTORS = load_vectors()


class LiveServer:
    """A WSGI app served on 127.0.0.1 by a background thread."""

    def __init__(self, app: t.Any, port: int = 0) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", port, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_secret() -> str:
    from flask_backstage_auth.legacy.secrets import generate_secret

    return generate_secret(32)


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def app(secret: str) -> Flask:
    """The example backend with one configured key (pytest-flask's ``app``)."""
    from example_app import create_app

    port = free_port()
    return create_app(
        {
            "TESTING": True,
            "BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS": True,
            "BACKSTAGE_CONFIG": {
                "backend": {
                    "baseUrl": f"http://127.0.0.1:{port}",
                    "auth": {"keys": [{"secret": secret}]},
                },
                "techdocs": {"docsDir": str(Path(__file__).parents[1] / "example_app" / "docs")},
                "auth": {"providers": {"guest": {}}},
            },
        }
    )


@pytest.fixture
def token(app: Flask) -> str:
    from flask_backstage_auth import BackstageAuth

    return BackstageAuth.state(app).token_manager.get_token().token


@pytest.fixture
def auth_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(autouse=True)
def _own_instance_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test's apps keep their instance files (the example's SQLite) apart."""
    monkeypatch.setattr(Flask, "auto_find_instance_path", lambda self: str(tmp_path / "instance"))


@pytest.fixture(autouse=True)
def _no_app_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKSTAGE_APP_CONFIG", raising=False)
    os.environ.pop("BACKEND_SECRET", None)


def _reachable(url: str) -> bool:
    parsed = sa.engine.make_url(url)
    try:
        socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5432), 2).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_url() -> str:
    if not _reachable(POSTGRES_URL):
        pytest.skip(f"PostgreSQL is not reachable at {sa.engine.make_url(POSTGRES_URL).host}")
    return POSTGRES_URL


@pytest.fixture
def pg_schema(postgres_url: str) -> t.Iterator[str]:
    """A schema of this test's own, dropped afterwards (parallel runs do not collide)."""
    schema = f"bsa_test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(postgres_url, poolclass=NullPool)
    try:
        with admin.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        yield schema
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


def _pg_url_in(postgres_url: str, schema: str) -> sa.engine.URL:
    return sa.engine.make_url(postgres_url).update_query_dict(
        {"options": f"-csearch_path={schema}"}
    )
