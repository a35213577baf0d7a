"""The SQL public key store, our Alembic branch and ``backstage-auth db`` commands.

Runs on SQLite (a file, and ``sqlite://`` in memory) and on PostgreSQL at
127.0.0.1:5432 (database ``test``, user ``postgres``; another URL with
``BACKSTAGE_AUTH_TEST_POSTGRES_URL``), each test in a schema of its own. The
PostgreSQL cases are skipped only when the server cannot be reached.
"""

from __future__ import annotations

import datetime as dt
import json
import typing as t
from pathlib import Path

import jwt
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool, StaticPool
from werkzeug.wrappers import Response as WerkzeugResponse

from flask_backstage_auth.auth.plugin.keys import (
    KEY_EXPIRATION_MARGIN_FACTOR,
    PublicKeyStore,
    RotatingKeySource,
)
from flask_backstage_auth.db.cli import alembic_config, db_group, describe_cli_error
from flask_backstage_auth.db.storage import (
    BRANCH_LABEL,
    DATABASE_URI_KEY,
    VERSION_TABLE,
    Database,
    SqlPublicKeyStore,
    StorageUnavailable,
    alembic_include_name,
    as_engine_provider,
    create_tables,
    metadata,
    migrations_path,
    public_keys_table,
)
from flask_backstage_auth.errors import ServiceUnavailableError
from tests.conftest import _pg_url_in

#: Nothing listens on port 1; the password must never show up in an error.
PASSWORD = "pw-7c1d9e0f-not-for-errors"
CLOSED_URL = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/test"
TABLE = public_keys_table.name
INDEX = "ix_backstage_auth_public_keys_expires_at"
HEAD = "backstage_auth_0005"

EngineFactory = t.Callable[[], Engine]


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgresql"])
def make_engine(request: pytest.FixtureRequest, tmp_path: Path) -> t.Iterator[EngineFactory]:
    """Engines on one database: each call is another "app instance" (SQLite in
    memory has a single connection, so it hands out the same engine)."""
    engines: list[Engine] = []
    shared: Engine | None = None

    def make() -> Engine:
        nonlocal shared
        if request.param == "sqlite-memory":
            if shared is None:
                shared = sa.create_engine(
                    "sqlite://",
                    poolclass=StaticPool,
                    connect_args={"check_same_thread": False},
                )
                engines.append(shared)
            return shared
        if request.param == "sqlite-file":
            engine = sa.create_engine(f"sqlite:///{tmp_path / 'keys.db'}")
        else:
            engine = sa.create_engine(_pg_url_in(postgres_url, schema))
        engines.append(engine)
        return engine

    if request.param == "postgresql":
        postgres_url = request.getfixturevalue("postgres_url")
        schema = request.getfixturevalue("pg_schema")
    try:
        yield make
    finally:
        for engine in engines:
            engine.dispose()


@pytest.fixture
def engine(make_engine: EngineFactory) -> Engine:
    """An engine with our tables."""
    engine = make_engine()
    create_tables(engine)
    return engine


@pytest.fixture(params=["sqlite-file", "postgresql"])
def migration_engine(request: pytest.FixtureRequest, tmp_path: Path) -> t.Iterator[Engine]:
    """An empty database for migrations."""
    if request.param == "sqlite-file":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'migrations.db'}")
    else:
        url = request.getfixturevalue("postgres_url")
        engine = sa.create_engine(_pg_url_in(url, request.getfixturevalue("pg_schema")))
    try:
        yield engine
    finally:
        engine.dispose()


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sample_jwk(kid: str) -> dict[str, t.Any]:
    return {"kty": "EC", "crv": "P-256", "x": "x-" + kid, "y": "y-" + kid, "kid": kid}


def table_names(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


# -- the store ---------------------------------------------------------------------------


def test_store_round_trip(engine: Engine) -> None:
    store: PublicKeyStore = SqlPublicKeyStore(engine)
    assert store.list_keys() == []
    store.add_key("kid-b", sample_jwk("kid-b"), 1_700_000_200.5)
    store.add_key("kid-a", sample_jwk("kid-a"), 1_700_000_100.25)
    keys = store.list_keys()
    assert [(k.kid, k.jwk, k.expires_at) for k in keys] == [
        ("kid-a", sample_jwk("kid-a"), 1_700_000_100.25),
        ("kid-b", sample_jwk("kid-b"), 1_700_000_200.5),
    ]
    # The same kid again replaces the key, as the in-memory store does.
    store.add_key("kid-a", {**sample_jwk("kid-a"), "x": "other"}, 1_700_000_300.0)
    keys = store.list_keys()
    assert [(k.kid, k.jwk["x"], k.expires_at) for k in keys] == [
        ("kid-b", "x-kid-b", 1_700_000_200.5),
        ("kid-a", "other", 1_700_000_300.0),
    ]
    store.remove_keys([])
    store.remove_keys(["kid-a", "unknown", "kid-a"])
    assert [k.kid for k in store.list_keys()] == ["kid-b"]
    store.remove_keys(["kid-b"])
    assert store.list_keys() == []


def test_store_removes_many_keys(engine: Engine) -> None:
    store = SqlPublicKeyStore(engine)
    kids = [f"kid-{i:04d}" for i in range(1200)]
    with engine.begin() as connection:
        connection.execute(
            public_keys_table.insert(),
            [
                {
                    "kid": k,
                    "key": "{}",
                    "expires_at": dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc),
                }
                for k in kids
            ],
        )
    store.remove_keys(kids[:1150])
    assert [k.kid for k in store.list_keys()] == kids[1150:]


def test_expires_at_is_stored_as_utc(engine: Engine) -> None:
    SqlPublicKeyStore(engine).add_key("kid", sample_jwk("kid"), 1_700_000_000.0)
    with engine.connect() as connection:
        stored, text = connection.execute(
            sa.select(public_keys_table.c.expires_at, public_keys_table.c.key)
        ).one()
    expected = dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.timezone.utc)
    if engine.dialect.name == "sqlite":  # SQLite keeps no zone: the value is UTC
        assert stored == expected.replace(tzinfo=None)
    else:
        assert stored == expected and stored.utcoffset() is not None
    assert json.loads(text) == sample_jwk("kid")


def test_rows_that_are_not_jwks_are_skipped(engine: Engine) -> None:
    store = SqlPublicKeyStore(engine)
    store.add_key("good", sample_jwk("good"), 2_000_000_000.0)
    with engine.begin() as connection:
        for kid, text in [("broken", "{not json"), ("list", "[1, 2]")]:
            connection.execute(
                public_keys_table.insert().values(
                    kid=kid, key=text, expires_at=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
                )
            )
    assert [k.kid for k in store.list_keys()] == ["good"]


def test_two_instances_share_one_store(make_engine: EngineFactory) -> None:
    first_engine, second_engine = make_engine(), make_engine()
    create_tables(first_engine)
    first = RotatingKeySource(SqlPublicKeyStore(first_engine))
    second = RotatingKeySource(SqlPublicKeyStore(second_engine))
    first_key = first.get_signing_key()
    second_key = second.get_signing_key()
    assert first_key.kid != second_key.kid
    for source in (first, second):
        assert {k["kid"] for k in source.list_public_keys()} == {first_key.kid, second_key.kid}

    # A token signed by one instance verifies with the key the other lists.
    token = jwt.encode(
        {"sub": "plugin:catalog"},
        first_key.private_key,
        algorithm="ES256",
        headers={"kid": first_key.kid},
    )
    jwk = next(k for k in second.list_public_keys() if k["kid"] == first_key.kid)
    assert jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"]) == {"sub": "plugin:catalog"}


def test_rotation_keeps_old_keys_listed_until_they_expire(engine: Engine) -> None:
    clock = FakeClock(1_700_000_000.0)
    duration = 60.0
    store = SqlPublicKeyStore(engine)
    source = RotatingKeySource(store, key_duration=duration, clock=clock)
    old = source.get_signing_key()
    clock.now += duration - 1
    assert source.get_signing_key() == old
    clock.now += 1
    new = source.get_signing_key()
    assert new.kid != old.kid
    assert {k["kid"] for k in source.list_public_keys()} == {old.kid, new.kid}

    # Still listed at exactly three durations after it was made...
    clock.now = 1_700_000_000.0 + KEY_EXPIRATION_MARGIN_FACTOR * duration
    assert {k["kid"] for k in source.list_public_keys()} == {old.kid, new.kid}
    # ...then dropped from the list and pruned from the table.
    clock.now += 0.5
    assert [k["kid"] for k in source.list_public_keys()] == [new.kid]
    assert [k.kid for k in store.list_keys()] == [new.kid]


# -- failures ------------------------------------------------------------------------------


def _assert_unavailable_without_secrets(error: StorageUnavailable) -> None:
    assert isinstance(error, ServiceUnavailableError)
    assert isinstance(error.__cause__, sa.exc.SQLAlchemyError)
    response = t.cast(WerkzeugResponse, error.get_response())
    assert response.status_code == 503
    body = json.loads(response.get_data())
    assert body["error"]["name"] == "ServiceUnavailableError"
    assert body["response"] == {"statusCode": 503}
    for text in (str(error.description), response.get_data(as_text=True)):
        assert "key store database is unavailable" in text
        for secret in (PASSWORD, "127.0.0.1", "postgres", ":1/", "SELECT", "INSERT"):
            assert secret not in text


def test_unreachable_database_raises_storage_unavailable() -> None:
    engine = sa.create_engine(CLOSED_URL, poolclass=NullPool)
    try:
        store = SqlPublicKeyStore(engine)
        with pytest.raises(StorageUnavailable) as listing:
            store.list_keys()
        _assert_unavailable_without_secrets(listing.value)
        assert "OperationalError" in str(listing.value.description)

        source = RotatingKeySource(store)
        with pytest.raises(StorageUnavailable) as signing:
            source.get_signing_key()  # the public key must be stored before signing
        _assert_unavailable_without_secrets(signing.value)
        with pytest.raises(StorageUnavailable):
            source.list_public_keys()  # fails closed
        with pytest.raises(StorageUnavailable):
            store.remove_keys(["kid"])
    finally:
        engine.dispose()


def test_storage_unavailable_is_a_503_in_a_view() -> None:
    engine = sa.create_engine(CLOSED_URL, poolclass=NullPool)
    app = Flask("storage-test")
    store = SqlPublicKeyStore(engine)

    @app.get("/keys")
    def keys() -> dict[str, t.Any]:
        return {"keys": [k.jwk for k in store.list_keys()]}

    try:
        response = app.test_client().get("/keys")
    finally:
        engine.dispose()
    assert response.status_code == 503
    assert response.json is not None
    assert response.json["error"]["name"] == "ServiceUnavailableError"
    assert response.json["request"] == {"method": "GET", "url": "/keys"}
    assert PASSWORD not in response.get_data(as_text=True)


def test_missing_table_raises_then_recovers(make_engine: EngineFactory) -> None:
    engine = make_engine()
    store = SqlPublicKeyStore(make_engine())
    source = RotatingKeySource(store)
    with pytest.raises(StorageUnavailable) as error:
        source.get_signing_key()
    _assert_unavailable_without_secrets(error.value)

    create_tables(engine)
    key = source.get_signing_key()
    assert [k["kid"] for k in source.list_public_keys()] == [key.kid]

    metadata.drop_all(engine)
    with pytest.raises(StorageUnavailable):
        source.list_public_keys()
    create_tables(engine)
    assert source.list_public_keys() == []  # the table came back empty
    store.add_key("again", sample_jwk("again"), 2_000_000_000.0)
    assert [k["kid"] for k in source.list_public_keys()] == ["again"]


def test_other_errors_are_not_wrapped(engine: Engine) -> None:
    def broken() -> Engine:
        raise RuntimeError("no engine")

    with pytest.raises(RuntimeError):
        SqlPublicKeyStore(broken).list_keys()


# -- Database ----------------------------------------------------------------------------


@pytest.fixture
def sqla_app(tmp_path: Path) -> t.Iterator[tuple[Flask, SQLAlchemy]]:
    """A Flask-SQLAlchemy app on an SQLite file, with a second bind."""
    app = Flask("storage-sqla")
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'app.db'}"
    app.config["SQLALCHEMY_BINDS"] = {"keys": f"sqlite:///{tmp_path / 'keys.db'}"}
    db = SQLAlchemy(app)
    app.cli.add_command(db_group)
    try:
        yield app, db
    finally:
        with app.app_context():
            for bound in db.engines.values():
                bound.dispose()


def test_database_from_an_engine(engine: Engine) -> None:
    database = Database(engine)
    assert database.engine is engine
    assert database() is engine
    assert as_engine_provider(engine)() is engine
    assert as_engine_provider(database) is database
    with pytest.raises(TypeError):
        Database(engine, bind_key="keys")
    with pytest.raises(TypeError):
        Database("sqlite://")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        as_engine_provider("sqlite://")  # type: ignore[arg-type]


def test_database_from_flask_sqlalchemy(sqla_app: tuple[Flask, SQLAlchemy]) -> None:
    app, db = sqla_app
    with pytest.raises(RuntimeError):  # db.engine needs an app context
        _ = Database(db).engine
    with app.app_context():
        assert Database(db).engine is db.engine
        assert Database(db, bind_key="keys").engine is db.engines["keys"]
        default_engine = db.engine
        keys_engine = db.engines["keys"]
    # With the app given, no context is needed.
    assert Database(db, app=app).engine is default_engine
    with app.app_context():
        assert Database(db, app=app, bind_key="keys").engine is keys_engine

    store = SqlPublicKeyStore(Database(db, app=app, bind_key="keys"))
    create_tables(keys_engine)
    store.add_key("kid", sample_jwk("kid"), 2_000_000_000.0)
    assert TABLE in table_names(keys_engine)
    assert TABLE not in table_names(default_engine)
    with app.app_context():
        assert [k.kid for k in SqlPublicKeyStore(Database(db, bind_key="keys")).list_keys()] == [
            "kid"
        ]
        with pytest.raises(StorageUnavailable):  # the default bind has no table
            SqlPublicKeyStore(db).list_keys()


# -- migrations --------------------------------------------------------------------------


def test_migrations_are_shipped() -> None:
    root = Path(migrations_path())
    assert (root / "env.py").is_file()
    assert (root / "script.py.mako").is_file()
    assert (root / "versions" / "0001_public_keys.py").is_file()
    scripts = ScriptDirectory.from_config(alembic_config())
    assert scripts.get_heads() == [HEAD]
    # one linear branch, starting at our base
    revisions = list(scripts.iterate_revisions(HEAD, "base"))
    base = revisions[-1]
    assert base.revision == "backstage_auth_0001"
    assert base.down_revision is None and base.branch_labels == {BRANCH_LABEL}
    assert all(r.down_revision == n.revision for r, n in zip(revisions, revisions[1:]))
    for revision in scripts.walk_revisions():
        assert revision.revision.startswith("backstage_auth_")


def _migrate(engine: Engine, action: t.Callable[[Config], None]) -> None:
    with engine.begin() as connection:
        action(alembic_config(connection))


def _schema_differences(engine: Engine) -> list[t.Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return t.cast(t.List[t.Any], compare_metadata(context, metadata))


def _applied(engine: Engine, table: str = VERSION_TABLE) -> set[str]:
    with engine.connect() as connection:
        return {row[0] for row in connection.execute(sa.text(f"SELECT version_num FROM {table}"))}


def test_migrations_match_the_metadata(migration_engine: Engine) -> None:
    engine = migration_engine
    _migrate(engine, lambda config: command.upgrade(config, "heads"))
    assert {TABLE, VERSION_TABLE} <= table_names(engine)
    assert "alembic_version" not in table_names(engine)
    assert _applied(engine) == {HEAD}
    assert _schema_differences(engine) == []
    indexes = {i["name"]: i for i in sa.inspect(engine).get_indexes(TABLE)}
    assert indexes[INDEX]["column_names"] == ["expires_at"]

    _migrate(engine, lambda config: command.downgrade(config, "base"))
    assert TABLE not in table_names(engine)
    assert _applied(engine) == set()

    _migrate(engine, lambda config: command.upgrade(config, f"{BRANCH_LABEL}@head"))
    assert _applied(engine) == {HEAD}
    assert _schema_differences(engine) == []
    store = SqlPublicKeyStore(engine)
    store.add_key("kid", sample_jwk("kid"), 2_000_000_000.0)
    assert [k.kid for k in store.list_keys()] == ["kid"]


def test_migrations_run_from_a_url(tmp_path: Path) -> None:
    config = alembic_config()
    url = f"sqlite:///{tmp_path / 'url.db'}"
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "heads")
    engine = sa.create_engine(url)
    try:
        assert _schema_differences(engine) == []
    finally:
        engine.dispose()


def test_alembic_include_name() -> None:
    assert not alembic_include_name(TABLE, "table", {})
    assert not alembic_include_name(VERSION_TABLE, "table", {})
    assert alembic_include_name("app_users", "table", {})
    assert alembic_include_name(INDEX, "index", {"table_name": TABLE})


# -- CLI ---------------------------------------------------------------------------------


def test_cli_with_flask_sqlalchemy(sqla_app: tuple[Flask, SQLAlchemy]) -> None:
    app, db = sqla_app
    runner = app.test_cli_runner()
    with app.app_context():
        engine = db.engine

    result = runner.invoke(args=["db", "current"])
    assert result.exit_code == 0, result.output
    assert "base" in result.output

    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"{HEAD} (head)" in result.output
    assert _applied(engine) == {HEAD}
    assert _schema_differences(engine) == []

    result = runner.invoke(args=["db", "current"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{HEAD} (head)"

    result = runner.invoke(args=["db", "downgrade", "base"])
    assert result.exit_code == 0, result.output
    assert TABLE not in table_names(engine)
    assert "base" in runner.invoke(args=["db", "current"]).output

    result = runner.invoke(args=["db", "downgrade", "nonexistent"])
    assert result.exit_code == 1
    assert "nonexistent" in result.output

    result = runner.invoke(args=["db", "create"])
    assert result.exit_code == 0, result.output
    assert TABLE in result.output
    assert TABLE in table_names(engine)
    assert _schema_differences(engine) == []
    assert runner.invoke(args=["db", "create"]).exit_code == 0  # idempotent

    # Tables made without Alembic are not recorded: upgrading them fails cleanly.
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 1
    assert "Database error (OperationalError" in result.output
    assert "already exists" in result.output


def test_cli_with_a_database_uri(tmp_path: Path) -> None:
    app = Flask("storage-uri")
    url = f"sqlite:///{tmp_path / 'uri.db'}"
    app.config[DATABASE_URI_KEY] = url
    app.cli.add_command(db_group)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["db", "upgrade", "heads"])
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(url)
    try:
        assert _applied(engine) == {HEAD}
        assert _schema_differences(engine) == []
    finally:
        engine.dispose()


def test_cli_with_postgresql(postgres_url: str, pg_schema: str) -> None:
    app = Flask("storage-pg")
    app.config[DATABASE_URI_KEY] = _pg_url_in(postgres_url, pg_schema).render_as_string(
        hide_password=False
    )
    app.cli.add_command(db_group)
    runner = app.test_cli_runner()
    for args, expected in [
        (["db", "upgrade"], f"{HEAD} (head)"),
        (["db", "current"], f"{HEAD} (head)"),
        (["db", "downgrade", "base"], "base"),
        (["db", "create"], TABLE),
    ]:
        result = runner.invoke(args=args)
        assert result.exit_code == 0, result.output
        assert expected in result.output


def test_cli_without_a_database() -> None:
    app = Flask("storage-none")
    app.cli.add_command(db_group)
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 1
    assert DATABASE_URI_KEY in result.output

    app.config[DATABASE_URI_KEY] = "not a url"
    result = app.test_cli_runner().invoke(args=["db", "current"])
    assert result.exit_code == 1
    assert "not a valid database URL" in result.output


@pytest.mark.parametrize("command_args", [["upgrade"], ["current"], ["create"]])
def test_cli_unreachable_database_hides_the_password(command_args: list[str]) -> None:
    app = Flask("storage-closed")
    app.config[DATABASE_URI_KEY] = CLOSED_URL
    app.cli.add_command(db_group)
    result = app.test_cli_runner().invoke(args=["db", *command_args])
    assert result.exit_code == 1
    assert "Database error (OperationalError" in result.output
    assert PASSWORD not in result.output
    assert "Traceback" not in result.output


def test_cli_error_text_redacts_credentials() -> None:
    error = sa.exc.OperationalError(
        "SELECT 1", {}, Exception(f"bad dsn postgresql://user:{PASSWORD}@host/db\nmore")
    )
    text = describe_cli_error(error, PASSWORD)
    assert text == "Database error (OperationalError, Exception): bad dsn postgresql://***@host/db"
    assert describe_cli_error(sa.exc.OperationalError("SELECT 1", {}, Exception("x")), None) == (
        "Database error (OperationalError, Exception): x"
    )
