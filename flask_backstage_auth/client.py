"""Outgoing calls to other plugins with a fresh token on every request.

::

    # new services: a plugin request token for the target, per request
    session = plugin_session(auth=auth, target_plugin_id="catalog")
    # legacy: a service token from the token manager
    session = plugin_session(token_manager)
    session.get(f"{discovery.get_base_url('catalog')}/entities", timeout=10)
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:  # pragma: no cover
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
    import requests  # only where sessions are made: importing the package stays lean

    session = requests.Session()
    if auth is not None:
        if token_manager is not None or target_plugin_id is None:
            raise TypeError("give auth with target_plugin_id, or a token_manager alone")
        session.auth = PluginRequestAuth(auth, target_plugin_id, on_behalf_of)
    elif token_manager is not None:
        session.auth = TokenManagerAuth(token_manager)
    else:
        raise TypeError("give a token_manager, or auth and target_plugin_id")
    return session
