"""Our Alembic branch in a real Flask-Migrate app (``init_flask_migrate``).

``flask db init/migrate/upgrade`` run through the Flask CLI runner, beside
``flask backstage-auth db``, in both orders, on SQLite and PostgreSQL; and a
database migrated by the old recipe (our revisions in ``alembic_version``).
"""

from __future__ import annotations

import logging
import typing as t
from pathlib import Path

import flask_migrate
import flask_migrate.cli
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskCliRunner
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import Engine

from flask_backstage_auth.cli import cli as backstage_cli
from flask_backstage_auth.db.cli import upgrade_database
from flask_backstage_auth.db.flask_migrate import init_flask_migrate
from flask_backstage_auth.db.storage import APP_VERSION_TABLE, VERSION_TABLE, metadata
from tests.conftest import _pg_url_in

# Flask-Migrate's generated env.py tries Flask-SQLAlchemy 2's get_engine() first.
pytestmark = pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")

HEAD = "backstage_auth_0005"
OUR_TABLES = set(metadata.tables)


@pytest.fixture(autouse=True)
def _restore_logging() -> t.Iterator[None]:
    """Flask-Migrate's env.py runs ``fileConfig``, which disables every other logger."""
    manager = logging.Logger.manager
    loggers = {
        name: (lg.disabled, lg.level, list(lg.handlers), lg.propagate)
        for name, lg in manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    root = logging.getLogger()
    root_state = (root.level, list(root.handlers))
    yield
    for name, lg in list(manager.loggerDict.items()):
        if not isinstance(lg, logging.Logger):
            continue
        disabled, level, handlers, propagate = loggers.get(name, (False, logging.NOTSET, [], True))
        lg.disabled, lg.level, lg.handlers, lg.propagate = disabled, level, handlers, propagate
    root.level, root.handlers = root_state[0], root_state[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    url = _pg_url_in(request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_schema"))
    return url.render_as_string(hide_password=False)


class MigrateApp:
    """A Flask-Migrate app (a model ``widgets``), made anew like a fresh process."""

    def __init__(self, url: str, directory: Path, *, wire: bool = True, **migrate_kwargs: t.Any):
        self.db = SQLAlchemy()
        model = type(
            "Widget",
            (self.db.Model,),
            {
                "__tablename__": "widgets",
                "id": sa.Column(sa.Integer, primary_key=True),
                "name": sa.Column(sa.String(50)),
            },
        )
        self.model = model
        self.app = Flask("migrate_app")
        self.app.config["SQLALCHEMY_DATABASE_URI"] = url
        self.db.init_app(self.app)
        flask_migrate.Migrate(self.app, self.db, directory=str(directory), **migrate_kwargs)
        self.app.cli.add_command(backstage_cli)
        if wire:
            init_flask_migrate(self.app)
        self.runner: FlaskCliRunner = self.app.test_cli_runner()

    def run(self, *args: str) -> t.Any:
        return self.runner.invoke(args=list(args))

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return t.cast(str, result.output)

    def engine(self) -> Engine:
        with self.app.app_context():
            return t.cast(Engine, self.db.engine)

    def tables(self) -> set[str]:
        return set(sa.inspect(self.engine()).get_table_names())

    def versions(self, table: str) -> set[str]:
        with self.engine().connect() as connection:
            if not sa.inspect(connection).has_table(table):
                return set()
            return set(connection.execute(sa.text(f"SELECT version_num FROM {table}")).scalars())

    def dispose(self) -> None:
        with self.app.app_context():
            self.db.engine.dispose()


@pytest.fixture
def make_app(database_url: str, tmp_path: Path) -> t.Iterator[t.Callable[..., MigrateApp]]:
    apps: list[MigrateApp] = []

    def make(**kwargs: t.Any) -> MigrateApp:
        app = MigrateApp(database_url, tmp_path / "migrations", **kwargs)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.dispose()


def _revision_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "migrations" / "versions").glob("*.py"))


def test_flask_db_first_then_backstage_auth_db(
    make_app: t.Callable[..., MigrateApp], tmp_path: Path
) -> None:
    app = make_app()
    app.ok("db", "init")
    app.ok("db", "migrate", "-m", "widgets")
    [first] = _revision_files(tmp_path)
    text = first.read_text()
    assert "widgets" in text
    assert not any(name in text for name in OUR_TABLES | {VERSION_TABLE})

    app.ok("db", "upgrade")  # plain: one head, no "Multiple head revisions"
    assert {"widgets", APP_VERSION_TABLE, VERSION_TABLE} | OUR_TABLES <= app.tables()
    assert app.versions(VERSION_TABLE) == {HEAD}
    app_revisions = app.versions(APP_VERSION_TABLE)
    assert len(app_revisions) == 1 and not any(
        r.startswith("backstage_auth") for r in app_revisions
    )

    # The library's own command sees the same state: nothing to do.
    assert app.ok("backstage-auth", "db", "upgrade").strip() == f"{HEAD} (head)"
    assert app.ok("backstage-auth", "db", "current").strip() == f"{HEAD} (head)"
    assert app.versions(VERSION_TABLE) == {HEAD}

    # Autogenerate sees no change: our tables are not offered for dropping.
    app.ok("db", "migrate", "-m", "nothing")
    assert _revision_files(tmp_path) == [first]
    [app_revision] = app_revisions
    # Exits 1 on a revision it cannot locate (Alembic prints to the process's stdout).
    app.ok("db", "current")

    # A second process with the same migrations, and a new model column.
    again = make_app()
    again.ok("db", "upgrade")
    assert again.versions(VERSION_TABLE) == {HEAD}

    # downgrade is the app's only; ours stay.
    app.ok("db", "downgrade", "base")
    assert "widgets" not in app.tables()
    assert OUR_TABLES <= app.tables()
    assert app.versions(VERSION_TABLE) == {HEAD}


def test_backstage_auth_db_first_then_flask_db(
    make_app: t.Callable[..., MigrateApp], tmp_path: Path
) -> None:
    app = make_app()
    assert app.ok("backstage-auth", "db", "upgrade").strip() == f"{HEAD} (head)"
    app.ok("db", "init")
    app.ok("db", "migrate", "-m", "widgets")
    [first] = _revision_files(tmp_path)
    assert "drop_table" not in first.read_text().split("def downgrade")[0]
    app.ok("db", "upgrade")  # no "table already exists"
    assert {"widgets"} | OUR_TABLES <= app.tables()
    assert app.versions(VERSION_TABLE) == {HEAD}
    assert app.ok("backstage-auth", "db", "current").strip() == f"{HEAD} (head)"

    # Our branch down to base, then flask db upgrade brings it back.
    app.ok("backstage-auth", "db", "downgrade", "base")
    assert not OUR_TABLES & app.tables()
    app.ok("db", "upgrade")
    assert OUR_TABLES <= app.tables()
    assert app.versions(VERSION_TABLE) == {HEAD}


def test_without_the_call_the_group_is_flask_migrates_own(
    make_app: t.Callable[..., MigrateApp],
) -> None:
    wired = make_app()
    plain = make_app(wire=False)
    assert plain.app.cli.commands["db"] is flask_migrate.cli.db
    assert wired.app.cli.commands["db"] is not flask_migrate.cli.db
    group = wired.app.cli.commands["db"]
    init_flask_migrate(wired.app)  # a second call changes nothing
    assert wired.app.cli.commands["db"] is group
    assert "backstage_auth" in wired.ok("db", "upgrade", "--help")
    # Flask-Migrate's group, shared by every app, is untouched.
    assert "backstage_auth" not in plain.ok("db", "upgrade", "--help")


def test_needs_flask_migrate_on_the_app() -> None:
    with pytest.raises(RuntimeError, match=r"migrate\.init_app\(app, db\) first"):
        init_flask_migrate(Flask("bare"))


def test_the_apps_include_name_still_applies(
    make_app: t.Callable[..., MigrateApp], tmp_path: Path
) -> None:
    def include_name(name: str | None, type_: str, parent_names: t.Mapping[str, t.Any]) -> bool:
        return not (type_ == "table" and name == "legacy_stuff")

    app = make_app(include_name=include_name)
    with app.engine().begin() as connection:
        connection.execute(sa.text("CREATE TABLE legacy_stuff (id INTEGER PRIMARY KEY)"))
    app.ok("db", "init")
    app.ok("db", "upgrade")
    app.ok("db", "migrate", "-m", "widgets")
    [first] = _revision_files(tmp_path)
    upgrade_part = first.read_text().split("def downgrade")[0]
    assert "widgets" in upgrade_part
    assert "legacy_stuff" not in upgrade_part
    assert not any(name in upgrade_part for name in OUR_TABLES)


def test_upgrade_sql_prints_both(make_app: t.Callable[..., MigrateApp], tmp_path: Path) -> None:
    app = make_app()
    app.ok("db", "init")
    app.ok("db", "migrate", "-m", "widgets")
    output = app.ok("db", "upgrade", "--sql")
    assert "CREATE TABLE backstage_auth_public_keys" in output
    assert f"CREATE TABLE {VERSION_TABLE}" in output
    assert "CREATE TABLE widgets" in output
    assert output.index("backstage_auth_public_keys") < output.index("CREATE TABLE widgets")
    assert not OUR_TABLES & app.tables()  # offline: nothing ran


# -- databases migrated by the old recipe ------------------------------------------------


def _old_recipe_state(app: MigrateApp, revision: str, *, keep_ours: str | None = None) -> None:
    """Our branch applied to ``revision`` and recorded in the app's ``alembic_version``,
    as the old ``version_locations`` recipe left it."""
    engine = app.engine()
    upgrade_database(engine, revision)
    with engine.begin() as connection:
        if keep_ours is None:
            connection.execute(sa.text(f"DROP TABLE {VERSION_TABLE}"))
        else:
            connection.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '{keep_ours}'"))
        connection.execute(
            sa.text(f"INSERT INTO {APP_VERSION_TABLE} (version_num) VALUES ('{revision}')")
        )


@pytest.mark.parametrize("first", ["flask db upgrade", "flask backstage-auth db upgrade"])
def test_old_recipe_database_is_taken_over(
    make_app: t.Callable[..., MigrateApp],
    tmp_path: Path,
    first: str,
) -> None:
    app = make_app()
    app.ok("db", "init")
    app.ok("db", "migrate", "-m", "widgets")
    app.ok("db", "upgrade")
    [app_revision] = app.versions(APP_VERSION_TABLE)
    app.ok("backstage-auth", "db", "downgrade", "base")
    with app.engine().begin() as connection:
        connection.execute(sa.text(f"DROP TABLE {VERSION_TABLE}"))
    _old_recipe_state(app, HEAD)
    assert app.versions(APP_VERSION_TABLE) == {app_revision, HEAD}
    assert app.run("db", "current").exit_code == 1  # Alembic cannot locate our row

    # current is read-only, and says where the row is.
    current = app.ok("backstage-auth", "db", "current")
    assert f"{HEAD} (in {APP_VERSION_TABLE}" in current
    assert app.versions(APP_VERSION_TABLE) == {app_revision, HEAD}

    fresh = make_app()  # the app, now with init_flask_migrate
    if first == "flask db upgrade":
        fresh.ok("db", "upgrade")
    else:
        assert fresh.ok("backstage-auth", "db", "upgrade").strip() == f"{HEAD} (head)"
    assert fresh.versions(APP_VERSION_TABLE) == {app_revision}
    assert fresh.versions(VERSION_TABLE) == {HEAD}
    fresh.ok("db", "upgrade")
    fresh.ok("db", "current")  # exits 1 on a revision it cannot locate
    assert fresh.ok("backstage-auth", "db", "upgrade").strip() == f"{HEAD} (head)"


def test_old_recipe_at_an_older_revision_is_upgraded(
    make_app: t.Callable[..., MigrateApp],
) -> None:
    app = make_app()
    with app.engine().begin() as connection:
        connection.execute(
            sa.text(f"CREATE TABLE {APP_VERSION_TABLE} (version_num VARCHAR(32) PRIMARY KEY)")
        )
    _old_recipe_state(app, "backstage_auth_0001")
    assert "backstage_auth_access_tokens" not in app.tables()
    assert app.ok("backstage-auth", "db", "upgrade").strip() == f"{HEAD} (head)"
    assert OUR_TABLES <= app.tables()
    assert app.versions(APP_VERSION_TABLE) == set()
    assert app.versions(VERSION_TABLE) == {HEAD}


def test_the_furthest_of_both_tables_wins(make_app: t.Callable[..., MigrateApp]) -> None:
    """Both tables hold a row (the old recipe and our command both ran): no table twice."""
    app = make_app()
    with app.engine().begin() as connection:
        connection.execute(
            sa.text(f"CREATE TABLE {APP_VERSION_TABLE} (version_num VARCHAR(32) PRIMARY KEY)")
        )
    _old_recipe_state(app, HEAD, keep_ours="backstage_auth_0001")
    assert app.ok("backstage-auth", "db", "upgrade").strip() == f"{HEAD} (head)"
    assert app.versions(VERSION_TABLE) == {HEAD}
    assert app.versions(APP_VERSION_TABLE) == set()


def test_an_unknown_revision_in_alembic_version_is_refused(
    make_app: t.Callable[..., MigrateApp],
) -> None:
    app = make_app()
    with app.engine().begin() as connection:
        connection.execute(
            sa.text(f"CREATE TABLE {APP_VERSION_TABLE} (version_num VARCHAR(32) PRIMARY KEY)")
        )
        connection.execute(
            sa.text(f"INSERT INTO {APP_VERSION_TABLE} VALUES ('backstage_auth_9999')")
        )
    result = app.run("backstage-auth", "db", "upgrade")
    assert result.exit_code == 1
    assert "does not ship" in result.output and "backstage_auth_9999" in result.output
    assert app.versions(APP_VERSION_TABLE) == {"backstage_auth_9999"}
    assert not OUR_TABLES & app.tables()
