"""The clock every verifier reads, so tests and vectors can fix the time."""

from __future__ import annotations

import time
import typing as t

#: A callable returning the current time in epoch seconds.
Clock = t.Callable[[], float]

system_clock: Clock = time.time
