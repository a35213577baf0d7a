"""The REST API of the ``access-tokens`` plugin, mounted at ``<plugin prefix>/access-tokens``.

Service tokens (``/service``) belong to a group and are managed by whoever the
permission policy allows for that group (the group is the ``resourceRef`` of
every check, so group-scoped delegation works). Personal tokens
(``/personal``, only with ``accessTokens.personal.enabled``) belong to the
calling user. The raw secret appears only in the create and rotate responses,
which are never cached (``no-store``). Every change needs the caller's own,
full credentials (``guard.py``). Bodies are bounded before they are read
(413). Every malformed input is a 400 naming the field; nothing here answers
500 for any input. The contract is described in ``openapi.json``, served at
``<plugin prefix>/access-tokens/openapi.json`` with its server URL set to the
mount.

This module is the HTTP side only: it reads requests and writes responses;
:class:`~flask_backstage_auth.access_tokens.service.TokenService` does the work.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import typing as t
from pathlib import Path

from flask import Blueprint, Response, jsonify, request

from flask_backstage_auth.access_tokens.format import TokenKind
from flask_backstage_auth.access_tokens.guard import require_change_credentials
from flask_backstage_auth.access_tokens.ratelimit import (
    LEAK_REPORT_CLIENTS,
    LEAK_REPORTS_PER_MINUTE,
    TooManyRequestsError,
    client_key,
)
from flask_backstage_auth.access_tokens.service import Caller, TokenService
from flask_backstage_auth.access_tokens.shared_limits import SharedRateLimit
from flask_backstage_auth.access_tokens.state import PLUGIN_ID, AccessTokensState
from flask_backstage_auth.access_tokens.store import AuditEvent, Status, TokenRecord
from flask_backstage_auth.access_tokens.validation import (
    MAX_DESCRIPTION,
    MAX_REASON,
    integer,
    normalize_group_ref,
    optional_string,
    scope_list,
    validate_name,
)
from flask_backstage_auth.credentials import Credentials, UserPrincipal
from flask_backstage_auth.errors import InputError, NotFoundError
from flask_backstage_auth.extension import get_credentials
from flask_backstage_auth.http_auth.service import check_allowed
from flask_backstage_auth.router.policies import add_auth_policy, unauthenticated
from flask_backstage_auth.router.safety import (
    MAX_BODY,
    bound_request_body,
    no_store,
    read_request_body,
)

__all__ = [
    "LEAK_REPORTS_PER_MINUTE",
    "create_blueprint",
    "event_to_dict",
    "iso",
    "openapi_document",
    "token_to_dict",
]

STATUSES: tuple[Status, ...] = ("active", "expiring", "expired", "revoked")
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_OFFSET = 2**31 - 1
MAX_LEAK_REPORT = 100

_INTEGER = re.compile(r"[0-9]{1,12}")
_OPENAPI = Path(__file__).with_name("openapi.json")

JsonObject = t.Dict[str, t.Any]


# -- formatting -----------------------------------------------------------


def iso(epoch: float | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` (milliseconds), or ``None``."""
    if epoch is None:
        return None
    moment = dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def token_to_dict(record: TokenRecord, now: float) -> JsonObject:
    """A token as the API shows it: never its secret."""
    owner_key = "userEntityRef" if record.kind == "personal" else "groupEntityRef"
    return {
        "id": record.id,
        "name": record.name,
        "description": record.description,
        "tokenPrefix": record.token_prefix,
        owner_key: record.owner_ref,
        "scopes": list(record.scopes),
        "createdBy": record.created_by,
        "createdAt": iso(record.created_at),
        "expiresAt": iso(record.expires_at),
        "lastUsedAt": iso(record.last_used_at),
        "revokedAt": iso(record.revoked_at),
        "revokedBy": record.revoked_by,
        "status": record.status(now),
    }


_EPOCH_METADATA = ("expiresAt", "graceUntil")


def event_to_dict(event: AuditEvent) -> JsonObject:
    """An audit event as the API shows it (its times in ISO 8601)."""
    metadata = dict(event.metadata)
    for key in _EPOCH_METADATA:
        value = metadata.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metadata[key] = iso(float(value))
    return {
        "id": event.id,
        "tokenId": event.token_id,
        "event": event.event,
        "actor": event.actor,
        "metadata": metadata,
        "occurredAt": iso(event.occurred_at),
    }


# -- input ----------------------------------------------------------------


def read_body(*, optional: bool = False) -> JsonObject:
    """The JSON object body; ``{}`` for an absent body when ``optional``.

    :raises PayloadTooLargeError: more than 64 KiB, chunked or not.
    :raises InputError: not JSON, or not an object.
    """
    data = read_request_body(MAX_BODY)
    if not data.strip():
        if optional:
            return {}
        raise InputError("The request body must be a JSON object")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise InputError("The request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InputError("The request body must be a JSON object")
    return body


def query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if _INTEGER.fullmatch(raw) is None or not low <= int(raw) <= high:
        raise InputError(f"{name} must be an integer between {low} and {high}")
    return int(raw)


def query_status() -> Status | None:
    raw = request.args.get("status")
    if raw is None or raw == "":
        return None
    if raw not in STATUSES:
        raise InputError(f"status must be one of {', '.join(STATUSES)}")
    return raw


# -- the blueprint --------------------------------------------------------


class _Kind:
    """The views of one kind of token, over the service."""

    def __init__(self, service: TokenService, kind: TokenKind) -> None:
        self.service = service
        self.kind: TokenKind = kind

    # Overridden by the personal kind.
    def caller(self) -> tuple[Credentials, str | None]:
        """The credentials, and the owner every token must have (``None``: any)."""
        return get_credentials(), None

    def changer(
        self, *, creating: bool = False, rotating: bool = False
    ) -> tuple[Caller, str | None]:
        """As :meth:`caller`, for a change: refused to limited or borrowed credentials.

        The guard runs before the body is read; the service runs it again.
        """
        credentials, owner = self.caller()
        return Caller(
            require_change_credentials(credentials, creating=creating, rotating=rotating)
        ), owner

    def owner_ref(self, body: JsonObject, owner: str | None) -> str:
        """The owner of a new token: the body's group, or the calling user."""
        return normalize_group_ref(body.get("groupEntityRef"))

    def owners(self, owner: str | None) -> list[str] | None:
        """The owners a list is limited to: the ``groupEntityRef`` asked for, if any."""
        group = request.args.get("groupEntityRef")
        return [normalize_group_ref(group)] if group else None

    def expiry(self, body: JsonObject) -> float:
        return self.service.expiry(
            self.kind,
            expires_at=body.get("expiresAt"),
            expires_in_days=body.get("expiresInDays"),
        )

    # -- views ------------------------------------------------------------

    def list_tokens(self) -> Response:
        credentials, owner = self.caller()
        status = query_status()
        limit = query_int("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = query_int("offset", 0, 0, MAX_OFFSET)
        page = self.service.list_tokens(
            Caller(credentials),
            self.kind,
            owner_refs=self.owners(owner),
            status=status,
            limit=limit,
            offset=offset,
        )
        return jsonify(
            tokens=[token_to_dict(r, page.now) for r in page.tokens],
            total=page.total,
            limit=limit,
            offset=offset,
        )

    def create_token(self) -> tuple[Response, int]:
        caller, owner = self.changer(creating=True)
        body = read_body()
        name = validate_name(body.get("name"))
        description = optional_string(
            body.get("description"), "description", max_length=MAX_DESCRIPTION
        )
        owner_ref = self.owner_ref(body, owner)
        scopes = self.service.check_scopes(scope_list(body.get("scopes")))
        expires_at = self.expiry(body)
        issued = self.service.create(
            caller,
            self.kind,
            name=name,
            description=description or "",
            owner_ref=owner_ref,
            scopes=scopes,
            expires_at=expires_at,
        )
        self.service.prune_audit()
        return (
            no_store(
                jsonify(token=token_to_dict(issued.record, issued.now), rawToken=issued.secret)
            ),
            201,
        )

    def get_token(self, id: str) -> Response:
        credentials, owner = self.caller()
        record = self.service.get(Caller(credentials), self.kind, id, owner=owner)
        return jsonify(token_to_dict(record, self.service.now()))

    def audit(self, id: str) -> Response:
        credentials, owner = self.caller()
        events = self.service.audit(Caller(credentials), self.kind, id, owner=owner)
        return jsonify(events=[event_to_dict(e) for e in events])

    def _revoke(self, id: str) -> TokenRecord:
        caller, owner = self.changer()
        body = read_body(optional=True)
        reason = optional_string(body.get("reason"), "reason", max_length=MAX_REASON)
        return self.service.revoke(caller, self.kind, id, owner=owner, reason=reason)

    def delete_token(self, id: str) -> tuple[str, int]:
        self._revoke(id)
        return "", 204

    def revoke_token(self, id: str) -> Response:
        record = self._revoke(id)
        return jsonify(token_to_dict(record, self.service.now()))

    def rotate_token(self, id: str) -> Response:
        caller, owner = self.changer(rotating=True)
        body = read_body(optional=True)
        grace = body.get("graceSeconds")
        grace_seconds = (
            0 if grace is None else integer(grace, "graceSeconds", 0, self.service.max_grace)
        )
        expires_at = self.expiry(body)
        issued = self.service.rotate(
            caller, self.kind, id, owner=owner, grace_seconds=grace_seconds, expires_at=expires_at
        )
        return no_store(
            jsonify(token=token_to_dict(issued.record, issued.now), rawToken=issued.secret)
        )

    def patch_token(self, id: str) -> Response:
        caller, owner = self.changer()
        body = read_body()
        description = optional_string(
            body.get("description"), "description", max_length=MAX_DESCRIPTION
        )
        scopes = None if body.get("scopes") is None else scope_list(body["scopes"])
        name = None if body.get("name") is None else validate_name(body["name"])
        record = self.service.update(
            caller, self.kind, id, owner=owner, description=description, scopes=scopes, name=name
        )
        return jsonify(token_to_dict(record, self.service.now()))

    def self_token(self) -> Response:
        credentials, owner = self.caller()
        record = self.service.find_self(credentials, self.kind, owner=owner)
        return jsonify(token_to_dict(record, self.service.now()))

    def register(self, bp: Blueprint) -> None:
        routes: list[tuple[str, str, t.Callable[..., t.Any], list[str]]] = [
            ("/", "list", self.list_tokens, ["GET"]),
            ("/", "create", self.create_token, ["POST"]),
            ("/self", "self", self.self_token, ["GET"]),
            ("/<id>", "get", self.get_token, ["GET"]),
            ("/<id>", "patch", self.patch_token, ["PATCH"]),
            ("/<id>", "delete", self.delete_token, ["DELETE"]),
            ("/<id>/audit", "audit", self.audit, ["GET"]),
            ("/<id>/revoke", "revoke", self.revoke_token, ["POST"]),
            ("/<id>/rotate", "rotate", self.rotate_token, ["POST"]),
        ]
        for path, name, view, methods in routes:
            # The collection answers with and without its trailing slash (as
            # Express routes do), never with a redirect that drops a POST's body.
            bp.add_url_rule(
                f"/{self.kind}{path}",
                f"{self.kind}_{name}",
                view,
                methods=methods,
                strict_slashes=path != "/",
            )


class _Personal(_Kind):
    def caller(self) -> tuple[Credentials, str | None]:
        if not self.service.settings.personal_enabled:
            raise NotFoundError("Personal access tokens are not enabled")
        credentials = check_allowed(get_credentials(), ("user",))
        principal = t.cast(UserPrincipal, credentials.principal)
        return credentials, principal.user_entity_ref

    def owner_ref(self, body: JsonObject, owner: str | None) -> str:
        return t.cast(str, owner)

    def owners(self, owner: str | None) -> list[str] | None:
        return [t.cast(str, owner)]


def openapi_document(mount: str) -> bytes:
    """``openapi.json`` with its server URL set to where the API is mounted."""
    document = json.loads(_OPENAPI.read_text(encoding="utf-8"))
    document["servers"] = [{"url": mount}]
    return json.dumps(document, indent=2).encode()


def create_blueprint(state: AccessTokensState) -> Blueprint:
    """A fresh ``access-tokens`` blueprint serving ``state``'s tokens.

    It is mounted at ``<BACKSTAGE_AUTH_PLUGIN_PREFIX>/access-tokens``.
    """
    mount = f"{state.auth_state.settings.plugin_prefix}/{PLUGIN_ID}"
    bp = Blueprint(PLUGIN_ID, __name__, url_prefix=mount)
    leak_reports = SharedRateLimit(
        "leak-report",
        LEAK_REPORTS_PER_MINUTE,
        per=60,
        store=state.limit_store,
        max_keys=LEAK_REPORT_CLIENTS,
    )
    document = openapi_document(mount)
    service = state.service

    @bp.before_request
    def bound_body() -> None:
        # Before any view reads a body (the credentials barrier has run already).
        bound_request_body(MAX_BODY)

    # A signed-in browser may READ with the backstage-auth cookie (GET and HEAD
    # only, as everywhere); every change needs a bearer token.
    add_auth_policy(bp, path="/service", allow="user-cookie")
    add_auth_policy(bp, path="/personal", allow="user-cookie")

    @bp.get("/service/scopes")
    def service_scopes() -> Response:
        scopes = service.scopes(Caller(get_credentials()))
        return jsonify(scopes=[scope.to_dict() for scope in scopes])

    @bp.post("/service/revoke")
    @unauthenticated
    def report_leaked() -> Response:
        """Revoke every listed token that exists: anyone may report a leaked token."""
        if not leak_reports.allow(client_key(state.client_address, request), state.clock()):
            raise TooManyRequestsError("Too many leak reports; try again in a minute")
        body = read_body()
        tokens = body.get("tokens")
        if (
            not isinstance(tokens, list)
            or len(tokens) > MAX_LEAK_REPORT
            or not all(isinstance(value, str) for value in tokens)
        ):
            raise InputError(f"tokens must be a list of at most {MAX_LEAK_REPORT} strings")
        return jsonify(revoked=service.report_leaked(t.cast(t.List[str], tokens)))

    @bp.get("/openapi.json")
    @unauthenticated
    def openapi() -> Response:
        return Response(document, mimetype="application/json")

    _Kind(service, "service").register(bp)
    _Personal(service, "personal").register(bp)
    return bp
