"""``flask backstage-auth db ...``: the extension's tables, with or without Alembic.

The database is the app's Flask-SQLAlchemy one (``app.extensions["sqlalchemy"]``,
its default bind) when there is one, else ``BACKSTAGE_AUTH_DATABASE_URI``.
``upgrade``, ``downgrade`` and ``current`` run our Alembic branch
(``backstage_auth``) on its own, recorded in ``backstage_auth_alembic_version``;
``create`` makes the tables without Alembic.

Apps using Flask-Migrate call
:func:`flask_backstage_auth.db.flask_migrate.init_flask_migrate`, after which
``flask db upgrade`` runs the same branch, in the same version table.

A database migrated by the old recipe (our revisions in the app's
``alembic_version``) is taken over by the next upgrade or downgrade: the rows
move to ``backstage_auth_alembic_version`` (:func:`adopt_app_version_rows`).
"""

from __future__ import annotations

import typing as t
from contextlib import contextmanager

import click
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util.exc import CommandError
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy.engine import Connection, Engine

from flask_backstage_auth.db.guard import (
    DEFAULT_TIMEOUTS,
    DatabaseTimeouts,
    database_error_line,
    describe_database_error,
    engine_options,
)
from flask_backstage_auth.db.storage import (
    APP_VERSION_TABLE,
    DATABASE_URI_KEY,
    REVISION_PREFIX,
    VERSION_TABLE,
    create_tables,
    metadata,
    migrations_path,
)

db_group = AppGroup("db", help="The extension's tables (Alembic branch 'backstage_auth').")


@contextmanager
def app_engine() -> t.Iterator[Engine]:
    """The engine of the current app: Flask-SQLAlchemy's, else one made from the URI.

    An engine made here is disposed of on exit; Flask-SQLAlchemy's is left alone.
    """
    extension = current_app.extensions.get("sqlalchemy")
    if extension is not None:
        yield t.cast(Engine, extension.engine)
        return
    uri = current_app.config.get(DATABASE_URI_KEY)
    if not uri:
        raise click.ClickException(
            f"No database: the app has no Flask-SQLAlchemy extension and {DATABASE_URI_KEY}"
            " is not set."
        )
    try:
        engine = sa.create_engine(uri, **engine_options(uri, app_timeouts()))
    except (sa.exc.ArgumentError, ValueError):
        raise click.ClickException(f"{DATABASE_URI_KEY} is not a valid database URL.") from None
    try:
        yield engine
    finally:
        engine.dispose()


def app_timeouts() -> DatabaseTimeouts:
    """The database bounds of the current app (``BACKSTAGE_AUTH_DB_*``), else the defaults."""
    state = current_app.extensions.get("backstage_auth")
    timeouts = getattr(getattr(state, "settings", None), "database_timeouts", None)
    return timeouts if isinstance(timeouts, DatabaseTimeouts) else DEFAULT_TIMEOUTS


def describe_cli_error(exc: sa.exc.SQLAlchemyError, password: str | None) -> str:
    """The error classes and the driver's first line, without credentials."""
    line = database_error_line(exc, password)
    summary = f"Database error ({describe_database_error(exc)})"
    return f"{summary}: {line}" if line else summary


@contextmanager
def app_connection(*, begin: bool) -> t.Iterator[Connection]:
    """A connection of the app's database (in a transaction with ``begin``).

    Database and Alembic errors become click errors, without credentials.
    """
    with app_engine() as engine:
        try:
            with engine.connect() as connection:
                if begin:
                    with connection.begin():
                        yield connection
                else:
                    yield connection
        except sa.exc.SQLAlchemyError as exc:
            raise click.ClickException(describe_cli_error(exc, engine.url.password)) from exc
        except CommandError as exc:
            raise click.ClickException(str(exc)) from exc


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for our branch alone, on ``connection``."""
    config = Config()
    config.set_main_option("script_location", migrations_path().replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_database(bind: Engine, revision: str = "heads") -> None:
    """Apply our migrations to ``bind`` (what ``flask backstage-auth db upgrade`` does).

    For apps that migrate at start-up, as Backstage's plugins do.
    """
    with bind.begin() as connection:
        upgrade_connection(connection, revision)


def upgrade_connection(connection: Connection, revision: str = "heads") -> Config:
    """Take over old version rows, then upgrade our branch on ``connection``.

    The caller owns the transaction. Returns the Alembic config used.
    """
    config = alembic_config(connection)
    adopt_app_version_rows(connection, config)
    command.upgrade(config, revision)
    return config


def _current_revisions(connection: Connection) -> tuple[str, ...]:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_heads()


def _app_version_table() -> sa.TableClause:
    return sa.table(APP_VERSION_TABLE, sa.column("version_num", sa.String))


def app_version_rows(connection: Connection) -> list[str]:
    """Our revisions recorded in the app's ``alembic_version`` (by the old recipe)."""
    if not sa.inspect(connection).has_table(APP_VERSION_TABLE):
        return []
    table = _app_version_table()
    rows = connection.execute(sa.select(table.c.version_num)).scalars()
    return sorted(row for row in rows if row.startswith(REVISION_PREFIX))


def adopt_app_version_rows(connection: Connection, config: Config) -> tuple[str, ...]:
    """Move our revisions from the app's ``alembic_version`` to ours.

    The old Flask-Migrate recipe applied our branch from the app's
    ``version_locations``, recording it in ``alembic_version``; now that our
    revisions are no longer in the app's history, Alembic would not know those
    rows. Our version table is stamped with the furthest revision of the two
    tables, and the rows leave ``alembic_version`` (the app's own rows stay).
    Returns the revisions moved (none for a database migrated the current way).
    """
    moved = app_version_rows(connection)
    if not moved:
        return ()
    script = ScriptDirectory.from_config(config)
    candidates = set(moved) | set(_current_revisions(connection))
    ancestors: set[str] = set()
    try:
        for candidate in candidates:
            for ancestor in script.iterate_revisions(candidate, "base"):
                if ancestor.revision != candidate:
                    ancestors.add(ancestor.revision)
    except RevisionError as exc:
        raise CommandError(
            f"{APP_VERSION_TABLE} records a revision of the backstage_auth branch that this"
            f" version of flask-backstage-auth does not ship: {exc}"
        ) from exc
    command.stamp(config, sorted(candidates - ancestors), purge=True)
    table = _app_version_table()
    connection.execute(table.delete().where(table.c.version_num.in_(moved)))
    return tuple(moved)


def _echo_current(connection: Connection, config: Config) -> None:
    revisions = _current_revisions(connection)
    if not revisions and (old := app_version_rows(connection)):
        for revision in old:
            click.echo(
                f"{revision} (in {APP_VERSION_TABLE}; the next upgrade moves it to {VERSION_TABLE})"
            )
        return
    if not revisions:
        click.echo("base (no revision of the backstage_auth branch applied)")
        return
    heads = set(ScriptDirectory.from_config(config).get_heads())
    for revision in revisions:
        click.echo(f"{revision} (head)" if revision in heads else revision)


@db_group.command("upgrade")
@click.argument("revision", default="heads")
def upgrade_command(revision: str) -> None:
    """Upgrade our tables to REVISION (default: heads)."""
    with app_connection(begin=True) as connection:
        _echo_current(connection, upgrade_connection(connection, revision))


@db_group.command("downgrade")
@click.argument("revision")
def downgrade_command(revision: str) -> None:
    """Downgrade our tables to REVISION ('base' drops them)."""
    with app_connection(begin=True) as connection:
        config = alembic_config(connection)
        adopt_app_version_rows(connection, config)
        command.downgrade(config, revision)
        _echo_current(connection, config)


@db_group.command("current")
def current_command() -> None:
    """Show the applied revision of our branch."""
    with app_connection(begin=False) as connection:
        _echo_current(connection, alembic_config(connection))


@db_group.command("create")
def create_command() -> None:
    """Create our tables without Alembic (those missing only)."""
    with app_connection(begin=True) as connection:
        create_tables(connection)
    click.echo("Created (if missing): " + ", ".join(sorted(metadata.tables)))
