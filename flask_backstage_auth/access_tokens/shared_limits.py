"""Limits that every instance of an app shares, counted in Redis by the ``limits`` library.

Configured by Backstage's own key, the store its ``backend.rateLimit`` uses::

    backend:
      rateLimit:
        store:
          type: redis                       # or memory (the default): per process
          connection: redis://redis:6379/0  # ${REDIS_URL} works, as everywhere

Without it (or with ``type: memory``) each process counts on its own, as
before, and N instances allow N times a limit. With it the leak-report limit
and the last-used / failed-use throttles hold in total. Needs the ``redis``
extra (``pip install 'flask-backstage-auth[redis]'``): ``limits`` and
``redis`` are imported only when a store is configured.

Redis is never a reason to fail or stall a request: every call has a short
socket timeout and no retry, and after a failure the store is left alone for
:data:`RETRY_AFTER` seconds, during which the limits are counted in each
process (which they always are too: see :class:`SharedRateLimit`). One
warning is logged when the store stops answering and one line when it answers
again; never the connection string, which may hold a password.

Keys are ``backstage-auth:LIMITER/access-tokens/<limit>/<sha256 of the key>/...``:
namespaced, and holding no address, token id, token or secret. Two
deployments sharing one Redis use separate databases (``redis://host/1``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import typing as t

from flask_backstage_auth.access_tokens.ratelimit import LEAK_REPORT_CLIENTS, RateLimit
from flask_backstage_auth.config.reader import ConfigReader
from flask_backstage_auth.errors import ConfigError

if t.TYPE_CHECKING:  # pragma: no cover
    from limits.strategies import RateLimiter

logger = logging.getLogger(__name__)

#: The Backstage config key naming the store.
CONFIG_PATH = "backend.rateLimit.store"
#: Seconds a connection to Redis, or one command, may take.
STORE_TIMEOUT = 0.25
#: Seconds the store is left alone after it failed.
RETRY_AFTER = 30.0
#: The prefix of every key (``limits`` adds ``:LIMITER/...``).
KEY_PREFIX = "backstage-auth"
#: The first part of every limit's identifiers: this plugin.
NAMESPACE = "access-tokens"
_SCHEMES = ("redis", "rediss")

Window = t.Literal["moving", "fixed"]
#: Counts one event of a key: ``True`` allowed, ``False`` over the limit,
#: ``None`` the store could not say (count in this process).
Counter = t.Callable[[str], t.Optional[bool]]


def _digest(key: str) -> str:
    # Addresses and token ids are no secrets, but a key is no place for either.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class LimitStore:
    """A Redis store that the limits of an app share across its instances.

    :param uri: ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://...``.
    :param timeout: seconds to connect or to run one command.
    :param retry_after: seconds to count per process after a failure.
    :raises ConfigError: ``limits`` or ``redis`` is not installed, or ``uri`` is
        not a Redis URL.
    """

    def __init__(
        self,
        uri: str,
        *,
        timeout: float = STORE_TIMEOUT,
        retry_after: float = RETRY_AFTER,
        monotonic: t.Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(uri, str) or uri.partition("://")[0] not in _SCHEMES:
            raise ConfigError(f"{CONFIG_PATH}.connection must be a redis:// or rediss:// URL")
        try:
            from limits.storage import RedisStorage
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise ConfigError(
                f"{CONFIG_PATH} of type redis needs the redis extra:"
                " pip install 'flask-backstage-auth[redis]'"
            ) from None
        options: dict[str, t.Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # No retry: redis-py's defaults (some versions retry with backoff)
            # would multiply the wait of the request.
            "retry": Retry(NoBackoff(), 0),
        }
        try:
            # Builds a client and its pool; connects only at the first command.
            self._storage = RedisStorage(
                uri, key_prefix=KEY_PREFIX, wrap_exceptions=True, **options
            )
        except Exception:  # never the URL in the message: it may hold a password
            raise ConfigError(f"{CONFIG_PATH}.connection is not a valid Redis URL") from None
        self.retry_after = retry_after
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._down_until: float | None = None

    @classmethod
    def from_config(cls, config: ConfigReader) -> LimitStore | None:
        """The store ``backend.rateLimit.store`` names; ``None`` for memory (per process)."""
        if config.get(CONFIG_PATH) is None:
            return None
        store = config.get_config(CONFIG_PATH)
        kind = store.get_string("type")
        if kind == "memory":
            return None
        if kind != "redis":
            raise ConfigError(f"{store.path('type')} must be 'redis' or 'memory'")
        return cls(store.get_string("connection"))

    def close(self) -> None:
        """Close the connections to Redis (the next limit opens one again)."""
        self._storage.storage.connection_pool.disconnect()

    def counter(self, name: str, limit: int, per: float, *, window: Window = "moving") -> Counter:
        """At most ``limit`` events per key per ``per`` seconds (whole seconds, rounded up).

        ``moving``: any ``per`` seconds, as :class:`RateLimit` counts; ``fixed``:
        one counter per key from its first event (one Redis key, cheaper).
        """
        from limits import RateLimitItemPerSecond
        from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

        if limit < 1 or per <= 0:
            raise ValueError("limit and per must be positive")
        item = RateLimitItemPerSecond(limit, max(1, math.ceil(per)))
        limiter: RateLimiter = (
            MovingWindowRateLimiter(self._storage)
            if window == "moving"
            else FixedWindowRateLimiter(self._storage)
        )

        def hit(key: str) -> bool | None:
            if self._resting():
                return None
            try:
                allowed = limiter.hit(item, NAMESPACE, name, _digest(key))
            except Exception as error:  # unreachable, slow, full, refusing: count locally
                self._failed(error)
                return None
            self._answered()
            return bool(allowed)

        return hit

    def _resting(self) -> bool:
        with self._lock:
            return self._down_until is not None and self._monotonic() < self._down_until

    def _failed(self, error: Exception) -> None:
        cause = getattr(error, "storage_error", error)
        with self._lock:
            first = self._down_until is None
            self._down_until = self._monotonic() + self.retry_after
        if first:
            logger.warning(
                "The rate-limit store does not answer (%s); each process counts the"
                " access-token limits on its own until it does (next try in %g s)",
                type(cause).__name__,
                self.retry_after,
            )

    def _answered(self) -> None:
        with self._lock:
            was_down = self._down_until is not None
            self._down_until = None
        if was_down:
            logger.info("The rate-limit store answers again; the access-token limits are shared")


class SharedRateLimit:
    """At most ``limit`` events per ``per`` seconds for each key, across instances.

    Always counted in this process first (a :class:`RateLimit`, bounded
    memory): over the limit here is over the limit everywhere, and the store is
    not asked. Then, with a ``store``, counted there too, and refused when the
    instances together are over it. While the store does not answer, the
    count of this process decides: still limited, at most once per instance.
    """

    def __init__(
        self,
        name: str,
        limit: int,
        *,
        per: float,
        store: LimitStore | None = None,
        max_keys: int = LEAK_REPORT_CLIENTS,
    ) -> None:
        self.local = RateLimit(limit, per=per, max_keys=max_keys)
        self._shared = store.counter(name, limit, per) if store is not None else None

    def allow(self, key: str, now: float) -> bool:
        """Count one event of ``key`` at ``now`` (this process's clock), unless over the limit."""
        if not self.local.allow(key, now):
            return False
        return self._shared is None or self._shared(key) is not False
