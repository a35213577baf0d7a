"""Alembic environment of flask-backstage-auth's own branch (``backstage_auth``).

Run by ``flask backstage-auth db ...``, which passes an open connection in
``config.attributes["connection"]``; a plain ``sqlalchemy.url`` main option
works too. The revisions are recorded in ``backstage_auth_alembic_version``,
never in the app's ``alembic_version``.

An app using Flask-Migrate runs it too, through ``flask db upgrade`` once
``flask_backstage_auth.db.flask_migrate.init_flask_migrate(app)`` is called;
our revisions never join the app's own history.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

from flask_backstage_auth.db.storage import VERSION_TABLE, metadata

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "No database: pass a connection in config.attributes['connection']"
            " or set sqlalchemy.url"
        )
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            _configure(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
