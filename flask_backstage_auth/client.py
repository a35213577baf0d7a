"""Outgoing calls to other plugins with a fresh service token on every request.

::

    session = plugin_session(token_manager)
    session.get(f"{discovery.get_base_url('catalog')}/entities", timeout=10)
"""

from __future__ import annotations

import typing as t

import requests
from requests.auth import AuthBase

if t.TYPE_CHECKING:  # pragma: no cover
    from .legacy import TokenManager


class TokenManagerAuth(AuthBase):
    """A ``requests`` auth that asks the token manager for a token per request.

    An empty token (the noop manager) sends no ``Authorization`` header.
    """

    def __init__(self, token_manager: TokenManager) -> None:
        self.token_manager = token_manager

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.token_manager.get_token().token
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        return request


def plugin_session(token_manager: TokenManager) -> requests.Session:
    """A ``requests.Session`` that authenticates every call with ``token_manager``."""
    session = requests.Session()
    session.auth = TokenManagerAuth(token_manager)
    return session
