"""The ``auth`` service: who a token belongs to, and tokens for outgoing calls.

A never-seen token is split once (:func:`~flask_backstage_auth.auth.jose.peek`)
and the one :class:`~flask_backstage_auth.auth.jose.PeekedToken` goes to every
handler, in Backstage's order: the first-party stage (mock tokens in tests,
plugin tokens, user tokens, then the handlers registered for that stage),
``externalAccess`` in config order then the legacy keys, then the late stage
(the handlers registered for it, e.g. access tokens); a token none of them
recognises is ``Illegal token``. The handler of the token's kind verifies its
signature once. Verified tokens are cached, bounded in size and in time: an
entry never outlives its token's expiry, nor ``cache_ttl`` seconds, which
bounds how long a revoked token may still pass.
"""

from __future__ import annotations

import collections
import logging
import threading
import typing as t
from dataclasses import dataclass, replace

from flask_backstage_auth.auth.external.handler import (
    ExternalAccess,
    ExternalAccessEntry,
    RestrictionsByPlugin,
)
from flask_backstage_auth.auth.jose import PeekedToken, peek
from flask_backstage_auth.auth.plugin.handler import PluginTokenHandler
from flask_backstage_auth.auth.user.handler import UserTokenHandler, create_limited_user_token
from flask_backstage_auth.clock import Clock, system_clock
from flask_backstage_auth.credentials import (
    NONE_CREDENTIALS,
    Credentials,
    PrincipalType,
    ServicePrincipal,
    UserPrincipal,
    is_principal,
)
from flask_backstage_auth.credentials import Principal as Principal
from flask_backstage_auth.errors import AuthenticationError, BackstageError, NotAllowedError
from flask_backstage_auth.legacy.token_manager import TokenManager

logger = logging.getLogger(__name__)

#: Tokens longer than this are refused before any handler sees them.
MAX_TOKEN_LENGTH = 32 * 1024


@dataclass(frozen=True)
class VerifiedToken:
    """What a handler established about a token."""

    principal: Principal
    expires_at: float | None = None
    #: A limited user token (only accepted where limited access is allowed).
    limited: bool = False
    #: Plugins the token may call, with their restrictions; ``None``: any.
    restrictions: RestrictionsByPlugin = None
    #: Plugin tokens: the plugins it is for (``aud``); ``None``: any plugin.
    audiences: tuple[str, ...] | None = None
    #: The token the credentials carry, when not the presented one (a plugin
    #: token on behalf of a user carries the user's limited token).
    credentials_token: str | None = None
    #: The longest this verification may be reused (revocable tokens set it).
    cache_for: float | None = None
    #: An id by which the verification can be dropped from the cache.
    revocation_id: str | None = None


class VerifiedEntry:
    """A verified token in the cache, with the credentials built from it per plugin."""

    __slots__ = ("verified", "until", "credentials")

    def __init__(self, verified: VerifiedToken, until: float) -> None:
        self.verified = verified
        self.until = until
        self.credentials: dict[str, Credentials] = {}


#: A token handler: a result for its own tokens, ``None`` for others; it raises
#: :class:`~flask_backstage_auth.errors.AuthenticationError` for a token of its
#: own kind that is invalid (no later handler sees it).
TokenHandler = t.Callable[[PeekedToken], t.Optional[VerifiedToken]]

#: Where a registered handler runs: with Backstage's own token kinds, after
#: plugin and user tokens (``"first-party"``), or after ``externalAccess`` and
#: the legacy keys (``"late"``).
HandlerStage = t.Literal["first-party", "late"]
HANDLER_STAGES: tuple[HandlerStage, ...] = ("first-party", "late")


@dataclass(frozen=True)
class Explanation:
    """Which handler accepted a token (:meth:`TokenVerifier.explain`)."""

    #: The handler: ``plugin token``, ``user token``, ``externalAccess static
    #: (backend.auth.externalAccess[1])``, the name of a registered handler...
    handler: str
    verified: VerifiedToken


class TokenRefused(AuthenticationError):
    """401 from :meth:`TokenVerifier.explain`, naming the handler that refused.

    ``handler`` is ``None`` when no handler recognised the token.
    """

    def __init__(self, description: str, handler: str | None, tried: tuple[str, ...]) -> None:
        super().__init__(description)
        self.handler = handler
        self.tried = tried


@dataclass(frozen=True)
class PluginRequestToken:
    """The result of :meth:`AuthService.get_plugin_request_token`."""

    token: str


@dataclass(frozen=True)
class LimitedUserToken:
    """The result of :meth:`AuthService.get_limited_user_token`."""

    token: str
    expires_at: float


# In an explain() trace: every handler said the token is not of its kind.
_NO_HANDLER = object()


class TokenVerifier:
    """Runs the handlers in order, with a bounded cache of successes.

    Shared by every plugin of an app; plugin-specific checks (access
    restrictions, limited tokens) happen in :class:`AuthService`.

    :param handlers: the built-in first-party handlers, in order.
    :param names: what :meth:`explain` calls some of them (``plugin token``).
    """

    def __init__(
        self,
        handlers: t.Sequence[TokenHandler],
        external_access: ExternalAccess,
        *,
        clock: Clock = system_clock,
        cache_size: int = 10_000,
        cache_ttl: float = 60,
        names: t.Mapping[TokenHandler, str] | None = None,
    ) -> None:
        self.external_access = external_access
        self._names: dict[TokenHandler, str] = dict(names or {})
        # Replaced, never changed in place: a verification in another thread
        # iterates over the tuple it started with.
        self._first_party: tuple[TokenHandler, ...] = tuple(handlers)
        self._late: tuple[TokenHandler, ...] = ()
        self._clock = clock
        self._cache_size = cache_size
        self._cache_ttl = cache_ttl
        # Oldest first: a full cache drops its oldest entry in O(1) (a plain
        # dict's first key is found by scanning past every deleted slot).
        self._cache: collections.OrderedDict[str, VerifiedEntry] = collections.OrderedDict()
        self._lock = threading.Lock()

    def register_handler(
        self, handler: TokenHandler, *, stage: HandlerStage = "late", name: str | None = None
    ) -> None:
        """Try ``handler`` for every token not yet recognised, at ``stage``.

        Within a stage, handlers run in the order they were registered.
        ``"first-party"`` handlers run after plugin and user tokens, before
        ``externalAccess``; ``"late"`` handlers after the legacy keys.
        ``name`` is what :meth:`explain` calls it (default: its ``__qualname__``).

        :raises ValueError: an unknown stage.
        """
        if name is not None:
            self._names[handler] = name
        if stage == "first-party":
            self._first_party = (*self._first_party, handler)
        elif stage == "late":
            self._late = (*self._late, handler)
        else:
            raise ValueError(
                f"Unknown token handler stage {stage!r}, expected one of"
                f" {', '.join(repr(s) for s in HANDLER_STAGES)}"
            )

    def verify(self, token: str) -> VerifiedToken:
        """The verified token, or :class:`AuthenticationError`."""
        return self.entry(token).verified

    def entry(self, token: str) -> VerifiedEntry:
        """The cache entry of a valid token (a fresh one when not cached)."""
        hit = self._cache.get(token)
        now = self._clock()
        if hit is not None:
            if now < hit.until:
                return hit
            self.forget(token)
        verified = self._verify_uncached(token)
        until = now + self._cache_ttl
        if verified.expires_at is not None:
            until = min(until, verified.expires_at)
        if verified.cache_for is not None:
            until = min(until, now + verified.cache_for)
        entry = VerifiedEntry(verified, until)
        if self._cache_size and until > now:
            with self._lock:
                if len(self._cache) >= self._cache_size:
                    self._kill(self._cache.popitem(last=False)[1])
                self._cache[token] = entry
        return entry

    def _verify_uncached(self, token: str) -> VerifiedToken:
        return self._run(token, None)[1]

    def explain(self, token: str) -> Explanation:
        """Verify ``token`` as :meth:`verify` does, bypassing the cache, and say
        which handler accepted it (for ``flask backstage-auth verify-token``).

        :raises TokenRefused: the token is not valid; names the handler that
            refused it, or the handlers tried when none recognised it.
        """
        trace: list[object] = []
        try:
            source, verified = self._run(token, trace)
        except AuthenticationError as exc:
            unrecognised = not trace or trace[-1] is _NO_HANDLER
            tried = tuple(self._describe(item) for item in trace if item is not _NO_HANDLER)
            refused_by = None if unrecognised else tried[-1]
            raise TokenRefused(str(exc.description), refused_by, tried) from exc
        return Explanation(self._describe(source), verified)

    def _describe(self, source: object) -> str:
        if isinstance(source, ExternalAccessEntry):
            return f"externalAccess {source.handler.type} ({source.path})"
        if source is self.external_access:
            return "externalAccess"
        name = self._names.get(t.cast(TokenHandler, source))
        return name or str(getattr(source, "__qualname__", type(source).__name__))

    def _run(self, token: str, trace: list[object] | None) -> tuple[object, VerifiedToken]:
        """The handlers in order; ``trace`` (when given) gets each one tried."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise AuthenticationError("Illegal token")
        peeked = peek(token)
        try:
            for handler in self._first_party:
                if trace is not None:
                    trace.append(handler)
                verified = handler(peeked)
                if verified is not None:
                    return handler, verified
            if trace is not None:
                trace.append(self.external_access)
            external = self.external_access.verify_entry(peeked)
            if external is None:
                for handler in self._late:
                    if trace is not None:
                        trace.append(handler)
                    verified = handler(peeked)
                    if verified is not None:
                        return handler, verified
        except BackstageError:
            raise
        except Exception as exc:  # a handler bug must never open a route
            logger.exception("Token verification failed unexpectedly")
            raise AuthenticationError("Illegal token") from exc
        if external is None:
            if trace is not None:
                trace.append(_NO_HANDLER)
            raise AuthenticationError("Illegal token")
        entry, result = external
        return entry, VerifiedToken(
            ServicePrincipal(result.subject),
            expires_at=result.expires_at,
            restrictions=entry.restrictions,
        )

    def forget_revocation_id(self, revocation_id: str) -> None:
        """Drop every cached verification of a revoked or rotated token."""
        with self._lock:
            stale = [
                token
                for token, entry in self._cache.items()
                if entry.verified.revocation_id == revocation_id
            ]
            for token in stale:
                self._kill(self._cache.pop(token, None))

    def forget(self, token: str) -> None:
        """Drop one token from the cache (after a revocation)."""
        with self._lock:
            self._kill(self._cache.pop(token, None))

    def clear(self) -> None:
        """Drop every cached verification."""
        with self._lock:
            for entry in self._cache.values():
                self._kill(entry)
            self._cache.clear()

    @staticmethod
    def _kill(entry: VerifiedEntry | None) -> None:
        # Whoever still holds the entry (the ``http_auth`` services' index of
        # recent headers) sees it expired.
        if entry is not None:
            entry.until = float("-inf")


def plugin_token_handler(handler: PluginTokenHandler) -> TokenHandler:
    """Plugin tokens as a first-party handler: service credentials ``plugin:<id>``,
    or the user of its ``obo`` claim with the plugin as actor."""

    def verify(token: PeekedToken) -> VerifiedToken | None:
        verified = handler.verify(token)
        if verified is None:
            return None
        actor = ServicePrincipal(f"plugin:{verified.source_plugin_id}")
        user = verified.on_behalf_of
        if user is None:
            return VerifiedToken(actor, verified.expires_at, audiences=verified.audiences)
        return VerifiedToken(
            UserPrincipal(user.user_entity_ref, actor=actor),
            min(verified.expires_at, user.expires_at),
            audiences=verified.audiences,
            credentials_token=verified.obo_token,
        )

    return verify


def user_token_handler(handler: UserTokenHandler) -> TokenHandler:
    """User tokens as a first-party handler."""

    def verify(token: PeekedToken) -> VerifiedToken | None:
        verified = handler.verify(token)
        if verified is None:
            return None
        return VerifiedToken(
            UserPrincipal(verified.user_entity_ref), verified.expires_at, limited=verified.limited
        )

    return verify


def check_delegation(credentials: Credentials, target_plugin_id: str) -> None:
    """Refuse to pass restricted ``credentials`` on to ``target_plugin_id``
    when that would widen them (Backstage's ``DefaultAuthService``).

    Unlike Backstage, which checks service principals only, this also holds for
    users with restrictions (a scoped personal access token).

    :raises NotAllowedError: the target is outside the restrictions, or is
        restricted by permission or action (those cannot travel in a token).
    """
    principal = credentials.principal
    if principal.type == "none" or principal.access_restrictions is None:
        return
    restrictions = credentials.all_access_restrictions or {}
    target = restrictions.get(target_plugin_id)
    if target is None:
        raise NotAllowedError(
            f"Access to target plugin '{target_plugin_id}' is not included in token's"
            " access restrictions"
        )
    if target.permission_names or target.actions is not None:
        raise NotAllowedError(
            f"Access to target plugin '{target_plugin_id}' is restricted and cannot be delegated"
        )


class AuthService:
    """Backstage's ``AuthService`` for one plugin.

    Get it with :meth:`BackstageAuth.auth <flask_backstage_auth.BackstageAuth.auth>`.
    """

    def __init__(
        self,
        plugin_id: str,
        verifier: TokenVerifier,
        token_manager: TokenManager,
        *,
        plugin_tokens: PluginTokenHandler | None = None,
        default_policy_disabled: bool = False,
    ) -> None:
        self.plugin_id = plugin_id
        self._verifier = verifier
        #: The clock the verifier's cache entries are timed by, and its size
        #: (``0``: no cache).
        self.clock: Clock = verifier._clock
        self.cache_size: int = verifier._cache_size
        self._token_manager = token_manager
        self._plugin_tokens = plugin_tokens
        self._default_policy_disabled = default_policy_disabled

    def authenticate(self, token: str, *, allow_limited_access: bool = False) -> Credentials:
        """Credentials for ``token``.

        :raises AuthenticationError: 401, the token is not valid (``Illegal
            token`` when no handler recognises it), or is a limited user token
            where limited access is not allowed.
        :raises NotAllowedError: 403, the token's access restrictions do not
            include this plugin.
        """
        return self.authenticate_entry(token, allow_limited_access=allow_limited_access)[1]

    def authenticate_entry(
        self, token: str, *, allow_limited_access: bool = False
    ) -> tuple[VerifiedEntry, Credentials]:
        """:meth:`authenticate`, with the verifier's cache entry the credentials
        came from (alive while ``clock() < entry.until``; revocation ends it)."""
        entry = self._verifier.entry(token)
        verified = entry.verified
        if verified.limited and not allow_limited_access:
            raise AuthenticationError("Illegal limited user token")
        credentials = entry.credentials.get(self.plugin_id)
        if credentials is not None:
            return entry, credentials
        if verified.audiences is not None and self.plugin_id not in verified.audiences:
            raise AuthenticationError("Failed plugin token verification")
        principal = verified.principal
        if verified.restrictions is not None:
            restriction = verified.restrictions.get(self.plugin_id)
            if restriction is None:
                plugins = ", ".join(f"'{p}'" for p in verified.restrictions)
                raise NotAllowedError(f"This token's access is restricted to plugin(s) {plugins}")
            if principal.type != "none":  # none credentials get no further than the barrier
                principal = replace(principal, access_restrictions=restriction)
        credentials = Credentials(
            principal,
            expires_at=verified.expires_at,
            token=verified.credentials_token or token,
            limited=verified.limited,
            all_access_restrictions=verified.restrictions,
        )
        entry.credentials[self.plugin_id] = credentials
        return entry, credentials

    def get_none_credentials(self) -> Credentials:
        return NONE_CREDENTIALS

    def get_own_service_credentials(self) -> Credentials:
        """Service credentials of this plugin: ``plugin:<id>``."""
        return Credentials(ServicePrincipal(f"plugin:{self.plugin_id}"))

    def is_principal(self, credentials: Credentials, type: PrincipalType | str) -> bool:
        return is_principal(credentials, type)

    def get_plugin_request_token(
        self, *, on_behalf_of: Credentials, target_plugin_id: str
    ) -> PluginRequestToken:
        """A token for a request to ``target_plugin_id`` on behalf of a caller.

        Service credentials get a plugin token (ES256, ``sub`` this plugin,
        ``aud`` the target); user credentials get a plugin token carrying the
        user's limited token in ``obo``; ``none`` credentials get an empty
        token only when the default auth policy is disabled. Without a
        plugin key source (``plugin_tokens=None``), service credentials get a
        legacy service-to-service token and user credentials forward their
        token, as Backstage's older builds did.

        Restricted credentials are never widened (as Backstage): a target
        outside their access restrictions, or a target they may reach only
        for some permissions or actions, is refused.

        :raises AuthenticationError: for any other credentials.
        :raises NotAllowedError: restricted credentials that cannot reach the
            target, or cannot be delegated to it.
        """
        principal = on_behalf_of.principal
        if principal.type in ("service", "user"):
            check_delegation(on_behalf_of, target_plugin_id)
        if principal.type == "service":
            if self._plugin_tokens is None:
                return PluginRequestToken(self._token_manager.get_token().token)
            return PluginRequestToken(
                self._plugin_tokens.issue_token(
                    plugin_id=self.plugin_id, target_plugin_id=target_plugin_id
                )
            )
        if principal.type == "user":
            if not on_behalf_of.token:
                raise AuthenticationError("User credentials is unexpectedly missing token")
            if self._plugin_tokens is None:
                return PluginRequestToken(on_behalf_of.token)
            limited = self.get_limited_user_token(on_behalf_of)
            return PluginRequestToken(
                self._plugin_tokens.issue_token(
                    plugin_id=self.plugin_id,
                    target_plugin_id=target_plugin_id,
                    obo_token=limited.token,
                    obo_expires_at=limited.expires_at,
                )
            )
        if principal.type == "none" and self._default_policy_disabled:
            return PluginRequestToken("")
        raise AuthenticationError(
            f"Refused to issue service token for credential type '{principal.type}'"
        )

    def get_limited_user_token(self, credentials: Credentials) -> LimitedUserToken:
        """The limited form of a user's token (for cookies and ``obo`` claims).

        :raises AuthenticationError: not user credentials, or no token.
        """
        if credentials.principal.type != "user":
            raise AuthenticationError("Refused to create a limited token for a non-user principal")
        if not credentials.token:
            raise AuthenticationError("User credentials is unexpectedly missing token")
        token, expires_at = create_limited_user_token(credentials.token)
        if not expires_at and credentials.expires_at:
            expires_at = credentials.expires_at
        if not expires_at:
            raise AuthenticationError("User token is missing expiration")
        return LimitedUserToken(token, expires_at)

    def list_public_service_keys(self) -> dict[str, t.Any]:
        """``{"keys": [...]}``: the public keys that verify this app's plugin tokens."""
        if self._plugin_tokens is None:
            return {"keys": []}
        return {"keys": self._plugin_tokens.key_source.list_public_keys()}
