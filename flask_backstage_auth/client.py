"""Outgoing calls to other plugins with a fresh token on every request.

::

    # new services: a plugin request token for the target, per request
    session = plugin_session(auth=auth, target_plugin_id="catalog")
    # legacy: a service token from the token manager
    session = plugin_session(token_manager)
    session.get(f"{discovery.get_base_url('catalog')}/entities", timeout=10)

    # in an ``async def`` view: an httpx.AsyncClient with the same token handling
    async with plugin_async_client(auth=auth, target_plugin_id="catalog") as client:
        await client.get(f"{discovery.get_base_url('catalog')}/entities")
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:  # pragma: no cover
    import httpx
    import requests

    from flask_backstage_auth.auth.service import AuthService
    from flask_backstage_auth.credentials import Credentials
    from flask_backstage_auth.legacy.token_manager import TokenManager


class BearerTokenAuth:
    """A ``requests`` auth that asks ``get_token`` for a token on every request.

    ``requests`` takes any callable as an auth; this one is not a subclass of
    ``requests.auth.AuthBase``, so that importing it does not import ``requests``.

    An empty token (the noop manager, or ``none`` credentials with the default
    policy disabled) sends no ``Authorization`` header.
    """

    def __init__(self, get_token: t.Callable[[], str]) -> None:
        self.get_token = get_token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.get_token()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        return request


class TokenManagerAuth(BearerTokenAuth):
    """Legacy: a service token from a :class:`~flask_backstage_auth.TokenManager`."""

    def __init__(self, token_manager: TokenManager) -> None:
        super().__init__(lambda: token_manager.get_token().token)
        self.token_manager = token_manager


class PluginRequestAuth(BearerTokenAuth):
    """A plugin request token for ``target_plugin_id``.

    :param on_behalf_of: the caller to act for; by default the plugin itself
        (``auth.get_own_service_credentials()``). A callable is called per
        request, e.g. ``get_credentials`` to forward the current caller.
    """

    def __init__(
        self,
        auth: AuthService,
        target_plugin_id: str,
        on_behalf_of: Credentials | t.Callable[[], Credentials] | None = None,
    ) -> None:
        def get_token() -> str:
            if on_behalf_of is None:
                credentials = auth.get_own_service_credentials()
            elif callable(on_behalf_of):
                credentials = on_behalf_of()
            else:
                credentials = on_behalf_of
            return auth.get_plugin_request_token(
                on_behalf_of=credentials, target_plugin_id=target_plugin_id
            ).token

        super().__init__(get_token)


def bearer_auth(
    token_manager: TokenManager | None = None,
    *,
    auth: AuthService | None = None,
    target_plugin_id: str | None = None,
    on_behalf_of: Credentials | t.Callable[[], Credentials] | None = None,
) -> BearerTokenAuth:
    """The token source of :func:`plugin_session` and :func:`plugin_async_client`.

    :raises TypeError: neither or both of ``token_manager`` and ``auth``, or
        ``auth`` without ``target_plugin_id``.
    """
    if auth is not None:
        if token_manager is not None or target_plugin_id is None:
            raise TypeError("give auth with target_plugin_id, or a token_manager alone")
        return PluginRequestAuth(auth, target_plugin_id, on_behalf_of)
    if token_manager is not None:
        return TokenManagerAuth(token_manager)
    raise TypeError("give a token_manager, or auth and target_plugin_id")


def plugin_session(
    token_manager: TokenManager | None = None,
    *,
    auth: AuthService | None = None,
    target_plugin_id: str | None = None,
    on_behalf_of: Credentials | t.Callable[[], Credentials] | None = None,
) -> requests.Session:
    """A ``requests.Session`` that authenticates every call.

    Give either a ``token_manager`` (legacy service tokens), or ``auth`` and
    ``target_plugin_id`` (plugin request tokens).
    """
    source = bearer_auth(
        token_manager, auth=auth, target_plugin_id=target_plugin_id, on_behalf_of=on_behalf_of
    )
    import requests  # only where sessions are made: importing the package stays lean

    session = requests.Session()
    session.auth = source
    return session


#: The default timeout of :func:`plugin_async_client` (seconds, each phase).
ASYNC_CLIENT_TIMEOUT = 10.0


def plugin_async_client(
    token_manager: TokenManager | None = None,
    *,
    auth: AuthService | None = None,
    target_plugin_id: str | None = None,
    on_behalf_of: Credentials | t.Callable[[], Credentials] | None = None,
    timeout: float = ASYNC_CLIENT_TIMEOUT,
    **client_options: t.Any,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that authenticates every call, for ``async def``
    views: the same arguments and token handling as :func:`plugin_session`.

    Needs ``httpx`` (``pip install httpx``). A fresh token is made for each
    request; ``on_behalf_of=get_credentials`` forwards the current caller, which
    works inside an async view (the request context is copied into it).
    ``client_options`` go to ``httpx.AsyncClient``.
    """
    source = bearer_auth(
        token_manager, auth=auth, target_plugin_id=target_plugin_id, on_behalf_of=on_behalf_of
    )
    import httpx  # only where clients are made

    async def add_token(request: httpx.Request) -> None:
        token = source.get_token()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"

    hooks = client_options.pop("event_hooks", {})
    hooks = {**hooks, "request": [add_token, *hooks.get("request", [])]}
    return httpx.AsyncClient(timeout=timeout, event_hooks=hooks, **client_options)
