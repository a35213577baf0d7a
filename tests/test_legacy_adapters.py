"""Legacy auth adapters: new services in an old environment, and the reverse."""

from __future__ import annotations

import base64
import os
import re
import time
import typing as t
from dataclasses import dataclass

import jwt
import pytest
from flask import Blueprint, Flask, jsonify, request
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from flask_backstage_auth import (
    AuthenticationError,
    Credentials,
    NotAllowedError,
    ServerTokenManager,
    ServicePrincipal,
    UserPrincipal,
    create_require_authentication_middleware,
)
from flask_backstage_auth.credentials import NONE_CREDENTIALS
from flask_backstage_auth.errors import InputError, ServiceUnavailableError
from flask_backstage_auth.extension import BackstageAuth
from flask_backstage_auth.http_auth.service import HttpAuthService
from flask_backstage_auth.legacy import adapters as legacy_adapters
from flask_backstage_auth.legacy.adapters import (
    NO_TOKEN_MANAGER_MESSAGE,
    AuthCompat,
    BackstageUserInfo,
    HttpAuthCompat,
    IssuedUserCookie,
    LegacyIdentity,
    LimitedUserToken,
    UserInfoCompat,
    create_legacy_auth_adapters,
    identity_from_auth,
)
from flask_backstage_auth.legacy.middleware import (
    LEGACY_SERVICE_SUBJECT,
    get_middleware_credentials,
)
from flask_backstage_auth.legacy.token_manager import NoopTokenManager, ServerToken

JANE = "user:default/jane"
STATIC_TOKEN = "static-token-123"

#: Three-part strings that are not JWTs: Backstage answers 500, we 401.
NOT_JWTS = [
    "a.b.c",
    "..",
    "x.y.",
    ".y.z",
    "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",  # payload is not JSON
    "eyJhbGciOiJIUzI1NiJ9.WzFd.c2ln",  # payload is a JSON array
    "bm90IGpzb24.eyJhdWQiOiJiYWNrc3RhZ2UifQ.c2ln",  # header is not JSON
    "%%%.***.!!!",
    "\u00e9\u00e9.\u00e9\u00e9.\u00e9\u00e9",
]


# --------------------------------------------------------------------------
# helpers


@dataclass(frozen=True)
class FakeIdentityResult:
    user_entity_ref: t.Any


class FakeIdentity:
    """An ``IdentityApi`` that records its requests and answers ``result``."""

    def __init__(self, result: t.Any = None, error: Exception | None = None) -> None:
        self.result = FakeIdentityResult(JANE) if result is None else result
        self.error = error
        self.authorization: list[str | None] = []

    def get_identity(self, request: Request) -> t.Any:
        self.authorization.append(request.headers.get("Authorization"))
        if self.error is not None:
            raise self.error
        return self.result


class FalsyIdentity(FakeIdentity):
    def get_identity(self, request: Request) -> t.Any:
        super().get_identity(request)
        return None


class CountingTokenManager:
    """Delegates to a real manager, counting ``authenticate`` calls."""

    def __init__(self, inner: ServerTokenManager) -> None:
        self.inner = inner
        self.calls = 0

    def get_token(self) -> ServerToken:
        return self.inner.get_token()

    def authenticate(self, token: str) -> None:
        self.calls += 1
        self.inner.authenticate(token)


class ExplodingTokenManager:
    def get_token(self) -> ServerToken:
        return ServerToken("unused")

    def authenticate(self, token: str) -> None:
        raise RuntimeError("database password is hunter2")


class ForbiddingTokenManager(ExplodingTokenManager):
    def authenticate(self, token: str) -> None:
        raise NotAllowedError("This token may not be used here")


@dataclass(frozen=True)
class AlienPrincipal:
    type: str = "alien"


def exactly_401(message: str) -> str:
    """A ``match`` for an AuthenticationError with exactly ``message``."""
    return f"^401 Unauthorized: {re.escape(message)}$"


def user_jwt(**claims: t.Any) -> str:
    """A user-looking JWT (``aud: backstage``); the fake identity needs nothing more."""
    payload: dict[str, t.Any] = {"aud": "backstage", "sub": JANE, "exp": int(time.time()) + 600}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, os.urandom(32), algorithm="HS256")


def bearer_request(header: str | None = None, **kwargs: t.Any) -> Request:
    headers = [("Authorization", header)] if header is not None else []
    builder = EnvironBuilder(headers=headers, **kwargs)
    try:
        return Request(builder.get_environ())
    finally:
        builder.close()


@pytest.fixture
def manager() -> ServerTokenManager:
    return ServerTokenManager([os.urandom(32)])


@pytest.fixture
def identity() -> FakeIdentity:
    return FakeIdentity()


@pytest.fixture
def compat(identity: FakeIdentity, manager: ServerTokenManager) -> AuthCompat:
    return AuthCompat(identity, manager)


# --------------------------------------------------------------------------
# create_legacy_auth_adapters


def test_compat_services_are_refused_without_a_token_manager(identity: FakeIdentity) -> None:
    with pytest.raises(TypeError) as info:
        create_legacy_auth_adapters(identity=identity)
    assert str(info.value) == NO_TOKEN_MANAGER_MESSAGE
    assert "token_manager" in str(info.value)
    assert "ServerTokenManager.noop()" in str(info.value)


def test_auth_compat_refuses_a_missing_token_manager_at_runtime() -> None:
    with pytest.raises(TypeError, match="needs a token_manager"):
        AuthCompat(None, t.cast(t.Any, None))


def test_compat_services_are_built_and_wired(
    identity: FakeIdentity, manager: ServerTokenManager
) -> None:
    adapters = create_legacy_auth_adapters(identity=identity, token_manager=manager)
    assert isinstance(adapters.auth, AuthCompat)
    assert isinstance(adapters.http_auth, HttpAuthCompat)
    assert isinstance(adapters.user_info, UserInfoCompat)
    assert adapters.http_auth.auth is adapters.auth
    assert adapters.auth.identity is identity
    assert adapters.auth.token_manager is manager
    with pytest.raises(AttributeError):
        adapters.auth = adapters.auth  # type: ignore[misc]  # frozen


def test_given_user_info_is_kept(manager: ServerTokenManager) -> None:
    mine = UserInfoCompat()
    adapters = create_legacy_auth_adapters(token_manager=manager, user_info=mine)
    assert adapters.user_info is mine


def test_passthrough_returns_given_services_untouched(manager: ServerTokenManager) -> None:
    auth = AuthCompat(None, manager)
    http_auth = HttpAuthCompat(auth)
    user_info = UserInfoCompat()
    adapters = create_legacy_auth_adapters(auth=auth, http_auth=http_auth, user_info=user_info)
    assert adapters.auth is auth
    assert adapters.http_auth is http_auth
    assert adapters.user_info is user_info


def test_passthrough_needs_no_token_manager_and_ignores_identity() -> None:
    app = make_new_app()
    state = BackstageAuth.state(app)
    auth, http_auth = state.auth("p"), state.http_auth("p")
    # No TypeError: the given services are used, identity/token_manager are ignored.
    adapters = create_legacy_auth_adapters(auth=auth, http_auth=http_auth, identity=FakeIdentity())
    assert adapters.auth is auth
    assert adapters.http_auth is http_auth
    assert isinstance(adapters.user_info, UserInfoCompat)


def test_only_http_auth_given_uses_its_auth() -> None:
    state = BackstageAuth.state(make_new_app())
    http_auth = state.http_auth("p")
    adapters = create_legacy_auth_adapters(http_auth=http_auth)
    assert adapters.http_auth is http_auth
    assert adapters.auth is state.auth("p")


def test_only_auth_service_given_gets_a_full_http_auth_service() -> None:
    state = BackstageAuth.state(make_new_app())
    auth = state.auth("p")
    adapters = create_legacy_auth_adapters(auth=auth)
    assert adapters.auth is auth
    assert isinstance(adapters.http_auth, HttpAuthService)
    assert adapters.http_auth.auth is auth
    assert adapters.http_auth.plugin_id == "p"


def test_only_compat_auth_given_gets_a_compat_http_auth(manager: ServerTokenManager) -> None:
    auth = AuthCompat(None, manager)
    adapters = create_legacy_auth_adapters(auth=auth)
    assert adapters.auth is auth
    assert isinstance(adapters.http_auth, HttpAuthCompat)
    assert adapters.http_auth.auth is auth


# --------------------------------------------------------------------------
# AuthCompat.authenticate


def test_legacy_server_token_gives_service_credentials(
    compat: AuthCompat, manager: ServerTokenManager, identity: FakeIdentity
) -> None:
    token = manager.get_token().token
    credentials = compat.authenticate(token)
    assert credentials.principal == ServicePrincipal(LEGACY_SERVICE_SUBJECT)
    assert credentials.token == token
    assert identity.authorization == []  # no aud: the identity is not asked


def test_server_token_of_another_key_is_refused_with_the_managers_error(
    compat: AuthCompat,
) -> None:
    foreign = ServerTokenManager([os.urandom(32)]).get_token().token
    with pytest.raises(AuthenticationError) as info:
        compat.authenticate(foreign)
    assert info.value.code == 401
    assert info.value.message == "Invalid server token"


@pytest.mark.parametrize("token", NOT_JWTS)
def test_three_part_non_jwt_is_401_never_another_error(compat: AuthCompat, token: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        compat.authenticate(token)
    assert info.value.code == 401


@pytest.mark.parametrize("token", NOT_JWTS)
def test_three_part_non_jwt_is_refused_even_by_a_noop_manager(token: str) -> None:
    compat = AuthCompat(FakeIdentity(), ServerTokenManager.noop())
    with pytest.raises(AuthenticationError) as info:
        compat.authenticate(token)
    assert info.value.message == "Invalid token"


def test_noop_manager_accepts_other_tokens_as_the_legacy_service() -> None:
    compat = AuthCompat(None, ServerTokenManager.noop())
    credentials = compat.authenticate("anything-at-all")
    assert credentials.principal == ServicePrincipal(LEGACY_SERVICE_SUBJECT)
    assert credentials.token == "anything-at-all"


@pytest.mark.parametrize("token", ["", "x" * (32 * 1024 + 1), None, 42])
def test_empty_oversized_or_non_string_tokens_are_refused(token: t.Any) -> None:
    compat = AuthCompat(None, NoopTokenManager())
    with pytest.raises(AuthenticationError, match=exactly_401("Invalid token")):
        compat.authenticate(token)


def test_foreign_token_manager_error_is_a_401_without_its_message() -> None:
    compat = AuthCompat(None, ExplodingTokenManager())
    with pytest.raises(AuthenticationError) as info:
        compat.authenticate("some-token")
    assert info.value.description == "Invalid token"
    assert info.value.__cause__ is None
    assert "hunter2" not in str(info.value)


def test_backstage_errors_of_the_token_manager_propagate() -> None:
    compat = AuthCompat(None, ForbiddingTokenManager())
    with pytest.raises(NotAllowedError, match="may not be used here"):
        compat.authenticate("some-token")


def test_user_token_goes_through_the_identity(compat: AuthCompat, identity: FakeIdentity) -> None:
    exp = int(time.time()) + 900
    token = user_jwt(exp=exp)
    credentials = compat.authenticate(token)
    assert credentials.principal == UserPrincipal(JANE)
    assert credentials.token == token
    assert credentials.expires_at == exp
    assert identity.authorization == [f"Bearer {token}"]


@pytest.mark.parametrize("exp", [None, "soon", True])
def test_user_token_without_a_numeric_exp_has_no_expiry(compat: AuthCompat, exp: t.Any) -> None:
    credentials = compat.authenticate(user_jwt(exp=exp))
    assert credentials.principal == UserPrincipal(JANE)
    assert credentials.expires_at is None


def test_user_token_is_not_a_service_token_even_for_a_noop_manager() -> None:
    # Without identity, a user token is refused; the noop manager is not asked.
    compat = AuthCompat(None, ServerTokenManager.noop())
    with pytest.raises(AuthenticationError, match=exactly_401("Invalid user token")):
        compat.authenticate(user_jwt())


def test_falsy_identity_result_is_an_invalid_user_token(manager: ServerTokenManager) -> None:
    identity = FalsyIdentity()
    with pytest.raises(AuthenticationError, match=exactly_401("Invalid user token")):
        AuthCompat(identity, manager).authenticate(user_jwt())
    assert len(identity.authorization) == 1


@pytest.mark.parametrize("ref", ["", 42, None])
def test_identity_without_a_usable_entity_ref_is_refused(
    manager: ServerTokenManager, ref: t.Any
) -> None:
    identity = FakeIdentity(result=FakeIdentityResult(ref))
    with pytest.raises(AuthenticationError, match=exactly_401("Invalid user token")):
        AuthCompat(identity, manager).authenticate(user_jwt())


def test_identity_crash_is_a_401_without_its_message(manager: ServerTokenManager) -> None:
    identity = FakeIdentity(error=RuntimeError("jwks at http://10.0.0.3 unreachable"))
    with pytest.raises(AuthenticationError) as info:
        AuthCompat(identity, manager).authenticate(user_jwt())
    assert info.value.description == "Invalid user token"
    assert "10.0.0.3" not in str(info.value)


def test_identity_authentication_error_propagates(manager: ServerTokenManager) -> None:
    identity = FakeIdentity(error=AuthenticationError("Failed user token verification"))
    with pytest.raises(AuthenticationError, match="Failed user token verification"):
        AuthCompat(identity, manager).authenticate(user_jwt())


def test_jwt_with_another_audience_is_checked_by_the_token_manager(
    compat: AuthCompat, identity: FakeIdentity
) -> None:
    with pytest.raises(AuthenticationError, match="Invalid server token"):
        compat.authenticate(user_jwt(aud="somewhere-else"))
    with pytest.raises(AuthenticationError, match="Invalid server token"):
        compat.authenticate(user_jwt(aud=["backstage"]))  # strict compare, as jose's ===
    assert identity.authorization == []


def test_user_token_with_whitespace_is_refused(compat: AuthCompat) -> None:
    head, payload, signature = user_jwt().split(".")
    for token in (f"{head}\n.{payload}.{signature}", f"{head}.{payload}.{signature}\n\n\n\n"):
        with pytest.raises(AuthenticationError):
            compat.authenticate(token)


def test_unbuildable_identity_request_is_a_401_not_a_crash(
    compat: AuthCompat, identity: FakeIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should a decoder ever accept a token with a newline, the header carrying
    # it to the identity cannot be built: that is a refusal, not a 500.
    monkeypatch.setattr(legacy_adapters, "_unverified_claims", lambda token: {"aud": "backstage"})
    with pytest.raises(AuthenticationError, match=exactly_401("Invalid user token")):
        compat.authenticate("a\nb.c.d")
    assert identity.authorization == []


# --------------------------------------------------------------------------
# AuthCompat: the other methods


def test_own_service_and_none_credentials(compat: AuthCompat) -> None:
    assert compat.get_own_service_credentials().principal == ServicePrincipal(
        LEGACY_SERVICE_SUBJECT
    )
    assert compat.get_none_credentials() == NONE_CREDENTIALS


def test_is_principal_is_a_strict_compare(compat: AuthCompat) -> None:
    user = Credentials(UserPrincipal(JANE))
    assert compat.is_principal(user, "user")
    assert not compat.is_principal(user, "service")
    assert not compat.is_principal(user, "unknown")  # not special-cased in compat
    assert compat.is_principal(NONE_CREDENTIALS, "none")


def test_plugin_request_token_for_a_service_is_a_fresh_legacy_token(
    compat: AuthCompat, manager: ServerTokenManager
) -> None:
    token = compat.get_plugin_request_token(
        on_behalf_of=compat.get_own_service_credentials(), target_plugin_id="catalog"
    ).token
    assert token == manager.get_token().token
    manager.authenticate(token)  # a real token, verified by the same keys


def test_plugin_request_token_forwards_the_full_user_token(compat: AuthCompat) -> None:
    full = user_jwt()
    user = compat.authenticate(full)
    token = compat.get_plugin_request_token(on_behalf_of=user, target_plugin_id="catalog")
    assert token.token == full


def test_plugin_request_token_for_a_user_without_token_is_refused(compat: AuthCompat) -> None:
    with pytest.raises(AuthenticationError, match="unexpectedly missing token"):
        compat.get_plugin_request_token(
            on_behalf_of=Credentials(UserPrincipal(JANE)), target_plugin_id="catalog"
        )


def test_plugin_request_token_for_none_is_empty(compat: AuthCompat) -> None:
    token = compat.get_plugin_request_token(
        on_behalf_of=NONE_CREDENTIALS, target_plugin_id="catalog"
    )
    assert token.token == ""


def test_plugin_request_token_for_an_unknown_principal_is_refused(compat: AuthCompat) -> None:
    alien = Credentials(t.cast(t.Any, AlienPrincipal()))
    with pytest.raises(AuthenticationError) as info:
        compat.get_plugin_request_token(on_behalf_of=alien, target_plugin_id="catalog")
    assert info.value.message == "Refused to issue service token for credential type 'alien'"


def test_limited_user_token_is_the_full_token(compat: AuthCompat) -> None:
    exp = int(time.time()) + 1200
    full = user_jwt(exp=exp)
    limited = compat.get_limited_user_token(compat.authenticate(full))
    assert limited == LimitedUserToken(full, exp)


def test_limited_user_token_reads_exp_when_credentials_have_none(compat: AuthCompat) -> None:
    full = user_jwt(exp=1_900_000_000)
    limited = compat.get_limited_user_token(Credentials(UserPrincipal(JANE), token=full))
    assert limited.expires_at == 1_900_000_000


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        (Credentials(UserPrincipal(JANE)), "unexpectedly missing token"),
        (
            Credentials(UserPrincipal(JANE), token=user_jwt(exp=None)),
            "User token is missing expiration",
        ),
        (Credentials(UserPrincipal(JANE), token="not-a-jwt"), "Invalid token"),
        (
            Credentials(ServicePrincipal("plugin:x"), token="t"),
            "Refused to issue limited user token for credential type 'service'",
        ),
    ],
)
def test_limited_user_token_refusals(
    compat: AuthCompat, credentials: Credentials, message: str
) -> None:
    with pytest.raises(AuthenticationError, match=message):
        compat.get_limited_user_token(credentials)


def test_list_public_service_keys_is_not_implemented(compat: AuthCompat) -> None:
    with pytest.raises(NotImplementedError, match="Not implemented"):
        compat.list_public_service_keys()


# --------------------------------------------------------------------------
# HttpAuthCompat


def make_compat_app(http_auth: HttpAuthCompat) -> Flask:
    """An old-environment app whose routes use the new http_auth API."""
    app = Flask("compat-app", static_folder=None)
    app.testing = True

    @app.get("/any")
    def any_caller() -> t.Any:
        return jsonify(http_auth.credentials().to_dict())

    @app.get("/users")
    def users_only() -> t.Any:
        return jsonify(http_auth.credentials(allow=["user"]).to_dict())

    @app.get("/services")
    def services_only() -> t.Any:
        return jsonify(http_auth.credentials(allow=["service"]).to_dict())

    @app.get("/authenticated")
    def authenticated() -> t.Any:
        creds = http_auth.credentials(allow=["user", "service"], allow_limited_access=True)
        return jsonify(creds.to_dict())

    return app


@pytest.fixture
def compat_app(identity: FakeIdentity, manager: ServerTokenManager) -> Flask:
    adapters = create_legacy_auth_adapters(identity=identity, token_manager=manager)
    return make_compat_app(t.cast(HttpAuthCompat, adapters.http_auth))


def test_http_no_header_is_none_credentials_without_allow(compat_app: Flask) -> None:
    with compat_app.test_client() as client:
        response = client.get("/any")
    assert response.status_code == 200
    assert response.get_json() == {"principal": {"type": "none"}}


def test_http_missing_credentials_is_401(compat_app: Flask) -> None:
    with compat_app.test_client() as client:
        response = client.get("/authenticated")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.get_json()["error"] == {
        "name": "AuthenticationError",
        "message": "Missing credentials",
    }


@pytest.mark.parametrize("header", ["Basic dXNlcjpwdw==", "Bearer", "Bearer a b", "Bearer\ta"])
def test_http_malformed_header_is_none_credentials(compat_app: Flask, header: str) -> None:
    with compat_app.test_client() as client:
        assert client.get("/any", headers={"Authorization": header}).get_json() == {
            "principal": {"type": "none"}
        }
        assert client.get("/authenticated", headers={"Authorization": header}).status_code == 401


def test_http_service_token_passes_and_is_refused_where_only_users_are(
    compat_app: Flask, manager: ServerTokenManager
) -> None:
    headers = {"Authorization": f"Bearer {manager.get_token().token}"}
    with compat_app.test_client() as client:
        ok = client.get("/services", headers=headers)
        refused = client.get("/users", headers=headers)
    assert ok.status_code == 200
    assert ok.get_json()["principal"] == {"type": "service", "subject": LEGACY_SERVICE_SUBJECT}
    assert refused.status_code == 403
    assert refused.get_json()["error"] == {
        "name": "NotAllowedError",
        "message": "This endpoint does not allow 'service' credentials",
    }


def test_http_user_token_passes_and_is_refused_where_only_services_are(
    compat_app: Flask,
) -> None:
    headers = {"Authorization": f"Bearer {user_jwt()}"}
    with compat_app.test_client() as client:
        ok = client.get("/users", headers=headers)
        refused = client.get("/services", headers=headers)
    assert ok.get_json()["principal"] == {"type": "user", "userEntityRef": JANE}
    assert refused.status_code == 403
    assert refused.get_json()["error"]["message"] == (
        "This endpoint does not allow 'user' credentials"
    )


@pytest.mark.parametrize("token", NOT_JWTS[:4])
def test_http_non_jwt_three_part_token_is_401(compat_app: Flask, token: str) -> None:
    with compat_app.test_client() as client:
        response = client.get("/any", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.get_json()["error"]["name"] == "AuthenticationError"


def test_http_cookie_is_ignored_even_with_limited_access(compat_app: Flask) -> None:
    with compat_app.test_client() as client:
        client.set_cookie("backstage-auth", user_jwt())
        response = client.get("/authenticated")
    assert response.status_code == 401
    assert response.get_json()["error"]["message"] == "Missing credentials"


def test_http_credentials_are_cached_per_request(
    identity: FakeIdentity, manager: ServerTokenManager
) -> None:
    counting = CountingTokenManager(manager)
    http_auth = HttpAuthCompat(AuthCompat(identity, counting))
    req = bearer_request(f"Bearer {manager.get_token().token}")
    first = http_auth.credentials(req)
    second = http_auth.credentials(req, allow=["service"])
    assert first is second
    assert counting.calls == 1
    http_auth.credentials(bearer_request(f"Bearer {manager.get_token().token}"))
    assert counting.calls == 2  # another request is verified again


def test_http_invalid_token_is_not_cached_as_valid(compat: AuthCompat) -> None:
    http_auth = HttpAuthCompat(compat)
    req = bearer_request("Bearer not-a-valid-token")
    for _ in range(2):
        with pytest.raises(AuthenticationError, match="Invalid server token"):
            http_auth.credentials(req)


def test_issue_user_cookie_is_a_noop_with_an_hour(compat: AuthCompat) -> None:
    http_auth = HttpAuthCompat(compat, clock=lambda: 1_000.0)
    response = Response()
    result = http_auth.issue_user_cookie(response, credentials=Credentials(UserPrincipal(JANE)))
    assert result == IssuedUserCookie(4_600.0)
    assert "Set-Cookie" not in response.headers


def test_remove_user_cookie_clears_backstage_auth(compat: AuthCompat) -> None:
    response = Response()
    HttpAuthCompat(compat).remove_user_cookie(response)
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("backstage-auth=;")
    assert "Expires=Thu, 01 Jan 1970" in cookie


# --------------------------------------------------------------------------
# UserInfoCompat


def test_user_info_reads_sub_and_ent() -> None:
    token = user_jwt(ent=[JANE, "group:default/payments"])
    info = UserInfoCompat().get_user_info(Credentials(UserPrincipal(JANE), token=token))
    assert info == BackstageUserInfo(JANE, (JANE, "group:default/payments"))


def test_user_info_without_ent_and_without_discovery_fails_closed() -> None:
    # Backstage's UserInfoCompat answers [] here; tokens have no ent by default
    # since plugin-auth-backend 0.28, so an empty ownership would be a guess.
    with pytest.raises(ServiceUnavailableError, match="can not be determined") as info:
        UserInfoCompat().get_user_info(Credentials(UserPrincipal(JANE), token=user_jwt()))
    assert info.value.code == 503


@pytest.mark.parametrize(
    "credentials",
    [NONE_CREDENTIALS, Credentials(ServicePrincipal("plugin:x"), token=user_jwt())],
)
def test_user_info_of_non_users_is_an_input_error(credentials: Credentials) -> None:
    with pytest.raises(InputError, match="Only user credentials are supported") as info:
        UserInfoCompat().get_user_info(credentials)
    assert info.value.code == 400


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "unexpectedly missing token"),
        ("not-a-jwt", exactly_401("Invalid token")),
        ("a.b.c", exactly_401("Invalid token")),
        (user_jwt(sub=None), "User entity ref must be a string"),
        (user_jwt(sub=42), "User entity ref must be a string"),
        (user_jwt(ent="group:default/x"), "Ownership entity refs must be an array of strings"),
        (user_jwt(ent=["group:default/x", 7]), "Ownership entity refs must be an array"),
    ],
)
def test_user_info_refusals_are_401(token: str | None, message: str) -> None:
    with pytest.raises(AuthenticationError, match=message) as info:
        UserInfoCompat().get_user_info(Credentials(UserPrincipal(JANE), token=token))
    assert info.value.code == 401


# --------------------------------------------------------------------------
# identity_from_auth and the old-plugin end to end


def make_new_app(*, mock_tokens: bool = True) -> Flask:
    """A new-environment app with ``BackstageAuth``."""
    app = Flask("new-environment", static_folder=None)
    app.testing = True
    app.config["BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS"] = mock_tokens
    app.config["BACKSTAGE_CONFIG"] = {
        "backend": {
            "auth": {
                "externalAccess": [
                    {"type": "static", "options": {"token": STATIC_TOKEN, "subject": "ci"}}
                ],
                "keys": [{"secret": base64.b64encode(os.urandom(32)).decode()}],
            }
        }
    }
    BackstageAuth(app)
    return app


def mock_user(sub: str = JANE) -> str:
    return f'mock-user-token:{{"sub":"{sub}"}}'


def test_identity_from_auth_without_bearer_is_none() -> None:
    identity = identity_from_auth(BackstageAuth.state(make_new_app()).auth("old-plugin"))
    assert identity.get_identity(bearer_request()) is None
    assert identity.get_identity(bearer_request("Basic dXNlcjpwdw==")) is None


def test_identity_from_auth_returns_the_user() -> None:
    identity = identity_from_auth(BackstageAuth.state(make_new_app()).auth("old-plugin"))
    token = mock_user()
    result = identity.get_identity(bearer_request(f"Bearer {token}"))
    assert result == LegacyIdentity(JANE, (), token)


def test_identity_from_auth_refuses_service_principals() -> None:
    app = make_new_app()
    state = BackstageAuth.state(app)
    identity = identity_from_auth(state.auth("old-plugin"))
    for token in (STATIC_TOKEN, state.token_manager.get_token().token, "mock-service-token"):
        with pytest.raises(AuthenticationError, match=exactly_401("Token is not a user token")):
            identity.get_identity(bearer_request(f"Bearer {token}"))


def test_identity_from_auth_propagates_invalid_tokens() -> None:
    identity = identity_from_auth(BackstageAuth.state(make_new_app()).auth("old-plugin"))
    with pytest.raises(AuthenticationError, match="Illegal token"):
        identity.get_identity(bearer_request("Bearer garbage"))


def create_router(identity: t.Any, token_manager: t.Any, seen: list[Credentials]) -> Blueprint:
    """An old-style plugin factory: it knows nothing of BackstageAuth."""
    router = Blueprint("old-plugin", __name__, url_prefix="/api/old-plugin")
    require_auth = create_require_authentication_middleware(identity, token_manager)

    @router.before_request
    def guard() -> t.Any:
        try:
            request.environ["flask_backstage_auth.credentials"] = require_auth.authenticate(
                request.environ
            )
        except AuthenticationError as error:
            return error.get_response(request.environ)
        return None

    @router.get("/whoami")
    def whoami() -> t.Any:
        credentials = get_middleware_credentials(request.environ)
        assert credentials is not None
        seen.append(credentials)
        return jsonify(
            {
                **credentials.to_dict(),
                # An outgoing call's token, as old plugins make them.
                "outgoing": token_manager.get_token().token,
            }
        )

    return router


def mount_old_plugin(app: Flask, *, own_auth_only: bool) -> list[Credentials]:
    state = BackstageAuth.state(app)
    seen: list[Credentials] = []
    app.register_blueprint(
        create_router(identity_from_auth(state.auth("old-plugin")), state.token_manager, seen)
    )
    if own_auth_only:
        # The old plugin guards itself; the barrier steps aside for it.
        BackstageAuth().add_auth_policy("old-plugin", allow="unauthenticated", app=app)

    new_plugin = Blueprint("catalog", __name__, url_prefix="/api/catalog")

    @new_plugin.get("/entities")
    def entities() -> t.Any:
        return jsonify(BackstageAuth.state().http_auth("catalog").credentials().to_dict())

    app.register_blueprint(new_plugin)
    return seen


@pytest.mark.parametrize("own_auth_only", [True, False])
def test_old_plugin_accepts_a_legacy_server_token(own_auth_only: bool) -> None:
    app = make_new_app()
    seen = mount_old_plugin(app, own_auth_only=own_auth_only)
    token = BackstageAuth.state(app).token_manager.get_token().token
    with app.test_client() as client:
        response = client.get(
            "/api/old-plugin/whoami", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200
    assert response.get_json()["principal"] == {
        "type": "service",
        "subject": LEGACY_SERVICE_SUBJECT,
    }
    assert seen == [Credentials(ServicePrincipal(LEGACY_SERVICE_SUBJECT))]


@pytest.mark.parametrize("own_auth_only", [True, False])
def test_old_plugin_sees_a_user_through_identity(own_auth_only: bool) -> None:
    app = make_new_app()
    seen = mount_old_plugin(app, own_auth_only=own_auth_only)
    token = mock_user()
    with app.test_client() as client:
        response = client.get(
            "/api/old-plugin/whoami", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200
    assert response.get_json()["principal"] == {"type": "user", "userEntityRef": JANE}
    assert seen[0].principal == UserPrincipal(JANE)
    assert seen[0].token == token


def test_old_plugin_refuses_garbage_itself() -> None:
    app = make_new_app()
    seen = mount_old_plugin(app, own_auth_only=True)
    with app.test_client() as client:
        garbage = client.get("/api/old-plugin/whoami", headers={"Authorization": "Bearer garbage"})
        missing = client.get("/api/old-plugin/whoami")
    assert garbage.status_code == 401
    # The old middleware's message: the identity's error comes first.
    assert garbage.get_json()["error"]["message"] == (
        "Token is not valid; caused by AuthenticationError: Illegal token"
    )
    assert missing.status_code == 401
    assert missing.get_json()["error"]["message"] == "Authentication is required"
    assert seen == []


def test_old_plugin_behind_the_barrier_refuses_garbage() -> None:
    app = make_new_app()
    seen = mount_old_plugin(app, own_auth_only=False)
    with app.test_client() as client:
        garbage = client.get("/api/old-plugin/whoami", headers={"Authorization": "Bearer garbage"})
    assert garbage.status_code == 401
    assert garbage.get_json()["error"]["message"] == "Illegal token"  # the barrier's
    assert seen == []


def test_old_plugin_refuses_static_tokens_as_old_backstage_would() -> None:
    app = make_new_app()
    seen = mount_old_plugin(app, own_auth_only=False)
    headers = {"Authorization": f"Bearer {STATIC_TOKEN}"}
    with app.test_client() as client:
        new_style = client.get("/api/catalog/entities", headers=headers)
        old_style = client.get("/api/old-plugin/whoami", headers=headers)
    assert new_style.status_code == 200  # the barrier and new plugins accept it
    assert new_style.get_json()["principal"]["subject"] == "ci"
    assert old_style.status_code == 401  # a service principal the old plugin cannot see
    assert "Token is not a user token" in old_style.get_json()["error"]["message"]
    assert seen == []


def test_old_plugins_outgoing_token_is_accepted_by_a_new_plugin() -> None:
    app = make_new_app()
    mount_old_plugin(app, own_auth_only=True)
    with app.test_client() as client:
        old = client.get(
            "/api/old-plugin/whoami", headers={"Authorization": f"Bearer {mock_user()}"}
        )
        outgoing = old.get_json()["outgoing"]
        new = client.get("/api/catalog/entities", headers={"Authorization": f"Bearer {outgoing}"})
    assert new.status_code == 200
    assert new.get_json()["principal"] == {"type": "service", "subject": LEGACY_SERVICE_SUBJECT}
