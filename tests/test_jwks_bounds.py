"""Bounded work for key sets: forged plugin ``sub`` values, slow, trickling and
huge key-set endpoints, one HTTP session, and discovery's plugin prefix.

A real threaded HTTP server on 127.0.0.1 plays the other backends and the
outside issuer: it counts requests and the connections they came on, and can
hold, trickle or flood its answers. Apps run in production mode (no
``TESTING``) with an injected clock; the few time bounds below are generous
(a 0.3 s deadline must end a request in under 5 s).
"""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import time
import typing as t

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Blueprint, Flask, jsonify
from jwt.algorithms import ECAlgorithm

from flask_backstage_auth import BackstageAuth, ConfigError, get_credentials
from flask_backstage_auth.auth.jwks import FetchBudget, JwksFetcher, JwksUnavailable
from flask_backstage_auth.auth.plugin import handler as plugin_module
from flask_backstage_auth.discovery import HostDiscovery
from flask_backstage_auth.testing.mocks import bearer_header
from tests.conftest import LiveServer

T0 = 1_900_000_000.0
JWKS_PATH = "/.backstage/auth/v1/jwks.json"
ATTACKER = ec.generate_private_key(ec.SECP256R1())
ISSUER = ec.generate_private_key(ec.SECP256R1())
MESSAGE_NO_JWKS = "does not have a JWKS endpoint"

Behaviour = t.Callable[["_Handler"], None]


class KeySetServer:
    """An HTTP/1.1 server on 127.0.0.1 whose answers each test sets by path.

    Unknown paths get a 404. It records every request's path and the client
    port it came from (one port per connection).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.routes: dict[str, Behaviour] = {}
        self.paths: list[str] = []
        self.ports: list[int] = []
        self.held = 0
        self.release = threading.Event()
        self.stop = threading.Event()
        self.bytes_sent = 0
        self.aborted = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.server.owner = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def count(self, path: str | None = None) -> int:
        with self.lock:
            return len(self.paths) if path is None else self.paths.count(path)

    def json(self, path: str, document: t.Any) -> None:
        body = json.dumps(document).encode()
        self.routes[path] = lambda handler: handler.send(200, body)

    def close(self) -> None:
        self.stop.set()
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so reused connections show
    server: t.Any

    def log_message(self, format: str, *args: t.Any) -> None:
        pass

    def do_GET(self) -> None:
        owner: KeySetServer = self.server.owner
        with owner.lock:
            owner.paths.append(self.path)
            owner.ports.append(self.client_address[1])
        behaviour = owner.routes.get(self.path)
        if behaviour is None:
            self.send(404, b'{"error": "not found"}')
        else:
            behaviour(self)

    def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> t.Iterator[KeySetServer]:
    instance = KeySetServer()
    instance.thread.start()
    try:
        yield instance
    finally:
        instance.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def eventually(predicate: t.Callable[[], bool], timeout: float = 5) -> bool:
    """Poll until ``predicate`` holds (for background work to finish); its last answer."""
    end = time.monotonic() + timeout
    while not predicate() and time.monotonic() < end:
        time.sleep(0.01)
    return predicate()


# -- behaviours of the server ---------------------------------------------------


def hold(document: t.Any) -> Behaviour:
    """Answer only once the test sets ``release`` (at most 10 s)."""
    body = json.dumps(document).encode()

    def behave(handler: _Handler) -> None:
        owner: KeySetServer = handler.server.owner
        with owner.lock:
            owner.held += 1
        owner.release.wait(10)
        with owner.lock:
            owner.held -= 1
        handler.send(200, body)

    return behave


def trickle(length: int = 100_000, interval: float = 0.05) -> Behaviour:
    """Announce ``length`` bytes, then send one every ``interval`` (a bounded loop)."""

    def behave(handler: _Handler) -> None:
        owner: KeySetServer = handler.server.owner
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(length))
        handler.end_headers()
        try:
            handler.wfile.write(b'{"keys": [')
            for _ in range(min(length, 400)):  # 20 s at most
                if owner.stop.wait(interval):
                    return
                handler.wfile.write(b" ")
                handler.wfile.flush()
        except OSError:
            owner.aborted.set()  # the client hung up

    return behave


def flood(total: int = 50 * 1024 * 1024, *, announce: bool) -> Behaviour:
    """``total`` bytes, with or without a Content-Length (then closing the connection)."""

    def behave(handler: _Handler) -> None:
        owner: KeySetServer = handler.server.owner
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if announce:
            handler.send_header("Content-Length", str(total))
        else:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        block = b" " * 65536
        try:
            for _ in range(total // len(block)):
                if owner.stop.is_set():
                    return
                handler.wfile.write(block)
                with owner.lock:
                    owner.bytes_sent += len(block)
        except OSError:
            owner.aborted.set()

    return behave


# -- keys, tokens and apps ------------------------------------------------------


def public_jwks(private: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, t.Any]:
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return {"keys": [{**jwk, "kid": kid, "alg": "ES256", "use": "sig"}]}


def forged_plugin_token(sub: str, clock: FakeClock, aud: str = "catalog") -> str:
    now = int(clock())
    return jwt.encode(
        {"sub": sub, "aud": aud, "iat": now, "exp": now + 600},
        ATTACKER,
        algorithm="ES256",
        headers={"typ": "vnd.backstage.plugin", "kid": "attacker"},
    )


def external_token(clock: FakeClock, kid: str = "issuer-1") -> str:
    return jwt.encode(
        {"sub": "ci-bot", "exp": int(clock()) + 600},
        ISSUER,
        algorithm="ES256",
        headers={"kid": kid},
    )


def user_token(clock: FakeClock) -> str:
    now = int(clock())
    return jwt.encode(
        {"sub": "user:default/jane", "iat": now, "exp": now + 600, "aud": "backstage"},
        ISSUER,
        algorithm="ES256",
        headers={"typ": "vnd.backstage.user", "kid": "issuer-1"},
    )


def whoami(name: str, prefix: str = "/api") -> Blueprint:
    bp = Blueprint(name, __name__, url_prefix=f"{prefix}/{name}")

    @bp.get("/whoami")
    def view() -> t.Any:
        return jsonify(get_credentials().to_dict())

    return bp


def make_app(
    base_url: str,
    clock: FakeClock,
    *,
    endpoints: t.Sequence[str] = (),
    endpoint_url: str | None = None,
    external_access: list[dict[str, t.Any]] | None = None,
    prefix: str = "/api",
    **settings: t.Any,
) -> Flask:
    """A production-mode app serving ``catalog``, with ``base_url`` as ``backend.baseUrl``."""
    app = Flask("jwks-bounds", static_folder=None)
    app.config.update(settings, BACKSTAGE_AUTH_PLUGIN_PREFIX=prefix)
    config: dict[str, t.Any] = {"backend": {"baseUrl": base_url}}
    if endpoints:
        target = f"{endpoint_url or base_url}/api/{{{{pluginId}}}}"
        config["discovery"] = {"endpoints": [{"target": target, "plugins": list(endpoints)}]}
    if external_access is not None:
        config["backend"]["auth"] = {"externalAccess": external_access}
    app.config["BACKSTAGE_CONFIG"] = config
    BackstageAuth(app, clock=clock)
    app.register_blueprint(whoami("catalog", prefix))
    return app


class Peer:
    """Another backend's plugins: real plugin tokens, and the JWKS that verifies them."""

    def __init__(self, clock: FakeClock, *plugin_ids: str) -> None:
        self.app = Flask("peer", static_folder=None)
        self.app.config["BACKSTAGE_CONFIG"] = {}
        BackstageAuth(self.app, clock=clock)
        self.state = BackstageAuth.state(self.app)
        for plugin_id in plugin_ids:
            self.token(plugin_id)  # the key set has a key from then on

    def token(self, plugin_id: str, target: str = "catalog") -> str:
        auth = self.state.auth(plugin_id)
        return auth.get_plugin_request_token(
            on_behalf_of=auth.get_own_service_credentials(), target_plugin_id=target
        ).token

    def jwks(self, plugin_id: str) -> t.Any:
        return self.app.test_client().get(f"/api/{plugin_id}{JWKS_PATH}").get_json()

    def publish(self, server: KeySetServer, plugin_id: str, prefix: str = "/api") -> str:
        path = f"{prefix}/{plugin_id}{JWKS_PATH}"
        server.json(path, self.jwks(plugin_id))
        return path


def get(app: Flask, token: str, prefix: str = "/api") -> t.Any:
    return app.test_client().get(f"{prefix}/catalog/whoami", headers=bearer_header(token))


def refused_without_fetch_details(response: t.Any, token: str) -> None:
    assert response.status_code == 401
    body = response.get_data(as_text=True)
    assert MESSAGE_NO_JWKS in body and token not in body


# -- the budget of fetches for plugins only backend.baseUrl finds ---------------


def test_forged_subs_cost_at_most_the_budget_in_fetches(
    server: KeySetServer, clock: FakeClock
) -> None:
    app = make_app(server.url, clock, BACKSTAGE_AUTH_JWKS_FETCH_BUDGET=3)
    for i in range(40):
        token = forged_plugin_token(f"forged-{i}", clock)
        refused_without_fetch_details(get(app, token), token)
    assert server.count() == 3  # the burst, then nothing while the clock stands still
    assert server.paths == [f"/api/forged-{i}{JWKS_PATH}" for i in range(3)]
    clock.now += 1  # three more fetches are allowed
    for _ in range(10):  # a failed URL is remembered: no fetch for it
        assert get(app, forged_plugin_token("forged-0", clock)).status_code == 401
    assert server.count() == 3
    for i in range(40, 80):
        assert get(app, forged_plugin_token(f"forged-{i}", clock)).status_code == 401
    assert server.count() == 6
    clock.now += 31  # after the cooldown, a failed URL may be tried again
    assert get(app, forged_plugin_token("forged-0", clock)).status_code == 401
    assert server.count(f"/api/forged-0{JWKS_PATH}") == 2


def test_a_flood_of_forged_subs_neither_starves_nor_evicts_a_known_peer(
    server: KeySetServer, clock: FakeClock
) -> None:
    peer = Peer(clock, "peer")
    path = peer.publish(server, "peer")
    app = make_app(server.url, clock, BACKSTAGE_AUTH_JWKS_FETCH_BUDGET=2)
    assert get(app, peer.token("peer")).status_code == 200  # found through backend.baseUrl
    for i in range(50):
        assert get(app, forged_plugin_token(f"forged-{i}", clock)).status_code == 401
    assert server.count() <= 3
    assert get(app, peer.token("peer")).status_code == 200
    assert server.count(path) == 1
    # forged tokens naming the peer itself: its kept set answers, without a fetch
    assert get(app, forged_plugin_token("peer", clock)).status_code == 401
    assert server.count(path) == 1


def test_memory_per_forged_sub_is_bounded(
    server: KeySetServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugin_module, "FAILED_CACHE_SIZE", 5)
    monkeypatch.setattr(plugin_module, "KEY_SET_CACHE_SIZE", 2)
    peer = Peer(clock, "peer-a", "peer-b", "peer-c")
    for name in ("peer-a", "peer-b", "peer-c"):
        peer.publish(server, name)
    app = make_app(server.url, clock, BACKSTAGE_AUTH_JWKS_FETCH_BUDGET=1000)
    handler = BackstageAuth.state(app).plugin_tokens
    for i in range(30):
        assert get(app, forged_plugin_token(f"forged-{i}", clock)).status_code == 401
    assert server.count() == 30
    assert len(handler._failed) == 5
    assert handler._pending == {}
    for name in ("peer-a", "peer-b", "peer-c"):
        assert get(app, peer.token(name)).status_code == 200
    assert list(handler._cached) == [
        f"{server.url}/api/{name}{JWKS_PATH}" for name in ("peer-b", "peer-c")
    ]
    assert len(handler._configured) == 0 and handler._pending == {}


def test_with_no_budget_only_plugins_served_here_or_configured_verify(
    server: KeySetServer, clock: FakeClock
) -> None:
    peer = Peer(clock, "configured", "unlisted")
    configured_path = peer.publish(server, "configured")
    unlisted_path = peer.publish(server, "unlisted")
    app = make_app(server.url, clock, endpoints=["configured"], BACKSTAGE_AUTH_JWKS_FETCH_BUDGET=0)
    app.register_blueprint(whoami("search"))
    assert get(app, peer.token("configured")).status_code == 200
    auth = BackstageAuth.state(app).auth("search")
    own = auth.get_plugin_request_token(
        on_behalf_of=auth.get_own_service_credentials(), target_plugin_id="catalog"
    ).token
    reply = get(app, own)
    assert reply.status_code == 200
    assert reply.get_json()["principal"]["subject"] == "plugin:search"
    token = peer.token("unlisted")
    refused_without_fetch_details(get(app, token), token)
    assert server.count(configured_path) == 1
    assert server.count(unlisted_path) == 0


def test_budget_refills_at_its_rate_and_caps_fetches_running_together() -> None:
    now = [T0]
    budget = FetchBudget(2, clock=lambda: now[0])
    assert [budget.acquire() for _ in range(3)] == [True, True, False]
    budget.release()
    budget.release()
    assert budget.acquire() is False  # nothing refilled yet
    now[0] += 0.5
    assert budget.acquire() is True  # one a half second
    now[0] += 10
    assert [budget.acquire() for _ in range(2)] == [True, False]  # two running at most
    budget.release()
    now[0] -= 100  # a clock set back refills nothing
    assert budget.acquire() is True
    assert budget.acquire() is False
    assert FetchBudget(0, clock=lambda: now[0]).acquire() is False


# -- deadline, waiting, size ----------------------------------------------------


def test_a_trickling_key_set_fails_at_the_deadline(server: KeySetServer) -> None:
    server.routes["/jwks.json"] = trickle()
    fetcher = JwksFetcher(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(JwksUnavailable, match="took too long"):
        fetcher.fetch(f"{server.url}/jwks.json")
    assert time.monotonic() - started < 5  # the body alone would take 20 s
    assert eventually(server.aborted.is_set)  # the fetch hung up, it did not read on


def test_a_trickling_key_set_does_not_hold_a_request(
    server: KeySetServer, clock: FakeClock
) -> None:
    server.routes["/jwks.json"] = trickle()
    app = make_app(
        server.url,
        clock,
        external_access=[{"type": "jwks", "options": {"url": f"{server.url}/jwks.json"}}],
        BACKSTAGE_AUTH_JWKS_TIMEOUT=0.3,
    )
    started = time.monotonic()
    reply = get(app, external_token(clock))
    assert reply.status_code == 401
    assert reply.get_json()["error"]["message"] == "Illegal token"
    assert time.monotonic() - started < 5
    assert eventually(server.aborted.is_set)


def test_requests_wait_for_a_slow_fetch_at_most_the_wait_and_share_it(
    server: KeySetServer, clock: FakeClock
) -> None:
    server.routes["/jwks.json"] = hold(public_jwks(ISSUER, "issuer-1"))
    app = make_app(
        server.url,
        clock,
        external_access=[{"type": "jwks", "options": {"url": f"{server.url}/jwks.json"}}],
        BACKSTAGE_AUTH_JWKS_TIMEOUT=10,
        BACKSTAGE_AUTH_JWKS_WAIT=0.3,
        BACKSTAGE_AUTH_CACHE_SIZE=0,
    )
    token = external_token(clock)
    assert get(app, token).status_code == 401
    assert server.held == 1  # answered while the fetch is still running
    assert get(app, token).status_code == 401  # no second fetch, no second wait
    assert server.count() == 1
    server.release.set()
    state = BackstageAuth.state(app)
    cache = state.external_access.entries[0].context.cache
    assert eventually(lambda: cache.has_keys)
    reply = get(app, token)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.get_json()["principal"]["subject"] == "external:ci-bot"
    assert server.count() == 1


def test_a_slow_key_set_holds_no_request_for_another(
    server: KeySetServer, clock: FakeClock
) -> None:
    peer = Peer(clock, "slow", "fast")
    server.routes[f"/api/slow{JWKS_PATH}"] = hold(peer.jwks("slow"))
    peer.publish(server, "fast")
    app = make_app(
        server.url,
        clock,
        endpoints=["slow", "fast"],
        BACKSTAGE_AUTH_JWKS_TIMEOUT=10,
        BACKSTAGE_AUTH_JWKS_WAIT=10,
    )
    replies: list[int] = []
    waiting = threading.Thread(
        target=lambda: replies.append(get(app, peer.token("slow")).status_code)
    )
    waiting.start()
    try:
        assert eventually(lambda: server.held == 1)
        assert get(app, peer.token("fast")).status_code == 200
        assert waiting.is_alive() and replies == []  # still waiting on its own fetch
    finally:
        server.release.set()
        waiting.join(10)
    assert replies == [200]


def trickle_headers(interval: float = 0.05) -> Behaviour:
    """A status line, then one header byte every ``interval`` (20 s at most)."""

    def behave(handler: _Handler) -> None:
        owner: KeySetServer = handler.server.owner
        try:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(400):
                if owner.stop.wait(interval):
                    return
                handler.wfile.write(b"a")
                handler.wfile.flush()
        except OSError:
            owner.aborted.set()

    return behave


def test_trickling_headers_fail_at_the_deadline(server: KeySetServer) -> None:
    """Each read is bounded by the timeout; the watchdog bounds them all together."""
    server.routes["/jwks.json"] = trickle_headers()
    fetcher = JwksFetcher(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(JwksUnavailable, match="took too long"):
        fetcher.fetch(f"{server.url}/jwks.json")
    assert time.monotonic() - started < 3  # the headers alone would take 20 s
    assert eventually(server.aborted.is_set)


def test_a_hanging_key_set_fails_at_the_deadline_and_the_next_fetch_runs(
    server: KeySetServer, clock: FakeClock
) -> None:
    """A server that never answers: the request is refused within the wait, the
    fetch ends at the deadline, and the next token's fetch is not held by it."""
    server.routes["/api/auth/.well-known/jwks.json"] = hold(public_jwks(ISSUER, "issuer-1"))
    app = make_app(server.url, clock, BACKSTAGE_AUTH_JWKS_TIMEOUT=0.5, BACKSTAGE_AUTH_JWKS_WAIT=0.5)
    started = time.monotonic()
    reply = get(app, user_token(clock))
    assert reply.status_code == 401
    assert reply.get_json()["error"]["message"] == "Failed user token verification"
    assert time.monotonic() - started < 3
    cache = BackstageAuth.state(app).user_tokens.key_set
    assert eventually(lambda: cache._flight is None)  # ended at the deadline, not at 10 s
    assert time.monotonic() - started < 3
    server.json("/api/auth/.well-known/jwks.json", public_jwks(ISSUER, "issuer-1"))
    reply = get(app, user_token(clock))  # within the cooldown: a forced reload
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert server.count() == 2


GARBAGE: list[tuple[int, bytes]] = [
    (200, b"<html>Bad gateway</html>"),
    (200, b""),
    (200, b"null"),
    (200, b"[]"),
    (200, b'{"keys": "none"}'),
    (200, b'{"keys": {}}'),
    (200, b"[" * 100_000),
    (200, b'{"keys": [1, "x", {"kty": "EC"}]}'),  # jose: malformed, the whole set
    (200, b'{"keys": [[]]}'),
    (500, b'{"keys": []}'),
    (302, b""),
]


@pytest.mark.parametrize(("status", "body"), GARBAGE)
def test_garbage_is_a_failed_fetch_and_the_last_good_set_stays(
    server: KeySetServer, clock: FakeClock, status: int, body: bytes
) -> None:
    path = "/api/auth/.well-known/jwks.json"
    server.json(path, public_jwks(ISSUER, "issuer-1"))
    app = make_app(
        server.url,
        clock,
        BACKSTAGE_AUTH_CACHE_SIZE=0,
        BACKSTAGE_AUTH_JWKS_TIMEOUT=10,
        BACKSTAGE_AUTH_JWKS_WAIT=10,
    )
    token = user_token(clock)
    assert get(app, token).status_code == 200
    server.routes[path] = lambda handler: handler.send(status, body, {"Location": "/elsewhere"})
    forged = jwt.encode(
        {"sub": "user:default/eve", "iat": int(clock()), "exp": int(clock()) + 600},
        ATTACKER,
        algorithm="ES256",
        headers={"typ": "vnd.backstage.user", "kid": "attacker"},
    )
    assert get(app, forged).status_code == 401  # a forced reload, which fails
    assert server.count(path) == 2
    assert get(app, token).status_code == 200  # the set fetched before still verifies
    with pytest.raises(JwksUnavailable):
        JwksFetcher().fetch(f"{server.url}{path}")


def test_a_set_of_unusable_keys_replaces_the_set(server: KeySetServer, clock: FakeClock) -> None:
    """Well-formed, but no key we can use (as jose, they are skipped): the
    issuer says these are its keys, so the old ones no longer verify."""
    path = "/api/auth/.well-known/jwks.json"
    server.json(path, public_jwks(ISSUER, "issuer-1"))
    app = make_app(server.url, clock, BACKSTAGE_AUTH_CACHE_SIZE=0)
    token = user_token(clock)
    assert get(app, token).status_code == 200
    oct_key = {"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0", "alg": "HS256", "kid": "issuer-1"}
    server.json(path, {"keys": [{"kty": "EC"}, oct_key]})
    clock.now += 601
    token = user_token(clock)
    assert get(app, token).status_code == 200  # a known kid: refreshed in the background
    state = BackstageAuth.state(app)
    assert eventually(lambda: server.count(path) == 2 and state.user_tokens.key_set._flight is None)
    assert get(app, token).status_code == 401


def test_a_huge_key_set_is_refused(server: KeySetServer) -> None:
    fetcher = JwksFetcher(timeout=5, max_bytes=64 * 1024)
    server.routes["/announced.json"] = flood(announce=True)
    with pytest.raises(JwksUnavailable, match="too large"):
        fetcher.fetch(f"{server.url}/announced.json")
    server.routes["/unannounced.json"] = flood(announce=False)
    with pytest.raises(JwksUnavailable, match="too large"):
        fetcher.fetch(f"{server.url}/unannounced.json")
    assert eventually(server.aborted.is_set)
    assert server.bytes_sent < 50 * 1024 * 1024


def test_a_compressed_key_set_is_refused(server: KeySetServer) -> None:
    body = gzip.compress(json.dumps(public_jwks(ISSUER, "issuer-1")).encode())
    server.routes["/jwks.json"] = lambda handler: handler.send(
        200, body, {"Content-Encoding": "gzip"}
    )
    with pytest.raises(JwksUnavailable, match="compressed"):
        JwksFetcher().fetch(f"{server.url}/jwks.json")


@pytest.mark.parametrize(("max_bytes", "status"), [(None, 401), (1024 * 1024, 200)])
def test_the_size_cap_applies_to_external_key_sets(
    server: KeySetServer, clock: FakeClock, max_bytes: int | None, status: int
) -> None:
    padded = {**public_jwks(ISSUER, "issuer-1"), "padding": "x" * 300_000}
    server.json("/jwks.json", padded)
    settings = {} if max_bytes is None else {"BACKSTAGE_AUTH_JWKS_MAX_BYTES": max_bytes}
    app = make_app(
        server.url,
        clock,
        external_access=[{"type": "jwks", "options": {"url": f"{server.url}/jwks.json"}}],
        **settings,
    )
    assert get(app, external_token(clock)).status_code == status


# -- one HTTP session ------------------------------------------------------------


def test_every_key_set_fetch_shares_one_connection(server: KeySetServer, clock: FakeClock) -> None:
    peer = Peer(clock, "peer-a", "peer-b", "peer-c")
    for name in ("peer-a", "peer-b", "peer-c"):
        peer.publish(server, name)
    server.json("/api/auth/.well-known/jwks.json", public_jwks(ISSUER, "issuer-1"))
    server.json("/issuer/jwks.json", public_jwks(ISSUER, "issuer-1"))
    app = make_app(
        server.url,
        clock,
        endpoints=["peer-c"],
        external_access=[{"type": "jwks", "options": {"url": f"{server.url}/issuer/jwks.json"}}],
    )
    for token in (
        peer.token("peer-a"),  # backend.baseUrl
        peer.token("peer-b"),
        peer.token("peer-c"),  # discovery.endpoints
        user_token(clock),  # the auth plugin's key set
        external_token(clock),  # an externalAccess jwks entry
    ):
        reply = get(app, token)
        assert reply.status_code == 200, reply.get_data(as_text=True)
    assert server.count() == 5
    assert len(set(server.ports)) == 1  # one kept-alive connection, not a socket per set


# -- discovery's plugin prefix ---------------------------------------------------


def test_discovery_uses_the_plugin_prefix_for_backend_base_url_only() -> None:
    config = {
        "backend": {"baseUrl": "http://backend:7007/"},
        "discovery": {
            "endpoints": [{"target": "http://search:7007/api/{{pluginId}}", "plugins": ["search"]}]
        },
    }
    default = HostDiscovery.from_config(config)
    assert default.get_base_url("catalog") == "http://backend:7007/api/catalog"
    assert default.get_external_base_url("catalog") == "http://backend:7007/api/catalog"
    custom = HostDiscovery.from_config(config, plugin_prefix="/internal/")
    assert custom.get_base_url("catalog") == "http://backend:7007/internal/catalog"
    assert custom.get_external_base_url("catalog") == "http://backend:7007/internal/catalog"
    assert custom.get_base_url("search") == "http://search:7007/api/search"
    assert HostDiscovery("http://b", plugin_prefix="").get_base_url("x") == "http://b/x"
    assert custom.has_endpoint("search") and not custom.has_endpoint("catalog")


@pytest.mark.parametrize(("our_prefix", "status"), [("/internal", 200), ("/api", 401)])
def test_plugin_keys_are_fetched_under_the_plugin_prefix(
    clock: FakeClock, our_prefix: str, status: int
) -> None:
    """A peer mounted under ``/internal``: found there only with the same prefix."""
    peer_app = Flask("peer-internal", static_folder=None)
    peer_app.config.update(BACKSTAGE_AUTH_PLUGIN_PREFIX="/internal", BACKSTAGE_CONFIG={})
    BackstageAuth(peer_app, clock=clock)
    auth = BackstageAuth.state(peer_app).auth("peer")
    token = auth.get_plugin_request_token(
        on_behalf_of=auth.get_own_service_credentials(), target_plugin_id="catalog"
    ).token
    with LiveServer(peer_app) as live:
        app = make_app(live.url, clock, prefix=our_prefix)
        assert BackstageAuth.state(app).discovery.get_base_url("peer") == (
            f"{live.url}{our_prefix}/peer"
        )
        assert get(app, token, our_prefix).status_code == status


# -- settings --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("BACKSTAGE_AUTH_JWKS_WAIT", -1),
        ("BACKSTAGE_AUTH_JWKS_MAX_BYTES", 10),
        ("BACKSTAGE_AUTH_JWKS_MAX_BYTES", "1MB"),
        ("BACKSTAGE_AUTH_JWKS_FETCH_BUDGET", -0.5),
        ("BACKSTAGE_AUTH_JWKS_FETCH_BUDGET", True),
    ],
)
def test_invalid_fetch_settings_fail_at_startup(key: str, value: t.Any) -> None:
    app = Flask("bad-settings", static_folder=None)
    app.config.update({key: value, "BACKSTAGE_CONFIG": {}})
    with pytest.raises(ConfigError, match=key):
        BackstageAuth(app)


def test_fetch_settings_reach_the_one_fetcher(clock: FakeClock) -> None:
    app = make_app(
        "http://127.0.0.1:1",
        clock,
        BACKSTAGE_AUTH_JWKS_TIMEOUT=3,
        BACKSTAGE_AUTH_JWKS_WAIT=7,
        BACKSTAGE_AUTH_JWKS_MAX_BYTES=4096,
    )
    fetcher = BackstageAuth.state(app).jwks_fetcher
    assert (fetcher.timeout, fetcher.wait, fetcher.max_bytes) == (3, 3, 4096)  # wait <= timeout
