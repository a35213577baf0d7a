"""A total deadline for one HTTP exchange over ``requests``, headers included.

``requests`` and urllib3 only bound each read of the socket, so a server that
sends its status line and headers a byte at a time holds a fetch for as long
as it likes. :func:`deadline_session` builds a session whose connections
register with the fetch running on the current thread; :func:`deadline`
arms a timer that shuts that connection's socket down when the fetch's time
is up, which ends any read in progress.

Imported at the first key-set fetch only (it imports ``requests``).
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import socket
import threading
import typing as t

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()


class _Watch:
    """The connection of one fetch, and whether its time is up."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connection: HTTPConnection | None = None
        self.expired = False

    def use(self, connection: HTTPConnection) -> None:
        with self.lock:
            self.connection = connection
            expired = self.expired
        if expired:
            _shut(connection)

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            connection = self.connection
        if connection is not None:
            _shut(connection)


def _shut(connection: HTTPConnection) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _watch() -> _Watch | None:
    return t.cast("_Watch | None", getattr(_current, "watch", None))


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        watch = _watch()
        if watch is not None:
            watch.use(self)

    def request(self, *args: t.Any, **kwargs: t.Any) -> None:
        watch = _watch()
        if watch is not None and self.sock is not None:
            watch.use(self)  # a kept-alive connection: connect() is not called again
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        watch = _watch()
        if watch is not None:
            watch.use(self)

    def request(self, *args: t.Any, **kwargs: t.Any) -> None:
        watch = _watch()
        if watch is not None and self.sock is not None:
            watch.use(self)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }


def deadline_session() -> requests.Session:
    """A session whose fetches :func:`deadline` can end, and that keeps no cookie."""
    session = requests.Session()
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = _DeadlineAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@contextlib.contextmanager
def deadline(seconds: float) -> t.Iterator[_Watch]:
    """End the exchange this thread makes over a :func:`deadline_session` after ``seconds``.

    At the deadline the connection's socket is shut down: a read in progress
    fails at once (as a ``requests`` or urllib3 error, or ``OSError``).
    """
    watch = _Watch()
    timer = threading.Timer(seconds, watch.expire)
    timer.daemon = True
    previous = _watch()
    _current.watch = watch
    timer.start()
    try:
        yield watch
    finally:
        timer.cancel()
        _current.watch = previous
