"""The ``auditor`` service (Backstage's ``coreServices.auditor``): security events.

Every event goes to the logger ``flask_backstage_auth.audit`` as a record
whose ``audit`` attribute holds Backstage's fields (``plugin``, ``eventId``,
``severityLevel``, ``actor``, ``request``, ``meta``, ``status``, ``error``),
and to the sinks an app or plugin added (the access tokens' audit table is
one). :class:`~flask_backstage_auth.audit.formatter.AuditJsonFormatter`
writes them as one JSON object a line. Event ids and fields: ``docs/audit.rst``.
"""

from __future__ import annotations

from flask_backstage_auth.audit.formatter import AuditJsonFormatter
from flask_backstage_auth.audit.service import (
    AUDIT_LOGGER_NAME,
    CURRENT_REQUEST,
    AuditorEvent,
    AuditorService,
    AuditRecord,
    RootAuditor,
    Severity,
)

__all__ = [
    "AUDIT_LOGGER_NAME",
    "CURRENT_REQUEST",
    "AuditJsonFormatter",
    "AuditRecord",
    "AuditorEvent",
    "AuditorService",
    "RootAuditor",
    "Severity",
]
