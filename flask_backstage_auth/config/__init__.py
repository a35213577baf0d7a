"""Backstage's configuration (``app-config.yaml``) and the ``BACKSTAGE_AUTH_*`` settings."""

from __future__ import annotations

from flask_backstage_auth.config.reader import (
    CONFIG_KEY,
    ConfigReader,
    load_app_config,
    merge_configs,
)

__all__ = ["CONFIG_KEY", "ConfigReader", "load_app_config", "merge_configs"]
