"""What can be done with access tokens, whoever asks: the REST API, the admin page, the CLI.

:class:`TokenService` lists, creates, rotates, narrows and revokes tokens,
and takes leak reports. Every call names its :data:`Actor`:

* a :class:`Caller`: a request's credentials. The permission policy judges
  each call (the owning group, or the user, is the ``resourceRef``), and
  every change first passes the least-privilege guard
  (:func:`~flask_backstage_auth.access_tokens.guard.require_change_credentials`)
  here, whether or not the view checked it already;
* an :class:`Operator`: whoever runs the command line. They hold the
  database, so no permission is checked; changes are audited with their name.

Every change is an event of the ``auditor`` service
(:mod:`~flask_backstage_auth.access_tokens.audit`): ``initiated``, then
``succeeded`` or ``failed`` (a refusal included), with the token's id, never
its secret. The audit table is written from those events.

Concurrent changes lose nothing. A rotation or a ``PATCH`` is decided on
the record read, then written only if the row is still at that version
(a compare-and-swap in the store); when another change came first, it is
decided again on the current record, at most :data:`ATTEMPTS` times:

* a ``PATCH`` applies on top of the other change, unless a scope it keeps
  was removed meanwhile (409: it never puts a removed scope back);
* a rotation that finds the token rotated meanwhile is a 409: the first
  rotation's secret is the token's, the second's never existed;
* a change that finds the token revoked is a 409 (``Token '…' is revoked``).

Input is checked by :mod:`~flask_backstage_auth.access_tokens.validation`
before it comes here; the checks that need the configuration (scopes known,
lifetimes, grace) are made here. No Flask here: HTTP lives in
:mod:`~flask_backstage_auth.access_tokens.api`.
"""

from __future__ import annotations

import typing as t
from contextlib import contextmanager
from dataclasses import dataclass, field

from flask_backstage_auth.access_tokens import audit as events
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
from flask_backstage_auth.access_tokens.scopes import Scope, ScopeCatalogue
from flask_backstage_auth.access_tokens.settings import AccessTokenSettings
from flask_backstage_auth.access_tokens.store import (
    AuditEvent,
    ChangedConcurrently,
    LimitReached,
    SqlAccessTokenStore,
    Status,
    TokenRecord,
    service_subject,
)
from flask_backstage_auth.access_tokens.usage import UsageRecorder
from flask_backstage_auth.access_tokens.validation import (
    integer,
    resolve_expiry,
    shown,
)
from flask_backstage_auth.audit.service import (
    CURRENT_REQUEST,
    AuditorEvent,
    AuditorService,
    Severity,
)
from flask_backstage_auth.clock import Clock
from flask_backstage_auth.credentials import Credentials, ServicePrincipal, UserPrincipal
from flask_backstage_auth.errors import ConflictError, InputError, NotFoundError
from flask_backstage_auth.permissions import AuthorizeResult, Permission, PermissionsService

#: The actor of revocations by leak report, in the audit trail.
LEAK_ACTOR = "leak-report"
LEAK_REASON = "reported as leaked"
NOT_A_TOKEN = "The caller is not an access token"
#: How long a read waits, at most, for this instance's recorded uses to be written.
READ_WAIT = 2.0
#: How many times a change is decided again after another change came first.
ATTEMPTS = 3

_READ: dict[TokenKind, Permission] = {"service": SERVICE_READ, "personal": PERSONAL_READ}
_WRITE: dict[TokenKind, Permission] = {"service": SERVICE_WRITE, "personal": PERSONAL_WRITE}
_REVOKE: dict[TokenKind, Permission] = {"service": SERVICE_REVOKE, "personal": PERSONAL_REVOKE}


def actor_of(credentials: Credentials) -> str:
    """The name credentials are audited under: the user entity ref or the service subject."""
    principal = credentials.principal
    if isinstance(principal, UserPrincipal):
        return principal.user_entity_ref
    if isinstance(principal, ServicePrincipal):
        return principal.subject
    return "unknown"  # pragma: no cover - the barrier refuses 'none'


@dataclass(frozen=True)
class Caller:
    """A request's credentials, judged by the permission policy and the guard."""

    credentials: Credentials

    @property
    def name(self) -> str:
        return actor_of(self.credentials)


@dataclass(frozen=True)
class Operator:
    """Whoever runs the command line: no permission is checked."""

    name: str


Actor = t.Union[Caller, Operator]
#: The actor of every change made by ``flask backstage-auth tokens``.
CLI = Operator("cli")


@dataclass(frozen=True)
class TokenPage:
    """A page of tokens, their total, and the moment their status is as of."""

    tokens: list[TokenRecord]
    total: int
    now: float


@dataclass
class Outcome:
    """What a change adds to its event's ``meta`` when it succeeds."""

    meta: dict[str, t.Any] = field(default_factory=dict)

    def record(self, record: TokenRecord, **more: t.Any) -> None:
        # tokenVersion: the row's seq in the audit table (commit order).
        self.meta.update(tokenId=record.id, tokenVersion=record.version, **more)


@dataclass(frozen=True)
class Issued:
    """A created or rotated token, and its secret: shown once, never stored."""

    record: TokenRecord
    secret: str
    now: float


class TokenService:
    """Access-token operations over a store, a catalogue and the settings.

    :param forget: drops this instance's cached verifications of a token id
        (called on every revocation, rotation and narrowing).
    :param usage: the recorder of token uses; reads first wait (at most
        :data:`READ_WAIT` seconds) for this instance's uses to be written, so
        that ``lastUsedAt`` shows them.
    :param auditor: the ``access-tokens`` plugin's auditor (``None``: no
        audit events, nor audit table rows).
    """

    def __init__(
        self,
        store: SqlAccessTokenStore,
        catalogue: ScopeCatalogue,
        settings: AccessTokenSettings,
        permissions: PermissionsService,
        *,
        clock: Clock,
        forget: t.Callable[[str], None],
        usage: UsageRecorder | None = None,
        auditor: AuditorService | None = None,
    ) -> None:
        self.store = store
        self.catalogue = catalogue
        self.settings = settings
        self.permissions = permissions
        self.clock = clock
        self._forget = forget
        self._usage = usage
        self._auditor = auditor

    # -- limits ------------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    @property
    def max_grace(self) -> int:
        """The longest rotation grace, in seconds."""
        return int(self.settings.max_rotation_grace)

    def check_scopes(self, scopes: list[str]) -> list[str]:
        """``scopes``, if the catalogue has every one.

        :raises InputError: naming the unknown ones.
        """
        unknown = self.catalogue.unknown(scopes)
        if unknown:
            raise InputError(f"scopes: unknown scope(s) {shown(unknown)}")
        return scopes

    def expiry(
        self, kind: TokenKind, *, expires_at: object = None, expires_in_days: object = None
    ) -> float:
        """The expiry of a new or rotated token: asked for, or the kind's default.

        :param expires_at: an ISO 8601 date-time (``expiresAt``).
        :param expires_in_days: a number of days (``expiresInDays``).
        :raises InputError: both given, not in the future, or past the kind's maximum.
        """
        default, maximum = self.settings.lifetime(kind)
        return resolve_expiry(
            expires_at, expires_in_days, self.now(), default=default, maximum=maximum
        )

    # -- who may -----------------------------------------------------------

    def may_read(self, credentials: Credentials, kind: TokenKind, ref: str | None = None) -> bool:
        """Whether the policy lets ``credentials`` read ``kind`` tokens (of owner ``ref``)."""
        decision = self.permissions.authorize(credentials, _READ[kind], resource_ref=ref)
        return decision.result is AuthorizeResult.ALLOW

    # Only an Operator is let through unjudged; anything else must carry credentials.
    def _require(self, actor: Actor, permission: Permission, ref: str | None) -> None:
        if not isinstance(actor, Operator):
            self.permissions.require(actor.credentials, permission, resource_ref=ref)

    def _changer(self, actor: Actor, *, creating: bool = False, rotating: bool = False) -> str:
        """The actor's audited name, once the guard lets it change tokens."""
        if not isinstance(actor, Operator):
            require_change_credentials(actor.credentials, creating=creating, rotating=rotating)
        return actor.name

    def _load(self, kind: TokenKind, token_id: str, owner: str | None) -> TokenRecord:
        if len(token_id) > 36:
            raise NotFoundError(f"No token with id '{token_id[:36]}...'")
        record = self.store.get(token_id, kind)
        if record is None or (owner is not None and record.owner_ref != owner):
            raise NotFoundError(f"No {kind} token with id '{token_id}'")
        return record

    def _event(
        self,
        event_id: str,
        actor: Actor | None,
        *,
        severity: Severity = "high",
        meta: t.Mapping[str, t.Any],
    ) -> AuditorEvent | None:
        """Log an event ``initiated``, as the actor's (``None``: a leak report)."""
        if self._auditor is None:
            return None
        return self._auditor.create_event(
            event_id,
            severity=severity,
            meta=meta,
            request=CURRENT_REQUEST,
            credentials=actor.credentials if isinstance(actor, Caller) else None,
            actor_id=LEAK_ACTOR if actor is None else actor.name,
        )

    @contextmanager
    def _audited(
        self,
        event_id: str,
        actor: Actor | None,
        *,
        severity: Severity = "high",
        meta: t.Mapping[str, t.Any],
    ) -> t.Iterator[Outcome]:
        """The block is the change: its event fails with the block's error, or succeeds."""
        event = self._event(event_id, actor, severity=severity, meta=meta)
        outcome = Outcome()
        try:
            yield outcome
        except Exception as exc:
            if event is not None:
                event.fail(exc)
            raise
        if event is not None:
            event.success(meta=outcome.meta)

    def _settle_usage(self) -> None:
        if self._usage is not None:
            self._usage.flush(READ_WAIT)

    # -- reads -------------------------------------------------------------

    def scopes(self, actor: Actor) -> list[Scope]:
        """The scope catalogue (needs ``access-tokens:service:read``)."""
        self._require(actor, SERVICE_READ, None)
        return list(self.catalogue.all())

    def list_tokens(
        self,
        actor: Actor,
        kind: TokenKind,
        *,
        owner_refs: t.Sequence[str] | None = None,
        status: Status | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> TokenPage:
        """A page of tokens, newest first; the resource ref is the one owner asked for."""
        ref = owner_refs[0] if owner_refs is not None and len(owner_refs) == 1 else None
        self._require(actor, _READ[kind], ref)
        self._settle_usage()
        now = self.now()
        records, total = self.store.list_tokens(
            kind, now=now, owner_refs=owner_refs, status=status, limit=limit, offset=offset
        )
        return TokenPage(records, total, now)

    def get(
        self, actor: Actor, kind: TokenKind, token_id: str, *, owner: str | None = None
    ) -> TokenRecord:
        """One token (of ``owner`` only, when given).

        :raises NotFoundError: no such token, or another owner's.
        """
        self._settle_usage()
        record = self._load(kind, token_id, owner)
        self._require(actor, _READ[kind], record.owner_ref)
        return record

    def audit(
        self, actor: Actor, kind: TokenKind, token_id: str, *, owner: str | None = None
    ) -> list[AuditEvent]:
        """A token's audit events, newest first."""
        record = self.get(actor, kind, token_id, owner=owner)
        return self.store.events(record.id)

    def find_self(
        self, credentials: Credentials, kind: TokenKind, *, owner: str | None = None
    ) -> TokenRecord:
        """The access token the credentials authenticated with (its use included).

        :raises NotFoundError: they did not come from one of ``kind`` (of ``owner``).
        """
        self._settle_usage()
        record: TokenRecord | None = None
        principal = credentials.principal
        if kind == "personal":
            record = self._by_secret(credentials.token, kind)
            if record is not None and record.owner_ref != owner:
                record = None
        elif isinstance(principal, ServicePrincipal) and principal.subject.startswith(
            "access-token:"
        ):
            record = self._by_secret(credentials.token, kind)
            if record is not None and principal.subject != service_subject(record):
                record = None
        if record is None:
            raise NotFoundError(NOT_A_TOKEN)
        return record

    def _by_secret(self, token: str | None, kind: TokenKind) -> TokenRecord | None:
        if token is None or parse(token) != kind:
            return None
        match, _ = self.store.find_by_digest(hash_token(token), token[:DISPLAY_PREFIX_LENGTH])
        if match is None or match.record.kind != kind:
            return None
        return match.record

    # -- changes -----------------------------------------------------------

    def create(
        self,
        actor: Actor,
        kind: TokenKind,
        *,
        name: str,
        description: str,
        owner_ref: str,
        scopes: t.Sequence[str],
        expires_at: float,
    ) -> Issued:
        """A new token of ``owner_ref``, audited as created by the actor.

        :raises NotAllowedError: the guard or the policy refuses.
        :raises ConflictError: the owner has a usable token of that name, or
            the user has ``maxTokensPerUser`` usable personal tokens.
        """
        meta = {
            "kind": kind,
            "name": name,
            "ownerRef": owner_ref,
            "scopes": list(scopes),
            "expiresAt": expires_at,
        }
        with self._audited(events.CREATE, actor, meta=meta) as audit:
            created_by = self._changer(actor, creating=True)
            self._require(actor, _WRITE[kind], owner_ref)
            now = self.now()
            limit = self.settings.personal_max_per_user if kind == "personal" else None
            new = generate_token(kind)
            try:
                record = self.store.create(
                    kind=kind,
                    name=name,
                    description=description,
                    digest=new.digest,
                    token_prefix=new.display_prefix,
                    owner_ref=owner_ref,
                    scopes=scopes,
                    created_by=created_by,
                    expires_at=expires_at,
                    now=now,
                    max_usable=limit,  # counted in the insert's transaction, under the owner's lock
                )
            except LimitReached as exc:
                raise ConflictError(
                    f"You already have {exc.limit} usable personal access tokens"
                ) from None
            audit.record(record, tokenPrefix=record.token_prefix)
            return Issued(record, new.value, now)

    def prune_audit(self) -> int:
        """Delete audit events past ``auditRetentionDays``; their count."""
        return self.store.prune_events(before=self.now() - self.settings.audit_retention)

    def rotate(
        self,
        actor: Actor,
        kind: TokenKind,
        token_id: str,
        *,
        owner: str | None = None,
        grace_seconds: int = 0,
        expires_at: float,
    ) -> Issued:
        """A new secret and expiry; the old secret works ``grace_seconds`` more
        (never past the token's current expiry).

        :raises InputError: a grace past ``maxRotationGraceSeconds``.
        :raises NotFoundError: no such token.
        :raises ConflictError: it is revoked or expired, or another request
            rotated it since it was read.
        """
        meta = {"kind": kind, "tokenId": token_id[:36], "expiresAt": expires_at}
        with self._audited(events.ROTATE, actor, meta=meta) as audit:
            self._changer(actor, rotating=True)
            integer(grace_seconds, "graceSeconds", 0, self.max_grace)
            record = self._load(kind, token_id, owner)
            self._require(actor, _WRITE[kind], record.owner_ref)
            new = generate_token(kind)
            for _ in range(ATTEMPTS):
                now = self.now()
                grace_until = min(now + grace_seconds, record.expires_at) if grace_seconds else None
                try:
                    rotated = self.store.rotate(
                        record.id,
                        kind,
                        digest=new.digest,
                        token_prefix=new.display_prefix,
                        expires_at=expires_at,
                        grace_until=grace_until,
                        now=now,
                        expected_version=record.version,
                    )
                except ChangedConcurrently as exc:
                    current = exc.current
                    if (current.token_prefix, current.rotated_at) != (
                        record.token_prefix,
                        record.rotated_at,
                    ):
                        raise ConflictError(
                            f"Token '{record.id}' was rotated by another request meanwhile"
                        ) from None
                    record = current  # another change (a PATCH): rotate the token as it is now
                    continue
                self._forget(record.id)
                kept = rotated.previous_expires_at
                audit.record(rotated, graceUntil=kept, tokenPrefix=rotated.token_prefix)
                return Issued(rotated, new.value, now)
            raise ConflictError(f"Token '{record.id}' keeps changing; try again")

    def revoke(
        self,
        actor: Actor,
        kind: TokenKind,
        token_id: str,
        *,
        owner: str | None = None,
        reason: str | None = None,
    ) -> TokenRecord:
        """Revoke a token; refused at once on this instance.

        :raises NotFoundError: no such token.
        :raises ConflictError: already revoked.
        """
        meta = {"kind": kind, "tokenId": token_id[:36], "reason": reason}
        with self._audited(events.REVOKE, actor, meta=meta) as audit:
            revoked_by = self._changer(actor)
            record = self._load(kind, token_id, owner)
            self._require(actor, _REVOKE[kind], record.owner_ref)
            revoked = self.store.revoke(
                record.id, kind, actor=revoked_by, reason=reason, now=self.now()
            )
            self._forget(record.id)
            audit.record(revoked)
            return revoked

    def update(
        self,
        actor: Actor,
        kind: TokenKind,
        token_id: str,
        *,
        owner: str | None = None,
        description: str | None = None,
        scopes: t.Sequence[str] | None = None,
        name: str | None = None,
    ) -> TokenRecord:
        """Rename, change the description, or narrow the scopes (never widen them).

        :raises InputError: nothing to change, or a scope the token does not hold.
        :raises ConflictError: the token is revoked, the name is taken, or
            another request removed one of ``scopes`` since it was read.
        """
        changes: dict[str, t.Any] = {}
        if name is not None:
            changes["name"] = name
        if description is not None:
            changes["description"] = True  # that it changed; the text is in the token
        if scopes is not None:
            changes["scopes"] = list(scopes)
        meta = {"kind": kind, "tokenId": token_id[:36], **changes}
        with self._audited(events.UPDATE, actor, severity="medium", meta=meta) as audit:
            self._changer(actor)
            if name is None and description is None and scopes is None:
                raise InputError("Nothing to update: give name, description or scopes")
            record = first = self._load(kind, token_id, owner)
            self._require(actor, _WRITE[kind], record.owner_ref)
            for _ in range(ATTEMPTS):
                if scopes is not None:
                    added = [s for s in scopes if s not in record.scopes]
                    if added and record is first:
                        raise InputError(f"scopes may only be narrowed; not held: {shown(added)}")
                    if added:  # held when the request came, removed by another since
                        raise ConflictError(
                            f"Token '{record.id}' was changed by another request meanwhile;"
                            f" no longer held: {shown(added)}"
                        )
                if record.revoked_at is not None:
                    raise ConflictError(f"Token '{record.id}' is revoked")
                try:
                    updated = self.store.update(
                        record.id,
                        kind,
                        description=description,
                        scopes=scopes,
                        name=name,
                        expected_version=record.version,
                    )
                except ChangedConcurrently as exc:
                    record = exc.current
                    continue
                if scopes is not None or name is not None:
                    # Cached verifications carry the old restrictions (and a service
                    # token's old name, in its subject).
                    self._forget(record.id)
                audit.record(updated)
                return updated
            raise ConflictError(f"Token '{record.id}' keeps changing; try again")

    def report_leaked(self, values: t.Iterable[str]) -> int:
        """Revoke every token among ``values`` that still works; how many were.

        Anyone may report a leaked token: holding it is the proof. A string
        that is not one of ours (or fails its checksum) costs no query.
        """
        now = self.now()
        unique = list(dict.fromkeys(values))
        revoked: list[str] = []
        with self._audited(
            events.LEAK_REPORT, None, severity="critical", meta={"reported": len(unique)}
        ) as audit:
            audit.meta["revoked"] = revoked  # filled as it goes: a failure shows how far
            for value in unique:
                if parse(value) is None:
                    continue
                match, _ = self.store.find_by_digest(
                    hash_token(value), value[:DISPLAY_PREFIX_LENGTH]
                )
                if match is None or match.record.id in revoked or not match.works(now):
                    continue  # unknown, counted already, or a rotated-out secret no longer working
                if self._revoke_leaked(match.record, now):
                    revoked.append(match.record.id)
            return len(revoked)

    def _revoke_leaked(self, record: TokenRecord, now: float) -> bool:
        """Revoke a reported token, as its own ``access-token-revoke`` event."""
        meta = {"kind": record.kind, "tokenId": record.id, "reason": LEAK_REASON}
        try:
            with self._audited(events.REVOKE, None, meta=meta) as audit:
                revoked = self.store.revoke(
                    record.id, record.kind, actor=LEAK_ACTOR, reason=LEAK_REASON, now=now
                )
                audit.record(revoked)
        except (ConflictError, NotFoundError):
            return False  # revoked meanwhile: its event says so
        self._forget(record.id)
        return True
