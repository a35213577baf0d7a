"""Access tokens in the database: records, listing in SQL, lookups by digest, audit.

Every operation is one short transaction. Database failures become
:class:`~flask_backstage_auth.db.storage.StorageUnavailable` (a 503), so callers
fail closed. :func:`in_memory_store` gives the same store on an in-memory
SQLite database, for tests.

Concurrent changes lose nothing:

* every change bumps the row's ``version``; a change decided on a record read
  before (``expected_version``) is a compare-and-swap, ``UPDATE ... WHERE id =
  :id AND version = :v``, and raises :class:`ChangedConcurrently` with the
  current record when another change came first;
* a create under a cap locks the owner's row (an ``UPDATE`` of
  ``backstage_auth_access_token_owners``) and counts inside that transaction;
* an event carries ``seq``, the token's version its change made, or the
  version a use saw (the audit event says it, see
  :mod:`~flask_backstage_auth.access_tokens.audit`; without one, the
  version when it is written): a token's events sort by ``seq``, so in the
  order their changes committed, then by time.

Both work on SQLite (whose writes are serialised) and PostgreSQL, where a
write waits at most :data:`LOCK_TIMEOUT` seconds for a row lock (then a 503).
On PostgreSQL a revocation, rotation or update also notifies every instance,
on commit (:mod:`~flask_backstage_auth.access_tokens.propagation`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import typing as t
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from flask_backstage_auth.access_tokens.format import TokenKind
from flask_backstage_auth.access_tokens.propagation import announce
from flask_backstage_auth.db.storage import (
    EngineProvider,
    access_token_events_table,
    access_token_owners_table,
    access_tokens_table,
    as_engine_provider,
    create_tables,
    store_transaction,
)
from flask_backstage_auth.errors import ConflictError, NotFoundError

TOKENS = access_tokens_table
EVENTS = access_token_events_table
OWNERS = access_token_owners_table
#: The longest a write waits for a row lock on PostgreSQL, in seconds.
LOCK_TIMEOUT = 5.0

#: Status values, as the list endpoint filters them.
Status = t.Literal["active", "expiring", "expired", "revoked"]
#: A token is "expiring" in its last 7 days (it is still active): a warning
#: that needs acting on soon, not a label every 30-day token wears from birth.
EXPIRING_WINDOW = 7 * 86400


_SEQUENCE = itertools.count()


def _event_id(now: float) -> str:
    """Ids that sort in the order events were written (time, then a counter)."""
    sequence = next(_SEQUENCE) % 16**8
    return f"{int(now * 1_000_000):016x}{sequence:08x}{uuid.uuid4().hex[:12]}"


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def to_datetime(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc)


def to_epoch(value: dt.datetime | None) -> float | None:
    aware = _aware(value)
    return aware.timestamp() if aware is not None else None


@dataclass(frozen=True)
class TokenRecord:
    """One access token, without its secret."""

    id: str
    kind: TokenKind
    name: str
    description: str
    token_prefix: str
    owner_ref: str
    scopes: tuple[str, ...]
    created_by: str
    created_at: float
    expires_at: float
    last_used_at: float | None = None
    last_used_ip: str | None = None
    revoked_at: float | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None
    rotated_at: float | None = None
    previous_expires_at: float | None = None
    #: Bumped by every change; what a compare-and-swap expects.
    version: int = 1

    def status(self, now: float) -> Status:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        if self.expires_at - now <= EXPIRING_WINDOW:
            return "expiring"
        return "active"

    def is_usable(self, now: float) -> bool:
        return self.revoked_at is None and self.expires_at > now


def service_subject(record: TokenRecord) -> str:
    """The subject of a service token's principal: ``access-token:<group>:<name>``."""
    return f"access-token:{record.owner_ref}:{record.name}"


@dataclass(frozen=True)
class AuditEvent:
    id: str
    token_id: str
    event: str
    actor: str | None
    metadata: dict[str, t.Any] = field(default_factory=dict)
    occurred_at: float = 0.0
    #: The token's version the event's change made or its use saw (see the module's doc).
    seq: int = 0


class ChangedConcurrently(ConflictError):
    """409: the token changed between the read a change was decided on and its write.

    :attr:`current` is the record as it is now, to decide again on.
    """

    def __init__(self, current: TokenRecord) -> None:
        super().__init__(f"Token '{current.id}' was changed by another request")
        self.current = current


class LimitReached(ConflictError):
    """409: the owner already holds the most usable tokens allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The owner already has {limit} usable tokens")
        self.limit = limit


def new_event(
    token_id: str,
    event: str,
    *,
    actor: str | None,
    metadata: t.Mapping[str, t.Any] | None = None,
    now: float,
    seq: int = 0,
) -> AuditEvent:
    """An event to write later, with its id taken now: events sort in the order they happened.

    :param seq: the token's version the event's change made, or its use
        saw; ``0``: the version when the event is written.
    """
    return AuditEvent(_event_id(now), token_id, event, actor, dict(metadata or {}), now, seq)


@dataclass(frozen=True)
class TokenUse:
    """A successful use of a token, for its ``last_used_at`` and ``last_used_ip``."""

    token_id: str
    at: float
    ip: str | None


@dataclass(frozen=True)
class SecretMatch:
    """What a digest lookup found: the token, and whether the old (rotated) secret matched."""

    record: TokenRecord
    previous_secret: bool

    def works(self, now: float) -> bool:
        """Whether the secret that matched still authenticates (a rotated one: in its grace).

        Revocation and expiry are the record's own: see :meth:`TokenRecord.is_usable`.
        """
        if not self.previous_secret:
            return True
        grace = self.record.previous_expires_at
        return grace is not None and grace > now


def _record(row: t.Any) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        kind=row.kind,
        name=row.name,
        description=row.description,
        token_prefix=row.token_prefix,
        owner_ref=row.owner_ref,
        scopes=tuple(json.loads(row.scopes)),
        created_by=row.created_by,
        created_at=t.cast(float, to_epoch(row.created_at)),
        expires_at=t.cast(float, to_epoch(row.expires_at)),
        last_used_at=to_epoch(row.last_used_at),
        last_used_ip=row.last_used_ip,
        revoked_at=to_epoch(row.revoked_at),
        revoked_by=row.revoked_by,
        revoke_reason=row.revoke_reason,
        rotated_at=to_epoch(row.rotated_at),
        previous_expires_at=to_epoch(row.previous_expires_at),
        version=int(row.version),
    )


def _event(row: t.Any) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        token_id=row.token_id,
        event=row.event,
        actor=row.actor,
        metadata=json.loads(row.metadata) if row.metadata else {},
        occurred_at=t.cast(float, to_epoch(row.occurred_at)),
        seq=int(row.seq),
    )


def _seq_of(token_id: t.Any) -> t.Any:
    """The token's version, in the writing transaction (its own change included)."""
    return sa.func.coalesce(
        sa.select(TOKENS.c.version).where(TOKENS.c.id == token_id).scalar_subquery(), 0
    )


class SqlAccessTokenStore:
    """Access tokens and their audit events in our tables."""

    def __init__(self, engine_provider: t.Any, *, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self._engine: EngineProvider = as_engine_provider(engine_provider)
        self.lock_timeout = lock_timeout

    @contextmanager
    def _transaction(self, what: str, *, writes: bool = False) -> t.Iterator[Connection]:
        # Bounded waits (db/guard.py): connect, pool, statements, a server that
        # stops answering; an IntegrityError is the caller's conflict.
        failure = f"Could not {what}: the access token database is unavailable"
        with store_transaction(self._engine, failure, conflicts=True) as connection:
            if writes and connection.dialect.name == "postgresql":
                # A row lock held elsewhere is a 503, not a hang.
                milliseconds = max(1, int(self.lock_timeout * 1000))
                connection.execute(sa.text(f"SET LOCAL lock_timeout = {milliseconds}"))
            yield connection

    def engine(self) -> Engine:
        """The engine the store uses now."""
        return self._engine()

    def shares_one_connection(self) -> bool:
        """Whether every thread uses one connection (an in-memory SQLite database).

        Such a database cannot be written from another thread while a request
        uses it, so its bookkeeping stays on the request's thread.
        """
        return isinstance(self._engine().pool, (StaticPool, SingletonThreadPool))

    @staticmethod
    def _insert_event(
        connection: Connection,
        token_id: str,
        event: str,
        actor: str | None,
        metadata: t.Mapping[str, t.Any] | None,
        now: float,
    ) -> None:
        connection.execute(
            EVENTS.insert().values(
                id=_event_id(now),
                token_id=token_id,
                event=event,
                actor=actor,
                metadata=json.dumps(dict(metadata or {})),
                occurred_at=to_datetime(now),
                seq=_seq_of(token_id),
            )
        )

    @staticmethod
    def _lock_owner(connection: Connection, kind: TokenKind, owner_ref: str) -> None:
        """Lock the owner's row until the transaction ends (made on its first create).

        An ``UPDATE``: a row lock on PostgreSQL, the write lock on SQLite.
        """
        key = {"kind": kind, "owner_ref": owner_ref}
        name = connection.dialect.name
        if name in ("postgresql", "sqlite"):
            dialect_insert = postgresql.insert if name == "postgresql" else sqlite.insert
            connection.execute(
                dialect_insert(OWNERS).values(**key, tokens_created=0).on_conflict_do_nothing()
            )
        locked = connection.execute(
            OWNERS.update()
            .where(OWNERS.c.kind == kind, OWNERS.c.owner_ref == owner_ref)
            .values(tokens_created=OWNERS.c.tokens_created + 1)
        )
        if locked.rowcount == 0:  # another database: its first create inserts the row
            connection.execute(OWNERS.insert().values(**key, tokens_created=1))

    @staticmethod
    def _count_usable(connection: Connection, kind: TokenKind, owner_ref: str, now: float) -> int:
        return int(
            connection.execute(
                sa.select(sa.func.count())
                .select_from(TOKENS)
                .where(
                    TOKENS.c.kind == kind,
                    TOKENS.c.owner_ref == owner_ref,
                    TOKENS.c.revoked_at.is_(None),
                    TOKENS.c.expires_at > to_datetime(now),
                )
            ).scalar_one()
        )

    @staticmethod
    def _current(connection: Connection, token_id: str, kind: TokenKind) -> TokenRecord | None:
        row = connection.execute(
            sa.select(TOKENS).where(TOKENS.c.id == token_id, TOKENS.c.kind == kind)
        ).first()
        return _record(row) if row is not None else None

    # -- writes ----------------------------------------------------------

    def create(
        self,
        *,
        kind: TokenKind,
        name: str,
        description: str,
        digest: str,
        token_prefix: str,
        owner_ref: str,
        scopes: t.Sequence[str],
        created_by: str,
        expires_at: float,
        now: float,
        max_usable: int | None = None,
    ) -> TokenRecord:
        """Insert a token and its ``created`` event together.

        :param max_usable: the most usable (unrevoked, unexpired) tokens of
            this kind the owner may hold, counted under the owner's lock.
        :raises LimitReached: the owner holds ``max_usable`` already.
        :raises ConflictError: the owner has an unrevoked token of that name.
        """
        token_id = str(uuid.uuid4())
        try:
            with self._transaction("create the token", writes=True) as connection:
                if max_usable is not None:
                    self._lock_owner(connection, kind, owner_ref)
                    if self._count_usable(connection, kind, owner_ref, now) >= max_usable:
                        raise LimitReached(max_usable)
                connection.execute(
                    TOKENS.insert().values(
                        id=token_id,
                        kind=kind,
                        name=name,
                        description=description,
                        token_hash=digest,
                        token_prefix=token_prefix,
                        owner_ref=owner_ref,
                        scopes=json.dumps(list(scopes)),
                        created_by=created_by,
                        created_at=to_datetime(now),
                        expires_at=to_datetime(expires_at),
                    )
                )
                record = self._current(connection, token_id, kind)
        except sa.exc.IntegrityError:
            raise ConflictError(f"A token named '{name}' already exists for {owner_ref}") from None
        assert record is not None
        return record

    def revoke(
        self, token_id: str, kind: TokenKind, *, actor: str, reason: str | None, now: float
    ) -> TokenRecord:
        """Revoke a token (and its rotated-out secret).

        :raises NotFoundError: no such token.
        :raises ConflictError: already revoked.
        """
        with self._transaction("revoke the token", writes=True) as connection:
            result = connection.execute(
                TOKENS.update()
                .where(
                    TOKENS.c.id == token_id, TOKENS.c.kind == kind, TOKENS.c.revoked_at.is_(None)
                )
                .values(
                    revoked_at=to_datetime(now),
                    revoked_by=actor,
                    revoke_reason=reason,
                    previous_token_hash=None,
                    previous_expires_at=None,
                    version=TOKENS.c.version + 1,
                )
            )
            if result.rowcount == 0:
                exists = connection.execute(
                    sa.select(TOKENS.c.id).where(TOKENS.c.id == token_id, TOKENS.c.kind == kind)
                ).first()
                if exists is None:
                    raise NotFoundError(f"No {kind} token with id '{token_id}'")
                raise ConflictError(f"Token '{token_id}' is already revoked")
            announce(connection, token_id)
            record = self._current(connection, token_id, kind)
        assert record is not None
        return record

    def rotate(
        self,
        token_id: str,
        kind: TokenKind,
        *,
        digest: str,
        token_prefix: str,
        expires_at: float,
        grace_until: float | None,
        now: float,
        expected_version: int | None = None,
    ) -> TokenRecord:
        """Give a token a new secret; the old one works until ``grace_until`` (or not at all).

        One conditional ``UPDATE``: the old secret kept is the row's own, never
        one read before.

        :param expected_version: the version the rotation was decided on.
        :raises NotFoundError: no such token.
        :raises ConflictError: it is revoked or expired.
        :raises ChangedConcurrently: its version is not ``expected_version``.
        """
        keep_old = grace_until is not None and grace_until > now
        conditions = [
            TOKENS.c.id == token_id,
            TOKENS.c.kind == kind,
            TOKENS.c.revoked_at.is_(None),
            TOKENS.c.expires_at > to_datetime(now),
        ]
        if expected_version is not None:
            conditions.append(TOKENS.c.version == expected_version)
        with self._transaction("rotate the token", writes=True) as connection:
            result = connection.execute(
                TOKENS.update()
                .where(*conditions)
                .values(
                    token_hash=digest,
                    token_prefix=token_prefix,
                    expires_at=to_datetime(expires_at),
                    rotated_at=to_datetime(now),
                    previous_token_hash=TOKENS.c.token_hash if keep_old else None,
                    previous_expires_at=to_datetime(t.cast(float, grace_until))
                    if keep_old
                    else None,
                    version=TOKENS.c.version + 1,
                )
            )
            if result.rowcount == 0:
                current = self._current(connection, token_id, kind)
                if current is None:
                    raise NotFoundError(f"No {kind} token with id '{token_id}'")
                if not current.is_usable(now):
                    raise ConflictError(
                        f"Token '{token_id}' is {current.status(now)} and cannot be rotated"
                    )
                raise ChangedConcurrently(current)
            announce(connection, token_id)
            updated = self._current(connection, token_id, kind)
        assert updated is not None
        return updated

    def update(
        self,
        token_id: str,
        kind: TokenKind,
        *,
        description: str | None,
        scopes: t.Sequence[str] | None,
        name: str | None = None,
        expected_version: int | None = None,
    ) -> TokenRecord:
        """Rename, change the description, or narrow the scopes.

        :param expected_version: the version the change was decided on (the
            scopes checked against).
        :raises NotFoundError: no such token.
        :raises ConflictError: it is revoked, or another token of the owner has that name.
        :raises ChangedConcurrently: its version is not ``expected_version``.
        """
        values: dict[str, t.Any] = {"version": TOKENS.c.version + 1}
        if name is not None:
            values["name"] = name
        if description is not None:
            values["description"] = description
        if scopes is not None:
            values["scopes"] = json.dumps(list(scopes))
        conditions = [
            TOKENS.c.id == token_id,
            TOKENS.c.kind == kind,
            TOKENS.c.revoked_at.is_(None),
        ]
        if expected_version is not None:
            conditions.append(TOKENS.c.version == expected_version)
        try:
            with self._transaction("update the token", writes=True) as connection:
                result = connection.execute(TOKENS.update().where(*conditions).values(**values))
                if result.rowcount == 0:
                    current = self._current(connection, token_id, kind)
                    if current is None:
                        raise NotFoundError(f"No {kind} token with id '{token_id}'")
                    if current.revoked_at is not None:
                        raise ConflictError(f"Token '{token_id}' is revoked")
                    raise ChangedConcurrently(current)
                announce(connection, token_id)
                record = self._current(connection, token_id, kind)
        except sa.exc.IntegrityError:
            raise ConflictError(f"A token named '{name}' already exists for its owner") from None
        assert record is not None
        return record

    def record_use(self, token_id: str, *, now: float, ip: str | None) -> None:
        with self._transaction("record the token's use", writes=True) as connection:
            connection.execute(
                TOKENS.update()
                .where(TOKENS.c.id == token_id)
                .values(last_used_at=to_datetime(now), last_used_ip=ip)
            )

    def record_usage(self, uses: t.Sequence[TokenUse], events: t.Sequence[AuditEvent] = ()) -> None:
        """Write uses (``last_used_at``, ``last_used_ip``) and events, in one transaction.

        Events keep the ids and times they were made with (:func:`new_event`).
        """
        with self._transaction("record the use of access tokens", writes=True) as connection:
            if uses:
                connection.execute(
                    TOKENS.update()
                    .where(TOKENS.c.id == sa.bindparam("use_id"))
                    .values(
                        last_used_at=sa.bindparam("use_at"), last_used_ip=sa.bindparam("use_ip")
                    ),
                    [
                        {"use_id": use.token_id, "use_at": to_datetime(use.at), "use_ip": use.ip}
                        for use in uses
                    ],
                )
            if events:
                event_token: t.Any = sa.bindparam("event_token_id")
                connection.execute(
                    EVENTS.insert().values(
                        id=sa.bindparam("event_id"),
                        token_id=event_token,
                        event=sa.bindparam("event_event"),
                        actor=sa.bindparam("event_actor"),
                        metadata=sa.bindparam("event_metadata"),
                        occurred_at=sa.bindparam("event_occurred_at"),
                        seq=sa.func.coalesce(
                            sa.bindparam("event_seq", type_=sa.Integer), _seq_of(event_token)
                        ),
                    ),
                    [
                        {
                            "event_id": event.id,
                            "event_token_id": event.token_id,
                            "event_event": event.event,
                            "event_actor": event.actor,
                            "event_metadata": json.dumps(event.metadata),
                            "event_occurred_at": to_datetime(event.occurred_at),
                            "event_seq": event.seq or None,
                        }
                        for event in events
                    ],
                )

    def add_event(
        self,
        token_id: str,
        event: str,
        *,
        actor: str | None,
        metadata: t.Mapping[str, t.Any] | None = None,
        now: float,
    ) -> None:
        with self._transaction("write an audit event", writes=True) as connection:
            self._insert_event(connection, token_id, event, actor, metadata, now)

    def prune_events(self, *, before: float) -> int:
        """Delete audit events older than ``before``; their count."""
        with self._transaction("prune audit events", writes=True) as connection:
            result = connection.execute(
                EVENTS.delete().where(EVENTS.c.occurred_at < to_datetime(before))
            )
            return int(result.rowcount or 0)

    # -- reads -----------------------------------------------------------

    def get(self, token_id: str, kind: TokenKind) -> TokenRecord | None:
        with self._transaction("read the token") as connection:
            row = connection.execute(
                sa.select(TOKENS).where(TOKENS.c.id == token_id, TOKENS.c.kind == kind)
            ).first()
        return _record(row) if row is not None else None

    def find_by_digest(
        self, digest: str, token_prefix: str
    ) -> tuple[SecretMatch | None, TokenRecord | None]:
        """One query: the token whose current or rotated-out secret has ``digest``,
        or else a token sharing the display prefix (to audit a failed use)."""
        with self._transaction("look up the token") as connection:
            rows = connection.execute(
                sa.select(TOKENS)
                .where(
                    sa.or_(
                        TOKENS.c.token_hash == digest,
                        TOKENS.c.previous_token_hash == digest,
                        TOKENS.c.token_prefix == token_prefix,
                    )
                )
                .limit(3)
            ).all()
        prefix_match = None
        for row in rows:
            if row.token_hash == digest:
                return SecretMatch(_record(row), False), None
            if row.previous_token_hash == digest:
                return SecretMatch(_record(row), True), None
            prefix_match = _record(row)
        return None, prefix_match

    def list_tokens(
        self,
        kind: TokenKind,
        *,
        now: float,
        owner_refs: t.Collection[str] | None = None,
        status: Status | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[TokenRecord], int]:
        """A page of tokens, newest first, filtered in SQL; and the total."""
        conditions: list[t.Any] = [TOKENS.c.kind == kind]
        if owner_refs is not None:
            conditions.append(TOKENS.c.owner_ref.in_(list(owner_refs)))
        moment = to_datetime(now)
        soon = to_datetime(now + EXPIRING_WINDOW)
        if status == "revoked":
            conditions.append(TOKENS.c.revoked_at.is_not(None))
        elif status == "expired":
            conditions += [TOKENS.c.revoked_at.is_(None), TOKENS.c.expires_at <= moment]
        elif status == "expiring":
            conditions += [
                TOKENS.c.revoked_at.is_(None),
                TOKENS.c.expires_at > moment,
                TOKENS.c.expires_at <= soon,
            ]
        elif status == "active":  # every usable token, expiring ones included
            conditions += [TOKENS.c.revoked_at.is_(None), TOKENS.c.expires_at > moment]
        where = sa.and_(*conditions)
        with self._transaction("list tokens") as connection:
            total = connection.execute(
                sa.select(sa.func.count()).select_from(TOKENS).where(where)
            ).scalar_one()
            rows = connection.execute(
                sa.select(TOKENS)
                .where(where)
                .order_by(TOKENS.c.created_at.desc(), TOKENS.c.id)
                .limit(limit)
                .offset(offset)
            ).all()
        return [_record(row) for row in rows], int(total)

    def count_usable(self, kind: TokenKind, owner_ref: str, *, now: float) -> int:
        """How many usable tokens of ``kind`` the owner holds (a read: see ``create``)."""
        with self._transaction("count tokens") as connection:
            return self._count_usable(connection, kind, owner_ref, now)

    def events(self, token_id: str, *, limit: int = 200) -> list[AuditEvent]:
        """The token's audit events, newest first: in commit order of its changes, then by time."""
        with self._transaction("read audit events") as connection:
            rows = connection.execute(
                sa.select(EVENTS)
                .where(EVENTS.c.token_id == token_id)
                .order_by(EVENTS.c.seq.desc(), EVENTS.c.occurred_at.desc(), EVENTS.c.id.desc())
                .limit(limit)
            ).all()
        return [_event(row) for row in rows]


def in_memory_store() -> SqlAccessTokenStore:
    """The store on a private in-memory SQLite database (for tests)."""
    engine: Engine = sa.create_engine("sqlite://", poolclass=StaticPool)
    create_tables(engine)
    return SqlAccessTokenStore(engine)
