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
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import typing as t
from pathlib import Path

from flask import Blueprint, Response, jsonify, request

from flask_backstage_auth.access_tokens.extension import PLUGIN_ID
from flask_backstage_auth.access_tokens.format import (
    DISPLAY_PREFIX_LENGTH,
    TokenKind,
    generate_token,
    hash_token,
    parse,
)
from flask_backstage_auth.access_tokens.guard import require_change_credentials
from flask_backstage_auth.access_tokens.permissions import (
    PERSONAL_READ,
    PERSONAL_REVOKE,
    PERSONAL_WRITE,
    SERVICE_READ,
    SERVICE_REVOKE,
    SERVICE_WRITE,
)
from flask_backstage_auth.access_tokens.ratelimit import (
    LEAK_REPORT_CLIENTS,
    LEAK_REPORTS_PER_MINUTE,
    RateLimit,
    TooManyRequestsError,
    client_key,
)
from flask_backstage_auth.access_tokens.store import AuditEvent, Status, TokenRecord
from flask_backstage_auth.credentials import Credentials, ServicePrincipal, UserPrincipal
from flask_backstage_auth.errors import ConflictError, InputError, NotAllowedError, NotFoundError
from flask_backstage_auth.extension import get_credentials
from flask_backstage_auth.http_auth.service import check_allowed
from flask_backstage_auth.permissions import AuthorizeResult, Permission
from flask_backstage_auth.router.policies import add_auth_policy, unauthenticated
from flask_backstage_auth.router.safety import (
    MAX_BODY,
    bound_request_body,
    no_store,
    read_request_body,
)

if t.TYPE_CHECKING:  # pragma: no cover
    from flask_backstage_auth.access_tokens.extension import AccessTokensState

DAY = 86400
STATUSES: tuple[Status, ...] = ("active", "expiring", "expired", "revoked")
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_OFFSET = 2**31 - 1
MAX_DESCRIPTION = 500
MAX_REASON = 500
MAX_LEAK_REPORT = 100
LEAK_ACTOR = "leak-report"
LEAK_REASON = "reported as leaked"
NOT_A_TOKEN = "The caller is not an access token"

_NAME = re.compile(r"[a-z0-9-]{1,100}")
_ENTITY_PART = re.compile(r"[a-z0-9]+(?:[-_.][a-z0-9]+)*")
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


def _string(body: JsonObject, field: str, *, max_length: int, default: str | None) -> str | None:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InputError(f"{field} must be a string")
    if len(value) > max_length:
        raise InputError(f"{field} must be at most {max_length} characters")
    return value


def validate_name(body: JsonObject) -> str:
    name = body.get("name")
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise InputError("name must be 1-100 characters of a-z, 0-9 and '-'")
    return name


def normalize_group_ref(value: object, field: str = "groupEntityRef") -> str:
    """``group:<namespace>/<name>`` in lower case (``group:name``: the default namespace).

    :raises InputError: not a group entity ref.
    """
    message = f"{field} must be a group entity ref, 'group:<namespace>/<name>'"
    if not isinstance(value, str) or len(value) > 200:
        raise InputError(message)
    ref = value.strip().lower()
    if not ref.startswith("group:"):
        raise InputError(message)
    rest = ref[len("group:") :]
    namespace, _, name = rest.rpartition("/")
    if not _:
        namespace = "default"
    if not (_ENTITY_PART.fullmatch(namespace) and _ENTITY_PART.fullmatch(name)):
        raise InputError(message)
    if len(namespace) > 63 or len(name) > 63:
        raise InputError(message)
    return f"group:{namespace}/{name}"


def scope_list(raw: object) -> list[str]:
    """A non-empty list of at most 100 scope ids, deduplicated in order."""
    if (
        not isinstance(raw, list)
        or not raw
        or len(raw) > 100
        or not all(isinstance(s, str) for s in raw)
    ):
        raise InputError("scopes must be a non-empty list of scope ids")
    return list(dict.fromkeys(t.cast(t.List[str], raw)))


def validate_scopes(body: JsonObject, state: AccessTokensState) -> list[str]:
    unique = scope_list(body.get("scopes"))
    unknown = state.catalogue.unknown(unique)
    if unknown:
        shown = ", ".join(repr(s[:100]) for s in unknown[:10])
        raise InputError(f"scopes: unknown scope(s) {shown}")
    return unique


def parse_iso(value: object, field: str) -> float:
    """Epoch seconds of an ISO 8601 date-time (UTC when it has no offset)."""
    message = f"{field} must be an ISO 8601 date-time"
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        raise InputError(message)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(message) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    try:
        return moment.timestamp()
    except (OverflowError, ValueError, OSError):  # pragma: no cover - platform limits
        raise InputError(message) from None


def _integer(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{field} must be an integer between {low} and {high}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise InputError(f"{field} must be an integer between {low} and {high}")
        value = int(value)
    if not low <= value <= high:
        raise InputError(f"{field} must be an integer between {low} and {high}")
    return value


def resolve_expiry(
    body: JsonObject, now: float, *, default: float, maximum: float, required: bool = False
) -> float | None:
    """The expiry asked for by ``expiresAt`` or ``expiresInDays`` (else ``now + default``)."""
    at = body.get("expiresAt")
    days = body.get("expiresInDays")
    if at is not None and days is not None:
        raise InputError("Give either expiresAt or expiresInDays, not both")
    if days is not None:
        max_days = max(1, int(maximum // DAY))
        return now + _integer(days, "expiresInDays", 1, max_days) * DAY
    if at is not None:
        expires_at = parse_iso(at, "expiresAt")
        if expires_at <= now:
            raise InputError("expiresAt must be in the future")
        if expires_at > now + maximum:
            raise InputError(f"expiresAt must be at most {int(maximum // DAY)} days in the future")
        return expires_at
    return now + default if required else None


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


# -- identity -------------------------------------------------------------


def actor_of(credentials: Credentials) -> str:
    principal = credentials.principal
    if isinstance(principal, UserPrincipal):
        return principal.user_entity_ref
    if isinstance(principal, ServicePrincipal):
        return principal.subject
    return "unknown"  # pragma: no cover - the barrier refuses 'none'


def _lookup_id(token_id: str) -> str:
    if len(token_id) > 36:
        raise NotFoundError(f"No token with id '{token_id[:36]}...'")
    return token_id


# -- the blueprint --------------------------------------------------------


class _Kind:
    """What differs between service and personal tokens."""

    def __init__(
        self,
        state: AccessTokensState,
        kind: TokenKind,
        read: Permission,
        write: Permission,
        revoke: Permission,
    ) -> None:
        self.state = state
        self.kind: TokenKind = kind
        self.read = read
        self.write = write
        self.revoke = revoke

    # Overridden by the personal kind.
    def caller(self) -> tuple[Credentials, str | None]:
        """The credentials, and the owner every token must have (``None``: any)."""
        return get_credentials(), None

    def changer(self, *, creating: bool = False) -> tuple[Credentials, str | None]:
        """As :meth:`caller`, for a change: refused to limited or borrowed credentials."""
        credentials, owner = self.caller()
        return require_change_credentials(credentials, creating=creating), owner

    def authorize(self, credentials: Credentials, permission: Permission, ref: str | None) -> None:
        decision = self.state.auth_state.permissions.authorize(
            credentials, permission, resource_ref=ref
        )
        if decision.result is not AuthorizeResult.ALLOW:
            raise NotAllowedError(f"Permission denied: {permission.name}")

    def load(self, token_id: str, owner: str | None) -> TokenRecord:
        record = self.state.store.get(_lookup_id(token_id), self.kind)
        if record is None or (owner is not None and record.owner_ref != owner):
            raise NotFoundError(f"No {self.kind} token with id '{token_id}'")
        return record

    def lifetime(self) -> tuple[float, float]:
        settings = self.state.settings
        if self.kind == "personal":
            return settings.personal_default_lifetime, settings.personal_max_lifetime
        return settings.default_lifetime, settings.max_lifetime

    def now(self) -> float:
        return self.state.clock()


class _Personal(_Kind):
    def caller(self) -> tuple[Credentials, str | None]:
        if not self.state.settings.personal_enabled:
            raise NotFoundError("Personal access tokens are not enabled")
        credentials = check_allowed(get_credentials(), ("user",))
        principal = t.cast(UserPrincipal, credentials.principal)
        return credentials, principal.user_entity_ref


def _register_kind(bp: Blueprint, kind: _Kind) -> None:
    state = kind.state
    base = f"/{kind.kind}"
    service = kind.kind == "service"

    def view_name(name: str) -> str:
        return f"{kind.kind}_{name}"

    def list_tokens() -> Response:
        credentials, owner = kind.caller()
        status = query_status()
        limit = query_int("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = query_int("offset", 0, 0, MAX_OFFSET)
        owners: list[str] | None
        if service:
            group = request.args.get("groupEntityRef")
            ref = normalize_group_ref(group) if group else None
            owners = [ref] if ref is not None else None
        else:
            ref = owner
            owners = [t.cast(str, owner)]
        kind.authorize(credentials, kind.read, ref)
        now = kind.now()
        records, total = state.store.list_tokens(
            kind.kind, now=now, owner_refs=owners, status=status, limit=limit, offset=offset
        )
        return jsonify(
            tokens=[token_to_dict(r, now) for r in records],
            total=total,
            limit=limit,
            offset=offset,
        )

    def create_token() -> tuple[Response, int]:
        credentials, owner = kind.changer(creating=True)
        body = read_body()
        name = validate_name(body)
        description = _string(body, "description", max_length=MAX_DESCRIPTION, default="")
        if service:
            owner_ref = normalize_group_ref(body.get("groupEntityRef"))
        else:
            owner_ref = t.cast(str, owner)
        scopes = validate_scopes(body, state)
        now = kind.now()
        default, maximum = kind.lifetime()
        expires_at = t.cast(
            float, resolve_expiry(body, now, default=default, maximum=maximum, required=True)
        )
        kind.authorize(credentials, kind.write, owner_ref)
        if not service:
            limit = state.settings.personal_max_per_user
            if state.store.count_usable(kind.kind, owner_ref, now=now) >= limit:
                raise ConflictError(f"You already have {limit} usable personal access tokens")
        new = generate_token(kind.kind)
        record = state.store.create(
            kind=kind.kind,
            name=name,
            description=t.cast(str, description),
            digest=new.digest,
            token_prefix=new.display_prefix,
            owner_ref=owner_ref,
            scopes=scopes,
            created_by=actor_of(credentials),
            expires_at=expires_at,
            now=now,
        )
        state.store.prune_events(before=now - state.settings.audit_retention)
        return no_store(jsonify(token=token_to_dict(record, now), rawToken=new.value)), 201

    def get_token(id: str) -> Response:
        credentials, owner = kind.caller()
        record = kind.load(id, owner)
        kind.authorize(credentials, kind.read, record.owner_ref)
        return jsonify(token_to_dict(record, kind.now()))

    def audit(id: str) -> Response:
        credentials, owner = kind.caller()
        record = kind.load(id, owner)
        kind.authorize(credentials, kind.read, record.owner_ref)
        events = state.store.events(record.id)
        return jsonify(events=[event_to_dict(e) for e in events])

    def _revoke(id: str) -> TokenRecord:
        credentials, owner = kind.changer()
        body = read_body(optional=True)
        reason = _string(body, "reason", max_length=MAX_REASON, default=None)
        record = kind.load(id, owner)
        kind.authorize(credentials, kind.revoke, record.owner_ref)
        revoked = state.store.revoke(
            record.id, kind.kind, actor=actor_of(credentials), reason=reason, now=kind.now()
        )
        state.forget(record.id)
        return revoked

    def delete_token(id: str) -> tuple[str, int]:
        _revoke(id)
        return "", 204

    def revoke_token(id: str) -> Response:
        record = _revoke(id)
        return jsonify(token_to_dict(record, kind.now()))

    def rotate_token(id: str) -> Response:
        credentials, owner = kind.changer()
        body = read_body(optional=True)
        max_grace = int(state.settings.max_rotation_grace)
        grace = body.get("graceSeconds")
        grace_seconds = 0 if grace is None else _integer(grace, "graceSeconds", 0, max_grace)
        now = kind.now()
        default, maximum = kind.lifetime()
        expires_at = t.cast(
            float, resolve_expiry(body, now, default=default, maximum=maximum, required=True)
        )
        record = kind.load(id, owner)
        kind.authorize(credentials, kind.write, record.owner_ref)
        grace_until = min(now + grace_seconds, record.expires_at) if grace_seconds else None
        new = generate_token(kind.kind)
        rotated = state.store.rotate(
            record.id,
            kind.kind,
            digest=new.digest,
            token_prefix=new.display_prefix,
            expires_at=expires_at,
            grace_until=grace_until,
            actor=actor_of(credentials),
            now=now,
        )
        state.forget(record.id)
        return no_store(jsonify(token=token_to_dict(rotated, now), rawToken=new.value))

    def patch_token(id: str) -> Response:
        credentials, owner = kind.changer()
        body = read_body()
        description = _string(body, "description", max_length=MAX_DESCRIPTION, default=None)
        scopes: list[str] | None = None
        if body.get("scopes") is not None:
            scopes = scope_list(body["scopes"])
        if description is None and scopes is None:
            raise InputError("Nothing to update: give description or scopes")
        record = kind.load(id, owner)
        kind.authorize(credentials, kind.write, record.owner_ref)
        if scopes is not None:
            added = [s for s in scopes if s not in record.scopes]
            if added:
                shown = ", ".join(repr(s[:100]) for s in added[:10])
                raise InputError(f"scopes may only be narrowed; not held: {shown}")
        now = kind.now()
        if record.revoked_at is not None:
            raise ConflictError(f"Token '{record.id}' is revoked")
        updated = state.store.update(
            record.id,
            kind.kind,
            description=description,
            scopes=scopes,
            actor=actor_of(credentials),
            now=now,
        )
        if scopes is not None:
            state.forget(record.id)  # cached verifications carry the old restrictions
        return jsonify(token_to_dict(updated, now))

    def self_token() -> Response:
        credentials, owner = kind.caller()
        record: TokenRecord | None = None
        if service:
            principal = credentials.principal
            if isinstance(principal, ServicePrincipal) and principal.subject.startswith(
                "access-token:"
            ):
                record = _by_digest(credentials, "service")
                if record is not None and principal.subject != (
                    f"access-token:{record.owner_ref}:{record.name}"
                ):
                    record = None
        else:
            record = _by_digest(credentials, "personal")
            if record is not None and record.owner_ref != owner:
                record = None
        if record is None:
            raise NotFoundError(NOT_A_TOKEN)
        return jsonify(token_to_dict(record, kind.now()))

    def _by_digest(credentials: Credentials, wanted: TokenKind) -> TokenRecord | None:
        token = credentials.token
        if token is None or parse(token) != wanted:
            return None
        match, _ = state.store.find_by_digest(hash_token(token), token[:DISPLAY_PREFIX_LENGTH])
        if match is None or match.record.kind != wanted:
            return None
        return match.record

    routes: list[tuple[str, str, t.Callable[..., t.Any], list[str]]] = [
        ("/", "list", list_tokens, ["GET"]),
        ("/", "create", create_token, ["POST"]),
        ("/self", "self", self_token, ["GET"]),
        ("/<id>", "get", get_token, ["GET"]),
        ("/<id>", "patch", patch_token, ["PATCH"]),
        ("/<id>", "delete", delete_token, ["DELETE"]),
        ("/<id>/audit", "audit", audit, ["GET"]),
        ("/<id>/revoke", "revoke", revoke_token, ["POST"]),
        ("/<id>/rotate", "rotate", rotate_token, ["POST"]),
    ]
    for path, name, view, methods in routes:
        bp.add_url_rule(base + path, view_name(name), view, methods=methods)


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
    leak_reports = RateLimit(LEAK_REPORTS_PER_MINUTE, per=60, max_keys=LEAK_REPORT_CLIENTS)
    document = openapi_document(mount)

    @bp.before_request
    def bound_body() -> None:
        # Before any view reads a body (the credentials barrier has run already).
        bound_request_body(MAX_BODY)

    # A signed-in browser may READ with the backstage-auth cookie (GET and HEAD
    # only, as everywhere); every change needs a bearer token.
    add_auth_policy(bp, path="/service", allow="user-cookie")
    add_auth_policy(bp, path="/personal", allow="user-cookie")
    service = _Kind(state, "service", SERVICE_READ, SERVICE_WRITE, SERVICE_REVOKE)
    personal = _Personal(state, "personal", PERSONAL_READ, PERSONAL_WRITE, PERSONAL_REVOKE)

    @bp.get("/service/scopes")
    def service_scopes() -> Response:
        credentials = get_credentials()
        service.authorize(credentials, SERVICE_READ, None)
        return jsonify(scopes=[scope.to_dict() for scope in state.catalogue.all()])

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
        now = state.clock()
        revoked: set[str] = set()
        for value in dict.fromkeys(t.cast(t.List[str], tokens)):
            kind = parse(value)
            if kind is None:
                continue  # not one of ours, or a bad checksum: no database query
            match, _ = state.store.find_by_digest(hash_token(value), value[:DISPLAY_PREFIX_LENGTH])
            if match is None or match.record.id in revoked:
                continue
            record = match.record
            if match.previous_secret and (
                record.previous_expires_at is None or record.previous_expires_at <= now
            ):
                continue  # a rotated-out secret that no longer works
            try:
                state.store.revoke(
                    record.id, record.kind, actor=LEAK_ACTOR, reason=LEAK_REASON, now=now
                )
            except (ConflictError, NotFoundError):
                continue
            state.forget(record.id)
            revoked.add(record.id)
        return jsonify(revoked=len(revoked))

    @bp.get("/openapi.json")
    @unauthenticated
    def openapi() -> Response:
        return Response(document, mimetype="application/json")

    _register_kind(bp, service)
    _register_kind(bp, personal)
    return bp
