"""Access tokens as a token handler of the auth service.

Runs after ``externalAccess``. A string with our prefix but a bad checksum is
refused without touching the database; otherwise one indexed query by digest.
Service tokens become ``access-token:<group>:<name>`` service principals,
personal tokens the user they belong to, both restricted to their scopes. A
verification is cached at most ``revocation_check`` seconds (an old secret's:
never past its grace end), which bounds how long a token revoked on another
instance may still pass when no notification reaches it
(:mod:`~flask_backstage_auth.access_tokens.propagation`); the revoking
instance drops it at once.

A use is noted (``last_used_at``, at most once per token per
``last_used_interval``) through a
:class:`~flask_backstage_auth.access_tokens.usage.UsageRecorder`: the request
does not wait for that write, and its failure never fails it. The use events
are the auditor's (:mod:`~flask_backstage_auth.access_tokens.audit`), which
feed the audit table through the same recorder: ``access-token-first-use``
(the token had never been used), ``access-token-old-secret-use`` (once per
rotation) and ``access-token-failed-use`` (at most once per token per interval).
These throttles count in each process; with a shared store
(:mod:`~flask_backstage_auth.access_tokens.shared_limits`) they also hold
across instances: a process that would write asks the store first.
"""

from __future__ import annotations

import threading

from flask import has_request_context, request

from flask_backstage_auth.access_tokens import audit as events
from flask_backstage_auth.access_tokens.format import (
    DISPLAY_PREFIX_LENGTH,
    hash_token,
    looks_like_access_token,
    parse,
)
from flask_backstage_auth.access_tokens.scopes import ScopeCatalogue
from flask_backstage_auth.access_tokens.settings import DAY
from flask_backstage_auth.access_tokens.shared_limits import Counter, LimitStore
from flask_backstage_auth.access_tokens.store import (
    SqlAccessTokenStore,
    TokenRecord,
    service_subject,
)
from flask_backstage_auth.access_tokens.usage import UsageRecorder
from flask_backstage_auth.audit.service import CURRENT_REQUEST, AuditorService
from flask_backstage_auth.auth.service import VerifiedToken
from flask_backstage_auth.clock import Clock
from flask_backstage_auth.credentials import ServicePrincipal, UserPrincipal
from flask_backstage_auth.errors import AuthenticationError


class AccessTokenAuthenticator:
    """Verifies raw access tokens against the store.

    :param usage: where uses are noted (default: written at once, in the request).
    :param auditor: the ``access-tokens`` plugin's auditor, for the use events.
    :param limit_store: where the throttles are shared with the other
        instances (default: none, each process on its own).
    :param once_window: how long a once-per-rotation event is remembered in
        the store (the longest rotation grace).
    """

    def __init__(
        self,
        store: SqlAccessTokenStore,
        catalogue: ScopeCatalogue,
        *,
        clock: Clock,
        revocation_check: float = 5,
        last_used_interval: float = 300,
        personal_enabled: bool = True,
        usage: UsageRecorder | None = None,
        auditor: AuditorService | None = None,
        limit_store: LimitStore | None = None,
        once_window: float = DAY,
    ) -> None:
        self.store = store
        self.auditor = auditor
        self.usage = usage if usage is not None else UsageRecorder(store, mode="inline")
        self.catalogue = catalogue
        self._clock = clock
        self.revocation_check = revocation_check
        self.last_used_interval = last_used_interval
        self.personal_enabled = personal_enabled
        self._lock = threading.Lock()
        # token id -> when we last wrote last_used_at / a failed-use event
        self._last_written: dict[str, float] = {}
        self._last_failure: dict[str, float] = {}
        self._shared_uses: Counter | None = None
        self._shared_failures: Counter | None = None
        self._shared_once: Counter | None = None
        if limit_store is not None:
            interval = last_used_interval
            self._shared_uses = limit_store.counter("last-used", 1, interval, window="fixed")
            self._shared_failures = limit_store.counter("failed-use", 1, interval, window="fixed")
            self._shared_once = limit_store.counter("once", 1, once_window, window="fixed")

    def __call__(self, token: str) -> VerifiedToken | None:
        if not looks_like_access_token(token):
            return None
        if parse(token) is None:  # mistyped or invented: no database query
            raise AuthenticationError("Invalid access token")
        now = self._clock()
        match, prefix_match = self.store.find_by_digest(
            hash_token(token), token[:DISPLAY_PREFIX_LENGTH]
        )
        if match is None:
            if prefix_match is not None:
                self._failed_use(prefix_match, "unknown secret", now)
            raise AuthenticationError("Invalid access token")
        record = match.record
        if record.kind == "personal" and not self.personal_enabled:
            raise AuthenticationError("Personal access tokens are disabled")
        if not record.is_usable(now):
            self._failed_use(record, record.status(now), now)
            raise AuthenticationError(f"Access token is {record.status(now)}")
        if match.previous_secret:
            if not match.works(now):
                self._failed_use(record, "rotated secret", now)
                raise AuthenticationError("Access token was rotated")
            self._once(record, events.OLD_SECRET_USE, now)
        self._record_use(record, now)
        restrictions = self.catalogue.restrictions(record.scopes)
        principal: ServicePrincipal | UserPrincipal
        if record.kind == "personal":
            principal = UserPrincipal(record.owner_ref)
        else:
            principal = ServicePrincipal(service_subject(record))
        expires_at = record.expires_at
        cache_for = self.revocation_check
        if match.previous_secret and record.previous_expires_at is not None:
            # The old secret's verification ends exactly at its grace end.
            expires_at = min(expires_at, record.previous_expires_at)
            cache_for = min(cache_for, record.previous_expires_at - now)
        return VerifiedToken(
            principal,
            expires_at=expires_at,
            restrictions=restrictions,
            cache_for=cache_for,
            revocation_id=record.id,
        )

    def _client_ip(self) -> str | None:
        return request.remote_addr if has_request_context() else None

    def _record_use(self, record: TokenRecord, now: float) -> None:
        with self._lock:
            last = self._last_written.get(record.id)
            if last is not None and now - last < self.last_used_interval:
                return
            self._last_written[record.id] = now
        if not _shared_allows(self._shared_uses, record.id):
            return  # another instance wrote it within the interval
        if last is None and record.last_used_at is None:
            self._event(events.FIRST_USE, record, principal=True)
        self.usage.record_use(record.id, now=now, ip=self._client_ip())

    def _event(
        self,
        event_id: str,
        record: TokenRecord,
        *,
        principal: bool = False,
        failure: str | None = None,
    ) -> None:
        """Audit a use of ``record`` (as the token's principal, when it authenticated)."""
        if self.auditor is None:
            return
        actor = None
        if principal:
            actor = service_subject(record) if record.kind == "service" else record.owner_ref
        event = self.auditor.create_event(
            event_id,
            severity="medium",
            meta={
                "kind": record.kind,
                "tokenId": record.id,
                "tokenPrefix": record.token_prefix,
                "tokenVersion": record.version,  # the change this use saw
                **({"reason": failure} if failure is not None else {}),
            },
            request=CURRENT_REQUEST,
            actor_id=actor,
        )
        if failure is None:
            event.success()
        else:
            event.fail(AuthenticationError(f"Access token refused: {failure}"))

    def _once(self, record: TokenRecord, event_id: str, now: float) -> None:
        key = f"{record.id}:{event_id}:{record.rotated_at}"
        with self._lock:
            if key in self._last_failure:
                return
            self._last_failure[key] = now
        if not _shared_allows(self._shared_once, key):
            return
        self._event(event_id, record, principal=True)

    def _failed_use(self, record: TokenRecord, reason: str, now: float) -> None:
        # At most one failed-use event per token per interval: no write amplification.
        with self._lock:
            last = self._last_failure.get(record.id)
            if last is not None and now - last < self.last_used_interval:
                return
            self._last_failure[record.id] = now
        if not _shared_allows(self._shared_failures, record.id):
            return
        self._event(events.FAILED_USE, record, failure=reason)


def _shared_allows(counter: Counter | None, key: str) -> bool:
    # No store, or one that does not answer: this process's throttle decided.
    return counter is None or counter(key) is not False
