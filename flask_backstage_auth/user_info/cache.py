"""Backstage's ``CachedUserInfoService``: one answer per token for a few seconds.

Entries are keyed by the credentials' token and live ``ttl`` seconds (5, as
Backstage); expired ones are swept at most every 30 seconds. Calls for the same
token while one is running wait for its answer (Backstage shares the
promise) instead of asking the auth backend again. A failure is never kept:
the next call asks again. Unlike Backstage's map, the cache is bounded
(``max_entries``, the oldest entry goes first).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from flask_backstage_auth.clock import Clock, system_clock
from flask_backstage_auth.credentials import Credentials
from flask_backstage_auth.errors import ServiceUnavailableError
from flask_backstage_auth.user_info.service import BackstageUserInfo, UserInfoService

DEFAULT_TTL = 5.0
SWEEP_INTERVAL = 30.0
DEFAULT_MAX_ENTRIES = 10_000


class _Entry:
    __slots__ = ("future", "expires_at")

    def __init__(self, future: Future[BackstageUserInfo], expires_at: float) -> None:
        self.future = future
        self.expires_at = expires_at


class CachedUserInfoService:
    """A :class:`~flask_backstage_auth.user_info.service.UserInfoService` that caches ``delegate``.

    :param delegate: asked on a miss.
    :param ttl: seconds an answer is reused.
    :param wait: the longest seconds a call waits for the same token's
        running call (then it fails with a 503, as the running one would).
    """

    def __init__(
        self,
        delegate: UserInfoService,
        *,
        ttl: float = DEFAULT_TTL,
        wait: float = 10.0,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Clock = system_clock,
    ) -> None:
        self.delegate = delegate
        self.ttl = ttl
        self.wait = wait
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._last_sweep = clock()

    def __len__(self) -> int:
        return len(self._entries)

    def get_user_info(self, credentials: Credentials) -> BackstageUserInfo:
        """The delegate's answer for ``credentials``, reused for ``ttl`` seconds per token."""
        token = credentials.token
        if not token:
            return self.delegate.get_user_info(credentials)
        now = self._clock()
        with self._lock:
            if now - self._last_sweep > SWEEP_INTERVAL:
                self._last_sweep = now
                for key in [k for k, e in self._entries.items() if e.expires_at <= now]:
                    del self._entries[key]
            entry = self._entries.get(token)
            if entry is not None and entry.expires_at > now:
                owner = False
            else:
                owner = True
                entry = _Entry(Future(), now + self.ttl)
                if self.max_entries:
                    while len(self._entries) >= self.max_entries:
                        self._entries.pop(next(iter(self._entries)))
                    self._entries[token] = entry
        if not owner:
            try:
                return entry.future.result(timeout=self.wait)
            except FutureTimeout:
                raise ServiceUnavailableError(
                    "Fetching user info from the auth backend took too long"
                ) from None
        try:
            info = self.delegate.get_user_info(credentials)
        except BaseException as exc:
            with self._lock:
                if self._entries.get(token) is entry:
                    del self._entries[token]
            entry.future.set_exception(exc)
            raise
        entry.future.set_result(info)
        return info

    def clear(self) -> None:
        """Forget every answer."""
        with self._lock:
            self._entries.clear()


__all__ = ["CachedUserInfoService", "DEFAULT_TTL", "SWEEP_INTERVAL"]
