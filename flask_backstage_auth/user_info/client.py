"""The auth backend's ``GET /v1/userinfo``, asked within a deadline and a size cap.

The URL is ``discovery.get_base_url("auth") + "/v1/userinfo"``, as Backstage's
``DefaultUserInfoService``; the user's token goes in ``Authorization:
Bearer``. One call never takes longer than ``timeout`` seconds in all
(connecting, the headers, the body), never follows a redirect, and never
reads more than ``max_bytes`` (:func:`flask_backstage_auth.bounded_http.call`:
not even headers trickled byte by byte hold the caller past the deadline). At
most ``max_workers`` calls are under way at once; a call waiting for a place
waits within its deadline. ``requests`` is imported at the first call.
"""

from __future__ import annotations

import json
import re
import threading
import time
import typing as t
from http import HTTPStatus

from flask_backstage_auth.bounded_http import CallFailed, LazySession, call
from flask_backstage_auth.discovery import HostDiscovery
from flask_backstage_auth.errors import BackstageError, ServiceUnavailableError

if t.TYPE_CHECKING:  # pragma: no cover
    import requests

#: Defaults of ``BACKSTAGE_AUTH_USER_INFO_TIMEOUT`` and of the largest answer read.
DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_BYTES = 256 * 1024
USER_INFO_PATH = "/v1/userinfo"
DEFAULT_MAX_WORKERS = 8
_MAX_REMOTE_TEXT = 200
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")

UNAVAILABLE_MESSAGE = "Failed to fetch user info from the auth backend"
SLOW_MESSAGE = "Fetching user info from the auth backend took too long"
INVALID_MESSAGE = "Invalid user info response from the auth backend"


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
    :param max_workers: calls under way at once (so a slow auth backend holds
        at most that many connections); more wait for a place, within the
        same deadline.
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
        self._http = LazySession(session)
        self._monotonic = monotonic

    @property
    def session(self) -> requests.Session:
        """The HTTP session every call uses."""
        return self._http.session

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
        if not self._slots.acquire(timeout=self.timeout):
            raise ServiceUnavailableError(SLOW_MESSAGE)
        try:
            status, body = self._exchange(token, deadline)
        finally:
            self._slots.release()
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
        remaining = deadline - self._monotonic()  # a wait for a place counts
        if remaining <= 0:
            raise ServiceUnavailableError(SLOW_MESSAGE)
        try:
            answer = call(
                self.session,
                "GET",
                self.url,
                timeout=remaining,
                max_bytes=self.max_bytes,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                monotonic=self._monotonic,
            )
        except CallFailed as exc:
            if exc.reason == "late":
                raise ServiceUnavailableError(SLOW_MESSAGE) from exc
            if exc.reason in ("compressed", "too large"):
                raise ServiceUnavailableError(f"{INVALID_MESSAGE}, {exc.reason}") from exc
            raise ServiceUnavailableError(f"{UNAVAILABLE_MESSAGE} ({exc.cause_name})") from exc
        return answer.status, answer.body
