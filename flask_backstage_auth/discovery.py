"""Where plugins live: Backstage's ``HostDiscovery``.

Each plugin is at ``<backend.baseUrl><prefix>/<pluginId>`` (the prefix is
``/api`` by default, the extension's ``BACKSTAGE_AUTH_PLUGIN_PREFIX``) unless
``discovery.endpoints`` says otherwise::

    discovery:
      endpoints:
        - target: http://catalog.internal:7007/api/{{pluginId}}
          plugins: [catalog]
        - target: {internal: http://search:7007/api/search, external: https://x/api/search}
          plugins: [search]
"""

from __future__ import annotations

import typing as t

from flask_backstage_auth.config.reader import ConfigReader, as_reader
from flask_backstage_auth.errors import ConfigError


class HostDiscovery:
    """Base URLs of plugins, from ``backend.baseUrl`` and ``discovery.endpoints``.

    :param plugin_prefix: where plugins are mounted under ``backend.baseUrl``
        (``""`` or a path starting with ``/``); ``discovery.endpoints`` are
        used as configured.
    """

    def __init__(
        self,
        base_url: str,
        endpoints: t.Sequence[tuple[frozenset[str], str, str]] = (),
        *,
        plugin_prefix: str = "/api",
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._endpoints = tuple(endpoints)
        self._prefix = plugin_prefix.rstrip("/")

    @classmethod
    def from_config(
        cls, config: ConfigReader | t.Mapping[str, t.Any] | None, *, plugin_prefix: str = "/api"
    ) -> HostDiscovery:
        """Read ``backend.baseUrl`` (required) and ``discovery.endpoints``."""
        reader = as_reader(config)
        base_url = reader.get_string("backend.baseUrl")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError("backend.baseUrl must be an http(s) URL")
        endpoints = []
        for entry in reader.get_config_list("discovery.endpoints"):
            plugins = entry.get("plugins")
            if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
                raise ConfigError(f"{entry.path('plugins')} must be a list of plugin ids")
            target = entry.get("target")
            if isinstance(target, str):
                internal = external = target
            elif isinstance(target, dict):
                internal = entry.get_string("target.internal")
                external = entry.get_string("target.external")
            else:
                raise ConfigError(f"{entry.path('target')} must be a URL or {{internal, external}}")
            endpoints.append((frozenset(plugins), internal, external))
        return cls(base_url, endpoints, plugin_prefix=plugin_prefix)

    def _find(self, plugin_id: str, external: bool) -> str:
        for plugins, internal_url, external_url in self._endpoints:
            if plugin_id in plugins:
                url = external_url if external else internal_url
                return (
                    url.replace("{{pluginId}}", plugin_id)
                    .replace("{{ pluginId }}", plugin_id)
                    .rstrip("/")
                )
        return f"{self._base_url}{self._prefix}/{plugin_id}"

    def has_endpoint(self, plugin_id: str) -> bool:
        """Whether ``discovery.endpoints`` names ``plugin_id`` (else ``backend.baseUrl``
        finds it)."""
        return any(plugin_id in plugins for plugins, _, _ in self._endpoints)

    def get_base_url(self, plugin_id: str) -> str:
        """The URL other backends use to reach ``plugin_id``."""
        return self._find(plugin_id, external=False)

    def get_external_base_url(self, plugin_id: str) -> str:
        """The URL browsers use to reach ``plugin_id``."""
        return self._find(plugin_id, external=True)
