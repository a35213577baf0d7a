"""An access token's last use and audit events, written off the request's path.

A request that authenticates with an access token does not wait for the
database to note that it did. :class:`UsageRecorder` queues the note (a
token's last use, one per token, the latest kept; a use event, in the order
the events happened, with their ids and times taken then) and writes the
queue in one transaction:

* ``"background"`` (the default): a daemon thread writes it ``delay`` seconds
  after the first note, at once when :meth:`~UsageRecorder.flush` asks, and
  at interpreter exit (waiting at most ``EXIT_WAIT`` seconds in all). The
  thread starts with the first note and ends after ``idle`` seconds without
  one; after a fork the child starts its own and leaves the parent's notes to
  the parent.
* ``"manual"``: only :meth:`~UsageRecorder.flush` writes, in its caller's
  thread (tests, or an app that schedules the writes itself); at exit, as in
  the background.
* ``"inline"``: each note is written at once by the thread that makes it.
  This is also what a database that every thread shares one connection of
  (an in-memory SQLite database) gets whatever the mode, since another thread
  cannot write there while a request uses it.

A failed write never reaches a request. It is logged once (until a write
succeeds again) and the notes are kept and retried every ``retry`` seconds;
at most ``max_pending`` notes wait (more are dropped, logged once). How often
a token is noted is not decided here: the authenticator notes a use at most
once per token per ``lastUsedIntervalSeconds``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import typing as t
import weakref

import sqlalchemy as sa

from flask_backstage_auth.access_tokens.store import AuditEvent, TokenUse, new_event
from flask_backstage_auth.db.guard import describe_database_error

logger = logging.getLogger(__name__)

Mode = t.Literal["background", "manual", "inline"]
#: Makes the context the writes run in (the app's context, for its database).
WriteContext = t.Callable[[], t.ContextManager[object]]

#: How long interpreter exit waits, at most, for every recorder's queue.
EXIT_WAIT = 5.0


class UsageStore(t.Protocol):
    """Where notes go: :class:`~flask_backstage_auth.access_tokens.store.SqlAccessTokenStore`."""

    def record_usage(
        self, uses: t.Sequence[TokenUse], events: t.Sequence[AuditEvent] = ()
    ) -> None: ...

    def shares_one_connection(self) -> bool: ...


class UsageRecorder:
    """Queues access-token uses and use events, and writes them in batches.

    :param store: where they are written.
    :param mode: ``"background"``, ``"manual"`` or ``"inline"`` (see the module).
    :param delay: seconds a note waits for others before the background write.
    :param retry: seconds between attempts while the database fails.
    :param idle: seconds without a note after which the background thread ends.
    :param max_pending: notes kept at most while they wait.
    :param context: the context every write runs in (default: none).
    """

    def __init__(
        self,
        store: UsageStore,
        *,
        mode: Mode = "background",
        delay: float = 1.0,
        retry: float = 5.0,
        idle: float = 30.0,
        max_pending: int = 10_000,
        context: WriteContext | None = None,
    ) -> None:
        self._store = store
        self._mode: Mode = mode
        self._delay = delay
        self._retry = retry
        self._idle = idle
        self._max_pending = max_pending
        self._context: WriteContext = context or contextlib.nullcontext
        # None: not decided yet (the store is asked at the first note, in an app context).
        self._inline: bool | None = True if mode == "inline" else None
        self._reset()
        _RECORDERS.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._writing = threading.Lock()  # one batch at a time, so events stay in order
        self._uses: dict[str, TokenUse] = {}
        self._events: list[AuditEvent] = []
        self._accepted = 0  # notes queued so far
        self._settled = 0  # of those, written (or given up)
        self._flush_wanted = False
        self._failing = False
        self._overflowing = False
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- notes -------------------------------------------------------------

    def record_use(self, token_id: str, *, now: float, ip: str | None) -> None:
        """Note that a token was used at ``now`` from ``ip``."""
        self._note(TokenUse(token_id, now, ip), None)

    def add_event(
        self,
        token_id: str,
        event: str,
        metadata: t.Mapping[str, t.Any],
        *,
        now: float,
        actor: str | None = None,
        at_once: bool = False,
        seq: int = 0,
    ) -> None:
        """Note an audit event of a token (``actor`` ``None``: the token's own use).

        :param at_once: write it now, in this thread (a change); if that
            fails, it is queued and retried like the others.
        :param seq: the token's version the change made or the use saw
            (``0``: the version when it is written).
        """
        note = new_event(token_id, event, actor=actor, metadata=metadata, now=now, seq=seq)
        if at_once and not self._closed and self._write([], [note]) != "retry":
            return
        self._note(None, note)

    @property
    def pending(self) -> int:
        """Notes waiting to be written."""
        with self._lock:
            return len(self._uses) + len(self._events)

    def _note(self, use: TokenUse | None, event: AuditEvent | None) -> None:
        if self._closed or self._writes_inline():
            self._write([use] if use else [], [event] if event else [])
            return
        with self._lock:
            queued_before = len(self._uses) + len(self._events)
            coalesced = use is not None and use.token_id in self._uses
            if not coalesced and queued_before >= self._max_pending:
                self._overflow()
                return
            if use is not None:
                queued = self._uses.get(use.token_id)
                if queued is None or queued.at <= use.at:
                    self._uses[use.token_id] = use
            if event is not None:
                self._events.append(event)
            self._accepted += 1
            if self._mode == "background":
                self._start_worker()
                if not queued_before:  # wake the thread once, not for every note
                    self._changed.notify_all()

    def _writes_inline(self) -> bool:
        if self._inline is None:
            try:
                self._inline = self._store.shares_one_connection()
            except Exception:  # no engine yet: decide at the next note
                return False
        return self._inline

    def _overflow(self) -> None:
        if not self._overflowing:
            self._overflowing = True
            logger.warning(
                "%d access-token uses are waiting to be written: dropping new ones"
                " until the database catches up",
                self._max_pending,
            )

    # -- writing -----------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Write what is queued; ``True`` once every note made before the call is written.

        In the background mode, wait for the thread at most ``timeout``
        seconds; ``False`` after that, or at once while the database is
        failing (a request never waits for an outage). In the manual mode,
        write in this thread.
        """
        with self._lock:
            target = self._accepted
            if self._settled >= target:
                return True
            in_this_thread = self._mode == "manual"
            if not in_this_thread:
                if self._failing:
                    return False
                in_this_thread = not self._start_worker()
            if not in_this_thread:
                self._flush_wanted = True
                self._changed.notify_all()
                deadline = None if timeout is None else time.monotonic() + timeout
                while self._settled < target and not self._failing:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._changed.wait(remaining)
                return self._settled >= target
        self._write_batch()
        with self._lock:
            return self._settled >= target

    def close(self, timeout: float = EXIT_WAIT) -> bool:
        """Write what is queued, waiting at most ``timeout`` seconds, and stop the thread.

        What is still queued then is dropped; later notes are written at once
        (inline). Called at interpreter exit.
        """
        with self._lock:
            if self._mode == "manual":
                self._mode = "background"
        written = self.flush(timeout)
        with self._lock:
            self._closed = True
            self._uses, self._events = {}, []
            self._settled = self._accepted  # given up
            self._changed.notify_all()
        return written

    def _start_worker(self) -> bool:
        """Whether the thread runs (started if need be); with the lock held."""
        if self._thread is not None and self._thread.is_alive():
            return True
        thread = threading.Thread(target=self._run, name="access-token-usage", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no new threads at interpreter shutdown (Python 3.12+)
            self._thread = None
            return False
        self._thread = thread
        return True

    def _run(self) -> None:
        while True:
            with self._lock:
                idle_until = time.monotonic() + self._idle
                while self._closed or not (self._uses or self._events):
                    remaining = idle_until - time.monotonic()
                    if remaining <= 0 or self._closed:
                        if self._thread is threading.current_thread():
                            self._thread = None
                        return
                    self._changed.wait(remaining)
                # Gather more notes for a moment (longer after a failure), unless asked now.
                due = time.monotonic() + (self._retry if self._failing else self._delay)
                while not (self._flush_wanted or self._closed):
                    remaining = due - time.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.wait(remaining)
                self._flush_wanted = False
            self._write_batch()

    def _write_batch(self) -> None:
        with self._writing:
            with self._lock:
                uses, events = list(self._uses.values()), self._events
                self._uses, self._events = {}, []
                upto = self._accepted
            if not uses and not events:
                return
            outcome = self._write(uses, events)
            with self._lock:
                if outcome == "retry":
                    self._put_back(uses, events)
                else:
                    self._settled = max(self._settled, upto)
                if len(self._uses) + len(self._events) < self._max_pending // 2:
                    self._overflowing = False
                self._changed.notify_all()

    def _write(
        self, uses: t.Sequence[TokenUse], events: t.Sequence[AuditEvent]
    ) -> t.Literal["written", "retry", "dropped"]:
        try:
            with self._context():
                self._store.record_usage(uses, events)
        except Exception as exc:
            permanent = isinstance(exc, sa.exc.IntegrityError)  # a token row went away
            if not self._failing or permanent:
                logger.warning(
                    "Could not record the use of access tokens (%s); %s",
                    describe_database_error(exc.__cause__ or exc),
                    "dropped" if permanent else "retrying in the background",
                )
            if permanent:
                return "dropped"
            self._failing = True
            return "retry"
        if self._failing:
            self._failing = False
            logger.info("Recording the use of access tokens again")
        return "written"

    def _put_back(self, uses: t.Sequence[TokenUse], events: t.Sequence[AuditEvent]) -> None:
        # With the lock held: the failed batch goes before what came in meanwhile.
        for use in uses:
            queued = self._uses.get(use.token_id)
            if queued is None or queued.at < use.at:
                self._uses[use.token_id] = use
        self._events[:0] = events
        room = max(0, self._max_pending - len(self._uses))
        if len(self._events) > room:
            del self._events[room:]
            self._overflow()

    def _after_fork_in_child(self) -> None:
        # The parent's notes are the parent's to write; its thread is not here.
        self._reset()


_RECORDERS: weakref.WeakSet[UsageRecorder] = weakref.WeakSet()


def _close_all() -> None:
    deadline = time.monotonic() + EXIT_WAIT
    for recorder in list(_RECORDERS):
        recorder.close(max(0.0, deadline - time.monotonic()))


def _after_fork_in_child() -> None:
    for recorder in list(_RECORDERS):
        recorder._after_fork_in_child()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
