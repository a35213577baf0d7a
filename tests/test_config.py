from __future__ import annotations

from pathlib import Path

import pytest

from flask_backstage_auth import ConfigError
from flask_backstage_auth.config import ConfigReader, load_app_config, merge_configs


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_later_files_merge_over_earlier(tmp_path: Path) -> None:
    base = write(
        tmp_path,
        "app-config.yaml",
        """
backend:
  baseUrl: http://localhost:7007
  auth:
    keys: [{secret: one}, {secret: two}]
  listen: {port: 7007}
""",
    )
    prod = write(
        tmp_path,
        "app-config.production.yaml",
        """
backend:
  baseUrl: https://backstage.example.com
  auth:
    keys: [{secret: three}]
""",
    )
    config = load_app_config(base, prod, env={})
    assert config["backend"]["baseUrl"] == "https://backstage.example.com"
    assert config["backend"]["listen"] == {"port": 7007}  # objects merge
    assert config["backend"]["auth"]["keys"] == [{"secret": "three"}]  # lists replace


def test_env_substitution(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        """
backend:
  auth:
    keys:
      - secret: ${BACKEND_SECRET}
  baseUrl: http://${HOST}:7007/x
  literal: $${NOT_SUBSTITUTED}
""",
    )
    config = load_app_config(path, env={"BACKEND_SECRET": "s3cr3t", "HOST": "h"})
    assert config["backend"]["auth"]["keys"][0]["secret"] == "s3cr3t"
    assert config["backend"]["baseUrl"] == "http://h:7007/x"
    assert config["backend"]["literal"] == "${NOT_SUBSTITUTED}"


def test_missing_env_variable_is_a_clear_error(tmp_path: Path) -> None:
    path = write(
        tmp_path, "c.yaml", "backend:\n  auth:\n    keys:\n      - secret: ${BACKEND_SECRET}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_app_config(path, env={})
    message = str(info.value)
    assert "BACKEND_SECRET" in message
    assert "backend.auth.keys[0].secret" in message
    assert str(path) in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("backend: [unclosed", "not valid YAML"), ("- a\n- b\n", "mapping")],
)
def test_bad_files(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_app_config(write(tmp_path, "c.yaml", text), env={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Cannot read config file"):
        load_app_config(tmp_path / "absent.yaml")


def test_empty_file_is_empty_config(tmp_path: Path) -> None:
    assert load_app_config(write(tmp_path, "c.yaml", ""), env={}) == {}


def test_merge_does_not_alias_inputs() -> None:
    first = {"a": {"b": [1]}}
    merged = merge_configs(first, {"a": {"c": 2}})
    merged["a"]["b"].append(2)
    assert first == {"a": {"b": [1]}}


def test_reader_paths_in_errors() -> None:
    reader = ConfigReader({"backend": {"auth": {"keys": [{"secret": 1}], "flag": "yes"}}})
    assert (
        reader.get_config_list("backend.auth.keys")[0].path("secret")
        == "backend.auth.keys[0].secret"
    )
    with pytest.raises(ConfigError, match=r"backend\.auth\.flag"):
        reader.get_bool("backend.auth.flag")
    with pytest.raises(ConfigError, match=r"backend\.baseUrl"):
        reader.get_string("backend.baseUrl")
    assert reader.get_string("backend.baseUrl", "d") == "d"
    assert reader.get_bool("backend.auth.absent") is False
    with pytest.raises(ConfigError, match=r"backend\.auth\.keys\[0\]\.secret"):
        reader.get_config_list("backend.auth.keys")[0].get_string("secret")


def test_yaml_errors_do_not_echo_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path, "c.yaml", "backend:\n  auth:\n    keys:\n      - secret: TOPSECRETVALUE: [\n"
    )
    with pytest.raises(ConfigError) as info:
        load_app_config(path, env={})
    assert "TOPSECRETVALUE" not in str(info.value)
    assert "line 4" in str(info.value)
