"""Concurrent changes of access tokens lose nothing (issue 13).

Each race is forced, not hoped for: :class:`InterleavingStore` runs the other
request to its end between the read a change is decided on and its write, or
a listener holds one transaction open inside its write while another runs.
Every test runs on a SQLite file and on PostgreSQL (skipped when unreachable).
The last test sends real concurrent requests through HTTP.
"""

from __future__ import annotations

import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

from flask_backstage_auth.access_tokens.audit import AuditTable
from flask_backstage_auth.access_tokens.extension import AccessTokens
from flask_backstage_auth.access_tokens.format import DISPLAY_PREFIX_LENGTH, hash_token
from flask_backstage_auth.access_tokens.scopes import ScopeCatalogue
from flask_backstage_auth.access_tokens.service import CLI, Caller, Issued, TokenService
from flask_backstage_auth.access_tokens.settings import DAY, AccessTokenSettings
from flask_backstage_auth.access_tokens.store import (
    EVENTS,
    OWNERS,
    TOKENS,
    ChangedConcurrently,
    SqlAccessTokenStore,
    TokenRecord,
)
from flask_backstage_auth.access_tokens.usage import UsageRecorder
from flask_backstage_auth.audit import RootAuditor
from flask_backstage_auth.credentials import Credentials, UserPrincipal
from flask_backstage_auth.db.cli import alembic_config, upgrade_database
from flask_backstage_auth.db.storage import StorageUnavailable
from flask_backstage_auth.errors import ConflictError, InputError
from flask_backstage_auth.permissions import AllowAllPolicy, PermissionsService
from tests.access_token_app import SELF_SCOPE, bearer, build, user_token
from tests.conftest import LiveServer, _pg_url_in

NOW = 1_800_000_000.0
TEAM = "group:default/team-a"
ALICE = "user:default/alice"
AS_ALICE = Caller(Credentials(UserPrincipal(ALICE), token="alice-user-token"))
ALL = ("catalog:read", "catalog:write", "techdocs:read", "scaffolder:read")
#: How long a test waits for something it expects (never for what it forbids).
WAIT = 10.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class InterleavingStore(SqlAccessTokenStore):
    """A store whose next :meth:`get` runs another request after the read.

    The service decides a change on what ``get`` returns; the other request
    then commits before that change is written: the interleaving of two
    requests on two instances, every time.
    """

    between: t.Callable[[], object] | None = None

    def get(self, token_id: str, kind: t.Any) -> TokenRecord | None:
        record = super().get(token_id, kind)
        between, self.between = self.between, None
        if between is not None:
            between()
        return record


@pytest.fixture(params=["sqlite-file", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> t.Iterator[Engine]:
    """A migrated database; engines made on its URL are other instances."""
    if request.param == "sqlite-file":
        url: str | sa.engine.URL = f"sqlite:///{tmp_path / 'tokens.db'}"
    else:
        url = _pg_url_in(
            request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_schema")
        )
    engine = sa.create_engine(url)
    upgrade_database(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def make_service(
    engine: Engine,
    *,
    clock: Clock | None = None,
    store: SqlAccessTokenStore | None = None,
    forgotten: list[str] | None = None,
) -> TokenService:
    clock = clock or Clock()
    store = store or InterleavingStore(engine)
    # As AccessTokens wires it: the plugin's auditor, whose events write the audit table.
    auditor = RootAuditor(clock=clock)
    auditor.add_sink(AuditTable(UsageRecorder(store, mode="inline")))
    return TokenService(
        store,
        ScopeCatalogue(),
        AccessTokenSettings(),
        PermissionsService(enabled=True, policy=AllowAllPolicy()),
        clock=clock,
        forget=(forgotten if forgotten is not None else []).append,
        auditor=auditor.for_plugin("access-tokens"),
    )


def create(service: TokenService, name: str = "ci", scopes: t.Sequence[str] = ALL) -> Issued:
    return service.create(
        CLI,
        "service",
        name=name,
        description="",
        owner_ref=TEAM,
        scopes=list(scopes),
        expires_at=service.now() + 30 * DAY,
    )


def interleave(service: TokenService, other: t.Callable[[], object]) -> None:
    """Run ``other`` between the next read of ``service``'s store and its write."""
    store = service.store
    assert isinstance(store, InterleavingStore)
    store.between = other


def events(service: TokenService, token_id: str) -> list[str]:
    return [event.event for event in service.store.events(token_id)]


def works(service: TokenService, secret: str) -> bool:
    """Whether ``secret`` authenticates now (the authenticator's own lookup)."""
    match, _ = service.store.find_by_digest(hash_token(secret), secret[:DISPLAY_PREFIX_LENGTH])
    return (
        match is not None and match.record.is_usable(service.now()) and match.works(service.now())
    )


def scopes_of(service: TokenService, token_id: str) -> tuple[str, ...]:
    record = service.store.get(token_id, "service")
    assert record is not None
    return record.scopes


# -- narrowing ---------------------------------------------------------------


def test_two_narrowing_patches_never_put_a_removed_scope_back(database: Engine) -> None:
    service, other = make_service(database), make_service(database)
    token_id = create(service).record.id
    keeps_write = ["catalog:read", "catalog:write", "scaffolder:read"]  # drops techdocs:read
    keeps_techdocs = ["catalog:read", "techdocs:read", "scaffolder:read"]  # drops catalog:write
    interleave(service, lambda: other.update(CLI, "service", token_id, scopes=keeps_techdocs))
    with pytest.raises(ConflictError) as raised:
        service.update(CLI, "service", token_id, scopes=keeps_write)
    assert raised.value.code == 409
    assert "no longer held: 'catalog:write'" in raised.value.description
    assert scopes_of(service, token_id) == tuple(keeps_techdocs)  # catalog:write stays removed
    assert events(service, token_id) == ["updated", "created"]


def test_a_narrowing_that_still_holds_applies_on_top_of_the_other(database: Engine) -> None:
    service, other = make_service(database), make_service(database)
    token_id = create(service).record.id
    interleave(service, lambda: other.update(CLI, "service", token_id, scopes=list(ALL[:3])))
    updated = service.update(CLI, "service", token_id, scopes=list(ALL[:2]))
    assert updated.scopes == ALL[:2]
    assert updated.version == 3
    assert events(service, token_id) == ["updated", "updated", "created"]


def test_a_description_and_a_narrowing_both_land(database: Engine) -> None:
    service, other = make_service(database), make_service(database)
    token_id = create(service).record.id
    interleave(service, lambda: other.update(CLI, "service", token_id, scopes=["catalog:read"]))
    updated = service.update(CLI, "service", token_id, description="the CI pipeline")
    assert (updated.description, updated.scopes) == ("the CI pipeline", ("catalog:read",))


def test_a_rename_and_a_narrowing_both_land_and_forget_the_cache(database: Engine) -> None:
    forgotten: list[str] = []
    service = make_service(database, forgotten=forgotten)
    other = make_service(database)
    token_id = create(service).record.id
    interleave(service, lambda: other.update(CLI, "service", token_id, scopes=["catalog:read"]))
    updated = service.update(CLI, "service", token_id, name="ci-renamed")
    assert (updated.name, updated.scopes) == ("ci-renamed", ("catalog:read",))
    assert forgotten == [token_id]  # its subject names it: cached verifications go
    assert events(service, token_id) == ["updated", "updated", "created"]


def test_a_scope_never_held_is_still_a_400(database: Engine) -> None:
    service, other = make_service(database), make_service(database)
    token_id = create(service, scopes=["catalog:read"]).record.id
    interleave(service, lambda: other.update(CLI, "service", token_id, description="x"))
    with pytest.raises(InputError):
        service.update(CLI, "service", token_id, scopes=["catalog:read", "catalog:write"])


def test_a_patch_racing_a_revocation_is_a_409_not_a_404(database: Engine) -> None:
    service, other = make_service(database), make_service(database)
    token_id = create(service).record.id
    interleave(service, lambda: other.revoke(CLI, "service", token_id))
    with pytest.raises(ConflictError) as raised:
        service.update(CLI, "service", token_id, scopes=["catalog:read"])
    assert raised.value.code == 409
    assert raised.value.description == f"Token '{token_id}' is revoked"
    assert scopes_of(service, token_id) == ALL
    assert events(service, token_id) == ["revoked", "created"]


# -- rotation ----------------------------------------------------------------


@pytest.mark.parametrize("grace", [0, 60])
def test_of_two_rotations_the_first_wins_and_the_second_is_a_409(
    database: Engine, grace: int
) -> None:
    clock = Clock()
    forgotten: list[str] = []
    service = make_service(database, clock=clock, forgotten=forgotten)
    other = make_service(database, clock=clock)
    issued = create(service)
    token_id = issued.record.id
    won: list[Issued] = []
    interleave(
        service,
        lambda: won.append(
            other.rotate(CLI, "service", token_id, grace_seconds=grace, expires_at=NOW + DAY)
        ),
    )
    with pytest.raises(ConflictError) as raised:
        service.rotate(CLI, "service", token_id, grace_seconds=grace, expires_at=NOW + 2 * DAY)
    assert raised.value.code == 409
    assert "rotated by another request" in raised.value.description
    assert forgotten == []  # the loser changed nothing
    [first] = won
    assert works(service, first.secret)
    record = service.store.get(token_id, "service")
    assert record is not None and record.expires_at == NOW + DAY  # the winner's expiry
    assert record.token_prefix == first.secret[:DISPLAY_PREFIX_LENGTH]
    assert works(service, issued.secret) is bool(grace)  # the original: in the grace only
    clock.now += grace + 1
    assert not works(service, issued.secret)
    assert works(service, first.secret)
    assert events(service, token_id) == ["rotated", "created"]


def test_a_rotation_racing_a_revocation_is_not_applied(database: Engine) -> None:
    service, other = make_service(database), make_service(database)
    issued = create(service)
    token_id = issued.record.id
    interleave(service, lambda: other.revoke(CLI, "service", token_id, reason="left"))
    with pytest.raises(ConflictError) as raised:
        service.rotate(CLI, "service", token_id, grace_seconds=60, expires_at=NOW + DAY)
    assert raised.value.description == f"Token '{token_id}' is revoked and cannot be rotated"
    record = service.store.get(token_id, "service")
    assert record is not None and record.revoked_at is not None
    assert record.rotated_at is None and record.token_prefix == issued.record.token_prefix
    assert not works(service, issued.secret)
    assert events(service, token_id) == ["revoked", "created"]


def test_a_revocation_racing_a_rotation_kills_both_secrets(database: Engine) -> None:
    service, other = make_service(database), make_service(database)
    issued = create(service)
    token_id = issued.record.id
    rotated: list[Issued] = []
    interleave(
        service,
        lambda: rotated.append(
            other.rotate(CLI, "service", token_id, grace_seconds=60, expires_at=NOW + DAY)
        ),
    )
    service.revoke(CLI, "service", token_id)
    assert not works(service, rotated[0].secret)
    assert not works(service, issued.secret)  # the grace ends with the revocation
    assert events(service, token_id) == ["revoked", "rotated", "created"]


def test_a_rotation_racing_a_patch_rotates_the_patched_token(database: Engine) -> None:
    service, other = make_service(database), make_service(database)
    token_id = create(service).record.id
    interleave(service, lambda: other.update(CLI, "service", token_id, scopes=["catalog:read"]))
    rotated = service.rotate(CLI, "service", token_id, expires_at=NOW + DAY)
    assert works(service, rotated.secret)
    assert rotated.record.scopes == ("catalog:read",)
    assert events(service, token_id) == ["rotated", "updated", "created"]


class EverChangingStore(InterleavingStore):
    """Another change always comes first (a token under a storm of changes)."""

    def update(self, token_id: str, kind: t.Any, **kwargs: t.Any) -> TokenRecord:
        raise ChangedConcurrently(t.cast(TokenRecord, self.get(token_id, kind)))

    def rotate(self, token_id: str, kind: t.Any, **kwargs: t.Any) -> TokenRecord:
        raise ChangedConcurrently(t.cast(TokenRecord, self.get(token_id, kind)))


def test_a_change_gives_up_after_three_attempts(database: Engine) -> None:
    service = make_service(database, store=EverChangingStore(database))
    token_id = create(service).record.id
    for change in (
        lambda: service.update(CLI, "service", token_id, description="x"),
        lambda: service.rotate(CLI, "service", token_id, expires_at=NOW + DAY),
    ):
        with pytest.raises(ConflictError) as raised:
            change()
        assert raised.value.description == f"Token '{token_id}' keeps changing; try again"
    assert events(service, token_id) == ["created"]


# -- the cap on personal tokens ---------------------------------------------


def pause_inside_the_insert(engine: Engine, thread: str) -> tuple[threading.Event, threading.Event]:
    """Hold ``thread``'s transaction open just after its token insert.

    :returns: ``(inside, release)``: set when it is held, set to let it commit.
    """
    inside, release = threading.Event(), threading.Event()

    def after(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if threading.current_thread().name == thread and statement.startswith(
            f"INSERT INTO {TOKENS.name} "
        ):
            inside.set()
            assert release.wait(WAIT)

    sa.event.listen(engine, "after_cursor_execute", after)
    return inside, release


def create_personal(service: TokenService, name: str) -> Issued:
    return service.create(
        AS_ALICE,
        "personal",
        name=name,
        description="",
        owner_ref=ALICE,
        scopes=["catalog:read"],
        expires_at=NOW + DAY,
    )


def test_the_personal_cap_holds_when_the_last_two_creates_race(database: Engine) -> None:
    service = make_service(database)
    other = make_service(sa.create_engine(database.url))
    limit = service.settings.personal_max_per_user
    for number in range(limit - 1):
        create_personal(service, f"t{number}")
    inside, release = pause_inside_the_insert(database, "first")
    outcomes: dict[str, object] = {}

    def run(name: str, on: TokenService) -> None:
        try:
            outcomes[name] = create_personal(on, name)
        except ConflictError as exc:
            outcomes[name] = exc

    first = threading.Thread(target=run, args=("first", service), name="first")
    first.start()
    assert inside.wait(WAIT)  # the first holds the owner's lock, its insert not committed
    second = threading.Thread(target=run, args=("second", other), name="second")
    second.start()
    second.join(0.5)
    assert second.is_alive()  # waits for the owner's lock, does not count 19
    release.set()
    first.join(WAIT)
    second.join(WAIT)
    assert isinstance(outcomes["first"], Issued)
    assert isinstance(outcomes["second"], ConflictError)
    assert str(limit) in outcomes["second"].description
    assert service.store.count_usable("personal", ALICE, now=NOW) == limit
    other.store._engine().dispose()


def test_a_revoked_or_expired_token_frees_a_place(database: Engine) -> None:
    clock = Clock()
    service = make_service(database, clock=clock)
    limit = service.settings.personal_max_per_user
    ids = [create_personal(service, f"t{number}").record.id for number in range(limit)]
    with pytest.raises(ConflictError):
        create_personal(service, "one-more")
    service.revoke(AS_ALICE, "personal", ids[0], owner=ALICE)
    create_personal(service, "one-more")
    with pytest.raises(ConflictError):
        create_personal(service, "and-another")
    assert service.create(  # service tokens have no cap
        CLI,
        "service",
        name="ci",
        description="",
        owner_ref=TEAM,
        scopes=["catalog:read"],
        expires_at=NOW + DAY,
    )
    with database.connect() as connection:
        locks = connection.execute(sa.select(OWNERS.c.kind, OWNERS.c.owner_ref)).all()
    assert [tuple(row) for row in locks] == [("personal", ALICE)]


# -- bounded waits on PostgreSQL ----------------------------------------------


@pytest.fixture
def pg_engine(postgres_url: str, pg_schema: str) -> t.Iterator[Engine]:
    engine = sa.create_engine(_pg_url_in(postgres_url, pg_schema))
    upgrade_database(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def test_a_held_row_lock_is_a_503_after_the_lock_timeout(pg_engine: Engine) -> None:
    store = SqlAccessTokenStore(pg_engine, lock_timeout=0.2)
    service = make_service(pg_engine, store=store)
    issued = create(service)
    token_id = issued.record.id
    with pg_engine.connect() as holder:
        with holder.begin():
            holder.execute(sa.select(TOKENS.c.id).where(TOKENS.c.id == token_id).with_for_update())
            for change in (
                lambda: service.rotate(CLI, "service", token_id, expires_at=NOW + DAY),
                lambda: service.update(CLI, "service", token_id, description="x"),
                lambda: service.revoke(CLI, "service", token_id),
            ):
                with pytest.raises(StorageUnavailable) as raised:
                    change()
                assert raised.value.code == 503
                assert "OperationalError" in raised.value.description
    assert works(service, issued.secret)  # nothing changed
    assert events(service, token_id) == ["created"]


def test_a_held_owner_lock_is_a_503_after_the_lock_timeout(pg_engine: Engine) -> None:
    store = SqlAccessTokenStore(pg_engine, lock_timeout=0.2)
    service = make_service(pg_engine, store=store)
    create_personal(service, "first")
    with pg_engine.connect() as holder:
        with holder.begin():
            holder.execute(sa.select(OWNERS).with_for_update())
            with pytest.raises(StorageUnavailable):
                create_personal(service, "second")
    assert service.store.count_usable("personal", ALICE, now=NOW) == 1


# -- the audit trail in commit order ------------------------------------------


def test_events_sort_in_commit_order_whatever_the_clocks_say(database: Engine) -> None:
    # Two instances: this one's clock is behind, and its change commits last.
    behind = make_service(database, clock=Clock(NOW - 60))
    ahead = make_service(database, clock=Clock(NOW))
    token_id = create(behind).record.id
    interleave(
        behind,
        lambda: ahead.rotate(CLI, "service", token_id, grace_seconds=0, expires_at=NOW + DAY),
    )
    behind.update(CLI, "service", token_id, description="after the rotation")
    trail = behind.store.events(token_id)
    assert [event.event for event in trail] == ["updated", "rotated", "created"]
    assert [event.seq for event in trail] == [3, 2, 1]
    assert trail[0].occurred_at < trail[1].occurred_at  # the clocks disagree; the order does not


# -- the migration -------------------------------------------------------------


def test_the_migration_upgrades_a_database_with_tokens(database: Engine) -> None:
    with database.begin() as connection:
        command.downgrade(alembic_config(connection), "backstage_auth_0002")
    columns = {c["name"] for c in sa.inspect(database).get_columns(TOKENS.name)}
    assert "version" not in columns
    old = sa.table(TOKENS.name, *(sa.column(c.name) for c in TOKENS.columns if c.name != "version"))
    old_events = sa.table(
        EVENTS.name, *(sa.column(c.name) for c in EVENTS.columns if c.name != "seq")
    )
    moment = "2027-01-01 00:00:00"
    with database.begin() as connection:
        for number, revoked in ((1, moment), (2, None)):
            connection.execute(
                old.insert().values(
                    id=f"id-{number}",
                    kind="service",
                    name="ci",  # a revoked name is free again: the partial index survives
                    description="",
                    token_hash=f"{number:064x}",
                    token_prefix="bsat_000000",
                    owner_ref=TEAM,
                    scopes='["catalog:read"]',
                    created_by="cli",
                    created_at=moment,
                    expires_at="2099-01-01 00:00:00",
                    revoked_at=revoked,
                )
            )
            connection.execute(
                old_events.insert().values(
                    id=f"event-{number}",
                    token_id=f"id-{number}",
                    event="created",
                    actor="cli",
                    metadata="{}",
                    occurred_at=moment,
                )
            )
    upgrade_database(database)
    service = make_service(database, clock=Clock(1_900_000_000.0))
    record = service.store.get("id-2", "service")
    assert record is not None and record.version == 1
    updated = service.update(CLI, "service", "id-2", scopes=["catalog:read"])
    assert updated.version == 2
    assert [(e.event, e.seq) for e in service.store.events("id-2")] == [
        ("updated", 2),
        ("created", 0),
    ]
    with database.begin() as connection:  # and back: the data stays
        command.downgrade(alembic_config(connection), "backstage_auth_0002")
    assert OWNERS.name not in sa.inspect(database).get_table_names()
    with database.connect() as connection:
        names = connection.execute(sa.select(old.c.name).order_by(old.c.id)).scalars().all()
    assert names == ["ci", "ci"]
    with pytest.raises(sa.exc.IntegrityError), database.begin() as connection:
        connection.execute(  # two unrevoked tokens of one name: still refused
            sa.update(old).where(old.c.id == "id-1").values(revoked_at=None)
        )


# -- the real thing, through HTTP -----------------------------------------------


@pytest.fixture
def live(postgres_url: str, pg_schema: str) -> t.Iterator[tuple[str, t.Any]]:
    url = _pg_url_in(postgres_url, pg_schema).render_as_string(hide_password=False)
    app = build(database_uri=url)
    try:
        with LiveServer(app) as server:
            yield f"{server.url}/api/access-tokens", app
    finally:
        AccessTokens.state(app).usage.close()
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()


def test_concurrent_requests_through_http_keep_the_invariants(
    live: tuple[str, t.Any],
) -> None:
    base, app = live
    owner = bearer(user_token(app))
    session = requests.Session()
    scopes = [
        "catalog:read",
        "catalog:write",
        "techdocs:read",
        "scaffolder:read",
        "scaffolder:execute",
        SELF_SCOPE.id,
    ]
    created = session.post(
        f"{base}/service/",
        json={"name": "ci", "groupEntityRef": TEAM, "scopes": scopes},
        headers=owner,
        timeout=WAIT,
    )
    assert created.status_code == 201, created.text
    token_id, original = created.json()["token"]["id"], created.json()["rawToken"]

    def call(method: str, path: str, body: dict[str, t.Any]) -> requests.Response:
        return requests.request(method, f"{base}{path}", json=body, headers=owner, timeout=WAIT)

    with ThreadPoolExecutor(max_workers=8) as pool:
        # Each PATCH drops another scope (never catalog:read, used below): once one
        # lands, every other keeps a scope it removed, a 409 (or a 400 when it was
        # read after the change).
        drops = scopes[1:]
        patches = list(
            pool.map(
                lambda drop: call(
                    "PATCH", f"/service/{token_id}", {"scopes": [s for s in scopes if s != drop]}
                ),
                drops,
            )
        )
        codes = sorted(r.status_code for r in patches)
        assert codes[0] == 200 and set(codes[1:]) <= {400, 409} and len(codes) == len(drops)
        [landed] = [r.json()["scopes"] for r in patches if r.status_code == 200]
        current = call("GET", f"/service/{token_id}", {}).json()
        assert current["scopes"] == landed and len(landed) == len(scopes) - 1

        rotations = list(
            pool.map(lambda _: call("POST", f"/service/{token_id}/rotate", {}), range(8))
        )
        codes = sorted(r.status_code for r in rotations)
        assert codes.count(200) >= 1 and set(codes) <= {200, 409}
        # Rotations that found the token rotated are 409s; the last one to land holds.
        secrets = [r.json()["rawToken"] for r in rotations if r.status_code == 200]
        entities = [
            requests.get(
                f"{base.rsplit('/', 1)[0]}/catalog/entities", headers=bearer(s), timeout=WAIT
            ).status_code
            for s in [original, *secrets]
        ]
        assert entities.count(200) == 1  # exactly one secret works, the original not
        assert entities[0] == 401
        trail = call("GET", f"/service/{token_id}/audit", {}).json()["events"]
        assert [e["event"] for e in trail].count("rotated") == len(secrets)

        personal = list(
            pool.map(
                lambda number: call(
                    "POST", "/personal/", {"name": f"p{number}", "scopes": ["catalog:read"]}
                ),
                range(30),
            )
        )
        assert sorted(r.status_code for r in personal) == [201] * 20 + [409] * 10
        listed = call("GET", "/personal/?status=active&limit=100", {}).json()
        assert listed["total"] == 20
