"""The audit events of refusals: ``auth-refused`` (http_auth) and ``permission-denied``.

Both are caused by callers, as often as they like, so both go through the
app's budget (:mod:`~flask_backstage_auth.audit.budget`): counted per client
address for refused requests, per actor for denied permissions. A refused
request is audited once, however often a view asks for its credentials. The
reason is the error's message, with any token the request carried cut out
(a custom token handler could have put it there); the token itself never.
"""

from __future__ import annotations

import typing as t

from werkzeug.wrappers import Request

from flask_backstage_auth.audit.service import CURRENT_REQUEST, AuditorService, actor_id_of
from flask_backstage_auth.credentials import Credentials
from flask_backstage_auth.errors import BackstageError

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.permissions import Permission

AUTH_REFUSED = "auth-refused"
PERMISSION_DENIED = "permission-denied"
#: The ``environ`` key marking a request whose refusal was audited.
_AUDITED_KEY = "flask_backstage_auth.audit.refused"
#: Secrets shorter than this are not searched for in a message (they would
#: match ordinary words); no token kind we accept is that short.
_MIN_SECRET = 8


def _presented_secrets(request: Request) -> list[str]:
    found: list[str] = []
    header = request.environ.get("HTTP_AUTHORIZATION")
    if header:
        found.extend(part for part in header.split() if len(part) >= _MIN_SECRET)
    cookie = request.cookies.get("backstage-auth")
    if cookie and len(cookie) >= _MIN_SECRET:
        found.append(cookie)
    return found


def redact(message: str, secrets: t.Iterable[str]) -> str:
    """``message`` with every one of ``secrets`` replaced by ``[REDACTED]``."""
    for secret in secrets:
        if secret in message:
            message = message.replace(secret, "[REDACTED]")
    return message


def audit_refusal(
    auditor: AuditorService | None,
    request: Request,
    error: BackstageError,
    *,
    credentials: Credentials | None = None,
) -> None:
    """Audit a request ``http_auth`` refused (401 or 403), once per request."""
    if auditor is None or request.environ.get(_AUDITED_KEY):
        return
    request.environ[_AUDITED_KEY] = True
    event = auditor.create_bounded_event(
        AUTH_REFUSED,
        source=request.remote_addr or "",
        severity="medium",
        meta={"status": error.code, "credentialsFrom": _carrier(request)},
        request=request,
        credentials=credentials,
    )
    if event is not None:
        message = redact(error.message, _presented_secrets(request))
        if message != error.message:
            shown = BackstageError(message)
            shown.error_name = error.error_name
            error = shown
        event.fail(error)


def _carrier(request: Request) -> str:
    if request.environ.get("HTTP_AUTHORIZATION") is not None:
        return "header"
    if request.cookies.get("backstage-auth"):
        return "cookie"
    return "none"


def audit_denial(
    auditor: AuditorService | None,
    credentials: Credentials,
    permission: Permission,
    resource_ref: str | None,
    reason: t.Literal["access-restrictions", "policy"],
) -> None:
    """Audit a permission the access restrictions, or the policy (local or the
    permission backend), denied."""
    if auditor is None:
        return
    actor = actor_id_of(credentials)
    event = auditor.create_bounded_event(
        PERMISSION_DENIED,
        source=actor or "",
        severity="medium",
        meta={
            "permission": permission.name,
            "resourceRef": resource_ref,
            "deniedBy": reason,
        },
        request=CURRENT_REQUEST,
        credentials=credentials,
    )
    if event is not None:
        event.fail(f"Permission denied: {permission.name}")
