"""Remote JSON Web Key Sets: fetched within bounds, cached, refreshed with restraint.

Parsing is PyJWT's (:class:`jwt.PyJWKSet`). The cache keeps the last good set
when a fetch fails, and never uses a URL or key carried inside a token
(``jku``, ``jwk``, ``x5u``, ``x5c`` are ignored). An unknown ``kid`` refetches
the set once the cooldown since the last fetch is over (jose's
``cooldownDuration``); the key sets of user and plugin tokens also refetch
within the cooldown, as Backstage's ``JwksClient`` does: a *forced reload*,
of which each set has ten at once, refilled at ten a minute
(``FORCED_RELOAD_LIMIT`` per ``FORCED_RELOAD_WINDOW``). So the first tokens
of a rotated key verify at once, and forged ``kid`` values cost a bounded
number of fetches. A token whose ``kid`` the set knows never waits for a fetch.

Every fetch of an app goes through one :class:`JwksFetcher`: one HTTP
session, a total deadline and a size cap. It runs on a thread of its own,
at most one at a time per URL, and no request waits for it longer than the
fetcher's ``wait``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import typing as t

import jwt

from flask_backstage_auth.clock import Clock, system_clock

if t.TYPE_CHECKING:  # pragma: no cover
    import requests

logger = logging.getLogger(__name__)

#: Asymmetric algorithms a JWKS key may verify; HMAC and ``none`` never.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

#: Defaults of ``BACKSTAGE_AUTH_JWKS_TIMEOUT``, ``_WAIT``, ``_MAX_BYTES`` and ``_FETCH_BUDGET``.
DEFAULT_TIMEOUT = 5.0
DEFAULT_WAIT = 2.0
DEFAULT_MAX_BYTES = 256 * 1024
DEFAULT_FETCH_BUDGET = 5.0
#: Forced reloads of one key set (Backstage's ``JwksClient``: 10 a minute).
FORCED_RELOAD_LIMIT = 10
FORCED_RELOAD_WINDOW = 60.0
_CHUNK_SIZE = 16 * 1024


def select_key(keys: t.Sequence[jwt.PyJWK], kid: str | None, alg: str) -> jwt.PyJWK | None:
    """The one key matching ``kid`` (when given) and ``alg``; ``None`` unless exactly one."""
    candidates = [
        key for key in keys if key.algorithm_name == alg and (kid is None or key.key_id == kid)
    ]
    return candidates[0] if len(candidates) == 1 else None


class JwksUnavailable(Exception):
    """No key set could be had from the endpoint."""


def parse_key_set(document: bytes) -> list[jwt.PyJWK]:
    """The usable asymmetric keys of a JWKS document; keys we cannot use are skipped.

    :raises JwksUnavailable: not JSON, no ``keys`` list, or an entry that is not an object.
    """
    try:
        data = json.loads(document)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise JwksUnavailable("Invalid jwks.json response, not JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise JwksUnavailable("Invalid jwks.json response, missing keys")
    if not all(isinstance(entry, dict) for entry in data["keys"]):
        raise JwksUnavailable("JSON Web Key Set malformed")  # jose's isJwkSet
    usable = []
    for entry in data["keys"]:
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError):
            continue  # a key we cannot use is skipped, as jose does
        if key.algorithm_name in ASYMMETRIC_ALGORITHMS:
            usable.append(key)
    return usable


def new_session() -> requests.Session:
    """An HTTP session for key sets: it keeps no cookie, so none travels to another
    fetch, and each fetch over it can be ended at its deadline."""
    from flask_backstage_auth.auth.fetch_deadline import deadline_session  # imports requests

    return deadline_session()


class JwksFetcher:
    """Fetches key sets, all over one HTTP session, each within a deadline and a size cap.

    :param timeout: seconds one fetch may take in all: connecting, the
        headers and the body. A fetch that is not done by then fails.
    :param wait: the longest seconds a request waits for a fetch (at most
        ``timeout``); a fetch still running then goes on in the background,
        for the requests after it.
    :param max_bytes: the largest key-set document accepted.
    :param session: the HTTP session (default: :func:`new_session`, made at the first fetch).
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        wait: float = DEFAULT_WAIT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        session: requests.Session | None = None,
        monotonic: t.Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self.wait = min(wait, timeout)
        self.max_bytes = max_bytes
        self._session = session
        self._session_lock = threading.Lock()
        self.monotonic = monotonic

    @property
    def session(self) -> requests.Session:
        """The HTTP session every fetch uses."""
        with self._session_lock:
            if self._session is None:
                self._session = new_session()
            return self._session

    def fetch(self, url: str) -> list[jwt.PyJWK]:
        """The usable keys served at ``url``.

        :raises JwksUnavailable: a bad status, a compressed, oversized, late
            or malformed document.
        :raises requests.RequestException: the connection failed or a read
            timed out.
        """
        return parse_key_set(self._download(url))

    def _download(self, url: str) -> bytes:
        import requests

        from flask_backstage_auth.auth.fetch_deadline import deadline as watchdog

        session = self.session
        deadline = self.monotonic() + self.timeout
        # The watchdog ends the exchange at the deadline, even while a server
        # trickles its headers (each read alone is bounded by the timeout only).
        with watchdog(self.timeout) as watch:
            try:
                return self._exchange(session, url, deadline)
            except (requests.RequestException, JwksUnavailable, OSError) as exc:
                if watch.expired or self.monotonic() >= deadline:
                    raise JwksUnavailable("Fetching jwks.json took too long") from exc
                raise

    def _exchange(self, session: requests.Session, url: str, deadline: float) -> bytes:
        # No redirects: keys come from the configured URL and nowhere else.
        # No decompression: the size cap is on what the server sends.
        response = session.get(
            url,
            timeout=(self.timeout, self.timeout),
            allow_redirects=False,
            stream=True,
            headers={"Accept": "application/json", "Accept-Encoding": "identity"},
        )
        with response:
            if response.status_code != 200:
                raise JwksUnavailable(f"Failed to fetch jwks.json, {response.status_code}")
            if response.headers.get("Content-Encoding", "identity").lower() != "identity":
                raise JwksUnavailable("Invalid jwks.json response, compressed")
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > self.max_bytes:
                raise JwksUnavailable("Invalid jwks.json response, too large")
            import urllib3  # imported by requests already

            try:
                return self._read_body(response.raw, deadline)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                late = self.monotonic() >= deadline
                message = "Fetching jwks.json took too long" if late else "Failed to read jwks.json"
                raise JwksUnavailable(message) from exc

    def _read_body(self, raw: t.Any, deadline: float) -> bytes:
        # Each read returns what has arrived (read1) and waits at most what is
        # left of the deadline, so a server that trickles bytes cannot stretch it.
        sock = getattr(getattr(raw, "connection", None), "sock", None)
        read = getattr(raw, "read1", None) or raw.read  # read1: urllib3 >= 2.3
        chunks: list[bytes] = []
        size = 0
        while True:
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                raise JwksUnavailable("Fetching jwks.json took too long")
            if sock is not None:
                sock.settimeout(remaining)  # urllib3 sets it again before reusing the socket
            chunk = read(_CHUNK_SIZE, decode_content=False)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_bytes:
                raise JwksUnavailable("Invalid jwks.json response, too large")
            chunks.append(chunk)


_default_fetcher: JwksFetcher | None = None
_default_fetcher_lock = threading.Lock()


def default_fetcher() -> JwksFetcher:
    """The process-wide fetcher of key sets built without one."""
    global _default_fetcher
    with _default_fetcher_lock:
        if _default_fetcher is None:
            _default_fetcher = JwksFetcher()
        return _default_fetcher


class FetchBudget:
    """Fetches allowed across many key sets: ``per_second`` on average, at most
    ``burst`` at once and ``burst`` running together.

    :param per_second: the rate; ``0`` allows no fetch at all.
    :param burst: the most at once (default: ``per_second`` rounded up, at least 1).
    :param clock: the time source (the injected clock).
    """

    def __init__(
        self, per_second: float, *, burst: int | None = None, clock: Clock = system_clock
    ) -> None:
        self.per_second = per_second
        if per_second <= 0:
            self.burst = 0
        else:
            self.burst = max(1, burst if burst is not None else math.ceil(per_second))
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(self.burst)
        self._updated_at = clock()
        self._running = 0

    def acquire(self) -> bool:
        """Take one fetch from the budget; ``False`` when none is left now."""
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._updated_at)  # a clock set back refills nothing
            self._updated_at = now
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.per_second)
            if self._tokens < 1 or self._running >= self.burst:
                return False
            self._tokens -= 1
            self._running += 1
            return True

    def release(self) -> None:
        """A fetch taken with :meth:`acquire` is over."""
        with self._lock:
            self._running = max(0, self._running - 1)


def forced_reloads(clock: Clock = system_clock) -> FetchBudget:
    """The forced reloads one key set may make: ``FORCED_RELOAD_LIMIT`` at once,
    refilled at ``FORCED_RELOAD_LIMIT`` per ``FORCED_RELOAD_WINDOW``."""
    return FetchBudget(
        FORCED_RELOAD_LIMIT / FORCED_RELOAD_WINDOW, burst=FORCED_RELOAD_LIMIT, clock=clock
    )


class _Flight:
    """One fetch in progress: callers wait for ``done`` until ``wait_until`` at most."""

    def __init__(self, wait_until: float, forced: FetchBudget | None = None) -> None:
        self.done = threading.Event()
        self.wait_until = wait_until
        self.forced = forced  # the forced-reload budget this fetch took from


class JwksCache:
    """The keys served at one URL.

    A fetch runs on a thread of its own, one at a time; a caller that needs
    it waits at most the fetcher's ``wait`` from the fetch's start, and
    otherwise uses the last good set. No lock is held during a fetch, and a
    caller whose ``kid`` the set has never waits for one.

    :param url: the http(s) URL of the key set.
    :param fetcher: fetches the set (default: :func:`default_fetcher`).
    :param cooldown: the least seconds between two fetches triggered by an
        unknown ``kid`` or by a failed fetch, except forced reloads.
    :param max_age: seconds after which the set is fetched again (in the
        background when the caller's key is in the set).
    :param budget: when given, every fetch must be allowed by it.
    :param forced: the fetches an unknown ``kid`` may force during the
        cooldown, as Backstage's ``JwksClient`` (see :func:`forced_reloads`);
        ``None`` (jose's ``createRemoteJWKSet``): none.
    :param on_settled: called (on the fetching thread) after each fetch.
    """

    def __init__(
        self,
        url: str,
        *,
        fetcher: JwksFetcher | None = None,
        cooldown: float = 30,
        max_age: float = 600,
        clock: Clock = system_clock,
        budget: FetchBudget | None = None,
        forced: FetchBudget | None = None,
        on_settled: t.Callable[[JwksCache], None] | None = None,
    ) -> None:
        self.url = url
        self.cooldown = cooldown
        self.max_age = max_age
        self._fetcher = fetcher or default_fetcher()
        self._clock = clock
        self._budget = budget
        self._forced = forced
        self._on_settled = on_settled
        self._lock = threading.Lock()  # guards the fields below; never held while fetching
        self._keys: list[jwt.PyJWK] | None = None
        self._fetched_at: float | None = None  # last good fetch
        self._attempted_at: float | None = None  # last attempt, good or bad
        self._flight: _Flight | None = None

    @property
    def has_keys(self) -> bool:
        """Whether a fetch ever succeeded."""
        return self._keys is not None

    def start_fetch(self) -> bool:
        """Fetch the set now in the background, unless a fetch is running or the
        budget says no; ``True`` when a fetch is running."""
        with self._lock:
            return self._start(self._clock()) is not None

    def _start(self, now: float, forced: FetchBudget | None = None) -> _Flight | None:
        if self._flight is not None:
            return self._flight
        if forced is not None and not forced.acquire():
            return None
        if self._budget is not None and not self._budget.acquire():
            if forced is not None:
                forced.release()
            return None
        flight = _Flight(self._fetcher.monotonic() + self._fetcher.wait, forced)
        self._flight = flight
        self._attempted_at = now
        try:
            threading.Thread(
                target=self._run, args=(flight, now), name="jwks-fetch", daemon=True
            ).start()
        except RuntimeError:  # no thread to be had: this fetch failed
            self._flight = None
            self._release(flight)
            flight.done.set()
            logger.warning("Could not start fetching the key set at %.200s", self.url)
            return None
        return flight

    def _release(self, flight: _Flight) -> None:
        if self._budget is not None:
            self._budget.release()
        if flight.forced is not None:
            flight.forced.release()

    def _run(self, flight: _Flight, started_at: float) -> None:
        import requests  # at the first fetch, not when the package is imported

        keys: list[jwt.PyJWK] | None = None
        try:
            keys = self._fetcher.fetch(self.url)
        except (requests.RequestException, JwksUnavailable) as exc:
            logger.warning(
                "Could not fetch the key set at %.200s: %s", self.url, type(exc).__name__
            )
        except Exception:  # a fetch bug must never leave the flight open
            logger.exception("Fetching the key set at %.200s failed unexpectedly", self.url)
        finally:
            with self._lock:
                if keys is not None:
                    self._keys = keys
                    self._fetched_at = started_at
                self._flight = None
            self._release(flight)
            try:
                if self._on_settled is not None:
                    self._on_settled(self)
            except Exception:
                logger.exception("After fetching the key set at %.200s", self.url)
            flight.done.set()  # last: a caller that wakes sees everything settled

    def get_key(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """The key for ``kid`` and ``alg``; ``None`` when the set has no such key.

        :raises JwksUnavailable: no key set has ever been fetched.
        """
        with self._lock:
            now = self._clock()
            key = self._select(kid, alg)
            stale = self._fetched_at is None or now - self._fetched_at >= self.max_age
            flight = self._flight
            if key is not None:
                # A known kid: refresh a stale set in the background, never wait.
                if stale and flight is None and self._cooled_down(now):
                    self._start(now)
                return key
            # No set yet, or an unknown kid: one fetch, never a second in the
            # same call; once the cooldown is over, or else a forced reload.
            if flight is None:
                if self._cooled_down(now):
                    flight = self._start(now)
                elif self._forced is not None:
                    flight = self._start(now, self._forced)
        if flight is not None:
            remaining = flight.wait_until - self._fetcher.monotonic()
            if remaining > 0:
                flight.done.wait(remaining)
            with self._lock:
                key = self._select(kid, alg)
        if self._keys is None:
            raise JwksUnavailable(f"No key set available from {self.url:.200}")
        return key

    def _cooled_down(self, now: float) -> bool:
        return (
            self._attempted_at is None
            or not 0 <= now - self._attempted_at < self.cooldown  # a clock set back: cooled
        )

    def _select(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        return select_key(self._keys or (), kid, alg)
