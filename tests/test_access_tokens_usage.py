"""A token's last use and its use events are written off the request's path.

The first request with an access token does not wait for ``last_used_at`` to
be written: the :class:`UsageRecorder` queues it and a thread writes it. The
throttle (once per token per ``lastUsedIntervalSeconds``) and the audit trail
(events in the order they happened) stay; a database that blocks or fails
never holds up or fails a request. Through HTTP in production mode on SQLite
files and on PostgreSQL (skipped when it is not reachable), and on a fake
store for the queue itself. Nothing here measures time: a held write is held
by an event until the test opens it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import typing as t
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from flask_backstage_auth.access_tokens import service as token_service
from flask_backstage_auth.access_tokens.api import iso
from flask_backstage_auth.access_tokens.extension import AccessTokens
from flask_backstage_auth.access_tokens.state import AccessTokensState
from flask_backstage_auth.access_tokens.store import AuditEvent, TokenUse
from flask_backstage_auth.access_tokens.usage import UsageRecorder
from flask_backstage_auth.db.storage import StorageUnavailable
from tests.access_token_app import TEAM, Clock, bearer, build, user_token
from tests.conftest import _pg_url_in

BASE = "/api/access-tokens"
CATALOG = "/api/catalog/entities"
WORKER = "access-token-usage"
#: Stands for what a driver's message may carry; it must never reach a log line.
SECRET_IN_ERROR = "pw-7c1e-never-logged"
USAGE_LOGGER = "flask_backstage_auth.access_tokens.usage"
ROOT = Path(__file__).resolve().parent.parent


# -- apps on a database other threads can write -------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tokens.db'}"
    postgres_url = request.getfixturevalue("postgres_url")
    schema = request.getfixturevalue("pg_schema")
    return _pg_url_in(postgres_url, schema).render_as_string(hide_password=False)


MakeApp = t.Callable[..., Flask]


@pytest.fixture
def make_app(database_uri: str) -> t.Iterator[MakeApp]:
    made: list[Flask] = []

    def make(**settings: t.Any) -> Flask:
        app = build(Clock(), database_uri=database_uri, **settings)
        made.append(app)
        return app

    yield make
    for app in made:
        AccessTokens.state(app).usage.close(timeout=10)
        with app.app_context():
            for engine in app.extensions["sqlalchemy"].engines.values():
                engine.dispose()


def state_of(app: Flask) -> AccessTokensState:
    return AccessTokens.state(app)


def engine_of(app: Flask) -> Engine:
    with app.app_context():
        return t.cast(Engine, app.extensions["sqlalchemy"].engine)


def create(app: Flask, name: str, kind: str = "service", **body: t.Any) -> tuple[str, str]:
    """A new token made through the API by its owner: (secret, id)."""
    payload: dict[str, t.Any] = {"name": name, "scopes": ["catalog:read"], **body}
    if kind == "service":
        payload["groupEntityRef"] = TEAM
    response = app.test_client().post(
        f"{BASE}/{kind}/", json=payload, headers=bearer(user_token(app))
    )
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    return created["rawToken"], created["token"]["id"]


def use(client: FlaskClient, token: str) -> int:
    return client.get(CATALOG, headers=bearer(token)).status_code


def last_used(app: Flask, token_id: str, kind: str = "service") -> float | None:
    """What the database holds now (not through the API, which waits for the recorder)."""
    record = state_of(app).store.get(token_id, t.cast(t.Any, kind))
    assert record is not None
    return record.last_used_at


class HeldWrites:
    """Holds every statement of the recorder's thread until :meth:`open` (or fails it)."""

    def __init__(self, engine: Engine, *, fail: bool = False) -> None:
        self.engine = engine
        self.fail = fail
        self.reached = threading.Event()
        self.opened = threading.Event()
        sa.event.listen(engine, "before_cursor_execute", self._hold)

    def _hold(self, *args: t.Any) -> None:
        if threading.current_thread().name != WORKER:
            return
        self.reached.set()
        if self.fail:
            raise sa.exc.OperationalError("UPDATE", {}, ConnectionError(SECRET_IN_ERROR))
        assert self.opened.wait(30), "the held write was never let through"

    def open(self) -> None:
        self.opened.set()

    def remove(self) -> None:
        self.open()
        sa.event.remove(self.engine, "before_cursor_execute", self._hold)


@contextmanager
def failing(engine: Engine) -> t.Iterator[None]:
    """Every statement on ``engine`` fails inside the block, as if the database were down."""

    def fail(*args: t.Any) -> None:
        raise sa.exc.OperationalError("SELECT", {}, ConnectionError(SECRET_IN_ERROR))

    sa.event.listen(engine, "before_cursor_execute", fail)
    try:
        yield
    finally:
        sa.event.remove(engine, "before_cursor_execute", fail)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == USAGE_LOGGER and r.levelno >= logging.WARNING]


# -- the request does not wait -----------------------------------------------


def test_the_first_request_does_not_wait_for_its_use_to_be_written(make_app: MakeApp) -> None:
    app = make_app()
    usage = state_of(app).usage
    first, first_id = create(app, "first")
    second, second_id = create(app, "second")
    held = HeldWrites(engine_of(app))
    try:
        client = app.test_client()
        assert use(client, first) == 200
        assert usage.flush(timeout=0) is False  # asks for the write now, and does not wait
        assert held.reached.wait(30)  # the write has begun, and the database holds it
        # Meanwhile another token's first use, and the first token again: neither waits.
        assert use(client, second) == 200
        assert use(client, first) == 200
        assert last_used(app, first_id) is None and last_used(app, second_id) is None
        assert usage.flush(timeout=0) is False
        held.open()
        assert usage.flush(timeout=30)
    finally:
        held.remove()
    now = state_of(app).clock()
    assert last_used(app, first_id) == now
    assert last_used(app, second_id) == now


def test_a_read_waits_for_a_held_write_no_longer_than_its_bound(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(token_service, "READ_WAIT", 0.01)
    app = make_app()
    token, token_id = create(app, "ci")
    owner = bearer(user_token(app))
    held = HeldWrites(engine_of(app))
    try:
        client = app.test_client()
        assert use(client, token) == 200
        state_of(app).usage.flush(timeout=0)
        assert held.reached.wait(30)
        shown = client.get(f"{BASE}/service/{token_id}", headers=owner)
        assert shown.status_code == 200  # answered while the write is still held
        assert shown.get_json()["lastUsedAt"] is None
        held.open()
        assert state_of(app).usage.flush(timeout=30)
    finally:
        held.remove()
    shown = app.test_client().get(f"{BASE}/service/{token_id}", headers=owner)
    assert shown.get_json()["lastUsedAt"] == iso(state_of(app).clock())


def test_reads_show_the_uses_this_instance_has_seen(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(token_service, "READ_WAIT", 30)  # what is shown, not how long it takes
    app = make_app()
    client = app.test_client()
    owner = bearer(user_token(app))
    service_token, service_id = create(app, "ci")
    assert use(client, service_token) == 200
    shown = client.get(f"{BASE}/service/{service_id}", headers=owner).get_json()
    assert shown["lastUsedAt"] == iso(state_of(app).clock())
    listed = client.get(f"{BASE}/service/", headers=owner).get_json()["tokens"]
    assert [token["lastUsedAt"] for token in listed] == [shown["lastUsedAt"]]

    # A token asking about itself sees the use it is making.
    personal, personal_id = create(app, "laptop", "personal", scopes=["access-tokens:read"])
    itself = client.get(f"{BASE}/personal/self", headers=bearer(personal))
    assert itself.status_code == 200
    assert itself.get_json()["id"] == personal_id
    assert itself.get_json()["lastUsedAt"] == iso(state_of(app).clock())


# -- a failing database ---------------------------------------------------------


def test_a_failing_database_fails_no_request_and_is_logged_once(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=USAGE_LOGGER)
    app = make_app()
    usage = state_of(app).usage
    tokens = [create(app, f"ci-{index}") for index in range(3)]
    owner = bearer(user_token(app))
    held = HeldWrites(engine_of(app), fail=True)
    try:
        client = app.test_client()
        assert use(client, tokens[0][0]) == 200
        assert usage.flush(timeout=30) is False  # returns once the write has failed
        assert held.reached.is_set()
        for token, _ in tokens[1:]:
            assert use(client, token) == 200  # valid requests pass while the writes fail
        # While the database fails, nothing waits for the recorder: not a flush, not a read.
        waited = threading.Thread(target=usage.flush, kwargs={"timeout": None})
        waited.start()
        waited.join(30)
        assert not waited.is_alive()
        assert client.get(f"{BASE}/service/{tokens[0][1]}", headers=owner).status_code == 200
    finally:
        held.remove()
    warnings = warnings_of(caplog)
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "OperationalError" in message
    assert SECRET_IN_ERROR not in caplog.text
    assert all(token not in caplog.text for token, _ in tokens)


def test_notes_outlast_an_outage_in_the_order_they_happened(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=USAGE_LOGGER)
    app = make_app(usage_writes="manual")  # written only when the test flushes
    state = state_of(app)
    client = app.test_client()
    owner = bearer(user_token(app))
    old, token_id = create(app, "ci")
    rotated = client.post(
        f"{BASE}/service/{token_id}/rotate", json={"graceSeconds": 60}, headers=owner
    )
    assert rotated.status_code == 200
    assert use(client, old) == 200  # noted: old_secret_used, first_used, and the last use
    engine = engine_of(app)
    for _ in range(3):
        with failing(engine):
            assert state.usage.flush() is False
    assert len(warnings_of(caplog)) == 1  # once for the outage, not once per attempt
    assert state.usage.pending == 3
    # Revoked at the same moment, after the use: the trail must still say so.
    revoked = client.post(f"{BASE}/service/{token_id}/revoke", json={}, headers=owner)
    assert revoked.status_code == 200
    assert state.usage.flush() is True
    assert any("again" in r.getMessage() for r in caplog.records if r.name == USAGE_LOGGER)
    events = client.get(f"{BASE}/service/{token_id}/audit", headers=owner).get_json()["events"]
    assert [event["event"] for event in events] == [
        "revoked",
        "first_used",
        "old_secret_used",
        "rotated",
        "created",
    ]
    assert events[1]["metadata"] == events[2]["metadata"] == {"ip": "127.0.0.1"}
    assert last_used(app, token_id) == state.clock()


def test_the_throttle_holds_one_write_per_token_per_interval(make_app: MakeApp) -> None:
    app = make_app()
    state = state_of(app)
    clock = t.cast(Clock, state.clock)
    token, token_id = create(app, "ci")
    client = app.test_client()
    seen: list[str] = []

    def listener(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            seen.append(statement)

    engine = engine_of(app)
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        first_use = clock()
        for _ in range(5):  # past the verification cache each time, within the interval
            assert use(client, token) == 200
            clock.now += 6
        assert state.usage.flush(timeout=30)
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    assert len(seen) == 1
    assert last_used(app, token_id) == first_use  # the first use of the interval


# -- where there is no other thread to write ------------------------------------


def test_an_in_memory_database_is_written_in_the_request() -> None:
    app = build(Clock())  # sqlite://: every thread shares its one connection
    token, token_id = create(app, "ci")
    assert use(app.test_client(), token) == 200
    assert state_of(app).usage.pending == 0
    assert last_used(app, token_id) == state_of(app).clock()


def test_uses_are_written_at_interpreter_exit(tmp_path: Path) -> None:
    database = tmp_path / "exit.db"
    script = f"""
from flask_backstage_auth.access_tokens.extension import AccessTokens
from tests.access_token_app import TEAM, Clock, bearer, build, user_token

app = build(Clock(), database_uri={f"sqlite:///{database}"!r}, usage_writes="manual")
client = app.test_client()
body = {{"name": "ci", "groupEntityRef": TEAM, "scopes": ["catalog:read"]}}
created = client.post(
    "{BASE}/service/", json=body, headers=bearer(user_token(app))
).get_json()
assert client.get("{CATALOG}", headers=bearer(created["rawToken"])).status_code == 200
assert AccessTokens.state(app).usage.pending == 2  # noted (the use, first_used), not written
print(created["token"]["id"])
"""
    # The manual mode writes only when flushed: this process never flushes, so
    # only the recorder's exit hook can write the use.
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    token_id = done.stdout.strip()
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            row = connection.execute(
                sa.text("SELECT last_used_at FROM backstage_auth_access_tokens WHERE id = :id"),
                {"id": token_id},
            ).one()
    finally:
        engine.dispose()
    assert row.last_used_at is not None


# -- the queue ------------------------------------------------------------------


class FakeStore:
    def __init__(self, *, shared: bool = False) -> None:
        self.shared = shared
        self.failing: BaseException | None = None
        self.during_write: t.Callable[[], None] = lambda: None
        self.batches: list[tuple[list[TokenUse], list[AuditEvent]]] = []

    def record_usage(self, uses: t.Sequence[TokenUse], events: t.Sequence[AuditEvent] = ()) -> None:
        self.during_write()
        if self.failing is not None:
            raise self.failing
        self.batches.append((list(uses), list(events)))

    def shares_one_connection(self) -> bool:
        return self.shared


def test_notes_of_one_token_coalesce_and_events_keep_their_order() -> None:
    store = FakeStore()
    usage = UsageRecorder(store, mode="manual")
    usage.record_use("a", now=10, ip="10.0.0.1")
    usage.add_event("a", "failed_use", {"reason": "expired"}, now=11)
    usage.record_use("b", now=12, ip=None)
    usage.record_use("a", now=13, ip="10.0.0.2")
    usage.add_event("b", "old_secret_used", {}, now=14)
    assert usage.pending == 4
    assert store.batches == []  # nothing is written until a flush
    assert usage.flush()
    [(uses, events)] = store.batches
    assert sorted(uses, key=lambda u: u.token_id) == [
        TokenUse("a", 13, "10.0.0.2"),
        TokenUse("b", 12, None),
    ]
    assert [(e.token_id, e.event, e.occurred_at) for e in events] == [
        ("a", "failed_use", 11),
        ("b", "old_secret_used", 14),
    ]
    assert events[0].id < events[1].id  # ids taken when noted sort in that order
    assert usage.pending == 0 and usage.flush()
    assert len(store.batches) == 1


def test_the_queue_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    usage = UsageRecorder(FakeStore(), mode="manual", max_pending=3)
    for index in range(10):
        usage.record_use(f"t{index}", now=index, ip=None)
    assert usage.pending == 3
    usage.record_use("t0", now=99, ip=None)  # a queued token's newer use still counts
    assert usage.pending == 3
    assert len(warnings_of(caplog)) == 1


def test_a_failed_batch_is_kept_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    usage = UsageRecorder(store, mode="manual")
    usage.add_event("a", "failed_use", {}, now=1)
    store.failing = StorageUnavailable("Could not record the use of access tokens")
    assert usage.flush() is False
    usage.add_event("a", "failed_use", {}, now=2)
    assert usage.flush() is False
    assert len(warnings_of(caplog)) == 1
    store.failing = None
    assert usage.flush() is True
    [(_, events)] = store.batches
    assert [e.occurred_at for e in events] == [1, 2]


def test_a_shared_connection_is_written_by_the_noting_thread() -> None:
    store = FakeStore(shared=True)
    usage = UsageRecorder(store)  # the background mode, on a database it cannot use
    usage.record_use("a", now=1, ip=None)
    assert store.batches == [([TokenUse("a", 1, None)], [])]
    assert usage.pending == 0


def test_a_forked_child_leaves_the_parents_notes_to_the_parent() -> None:
    store = FakeStore()
    usage = UsageRecorder(store, mode="manual")
    usage.record_use("a", now=1, ip=None)
    usage._after_fork_in_child()  # what os.register_at_fork runs in the child
    assert usage.pending == 0
    assert usage.flush() and store.batches == []
    usage.record_use("b", now=2, ip=None)  # the child's own notes are its own
    assert usage.flush() and store.batches == [([TokenUse("b", 2, None)], [])]


def test_closing_writes_what_is_queued_and_later_notes_at_once() -> None:
    store = FakeStore()
    usage = UsageRecorder(store, mode="manual")
    usage.record_use("a", now=1, ip=None)
    assert usage.close(timeout=30)
    assert store.batches == [([TokenUse("a", 1, None)], [])]
    usage.record_use("b", now=2, ip=None)
    assert store.batches[-1] == ([TokenUse("b", 2, None)], [])


def test_a_batch_the_database_refuses_is_dropped_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    usage = UsageRecorder(store, mode="manual")
    usage.add_event("gone", "failed_use", {}, now=1)
    store.failing = sa.exc.IntegrityError("INSERT", {}, ValueError(SECRET_IN_ERROR))
    assert usage.flush() is True  # settled: retrying could never succeed
    assert usage.pending == 0
    [warning] = warnings_of(caplog)
    assert "IntegrityError" in warning.getMessage() and "dropped" in warning.getMessage()
    assert SECRET_IN_ERROR not in caplog.text
    store.failing = None
    usage.add_event("kept", "failed_use", {}, now=2)
    assert usage.flush() and [e.token_id for e in store.batches[0][1]] == ["kept"]


def test_a_kept_batch_does_not_grow_the_queue_past_its_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    usage = UsageRecorder(store, mode="manual", max_pending=3)
    for moment in (1, 2, 3):
        usage.add_event("a", "failed_use", {}, now=moment)

    def two_more() -> None:  # come in while the batch is being written, and fails
        for moment in (4, 5):
            usage.add_event("b", "failed_use", {}, now=moment)

    store.during_write = two_more
    store.failing = StorageUnavailable("Could not record the use of access tokens")
    assert usage.flush() is False
    assert usage.pending == 3  # the failed batch first, then what fits
    store.during_write, store.failing = (lambda: None), None
    assert usage.flush()
    [(_, events)] = store.batches
    assert [e.occurred_at for e in events] == [1, 2, 3]
    assert any("dropping" in r.getMessage() for r in warnings_of(caplog))
