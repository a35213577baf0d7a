"""The extension's tables, and the public key store that lives in them.

The tables are SQLAlchemy Core definitions on a :data:`metadata` of their own,
with a naming convention so that constraint and index names are the same on
SQLite and PostgreSQL. Their schema is managed by the Alembic revisions shipped
in ``flask_backstage_auth/db/migrations`` (an independent branch labelled
``backstage_auth``, see :func:`migrations_path`), or created without Alembic by
:func:`create_tables`.

:class:`SqlPublicKeyStore` is the ``database`` plugin key store of Backstage
(its table is ``backstage_backend_public_keys__keys``; ours is
``backstage_auth_public_keys``): every app instance publishes the public half
of its signing key there, and lists everyone's keys from there.
:class:`SqlSigningKeyStore` is the same for the user tokens of the auth
backend, in ``backstage_auth_signing_keys`` (Backstage's ``signing_keys``).

A database that cannot be reached, or whose tables are missing, raises
:class:`StorageUnavailable`, a 503 whose message names neither the database
URL nor its credentials; the original error stays chained for the logs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import typing as t
from contextlib import contextmanager
from importlib import resources

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import Connection, Engine

from flask_backstage_auth.auth.plugin.keys import StoredPublicKey
from flask_backstage_auth.db.guard import (
    DEFAULT_TIMEOUTS,
    DatabaseTimeouts,
    bounded_transaction,
    describe_database_error,
)
from flask_backstage_auth.errors import ServiceUnavailableError

logger = logging.getLogger(__name__)

#: Constraint and index names, identical on every database.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Our tables only; never the app's ``db.metadata``.
metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def _key_table(name: str) -> sa.Table:
    """A table of published public keys: ``kid``, the JWK as JSON text, expiry."""
    return sa.Table(
        name,
        metadata,
        sa.Column("kid", sa.String(128), primary_key=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )


#: The public keys of every instance's rotating signing key.
public_keys_table = _key_table("backstage_auth_public_keys")

#: The public keys of the auth backend's user-token signing keys (Backstage's
#: ``signing_keys`` of the auth plugin): apart from the plugin keys, so that a
#: plugin key never verifies a user token.
signing_keys_table = _key_table("backstage_auth_signing_keys")

#: Long-lived access tokens (service and personal); only their digest is stored.
access_tokens_table = sa.Table(
    "backstage_auth_access_tokens",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("token_prefix", sa.String(16), nullable=False, index=True),
    # The owning group (service tokens) or user (personal tokens).
    sa.Column("owner_ref", sa.String(255), nullable=False, index=True),
    # The scopes, as a JSON list.
    sa.Column("scopes", sa.Text, nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_used_ip", sa.String(64), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True, index=True),
    sa.Column("revoked_by", sa.String(255), nullable=True),
    sa.Column("revoke_reason", sa.Text, nullable=True),
    # After a rotation, the old secret's digest works until previous_expires_at.
    sa.Column("previous_token_hash", sa.String(64), nullable=True),
    sa.Column("previous_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
    # Bumped by every change (create, rotate, update, revoke; not a use): the
    # compare-and-swap of a read-then-write, and the order of the token's events.
    sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("1")),
    # Partial: almost every row has no previous secret, and a full index on a
    # mostly-NULL column makes SQLite's planner prefer a table scan.
    sa.Index(
        "ix_backstage_auth_access_tokens_previous_token_hash",
        "previous_token_hash",
        sqlite_where=sa.text("previous_token_hash IS NOT NULL"),
        postgresql_where=sa.text("previous_token_hash IS NOT NULL"),
    ),
    # A name is unique among the owner's tokens that are not revoked.
    sa.Index(
        "uq_backstage_auth_access_tokens_active_name",
        "kind",
        "owner_ref",
        "name",
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    ),
)

#: The audit trail of access tokens; never holds a secret.
access_token_events_table = sa.Table(
    "backstage_auth_access_token_events",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "token_id",
        sa.String(36),
        sa.ForeignKey("backstage_auth_access_tokens.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("event", sa.String(50), nullable=False),
    sa.Column("actor", sa.String(255), nullable=True),
    # Event details, as a JSON object.
    sa.Column("metadata", sa.Text, nullable=True),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False, index=True),
    # The token's version when the event was written (inside the change's
    # transaction, after its row lock): events sort in commit order.
    sa.Column("seq", sa.Integer, nullable=False, server_default=sa.text("0")),
)

#: One row per owner with a cap on its tokens: a create locks it (an update
#: of ``tokens_created``) before counting, so concurrent creates are serialised.
access_token_owners_table = sa.Table(
    "backstage_auth_access_token_owners",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("owner_ref", sa.String(255), primary_key=True),
    sa.Column("tokens_created", sa.Integer, nullable=False, server_default=sa.text("0")),
)

#: What the auth backend knows of each user it signed in: Backstage's ``user_info``
#: table (``{"claims": {sub, ent, ...}}`` as JSON), served by ``/v1/userinfo``.
user_info_table = sa.Table(
    "backstage_auth_user_info",
    metadata,
    sa.Column("user_entity_ref", sa.String(255), primary_key=True),
    sa.Column("user_info", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

#: The Alembic branch label of our revisions.
BRANCH_LABEL = "backstage_auth"
#: The Alembic version table when our migrations run on their own (``flask
#: backstage-auth db ...``); never the app's ``alembic_version``.
VERSION_TABLE = "backstage_auth_alembic_version"
#: Every revision id of our branch starts with this.
REVISION_PREFIX = "backstage_auth_"
#: Alembic's default version table, the app's (Flask-Migrate's).
APP_VERSION_TABLE = "alembic_version"
#: The Flask config key naming a database when the app has no Flask-SQLAlchemy.
DATABASE_URI_KEY = "BACKSTAGE_AUTH_DATABASE_URI"

#: Something that returns the engine to use, called once per operation.
EngineProvider = t.Callable[[], Engine]

# Rows deleted per statement (SQLite allows 999 bound parameters in old versions).
_DELETE_CHUNK = 500


class StorageUnavailable(ServiceUnavailableError):
    """503: the database behind a store cannot be used (unreachable, missing tables).

    The message names the operation and the error class only: never the URL,
    the credentials or the SQL. The SQLAlchemy error is the ``__cause__``.
    """


class Database:
    """Gives the engine of a Flask-SQLAlchemy ``db``, or a plain :class:`~sqlalchemy.engine.Engine`.

    With a Flask-SQLAlchemy ``db``, the engine is ``db.engines[bind_key]`` of
    the current app, so an app context is needed, unless ``app`` is given (a
    context of that app is then pushed when none is active). Never instantiate
    ``SQLAlchemy`` for this: pass the app's own.

    A ``Database`` is itself an engine provider (call it). Its ``timeouts``
    bound every transaction the library's stores run on it (see
    :mod:`flask_backstage_auth.db.guard`).
    """

    def __init__(
        self,
        source: SQLAlchemy | Engine,
        *,
        bind_key: str | None = None,
        app: Flask | None = None,
        timeouts: DatabaseTimeouts = DEFAULT_TIMEOUTS,
    ) -> None:
        if not isinstance(source, (SQLAlchemy, Engine)):
            raise TypeError(
                f"Database needs a Flask-SQLAlchemy SQLAlchemy or an Engine, not {type(source)!r}"
            )
        if isinstance(source, Engine) and (bind_key is not None or app is not None):
            raise TypeError("bind_key and app apply to a Flask-SQLAlchemy SQLAlchemy only")
        self.source = source
        self.bind_key = bind_key
        self.app = app
        self.timeouts = timeouts

    @property
    def engine(self) -> Engine:
        source = self.source
        if isinstance(source, Engine):
            return source
        app = self.app
        if app is None or (has_app_context() and _current_app_object() is app):
            return source.engines[self.bind_key]
        with app.app_context():
            return source.engines[self.bind_key]

    def __call__(self) -> Engine:
        return self.engine

    def __repr__(self) -> str:
        kind = "Engine" if isinstance(self.source, Engine) else "SQLAlchemy"
        return f"<Database {kind} bind_key={self.bind_key!r}>"


def _current_app_object() -> Flask:
    return t.cast(Flask, t.cast(t.Any, current_app)._get_current_object())


def as_engine_provider(source: SQLAlchemy | Engine | EngineProvider) -> EngineProvider:
    """An engine provider for a Flask-SQLAlchemy ``db``, an ``Engine`` or a callable."""
    if isinstance(source, (SQLAlchemy, Engine)):
        return Database(source)
    if callable(source):
        return source
    raise TypeError(
        f"Expected an engine, a Flask-SQLAlchemy db or a callable, not {type(source)!r}"
    )


def timeouts_of(provider: EngineProvider) -> DatabaseTimeouts:
    """The timeouts of a :class:`Database` provider, else the defaults."""
    timeouts = getattr(provider, "timeouts", None)
    return timeouts if isinstance(timeouts, DatabaseTimeouts) else DEFAULT_TIMEOUTS


@contextmanager
def store_transaction(
    provider: EngineProvider, failure: str, *, conflicts: bool = False
) -> t.Iterator[Connection]:
    """A bounded transaction of a store; database errors become :class:`StorageUnavailable`.

    ``failure`` is the 503's message (the error classes are appended). With
    ``conflicts``, an ``IntegrityError`` propagates as it is (the caller's
    conflict to handle), not as an outage.
    """
    try:
        with bounded_transaction(provider(), timeouts_of(provider)) as connection:
            yield connection
    except sa.exc.IntegrityError as exc:
        if conflicts:
            raise
        raise StorageUnavailable(f"{failure} (IntegrityError)") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise StorageUnavailable(f"{failure} ({describe_database_error(exc)})") from exc


def _to_datetime(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc)


def _to_epoch(value: dt.datetime) -> float:
    # SQLite keeps no zone: what we wrote there was UTC.
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.timestamp()


class SqlPublicKeyStore:
    """A :class:`~flask_backstage_auth.auth.plugin.keys.PublicKeyStore` in a database table.

    Backstage's ``DatabaseKeyStore``, in ``backstage_auth_public_keys``.

    :param engine_provider: a :class:`Database`, a Flask-SQLAlchemy ``db``, an
        ``Engine``, or a callable returning the engine; it is asked for the
        engine at every call, and each call is one short transaction.

    Database errors raise :class:`StorageUnavailable`.
    """

    table = public_keys_table

    def __init__(self, engine_provider: SQLAlchemy | Engine | EngineProvider) -> None:
        self._engine = as_engine_provider(engine_provider)

    @contextmanager
    def _transaction(self, action: str) -> t.Iterator[Connection]:
        failure = f"Could not {action}: the key store database is unavailable"
        with store_transaction(self._engine, failure) as connection:
            yield connection

    def add_key(self, kid: str, jwk: dict[str, t.Any], expires_at: float) -> None:
        values = {
            "key": json.dumps(jwk, separators=(",", ":")),
            "expires_at": _to_datetime(expires_at),
        }
        table = self.table
        with self._transaction("store a public key") as connection:
            updated = connection.execute(table.update().where(table.c.kid == kid).values(**values))
            if updated.rowcount == 0:
                connection.execute(table.insert().values(kid=kid, **values))

    def list_keys(self) -> list[StoredPublicKey]:
        table = self.table
        query = sa.select(table.c.kid, table.c.key, table.c.expires_at).order_by(
            table.c.expires_at, table.c.kid
        )
        with self._transaction("list public keys") as connection:
            rows = connection.execute(query).all()
        keys = []
        for kid, text, expires_at in rows:
            try:
                jwk = json.loads(text)
            except ValueError:
                jwk = None
            if not isinstance(jwk, dict):
                logger.warning("Ignoring public key %r: its JWK is not a JSON object", kid)
                continue
            keys.append(StoredPublicKey(kid, jwk, _to_epoch(expires_at)))
        return keys

    def remove_keys(self, kids: t.Sequence[str]) -> None:
        kids = list(dict.fromkeys(kids))
        if not kids:
            return
        table = self.table
        with self._transaction("remove public keys") as connection:
            for start in range(0, len(kids), _DELETE_CHUNK):
                chunk = kids[start : start + _DELETE_CHUNK]
                connection.execute(table.delete().where(table.c.kid.in_(chunk)))


class SqlSigningKeyStore(SqlPublicKeyStore):
    """The public keys of the auth backend's user tokens, in ``backstage_auth_signing_keys``.

    Backstage's auth-backend ``DatabaseKeyStore`` (its ``signing_keys`` table):
    the same store as :class:`SqlPublicKeyStore`, in a table of its own.
    """

    table = signing_keys_table


def create_tables(bind: Engine | Connection) -> None:
    """Create our tables (only ours, when missing), for apps without Alembic.

    Tables made this way are not recorded in an Alembic version table.
    """
    metadata.create_all(bind, checkfirst=True)


def migrations_path() -> str:
    """The directory of our Alembic environment (``env.py``, ``versions/``).

    Give it as ``script_location`` to run our branch alone; it records its
    revisions in :data:`VERSION_TABLE`. Do not add its ``versions/`` to an
    app's ``version_locations``: two heads in one history break ``upgrade
    head`` (see :func:`flask_backstage_auth.db.flask_migrate.init_flask_migrate`).
    """
    return str(resources.files(__package__ or "flask_backstage_auth").joinpath("migrations"))


def alembic_include_name(
    name: str | None, type_: str, parent_names: t.Mapping[str, str | None]
) -> bool:
    """An Alembic ``include_name`` hook that leaves our tables out of the app's autogenerate.

    An app whose metadata does not hold our tables would otherwise be offered
    to drop them. :func:`~flask_backstage_auth.db.flask_migrate.init_flask_migrate`
    installs it; other Alembic environments pass it to ``context.configure``.
    """
    if type_ == "table":
        return name not in metadata.tables and name != VERSION_TABLE
    return True
