"""Access tokens in the database: records, listing in SQL, lookups by digest, audit.

Every operation is one short transaction. Database failures become
:class:`~flask_backstage_auth.db.storage.StorageUnavailable` (a 503), so callers
fail closed. :func:`in_memory_store` gives the same store on an in-memory
SQLite database, for tests.
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
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from flask_backstage_auth.access_tokens.format import TokenKind
from flask_backstage_auth.db.storage import (
    EngineProvider,
    StorageUnavailable,
    access_token_events_table,
    access_tokens_table,
    as_engine_provider,
    create_tables,
)
from flask_backstage_auth.errors import ConflictError, NotFoundError

TOKENS = access_tokens_table
EVENTS = access_token_events_table

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


def new_event(
    token_id: str,
    event: str,
    *,
    actor: str | None,
    metadata: t.Mapping[str, t.Any] | None = None,
    now: float,
) -> AuditEvent:
    """An event to write later, with its id taken now: events sort in the order they happened."""
    return AuditEvent(_event_id(now), token_id, event, actor, dict(metadata or {}), now)


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
    )


def _event(row: t.Any) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        token_id=row.token_id,
        event=row.event,
        actor=row.actor,
        metadata=json.loads(row.metadata) if row.metadata else {},
        occurred_at=t.cast(float, to_epoch(row.occurred_at)),
    )


class SqlAccessTokenStore:
    """Access tokens and their audit events in our tables."""

    def __init__(self, engine_provider: t.Any) -> None:
        self._engine: EngineProvider = as_engine_provider(engine_provider)

    @contextmanager
    def _transaction(self, what: str) -> t.Iterator[Connection]:
        try:
            with self._engine().begin() as connection:
                yield connection
        except sa.exc.IntegrityError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise StorageUnavailable(
                f"Could not {what}: the access token database is unavailable ({type(exc).__name__})"
            ) from exc

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
            )
        )

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
    ) -> TokenRecord:
        """Insert a token (its audit event is the service's, see ``access_tokens.audit``).

        :raises ConflictError: the owner has an unrevoked token of that name.
        """
        token_id = str(uuid.uuid4())
        try:
            with self._transaction("create the token") as connection:
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
        except sa.exc.IntegrityError:
            raise ConflictError(f"A token named '{name}' already exists for {owner_ref}") from None
        record = self.get(token_id, kind)
        assert record is not None
        return record

    def revoke(
        self, token_id: str, kind: TokenKind, *, actor: str, reason: str | None, now: float
    ) -> TokenRecord:
        """Revoke a token (and its rotated-out secret).

        :raises NotFoundError: no such token.
        :raises ConflictError: already revoked.
        """
        with self._transaction("revoke the token") as connection:
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
                )
            )
            if result.rowcount == 0:
                exists = connection.execute(
                    sa.select(TOKENS.c.id).where(TOKENS.c.id == token_id, TOKENS.c.kind == kind)
                ).first()
                if exists is None:
                    raise NotFoundError(f"No {kind} token with id '{token_id}'")
                raise ConflictError(f"Token '{token_id}' is already revoked")
        record = self.get(token_id, kind)
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
    ) -> TokenRecord:
        """Give a token a new secret; the old one works until ``grace_until`` (or not at all).

        :raises NotFoundError: no such token.
        :raises ConflictError: it is revoked or expired.
        """
        with self._transaction("rotate the token") as connection:
            row = connection.execute(
                sa.select(TOKENS).where(TOKENS.c.id == token_id, TOKENS.c.kind == kind)
            ).first()
            if row is None:
                raise NotFoundError(f"No {kind} token with id '{token_id}'")
            record = _record(row)
            if not record.is_usable(now):
                raise ConflictError(
                    f"Token '{token_id}' is {record.status(now)} and cannot be rotated"
                )
            keep_old = grace_until is not None and grace_until > now
            connection.execute(
                TOKENS.update()
                .where(TOKENS.c.id == token_id)
                .values(
                    token_hash=digest,
                    token_prefix=token_prefix,
                    expires_at=to_datetime(expires_at),
                    rotated_at=to_datetime(now),
                    previous_token_hash=row.token_hash if keep_old else None,
                    previous_expires_at=to_datetime(t.cast(float, grace_until))
                    if keep_old
                    else None,
                )
            )
        updated = self.get(token_id, kind)
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
    ) -> TokenRecord:
        """Rename, change the description, or narrow the scopes.

        :raises ConflictError: another token of the owner has that name.
        """
        values: dict[str, t.Any] = {}
        if name is not None:
            values["name"] = name
        if description is not None:
            values["description"] = description
        if scopes is not None:
            values["scopes"] = json.dumps(list(scopes))
        try:
            with self._transaction("update the token") as connection:
                result = connection.execute(
                    TOKENS.update()
                    .where(
                        TOKENS.c.id == token_id,
                        TOKENS.c.kind == kind,
                        TOKENS.c.revoked_at.is_(None),
                    )
                    .values(**values)
                )
                if result.rowcount == 0:
                    raise NotFoundError(f"No active {kind} token with id '{token_id}'")
        except sa.exc.IntegrityError:
            raise ConflictError(f"A token named '{name}' already exists for its owner") from None
        record = self.get(token_id, kind)
        assert record is not None
        return record

    def record_use(self, token_id: str, *, now: float, ip: str | None) -> None:
        with self._transaction("record the token's use") as connection:
            connection.execute(
                TOKENS.update()
                .where(TOKENS.c.id == token_id)
                .values(last_used_at=to_datetime(now), last_used_ip=ip)
            )

    def record_usage(self, uses: t.Sequence[TokenUse], events: t.Sequence[AuditEvent] = ()) -> None:
        """Write uses (``last_used_at``, ``last_used_ip``) and events, in one transaction.

        Events keep the ids and times they were made with (:func:`new_event`).
        """
        with self._transaction("record the use of access tokens") as connection:
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
                connection.execute(
                    EVENTS.insert(),
                    [
                        {
                            "id": event.id,
                            "token_id": event.token_id,
                            "event": event.event,
                            "actor": event.actor,
                            "metadata": json.dumps(event.metadata),
                            "occurred_at": to_datetime(event.occurred_at),
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
        with self._transaction("write an audit event") as connection:
            self._insert_event(connection, token_id, event, actor, metadata, now)

    def prune_events(self, *, before: float) -> int:
        """Delete audit events older than ``before``; their count."""
        with self._transaction("prune audit events") as connection:
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
        with self._transaction("count tokens") as connection:
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

    def events(self, token_id: str, *, limit: int = 200) -> list[AuditEvent]:
        """The token's audit events, newest first."""
        with self._transaction("read audit events") as connection:
            rows = connection.execute(
                sa.select(EVENTS)
                .where(EVENTS.c.token_id == token_id)
                .order_by(EVENTS.c.occurred_at.desc(), EVENTS.c.id.desc())
                .limit(limit)
            ).all()
        return [_event(row) for row in rows]


def in_memory_store() -> SqlAccessTokenStore:
    """The store on a private in-memory SQLite database (for tests)."""
    engine: Engine = sa.create_engine("sqlite://", poolclass=StaticPool)
    create_tables(engine)
    return SqlAccessTokenStore(engine)
