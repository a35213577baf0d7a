"""Backstage-shaped configuration: ``app-config.yaml`` files and typed reads.

Operators keep the ``backend.auth`` block they already have for Backstage. A
Flask app holds the merged document in ``app.config["BACKSTAGE_CONFIG"]``.
"""

from __future__ import annotations

import copy
import os
import re
import typing as t
from pathlib import Path

import yaml

from flask_backstage_auth.errors import ConfigError

#: The ``app.config`` key holding the Backstage configuration document.
CONFIG_KEY = "BACKSTAGE_CONFIG"

_MISSING = object()
# ${VAR}; $${VAR} is an escaped, literal ${VAR} (as in Backstage).
_SUBSTITUTION = re.compile(r"\$(\$?)\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}")


def merge_configs(*documents: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """Merge documents, later over earlier, as Backstage does.

    Mappings merge key by key; lists and scalars from a later document replace
    the earlier value whole.
    """
    merged: dict[str, t.Any] = {}
    for document in documents:
        merged = _merge(merged, document)
    return merged


def _merge(base: t.Any, override: t.Any) -> t.Any:
    if isinstance(base, t.Mapping) and isinstance(override, t.Mapping):
        result = dict(base)
        for key, value in override.items():
            result[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return result
    return copy.deepcopy(override)


def substitute_env(
    document: t.Any, env: t.Mapping[str, str] | None = None, *, source: str = ""
) -> t.Any:
    """Replace ``${VAR}`` in every string with the environment's value.

    :raises ConfigError: a variable is not set; the message names it and the
        config path where it is used.
    """
    environ = os.environ if env is None else env
    return _substitute(document, environ, source, "")


def _substitute(value: t.Any, env: t.Mapping[str, str], source: str, path: str) -> t.Any:
    if isinstance(value, t.Mapping):
        return {
            k: _substitute(v, env, source, f"{path}.{k}" if path else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(v, env, source, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        escaped, name = match.groups()
        if escaped:
            return match.group(0)[1:]
        if name not in env:
            where = f" in {source}" if source else ""
            raise ConfigError(
                f"Environment variable {name} is not set; it is used at {path}{where}"
            )
        return env[name]

    return _SUBSTITUTION.sub(replace, value)


def load_app_config(
    *paths: str | os.PathLike[str], env: t.Mapping[str, str] | None = None
) -> dict[str, t.Any]:
    """Read app-config YAML files, substitute ``${VAR}``, merge later over earlier.

    :raises ConfigError: a file is missing, is not YAML, is not a mapping, or
        uses an unset environment variable.
    """
    documents = []
    for path in paths:
        file = Path(path)
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"Cannot read config file {file}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            # Only the position: PyYAML's snippet of the line could hold a secret.
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise ConfigError(f"Config file {file} is not valid YAML{where}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"Config file {file} must hold a mapping at the top level")
        documents.append(substitute_env(loaded, env, source=str(file)))
    return merge_configs(*documents)


class ConfigReader:
    """Typed reads of a Backstage config document by dotted path.

    Every error names the full path, e.g. ``backend.auth.keys[1].secret``.
    """

    def __init__(self, data: t.Mapping[str, t.Any] | None, prefix: str = "") -> None:
        if data is not None and not isinstance(data, t.Mapping):
            raise ConfigError(f"{prefix or 'the configuration'} must be a mapping")
        self._data: t.Mapping[str, t.Any] = data or {}
        self.prefix = prefix

    def path(self, key: str) -> str:
        """The full path of ``key`` below this reader."""
        return f"{self.prefix}.{key}" if self.prefix else key

    def _lookup(self, key: str) -> t.Any:
        node: t.Any = self._data
        walked = self.prefix
        for part in key.split("."):
            if node is None:
                return _MISSING
            if not isinstance(node, t.Mapping):
                raise ConfigError(f"{walked} must be a mapping")
            node = node.get(part, _MISSING)
            walked = f"{walked}.{part}" if walked else part
            if node is _MISSING:
                return _MISSING
        return node

    def has(self, key: str) -> bool:
        """Whether ``key`` is present and not null."""
        return self._lookup(key) not in (_MISSING, None)

    def get(self, key: str, default: t.Any = None) -> t.Any:
        """The raw value, or ``default``."""
        value = self._lookup(key)
        return default if value in (_MISSING, None) else value

    def get_string(self, key: str, default: str | None = None) -> str:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            if default is None:
                raise ConfigError(f"Missing required config value at '{self.path(key)}'")
            return default
        if not isinstance(value, str) or value == "":
            raise ConfigError(
                f"Invalid type in config for key '{self.path(key)}', expected a string"
            )
        return value

    def get_optional_string(self, key: str) -> str | None:
        return self.get_string(key) if self.has(key) else None

    def get_bool(self, key: str, default: bool = False) -> bool:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"Invalid type in config for key '{self.path(key)}', expected a boolean")

    def get_config(self, key: str) -> ConfigReader:
        """A reader for the mapping at ``key`` (empty when absent)."""
        value = self.get(key)
        if value is not None and not isinstance(value, t.Mapping):
            raise ConfigError(
                f"Invalid type in config for key '{self.path(key)}', expected an object"
            )
        return ConfigReader(value, self.path(key))

    def get_config_list(self, key: str) -> list[ConfigReader]:
        """Readers for each mapping in the list at ``key`` (empty when absent)."""
        value = self.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(f"Invalid type in config for key '{self.path(key)}', expected a list")
        readers = []
        for index, item in enumerate(value):
            path = f"{self.path(key)}[{index}]"
            if not isinstance(item, t.Mapping):
                raise ConfigError(f"Invalid type in config for key '{path}', expected an object")
            readers.append(ConfigReader(item, path))
        return readers

    def keys(self) -> list[str]:
        return [str(k) for k in self._data]

    def as_dict(self) -> dict[str, t.Any]:
        return copy.deepcopy(dict(self._data))


def as_reader(config: ConfigReader | t.Mapping[str, t.Any] | None) -> ConfigReader:
    """Accept a reader or a plain document."""
    return config if isinstance(config, ConfigReader) else ConfigReader(config)
