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
import threading
import typing as t
from collections import OrderedDict, deque

from flask import Request
from werkzeug.exceptions import TooManyRequests

from flask_backstage_auth.errors import BackstageError

logger = logging.getLogger(__name__)

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


class RateLimit:
    """At most ``limit`` events per ``per`` seconds for each key, in this process.

    Memory is bounded: at most ``max_keys`` keys are kept, each with at most
    ``limit`` moments. A new key past that forgets the key idle the longest,
    one at a time, so many new keys never reset the count of an active one
    (a refused attempt counts as activity). Keys whose moments have all
    expired are forgotten as they reach the front, one per call.
    """

    def __init__(self, limit: int, *, per: float, max_keys: int = LEAK_REPORT_CLIENTS) -> None:
        if limit < 1 or max_keys < 1 or per <= 0:
            raise ValueError("limit, per and max_keys must be positive")
        self.limit = limit
        self.per = per
        self.max_keys = max_keys
        self._lock = threading.Lock()
        # Ordered by last activity: the first key is the one idle the longest.
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def allow(self, key: str, now: float) -> bool:
        """Count one event of ``key`` at ``now``, unless it is over the limit."""
        with self._lock:
            moments = self._seen.get(key)
            if moments is None:
                moments = self._seen[key] = deque(maxlen=self.limit)
                if len(self._seen) > self.max_keys:
                    self._seen.popitem(last=False)
            else:
                self._seen.move_to_end(key)
            while moments and now - moments[0] >= self.per:
                moments.popleft()
            allowed = len(moments) < self.limit
            if allowed:
                moments.append(now)
            self._forget_one_expired(now)
            return allowed

    def _forget_one_expired(self, now: float) -> None:
        oldest, moments = next(iter(self._seen.items()))
        if not moments or now - moments[-1] >= self.per:
            del self._seen[oldest]
