"""Fixtures of the end-to-end tests: the example app on loopback, headless Chromium.

The tests skip when ``/usr/bin/chromium`` (or ``BACKSTAGE_AUTH_TEST_CHROMIUM``)
or the ``playwright`` package is missing; browsers are never downloaded.
Screenshots go to ``tests/browser/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import os
import threading
import typing as t
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

CHROMIUM = os.environ.get("BACKSTAGE_AUTH_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent / "screenshots"

if t.TYPE_CHECKING:  # pragma: no cover
    from playwright.sync_api import Browser

DOCS_PAGE = """<!doctype html><title>Docs</title><p>Documentation</p>
<script>
window.found = {session: Object.assign({}, sessionStorage),
                local: Object.assign({}, localStorage), cookie: document.cookie};
</script>
"""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: end-to-end tests in headless Chromium (deselect with -m 'not browser')"
    )


class Served:
    """A WSGI app on 127.0.0.1, in a thread; the app may be set after the port is known."""

    def __init__(self, app: t.Any = None) -> None:
        self.app = app
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, self._dispatch, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _dispatch(self, environ: t.Any, start_response: t.Any) -> t.Any:
        return self.app(environ, start_response)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _serve_example(
    factory: pytest.TempPathFactory, settings: dict[str, t.Any]
) -> t.Iterator[tuple[Flask, str]]:
    from example_app import DEFAULT_CONFIG, create_app
    from flask_backstage_auth.access_tokens.admin import init_admin

    folder = factory.mktemp("admin-e2e")
    served = Served()
    overlay = folder / "app-config.e2e.yaml"
    overlay.write_text(f"backend:\n  baseUrl: {served.url}\n", encoding="utf-8")
    # techdocs.docsDir is relative to the last config file: raw documentation HTML
    # whose script looks for tokens in web storage, as an injected script would.
    (folder / "docs").mkdir()
    (folder / "docs" / "index.html").write_text(DOCS_PAGE, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BACKSTAGE_APP_CONFIG", os.pathsep.join([str(DEFAULT_CONFIG), str(overlay)]))
        patch.setattr(Flask, "auto_find_instance_path", lambda self: str(folder / "instance"))
        app = create_app(
            {
                "TESTING": True,
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder}/db.sqlite",
                **settings,
            }
        )
    init_admin(app)  # a no-op once AccessTokens registers the pages itself
    served.app = app
    try:
        yield app, served.url
    finally:
        served.close()


@pytest.fixture
def live_app(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[tuple[Flask, str]]:
    """The example app (its own app-config.yaml, ``backend.baseUrl`` = the server's URL),
    with its own database for each test: tests pass in any order."""
    yield from _serve_example(tmp_path_factory, {})


@pytest.fixture
def live_prefixed_app(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[tuple[Flask, str]]:
    """The same, with ``BACKSTAGE_AUTH_PLUGIN_PREFIX = "/internal"``."""
    yield from _serve_example(tmp_path_factory, {"BACKSTAGE_AUTH_PLUGIN_PREFIX": "/internal"})


@pytest.fixture(scope="module")
def browser() -> t.Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
