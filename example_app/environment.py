"""The plugin environment: what each plugin is built with."""

from __future__ import annotations

import logging
import typing as t
from dataclasses import dataclass

from flask import Flask

from flask_backstage_auth import AuthService, BackstageAuth, HttpAuthService, PermissionsService
from flask_backstage_auth.config import ConfigReader
from flask_backstage_auth.discovery import HostDiscovery


@dataclass(frozen=True)
class PluginEnvironment:
    """The services of one plugin, as Backstage's new backend system hands them out."""

    plugin_id: str
    logger: logging.Logger
    config: ConfigReader
    discovery: HostDiscovery
    auth: AuthService
    http_auth: HttpAuthService
    permissions: PermissionsService


def make_create_env(app: Flask, config: ConfigReader) -> t.Callable[[str], PluginEnvironment]:
    """A factory of per-plugin environments backed by the app's ``BackstageAuth``."""
    state = BackstageAuth.state(app)

    def create_env(plugin_id: str) -> PluginEnvironment:
        return PluginEnvironment(
            plugin_id=plugin_id,
            logger=logging.getLogger(f"example_app.{plugin_id}"),
            config=config,
            discovery=state.discovery,
            auth=state.auth(plugin_id),
            http_auth=state.http_auth(plugin_id),
            permissions=state.permissions,
        )

    return create_env
