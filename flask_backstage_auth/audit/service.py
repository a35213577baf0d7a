"""The ``auditor`` service: Backstage's ``DefaultAuditorService`` for Flask.

One :class:`RootAuditor` per app (``BackstageAuth.state(app).auditor``) gives
each plugin its :class:`AuditorService`::

    auditor = BackstageAuth.state(app).auditor.for_plugin("catalog")
    event = auditor.create_event("entity-delete", severity="medium", meta={"ref": ref})
    try:
        delete(ref)
    except Exception as exc:
        event.fail(exc)
        raise
    event.success(meta={"deleted": 1})

As in Backstage, ``create_event`` logs the event ``initiated`` at once, and
``success``/``fail`` log it again, ``succeeded`` or ``failed`` (with the
error's name and message, never its traceback), each time with the actor
(``actorId``, ``ip``, ``hostname``, ``userAgent``), the request (``url``,
``method``) and ``meta``. Every record goes to the logger
``flask_backstage_auth.audit`` at the level its severity maps to
(``backend.auditor.severityLogLevelMappings``, Backstage's defaults: ``low``
at DEBUG, the rest at INFO), then to every sink added with
:meth:`RootAuditor.add_sink`.

What is never written: a token, a secret, a query string (it may carry a
token); free text (an error message, the user agent) is cut to
:data:`MAX_TEXT` characters.
"""

from __future__ import annotations

import logging
import threading
import typing as t
from dataclasses import dataclass, field

from flask import has_request_context
from flask import request as current_request
from werkzeug.wrappers import Request

from flask_backstage_auth.audit.budget import RefusalBudget
from flask_backstage_auth.clock import Clock, system_clock
from flask_backstage_auth.config.reader import ConfigReader
from flask_backstage_auth.credentials import Credentials, ServicePrincipal, UserPrincipal
from flask_backstage_auth.errors import BackstageError, ConfigError
from flask_backstage_auth.http_auth.memo import established

#: The logger every audit event goes to.
AUDIT_LOGGER_NAME = "flask_backstage_auth.audit"
#: Operational problems of the auditor itself (a failing sink).
logger = logging.getLogger(__name__)

Severity = t.Literal["low", "medium", "high", "critical"]
Status = t.Literal["initiated", "succeeded", "failed"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")

#: The configuration key of the severity to log level mapping (Backstage's).
CONFIG_KEY = "backend.auditor"
_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
#: Backstage's defaults.
DEFAULT_LEVELS: dict[Severity, int] = {
    "low": logging.DEBUG,
    "medium": logging.INFO,
    "high": logging.INFO,
    "critical": logging.INFO,
}
#: The longest free text kept (an error message, a user agent).
MAX_TEXT = 512
#: The longest URL path kept.
MAX_URL = 1024


class _CurrentRequest:
    def __repr__(self) -> str:
        return "CURRENT_REQUEST"


#: ``create_event(request=CURRENT_REQUEST)``: the request being served, if
#: any (for code, like a service layer, that does not hold the request).
CURRENT_REQUEST: t.Final = _CurrentRequest()

RequestArg = t.Union[Request, _CurrentRequest, None]


def _text(value: object, limit: int = MAX_TEXT) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def actor_id_of(credentials: Credentials | None) -> str | None:
    """The user entity ref or the service subject (Backstage's ``actorId``)."""
    if credentials is None:
        return None
    principal = credentials.principal
    if isinstance(principal, UserPrincipal):
        return principal.user_entity_ref
    if isinstance(principal, ServicePrincipal):
        return principal.subject
    return None


def describe_error(error: BaseException | str) -> dict[str, str]:
    """``{"name", "message"}`` of an error: Backstage's error name when it has one."""
    if isinstance(error, str):
        return {"name": "Error", "message": _text(error)}
    if isinstance(error, BackstageError):
        return {"name": error.error_name, "message": _text(error.message)}
    return {"name": type(error).__name__, "message": _text(error)}


@dataclass(frozen=True)
class AuditRecord:
    """One logged state of an event (what a sink receives)."""

    plugin: str
    event_id: str
    severity_level: Severity
    status: Status
    #: ``actorId``, ``ip``, ``hostname``, ``userAgent`` (each may be ``None``).
    actor: t.Mapping[str, str | None]
    #: ``url`` (the path, never the query string) and ``method``; ``None``: no request.
    request: t.Mapping[str, str] | None
    meta: t.Mapping[str, t.Any] = field(default_factory=dict)
    #: ``name`` and ``message`` of the error of a failed event.
    error: t.Mapping[str, str] | None = None
    #: Epoch seconds, from the app's clock.
    timestamp: float = 0.0

    @property
    def message(self) -> str:
        """``<plugin>.<eventId>``, the log message (as Backstage's)."""
        return f"{self.plugin}.{self.event_id}"

    def to_dict(self) -> dict[str, t.Any]:
        """The JSON-ready fields, named as Backstage's auditor names them."""
        data: dict[str, t.Any] = {
            "isAuditEvent": True,
            "plugin": self.plugin,
            "eventId": self.event_id,
            "severityLevel": self.severity_level,
            "actor": dict(self.actor),
            "status": self.status,
        }
        if self.request is not None:
            data["request"] = dict(self.request)
        if self.meta:
            data["meta"] = dict(self.meta)
        if self.error is not None:
            data["error"] = dict(self.error)
        return data


#: Receives every record the auditor logs (after the logger).
Sink = t.Callable[[AuditRecord], None]


class AuditorEvent:
    """An event :meth:`AuditorService.create_event` logged as ``initiated``."""

    def __init__(
        self,
        auditor: AuditorService,
        event_id: str,
        severity: Severity,
        meta: t.Mapping[str, t.Any],
        actor: t.Mapping[str, str | None],
        request: t.Mapping[str, str] | None,
    ) -> None:
        self._auditor = auditor
        self.event_id = event_id
        self.severity: Severity = severity
        self.meta = dict(meta)
        self.actor = actor
        self.request = request

    def _log(
        self, status: Status, meta: t.Mapping[str, t.Any] | None, error: BaseException | str | None
    ) -> None:
        self._auditor.root.emit(
            AuditRecord(
                plugin=self._auditor.plugin_id,
                event_id=self.event_id,
                severity_level=self.severity,
                status=status,
                actor=self.actor,
                request=self.request,
                meta={**self.meta, **(meta or {})},
                error=None if error is None else describe_error(error),
                timestamp=self._auditor.root.clock(),
            )
        )

    def success(self, *, meta: t.Mapping[str, t.Any] | None = None) -> None:
        """Log the event ``succeeded``, with ``meta`` added to the event's."""
        self._log("succeeded", meta, None)

    def fail(
        self, error: BaseException | str, *, meta: t.Mapping[str, t.Any] | None = None
    ) -> None:
        """Log the event ``failed`` with the error's name and message (never a traceback)."""
        self._log("failed", meta, error)


class AuditorService:
    """Backstage's ``AuditorService`` of one plugin: :meth:`create_event`.

    Get it with ``BackstageAuth.state(app).auditor.for_plugin(plugin_id)``.
    """

    def __init__(self, plugin_id: str, root: RootAuditor) -> None:
        self.plugin_id = plugin_id
        self.root = root

    def create_event(
        self,
        event_id: str,
        *,
        severity: Severity = "low",
        meta: t.Mapping[str, t.Any] | None = None,
        request: RequestArg = None,
        credentials: Credentials | None = None,
        actor_id: str | None = None,
    ) -> AuditorEvent:
        """Log ``event_id`` as ``initiated``; the event then logs its outcome.

        :param severity: ``low``, ``medium``, ``high`` or ``critical``.
        :param meta: JSON-ready details; never a token or a secret.
        :param request: the request the event is about (its path, method,
            client address, host and user agent), :data:`CURRENT_REQUEST`,
            or ``None``.
        :param credentials: whose action it is (default: the credentials the
            request was let through with; without a request, this plugin's
            own, ``plugin:<id>``, as Backstage).
        :param actor_id: the actor's name, when there are no credentials (the
            command line's operator).
        :raises ValueError: an unknown severity.
        """
        if severity not in SEVERITIES:
            raise ValueError(f"Unknown severity {severity!r}, expected one of {SEVERITIES}")
        req = _resolve(request)
        if actor_id is None:
            if credentials is None and req is not None:
                credentials = established(req.environ)
            actor_id = actor_id_of(credentials)
            if actor_id is None and credentials is None and req is None:
                actor_id = f"plugin:{self.plugin_id}"
        event = AuditorEvent(
            self, event_id, severity, meta or {}, _actor(actor_id, req), _request(req)
        )
        event._log("initiated", None, None)
        return event

    def create_bounded_event(
        self,
        event_id: str,
        *,
        source: str,
        severity: Severity = "medium",
        meta: t.Mapping[str, t.Any] | None = None,
        request: RequestArg = None,
        credentials: Credentials | None = None,
    ) -> AuditorEvent | None:
        """As :meth:`create_event`, within the app's budget of events a caller
        can cause (:class:`~flask_backstage_auth.audit.budget.RefusalBudget`);
        ``None`` when over it (the event is counted, and the next one logged
        says how many were not, in ``meta.suppressed``).

        :param source: who is counted: the client's address, or the actor.
        """
        admitted, suppressed = self.root.budget.admit(source)
        if not admitted:
            return None
        details = dict(meta or {})
        if suppressed:
            details["suppressed"] = suppressed
        return self.create_event(
            event_id, severity=severity, meta=details, request=request, credentials=credentials
        )


def _resolve(request: RequestArg) -> Request | None:
    if isinstance(request, _CurrentRequest):
        if not has_request_context():
            return None
        return t.cast(Request, current_request._get_current_object())  # type: ignore[attr-defined]
    return request


def _actor(actor_id: str | None, request: Request | None) -> dict[str, str | None]:
    if request is None:
        return {"actorId": actor_id, "ip": None, "hostname": None, "userAgent": None}
    agent = request.headers.get("User-Agent")
    return {
        "actorId": actor_id,
        "ip": request.remote_addr,
        "hostname": _hostname(request.host),
        "userAgent": _text(agent) if agent else None,
    }


def _hostname(host: str) -> str | None:
    """The ``Host`` without its port (Express's ``req.hostname``)."""
    if host.startswith("["):  # an IPv6 literal
        end = host.find("]")
        name = host[: end + 1] if end != -1 else host
    else:
        name = host.split(":", 1)[0]
    return _text(name, 255) or None


def _request(request: Request | None) -> dict[str, str] | None:
    if request is None:
        return None
    # The path only: a query string may carry a token.
    return {"url": _text(request.path, MAX_URL), "method": request.method}


class RootAuditor:
    """The app's auditor: the logger, the level of each severity, the sinks and
    the budget of caller-caused events; :meth:`for_plugin` gives a plugin's service.

    :param levels: the log level of each severity (default: Backstage's).
    :param clock: the time source of records.
    :param budget: the bound on events callers can cause (default:
        :class:`~flask_backstage_auth.audit.budget.RefusalBudget` with its defaults).
    """

    def __init__(
        self,
        *,
        levels: t.Mapping[Severity, int] | None = None,
        clock: Clock = system_clock,
        budget: RefusalBudget | None = None,
        logger_name: str = AUDIT_LOGGER_NAME,
    ) -> None:
        self.levels: dict[Severity, int] = {**DEFAULT_LEVELS, **(levels or {})}
        self.clock = clock
        self.budget = budget if budget is not None else RefusalBudget(clock=clock)
        self.logger = logging.getLogger(logger_name)
        self._sinks: tuple[Sink, ...] = ()
        self._plugins: dict[str, AuditorService] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: ConfigReader, *, clock: Clock = system_clock) -> RootAuditor:
        """Read ``backend.auditor.severityLogLevelMappings`` (``debug``, ``info``,
        ``warn`` or ``error`` for each severity).

        :raises ConfigError: an invalid level, with Backstage's message.
        """
        mappings = config.get_config(CONFIG_KEY).get_config("severityLogLevelMappings")
        levels: dict[Severity, int] = {}
        for severity in SEVERITIES:
            value = mappings.get(severity)
            if value is None:
                continue
            if value not in _LOG_LEVELS:
                raise ConfigError(
                    f"The configuration value for '{CONFIG_KEY}.severityLogLevelMappings."
                    f"{severity}' was given an invalid value: '{value}'. Expected one of the"
                    f" following valid values: '{', '.join(_LOG_LEVELS)}'."
                )
            levels[severity] = _LOG_LEVELS[value]
        return cls(levels=levels, clock=clock)

    def for_plugin(self, plugin_id: str) -> AuditorService:
        """The ``auditor`` service of ``plugin_id`` (made once)."""
        service = self._plugins.get(plugin_id)
        if service is None:
            with self._lock:
                service = self._plugins.setdefault(plugin_id, AuditorService(plugin_id, self))
        return service

    def add_sink(self, sink: Sink) -> None:
        """Give ``sink`` every record from now on, after the logger."""
        with self._lock:
            self._sinks = (*self._sinks, sink)

    def remove_sink(self, sink: Sink) -> None:
        with self._lock:
            self._sinks = tuple(s for s in self._sinks if s is not sink)

    def emit(self, record: AuditRecord) -> None:
        """Log ``record``, then hand it to every sink (a failing sink is logged, not raised)."""
        level = self.levels[record.severity_level]
        if self.logger.isEnabledFor(level):
            self.logger.log(level, "%s", record.message, extra={"audit": record.to_dict()})
        for sink in self._sinks:
            try:
                sink(record)
            except Exception as exc:
                logger.error("An audit sink failed on %s (%s)", record.message, type(exc).__name__)
