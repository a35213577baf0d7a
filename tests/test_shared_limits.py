"""Limits shared across instances in Redis (``backend.rateLimit.store``), and their fallback.

The shared cases need a Redis (``BACKSTAGE_AUTH_TEST_REDIS_URL``, default
``redis://127.0.0.1:6379/0``) and skip when it does not answer; the cases of a
missing, hanging or misconfigured store need none. Every test counts under a
client address and token ids of its own, so runs in parallel do not collide.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time
import typing as t
from pathlib import Path

import pytest
from flask import Blueprint, Flask, jsonify
from flask_sqlalchemy import SQLAlchemy

from flask_backstage_auth import BackstageAuth
from flask_backstage_auth.access_tokens.extension import DAY, AccessTokens, AccessTokensState
from flask_backstage_auth.access_tokens.format import generate_token
from flask_backstage_auth.access_tokens.ratelimit import LEAK_REPORTS_PER_MINUTE
from flask_backstage_auth.access_tokens.shared_limits import (
    KEY_PREFIX,
    RETRY_AFTER,
    LimitStore,
    SharedRateLimit,
)
from flask_backstage_auth.access_tokens.store import TokenRecord
from flask_backstage_auth.config.reader import ConfigReader
from flask_backstage_auth.db.cli import upgrade_database
from flask_backstage_auth.errors import ConfigError
from flask_backstage_auth.extension import get_credentials
from tests.test_lean_imports import probe

REDIS_URL = os.environ.get("BACKSTAGE_AUTH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Nothing listens on port 1.
CLOSED = "redis://:pw-7d1e-not-for-logs@127.0.0.1:1/0"
REPORT = "/api/access-tokens/service/revoke"
START = 1_800_000_000.0
TEAM = "group:default/team-a"
LOGGER = "flask_backstage_auth.access_tokens.shared_limits"
ROOT = Path(__file__).parents[1]


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def redis_up(url: str = REDIS_URL) -> bool:
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def redis_url() -> str:
    if not redis_up():
        pytest.skip(f"Redis does not answer at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture(autouse=True)
def _stores_closed(monkeypatch: pytest.MonkeyPatch) -> t.Iterator[None]:
    """The connections of the stores the apps of a test made are closed after it."""
    made: list[LimitStore] = []
    from_config = LimitStore.from_config

    def recording(config: ConfigReader) -> LimitStore | None:
        store = from_config(config)
        if store is not None:
            made.append(store)
        return store

    monkeypatch.setattr(LimitStore, "from_config", recording)
    yield
    for store in made:
        store.close()


def new_address() -> str:
    """A client address of this test's own (documentation range)."""
    return f"2001:db8::{secrets.randbelow(65536):x}:{secrets.randbelow(65536):x}"


def make_app(
    store: dict[str, t.Any] | None,
    *,
    database: str = "sqlite://",
    clock: FakeClock | None = None,
) -> Flask:
    """BackstageAuth + AccessTokens (API, uses written in the request) with a ``catalog`` plugin."""
    app = Flask(__name__, static_folder=None)
    backend: dict[str, t.Any] = {"baseUrl": "http://127.0.0.1:7007"}
    if store is not None:
        backend["rateLimit"] = {"store": store}
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database,
        BACKSTAGE_AUTH_DEVELOPMENT=False,
        BACKSTAGE_CONFIG={"backend": backend},
    )
    db = SQLAlchemy()
    db.init_app(app)
    BackstageAuth(app, db=db, clock=clock or FakeClock())
    with app.app_context():
        upgrade_database(db.engine)
    AccessTokens(app, admin_pages=False, usage_writes="inline")
    catalog = Blueprint("catalog", __name__, url_prefix="/api/catalog")
    catalog.get("/whoami")(lambda: jsonify(get_credentials().to_dict()))
    app.register_blueprint(catalog)
    return app


def redis_store(url: str) -> dict[str, str]:
    return {"type": "redis", "connection": url}


def report(app: Flask, address: str) -> int:
    response = app.test_client().post(
        REPORT, json={"tokens": []}, environ_base={"REMOTE_ADDR": address}
    )
    return response.status_code


def state(app: Flask) -> AccessTokensState:
    return AccessTokens.state(app)


def create(app: Flask, clock: FakeClock, lifetime: float = 90 * DAY) -> tuple[str, TokenRecord]:
    token = generate_token("service")
    record = state(app).store.create(
        kind="service",
        name=f"deploy-{secrets.token_hex(4)}",
        description="",
        digest=token.digest,
        token_prefix=token.display_prefix,
        owner_ref=TEAM,
        scopes=("catalog:read",),
        created_by="user:default/admin",
        expires_at=clock() + lifetime,
        now=clock(),
    )
    return token.value, record


def use(app: Flask, token: str, ip: str) -> int:
    response = app.test_client().get(
        "/api/catalog/whoami",
        headers={"Authorization": f"Bearer {token}"},
        environ_base={"REMOTE_ADDR": ip},
    )
    return response.status_code


def events(app: Flask, token_id: str, event: str) -> int:
    return sum(1 for e in state(app).store.events(token_id) if e.event == event)


def store_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


# -- configuration ------------------------------------------------------------------


def test_without_a_store_or_with_memory_each_process_counts_alone() -> None:
    assert LimitStore.from_config(ConfigReader({})) is None
    memory = {"backend": {"rateLimit": {"store": {"type": "memory"}}}}
    assert LimitStore.from_config(ConfigReader(memory)) is None
    assert state(make_app({"type": "memory"})).limit_store is None
    assert state(make_app(None)).limit_store is None


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ({"type": "memcached", "connection": "memcached://h"}, "store.type must be"),
        ({"type": "redis"}, "store.connection"),
        ({"type": "redis", "connection": "memcached://u:pw-7d1e@h:1"}, "redis:// or rediss://"),
        ({"type": "redis", "connection": "http://u:pw-7d1e@h/"}, "redis:// or rediss://"),
        ({"type": "redis", "connection": "redis://u:pw-7d1e@h:port/0"}, "not a valid Redis URL"),
        ({"type": "redis", "connection": 6379}, "connection"),
        ({}, "store.type"),
    ],
    ids=["unknown-type", "no-connection", "memcached", "http", "bad-port", "number", "empty"],
)
def test_a_bad_store_fails_at_start_and_never_shows_the_password(
    store: dict[str, t.Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        make_app(store)
    assert message in str(raised.value)
    assert "pw-7d1e" not in str(raised.value)


def test_without_the_redis_extra_a_redis_store_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "limits.storage", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"flask-backstage-auth\[redis\]"):
        LimitStore(CLOSED)


def test_the_library_is_imported_only_when_a_store_is_configured() -> None:
    without = probe(
        """
        from flask_backstage_auth.access_tokens.extension import AccessTokens
        from flask_sqlalchemy import SQLAlchemy
        app3 = Flask("tokens", static_folder=None)
        app3.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
        db = SQLAlchemy(app3)
        BackstageAuth(app3, db=db)
        AccessTokens(app3, usage_writes="inline")
        """
    )
    assert without["heavy_on_import"] == []
    assert "limits" not in t.cast(t.List[str], without["heavy_after_serving"])
    assert "redis" not in t.cast(t.List[str], without["heavy_after_serving"])
    with_store = probe(
        f"""
        from flask_backstage_auth.access_tokens.shared_limits import LimitStore
        LimitStore({CLOSED!r})
        """
    )
    assert with_store["heavy_on_import"] == []
    assert {"limits", "redis"} <= set(t.cast(t.List[str], with_store["heavy_after_serving"]))


# -- the leak-report limit, shared -------------------------------------------------------


def test_two_instances_sharing_redis_allow_the_limit_in_total(redis_url: str) -> None:
    first, second = make_app(redis_store(redis_url)), make_app(redis_store(redis_url))
    address = new_address()
    statuses = [
        report(app, address)
        for _ in range(LEAK_REPORTS_PER_MINUTE)
        for app in (first, second)  # interleaved: each alone stays under its own count
    ]
    assert statuses.count(200) == LEAK_REPORTS_PER_MINUTE
    assert set(statuses) == {200, 429}
    assert report(first, address) == report(second, address) == 429
    # Another client has a count of its own, on either instance.
    assert report(second, new_address()) == 200


def test_without_a_store_two_instances_allow_twice_the_limit() -> None:
    # The documented per-process behaviour, for contrast with the test above.
    first, second = make_app(None), make_app(None)
    address = new_address()
    statuses = [report(app, address) for _ in range(30) for app in (first, second)]
    assert statuses.count(200) == 2 * LEAK_REPORTS_PER_MINUTE


_WORKER = """
import sys
sys.path.insert(0, {root!r})
from tests.test_shared_limits import make_app, redis_store, report
app = make_app(redis_store({url!r}))
print("ready", flush=True)
sys.stdin.readline()  # both start counting at once
print(sum(report(app, {address!r}) == 200 for _ in range({count})))
"""


def test_two_processes_sharing_redis_allow_the_limit_in_total(redis_url: str) -> None:
    address = new_address()
    count = LEAK_REPORTS_PER_MINUTE
    code = textwrap.dedent(_WORKER).format(
        root=str(ROOT), url=redis_url, address=address, count=count
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready", worker.stderr
        for worker in workers:  # both at once: the count is shared while both run
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = [worker.communicate(timeout=120) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait(timeout=10)
    allowed = [int(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sum(allowed) == LEAK_REPORTS_PER_MINUTE, outputs


def test_redis_down_falls_back_to_the_per_process_limit_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    app = make_app(redis_store(CLOSED))
    address = new_address()
    statuses = [report(app, address) for _ in range(LEAK_REPORTS_PER_MINUTE + 5)]
    assert statuses == [200] * LEAK_REPORTS_PER_MINUTE + [429] * 5  # bounded, never 500
    warnings = store_warnings(caplog)
    assert len(warnings) == 1
    assert "does not answer" in warnings[0].getMessage()
    assert "pw-7d1e" not in caplog.text and "127.0.0.1:1" not in caplog.text


def hanging_server() -> socket.socket:
    """A listening socket that never answers (the kernel completes the handshake)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    return server


def test_a_hanging_redis_costs_one_short_timeout_then_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with hanging_server() as server:
        url = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
        app = make_app(redis_store(url))
        address = new_address()
        started = time.monotonic()
        assert report(app, address) == 200
        first = time.monotonic() - started
        # 0.25 s of socket timeout, no retries (redis-py's default would back off for seconds).
        assert first < 2.0
        started = time.monotonic()
        assert [report(app, address) for _ in range(10)] == [200] * 10
        assert time.monotonic() - started < 2.0  # the store is left alone meanwhile
    assert len(store_warnings(caplog)) == 1
    assert "TimeoutError" in store_warnings(caplog)[0].getMessage()


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_after_a_failure_the_store_rests_then_is_asked_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    monotonic = FakeMonotonic()
    store = LimitStore(CLOSED, monotonic=monotonic, timeout=0.2)
    asked: list[str] = []
    original = store._storage.acquire_entry

    def spy(*args: t.Any, **kwargs: t.Any) -> bool:
        asked.append("asked")
        return original(*args, **kwargs)

    store._storage.acquire_entry = spy  # type: ignore[method-assign]
    hit = store.counter("rest", 5, 60)
    assert hit("k") is None and asked == ["asked"]
    monotonic.now += RETRY_AFTER - 1
    assert hit("k") is None and asked == ["asked"]  # resting: not asked
    monotonic.now += 2
    assert hit("k") is None and asked == ["asked", "asked"]  # asked again, still down
    assert len(store_warnings(caplog)) == 1  # one warning per outage, not per try


def test_a_store_that_answers_again_is_shared_again_and_says_so(
    redis_url: str, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    monotonic = FakeMonotonic()
    store = LimitStore(redis_url, monotonic=monotonic)
    request.addfinalizer(store.close)
    original = store._storage.acquire_entry

    def broken(*args: t.Any, **kwargs: t.Any) -> bool:
        import redis

        raise redis.ConnectionError("down for the test")

    store._storage.acquire_entry = broken  # type: ignore[method-assign]
    limits = [SharedRateLimit("recover", 2, per=60, store=store) for _ in range(2)]
    key = new_address()
    # Down: each instance counts alone, 2 each.
    assert [limit.allow(key, 0) for limit in limits for _ in range(3)] == [True, True, False] * 2
    store._storage.acquire_entry = original  # type: ignore[method-assign]
    monotonic.now += RETRY_AFTER
    fresh = [SharedRateLimit("recover", 2, per=60, store=store) for _ in range(2)]
    assert [limit.allow(key, 0) for limit in fresh for _ in range(2)] == [True, True, False, False]
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 2
    assert "does not answer (ConnectionError)" in messages[0]
    assert "answers again" in messages[1]


def test_counter_arguments_are_checked() -> None:
    store = LimitStore(CLOSED)
    with pytest.raises(ValueError):
        store.counter("x", 0, 60)
    with pytest.raises(ValueError):
        store.counter("x", 1, 0)


# -- the use throttles, shared ----------------------------------------------------------


def two_instances(tmp_path: Path, store: dict[str, t.Any] | None) -> tuple[Flask, Flask, FakeClock]:
    clock = FakeClock()
    database = f"sqlite:///{tmp_path / 'tokens.db'}"
    return (
        make_app(store, database=database, clock=clock),
        make_app(store, database=database, clock=clock),
        clock,
    )


def test_last_used_is_written_once_per_interval_across_instances(
    tmp_path: Path, redis_url: str
) -> None:
    first, second, clock = two_instances(tmp_path, redis_store(redis_url))
    token, record = create(first, clock)
    assert use(first, token, "10.1.1.1") == 200
    assert use(second, token, "10.2.2.2") == 200  # within the interval: not written again
    stored = state(first).store.get(record.id, "service")
    assert stored is not None and stored.last_used_ip == "10.1.1.1"
    assert events(first, record.id, "first_used") == 1  # nor is the first use audited twice


def test_without_a_store_each_instance_writes_its_own_last_use(tmp_path: Path) -> None:
    first, second, clock = two_instances(tmp_path, None)
    token, record = create(first, clock)
    assert use(first, token, "10.1.1.1") == 200
    assert use(second, token, "10.2.2.2") == 200
    stored = state(first).store.get(record.id, "service")
    assert stored is not None and stored.last_used_ip == "10.2.2.2"


def test_failed_uses_are_audited_once_per_interval_across_instances(
    tmp_path: Path, redis_url: str
) -> None:
    first, second, clock = two_instances(tmp_path, redis_store(redis_url))
    token, record = create(first, clock, lifetime=60)
    clock.now += 61
    for _ in range(3):
        assert use(first, token, "10.1.1.1") == 401
        assert use(second, token, "10.2.2.2") == 401
    assert events(first, record.id, "failed_use") == 1


def test_the_old_secret_is_audited_once_across_instances(tmp_path: Path, redis_url: str) -> None:
    first, second, clock = two_instances(tmp_path, redis_store(redis_url))
    old, record = create(first, clock)
    new = generate_token("service")
    state(first).store.rotate(
        record.id,
        "service",
        digest=new.digest,
        token_prefix=new.display_prefix,
        expires_at=clock() + 90 * DAY,
        grace_until=clock() + 60,
        now=clock(),
    )
    for _ in range(2):
        assert use(first, old, "10.1.1.1") == 200
        assert use(second, old, "10.2.2.2") == 200
        clock.now += 10  # past the verification cache
    assert events(first, record.id, "old_secret_used") == 1


def test_redis_down_the_throttles_count_per_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second, clock = two_instances(tmp_path, redis_store(CLOSED))
    token, record = create(first, clock, lifetime=60)
    clock.now += 61
    for _ in range(3):
        assert use(first, token, "10.1.1.1") == 401
        assert use(second, token, "10.2.2.2") == 401
    assert events(first, record.id, "failed_use") == 2  # once per instance, still bounded
    assert len(store_warnings(caplog)) == 2  # one per app: each has its own store


# -- the keys in Redis ----------------------------------------------------------------------


def test_keys_are_namespaced_hashed_and_expire(
    tmp_path: Path, redis_url: str, request: pytest.FixtureRequest
) -> None:
    import redis

    first, second, clock = two_instances(tmp_path, redis_store(redis_url))
    address = new_address()
    assert report(first, address) == 200
    token, record = create(first, clock)
    assert use(first, token, address) == 200
    expired, expired_record = create(first, clock, lifetime=1)
    clock.now += 2
    assert use(second, expired, address) == 401

    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    request.addfinalizer(client.close)
    digests = {
        name: hashlib.sha256(value.encode()).hexdigest()[:32]
        for name, value in [
            ("address", address),
            ("token", record.id),
            ("expired", expired_record.id),
        ]
    }
    ours = {
        key.decode(): client.ttl(key)
        for key in client.scan_iter(match=f"{KEY_PREFIX}:*", count=1000)
        if any(d in key.decode() for d in digests.values())
    }
    prefix = f"{KEY_PREFIX}:LIMITER/access-tokens/"
    assert {k.split("/")[2] for k in ours} == {"leak-report", "last-used", "failed-use"}
    for key, ttl in ours.items():
        assert key.startswith(prefix), key
        assert 0 < ttl <= 300, key  # nothing kept for ever
        for secret_value in (address, token, expired, record.id, expired_record.id):
            assert secret_value not in key
    assert any(digests["address"] in k and "/leak-report/" in k for k in ours)
    assert any(digests["token"] in k and "/last-used/" in k for k in ours)
    assert any(digests["expired"] in k and "/failed-use/" in k for k in ours)
