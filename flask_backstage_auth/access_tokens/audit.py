"""The access tokens' audit events, and the audit table they feed.

Every change and every noted use of a token is an event of the ``auditor``
service of the ``access-tokens`` plugin (:mod:`flask_backstage_auth.audit`).
:class:`AuditTable`, a sink of the app's auditor, writes the token's row of
each finished event into ``backstage_auth_access_token_events`` (what
``GET /<kind>/<id>/audit`` and the admin page show): the log and the table
come from one event, written in one place.

Changes are written at once, in the caller's thread (if that write fails,
the row is queued and retried with the uses); uses are queued and written
off the request's path (:mod:`~flask_backstage_auth.access_tokens.usage`).
Each row's ``seq`` is the event's ``meta.tokenVersion``: the version a
change made, or the version the token had when it was used. A token's rows
so sort in the order its changes committed, each use after the change it
saw, however late it is written.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from flask_backstage_auth.access_tokens.usage import UsageRecorder
from flask_backstage_auth.audit.service import AuditRecord, Status

#: The plugin id the events are logged under.
PLUGIN = "access-tokens"

CREATE = "access-token-create"
ROTATE = "access-token-rotate"
UPDATE = "access-token-update"
REVOKE = "access-token-revoke"
LEAK_REPORT = "access-token-leak-report"
FIRST_USE = "access-token-first-use"
OLD_SECRET_USE = "access-token-old-secret-use"
FAILED_USE = "access-token-failed-use"


@dataclass(frozen=True)
class Row:
    """How an event becomes a row: on which status, under which name, with which fields."""

    status: Status
    name: str
    fields: tuple[str, ...]
    #: A use: no actor in the row (the token's own use), its client address kept.
    use: bool = False


#: The events that have a row, by event id. A leak report has none of its
#: own: each token it revoked has its ``access-token-revoke``.
ROWS: dict[str, Row] = {
    CREATE: Row("succeeded", "created", ("scopes", "expiresAt")),
    ROTATE: Row("succeeded", "rotated", ("graceUntil", "expiresAt")),
    UPDATE: Row("succeeded", "updated", ("name", "description", "scopes")),
    REVOKE: Row("succeeded", "revoked", ("reason",)),
    FIRST_USE: Row("succeeded", "first_used", (), use=True),
    OLD_SECRET_USE: Row("succeeded", "old_secret_used", (), use=True),
    FAILED_USE: Row("failed", "failed_use", ("reason",), use=True),
}


class AuditTable:
    """The sink that writes the rows of the ``access-tokens`` events."""

    def __init__(self, usage: UsageRecorder) -> None:
        self._usage = usage

    def __call__(self, record: AuditRecord) -> None:
        if record.plugin != PLUGIN:
            return
        row = ROWS.get(record.event_id)
        token_id = record.meta.get("tokenId")
        if row is None or row.status != record.status or not isinstance(token_id, str):
            return
        metadata: dict[str, t.Any] = {k: record.meta[k] for k in row.fields if k in record.meta}
        if row.use:
            metadata["ip"] = record.actor.get("ip")
        version = record.meta.get("tokenVersion")
        self._usage.add_event(
            token_id,
            row.name,
            metadata,
            now=record.timestamp,
            actor=None if row.use else record.actor.get("actorId"),
            at_once=not row.use,
            seq=version if isinstance(version, int) else 0,
        )
