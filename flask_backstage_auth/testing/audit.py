"""Capture audit events in tests (Backstage's ``mockServices.auditor`` in spirit).

::

    with capture_audit(app) as audit:
        client.delete("/api/access-tokens/service/" + token_id, headers=admin)
    (event,) = audit.find("access-token-revoke", status="succeeded")
    assert event.meta["tokenId"] == token_id

The pytest plugin's ``backstage_audit`` fixture is ``capture_audit(app)``.
For a service under test without an app, :meth:`AuditCapture.auditor`
gives an ``auditor`` service whose events land in the capture.
"""

from __future__ import annotations

import threading
import typing as t
from contextlib import contextmanager

from flask_backstage_auth.audit.service import AuditorService, AuditRecord, RootAuditor, Status
from flask_backstage_auth.clock import Clock, system_clock

if t.TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

__all__ = ["AuditCapture", "capture_audit"]


class AuditCapture:
    """A sink that keeps every record, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[AuditRecord] = []

    def __call__(self, record: AuditRecord) -> None:
        with self._lock:
            self.records.append(record)

    def find(
        self,
        event_id: str | None = None,
        *,
        status: Status | None = None,
        plugin: str | None = None,
    ) -> list[AuditRecord]:
        """The records of ``event_id`` (any, when ``None``), of that status and plugin."""
        with self._lock:
            return [
                r
                for r in self.records
                if (event_id is None or r.event_id == event_id)
                and (status is None or r.status == status)
                and (plugin is None or r.plugin == plugin)
            ]

    def event_ids(self, *, status: Status | None = "succeeded") -> list[str]:
        """The event ids, in order, of the records of ``status`` (every one: ``None``)."""
        return [r.event_id for r in self.find(status=status)]

    def clear(self) -> None:
        with self._lock:
            self.records.clear()

    def auditor(self, plugin_id: str = "test", *, clock: Clock = system_clock) -> AuditorService:
        """An ``auditor`` service of its own whose events come here."""
        root = RootAuditor(clock=clock)
        root.add_sink(self)
        return root.for_plugin(plugin_id)


@contextmanager
def capture_audit(app: Flask) -> t.Iterator[AuditCapture]:
    """Every audit record of ``app`` while the block runs."""
    from flask_backstage_auth.extension import BackstageAuth

    root = BackstageAuth.state(app).auditor
    capture = AuditCapture()
    root.add_sink(capture)
    try:
        yield capture
    finally:
        root.remove_sink(capture)
