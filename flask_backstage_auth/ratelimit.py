"""A bounded, in-process limit of events per key and time window.

Used for what an unauthenticated caller can make us do often: leak reports
(:mod:`~flask_backstage_auth.access_tokens.ratelimit`) and the audit events
of refused requests (:mod:`~flask_backstage_auth.audit.budget`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque


class RateLimit:
    """At most ``limit`` events per ``per`` seconds for each key, in this process.

    Memory is bounded: at most ``max_keys`` keys are kept, each with at most
    ``limit`` moments. A new key past that forgets the key idle the longest,
    one at a time, so many new keys never reset the count of an active one
    (a refused attempt counts as activity). Keys whose moments have all
    expired are forgotten as they reach the front, one per call.
    """

    def __init__(self, limit: int, *, per: float, max_keys: int = 10_000) -> None:
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
