"""The auth backend's ``GET /v1/userinfo``, asked within a deadline and a size cap.

The URL is ``discovery.get_base_url("auth") + "/v1/userinfo"``, as Backstage's
``DefaultUserInfoService``; the user's token goes in ``Authorization:
Bearer``. One call never takes longer than ``timeout`` seconds in all
(connecting, the headers, the body), never follows a redirect, and never
reads more than ``max_bytes``; the call runs on a thread of its own (at
most ``max_workers`` at once), so that nothing (not even headers trickled byte by byte) holds the
caller past the deadline. ``requests`` is imported at the first call.
"""

from __future__ import annotations

import json
import re
import threading
import time
import typing as t
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus

from flask_backstage_auth.discovery import HostDiscovery
from flask_backstage_auth.errors import BackstageError, ServiceUnavailableError

if t.TYPE_CHECKING:  # pragma: no cover
    import requests

#: Defaults of ``BACKSTAGE_AUTH_USER_INFO_TIMEOUT`` and of the largest answer read.
DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_BYTES = 256 * 1024
USER_INFO_PATH = "/v1/userinfo"
DEFAULT_MAX_WORKERS = 8
_CHUNK_SIZE = 16 * 1024
#: How much longer than ``timeout`` a caller waits for the worker to report.
_GRACE = 0.25
_MAX_REMOTE_TEXT = 200
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")

UNAVAILABLE_MESSAGE = "Failed to fetch user info from the auth backend"
SLOW_MESSAGE = "Fetching user info from the auth backend took too long"
INVALID_MESSAGE = "Invalid user info response from the auth backend"


class _Late(Exception):
    pass


class _Invalid(Exception):
    """The answer is refused unread: ``args[0]`` says why."""


class ResponseError(BackstageError):
    """The auth backend refused with a 4xx: Backstage's ``ResponseError``, with its status.

    The message is Backstage's ``Request failed with <status> <text>``,
    followed by the remote error's name and message (shortened, one line).
    """

    error_name = "ResponseError"

    def __init__(self, status: int, remote: str = "") -> None:
        self.code = status
        self.status = status
        try:
            text = HTTPStatus(status).phrase
        except ValueError:
            text = ""
        message = f"Request failed with {status} {text}".rstrip()
        super().__init__(f"{message}; caused by {remote}" if remote else message)


def _one_line(value: object) -> str:
    text = " ".join(str(value).split())
    if len(text) > _MAX_REMOTE_TEXT:
        text = text[: _MAX_REMOTE_TEXT - 3] + "..."
    return text


def describe_remote_error(body: bytes) -> str:
    """``"<Name>: <message>"`` of a Backstage error body, or ``""``; bounded, one line."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return _one_line(body.decode("utf-8", "replace")) if body.strip() else ""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return ""
    name = error.get("name")
    name = name if isinstance(name, str) and _NAME.fullmatch(name) else "Error"
    message = error.get("message")
    return f"{name}: {_one_line(message)}" if isinstance(message, str) and message else name


class UserInfoClient:
    """Asks the auth backend who a token's user is.

    :param discovery: finds the ``auth`` plugin.
    :param timeout: seconds one call may take in all.
    :param max_bytes: the largest answer read.
    :param session: the HTTP session (default: one that keeps no cookie,
        made at the first call).
    :param max_workers: calls under way at once; more wait for a place,
        within the same deadline.
    """

    def __init__(
        self,
        discovery: HostDiscovery,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        session: requests.Session | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        monotonic: t.Callable[[], float] = time.monotonic,
    ) -> None:
        self.discovery = discovery
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._slots = threading.BoundedSemaphore(max_workers)
        self._session = session
        self._session_lock = threading.Lock()
        self._monotonic = monotonic

    @property
    def session(self) -> requests.Session:
        with self._session_lock:
            if self._session is None:
                from flask_backstage_auth.auth.jwks import new_session

                self._session = new_session()
            return self._session

    @property
    def url(self) -> str:
        return self.discovery.get_base_url("auth") + USER_INFO_PATH

    def fetch_claims(self, token: str) -> t.Mapping[str, t.Any]:
        """The ``claims`` object of the answer for ``token``.

        :raises ResponseError: the auth backend answered 4xx (401 for a token
            it does not accept, 404 for a user it knows nothing about).
        :raises ServiceUnavailableError: 503: not reachable, too slow, any
            other status, or an answer that is not ``{"claims": {...}}``.
        """
        deadline = self._monotonic() + self.timeout
        # On a thread of its own: a server that trickles its headers would hold
        # a request for a read timeout per byte; this wait is the hard bound.
        # Daemon threads: one still stuck on such a server never delays exit.
        if not self._slots.acquire(timeout=self.timeout):
            raise ServiceUnavailableError(SLOW_MESSAGE)
        answer: Future[tuple[int, bytes]] = Future()

        def run() -> None:
            try:
                answer.set_result(self._exchange(token, deadline))
            except BaseException as exc:  # handed to the caller
                answer.set_exception(exc)
            finally:
                self._slots.release()

        threading.Thread(target=run, name="backstage-user-info", daemon=True).start()
        try:
            status, body = answer.result(timeout=max(deadline - self._monotonic(), 0) + _GRACE)
        except FutureTimeout:
            raise ServiceUnavailableError(SLOW_MESSAGE) from None
        if 400 <= status < 500:
            raise ResponseError(status, describe_remote_error(body))
        if status != 200:
            raise ServiceUnavailableError(f"{UNAVAILABLE_MESSAGE}, it answered {status}")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise ServiceUnavailableError(f"{INVALID_MESSAGE}, not JSON") from exc
        claims = data.get("claims") if isinstance(data, dict) else None
        if not isinstance(claims, dict):
            raise ServiceUnavailableError(f"{INVALID_MESSAGE}, no claims")
        return claims

    def _exchange(self, token: str, deadline: float) -> tuple[int, bytes]:
        """The status and body of the answer, read within ``deadline``."""
        import requests
        import urllib3

        try:
            response = self.session.get(
                self.url,
                timeout=(self.timeout, self.timeout),
                allow_redirects=False,
                stream=True,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Accept": "application/json",
                    "Accept-Encoding": "identity",
                },
            )
        except requests.Timeout as exc:
            raise ServiceUnavailableError(SLOW_MESSAGE) from exc
        except requests.RequestException as exc:
            raise ServiceUnavailableError(f"{UNAVAILABLE_MESSAGE} ({type(exc).__name__})") from exc
        with response:
            status = response.status_code
            try:
                body = self._read(response, deadline)
            except _Late as exc:
                raise ServiceUnavailableError(SLOW_MESSAGE) from exc
            except _Invalid as exc:
                raise ServiceUnavailableError(f"{INVALID_MESSAGE}, {exc.args[0]}") from exc
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                if self._monotonic() >= deadline:
                    raise ServiceUnavailableError(SLOW_MESSAGE) from exc
                raise ServiceUnavailableError(
                    f"{UNAVAILABLE_MESSAGE} ({type(exc).__name__})"
                ) from exc
        return status, body

    def _read(self, response: requests.Response, deadline: float) -> bytes:
        if response.headers.get("Content-Encoding", "identity").lower() != "identity":
            raise _Invalid("compressed")  # the size cap is on what the server sends
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            raise _Invalid("too large")
        raw = response.raw
        # Each read returns what has arrived and waits at most what is left of
        # the deadline, so a server that trickles bytes cannot stretch it.
        sock = getattr(getattr(raw, "connection", None), "sock", None)
        read = getattr(raw, "read1", None) or raw.read
        chunks: list[bytes] = []
        size = 0
        while True:
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                raise _Late
            if sock is not None:
                sock.settimeout(remaining)
            chunk = read(_CHUNK_SIZE, decode_content=False)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_bytes:
                raise _Invalid("too large")
            chunks.append(chunk)
