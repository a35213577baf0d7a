"""An auth backend: Backstage's ``auth`` plugin, issuing user tokens.

::

    BackstageAuth(app)      # first
    AuthBackend(app)        # then: serves /api/auth

:class:`UserTokenIssuer` makes user tokens exactly as Backstage's
``issueUserToken`` (header ``{typ: "vnd.backstage.user", alg: "ES256", kid}``,
claims ``{...custom, iss, sub, ent, aud: "backstage", iat, exp, uip}``), so
that their limited form (:func:`~flask_backstage_auth.auth.user.handler.create_limited_user_token`)
verifies with the same key. :class:`AuthBackend` mounts the ``auth`` plugin:

* ``GET /api/auth/.well-known/jwks.json``: the public keys of user tokens,
  which every backend (this one included) verifies them with;
* ``GET /api/auth/v1/userinfo``: ``{"claims": {"sub", "ent", ...}}`` of the
  bearer's user (a limited user token will do), as plugin-auth-backend 0.31's
  OIDC router: the claims the user was last signed in with, kept in a
  :class:`~flask_backstage_auth.auth_backend.user_info_store.UserInfoStore`
  (the database when ``BackstageAuth`` has one, else this process). 401
  ``No token provided`` or an invalid token, 400 for a token that is not a
  user's, 404 ``User info not found`` for a user never signed in here;
* the guest provider (``auth.providers.guest``, reference §6):
  ``GET|POST /api/auth/guest/refresh`` signs in as the configured guest user
  (only in development unless
  ``auth.providers.guest.dangerouslyAllowOutsideDevelopment`` is true);
  ``guest/start`` and ``guest/handler/frame`` answer 501.

``auth.omitIdentityTokenOwnershipClaim`` (default ``true``, as Backstage
since plugin-auth-backend 0.28) leaves ``ent`` out of issued tokens: their
ownership is served by ``/v1/userinfo`` (what the ``user_info`` service asks).

The whole plugin is open (``unauthenticated``), as Backstage's auth plugin is.
It reads no request body: a declared body over 64 KiB is a 413, and the limit
is set on the request for anything that would read one. A response holding a
user token is never cached (``Cache-Control: no-store``).

Keys (``auth.keyStore``, see :mod:`flask_backstage_auth.auth_backend.keys`):
by default, when ``BackstageAuth`` has a database, a per-process
:class:`~flask_backstage_auth.auth.plugin.keys.RotatingKeySource` whose
public keys go to the database's ``backstage_auth_signing_keys``, so that a
token signed by any instance or worker verifies on all of them and every
JWKS lists every instance's keys; without a database, in memory (one
process only).
"""

from __future__ import annotations

import base64
import logging
import math
import typing as t
from dataclasses import dataclass

import jwt
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from jwt.algorithms import ECAlgorithm
from werkzeug.exceptions import NotImplemented as WerkzeugNotImplemented

from flask_backstage_auth.auth.key_sets import LocalKeySet
from flask_backstage_auth.auth.plugin.keys import (
    ALGORITHM,
    KeySource,
    RotatingKeySource,
    StaticKeySource,
)
from flask_backstage_auth.auth.user.handler import (
    MAX_USER_TOKEN_LIFETIME,
    USER_AUDIENCE,
    USER_TYP,
    limited_signing_input,
    unverified_parts,
)
from flask_backstage_auth.auth_backend.keys import user_key_source_from_config
from flask_backstage_auth.auth_backend.user_info_store import InMemoryUserInfoStore, UserInfoStore
from flask_backstage_auth.clock import Clock, system_clock
from flask_backstage_auth.config.reader import ConfigReader
from flask_backstage_auth.errors import (
    AuthenticationError,
    BackstageError,
    ConfigError,
    InputError,
    NotAllowedError,
    NotFoundError,
)
from flask_backstage_auth.extension import BackstageAuth, BackstageAuthState
from flask_backstage_auth.http_auth.bearer import get_bearer_token
from flask_backstage_auth.router.policies import add_auth_policy
from flask_backstage_auth.router.safety import bound_request_body, no_store

logger = logging.getLogger(__name__)

#: The ``app.extensions`` key.
EXTENSION_KEY = "backstage_auth_backend"
#: The plugin id (and blueprint name) of the auth backend.
AUTH_PLUGIN_ID = "auth"
#: Backstage refuses to issue user tokens longer than this.
MAX_USER_TOKEN_LENGTH = 32_768
#: ``auth.backstageTokenExpiration``: default and bounds, in seconds.
DEFAULT_TOKEN_EXPIRATION = 3600
MIN_TOKEN_EXPIRATION = 600
MAX_TOKEN_EXPIRATION = 86_400
#: Key lifetime of the default key source (Backstage's auth backend: one hour).
DEFAULT_KEY_DURATION = 3600
DEFAULT_GUEST_USER_ENTITY_REF = "user:development/guest"
GUEST_NOT_ALLOWED_MESSAGE = (
    "The guest provider cannot be used outside of a development environment unless"
    " 'auth.providers.guest.dangerouslyAllowOutsideDevelopment' is enabled"
)

#: Claims left out of issued tokens when ``auth.omitIdentityTokenOwnershipClaim`` is true.
OWNERSHIP_CLAIM = "ent"
NOT_A_USER_MESSAGE = (
    "Userinfo endpoint must be called with a token that represents a user principal"
)

_EXPIRATION_KEY = "auth.backstageTokenExpiration"
_OMIT_OWNERSHIP_KEY = "auth.omitIdentityTokenOwnershipClaim"
_GUEST_KEY = "auth.providers.guest"
#: Units of a Backstage ``HumanDuration`` (Luxon's casual month and year).
_DURATION_UNITS: dict[str, float] = {
    "years": 365 * 86_400,
    "months": 30 * 86_400,
    "weeks": 7 * 86_400,
    "days": 86_400,
    "hours": 3600,
    "minutes": 60,
    "seconds": 1,
    "milliseconds": 0.001,
}


class NotImplementedHttpError(BackstageError, WerkzeugNotImplemented):
    """501: Backstage's ``NotImplementedError``."""

    code = 501
    error_name = "NotImplementedError"


def is_entity_ref(ref: object) -> bool:
    """Whether ``ref`` parses as Backstage's ``parseEntityRef(ref)`` without defaults.

    The form is ``<kind>:[<namespace>/]<name>``: a kind is required, the
    namespace is optional (``default``), and no part may be empty.
    """
    if not isinstance(ref, str) or not ref:
        return False
    colon = ref.find(":")
    slash = ref.find("/")
    if slash != -1 and slash < colon:
        colon = -1
    if colon <= 0:  # no kind, or an empty one
        return False
    if slash != -1 and slash == colon + 1:  # empty namespace
        return False
    return ref[max(colon + 1, slash + 1) :] != ""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _round_half_up(value: float) -> int:
    """JavaScript's ``Math.round``."""
    return math.floor(value + 0.5)


@dataclass(frozen=True)
class IssuedUserToken:
    """A user token and its expiry (epoch seconds, the token's ``exp``)."""

    token: str
    expires_at: float


class UserTokenIssuer:
    """Issues Backstage user tokens (``vnd.backstage.user``), ES256.

    :param key_source: the signing keys; their public halves are the JWKS.
    :param issuer: the ``iss`` claim, the auth plugin's external base URL.
    :param expiration: token lifetime in whole seconds, 1 to 86400.
    :param omit_claims: claims left out of the token (Backstage's
        ``omitClaimsFromToken``: ``("ent",)`` when
        ``auth.omitIdentityTokenOwnershipClaim`` is true).
    :raises ValueError: an invalid ``issuer`` or ``expiration``.
    """

    def __init__(
        self,
        key_source: KeySource,
        *,
        issuer: str,
        expiration: float = DEFAULT_TOKEN_EXPIRATION,
        clock: Clock = system_clock,
        omit_claims: t.Collection[str] = (),
    ) -> None:
        if not isinstance(issuer, str) or not issuer:
            raise ValueError("issuer must be a non-empty string")
        if (
            isinstance(expiration, bool)
            or not isinstance(expiration, (int, float))
            or not math.isfinite(expiration)
            or expiration != int(expiration)
            or not 1 <= expiration <= MAX_USER_TOKEN_LIFETIME
        ):
            raise ValueError(
                f"expiration must be a whole number of seconds from 1 to {MAX_USER_TOKEN_LIFETIME}"
            )
        self.key_source = key_source
        self.issuer = issuer
        self.expiration = int(expiration)
        self.omit_claims = frozenset(omit_claims)
        self._clock = clock

    def issue_token(
        self,
        sub: str,
        ent: t.Sequence[str],
        claims: t.Mapping[str, t.Any] | None = None,
    ) -> IssuedUserToken:
        """A signed user token for ``sub`` owning ``ent``, with extra ``claims``.

        The standard claims override same-named entries of ``claims``.

        :raises ValueError: ``sub`` is not an entity ref, ``ent`` is not a list
            of strings, or the token would exceed 32768 characters.
        """
        if not is_entity_ref(sub):
            raise ValueError('"sub" claim provided by the auth resolver is not a valid EntityRef.')
        if isinstance(ent, str) or not all(isinstance(ref, str) for ref in ent):
            raise ValueError('"ent" claim must be a list of entity refs')
        key = self.key_source.get_signing_key()
        if key.algorithm != ALGORITHM:
            raise ValueError(f"User tokens are signed with {ALGORITHM}, not {key.algorithm}")
        iat = int(self._clock())
        exp = iat + self.expiration
        header: dict[str, t.Any] = {"typ": USER_TYP, "alg": key.algorithm, "kid": key.kid}
        signing_input = limited_signing_input(header, {"sub": sub, "iat": iat, "exp": exp})
        signature = ECAlgorithm(ECAlgorithm.SHA256).sign(signing_input, key.private_key)
        payload: dict[str, t.Any] = {
            **(claims or {}),
            "iss": self.issuer,
            "sub": sub,
            "ent": list(ent),
            "aud": USER_AUDIENCE,
            "iat": iat,
            "exp": exp,
            "uip": _b64url(signature),
        }
        for claim in self.omit_claims:
            payload.pop(claim, None)
        logger.info("Issuing token for %s, with entities %s", sub, ",".join(ent))
        token = jwt.encode(
            payload, key.private_key, algorithm=key.algorithm, headers=header, sort_headers=False
        )
        if len(token) > MAX_USER_TOKEN_LENGTH:
            raise ValueError(
                "Failed to issue a new user token. The resulting token is excessively large,"
                " with either too many ownership claims or too large custom claims."
            )
        return IssuedUserToken(token, float(exp))


def read_token_expiration(config: ConfigReader) -> int:
    """``auth.backstageTokenExpiration`` in seconds, clamped to [600, 86400].

    A number of seconds, or a Backstage duration such as ``{minutes: 30}``;
    3600 when absent.

    :raises ConfigError: any other value, naming the path.
    """
    value = config.get(_EXPIRATION_KEY)
    if value is None:
        return DEFAULT_TOKEN_EXPIRATION
    path = config.path(_EXPIRATION_KEY)
    if isinstance(value, t.Mapping) and value:
        seconds = 0.0
        for unit, amount in value.items():
            if unit not in _DURATION_UNITS or not _is_number(amount):
                raise ConfigError(
                    f"Invalid duration in config for key '{path}': expected one or more of"
                    f" {', '.join(_DURATION_UNITS)} with numeric values"
                )
            seconds += amount * _DURATION_UNITS[unit]
    elif _is_number(value):
        seconds = float(value)
    else:
        raise ConfigError(
            f"Invalid type in config for key '{path}', expected a number of seconds"
            " or a duration such as {minutes: 30}"
        )
    if not math.isfinite(seconds):
        raise ConfigError(f"Invalid duration in config for key '{path}'")
    return min(max(_round_half_up(seconds), MIN_TOKEN_EXPIRATION), MAX_TOKEN_EXPIRATION)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class GuestProviderConfig:
    """``auth.providers.guest``."""

    user_entity_ref: str = DEFAULT_GUEST_USER_ENTITY_REF
    ownership_entity_refs: tuple[str, ...] = (DEFAULT_GUEST_USER_ENTITY_REF,)
    dangerously_allow_outside_development: bool = False

    @classmethod
    def from_config(cls, config: ConfigReader) -> GuestProviderConfig | None:
        """The guest provider's configuration; ``None`` when ``auth.providers.guest`` is absent.

        :raises ConfigError: an invalid value, naming its path.
        """
        if not config.has(_GUEST_KEY):
            return None
        guest = config.get_config(_GUEST_KEY)
        user_ref = guest.get_string("userEntityRef", DEFAULT_GUEST_USER_ENTITY_REF)
        if not is_entity_ref(user_ref):
            raise ConfigError(
                f"Invalid entity ref in config for key '{guest.path('userEntityRef')}',"
                " expected <kind>:[<namespace>/]<name>"
            )
        refs = guest.get("ownershipEntityRefs")
        if refs is None:
            ownership: tuple[str, ...] = (user_ref,)
        elif isinstance(refs, list) and all(isinstance(r, str) and r for r in refs):
            ownership = tuple(refs)
        else:
            raise ConfigError(
                f"Invalid type in config for key '{guest.path('ownershipEntityRefs')}',"
                " expected a list of strings"
            )
        allow = guest.get_bool("dangerouslyAllowOutsideDevelopment")
        return cls(user_ref, ownership, allow)


class AuthBackendState:
    """What :class:`AuthBackend` built for one app (in ``app.extensions``)."""

    def __init__(
        self,
        app: Flask,
        auth_state: BackstageAuthState,
        *,
        key_source: KeySource | None = None,
        user_info_store: UserInfoStore | None = None,
    ) -> None:
        config = auth_state.config
        expiration = read_token_expiration(config)
        self.omit_ownership_claim = config.get_bool(_OMIT_OWNERSHIP_KEY, True)
        self.user_info_store = (
            user_info_store if user_info_store is not None else _user_info_store(auth_state)
        )
        self._auth_state = auth_state
        self.guest = GuestProviderConfig.from_config(config)
        self.development = auth_state.settings.development
        self._clock = auth_state.clock
        if key_source is None:
            # A key signs for as long as a token lives (at least an hour) and stays
            # listed three times that: every token it signed expires before it goes.
            key_source = user_key_source_from_config(
                config,
                database=auth_state.database,
                key_duration=max(DEFAULT_KEY_DURATION, expiration),
                clock=auth_state.clock,
                auditor=auth_state.auditor.for_plugin(AUTH_PLUGIN_ID),
                development=auth_state.settings.development,
            )
        # A rotating source lists its store at every unknown kid: a key another
        # instance has just stored verifies the first token it signed.
        cooldown: float = 0 if isinstance(key_source, (RotatingKeySource, StaticKeySource)) else 1
        self.issuer = UserTokenIssuer(
            key_source,
            issuer=auth_state.discovery.get_external_base_url(AUTH_PLUGIN_ID),
            expiration=expiration,
            clock=auth_state.clock,
            omit_claims=(OWNERSHIP_CLAIM,) if self.omit_ownership_claim else (),
        )
        self.blueprint = self._blueprint(auth_state.settings.plugin_prefix)
        app.register_blueprint(self.blueprint)
        # User tokens are verified with our own keys, not fetched over HTTP.
        BackstageAuth.use_user_token_keys(
            LocalKeySet(key_source.list_public_keys, cooldown=cooldown, clock=auth_state.clock),
            app=app,
        )

    def _blueprint(self, plugin_prefix: str) -> Blueprint:
        bp = Blueprint(AUTH_PLUGIN_ID, __name__, url_prefix=f"{plugin_prefix}/{AUTH_PLUGIN_ID}")
        add_auth_policy(bp, path="/", allow="unauthenticated")
        bp.before_request(_bound_body)
        bp.add_url_rule("/.well-known/jwks.json", "jwks", self.jwks, methods=["GET"])
        bp.add_url_rule("/v1/userinfo", "userinfo", self.userinfo, methods=["GET"])
        if self.guest is not None:
            bp.add_url_rule(
                "/guest/refresh", "guest_refresh", self.guest_refresh, methods=["GET", "POST"]
            )
            bp.add_url_rule("/guest/start", "guest_start", _not_implemented, methods=["GET"])
            bp.add_url_rule(
                "/guest/handler/frame",
                "guest_frame",
                _not_implemented,
                methods=["GET", "POST"],
            )
        return bp

    def jwks(self) -> Response:
        """``{"keys": [...]}``: the public keys of user tokens."""
        return jsonify({"keys": self.issuer.key_source.list_public_keys()})

    def issue_token(
        self,
        sub: str,
        ent: t.Sequence[str],
        claims: t.Mapping[str, t.Any] | None = None,
    ) -> IssuedUserToken:
        """Sign ``sub`` in: a user token, and its claims remembered for ``/v1/userinfo``.

        Backstage's ``AuthResolverContext.issueToken``: the claims
        ``{sub, ent, ...claims}`` are stored whether or not the token carries
        ``ent``. Nothing is handed out when they cannot be stored.

        :raises ValueError: see :meth:`UserTokenIssuer.issue_token`.
        :raises ServiceUnavailableError: the store is unavailable.
        """
        issued = self.issuer.issue_token(sub, ent, claims)
        extra = {k: v for k, v in (claims or {}).items() if k not in ("sub", OWNERSHIP_CLAIM)}
        self.user_info_store.add_user_info({"claims": {"sub": sub, "ent": list(ent), **extra}})
        return issued

    def userinfo(self) -> Response:
        """``{"claims": {...}}`` of the bearer's user (Backstage's ``GET /v1/userinfo``).

        :raises AuthenticationError: 401, no bearer token, or one the ``auth``
            plugin does not accept (a limited user token is accepted).
        :raises InputError: 400, the token is not a user's.
        :raises NotFoundError: 404 ``User info not found``.
        """
        token = get_bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise AuthenticationError("No token provided")
        auth = self._auth_state.auth(AUTH_PLUGIN_ID)
        credentials = auth.authenticate(token, allow_limited_access=True)
        if not auth.is_principal(credentials, "user"):
            raise InputError(NOT_A_USER_MESSAGE)
        parts = unverified_parts(token)
        sub = parts[1].get("sub") if parts is not None else None
        if not isinstance(sub, str):
            raise AuthenticationError("Invalid user token, user entity ref must be a string")
        user_info = self.user_info_store.get_user_info(sub)
        if user_info is None:
            raise NotFoundError("User info not found")
        return no_store(jsonify(user_info))

    def guest_refresh(self) -> Response:
        """Sign in as the guest user (Backstage's proxy provider ``refresh``).

        :raises NotAllowedError: 403 outside development, unless allowed by config.
        """
        guest = self.guest
        assert guest is not None
        if not self.development and not guest.dangerously_allow_outside_development:
            raise NotAllowedError(GUEST_NOT_ALLOWED_MESSAGE)
        issued = self.issue_token(guest.user_entity_ref, guest.ownership_entity_refs)
        response = jsonify(
            {
                "profile": {},
                "providerInfo": {},
                "backstageIdentity": {
                    "token": issued.token,
                    "expiresInSeconds": _round_half_up(issued.expires_at - self._clock()),
                    "identity": {
                        "type": "user",
                        "userEntityRef": guest.user_entity_ref,
                        "ownershipEntityRefs": list(guest.ownership_entity_refs),
                    },
                },
            }
        )
        return no_store(response)


def _user_info_store(auth_state: BackstageAuthState) -> UserInfoStore:
    """The app's database when it has one (shared by every instance), else this process."""
    if auth_state.database is not None:
        from flask_backstage_auth.db.user_info_store import SqlUserInfoStore

        return SqlUserInfoStore(auth_state.database)
    return InMemoryUserInfoStore()


def _bound_body() -> None:
    bound_request_body()


def _not_implemented() -> t.NoReturn:
    raise NotImplementedHttpError("Not implemented")


class AuthBackend:
    """The Flask extension: Backstage's ``auth`` plugin at ``/api/auth``.

    Initialise it after :class:`~flask_backstage_auth.BackstageAuth`: it
    points the extension's user-token verification at its own keys.

    :param app: the app, or ``None`` to call :meth:`init_app` later.
    :param key_source: the user-token signing keys; by default those of
        ``auth.keyStore``: a per-process rotating key whose public half is
        published in ``BackstageAuth``'s database, shared by every instance
        (in memory without a database).
    :param user_info_store: where each user's ownership is kept for
        ``/v1/userinfo``; by default the ``backstage_auth_user_info`` table
        of ``BackstageAuth``'s database, else this process's memory.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        key_source: KeySource | None = None,
        user_info_store: UserInfoStore | None = None,
    ) -> None:
        self._key_source = key_source
        self._user_info_store = user_info_store
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the configuration, register the ``auth`` blueprint, use its keys.

        :raises RuntimeError: ``BackstageAuth`` is not registered on ``app``
            yet, or this extension already is.
        :raises ConfigError: invalid configuration, naming the path.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("AuthBackend is already registered on this app")
        try:
            auth_state = BackstageAuth.state(app)
        except RuntimeError:
            raise RuntimeError("Initialise BackstageAuth(app) before AuthBackend(app)") from None
        app.extensions[EXTENSION_KEY] = AuthBackendState(
            app, auth_state, key_source=self._key_source, user_info_store=self._user_info_store
        )

    @staticmethod
    def state(app: Flask | None = None) -> AuthBackendState:
        """The extension state of ``app`` (default: the current app)."""
        target = app if app is not None else current_app
        try:
            return t.cast(AuthBackendState, target.extensions[EXTENSION_KEY])
        except KeyError:
            raise RuntimeError("AuthBackend is not registered on this app") from None
