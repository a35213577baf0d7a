"""Migrations at start-up, for development and single-command deployments.

The production way is a release step that runs once before any instance
serves: ``flask backstage-auth db upgrade``. An app that would rather migrate
as it starts (as Backstage's plugins do) calls :func:`migrate_at_startup`,
which is safe with many instances and workers starting together and with a
database that is down:

* PostgreSQL: the upgrade runs in one transaction holding a transaction-level
  advisory lock (``pg_advisory_xact_lock``), waited for at most ``timeout``
  seconds (``lock_timeout``). A second migrator waits for the first to
  commit, then finds the schema at head and does nothing.
* SQLite: the upgrade runs in a ``BEGIN IMMEDIATE`` transaction (the write
  lock), waited for at most ``timeout`` seconds (``busy_timeout``).
* Whatever fails (the database is down, the lock is not had in time, a
  migration error), the failure is logged, without credentials, and the app
  starts anyway: what needs no database is served, and what needs the tables
  answers 503 until they exist. There is no retry in the background: the
  release step, or the next start, migrates.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection, Engine

from flask_backstage_auth.config.timeouts import DEFAULT_TIMEOUTS, DatabaseTimeouts
from flask_backstage_auth.db.cli import upgrade_connection
from flask_backstage_auth.db.guard import bounded_transaction, describe_failure

logger = logging.getLogger("flask_backstage_auth.db")

#: The advisory lock key of our migrations ("bsa_mig" in ASCII): one for every
#: app sharing the database, whatever its schema.
MIGRATION_LOCK_KEY = 0x6273615F6D6967


def _lock(connection: Connection, timeout: float) -> None:
    milliseconds = max(1, int(timeout * 1000))
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text(f"SET LOCAL lock_timeout = {milliseconds}"))
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
        )
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {milliseconds}")
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def migrate_at_startup(
    engine: Engine,
    *,
    timeout: float = 30.0,
    timeouts: DatabaseTimeouts = DEFAULT_TIMEOUTS,
    revision: str = "heads",
) -> bool:
    """Upgrade our tables under the migration lock; ``True`` if they are at ``revision``.

    :param timeout: seconds to wait for the lock, and the longest a migration
        statement may run.
    :param timeouts: the connect and pool bounds (``BACKSTAGE_AUTH_DB_*``).

    Never raises for a database failure: it is logged, and ``False`` returned.
    """
    bounds = DatabaseTimeouts(
        connect=timeouts.connect, statement=timeout, lock=timeout, pool=timeouts.pool
    )
    try:
        if engine.dialect.name == "sqlite":
            # pysqlite opens its transactions itself: BEGIN IMMEDIATE is ours to send.
            with engine.connect() as connection:
                _lock(connection, timeout)
                try:
                    upgrade_connection(connection, revision)
                except BaseException:
                    connection.exec_driver_sql("ROLLBACK")
                    raise
                connection.exec_driver_sql("COMMIT")
        else:
            with bounded_transaction(engine, bounds) as connection:
                _lock(connection, timeout)
                upgrade_connection(connection, revision)
    except (sa.exc.SQLAlchemyError, CommandError) as exc:
        logger.warning(
            "Could not migrate the database at start-up (%s); serving what needs no"
            " database. Run `flask backstage-auth db upgrade` (the release step) once"
            " it is reachable",
            describe_failure(exc) if isinstance(exc, sa.exc.SQLAlchemyError) else exc,
        )
        return False
    return True
