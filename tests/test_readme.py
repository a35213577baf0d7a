"""The README's two commands, run as a new user would, in a fresh copy.

The fresh copy proves that the commands work on a machine with only Python:
the first installs the package and starts the example; the second, verbatim,
builds a venv with the ``test`` extra and runs pytest there, which collects
the whole suite (``--collect-only``: every test module imports with what the
extra installs) and then runs :data:`FRESH_TESTS`, a handful that need each
piece of the extra (pytest-flask's fixtures, the ``pytest11`` plugin the
install registers, psycopg, Flask-Migrate, asgiref and httpx, the example).
Running everything a second time would prove nothing more about the commands
and took most of the suite's time; the suite itself is the README's command
run in this checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port

ROOT = Path(__file__).parents[1]
NESTED = "FLASK_BACKSTAGE_AUTH_README_RUN"

#: Run for real in the fresh venv, after the whole suite's collection.
FRESH_TESTS = (
    "tests/test_testing_fixtures.py",
    "tests/test_public_api.py",
    "tests/test_storage.py::test_store_round_trip",
    "tests/test_async_views.py::test_plugin_async_client_calls_another_plugin_on_behalf_of_the_user",
    "tests/test_flask_migrate.py::test_flask_db_first_then_backstage_auth_db",
    "tests/test_example_app.py::test_catalog_with_a_token",
    "tests/test_example_app.py::test_search_indexer_calls_the_catalog_over_http",
)


def readme_commands() -> list[str]:
    """Indented shell lines of README.rst that create the .venv."""
    lines = (ROOT / "README.rst").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.startswith("    python3 -m venv .venv")]


def test_readme_has_exactly_two_setup_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("python -m example_app")
    assert commands[1].endswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci


def _copy_project(target: Path) -> Path:
    ignore = shutil.ignore_patterns(
        ".venv",
        ".venv-*",
        ".tox",
        ".git",
        "__pycache__",
        "*.egg-info",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        "build",
        "dist",
    )
    shutil.copytree(ROOT, target, ignore=ignore)
    return target


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix)
    )
    env[NESTED] = "1"
    return env


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get(NESTED) == "1", reason="already inside a README run")
def test_readme_commands_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    start_command, test_command = readme_commands()
    project = _copy_project(tmp_path / "project")
    env = _clean_env()

    port = free_port()
    config = tmp_path / "app-config.port.yaml"
    config.write_text(
        f"backend:\n  baseUrl: http://127.0.0.1:{port}\n  listen:\n    port: {port}\n",
        encoding="utf-8",
    )
    env["BACKSTAGE_APP_CONFIG"] = os.pathsep.join(
        [str(project / "example_app" / "app-config.yaml"), str(config)]
    )
    server = subprocess.Popen(
        ["bash", "-c", start_command],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        health: t.Any = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and server.poll() is None:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/api/app/health", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(1)
        assert health is not None, server.stdout.read() if server.stdout else ""
        assert health.json() == {"status": "ok"}
        catalog = requests.get(f"http://127.0.0.1:{port}/api/catalog/entities", timeout=5)
        assert catalog.status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout:
            server.stdout.close()

    del env["BACKSTAGE_APP_CONFIG"]
    # The README's command verbatim: a fresh venv, the test extra, and pytest
    # collecting the whole suite.
    env["PYTEST_ADDOPTS"] = "-q -p no:cacheprovider --collect-only"
    collected = subprocess.run(
        ["bash", "-c", test_command],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1200,
    )
    assert collected.returncode == 0, collected.stdout[-5000:]
    # "N tests collected in 5.1s"; with an import error, "N tests collected, 1 error in".
    assert re.search(r"^\d+ tests collected in ", collected.stdout, re.M), collected.stdout[-5000:]

    del env["PYTEST_ADDOPTS"]
    result = subprocess.run(
        [str(project / ".venv" / "bin" / "python"), "-m", "pytest", "-q"]
        + ["-p", "no:cacheprovider", "-p", "no:randomly", *FRESH_TESTS],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-5000:]
    assert " passed" in result.stdout and " failed" not in result.stdout, result.stdout[-5000:]
