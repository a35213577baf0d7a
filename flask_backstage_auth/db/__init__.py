"""Persistence: the tables, the database key store and user-info store, the Alembic branch and
``flask backstage-auth db``. Imported only when a database is used.

:func:`upgrade_database` applies the library's migrations to an engine (what
``flask backstage-auth db upgrade`` does).
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.db.cli import upgrade_database

__all__ = ["upgrade_database"]


def __getattr__(name: str) -> t.Any:
    # Alembic is imported only by those who migrate.
    if name == "upgrade_database":
        from flask_backstage_auth.db.cli import upgrade_database

        return upgrade_database
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
