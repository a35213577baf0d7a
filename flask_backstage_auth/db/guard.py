"""Bounded waits on the database, and one log line per outage.

Every transaction of the library's stores goes through :func:`bounded_transaction`:

* the pool checkout waits at most ``pool_timeout`` seconds, and a new
  connection at most ``connect_timeout`` (the engine options of
  :func:`engine_options`, which the library applies to engines it creates and
  which an app gives its own Flask-SQLAlchemy engine through
  ``SQLALCHEMY_ENGINE_OPTIONS``);
* on PostgreSQL, ``SET LOCAL statement_timeout`` and ``lock_timeout`` make a
  live server give up a slow statement or a lock wait;
* a server that stops answering altogether (paused, or a network path that
  drops packets while the kernel still acknowledges them) cannot cancel
  anything, so a watchdog shuts the connection's socket down once the
  transaction has run ``statement_timeout`` plus :data:`GRACE` seconds: the
  driver fails at once, SQLAlchemy drops the connection from its pool, and
  the store answers a 503;
* while a database is unreachable, one transaction at a time tries it and
  the others fail at once (:class:`OutageLog`), so an outage does not hold
  every worker thread for the length of the bounds.

A failure is logged once per outage (per database), with its cause (the
error classes) and without the URL, credentials or the driver's message; the
first success after it is logged too. A missing table says to run ``flask
backstage-auth db upgrade``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import re
import socket
import threading
import time
import typing as t
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from flask_backstage_auth.config.timeouts import DEFAULT_TIMEOUTS, DatabaseTimeouts

__all__ = [
    "DEFAULT_TIMEOUTS",
    "GRACE",
    "OUTAGES",
    "DatabaseTimeouts",
    "DatabaseUnavailable",
    "OutageLog",
    "TransactionTimedOut",
    "bounded_transaction",
    "database_error_line",
    "describe_database_error",
    "describe_failure",
    "engine_options",
    "is_missing_schema",
    "set_local_timeouts",
]

logger = logging.getLogger("flask_backstage_auth.db")

#: Seconds the watchdog leaves a live server to cancel a statement itself.
GRACE = 1.0


def engine_options(url: str | sa.engine.URL, timeouts: DatabaseTimeouts) -> dict[str, t.Any]:
    """``create_engine`` keyword arguments (or ``SQLALCHEMY_ENGINE_OPTIONS``) with the bounds.

    PostgreSQL: ``connect_timeout`` and TCP keepalives; SQLite: the busy
    timeout. Every pooling engine: ``pool_timeout``.
    """
    backend = sa.engine.make_url(url).get_backend_name()
    options: dict[str, t.Any] = {}
    if backend == "postgresql":
        options["connect_args"] = {
            # libpq takes whole seconds (at least 2 are honoured).
            "connect_timeout": max(1, round(timeouts.connect)),
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        options["pool_timeout"] = timeouts.pool
    elif backend == "sqlite":
        options["connect_args"] = {"timeout": timeouts.lock}
    return options


def set_local_timeouts(connection: Connection, timeouts: DatabaseTimeouts) -> None:
    """``SET LOCAL statement_timeout, lock_timeout`` in the current PostgreSQL transaction."""
    if connection.dialect.name != "postgresql":
        return
    statement = max(1, int(timeouts.statement * 1000))
    lock = max(1, int(timeouts.lock * 1000))
    # Integers we made: no user input reaches this SQL.
    connection.execute(sa.text(f"SET LOCAL statement_timeout = {statement}"))
    connection.execute(sa.text(f"SET LOCAL lock_timeout = {lock}"))


class _Watchdog:
    """One thread that shuts down the sockets of transactions past their deadline.

    It keeps a duplicate of each armed socket's descriptor: should the
    driver close its own (a broken connection) before the transaction
    disarms, the number cannot be reused for another socket under us.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, int] = {}  # ticket -> our duplicate of the descriptor
        self._tickets = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def arm(self, fd: int, seconds: float) -> int | None:
        """A ticket for :meth:`disarm`, or ``None`` if the socket cannot be watched."""
        try:
            watched = os.dup(fd)
        except OSError:
            return None
        deadline = time.monotonic() + seconds
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread is not here
                for inherited in self._armed.values():
                    _close(inherited)
                self._pid, self._thread = os.getpid(), None
                self._heap, self._armed = [], {}
            ticket = next(self._tickets)
            self._armed[ticket] = watched
            heapq.heappush(self._heap, (deadline, ticket))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="backstage-auth-db-watchdog", daemon=True
                )
                self._thread.start()
            elif self._heap[0][1] == ticket:
                self._wake.notify()
            return ticket

    def disarm(self, ticket: int) -> bool:
        """``False`` when the deadline had passed and the socket was shut down."""
        with self._lock:
            watched = self._armed.pop(ticket, None)
        if watched is None:
            return False
        _close(watched)
        return True

    def _run(self) -> None:
        with self._lock:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    if not self._wake.wait(60):
                        self._thread = None
                        return
                    continue
                deadline, ticket = self._heap[0]
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    self._wake.wait(remaining)
                    continue
                heapq.heappop(self._heap)
                _shut_down(self._armed.pop(ticket))


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _shut_down(watched: int) -> None:
    # shutdown() acts on the socket, not the descriptor: the driver's blocked
    # read returns at once, and the driver closes its own descriptor.
    sock = socket.socket(fileno=watched)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


_WATCHDOG = _Watchdog()


def _socket_of(connection: Connection) -> int | None:
    if connection.dialect.name != "postgresql":
        return None
    dbapi = connection.connection.dbapi_connection
    fileno = getattr(dbapi, "fileno", None)
    try:
        return int(fileno()) if callable(fileno) else None
    except Exception:  # a closed or broken driver connection
        return None


class TransactionTimedOut(sa.exc.OperationalError):
    """The watchdog cut a transaction: the server did not answer in time."""


@contextmanager
def bounded_transaction(engine: Engine, timeouts: DatabaseTimeouts) -> t.Iterator[Connection]:
    """A transaction on ``engine`` with every wait bounded (see the module).

    Database errors propagate (SQLAlchemy's); they are also reported to the
    outage log, and a success after an outage ends it.
    """
    probe = OUTAGES.admit(engine)
    connected = False
    try:
        with engine.connect() as connection:
            connected = True
            fd = _socket_of(connection)
            ticket = None if fd is None else _WATCHDOG.arm(fd, timeouts.statement + GRACE)
            try:
                with connection.begin():
                    set_local_timeouts(connection, timeouts)
                    yield connection
            except sa.exc.DBAPIError as exc:
                if ticket is not None and not _WATCHDOG.disarm(ticket):
                    raise TransactionTimedOut(
                        exc.statement, exc.params, NoAnswer(timeouts.statement + GRACE)
                    ) from exc
                raise
            finally:
                if ticket is not None and not _WATCHDOG.disarm(ticket):
                    # Cut, if only as it ended: never back to the pool.
                    connection.invalidate()
    except sa.exc.SQLAlchemyError as exc:
        if not isinstance(exc, sa.exc.IntegrityError):
            unreachable = (
                not connected
                or isinstance(exc, TransactionTimedOut)
                or bool(getattr(exc, "connection_invalidated", False))
            )
            OUTAGES.failed(engine, exc, unreachable=unreachable)
        raise
    finally:
        if probe:
            OUTAGES.release(engine)
    OUTAGES.succeeded(engine)


class DatabaseUnavailable(sa.exc.OperationalError):
    """Raised at once, without trying: the database is unreachable and another
    transaction of this process is already finding out whether it is back."""


class Unreachable(Exception):
    """The cause of :class:`DatabaseUnavailable`."""


class NoAnswer(Exception):
    """The cause of :class:`TransactionTimedOut`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the database did not answer within {seconds:g} seconds")


# -- describing and logging failures ------------------------------------------

_CREDENTIALS = re.compile(r"://[^/@\s]*@")


def describe_database_error(exc: BaseException) -> str:
    """The class names of a database error (``OperationalError``, ``UndefinedTable``).

    Only names: the messages of drivers may carry a host, a user or a password.
    """
    names = [type(exc).__name__]
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException) and type(orig).__name__ not in names:
        names.append(type(orig).__name__)
    return ", ".join(names)


def database_error_line(exc: BaseException, password: str | None) -> str:
    """The driver's first line of ``exc``, with credentials masked."""
    orig = getattr(exc, "orig", None)
    text = str(orig if isinstance(orig, BaseException) else exc).strip()
    line = text.splitlines()[0] if text else ""
    line = _CREDENTIALS.sub("://***@", line)
    if password:
        line = line.replace(password, "***")
    return line


def is_missing_schema(exc: BaseException) -> bool:
    """Whether ``exc`` says a table of ours is missing (migrations not run)."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException) and type(orig).__name__ == "UndefinedTable":
        return True  # PostgreSQL (psycopg)
    return "no such table" in str(orig if orig is not None else exc)  # SQLite


def describe_failure(exc: BaseException) -> str:
    """What an outage log line says: the error classes, and the fix when known.

    Only names and our own words: a driver's message may carry a host, a
    user, a password or a value of the statement.
    """
    text = describe_database_error(exc)
    orig = getattr(exc, "orig", None)
    if isinstance(exc, TransactionTimedOut) and isinstance(orig, NoAnswer):
        text += f": {orig}"
    if is_missing_schema(exc):
        text += "; the tables are missing: run `flask backstage-auth db upgrade`"
    return text


class OutageLog:
    """Logs the first failure of each outage of a database, and its end; and
    while a database is unreachable, lets one transaction at a time try it.

    A failure of another kind during an outage (the server is back but its
    tables are missing) is logged once too. While the database is
    unreachable (no connection could be had, or the server stopped
    answering), one transaction of this process at a time waits on it (the
    probe, within the bounds); the others fail at once with
    :class:`DatabaseUnavailable`, so an outage does not tie up every worker
    thread for the length of the bounds. The first success ends it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down: dict[str, str] = {}  # database -> "unavailable" or "schema"
        self._unreachable: set[str] = set()
        self._probing: set[str] = set()

    @staticmethod
    def _key(engine: Engine) -> str:
        return engine.url.render_as_string(hide_password=True)

    def admit(self, engine: Engine) -> bool:
        """Whether this transaction is the probe of an unreachable database.

        :raises DatabaseUnavailable: it is unreachable and a probe is running.
        """
        if not self._unreachable:  # the hot path: no lock while all is well
            return False
        key = self._key(engine)
        with self._lock:
            if key not in self._unreachable:
                return False
            if key in self._probing:
                raise DatabaseUnavailable(
                    None,
                    None,
                    Unreachable("the database is unreachable; another request is retrying it"),
                )
            self._probing.add(key)
            return True

    def release(self, engine: Engine) -> None:
        with self._lock:
            self._probing.discard(self._key(engine))

    def failed(self, engine: Engine, exc: BaseException, *, unreachable: bool = False) -> None:
        key = self._key(engine)
        # Unreachable or slow is one outage, whatever the driver's error; the
        # tables missing is another.
        kind = "schema" if is_missing_schema(exc) else "unavailable"
        with self._lock:
            if unreachable:
                self._unreachable.add(key)
            else:  # the server answered
                self._unreachable.discard(key)
            if self._down.get(key) == kind:
                return
            self._down[key] = kind
        logger.warning(
            "The %s database failed (%s); requests that need it answer 503 until it is"
            " back (logged once per outage)",
            engine.dialect.name,
            describe_failure(exc),
        )

    def succeeded(self, engine: Engine) -> None:
        if not self._down:  # the hot path: no lock while all is well
            return
        key = self._key(engine)
        with self._lock:
            self._unreachable.discard(key)
            if self._down.pop(key, None) is None:
                return
        logger.info("The %s database answers again", engine.dialect.name)

    def is_down(self, engine: Engine) -> bool:
        return self._key(engine) in self._down


#: The outage state of every database of this process.
OUTAGES = OutageLog()
