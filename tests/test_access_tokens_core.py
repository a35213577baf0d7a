"""Access tokens without the HTTP API: format, authentication, revocation, audit, CLI.

Tokens are made with the store and ``generate_token`` and presented to plugin
blueprints of a real app (``BackstageAuth`` + ``AccessTokens``) on SQLite
files; the concurrency and authentication cases also run on PostgreSQL
(skipped when it cannot be reached).
"""

from __future__ import annotations

import math
import threading
import typing as t
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Blueprint, Flask, jsonify
from flask.testing import FlaskClient
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import Engine
from werkzeug.test import TestResponse

from flask_backstage_auth import BackstageAuth
from flask_backstage_auth.access_tokens import format as token_format
from flask_backstage_auth.access_tokens.cli import tokens_group
from flask_backstage_auth.access_tokens.extension import DAY, AccessTokens, AccessTokensState
from flask_backstage_auth.access_tokens.format import (
    DISPLAY_PREFIX_LENGTH,
    generate_token,
    hash_token,
    parse,
)
from flask_backstage_auth.access_tokens.service import CLI, Issued
from flask_backstage_auth.access_tokens.state import EXTENSION_KEY
from flask_backstage_auth.access_tokens.store import (
    EVENTS,
    TOKENS,
    SqlAccessTokenStore,
    TokenRecord,
)
from flask_backstage_auth.db.cli import upgrade_database
from flask_backstage_auth.errors import ConflictError
from flask_backstage_auth.extension import get_credentials
from tests.conftest import _pg_url_in

START = 1_800_000_000.0
TEAM_A = "group:default/team-a"
ALICE = "user:default/alice"
#: Nothing listens on port 1; the password must never show up in an error.
PASSWORD = "pw-3f9a1c-not-for-errors"
CLOSED_URL = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/test"


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def plugin(name: str) -> Blueprint:
    bp = Blueprint(name, __name__, url_prefix=f"/api/{name}")

    @bp.get("/whoami")
    def whoami() -> t.Any:
        return jsonify(get_credentials().to_dict())

    return bp


@dataclass
class Instance:
    """One app instance: BackstageAuth + AccessTokens on a database, with two plugins."""

    app: Flask
    db: SQLAlchemy
    clock: FakeClock

    @property
    def state(self) -> AccessTokensState:
        return AccessTokens.state(self.app)

    @property
    def engine(self) -> Engine:
        with self.app.app_context():
            return self.db.engine

    def client(self) -> FlaskClient:
        return self.app.test_client()

    def create(
        self,
        name: str = "deploy",
        *,
        kind: t.Literal["service", "personal"] = "service",
        owner: str = TEAM_A,
        scopes: t.Sequence[str] = ("catalog:read",),
        lifetime: float = 90 * DAY,
    ) -> tuple[str, TokenRecord]:
        token = generate_token(kind)
        now = self.clock()
        record = self.state.store.create(
            kind=kind,
            name=name,
            description="",
            digest=token.digest,
            token_prefix=token.display_prefix,
            owner_ref=owner,
            scopes=scopes,
            created_by="user:default/admin",
            expires_at=now + lifetime,
            now=now,
        )
        return token.value, record

    def get(self, token: str, plugin_id: str = "catalog", ip: str = "10.0.0.7") -> TestResponse:
        return self.client().get(
            f"/api/{plugin_id}/whoami",
            headers={"Authorization": f"Bearer {token}"},
            environ_base={"REMOTE_ADDR": ip},
        )

    def settle(self) -> None:
        """Write the uses this instance has noted (they are written in the background)."""
        assert self.state.usage.flush(timeout=10)

    def events(self, token_id: str, event: str | None = None) -> list[str]:
        self.settle()
        names = [e.event for e in self.state.store.events(token_id)]
        return [n for n in names if event is None or n == event]

    def dispose(self) -> None:
        if EXTENSION_KEY in self.app.extensions:
            self.state.usage.close(timeout=10)
        with self.app.app_context():
            for engine in self.db.engines.values():
                engine.dispose()


MakeInstance = t.Callable[..., Instance]


@pytest.fixture
def make_instance(tmp_path: Path) -> t.Iterator[MakeInstance]:
    made: list[Instance] = []

    def make(
        uri: str | None = None,
        *,
        clock: FakeClock | None = None,
        access_tokens: dict[str, t.Any] | None = None,
        register: bool = True,
    ) -> Instance:
        app = Flask(__name__)
        app.config["SQLALCHEMY_DATABASE_URI"] = uri or f"sqlite:///{tmp_path / 'tokens.db'}"
        config: dict[str, t.Any] = {"backend": {"baseUrl": "http://127.0.0.1:7007"}}
        if access_tokens is not None:
            config["accessTokens"] = access_tokens
        app.config["BACKSTAGE_CONFIG"] = config
        db = SQLAlchemy()
        db.init_app(app)
        clock = clock or FakeClock()
        instance = Instance(app, db, clock)
        made.append(instance)
        BackstageAuth(app, db=db, clock=clock)
        with app.app_context():
            upgrade_database(db.engine)
        if register:
            AccessTokens(app, register_blueprint=False)
        app.register_blueprint(plugin("catalog"))
        app.register_blueprint(plugin("search"))
        return instance

    yield make
    for instance in made:
        instance.dispose()


@pytest.fixture
def inst(make_instance: MakeInstance) -> Instance:
    return make_instance()


@pytest.fixture
def pg_instance(make_instance: MakeInstance, postgres_url: str, pg_schema: str) -> Instance:
    url = _pg_url_in(postgres_url, pg_schema).render_as_string(hide_password=False)
    return make_instance(url)


@contextmanager
def statements(engine: Engine) -> t.Iterator[list[str]]:
    """The SQL statements sent to ``engine`` inside the block."""
    seen: list[str] = []

    def listener(
        conn: t.Any, cursor: t.Any, statement: str, params: t.Any, context: t.Any, many: bool
    ) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)


def updates_of_tokens(seen: list[str]) -> list[str]:
    return [s for s in seen if s.lstrip().upper().startswith(f"UPDATE {TOKENS.name.upper()}")]


def error_message(response: TestResponse) -> str:
    body = response.get_json()
    assert isinstance(body, dict)
    return t.cast(str, body["error"]["message"])


def forge_same_prefix(token: str) -> str:
    """A well-formed token (valid checksum) sharing ``token``'s display prefix only."""
    body = token[:-6]
    position = len(body) - 1
    replacement = "A" if body[position] != "A" else "B"
    body = body[:position] + replacement
    return body + token_format._checksum(body)


# -- format ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["service", "personal"])
def test_generated_tokens_parse(kind: t.Literal["service", "personal"]) -> None:
    for _ in range(50):
        token = generate_token(kind)
        assert parse(token.value) == kind
        assert token.digest == hash_token(token.value)
        assert token.display_prefix == token.value[:DISPLAY_PREFIX_LENGTH]
        assert len(token.value) == len(token_format.PREFIX_OF[kind]) + 43 + 6


def test_any_single_change_fails_the_checksum() -> None:
    value = generate_token("service").value
    for position in range(len("bsat_"), len(value)):
        for replacement in ("0", "z"):
            if value[position] == replacement:
                continue
            changed = value[:position] + replacement + value[position + 1 :]
            assert parse(changed) is None, position


def test_malformed_tokens_do_not_parse() -> None:
    value = generate_token("service").value
    body, checksum = value[:-6], value[-6:]
    other_checksum = ("0" if checksum[0] != "0" else "1") + checksum[1:]
    assert parse(body + other_checksum) is None
    assert parse("bspat_" + value[len("bsat_") :]) is None  # the checksum covers the prefix
    assert parse("bsxt_" + value[len("bsat_") :]) is None
    assert parse(value[:-1]) is None
    assert parse(value + "0") is None
    assert parse(value[:20] + "-" + value[21:]) is None
    assert parse(value.encode()) is None
    assert parse(None) is None


def test_tokens_carry_at_least_256_random_bits() -> None:
    random_length = 43
    alphabet = token_format._ALPHABET
    assert len(set(alphabet)) == 62
    assert random_length * math.log2(len(alphabet)) >= 256
    assert 62**random_length >= 2**256
    values = {generate_token("service").value for _ in range(1000)}
    assert len(values) == 1000
    assert all(set(v[len("bsat_") :]) <= set(alphabet) for v in values)


def test_a_bad_checksum_is_refused_without_a_query(inst: Instance) -> None:
    value = generate_token("service").value
    bad = value[:-1] + ("0" if value[-1] != "0" else "1")
    with statements(inst.engine) as seen:
        response = inst.get(bad)
    assert response.status_code == 401
    assert error_message(response) == "Invalid access token"
    assert seen == []


def test_an_unknown_well_formed_token_costs_one_lookup(inst: Instance) -> None:
    inst.create()  # a table that is not empty
    with statements(inst.engine) as seen:
        response = inst.get(generate_token("service").value)
    assert response.status_code == 401
    assert error_message(response) == "Invalid access token"
    assert len(seen) == 1
    assert seen[0].lstrip().upper().startswith("SELECT")


# -- authentication --------------------------------------------------------


def check_service_token(inst: Instance) -> None:
    token, record = inst.create("ci-deploy", scopes=["catalog:write", "techdocs:read"])
    response = inst.get(token)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {
        "principal": {
            "type": "service",
            "subject": f"access-token:{TEAM_A}:ci-deploy",
            "accessRestrictions": {
                "permissionAttributes": {"action": ["create", "delete", "read", "update"]}
            },
        }
    }
    refused = inst.get(token, "search")
    assert refused.status_code == 403
    assert refused.get_json()["error"]["name"] == "NotAllowedError"
    assert inst.get(token).status_code == 200  # cached: still the same answer


def test_a_service_token_authenticates_restricted_to_its_scopes(inst: Instance) -> None:
    check_service_token(inst)


def test_a_service_token_on_postgresql(pg_instance: Instance) -> None:
    check_service_token(pg_instance)


def test_personal_tokens_are_refused_while_personal_tokens_are_off(inst: Instance) -> None:
    token, _ = inst.create("laptop", kind="personal", owner=ALICE, scopes=["catalog:read"])
    response = inst.get(token)
    assert response.status_code == 401
    assert response.get_json()["error"]["message"] == "Personal access tokens are disabled"


def test_a_personal_token_authenticates_as_its_user(make_instance: MakeInstance) -> None:
    inst = make_instance(access_tokens={"personal": {"enabled": True}})
    token, _ = inst.create("laptop", kind="personal", owner=ALICE, scopes=["catalog:read"])
    assert token.startswith("bspat_")
    response = inst.get(token)
    assert response.status_code == 200
    assert response.get_json() == {
        "principal": {
            "type": "user",
            "userEntityRef": ALICE,
            "accessRestrictions": {"permissionAttributes": {"action": ["read"]}},
        }
    }
    assert inst.get(token, "search").status_code == 403


def test_an_expired_token_is_refused(inst: Instance) -> None:
    token, record = inst.create(lifetime=60)
    assert inst.get(token).status_code == 200
    inst.clock.advance(60)
    response = inst.get(token)
    assert response.status_code == 401
    assert error_message(response) == "Access token is expired"
    assert inst.events(record.id, "failed_use") == ["failed_use"]


def test_a_revoked_token_is_refused(inst: Instance) -> None:
    token, record = inst.create()
    assert inst.get(token).status_code == 200
    inst.state.store.revoke(record.id, "service", actor="test", reason="leaked", now=inst.clock())
    inst.state.forget(record.id)
    response = inst.get(token)
    assert response.status_code == 401
    assert error_message(response) == "Access token is revoked"


# -- revocation across instances ------------------------------------------


@pytest.mark.parametrize("bound", [None, 2])
def test_revocation_reaches_other_instances_within_the_bound(
    make_instance: MakeInstance, bound: int | None
) -> None:
    clock = FakeClock()
    config = None if bound is None else {"service": {"revocationCheckSeconds": bound}}
    a = make_instance(clock=clock, access_tokens=config)
    b = make_instance(clock=clock, access_tokens=config)
    window = 5.0 if bound is None else float(bound)
    assert a.state.settings.revocation_check == window
    assert b.state.settings.revocation_check == window

    token, record = a.create()
    assert a.get(token).status_code == 200
    assert b.get(token).status_code == 200  # B caches its verification
    a.state.store.revoke(record.id, "service", actor="test", reason=None, now=clock())
    a.state.forget(record.id)

    assert a.get(token).status_code == 401  # the revoking instance: at once
    clock.advance(window - 0.1)
    assert b.get(token).status_code == 200  # the documented bound, not sooner
    clock.advance(0.1)
    response = b.get(token)
    assert response.status_code == 401
    assert error_message(response) == "Access token is revoked"


# -- rotation --------------------------------------------------------------


def test_the_old_secret_works_until_the_grace_ends(inst: Instance) -> None:
    old, record = inst.create()
    assert inst.get(old).status_code == 200
    new = generate_token("service")
    now = inst.clock()
    inst.state.store.rotate(
        record.id,
        "service",
        digest=new.digest,
        token_prefix=new.display_prefix,
        expires_at=now + 90 * DAY,
        grace_until=now + 60,
        now=now,
    )
    inst.state.forget(record.id)
    assert inst.get(new.value).status_code == 200
    for _ in range(3):  # re-verified each time (past the cache), audited once
        assert inst.get(old).status_code == 200
        inst.clock.advance(10)
    assert inst.events(record.id, "old_secret_used") == ["old_secret_used"]
    inst.clock.advance(31)  # past the grace
    response = inst.get(old)
    assert response.status_code == 401
    assert error_message(response) == "Access token was rotated"
    assert inst.get(new.value).status_code == 200


def test_rotation_without_grace_refuses_the_old_secret_at_once(inst: Instance) -> None:
    old, record = inst.create()
    assert inst.get(old).status_code == 200
    new = generate_token("service")
    now = inst.clock()
    inst.state.store.rotate(
        record.id,
        "service",
        digest=new.digest,
        token_prefix=new.display_prefix,
        expires_at=now + DAY,
        grace_until=None,
        now=now,
    )
    inst.state.forget(record.id)
    assert inst.get(old).status_code == 401
    assert inst.get(new.value).status_code == 200


# -- bookkeeping -----------------------------------------------------------


def test_last_used_is_written_at_most_once_per_interval(make_instance: MakeInstance) -> None:
    inst = make_instance(access_tokens={"service": {"lastUsedIntervalSeconds": 100}})
    token, record = inst.create()
    with statements(inst.engine) as seen:
        assert inst.get(token, ip="10.9.8.7").status_code == 200
        inst.settle()
    assert len(updates_of_tokens(seen)) == 1
    stored = inst.state.store.get(record.id, "service")
    assert stored is not None
    assert stored.last_used_at == inst.clock()
    assert stored.last_used_ip == "10.9.8.7"
    first_use = inst.clock()

    with statements(inst.engine) as seen:
        for _ in range(12):  # past the verification cache each time, within the interval
            inst.clock.advance(6)
            assert inst.get(token, ip="10.1.1.1").status_code == 200
        inst.settle()
    assert updates_of_tokens(seen) == []
    assert len(seen) == 12  # one lookup per request, nothing else
    stored = inst.state.store.get(record.id, "service")
    assert stored is not None and stored.last_used_at == first_use

    inst.clock.advance(100)
    with statements(inst.engine) as seen:
        assert inst.get(token, ip="10.2.2.2").status_code == 200
        inst.settle()
    assert len(updates_of_tokens(seen)) == 1
    stored = inst.state.store.get(record.id, "service")
    assert stored is not None
    assert stored.last_used_at == inst.clock()
    assert stored.last_used_ip == "10.2.2.2"


def test_failed_uses_of_a_known_prefix_are_audited_once_per_interval(inst: Instance) -> None:
    token, record = inst.create()
    forged = forge_same_prefix(token)
    assert parse(forged) == "service" and forged != token
    assert forged[:DISPLAY_PREFIX_LENGTH] == token[:DISPLAY_PREFIX_LENGTH]
    for _ in range(5):
        response = inst.get(forged)
        assert response.status_code == 401
        assert error_message(response) == "Invalid access token"
    inst.settle()
    events = inst.state.store.events(record.id)
    failed = [e for e in events if e.event == "failed_use"]
    assert len(failed) == 1
    assert failed[0].metadata == {"reason": "unknown secret", "ip": "10.0.0.7"}
    assert token not in str(events) and forged not in str(events)

    inst.clock.advance(inst.state.settings.last_used_interval)
    assert inst.get(forged).status_code == 401
    assert inst.events(record.id, "failed_use") == ["failed_use", "failed_use"]
    assert inst.get(token).status_code == 200  # the real token is unaffected


def test_a_database_failure_is_a_503_and_recovers(inst: Instance) -> None:
    token, _ = inst.create()
    name = TOKENS.name
    with inst.engine.begin() as connection:
        connection.execute(sa.text(f"ALTER TABLE {name} RENAME TO {name}_away"))
    try:
        response = inst.get(token)
        assert response.status_code == 503
        assert response.get_json()["error"]["name"] == "ServiceUnavailableError"
        assert "sqlite" not in error_message(response).lower()
    finally:
        with inst.engine.begin() as connection:
            connection.execute(sa.text(f"ALTER TABLE {name}_away RENAME TO {name}"))
    assert inst.get(token).status_code == 200


def test_an_unreachable_database_is_a_503() -> None:
    engine = sa.create_engine(CLOSED_URL, connect_args={"connect_timeout": 2})
    try:
        app = Flask(__name__)
        app.config["BACKSTAGE_CONFIG"] = {"backend": {"baseUrl": "http://127.0.0.1:7007"}}
        BackstageAuth(app, clock=FakeClock())
        AccessTokens(app, store=SqlAccessTokenStore(engine), register_blueprint=False)
        app.register_blueprint(plugin("catalog"))
        response = app.test_client().get(
            "/api/catalog/whoami",
            headers={"Authorization": f"Bearer {generate_token('service').value}"},
        )
        assert response.status_code == 503
        assert response.get_json()["error"]["name"] == "ServiceUnavailableError"
        assert PASSWORD not in response.get_data(as_text=True)
        assert "127.0.0.1" not in response.get_data(as_text=True)
    finally:
        engine.dispose()


# -- concurrency -----------------------------------------------------------


def race(count: int, work: t.Callable[[], object]) -> list[object]:
    """Run ``work`` in ``count`` threads released together; results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[object] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            outcome: object = work()
        except Exception as exc:
            outcome = exc
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def count_events(inst: Instance, event: str) -> int:
    with inst.engine.connect() as connection:
        return int(
            connection.execute(
                sa.select(sa.func.count()).select_from(EVENTS).where(EVENTS.c.event == event)
            ).scalar_one()
        )


def check_concurrency(inst: Instance) -> None:
    # Through the service: its audit events write the audit table.
    service = inst.state.service

    def create() -> Issued:
        with inst.app.app_context():
            return service.create(
                CLI,
                "service",
                name="same-name",
                description="",
                owner_ref=TEAM_A,
                scopes=["catalog:read"],
                expires_at=inst.clock() + DAY,
            )

    results = race(8, create)
    successes = [r for r in results if isinstance(r, Issued)]
    conflicts = [r for r in results if isinstance(r, ConflictError)]
    assert len(successes) == 1, results
    assert len(conflicts) == 7, results
    assert count_events(inst, "created") == 1

    record = successes[0].record

    def revoke() -> TokenRecord:
        with inst.app.app_context():
            return service.revoke(CLI, "service", record.id)

    results = race(8, revoke)
    revoked = [r for r in results if isinstance(r, TokenRecord)]
    assert len(revoked) == 1, results
    assert all(isinstance(r, ConflictError) for r in results if r not in revoked), results
    assert count_events(inst, "revoked") == 1
    # The name is free again once revoked.
    inst.create("same-name")


def test_concurrent_creates_and_revokes_on_sqlite(inst: Instance) -> None:
    check_concurrency(inst)


def test_concurrent_creates_and_revokes_on_postgresql(pg_instance: Instance) -> None:
    check_concurrency(pg_instance)


# -- CLI -------------------------------------------------------------------


def test_the_cli_creates_lists_rotates_and_revokes(inst: Instance) -> None:
    inst.app.cli.add_command(tokens_group)
    runner = inst.app.test_cli_runner()
    created = runner.invoke(
        args=[
            "tokens",
            "create",
            "--name",
            "ci",
            "--group",
            "team-a",
            "--scope",
            "catalog:read",
            "--expires-in-days",
            "30",
        ]
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert parse(token) == "service"
    assert token not in created.stderr
    token_id = created.stderr.split()[1]
    response = inst.get(token)
    assert response.status_code == 200
    assert response.get_json()["principal"]["subject"] == f"access-token:{TEAM_A}:ci"
    record = inst.state.store.get(token_id, "service")
    assert record is not None
    assert record.expires_at == inst.clock() + 30 * DAY
    assert record.created_by == "cli"

    listed = runner.invoke(args=["tokens", "list", "--group", "team-a", "--status", "active"])
    assert listed.exit_code == 0, listed.output
    assert token_id in listed.stdout and "ci" in listed.stdout
    assert token[:DISPLAY_PREFIX_LENGTH] in listed.stdout
    assert token not in listed.output
    assert token[DISPLAY_PREFIX_LENGTH:] not in listed.output

    inst.clock.advance(1)
    rotated = runner.invoke(args=["tokens", "rotate", token_id, "--grace-seconds", "60"])
    assert rotated.exit_code == 0, rotated.output
    new = rotated.stdout.strip()
    assert parse(new) == "service" and new != token
    assert inst.get(new).status_code == 200
    assert inst.get(token).status_code == 200  # within the grace
    record = inst.state.store.get(token_id, "service")
    assert record is not None and record.expires_at == inst.clock() + 90 * DAY  # the default
    inst.clock.advance(61)
    assert inst.get(token).status_code == 401

    revoked = runner.invoke(args=["tokens", "revoke", token_id, "--reason", "done"])
    assert revoked.exit_code == 0, revoked.output
    assert inst.get(new).status_code == 401  # at once on this instance
    events = inst.state.store.events(token_id)
    assert [(e.event, e.actor) for e in events if e.actor == "cli"] == [
        ("revoked", "cli"),
        ("rotated", "cli"),
        ("created", "cli"),
    ]
    assert runner.invoke(args=["tokens", "list", "--status", "active"]).stdout.count("\n") == 1

    again = runner.invoke(args=["tokens", "revoke", token_id])
    assert again.exit_code == 1 and "already revoked" in again.output
    missing = runner.invoke(args=["tokens", "rotate", "no-such-id"])
    assert missing.exit_code == 1 and "No service token" in missing.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "Bad_Name", "--scope", "catalog:read"], "name must be 1-100 characters"),
        (["--name", "x" * 101, "--scope", "catalog:read"], "name must be 1-100 characters"),
        (["--name", "ok", "--scope", "nope:read"], "unknown scope(s) 'nope:read'"),
        (["--name", "ok", "--scope", "catalog:read", "--expires-in-days", "366"], "1 and 365"),
        (["--name", "ok", "--scope", "catalog:read", "--expires-in-days", "0"], "1 and 365"),
        (["--name", "ok", "--scope", "catalog:read", "--group", "Not A Group"], "--group"),
        (["--name", "ok", "--scope", "catalog:read", "--description", "d" * 501], "500"),
        (["--name", "ok"], "--scope"),
    ],
)
def test_the_cli_validates_like_the_api(inst: Instance, args: list[str], message: str) -> None:
    inst.app.cli.add_command(tokens_group)
    if "--group" not in args:
        args = ["--group", "team-a", *args]
    result = inst.app.test_cli_runner().invoke(args=["tokens", "create", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert inst.state.store.list_tokens("service", now=inst.clock())[1] == 0


def test_the_cli_needs_access_tokens(make_instance: MakeInstance) -> None:
    inst = make_instance(register=False)
    inst.app.cli.add_command(tokens_group)
    result = inst.app.test_cli_runner().invoke(args=["tokens", "list"])
    assert result.exit_code == 1
    assert "AccessTokens is not registered" in result.output
