"""The bounds of database waits (``BACKSTAGE_AUTH_DB_*_TIMEOUT``), free of SQLAlchemy.

Applied by :mod:`flask_backstage_auth.db.guard`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatabaseTimeouts:
    """The bounds of one database access, in seconds."""

    #: Opening a connection (libpq ``connect_timeout``, whole seconds).
    connect: float = 3.0
    #: One statement (PostgreSQL ``statement_timeout``); a transaction of the
    #: library is cut ``statement`` + 1 s after it began when the server
    #: stops answering.
    statement: float = 5.0
    #: Waiting for a row or advisory lock (PostgreSQL ``lock_timeout``;
    #: SQLite: the busy timeout).
    lock: float = 2.0
    #: Waiting for a free connection of the pool.
    pool: float = 3.0


DEFAULT_TIMEOUTS = DatabaseTimeouts()
