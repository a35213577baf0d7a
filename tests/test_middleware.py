"""The require-authentication WSGI middleware, through a real Flask app."""

from __future__ import annotations

import base64
import json
import os
import re
import typing as t
from dataclasses import dataclass, field

import jwt
import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from werkzeug.test import TestResponse
from werkzeug.wrappers import Request

import flask_backstage_auth
from flask_backstage_auth import (
    Credentials,
    ServerTokenManager,
    ServicePrincipal,
    UserPrincipal,
    create_require_authentication_middleware,
)
from flask_backstage_auth.legacy.middleware import (
    LEGACY_SERVICE_SUBJECT,
    RequireAuthentication,
    RequireAuthenticationMiddleware,
    get_middleware_credentials,
)
from flask_backstage_auth.legacy.token_manager import NoopTokenManager, ServerToken
from flask_backstage_auth.legacy.tokens import SUBJECT, TOKEN_LIFETIME

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

#: The seed's exemption (shared/seeds/004), ``^`` included.
TECHDOCS_CSS = re.compile(r"^/api/techdocs/static/docs/.+\.css")
#: A fixed "now" for the tests that mint and verify with injected clocks.
T0 = 1_800_000_000
#: Every protected view's body carries this, so a leak is easy to spot.
PROTECTED_MARKER = "PROTECTED-DATA-7f3a"
ENTITY_REF = "component:default/payments-ledger"
AUTH_REQUIRED = "Authentication is required"
TOKEN_NOT_VALID = "Token is not valid"


# --------------------------------------------------------------------------
# the app


@dataclass
class Backend:
    """A Flask app guarded by the middleware, and what its views saw."""

    app: Flask
    #: ``(path, credentials)`` of every view invocation.
    calls: list[tuple[str, Credentials | None]] = field(default_factory=list)

    @property
    def client(self) -> FlaskClient:
        return self.app.test_client()

    def paths_served(self) -> list[str]:
        return [path for path, _ in self.calls]


def make_backend(
    catalog_rule: RequireAuthentication, techdocs_rule: RequireAuthentication | None = None
) -> Backend:
    """``/api/catalog`` guarded by ``catalog_rule``, ``/api/techdocs`` by
    ``techdocs_rule`` (default: ``catalog_rule`` with the seed's CSS exemption);
    ``/api/catalogue`` and ``/api/app`` are not guarded."""
    app = Flask(__name__)
    app.testing = True
    backend = Backend(app)

    def record() -> None:
        backend.calls.append((request.path, get_middleware_credentials(request.environ)))

    @app.route("/api/catalog/entities", methods=["GET", "POST", "DELETE"])
    def catalog_entities() -> dict[str, t.Any]:
        record()
        return {"items": [ENTITY_REF], "marker": PROTECTED_MARKER}

    @app.get("/api/catalog/", strict_slashes=False)
    def catalog_root() -> str:
        record()
        return f"catalog root {PROTECTED_MARKER}"

    @app.get("/api/catalogue")
    def catalogue() -> str:
        record()
        return "public catalogue"

    @app.get("/api/app/health")
    def health() -> dict[str, str]:
        record()
        return {"status": "ok"}

    @app.get("/api/techdocs/static/docs/<path:p>")
    def techdocs_file(p: str) -> tuple[str, int, dict[str, str]]:
        # Serves anything, as a file server would: reaching it at all is what
        # the path tricks below must not achieve.
        record()
        mimetype = "text/css" if p.endswith(".css") else "text/html"
        return f"/* {p} */ {PROTECTED_MARKER}", 200, {"Content-Type": mimetype}

    if techdocs_rule is None:
        techdocs_rule = catalog_rule.unless(path=TECHDOCS_CSS)
    app.wsgi_app = catalog_rule.wrap(app.wsgi_app, prefix="/api/catalog")  # type: ignore[method-assign]
    app.wsgi_app = techdocs_rule.wrap(app.wsgi_app, prefix="/api/techdocs")  # type: ignore[method-assign]
    return backend


@dataclass
class FakeIdentity:
    user_entity_ref: str


@dataclass
class FakeIdentityApi:
    """``get_identity`` returns ``result``, or raises ``error``; records requests."""

    result: FakeIdentity | None = None
    error: BaseException | None = None
    requests: list[Request] = field(default_factory=list)

    def get_identity(self, request: Request) -> FakeIdentity | None:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return self.result


class ExplodingTokenManager:
    """A token manager whose ``authenticate`` fails with a non-auth error."""

    def __init__(self, message: str = "database is on fire") -> None:
        self.message = message
        self.seen: list[str] = []

    def get_token(self) -> ServerToken:
        return ServerToken("")

    def authenticate(self, token: str) -> None:
        self.seen.append(token)
        raise RuntimeError(self.message.format(token=token))


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def manager(key: bytes) -> ServerTokenManager:
    return ServerTokenManager([key])


@pytest.fixture
def token(manager: ServerTokenManager) -> str:
    return manager.get_token().token


@pytest.fixture
def rule(manager: ServerTokenManager) -> RequireAuthentication:
    return create_require_authentication_middleware(None, manager)


@pytest.fixture
def backend(rule: RequireAuthentication) -> Backend:
    return make_backend(rule)


@pytest.fixture
def app(backend: Backend) -> Flask:
    return backend.app


# --------------------------------------------------------------------------
# helpers


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_message(response: TestResponse) -> str:
    body = response.get_json()
    assert isinstance(body, dict)
    message = body["error"]["message"]
    assert isinstance(message, str)
    return message


def assert_rejected(
    response: TestResponse,
    backend: Backend,
    *,
    message_prefix: str | None = None,
    secret: str | None = None,
) -> None:
    """A 401 in Backstage's shape, no view ran, nothing protected nor ``secret`` leaked."""
    text = response.get_data(as_text=True)
    assert response.status_code == 401, text
    assert response.headers.get("WWW-Authenticate") == "Bearer"
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"]["name"] == "AuthenticationError"
    assert body["response"] == {"statusCode": 401}
    if message_prefix is not None:
        assert body["error"]["message"].startswith(message_prefix), body
    assert PROTECTED_MARKER not in text
    assert ENTITY_REF not in text
    assert backend.calls == []
    if secret:
        assert secret not in text


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: t.Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


# --------------------------------------------------------------------------
# no credentials


def test_no_authorization_gives_backstage_401(client: FlaskClient, backend: Backend) -> None:
    response = client.get("/api/catalog/entities")
    assert response.status_code == 401
    assert response.get_json() == {
        "error": {"name": "AuthenticationError", "message": AUTH_REQUIRED},
        "request": {"method": "GET", "url": "/api/catalog/entities"},
        "response": {"statusCode": 401},
    }
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.mimetype == "application/json"
    assert response.headers["Content-Type"].startswith("application/json")
    assert_rejected(response, backend)


def test_error_body_names_the_method(client: FlaskClient, backend: Backend) -> None:
    response = client.post("/api/catalog/entities", json={"x": 1})
    assert response.get_json()["request"] == {"method": "POST", "url": "/api/catalog/entities"}
    assert_rejected(response, backend, message_prefix=AUTH_REQUIRED)


def test_error_body_leaves_out_the_query_string(client: FlaskClient, backend: Backend) -> None:
    secret = "q-secret-9b1c2d"
    response = client.get(f"/api/catalog/entities?token={secret}")
    assert response.get_json()["request"]["url"] == "/api/catalog/entities"
    assert_rejected(response, backend, secret=secret)


# --------------------------------------------------------------------------
# a valid server token


def test_valid_server_token_passes_with_service_credentials(
    client: FlaskClient, backend: Backend, token: str
) -> None:
    response = client.get("/api/catalog/entities", headers=bearer(token))
    assert response.status_code == 200
    assert response.get_json()["items"] == [ENTITY_REF]
    assert len(backend.calls) == 1
    path, credentials = backend.calls[0]
    assert path == "/api/catalog/entities"
    assert credentials is not None
    assert credentials.principal == ServicePrincipal(LEGACY_SERVICE_SUBJECT)
    assert credentials.principal.subject == "external:backstage-plugin"
    assert credentials.token == token


def test_valid_token_with_lowercase_scheme_passes(
    client: FlaskClient, backend: Backend, token: str
) -> None:
    response = client.get("/api/catalog/entities", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200
    assert backend.paths_served() == ["/api/catalog/entities"]


def test_token_from_another_manager_with_the_same_key_passes(
    client: FlaskClient, backend: Backend, key: bytes
) -> None:
    other = ServerTokenManager([os.urandom(32), key])  # verifies with its second key
    minted = ServerTokenManager([key]).get_token().token
    assert client.get("/api/catalog/entities", headers=bearer(minted)).status_code == 200
    rotated = make_backend(create_require_authentication_middleware(None, other))
    assert rotated.client.get("/api/catalog/entities", headers=bearer(minted)).status_code == 200


def test_unguarded_paths_carry_no_credentials(client: FlaskClient, backend: Backend) -> None:
    assert client.get("/api/app/health").status_code == 200
    assert backend.calls == [("/api/app/health", None)]


# --------------------------------------------------------------------------
# invalid tokens


def test_token_signed_with_another_key_is_rejected(client: FlaskClient, backend: Backend) -> None:
    foreign = ServerTokenManager([os.urandom(32)]).get_token().token
    response = client.get("/api/catalog/entities", headers=bearer(foreign))
    assert_rejected(response, backend, message_prefix=TOKEN_NOT_VALID, secret=foreign)


def test_nested_cause_is_rendered_as_backstage_does(client: FlaskClient, backend: Backend) -> None:
    foreign = ServerTokenManager([os.urandom(32)]).get_token().token
    message = error_message(client.get("/api/catalog/entities", headers=bearer(foreign)))
    assert message.startswith(
        f"{TOKEN_NOT_VALID}; caused by AuthenticationError: Invalid server token"
    ), message
    assert "401 Unauthorized" not in message


def test_expired_token_is_rejected(key: bytes) -> None:
    minted = ServerTokenManager([key], clock=lambda: T0).get_token().token
    still_valid = make_backend(
        create_require_authentication_middleware(
            None, ServerTokenManager([key], clock=lambda: T0 + TOKEN_LIFETIME - 1)
        )
    )
    assert (
        still_valid.client.get("/api/catalog/entities", headers=bearer(minted)).status_code == 200
    )
    expired = make_backend(
        create_require_authentication_middleware(
            None, ServerTokenManager([key], clock=lambda: T0 + TOKEN_LIFETIME)
        )
    )
    response = expired.client.get("/api/catalog/entities", headers=bearer(minted))
    assert_rejected(response, expired, message_prefix=TOKEN_NOT_VALID, secret=minted)


def test_token_expiring_too_far_ahead_is_rejected(key: bytes) -> None:
    # Minted by a clock two minutes ahead: exp is beyond one hour plus the leeway.
    minted = ServerTokenManager([key], clock=lambda: T0 + 120).get_token().token
    backend = make_backend(
        create_require_authentication_middleware(None, ServerTokenManager([key], clock=lambda: T0))
    )
    response = backend.client.get("/api/catalog/entities", headers=bearer(minted))
    assert_rejected(response, backend, message_prefix=TOKEN_NOT_VALID, secret=minted)


#: A key long enough for HS512 so PyJWT never warns (filterwarnings = error).
LONG_KEY = os.urandom(64)


@pytest.fixture
def crafted_backend() -> Backend:
    manager = ServerTokenManager([LONG_KEY], clock=lambda: T0)
    return make_backend(create_require_authentication_middleware(None, manager))


def craft(
    claims: dict[str, t.Any],
    *,
    algorithm: str = "HS256",
    key: bytes = LONG_KEY,
    headers: dict[str, t.Any] | None = None,
) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


VALID_CLAIMS = {"sub": SUBJECT, "exp": T0 + 600}


def _tampered_payload() -> str:
    header, _, signature = craft(VALID_CLAIMS).split(".")
    return ".".join([header, b64url_json({"sub": SUBJECT, "exp": T0 + 900}), signature])


def _tampered_signature() -> str:
    header, payload, signature = craft(VALID_CLAIMS).split(".")
    # Change the first character: the last one may only carry padding bits.
    first = "B" if signature[0] != "B" else "C"
    return ".".join([header, payload, first + signature[1:]])


def _alg_none_with_signature() -> str:
    header, payload, _ = craft(VALID_CLAIMS).split(".")
    return ".".join([b64url_json({"alg": "none"}), payload, b64url(b"x" * 32)])


def _alg_none_unsigned() -> str:
    return jwt.encode(VALID_CLAIMS, "", algorithm="none")


CRAFTED_INVALID: dict[str, t.Callable[[], str]] = {
    "no-exp": lambda: craft({"sub": SUBJECT}),
    "exp-in-the-past": lambda: craft({"sub": SUBJECT, "exp": T0 - 1}),
    "exp-now": lambda: craft({"sub": SUBJECT, "exp": T0}),
    "exp-as-string": lambda: craft({"sub": SUBJECT, "exp": str(T0 + 600)}),
    "exp-as-bool": lambda: craft({"sub": SUBJECT, "exp": True}),
    "exp-too-far": lambda: craft({"sub": SUBJECT, "exp": T0 + 2 * TOKEN_LIFETIME}),
    "nbf-in-the-future": lambda: craft({**VALID_CLAIMS, "nbf": T0 + 60}),
    "wrong-sub": lambda: craft({"sub": "backstage-server2", "exp": T0 + 600}),
    "no-sub": lambda: craft({"exp": T0 + 600}),
    "with-aud": lambda: craft({**VALID_CLAIMS, "aud": "backstage"}),
    "user-typ": lambda: craft(VALID_CLAIMS, headers={"typ": "vnd.backstage.user"}),
    "crit-header": lambda: craft(VALID_CLAIMS, headers={"crit": ["exp"]}),
    "alg-none-unsigned": _alg_none_unsigned,
    "alg-none-signed": _alg_none_with_signature,
    "hs384": lambda: craft(VALID_CLAIMS, algorithm="HS384"),
    "hs512": lambda: craft(VALID_CLAIMS, algorithm="HS512"),
    "tampered-payload": _tampered_payload,
    "tampered-signature": _tampered_signature,
    "other-key": lambda: craft(VALID_CLAIMS, key=os.urandom(64)),
    "array-payload": lambda: jwt.PyJWS().encode(b"[1,2]", LONG_KEY, algorithm="HS256"),
    "string-payload": lambda: jwt.PyJWS().encode(
        b'"backstage-server"', LONG_KEY, algorithm="HS256"
    ),
}


def test_crafted_control_token_is_accepted(crafted_backend: Backend) -> None:
    # The crafting helper makes tokens the manager accepts: the rejections
    # below are due to what each case changes, not to the helper.
    response = crafted_backend.client.get(
        "/api/catalog/entities", headers=bearer(craft(VALID_CLAIMS))
    )
    assert response.status_code == 200
    assert crafted_backend.paths_served() == ["/api/catalog/entities"]


@pytest.mark.parametrize("case", list(CRAFTED_INVALID), ids=list(CRAFTED_INVALID))
def test_crafted_invalid_token_is_rejected(crafted_backend: Backend, case: str) -> None:
    crafted = CRAFTED_INVALID[case]()
    response = crafted_backend.client.get("/api/catalog/entities", headers=bearer(crafted))
    assert_rejected(response, crafted_backend, message_prefix=TOKEN_NOT_VALID, secret=crafted)


@pytest.mark.parametrize(
    "value",
    [
        "not-a-jwt",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "..",
        "eyJhbGciOiJIUzI1NiJ9..sig",
        "eyJ.eyJ.c2ln",
        "%%%.%%%.%%%",
        "a" * 10_000,
        "\u00e9t\u00e9.\u00e9t\u00e9.\u00e9t\u00e9",
    ],
    ids=[
        "word",
        "two-parts",
        "three-junk-parts",
        "four-parts",
        "dots",
        "empty-payload",
        "bad-b64",
        "percent",
        "long",
        "latin1",
    ],
)
def test_non_jwt_bearer_is_rejected(client: FlaskClient, backend: Backend, value: str) -> None:
    response = client.get("/api/catalog/entities", headers=bearer(value))
    assert_rejected(response, backend, message_prefix=TOKEN_NOT_VALID)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNzd29yZA==",
        "Basic {token}",
        "Token {token}",
        "{token}",
        "Bearer\t{token}",
        "Bearer {token} extra",
        "Bearer {token},",
        "Bearer " + "a" * (20 * 1024),
        "Bearer {token}" + " " * (20 * 1024),
        "Bearer {token}" + "x" * (20 * 1024),
    ],
    ids=[
        "empty",
        "scheme-only",
        "scheme-and-space",
        "basic",
        "basic-with-token",
        "token-scheme",
        "bare-token",
        "tab",
        "trailing-text",
        "trailing-comma-token",
        "oversized",
        "oversized-with-valid-token-and-spaces",
        "oversized-with-valid-token",
    ],
)
def test_malformed_authorization_is_rejected(
    client: FlaskClient, backend: Backend, token: str, header: str
) -> None:
    value = header.format(token=token)
    response = client.get("/api/catalog/entities", headers={"Authorization": value})
    # A valid token inside a malformed header is never accepted, never echoed.
    assert_rejected(response, backend, secret=token)
    # Either there is no bearer token at all, or the token is not valid:
    assert error_message(response).startswith((AUTH_REQUIRED, TOKEN_NOT_VALID))


def test_no_bearer_token_says_authentication_is_required(
    client: FlaskClient, backend: Backend, token: str
) -> None:
    for value in ("", "Basic xxx", f"Bearer\t{token}", "Bearer " + "a" * (20 * 1024)):
        response = client.get("/api/catalog/entities", headers={"Authorization": value})
        assert error_message(response) == AUTH_REQUIRED


# --------------------------------------------------------------------------
# the noop token manager


@pytest.fixture
def noop_backend() -> Backend:
    noop = ServerTokenManager.noop()
    assert isinstance(noop, NoopTokenManager)
    return make_backend(create_require_authentication_middleware(None, noop))


@pytest.mark.parametrize("value", ["x", "anything-at-all", "a.b.c"])
def test_noop_manager_accepts_any_bearer(noop_backend: Backend, value: str) -> None:
    response = noop_backend.client.get("/api/catalog/entities", headers=bearer(value))
    assert response.status_code == 200
    [(_, credentials)] = noop_backend.calls
    assert credentials is not None
    assert credentials.principal == ServicePrincipal(LEGACY_SERVICE_SUBJECT)
    assert credentials.token == value


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": ""}, {"Authorization": "Bearer "}, {"Authorization": "Basic x"}],
)
def test_noop_manager_still_requires_a_bearer(
    noop_backend: Backend, headers: dict[str, str]
) -> None:
    response = noop_backend.client.get("/api/catalog/entities", headers=headers)
    assert_rejected(response, noop_backend, message_prefix=AUTH_REQUIRED)


# --------------------------------------------------------------------------
# a user identity service


def test_identity_gives_user_credentials(manager: ServerTokenManager) -> None:
    identity = FakeIdentityApi(result=FakeIdentity("user:default/jane"))
    backend = make_backend(create_require_authentication_middleware(identity, manager))
    response = backend.client.get("/api/catalog/entities", headers=bearer("user-token-abc"))
    assert response.status_code == 200
    [(_, credentials)] = backend.calls
    assert credentials is not None
    assert credentials.principal == UserPrincipal("user:default/jane")
    assert credentials.token == "user-token-abc"
    [seen] = identity.requests
    assert isinstance(seen, Request)
    assert seen.headers["Authorization"] == "Bearer user-token-abc"
    assert seen.path == "/api/catalog/entities"


def test_identity_returning_none_falls_back_to_the_server_token(
    manager: ServerTokenManager, token: str
) -> None:
    identity = FakeIdentityApi(result=None)
    backend = make_backend(create_require_authentication_middleware(identity, manager))
    assert backend.client.get("/api/catalog/entities", headers=bearer(token)).status_code == 200
    [(_, credentials)] = backend.calls
    assert credentials is not None
    assert credentials.principal == ServicePrincipal(LEGACY_SERVICE_SUBJECT)


def test_identity_raising_falls_back_to_the_server_token(
    manager: ServerTokenManager, token: str
) -> None:
    identity = FakeIdentityApi(error=ValueError("not a user token"))
    backend = make_backend(create_require_authentication_middleware(identity, manager))
    assert backend.client.get("/api/catalog/entities", headers=bearer(token)).status_code == 200
    [(_, credentials)] = backend.calls
    assert credentials is not None
    assert credentials.principal.type == "service"


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("identity service down"),
        flask_backstage_auth.AuthenticationError("bad user token"),
        KeyError("kid"),
    ],
    ids=["runtime-error", "authentication-error", "key-error"],
)
def test_identity_raising_and_invalid_token_is_rejected(
    manager: ServerTokenManager, error: Exception
) -> None:
    identity = FakeIdentityApi(error=error)
    backend = make_backend(create_require_authentication_middleware(identity, manager))
    response = backend.client.get("/api/catalog/entities", headers=bearer("forged.user.token"))
    assert_rejected(response, backend, message_prefix=TOKEN_NOT_VALID, secret="forged.user.token")
    # The user error comes first, as in Backstage's Promise.any ordering. Our own
    # errors explain themselves; anything else is logged, never shown.
    if isinstance(error, flask_backstage_auth.BackstageError):
        assert (
            error_message(response)
            == f"{TOKEN_NOT_VALID}; caused by AuthenticationError: bad user token"
        )
    else:
        assert error_message(response) == TOKEN_NOT_VALID
    assert len(identity.requests) == 1


def test_identity_returning_an_object_without_ref_is_rejected(manager: ServerTokenManager) -> None:
    class Broken:
        def get_identity(self, request: Request) -> object:
            return object()

    backend = make_backend(create_require_authentication_middleware(Broken(), manager))  # type: ignore[arg-type]
    response = backend.client.get("/api/catalog/entities", headers=bearer("nope"))
    assert_rejected(response, backend, message_prefix=TOKEN_NOT_VALID)


def test_identity_is_not_asked_without_a_bearer(manager: ServerTokenManager) -> None:
    identity = FakeIdentityApi(result=FakeIdentity("user:default/jane"))
    backend = make_backend(create_require_authentication_middleware(identity, manager))
    response = backend.client.get("/api/catalog/entities", headers={"Authorization": "Basic abc"})
    assert_rejected(response, backend, message_prefix=AUTH_REQUIRED)


def test_identity_none_and_invalid_token_says_authentication_is_required(
    manager: ServerTokenManager,
) -> None:
    identity = FakeIdentityApi(result=None)
    backend = make_backend(create_require_authentication_middleware(identity, manager))
    response = backend.client.get("/api/catalog/entities", headers=bearer("invalid"))
    assert_rejected(response, backend)
    assert error_message(response) == AUTH_REQUIRED


# --------------------------------------------------------------------------
# unexpected failures are 401, never 500, and the view never runs


def test_token_manager_raising_runtime_error_is_401() -> None:
    exploding = ExplodingTokenManager()
    backend = make_backend(create_require_authentication_middleware(None, exploding))
    response = backend.client.get("/api/catalog/entities", headers=bearer("abc"))
    assert_rejected(response, backend, message_prefix=TOKEN_NOT_VALID)
    assert exploding.seen == ["abc"]


def test_identity_and_token_manager_both_raising_is_401() -> None:
    identity = FakeIdentityApi(error=RuntimeError("boom"))
    backend = make_backend(
        create_require_authentication_middleware(identity, ExplodingTokenManager())
    )
    response = backend.client.get("/api/catalog/entities", headers=bearer("abc"))
    assert_rejected(response, backend, message_prefix=TOKEN_NOT_VALID)


@pytest.mark.parametrize("where", ["identity", "token-manager"])
def test_exception_messages_never_echo_the_token(where: str, manager: ServerTokenManager) -> None:
    secret_token = "sekrit-token-" + os.urandom(8).hex()
    if where == "identity":
        identity = FakeIdentityApi(error=RuntimeError(f"cannot parse {secret_token}"))
        rule = create_require_authentication_middleware(identity, manager)
    else:
        exploding = ExplodingTokenManager("cannot verify {token}")
        rule = create_require_authentication_middleware(None, exploding)
    backend = make_backend(rule)
    response = backend.client.get("/api/catalog/entities", headers=bearer(secret_token))
    assert_rejected(response, backend, secret=secret_token)


def test_unexpected_error_in_authenticate_is_a_generic_401(manager: ServerTokenManager) -> None:
    class Failing(RequireAuthentication):
        def authenticate(self, environ: WSGIEnvironment) -> Credentials:
            raise RuntimeError("internal detail 42")

    backend = make_backend(Failing(None, manager))
    response = backend.client.get("/api/catalog/entities", headers=bearer("x"))
    assert_rejected(response, backend)
    assert error_message(response) == TOKEN_NOT_VALID


def test_custom_predicate_raising_never_runs_the_view(manager: ServerTokenManager) -> None:
    def predicate(request: Request) -> bool:
        raise RuntimeError("predicate failed")

    rule = create_require_authentication_middleware(None, manager).unless(predicate)
    backend = make_backend(rule)
    try:
        response = backend.client.get("/api/catalog/entities")
    except RuntimeError:
        pass  # propagated to the server: a 500, not a pass
    else:
        assert response.status_code != 200
        assert PROTECTED_MARKER not in response.get_data(as_text=True)
    assert backend.calls == []


# --------------------------------------------------------------------------
# prefix scoping


@pytest.mark.parametrize(
    "path",
    [
        "/api/catalog",
        "/api/catalog/",
        "/api/catalog/entities",
        "/api/catalog/entities/",
        "/api/catalog/unknown",
        "/api//catalog/entities",
        "/api/catalog//entities",
        "/API/catalog/entities",
        "/api/Catalog/entities",
        "/api/x/../catalog/entities",
        "/api/./catalog/entities",
        "/api/catalog/./entities",
        "/api/catalog%2fentities",
        "/api%2Fcatalog%2Fentities",
        "/api\\catalog/entities",
        "/api/catalog/entities?x=1",
    ],
)
def test_prefix_guards_every_spelling(client: FlaskClient, backend: Backend, path: str) -> None:
    response = client.get(path)
    assert response.status_code != 200
    assert_rejected(response, backend, message_prefix=AUTH_REQUIRED)


def test_encoded_slash_would_reach_the_view_without_the_middleware() -> None:
    # So the test above is meaningful: routing serves this spelling.
    app = Flask(__name__)

    @app.get("/api/catalog/entities")
    def entities() -> str:
        return PROTECTED_MARKER

    assert app.test_client().get("/api/catalog%2fentities").status_code == 200


@pytest.mark.parametrize(
    "path_info",
    ["//api/catalog/entities", "///api/catalog/entities", "api/catalog/entities"],
)
def test_prefix_guards_leading_slash_variants(
    client: FlaskClient, backend: Backend, path_info: str
) -> None:
    # The test client cannot send these (``//x`` is a network path), but a
    # server may pass them on, and Werkzeug routing strips leading slashes.
    unguarded = Flask(__name__)

    @unguarded.get("/api/catalog/entities")
    def entities() -> str:
        return PROTECTED_MARKER

    overrides = {"PATH_INFO": path_info, "REQUEST_URI": path_info, "RAW_URI": path_info}
    assert unguarded.test_client().get("/", environ_overrides=overrides).status_code == 200
    response = client.get("/", environ_overrides=overrides)
    assert_rejected(response, backend)


@pytest.mark.parametrize("path", ["/api/catalogue", "/api/app/health"])
def test_prefix_does_not_guard_neighbours(client: FlaskClient, backend: Backend, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert backend.calls == [(path, None)]


def test_catalog_root_with_token(client: FlaskClient, backend: Backend, token: str) -> None:
    assert client.get("/api/catalog/", headers=bearer(token)).status_code == 200
    assert client.get("/api/catalog", headers=bearer(token)).status_code == 200
    assert backend.paths_served() == ["/api/catalog/", "/api/catalog"]


def test_wrap_without_prefix_guards_everything(rule: RequireAuthentication, token: str) -> None:
    app = Flask(__name__)

    @app.get("/anything")
    def anything() -> str:
        return PROTECTED_MARKER

    app.wsgi_app = rule.wrap(app.wsgi_app)  # type: ignore[method-assign]
    client = app.test_client()
    assert client.get("/anything").status_code == 401
    assert client.get("/nothing").status_code == 401
    assert client.get("/anything", headers=bearer(token)).status_code == 200


def test_wrap_returns_the_middleware(rule: RequireAuthentication) -> None:
    def inner(environ: WSGIEnvironment, start_response: t.Any) -> list[bytes]:
        raise AssertionError("not called")

    wrapped = rule.wrap(inner, prefix="/api/catalog/")
    assert isinstance(wrapped, RequireAuthenticationMiddleware)
    assert wrapped.prefix == "/api/catalog"
    assert wrapped.app is inner


# --------------------------------------------------------------------------
# the techdocs CSS exemption (seed 004)


@pytest.mark.parametrize(
    "path",
    [
        "/api/techdocs/static/docs/site.css",
        "/api/techdocs/static/docs/a/b.css",
        "/api/techdocs/static/docs/site.css?v=12",
    ],
)
def test_techdocs_css_is_exempt(client: FlaskClient, backend: Backend, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == "text/css"
    [(served, credentials)] = backend.calls
    assert served == path.split("?")[0]
    assert credentials is None


def test_exempt_path_ignores_an_invalid_token(client: FlaskClient, backend: Backend) -> None:
    response = client.get("/api/techdocs/static/docs/site.css", headers=bearer("garbage"))
    assert response.status_code == 200
    assert backend.calls == [("/api/techdocs/static/docs/site.css", None)]


def test_techdocs_html_requires_a_token(client: FlaskClient, backend: Backend, token: str) -> None:
    assert_rejected(
        client.get("/api/techdocs/static/docs/site.html"), backend, message_prefix=AUTH_REQUIRED
    )
    response = client.get("/api/techdocs/static/docs/site.html", headers=bearer(token))
    assert response.status_code == 200
    [(_, credentials)] = backend.calls
    assert credentials is not None and credentials.principal.type == "service"


@pytest.mark.parametrize(
    "path",
    [
        # Outside /api/techdocs once normalised (/api/catalog/entities.css):
        # guarded by both middlewares, exempt from neither.
        "/api/techdocs/static/docs/../../catalog/entities.css",
        "/api/techdocs/static/docs/../../../api/catalog/entities.css",
        "/api/techdocs/static/docs/../secret.css",
        "/api/techdocs/static/docs/%2e%2e/secret.html",
        "/api/techdocs/static/docs/%2e%2e/secret.css",
        "/api/techdocs/static/docs/%2E%2E/%2E%2E/catalog/entities.css",
        "/api/techdocs/static/docs/a%2fb.css",
        "/api/techdocs/static/docs/a%2Fb.css",
        "/api/techdocs/static/docs//site.css",
        "/api/techdocs//static/docs/site.css",
        "/api/techdocs/static/docs/./site.css",
        "/api/techdocs/static/docs/..\\secret.css",
        "/api/techdocs/static/docs/a%5csecret.css",
        "/api/techdocs/static/docs/site.css.html",
        "/api/techdocs/static/docs/site.css/",
        "/api/techdocs/static/docs/site.CSS",
        "/API/techdocs/static/docs/site.css",
        "/api/TechDocs/static/docs/site.css",
        "/api/techdocs/static/docs/secret.html%00.css",
        "/api/techdocs/static/docs/secret.html%0a.css",
        "/api/techdocs/static/docs/secret.html%0d%0a.css",
        "/api/techdocs/static/docs/site%2ecss",
        "/api/techdocs/static/docs/secret.html%2500.css",
        "/api/techdocs/static/docs/secret%E9.css",
        "/api/techdocs/static/docs/secret.html?x=.css",
        "/api/techdocs/static/docs/secret.html?.css",
        "/api/techdocs/static/docs/secret.html#.css",
        "/api/techdocs/static/docs/.css",
        "/api/techdocs/static/docs/site.css%20",
    ],
)
def test_techdocs_path_tricks_are_not_exempt(
    client: FlaskClient, backend: Backend, path: str
) -> None:
    response = client.get(path)
    assert response.status_code != 200
    # Every spelling is refused by the middleware itself (no redirect, no 404
    # from routing): a 401, and the file view never ran.
    assert_rejected(response, backend)


def test_encoded_slash_file_is_served_only_by_its_real_spelling(
    client: FlaskClient, backend: Backend
) -> None:
    # Routing maps both spellings to the same file; only the plain one is exempt.
    assert client.get("/api/techdocs/static/docs/a/b.css").status_code == 200
    assert client.get("/api/techdocs/static/docs/a%2fb.css").status_code == 401
    assert backend.paths_served() == ["/api/techdocs/static/docs/a/b.css"]


def test_exemption_does_not_leak_to_other_prefixes(client: FlaskClient, backend: Backend) -> None:
    # The CSS exemption belongs to the techdocs rule only.
    response = client.get("/api/catalog/entities.css")
    assert_rejected(response, backend)


# --------------------------------------------------------------------------
# chaining and methods


def test_unless_returns_a_new_rule(rule: RequireAuthentication) -> None:
    exempted = rule.unless(method="OPTIONS")
    assert exempted is not rule
    assert rule.exemptions == ()
    assert len(exempted.exemptions) == 1
    assert exempted.token_manager is rule.token_manager


def test_chained_unless_keeps_both_exemptions(rule: RequireAuthentication, token: str) -> None:
    chained = rule.unless(path=TECHDOCS_CSS).unless(path="/api/techdocs/static/docs/index.html")
    backend = make_backend(rule, techdocs_rule=chained)
    client = backend.client
    assert client.get("/api/techdocs/static/docs/site.css").status_code == 200
    assert client.get("/api/techdocs/static/docs/index.html").status_code == 200
    assert client.get("/api/techdocs/static/docs/other.html").status_code == 401
    assert backend.paths_served() == [
        "/api/techdocs/static/docs/site.css",
        "/api/techdocs/static/docs/index.html",
    ]


def test_chained_unless_with_custom_and_method(rule: RequireAuthentication) -> None:
    chained = rule.unless(lambda req: req.headers.get("X-Probe") == "1").unless(method="OPTIONS")
    backend = make_backend(chained)
    client = backend.client
    assert client.get("/api/catalog/entities", headers={"X-Probe": "1"}).status_code == 200
    assert client.options("/api/catalog/entities").status_code == 200
    assert client.get("/api/catalog/entities", headers={"X-Probe": "0"}).status_code == 401
    assert backend.paths_served() == ["/api/catalog/entities"]


def test_options_exemption(rule: RequireAuthentication) -> None:
    backend = make_backend(rule.unless(method="OPTIONS"))
    client = backend.client
    response = client.options("/api/catalog/entities")
    assert response.status_code == 200
    assert "GET" in response.headers["Allow"]
    assert_rejected(client.get("/api/catalog/entities"), backend)
    assert_rejected(client.post("/api/catalog/entities"), backend)
    assert_rejected(client.delete("/api/catalog/entities"), backend)


def test_lowercase_method_exemption_does_not_exempt(rule: RequireAuthentication) -> None:
    backend = make_backend(rule.unless(method="options"))
    assert_rejected(backend.client.options("/api/catalog/entities"), backend)


def test_per_method_path_exemption(rule: RequireAuthentication) -> None:
    exempted = rule.unless(path={"url": "/api/catalog/entities", "methods": ["GET"]})
    backend = make_backend(exempted)
    client = backend.client
    assert client.get("/api/catalog/entities").status_code == 200
    assert client.post("/api/catalog/entities").status_code == 401
    assert client.delete("/api/catalog/entities").status_code == 401
    assert client.get("/api//catalog/entities").status_code == 401
    assert backend.paths_served() == ["/api/catalog/entities"]


def test_ext_exemption_through_the_middleware(rule: RequireAuthentication) -> None:
    backend = make_backend(rule, techdocs_rule=rule.unless(ext=".css"))
    client = backend.client
    assert client.get("/api/techdocs/static/docs/x/y.css").status_code == 200
    assert client.get("/api/techdocs/static/docs/x/../y.css").status_code == 401
    assert client.get("/api/techdocs/static/docs/y.html?.css").status_code == 401
    assert backend.paths_served() == ["/api/techdocs/static/docs/x/y.css"]


# --------------------------------------------------------------------------
# the view never runs unauthenticated


def test_no_rejected_request_reaches_a_view(
    client: FlaskClient, backend: Backend, token: str
) -> None:
    rejected = 0
    paths = ["/api/catalog/entities", "/api/catalog", "/api/techdocs/static/docs/site.html"]
    headers_list: list[dict[str, str]] = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer invalid"},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": f"Bearer\t{token}"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": "Bearer " + "z" * (20 * 1024)},
    ]
    for path in paths:
        for headers in headers_list:
            for method in ("GET", "POST", "DELETE", "PUT", "PATCH", "HEAD"):
                response = client.open(path, method=method, headers=headers)
                assert response.status_code == 401, (path, method, headers)
                rejected += 1
    assert rejected == len(paths) * len(headers_list) * 6
    assert backend.calls == []
    # And the same app serves the same paths with a valid token.
    for path in paths:
        assert client.get(path, headers=bearer(token)).status_code == 200
    assert len(backend.calls) == len(paths)
