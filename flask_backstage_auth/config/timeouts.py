"""The bounds of database waits (``BACKSTAGE_AUTH_DB_*_TIMEOUT``), free of SQLAlchemy.

Applied by :mod:`flask_backstage_auth.db.guard`.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

#: The settings each bound is read from (``app.config``).
SETTING_KEYS = {
    "connect": "BACKSTAGE_AUTH_DB_CONNECT_TIMEOUT",
    "statement": "BACKSTAGE_AUTH_DB_STATEMENT_TIMEOUT",
    "lock": "BACKSTAGE_AUTH_DB_LOCK_TIMEOUT",
    "pool": "BACKSTAGE_AUTH_DB_POOL_TIMEOUT",
}


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

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> DatabaseTimeouts:
        """The bounds set in ``config`` (an ``app.config``), the defaults for the others.

        Unvalidated: ``BackstageAuth`` checks them (for an app that needs the
        bounds before it, such as for ``SQLALCHEMY_ENGINE_OPTIONS``).
        """
        values = {field: config[key] for field, key in SETTING_KEYS.items() if key in config}
        return cls(**{field: float(value) for field, value in values.items()})


DEFAULT_TIMEOUTS = DatabaseTimeouts()
