"""Changes to access tokens pushed to every instance: PostgreSQL ``LISTEN/NOTIFY``.

A revocation, a rotation or an update (narrowed scopes, a new name) sends
``NOTIFY`` on :data:`CHANNEL` with the token's id, in the transaction of the
change (:func:`announce`): PostgreSQL delivers it on commit, never for a change
rolled back. Each instance keeps one dedicated connection that ``LISTEN``\\ s,
in a daemon thread (:class:`ChangeListener`), and drops its cached
verifications of that token the moment the notification arrives; the next
request verifies it again against the database.

Polling stays the fallback: a verification is never cached longer than
``revocationCheckSeconds``, so a notification lost while the listener is
down (or on SQLite, or without psycopg 3) still takes effect within that
bound. When the listener (re)connects it drops every cached verification, so
nothing changed while it was away outlives the reconnect either.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import typing as t
import weakref

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

logger = logging.getLogger(__name__)

#: The notification channel (database-wide: instances on other schemas of the
#: same database hear each other's token ids, which only costs a verification).
CHANNEL = "backstage_auth_access_tokens"
#: What the listener's connection calls itself in ``pg_stat_activity``.
APPLICATION_NAME = "flask-backstage-auth access-token listener"

#: Whether changes reach this instance by push, or only by polling.
Mode = t.Literal["push", "polling"]


def announce(connection: Connection, token_id: str) -> None:
    """Tell every instance that ``token_id`` changed, when this transaction commits.

    PostgreSQL only (elsewhere a no-op: instances poll).
    """
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_notify(CHANNEL, token_id)))


class _Listening(t.Protocol):
    """What a listener connection does (a psycopg 3 connection)."""

    def execute(self, query: t.Any) -> t.Any: ...

    def notifies(self, *, timeout: float | None = None) -> t.Iterator[t.Any]: ...

    def close(self) -> None: ...


Connect = t.Callable[[], _Listening]


class Forgetting(t.Protocol):
    """What a listener tells of changes (the access-tokens state of an app)."""

    def forget(self, token_id: str) -> None:
        """Drop the cached verifications of ``token_id``."""

    def forget_all(self) -> None:
        """Drop every cached verification."""


def psycopg_connect(engine: Engine, *, timeout: float = 5.0) -> Connect | None:
    """Connect to ``engine``'s database with psycopg 3 (``None``: not PostgreSQL, or no psycopg 3).

    The same host, database and credentials as the engine, with bounded
    waits: a connect timeout and TCP keepalives, so a dead peer is noticed.
    """
    if engine.dialect.name != "postgresql":
        return None
    try:
        import psycopg
    except ImportError:
        logger.info(
            "psycopg 3 is not installed: access-token changes reach this instance"
            " by polling only (accessTokens.service.revocationCheckSeconds)"
        )
        return None
    url = engine.url.set(drivername="postgresql+psycopg")
    _args, params = engine.dialect.create_connect_args(url)
    if "host" in params and isinstance(params["host"], (list, tuple)):  # pragma: no cover
        params["host"] = ",".join(params["host"])
    seconds = max(1, int(timeout))
    params.update(
        connect_timeout=seconds,
        application_name=APPLICATION_NAME,
        keepalives=1,
        keepalives_idle=seconds,
        keepalives_interval=1,
        keepalives_count=3,
        tcp_user_timeout=seconds * 1000,
    )

    def connect() -> _Listening:
        connection = psycopg.connect(autocommit=True, **params)
        return t.cast(_Listening, connection)

    return connect


class ChangeListener:
    """Listens for changed tokens in a daemon thread; reconnects with backoff.

    :param owner: told of each changed token id, and on each (re)connect to
        forget every cached verification (what changed while nobody listened).
    :param wait: how long one wait for notifications lasts; between waits the
        listener checks it is still wanted and pings the database.
    :param backoff: the first and the longest pause before reconnecting.

    It holds ``owner`` weakly: once that is garbage, the thread ends (within
    ``wait`` seconds) and closes its connection. :meth:`start` again after a
    ``fork``: the thread does not follow the process.
    """

    def __init__(
        self,
        owner: Forgetting,
        *,
        wait: float = 1.0,
        ping_every: float = 10.0,
        backoff: tuple[float, float] = (0.1, 10.0),
    ) -> None:
        self._owner = weakref.ref(owner)
        self.wait = wait
        self.ping_every = ping_every
        self.backoff = backoff
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        #: How the listener connects (replaceable: tests make it fail).
        self.connect: Connect | None = None
        #: The server process of the current connection (``None``: not connected).
        self.backend_pid: int | None = None
        #: How many times it has connected.
        self.connections = 0

    @property
    def connected(self) -> bool:
        """Whether it is listening now (changes arrive by push)."""
        return self._connected.is_set()

    def running(self) -> bool:
        """Whether its thread runs in this process."""
        thread = self._thread
        return thread is not None and self._pid == os.getpid() and thread.is_alive()

    def start(self, connect: Connect) -> None:
        """Listen in a daemon thread of this process, unless one already does."""
        with self._lock:
            if self.running():
                return
            self.connect = connect
            self._stop = threading.Event()
            self._connected = threading.Event()
            self.backend_pid = None
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name="access-token change listener", daemon=True
            )
            self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the listener to be listening."""
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 5.0) -> bool:
        """End the thread (within about :attr:`wait` seconds); whether it ended in ``timeout``."""
        self._stop.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread() or self._pid != os.getpid():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _wanted(self) -> bool:
        return not self._stop.is_set() and self._owner() is not None

    def _tell(self, token_id: str | None) -> None:
        owner = self._owner()  # never held longer: the owner may be collected
        if owner is None:
            return
        if token_id is None:
            owner.forget_all()
        else:
            owner.forget(token_id)

    def _run(self) -> None:
        stop, connected = self._stop, self._connected
        pause = self.backoff[0]
        failing = False  # one warning per outage, not one per attempt
        while self._wanted():
            try:
                self._listen(stop, connected)
            except Exception as exc:  # any failure: reconnect later, poll meanwhile
                if connected.is_set():
                    pause = self.backoff[0]
                if connected.is_set() or not failing:
                    failing = True
                    logger.warning(
                        "The access-token change listener lost its database connection"
                        " (%s); reconnecting, changes made meanwhile take effect within"
                        " revocationCheckSeconds",
                        type(exc).__name__,
                    )
            finally:
                connected.clear()
                self.backend_pid = None
            if stop.wait(pause):
                break
            pause = min(pause * 2, self.backoff[1])

    def _listen(self, stop: threading.Event, connected: threading.Event) -> None:
        connect = self.connect
        assert connect is not None
        connection = connect()
        try:
            connection.execute(f"LISTEN {CHANNEL}")
            self.backend_pid = int(connection.execute("SELECT pg_backend_pid()").fetchone()[0])
            self.connections += 1
            connected.set()
            # Whatever changed while nobody listened: verified again, from now on.
            self._tell(None)
            pinged = time.monotonic()
            while self._wanted():
                for note in connection.notifies(timeout=self.wait):
                    self._tell(str(note.payload))
                if time.monotonic() - pinged >= self.ping_every:
                    connection.execute("SELECT 1")
                    pinged = time.monotonic()
        finally:
            connection.close()
