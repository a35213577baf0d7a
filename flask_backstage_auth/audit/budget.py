"""The bound on audit events that callers can cause (refused requests, denied permissions).

Anyone can send requests that are refused, as fast as they like: each must
not become log lines without end. :class:`RefusalBudget` admits at most
``per_source`` events per source (a client address, or an actor) and at most
``total`` events in all, per ``window`` seconds; the others are only counted,
and the next admitted event carries that count (``meta.suppressed``: the
events not logged since the previous one). Memory is bounded as well: at most
``max_sources`` sources are remembered (:class:`~flask_backstage_auth.ratelimit.RateLimit`).

So a flood costs at most ``total`` events (two log lines each: ``initiated``
and ``failed``) a window, however many clients send it, and one client cannot
use up more than ``per_source`` of them.
"""

from __future__ import annotations

import threading

from flask_backstage_auth.clock import Clock, system_clock
from flask_backstage_auth.ratelimit import RateLimit

#: Events admitted in all per window, by default.
TOTAL_PER_WINDOW = 100
#: Events admitted per source per window, by default.
PER_SOURCE_PER_WINDOW = 10
#: The window, in seconds.
WINDOW = 60.0
#: Sources remembered at once.
MAX_SOURCES = 10_000


class RefusalBudget:
    """At most ``per_source`` events per source and ``total`` in all per ``window`` seconds."""

    def __init__(
        self,
        *,
        total: int = TOTAL_PER_WINDOW,
        per_source: int = PER_SOURCE_PER_WINDOW,
        window: float = WINDOW,
        max_sources: int = MAX_SOURCES,
        clock: Clock = system_clock,
    ) -> None:
        self._clock = clock
        self._per_source = RateLimit(per_source, per=window, max_keys=max_sources)
        self._total = RateLimit(total, per=window, max_keys=1)
        self._lock = threading.Lock()
        self._suppressed = 0

    def admit(self, source: str) -> tuple[bool, int]:
        """Whether an event of ``source`` is logged now, and, if it is, how
        many were not since the previous one that was."""
        now = self._clock()
        with self._lock:
            # The source first: a refused source does not use up the total.
            if self._per_source.allow(source, now) and self._total.allow("", now):
                suppressed, self._suppressed = self._suppressed, 0
                return True, suppressed
            self._suppressed += 1
            return False, 0

    @property
    def suppressed(self) -> int:
        """Events not logged since the last one that was."""
        with self._lock:
            return self._suppressed
