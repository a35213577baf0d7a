"""The per-client limit of unauthenticated leak reports, and where a client's address comes from.

The address is ``request.remote_addr`` by default: behind a reverse proxy,
wrap the app in Werkzeug's :class:`~werkzeug.middleware.proxy_fix.ProxyFix`
(``x_for`` = the number of proxies you run) so that it is the client's, taken
from the ``X-Forwarded-For`` header the proxies set. Without ProxyFix that
header is ignored, so a client cannot pick its own address. Another source
(a header only your proxy sets, say) is a callable given to
``AccessTokens(client_address=...)``.
"""

from __future__ import annotations

import logging
import typing as t

from flask import Request
from werkzeug.exceptions import TooManyRequests

from flask_backstage_auth.errors import BackstageError
from flask_backstage_auth.ratelimit import RateLimit

logger = logging.getLogger(__name__)

__all__ = [
    "LEAK_REPORTS_PER_MINUTE",
    "LEAK_REPORT_CLIENTS",
    "ClientAddress",
    "RateLimit",
    "TooManyRequestsError",
    "client_key",
    "remote_addr",
]

#: Takes the request, returns the client's address (``None``: unknown).
ClientAddress = t.Callable[[Request], t.Optional[str]]

#: Unauthenticated leak reports a client address may send per minute.
LEAK_REPORTS_PER_MINUTE = 30
#: Client addresses remembered at once; past that the longest idle is forgotten.
LEAK_REPORT_CLIENTS = 10_000


class TooManyRequestsError(BackstageError, TooManyRequests):
    """429: slow down."""

    code = 429
    error_name = "TooManyRequestsError"


def remote_addr(request: Request) -> str | None:
    """The default :data:`ClientAddress`: ``request.remote_addr`` (ProxyFix sets it)."""
    return request.remote_addr


def client_key(source: ClientAddress, request: Request) -> str:
    """The address ``source`` gives, as a key; ``""`` (one shared key) when it has none."""
    try:
        address = source(request)
    except Exception:  # a broken source must not open the limit, nor answer 500
        logger.exception("The client address source failed; counting the request as unknown")
        return ""
    return address if isinstance(address, str) else ""
