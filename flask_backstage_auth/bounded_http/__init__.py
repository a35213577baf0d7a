"""Bounded outgoing HTTP calls: one total deadline, a size cap, nothing compressed.

The key-set fetcher (``auth/jwks.py``), the permission backend's client
(``permissions/remote.py``) and the userinfo client (``user_info/client.py``)
call other services with :func:`call`::

    http = LazySession()              # the session is made at the first call
    answer = call(http.session, "GET", url, timeout=5, max_bytes=256 * 1024,
                  headers={"Accept": "application/json"})
    answer.status, answer.headers, answer.body

One call never takes longer than ``timeout`` seconds in all: connecting, the
status line and headers (even trickled a byte at a time: the watchdog of
:mod:`.watchdog` ends the exchange at the deadline) and the body (each read
waits at most what is left). It never follows a redirect, asks for no
compression and refuses a compressed answer (the cap is on what the server
sends), and reads at most ``max_bytes``. Whatever goes wrong is one
:class:`CallFailed`, whose ``reason`` each caller maps to its own error.

``requests`` is imported at the first call, not with this module.
"""

from __future__ import annotations

import threading
import time
import typing as t

if t.TYPE_CHECKING:  # pragma: no cover
    import requests

__all__ = ["Answer", "CallFailed", "LazySession", "Reason", "call"]

#: Why a call gave no answer: the deadline passed; no answer came (connecting
#: or the headers failed); the body could not be read; the answer was
#: compressed; or it was larger than ``max_bytes``.
Reason = t.Literal["late", "unreachable", "broken", "compressed", "too large"]

_CHUNK_SIZE = 16 * 1024


class CallFailed(Exception):
    """A call gave no answer to use; :attr:`reason` says why.

    The exception that caused it, if any, is ``__cause__``; its class name
    (:attr:`cause_name`) is safe to show, its message may not be.
    """

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason

    @property
    def cause_name(self) -> str:
        """The class name of the exception that caused the failure, or ``""``."""
        return type(self.__cause__).__name__ if self.__cause__ is not None else ""


class Answer(t.NamedTuple):
    """The status, headers and body of an answer."""

    status: int
    headers: t.Mapping[str, str]
    body: bytes


class LazySession:
    """One HTTP session for all of a client's calls, made at the first one.

    The session keeps no cookie, so none travels from one call to the next,
    and each call over it can be ended at its deadline.

    :param session: a session to use instead (tests, or a deployment's own).
    """

    def __init__(self, session: requests.Session | None = None) -> None:
        self._session = session
        self._lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        """The session (made now if there is none yet)."""
        with self._lock:
            if self._session is None:
                from flask_backstage_auth.bounded_http.watchdog import deadline_session

                self._session = deadline_session()
            return self._session


def _always(status: int) -> bool:
    return True


def call(
    session: requests.Session,
    method: t.Literal["GET", "POST"],
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    headers: t.Mapping[str, str],
    data: bytes | None = None,
    read_body: t.Callable[[int], bool] = _always,
    monotonic: t.Callable[[], float] = time.monotonic,
) -> Answer:
    """``method url`` within ``timeout`` seconds in all, reading at most ``max_bytes``.

    :param session: a session of :class:`LazySession` (another session's
        exchanges are bounded per read only, not in all).
    :param read_body: whether to read the body of an answer with this status;
        when not, the answer's body is ``b""`` and unchecked.
    :raises CallFailed: no answer in time, none at all, a body that could
        not be read, a compressed or oversized one.
    """
    import requests  # at the first call, not when the package is imported
    import urllib3

    from flask_backstage_auth.bounded_http.watchdog import deadline as watchdog

    deadline = monotonic() + timeout
    with watchdog(timeout) as watch:

        def late() -> bool:
            return watch.expired or monotonic() >= deadline

        try:
            response = session.request(
                method,
                url,
                data=data,
                headers={**headers, "Accept-Encoding": "identity"},
                timeout=(timeout, timeout),
                allow_redirects=False,  # the configured URL and nowhere else
                stream=True,
            )
        except (requests.Timeout, TimeoutError) as exc:
            raise CallFailed("late") from exc
        except (requests.RequestException, OSError) as exc:
            raise CallFailed("late" if late() else "unreachable") from exc
        with response:
            if not read_body(response.status_code):
                return Answer(response.status_code, response.headers, b"")
            if response.headers.get("Content-Encoding", "identity").lower() != "identity":
                raise CallFailed("compressed")
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise CallFailed("too large")
            try:
                body = _read(response.raw, deadline, max_bytes, monotonic)
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                raise CallFailed("late" if late() else "broken") from exc
            if watch.expired:  # the watchdog's shutdown can look like the body's end
                raise CallFailed("late")
            return Answer(response.status_code, response.headers, body)


def _read(raw: t.Any, deadline: float, max_bytes: int, monotonic: t.Callable[[], float]) -> bytes:
    # Each read returns what has arrived (read1) and waits at most what is
    # left of the deadline, so a server that trickles bytes cannot stretch it.
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    read = getattr(raw, "read1", None) or raw.read  # read1: urllib3 >= 2.3
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - monotonic()
        if remaining <= 0:
            raise CallFailed("late")
        if sock is not None:
            sock.settimeout(remaining)  # urllib3 sets it again before reusing the socket
        chunk = read(_CHUNK_SIZE, decode_content=False)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise CallFailed("too large")
        chunks.append(chunk)
