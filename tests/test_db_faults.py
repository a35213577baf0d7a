"""The example backend when its PostgreSQL stops answering, goes away, or is empty.

Between the app and PostgreSQL sits a proxy (tests/db_proxy.py) that the test
pauses (nothing is answered, as a stopped server) or takes down (every
connection refused). The bounds are set to 1 s (the connect timeout is at
least 2 s in libpq and psycopg): a request that needs the database answers a
503 within a few seconds, and one that needs none answers at once meanwhile.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from flask_backstage_auth.access_tokens.format import generate_token
from flask_backstage_auth.config.timeouts import DatabaseTimeouts
from flask_backstage_auth.db.guard import (
    OutageLog,
    TransactionTimedOut,
    bounded_transaction,
    describe_failure,
    engine_options,
)
from flask_backstage_auth.db.startup import migrate_at_startup
from flask_backstage_auth.db.storage import VERSION_TABLE
from flask_backstage_auth.errors import ConfigError
from tests.conftest import LiveServer, _pg_url_in, free_port
from tests.db_proxy import PausableProxy

HERE = Path(__file__).parent
EXAMPLE = HERE.parent / "example_app"
STATIC_TOKEN = {"Authorization": "Bearer example-catalog-reader-token"}
FAST = {
    "BACKSTAGE_AUTH_DB_CONNECT_TIMEOUT": 1,
    "BACKSTAGE_AUTH_DB_STATEMENT_TIMEOUT": 1,
    "BACKSTAGE_AUTH_DB_LOCK_TIMEOUT": 1,
    "BACKSTAGE_AUTH_DB_POOL_TIMEOUT": 1,
}
#: A request that needs the database answers within this many seconds
#: (connect 2 s, or statement 1 s + 1 s of grace, plus the machine's slack).
BOUND = 4.5
#: A request that needs none answers within this.
PROMPT = 1.0


def _fresh_token() -> dict[str, str]:
    """A well-formed access token no one issued: its check is one query."""
    return {"Authorization": f"Bearer {generate_token('service').value}"}


@pytest.fixture
def proxy(postgres_url: str) -> t.Iterator[PausableProxy]:
    with PausableProxy.to(postgres_url) as proxy:
        yield proxy


@pytest.fixture
def proxied_url(proxy: PausableProxy, postgres_url: str, pg_schema: str) -> str:
    url = proxy.url_for(_pg_url_in(postgres_url, pg_schema))
    return url.render_as_string(hide_password=False)


def _example(url: str) -> t.Any:
    from example_app import create_app

    return create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, **FAST})


def _dispose(app: t.Any) -> None:
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()


def _get(base: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, float, t.Any]:
    started = time.monotonic()
    response = requests.get(base + path, headers=headers or {}, timeout=30)
    elapsed = time.monotonic() - started
    body = (
        response.json()
        if response.headers.get("Content-Type", "").startswith("application/json")
        else None
    )
    return response.status_code, elapsed, body


def _guest(base: str) -> dict[str, str]:
    response = requests.post(base + "/api/auth/guest/refresh", timeout=10)
    assert response.status_code == 200
    return {"Authorization": f"Bearer {response.json()['backstageIdentity']['token']}"}


def _outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "database failed" in r.getMessage()]


def test_a_paused_database_is_a_bounded_503_and_the_rest_is_served(
    proxy: PausableProxy, proxied_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = _example(proxied_url)
    caplog.set_level(logging.INFO, logger="flask_backstage_auth")
    try:
        with LiveServer(app) as server:
            base = server.url
            assert _get(base, "/api/catalog/entities", _fresh_token())[0] == 401  # the DB answers
            assert _get(base, "/api/catalog/entities", STATIC_TOKEN)[0] == 200
            # Signing in needs the database: two user tokens now, one used now
            # (its keys are loaded), one only while the database is away.
            users = [_guest(base), _guest(base)]
            assert _get(base, "/api/app/whoami", users[0])[0] == 200
            proxy.pause()
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                slow = [
                    pool.submit(_get, base, "/api/catalog/entities", _fresh_token())
                    for _ in range(4)
                ]
                time.sleep(0.3)  # the four are now waiting on the database
                quick = [
                    _get(base, "/api/app/health"),
                    _get(base, "/api/catalog/entities", STATIC_TOKEN),
                    _get(base, "/api/app/health"),
                    _get(base, "/api/app/whoami", users[1]),
                ]
                answers = [future.result(timeout=15) for future in slow]
            for status, elapsed, _ in quick:
                assert status == 200
                assert elapsed < PROMPT, f"a request without a database waited {elapsed:.1f} s"
            for status, elapsed, body in answers:
                assert status == 503
                assert elapsed < BOUND, f"a database request waited {elapsed:.1f} s"
                assert body["error"]["name"] == "ServiceUnavailableError"
                assert "postgres" not in body["error"]["message"]
            # Still paused, and known to be: one request at a time tries the
            # database (within the bound); the others meanwhile fail at once.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                probe = pool.submit(_get, base, "/api/catalog/entities", _fresh_token())
                time.sleep(0.3)
                for _ in range(3):
                    status, elapsed, _ = _get(base, "/api/catalog/entities", _fresh_token())
                    assert (status, elapsed < PROMPT) == (503, True)
                status, elapsed, _ = probe.result(timeout=15)
                assert (status, elapsed < BOUND) == (503, True)
            proxy.resume()
            deadline = time.monotonic() + 10
            while (status := _get(base, "/api/catalog/entities", _fresh_token())[0]) == 503:
                assert time.monotonic() < deadline, "no recovery after the database came back"
            assert status == 401
    finally:
        _dispose(app)
    outages = _outage_lines(caplog)
    assert len(outages) == 1, outages  # once per outage, not once per request
    assert any("answers again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fault", ["down", "paused"])
def test_an_instance_boots_while_the_database_is_away(
    fault: str, proxy: PausableProxy, proxied_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    (proxy.take_down if fault == "down" else proxy.pause)()
    caplog.set_level(logging.INFO, logger="flask_backstage_auth")
    started = time.monotonic()
    app = _example(proxied_url)
    assert time.monotonic() - started < BOUND
    try:
        assert any("Could not migrate" in r.getMessage() for r in caplog.records)
        client = app.test_client()
        assert client.get("/api/app/health").status_code == 200
        assert client.get("/api/catalog/entities", headers=STATIC_TOKEN).status_code == 200
        started = time.monotonic()
        refused = client.get("/api/catalog/entities", headers=_fresh_token())
        assert (refused.status_code, time.monotonic() - started < BOUND) == (503, True)

        # Back, but empty: the tables are missing, and the log says what to run.
        proxy.resume()
        caplog.clear()
        assert client.get("/api/catalog/entities", headers=_fresh_token()).status_code == 503
        assert any("flask backstage-auth db upgrade" in line for line in _outage_lines(caplog))
        # The release step, then the database serves.
        from flask_backstage_auth.cli import cli

        result = app.test_cli_runner().invoke(cli, ["db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert client.get("/api/catalog/entities", headers=_fresh_token()).status_code == 401
    finally:
        _dispose(app)


def test_the_watchdog_cuts_a_transaction_the_server_never_answers(
    proxy: PausableProxy, proxied_url: str
) -> None:
    timeouts = DatabaseTimeouts(connect=1, statement=0.5, lock=0.5, pool=1)
    engine = sa.create_engine(proxied_url, **engine_options(proxied_url, timeouts))
    try:
        with bounded_transaction(engine, timeouts) as connection:
            assert connection.execute(sa.text("SELECT 1")).scalar() == 1
        proxy.pause()
        started = time.monotonic()
        with pytest.raises(TransactionTimedOut):
            with bounded_transaction(engine, timeouts) as connection:
                connection.execute(sa.text("SELECT 1"))
        assert time.monotonic() - started < 3
        proxy.resume()
        # The cut connection left the pool: the next transaction works.
        with bounded_transaction(engine, timeouts) as connection:
            assert connection.execute(sa.text("SELECT 2")).scalar() == 2
    finally:
        engine.dispose()


def test_a_live_server_cancels_a_slow_statement_itself(postgres_url: str, pg_schema: str) -> None:
    timeouts = DatabaseTimeouts(statement=0.3)
    # A URL of this test's own: the outage it causes is no other test's.
    engine = sa.create_engine(_pg_url_in(postgres_url, pg_schema), poolclass=NullPool)
    try:
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError) as raised:
            with bounded_transaction(engine, timeouts) as connection:
                connection.execute(sa.text("SELECT pg_sleep(10)"))
        assert type(raised.value.orig).__name__ == "QueryCanceled"  # not the watchdog
        assert time.monotonic() - started < 2
    finally:
        engine.dispose()


def test_concurrent_migrators_on_an_empty_postgresql_all_succeed(
    postgres_url: str, pg_schema: str
) -> None:
    url = _pg_url_in(postgres_url, pg_schema)
    engines = [sa.create_engine(url, poolclass=NullPool) for _ in range(4)]
    barrier = threading.Barrier(len(engines))

    def migrate(engine: sa.Engine) -> bool:
        barrier.wait(timeout=10)
        return migrate_at_startup(engine, timeout=10)

    try:
        with concurrent.futures.ThreadPoolExecutor(len(engines)) as pool:
            assert list(pool.map(migrate, engines)) == [True] * len(engines)
        with engines[0].connect() as connection:
            versions = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))
            assert len(versions.all()) == 1
    finally:
        for engine in engines:
            engine.dispose()


def test_a_migrator_that_cannot_have_the_lock_gives_up_in_time(
    postgres_url: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    from flask_backstage_auth.db.startup import MIGRATION_LOCK_KEY

    engine = sa.create_engine(_pg_url_in(postgres_url, pg_schema), poolclass=NullPool)
    try:
        with engine.connect() as holder:
            holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            started = time.monotonic()
            assert migrate_at_startup(engine, timeout=0.5) is False
            assert time.monotonic() - started < 3
            holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
        assert any("Could not migrate" in r.getMessage() for r in caplog.records)
        assert migrate_at_startup(engine, timeout=5) is True
    finally:
        engine.dispose()


@pytest.mark.parametrize(("hold", "timeout", "migrated"), [(0.5, 5, True), (3, 0.3, False)])
def test_sqlite_migrations_wait_for_the_write_lock(
    tmp_path: Path, hold: float, timeout: float, migrated: bool
) -> None:
    path = tmp_path / "locked.sqlite"
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    releaser = threading.Timer(hold, lambda: locker.execute("COMMIT"))
    releaser.start()
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        started = time.monotonic()
        assert migrate_at_startup(engine, timeout=timeout) is migrated
        assert time.monotonic() - started < hold + timeout + 1
    finally:
        releaser.join()
        locker.close()
        engine.dispose()
    assert migrate_at_startup(engine, timeout=5) is True  # idempotent, and unlocked now


def _instance_config(tmp_path: Path, port: int, url: str) -> str:
    override = tmp_path / f"instance-{port}.yaml"
    override.write_text(
        "backend:\n"
        f"  baseUrl: http://127.0.0.1:{port}\n"
        f"  listen: {{host: 127.0.0.1, port: {port}}}\n"
        f"  database: {{client: pg, connection: '{url}'}}\n",
        encoding="utf-8",
    )
    return os.pathsep.join([str(EXAMPLE / "app-config.yaml"), str(override)])


def test_instances_started_together_on_an_empty_database_all_come_up(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    url = _pg_url_in(postgres_url, pg_schema)  # psycopg 3 (2.0's default driver is psycopg2)
    # Backstage's pg connection string, which the example turns into psycopg 3's.
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    ports = [free_port() for _ in range(3)]
    processes = []
    try:
        for port in ports:
            env = {**os.environ, "BACKSTAGE_APP_CONFIG": _instance_config(tmp_path, port, plain)}
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "example_app"],
                    cwd=HERE.parent,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        deadline = time.monotonic() + 60
        for port, process in zip(ports, processes):
            while True:
                assert process.poll() is None, process.communicate()[1]
                try:
                    health = requests.get(f"http://127.0.0.1:{port}/api/app/health", timeout=2)
                    if health.status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                assert time.monotonic() < deadline, "an instance did not come up"
                time.sleep(0.2)
        for port in ports:  # each serves what needs the database, too
            response = requests.get(
                f"http://127.0.0.1:{port}/api/catalog/entities", headers=_fresh_token(), timeout=10
            )
            assert response.status_code == 401
    finally:
        for process in processes:
            process.terminate()
        logs = [process.communicate(timeout=10)[1] for process in processes]
    for log in logs:
        assert "Could not migrate" not in log, log
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
        assert len(rows) == 1
    finally:
        engine.dispose()


# -- the pieces --------------------------------------------------------------


def test_failures_are_described_without_credentials() -> None:
    error = sa.exc.OperationalError(
        "SELECT 1",
        {},
        Exception(
            'connection to "postgresql://scott:tiger-secret@db.example" failed: tiger-secret'
        ),
    )
    text = describe_failure(error)
    assert "tiger-secret" not in text
    assert "OperationalError" in text
    missing = sa.exc.ProgrammingError(
        "SELECT", {}, type("UndefinedTable", (Exception,), {})("relation does not exist")
    )
    assert "run `flask backstage-auth db upgrade`" in describe_failure(missing)
    sqlite_missing = sa.exc.OperationalError("SELECT", {}, Exception("no such table: x"))
    assert "db upgrade" in describe_failure(sqlite_missing)
    assert "db upgrade" not in text


def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flask_backstage_auth.db")
    log = OutageLog()
    engine = sa.create_engine("postgresql+psycopg://u:pw-secret@db.example/app")
    other = sa.create_engine("postgresql+psycopg://u:pw-secret@db2.example/app")
    error = sa.exc.OperationalError("SELECT 1", {}, Exception("refused"))
    for _ in range(5):
        log.failed(engine, error)
    log.failed(other, error)  # another database: its own outage
    log.succeeded(engine)
    log.succeeded(engine)
    log.failed(engine, error)  # a new outage
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "failed" in m]) == 3
    assert len([m for m in messages if "answers again" in m]) == 1
    assert not any("pw-secret" in m for m in messages)
    assert log.is_down(engine) and log.is_down(other)


def test_engine_options_bound_every_wait() -> None:
    timeouts = DatabaseTimeouts(connect=4, statement=5, lock=2, pool=3)
    pg = engine_options("postgresql+psycopg://u@h/db", timeouts)
    assert pg["pool_timeout"] == 3
    assert pg["connect_args"]["connect_timeout"] == 4
    assert engine_options("sqlite:///x.db", timeouts) == {"connect_args": {"timeout": 2}}


@pytest.mark.parametrize("value", [-1, 0, "5", True, None])
def test_timeouts_must_be_positive_numbers(value: object) -> None:
    from flask import Flask

    from flask_backstage_auth import BackstageAuth

    app = Flask(__name__)
    app.config["BACKSTAGE_AUTH_DB_STATEMENT_TIMEOUT"] = value
    with pytest.raises(ConfigError, match="BACKSTAGE_AUTH_DB_STATEMENT_TIMEOUT"):
        BackstageAuth(app)


def test_library_engines_get_the_bounds() -> None:
    from flask import Flask

    from flask_backstage_auth import BackstageAuth

    app = Flask(__name__)
    app.config.update(BACKSTAGE_AUTH_DATABASE_URI="sqlite://", BACKSTAGE_AUTH_DB_LOCK_TIMEOUT=0.25)
    BackstageAuth(app)
    database = BackstageAuth.state(app).database
    assert database is not None
    assert database.timeouts.lock == 0.25
    with database.engine.connect() as connection:
        busy = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    assert busy == 250


class _Store:
    """Public JWKs whose load can be held (a slow database) or fail (a down one)."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        from flask_backstage_auth.auth.plugin.keys import public_jwk

        self.jwks = [public_jwk(ec.generate_private_key(ec.SECP256R1()), "k1")]
        self.release = threading.Event()
        self.release.set()
        self.failing = False
        self.loads = 0

    def __call__(self) -> list[dict[str, t.Any]]:
        self.loads += 1
        self.release.wait(10)
        if self.failing:
            raise sa.exc.OperationalError("SELECT", {}, Exception("down"))
        return list(self.jwks)


def test_a_key_set_reload_never_blocks_a_known_key() -> None:
    from flask_backstage_auth.auth.key_sets import LocalKeySet

    now = [1000.0]
    store = _Store()
    keys = LocalKeySet(store, cooldown=0, max_age=60, max_stale=600, clock=lambda: now[0])
    assert keys.get_key("k1", "ES256") is not None
    store.release.clear()  # the next load hangs, as on a paused database
    now[0] += 61
    started = time.monotonic()
    assert keys.get_key("k1", "ES256") is not None  # the reload runs in a thread
    assert keys.get_key("k1", "ES256") is not None
    assert time.monotonic() - started < 0.5
    store.failing = True
    store.release.set()
    deadline = time.monotonic() + 5
    while keys._lock.locked():  # the background reload fails; the keys stay
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert keys.get_key("k1", "ES256") is not None
    # An unknown kid needs the store: its failure fails closed.
    with pytest.raises(Exception) as raised:
        keys.get_key("k2", "ES256")
    assert type(raised.value).__name__ == "JwksUnavailable"
    # Stale past max_stale: nothing verifies until the store answers.
    now[0] += 600
    with pytest.raises(Exception) as raised:
        keys.get_key("k1", "ES256")
    assert type(raised.value).__name__ == "JwksUnavailable"
    store.failing = False
    assert keys.get_key("k1", "ES256") is not None


def test_while_unreachable_one_transaction_at_a_time_tries() -> None:
    from flask_backstage_auth.db.guard import DatabaseUnavailable

    log = OutageLog()
    engine = sa.create_engine("postgresql+psycopg://u@db.example/app")
    error = sa.exc.OperationalError("SELECT 1", {}, Exception("refused"))
    assert log.admit(engine) is False  # all is well: no probe, no wait
    log.failed(engine, error, unreachable=True)
    assert log.admit(engine) is True  # the probe
    with pytest.raises(DatabaseUnavailable):
        log.admit(engine)  # the others fail at once meanwhile
    log.release(engine)
    assert log.admit(engine) is True  # the next probe
    log.release(engine)
    log.failed(engine, error, unreachable=False)  # the server answered (an error)
    assert log.admit(engine) is False
    log.failed(engine, error, unreachable=True)
    log.succeeded(engine)
    assert log.admit(engine) is False


def test_signing_while_the_key_store_is_down_logs_the_outage_once(
    proxy: PausableProxy, proxied_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from flask_backstage_auth.auth.plugin.keys import RotatingKeySource
    from flask_backstage_auth.db.storage import Database, SqlPublicKeyStore, StorageUnavailable

    timeouts = DatabaseTimeouts(connect=1, statement=0.5, lock=0.5, pool=1)
    engine = sa.create_engine(proxied_url, **engine_options(proxied_url, timeouts))
    source = RotatingKeySource(SqlPublicKeyStore(Database(engine, timeouts=timeouts)))
    proxy.take_down()
    caplog.set_level(logging.DEBUG, logger="flask_backstage_auth")
    try:
        for _ in range(3):
            with pytest.raises(StorageUnavailable):
                source.get_signing_key()
    finally:
        engine.dispose()
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in loud] == ["flask_backstage_auth.db"], [r.getMessage() for r in loud]
    assert "OperationalError" in loud[0].getMessage()
