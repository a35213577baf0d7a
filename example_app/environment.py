"""The plugin environment, as in seed 000's ``makeCreateEnv``."""

from __future__ import annotations

import logging
import typing as t
from dataclasses import dataclass

from flask_backstage_auth import ConfigReader, HostDiscovery, TokenManager


@dataclass(frozen=True)
class PluginEnvironment:
    """What each plugin is built with."""

    plugin_id: str
    logger: logging.Logger
    config: ConfigReader
    discovery: HostDiscovery
    token_manager: TokenManager


def make_create_env(
    config: ConfigReader, discovery: HostDiscovery, token_manager: TokenManager
) -> t.Callable[[str], PluginEnvironment]:
    """A factory of per-plugin environments sharing one token manager."""

    def create_env(plugin_id: str) -> PluginEnvironment:
        return PluginEnvironment(
            plugin_id=plugin_id,
            logger=logging.getLogger(f"example_app.{plugin_id}"),
            config=config,
            discovery=discovery,
            token_manager=token_manager,
        )

    return create_env
