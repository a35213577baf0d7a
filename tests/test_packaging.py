"""What the distribution installs, the Pythons it supports and its tested floors."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.test_readme import _copy_project

ROOT = Path(__file__).parents[1]
PACKAGE = "flask_backstage_auth"
SUPPORTED = ["3.11", "3.12", "3.13", "3.14"]


def _setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    return parser


def _lines(value: str) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in value.splitlines())
    return [line for line in lines if line]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _release(version: str) -> tuple[int, ...]:
    """``3.1`` and ``3.1.0`` alike."""
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _source_files() -> set[str]:
    return {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / PACKAGE).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_the_build_holds_flask_backstage_auth_only_and_all_of_it(tmp_path: Path) -> None:
    """setuptools' file list (``build_py``, what goes into the wheel), in a second."""
    pytest.importorskip("setuptools")
    out = tmp_path / "lib"
    result = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()"]
        + ["-q", "build_py", "--build-lib", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Package would be ignored" not in result.stderr  # data folders are packages
    assert sorted(p.name for p in out.iterdir()) == [PACKAGE]
    built = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    # Every module and data file (templates, static, migrations, openapi.json, py.typed).
    assert built == _source_files()
    assert f"{PACKAGE}/db/migrations/versions/0001_public_keys.py" in built
    assert f"{PACKAGE}/py.typed" in built


@pytest.mark.slow
def test_a_built_wheel_holds_flask_backstage_auth_only(tmp_path: Path) -> None:
    project = _copy_project(tmp_path / "project")
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), "."],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = wheels.glob("flask_backstage_auth-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode("utf-8")
    assert {n.split("/", 1)[0] for n in names} == {PACKAGE, metadata.split("/", 1)[0]}
    assert {n for n in names if n.startswith(f"{PACKAGE}/")} == _source_files()
    assert "Requires-Python: >=3.11" in text


def test_supported_pythons_are_declared_classified_and_in_tox() -> None:
    options = _setup_cfg()
    assert options["options"]["python_requires"] == f">={SUPPORTED[0]}"
    classifiers = _lines(options["metadata"]["classifiers"])
    versions = [
        c.rsplit(" :: ", 1)[1]
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert versions == SUPPORTED
    assert "Programming Language :: Python :: 3 :: Only" in classifiers
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini", encoding="utf-8")
    envs = [e.strip() for e in tox["tox"]["envlist"].split(",")]
    assert [e for e in envs if re.fullmatch(r"py\d+", e)] == [
        "py" + v.replace(".", "") for v in SUPPORTED
    ]
    assert "oldest" in envs
    # The tools check the oldest supported syntax and types.
    assert options["mypy"]["python_version"] == SUPPORTED[0]
    ruff = (ROOT / "ruff.toml").read_text(encoding="utf-8")
    assert f'target-version = "py{SUPPORTED[0].replace(".", "")}"' in ruff


def test_oldest_constraints_pin_every_declared_floor() -> None:
    requirements = _lines(_setup_cfg()["options"]["install_requires"])
    floors = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[a-z,]+\])?>=([0-9.]+)", requirement)
        assert match, f"{requirement}: every requirement has a floor (>=) and no cap"
        floors[_name(requirement)] = _release(match.group(3))
    pins = {}
    for line in _lines((ROOT / "constraints" / "oldest.txt").read_text(encoding="utf-8")):
        name, _, version = line.partition("==")
        pins[_name(name)] = _release(version)
    assert pins == floors
    assert {"flask", "werkzeug", "pyjwt", "sqlalchemy", "alembic"} <= set(pins)


def test_ci_runs_the_suite_on_the_oldest_pins() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -q -c constraints/oldest.txt -e '.[test]'" in ci
    assert '.venv-oldest/bin/python -m pytest -q -p no:randomly -m "not slow and not browser"' in ci
