"""One JSON object a line for audit records, as Backstage's winston JSON format writes them.

::

    handler = logging.FileHandler("audit.log")
    handler.setFormatter(AuditJsonFormatter())
    audit = logging.getLogger("flask_backstage_auth.audit")
    audit.addHandler(handler)
    audit.setLevel(logging.DEBUG)      # low-severity events are logged at DEBUG
    audit.propagate = False            # only there, if you like

A line: ``{"timestamp": "2026-12-01T12:00:00.000Z", "level": "info",
"message": "access-tokens.access-token-create", "isAuditEvent": true,
"plugin": ..., "eventId": ..., "severityLevel": ..., "actor": {...},
"request": {...}, "meta": {...}, "status": ..., "error": {...}}``. A record
that is not an audit event (any other logger's) is written with
``timestamp``, ``level``, ``logger`` and ``message`` only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import typing as t

_LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}


class AuditJsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON; the audit fields are taken from
    the record's ``audit`` attribute (see :mod:`flask_backstage_auth.audit`)."""

    def format(self, record: logging.LogRecord) -> str:
        moment = dt.datetime.fromtimestamp(record.created, tz=dt.timezone.utc)
        data: dict[str, t.Any] = {
            "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": _LEVEL_NAMES.get(record.levelno, record.levelname.lower()),
            "message": record.getMessage(),
        }
        audit = getattr(record, "audit", None)
        if isinstance(audit, dict):
            data.update(audit)
        else:
            data["logger"] = record.name
        return json.dumps(data, default=str, separators=(",", ":"))
