"""The auth backend's user info in ``backstage_auth_user_info``, Backstage's ``user_info``."""

from __future__ import annotations

import datetime as dt
import json
import logging
import typing as t
from contextlib import contextmanager

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import Connection, Engine

from flask_backstage_auth.db.storage import (
    EngineProvider,
    as_engine_provider,
    store_transaction,
    user_info_table,
)

logger = logging.getLogger(__name__)


class SqlUserInfoStore:
    """A :class:`~flask_backstage_auth.auth_backend.user_info_store.UserInfoStore` in a table.

    :param engine_provider: a :class:`~flask_backstage_auth.db.storage.Database`,
        a Flask-SQLAlchemy ``db``, an ``Engine`` or a callable returning one.

    Database errors raise :class:`~flask_backstage_auth.db.storage.StorageUnavailable` (503).
    """

    table = user_info_table

    def __init__(self, engine_provider: SQLAlchemy | Engine | EngineProvider) -> None:
        self._engine = as_engine_provider(engine_provider)

    @contextmanager
    def _transaction(self, action: str) -> t.Iterator[Connection]:
        failure = f"Could not {action}: the user info database is unavailable"
        with store_transaction(self._engine, failure) as connection:
            yield connection

    def add_user_info(self, user_info: t.Mapping[str, t.Any]) -> None:
        sub = user_info["claims"]["sub"]
        now = dt.datetime.now(dt.timezone.utc)
        text = json.dumps(dict(user_info), separators=(",", ":"))
        table = self.table
        update = (
            table.update()
            .where(table.c.user_entity_ref == sub)
            .values(user_info=text, updated_at=now)
        )
        with self._transaction("store user info") as connection:
            if connection.execute(update).rowcount:
                return
            try:
                with connection.begin_nested():
                    connection.execute(
                        table.insert().values(
                            user_entity_ref=sub, user_info=text, created_at=now, updated_at=now
                        )
                    )
            except sa.exc.IntegrityError:  # another instance inserted it meanwhile
                connection.execute(update)

    def get_user_info(self, user_entity_ref: str) -> dict[str, t.Any] | None:
        table = self.table
        query = sa.select(table.c.user_info).where(table.c.user_entity_ref == user_entity_ref)
        with self._transaction("read user info") as connection:
            text = connection.execute(query).scalar()
        if text is None:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            logger.warning("Ignoring the stored user info of %s: not JSON", user_entity_ref)
            return None
        return value
