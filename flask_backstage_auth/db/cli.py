"""``flask backstage-auth db ...``: the extension's tables, with or without Alembic.

The database is the app's Flask-SQLAlchemy one (``app.extensions["sqlalchemy"]``,
its default bind) when there is one, else ``BACKSTAGE_AUTH_DATABASE_URI``.
``upgrade``, ``downgrade`` and ``current`` run our Alembic branch
(``backstage_auth``) on its own, recorded in ``backstage_auth_alembic_version``;
``create`` makes the tables without Alembic.

Apps using Flask-Migrate may instead add
``flask_backstage_auth.db.storage.versions_path()`` to their
``version_locations`` and run ``flask db upgrade heads``; use one way or the
other for a given database, not both.
"""

from __future__ import annotations

import re
import typing as t
from contextlib import contextmanager

import click
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy.engine import Connection, Engine

from flask_backstage_auth.db.storage import (
    DATABASE_URI_KEY,
    VERSION_TABLE,
    create_tables,
    describe_database_error,
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
        engine = sa.create_engine(uri)
    except (sa.exc.ArgumentError, ValueError):
        raise click.ClickException(f"{DATABASE_URI_KEY} is not a valid database URL.") from None
    try:
        yield engine
    finally:
        engine.dispose()


_CREDENTIALS = re.compile(r"://[^/@\s]*@")


def describe_cli_error(exc: sa.exc.SQLAlchemyError, password: str | None) -> str:
    """The error classes and the driver's first line, without credentials."""
    orig = getattr(exc, "orig", None)
    text = str(orig if isinstance(orig, BaseException) else exc).strip()
    line = text.splitlines()[0] if text else ""
    line = _CREDENTIALS.sub("://***@", line)
    if password:
        line = line.replace(password, "***")
    summary = f"Database error ({describe_database_error(exc)})"
    return f"{summary}: {line}" if line else summary


@contextmanager
def _connection(*, begin: bool) -> t.Iterator[Connection]:
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
        command.upgrade(alembic_config(connection), revision)


def _current_revisions(connection: Connection) -> tuple[str, ...]:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_heads()


def _echo_current(connection: Connection, config: Config) -> None:
    revisions = _current_revisions(connection)
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
    with _connection(begin=True) as connection:
        config = alembic_config(connection)
        command.upgrade(config, revision)
        _echo_current(connection, config)


@db_group.command("downgrade")
@click.argument("revision")
def downgrade_command(revision: str) -> None:
    """Downgrade our tables to REVISION ('base' drops them)."""
    with _connection(begin=True) as connection:
        config = alembic_config(connection)
        command.downgrade(config, revision)
        _echo_current(connection, config)


@db_group.command("current")
def current_command() -> None:
    """Show the applied revision of our branch."""
    with _connection(begin=False) as connection:
        _echo_current(connection, alembic_config(connection))


@db_group.command("create")
def create_command() -> None:
    """Create our tables without Alembic (those missing only)."""
    with _connection(begin=True) as connection:
        create_tables(connection)
    click.echo("Created (if missing): " + ", ".join(sorted(metadata.tables)))
