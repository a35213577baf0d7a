"""The ``user_info`` service against a real auth backend served over HTTP.

Two apps, as in a Backstage deployment: the *auth* app (``BackstageAuth`` +
``AuthBackend``, served by a :class:`~tests.conftest.LiveServer`) issues user
tokens without ``ent`` (Backstage's default) and serves ``/v1/userinfo``; the
*plugin* app verifies those tokens with the auth app's JWKS and asks its
``user_info`` service who the user is. Failure modes use small WSGI or socket
servers of their own: down, slow, garbage, refusals.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
import typing as t

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Blueprint, Flask, jsonify

from flask_backstage_auth import BackstageAuth, get_credentials
from flask_backstage_auth.auth.user.handler import USER_TYP, create_limited_user_token
from flask_backstage_auth.auth_backend.extension import AuthBackend
from flask_backstage_auth.credentials import (
    NONE_CREDENTIALS,
    Credentials,
    ServicePrincipal,
    UserPrincipal,
)
from flask_backstage_auth.discovery import HostDiscovery
from flask_backstage_auth.errors import (
    AuthenticationError,
    BackstageError,
    InputError,
    NotAllowedError,
    ServiceUnavailableError,
)
from flask_backstage_auth.user_info import (
    BackstageUserInfo,
    CachedUserInfoService,
    DefaultUserInfoService,
    ResponseError,
    UserInfoClient,
)
from tests.conftest import LiveServer

ALICE = "user:default/alice"
TEAM = "group:default/team-a"
SECRET = "a-test-secret-of-enough-length-0123456789"


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Counting:
    """WSGI middleware counting the requests to ``/v1/userinfo``."""

    def __init__(self) -> None:
        self.app: t.Any = None
        self.userinfo_calls = 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        if environ.get("PATH_INFO", "").endswith("/v1/userinfo"):
            with self.lock:
                self.userinfo_calls += 1
        return self.app(environ, start_response)


def auth_config(base_url: str, *, omit: bool | None = None) -> dict[str, t.Any]:
    config: dict[str, t.Any] = {
        "backend": {"baseUrl": base_url, "auth": {"keys": [{"secret": SECRET}]}},
        "auth": {
            "providers": {"guest": {"userEntityRef": ALICE, "ownershipEntityRefs": [ALICE, TEAM]}}
        },
    }
    if omit is not None:
        config["auth"]["omitIdentityTokenOwnershipClaim"] = omit
    return config


def make_auth_app(base_url: str, clock: FakeClock, *, omit: bool | None = None) -> Flask:
    app = Flask("auth-app", static_folder=None)
    app.config.update(TESTING=True, BACKSTAGE_CONFIG=auth_config(base_url, omit=omit))
    BackstageAuth(app, clock=clock)
    AuthBackend(app)
    return app


def make_plugin_app(auth_url: str, clock: FakeClock, **settings: t.Any) -> Flask:
    """A backend whose ``auth`` plugin lives at ``auth_url`` (``discovery.endpoints``)."""
    app = Flask("plugin-app", static_folder=None)
    app.config.update(TESTING=True, **settings)
    app.config["BACKSTAGE_CONFIG"] = {
        "backend": {"baseUrl": "http://127.0.0.1:1", "auth": {"keys": [{"secret": SECRET}]}},
        "discovery": {"endpoints": [{"target": f"{auth_url}/api/auth", "plugins": ["auth"]}]},
    }
    BackstageAuth(app, clock=clock)
    catalog = Blueprint("catalog", __name__, url_prefix="/api/catalog")

    @catalog.get("/whoami")
    def whoami() -> t.Any:
        info = BackstageAuth.state().user_info.get_user_info(get_credentials())
        return jsonify(
            userEntityRef=info.user_entity_ref, ownershipEntityRefs=info.ownership_entity_refs
        )

    app.register_blueprint(catalog)
    return app


class Deployment:
    """The auth app served live, and a plugin app pointing at it."""

    def __init__(self, *, omit: bool | None = None, **settings: t.Any) -> None:
        self.clock = FakeClock()
        self.counting = Counting()
        self.server = LiveServer(self.counting)
        self.auth_app = make_auth_app(self.server.url, self.clock, omit=omit)
        self.counting.app = self.auth_app
        self.plugin_app = make_plugin_app(self.server.url, self.clock, **settings)

    def __enter__(self) -> Deployment:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    def sign_in(self) -> str:
        response = self.auth_app.test_client().get("/api/auth/guest/refresh")
        assert response.status_code == 200
        return t.cast(str, response.get_json()["backstageIdentity"]["token"])

    def credentials(self, token: str, *, limited: bool = False) -> Credentials:
        with self.plugin_app.app_context():
            auth = BackstageAuth.state(self.plugin_app).auth("catalog")
            return auth.authenticate(token, allow_limited_access=limited)

    def user_info(self, credentials: Credentials) -> BackstageUserInfo:
        return BackstageAuth.state(self.plugin_app).user_info.get_user_info(credentials)


@pytest.fixture
def deployment() -> t.Iterator[Deployment]:
    with Deployment() as live:
        yield live


def claims_of(token: str) -> dict[str, t.Any]:
    return t.cast(t.Dict[str, t.Any], jwt.decode(token, options={"verify_signature": False}))


# -- ownership through the real endpoint ---------------------------------------


def test_token_without_ent_gets_ownership_from_userinfo(deployment: Deployment) -> None:
    token = deployment.sign_in()
    assert "ent" not in claims_of(token)  # Backstage's default since plugin-auth-backend 0.28
    client = deployment.plugin_app.test_client()
    response = client.get("/api/catalog/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"userEntityRef": ALICE, "ownershipEntityRefs": [ALICE, TEAM]}
    assert deployment.counting.userinfo_calls == 1


def test_token_with_ent_is_read_without_a_call() -> None:
    with Deployment(omit=False) as live:
        token = live.sign_in()
        assert claims_of(token)["ent"] == [ALICE, TEAM]
        info = live.user_info(live.credentials(token))
        assert info == BackstageUserInfo(ALICE, (ALICE, TEAM))
        assert live.counting.userinfo_calls == 0


def test_limited_user_token_gets_ownership_from_userinfo(deployment: Deployment) -> None:
    limited, _ = create_limited_user_token(deployment.sign_in())
    credentials = deployment.credentials(limited, limited=True)
    assert credentials.limited
    assert deployment.user_info(credentials) == BackstageUserInfo(ALICE, (ALICE, TEAM))


def test_plugin_acting_for_a_user_gets_the_users_ownership(deployment: Deployment) -> None:
    token = deployment.sign_in()
    plugin_state = BackstageAuth.state(deployment.plugin_app)
    user = deployment.credentials(token)
    obo = plugin_state.auth("search").get_plugin_request_token(
        on_behalf_of=user, target_plugin_id="catalog"
    )
    credentials = deployment.credentials(obo.token)
    assert isinstance(credentials.principal, UserPrincipal)
    assert credentials.principal.actor == ServicePrincipal("plugin:search")
    assert deployment.user_info(credentials) == BackstageUserInfo(ALICE, (ALICE, TEAM))


def test_answers_are_cached_per_token_for_five_seconds(deployment: Deployment) -> None:
    token = deployment.sign_in()
    credentials = deployment.credentials(token)
    for _ in range(3):
        assert deployment.user_info(credentials).ownership_entity_refs == (ALICE, TEAM)
    assert deployment.counting.userinfo_calls == 1
    deployment.clock.now += 4.9
    deployment.user_info(credentials)
    assert deployment.counting.userinfo_calls == 1
    deployment.clock.now += 0.2  # 5.1 s after the first answer: expired
    deployment.user_info(credentials)
    assert deployment.counting.userinfo_calls == 2
    # another token of the same user is another entry
    deployment.clock.now += 1
    other = deployment.credentials(deployment.sign_in())
    deployment.user_info(other)
    assert deployment.counting.userinfo_calls == 3


def test_a_new_sign_in_changes_ownership_after_the_cache(deployment: Deployment) -> None:
    token = deployment.sign_in()
    credentials = deployment.credentials(token)
    assert deployment.user_info(credentials).ownership_entity_refs == (ALICE, TEAM)
    guest = AuthBackend.state(deployment.auth_app).guest
    assert guest is not None
    AuthBackend.state(deployment.auth_app).issue_token(ALICE, [ALICE])  # a later sign-in
    assert deployment.user_info(credentials).ownership_entity_refs == (ALICE, TEAM)  # cached
    deployment.clock.now += 6
    assert deployment.user_info(credentials).ownership_entity_refs == (ALICE,)


# -- refusals and non-user credentials -------------------------------------------


@pytest.mark.parametrize(
    "credentials",
    [
        NONE_CREDENTIALS,
        Credentials(ServicePrincipal("plugin:catalog")),
        Credentials(ServicePrincipal("external:x"), token="a.b.c"),
    ],
)
def test_non_user_credentials_are_refused(deployment: Deployment, credentials: Credentials) -> None:
    with pytest.raises(InputError) as info:
        deployment.user_info(credentials)
    assert info.value.code == 400
    assert info.value.description == "Only user credentials are supported"
    assert deployment.counting.userinfo_calls == 0


def test_service_token_credentials_are_refused(deployment: Deployment) -> None:
    with deployment.plugin_app.app_context():
        token = BackstageAuth.state(deployment.plugin_app).token_manager.get_token().token
    with pytest.raises(InputError, match="Only user credentials"):
        deployment.user_info(deployment.credentials(token))


def test_user_without_token_or_with_another_kind_of_token(deployment: Deployment) -> None:
    with pytest.raises(AuthenticationError, match="unexpectedly missing token"):
        deployment.user_info(Credentials(UserPrincipal(ALICE)))
    # e.g. a personal access token: the auth backend could not tell its ownership
    pat = Credentials(UserPrincipal(ALICE), token="bspat_" + "x" * 40)
    with pytest.raises(NotAllowedError, match="only available for credentials made from"):
        deployment.user_info(pat)
    assert deployment.counting.userinfo_calls == 0


def test_a_view_answers_backstages_json_error_without_the_token() -> None:
    with Deployment() as live:
        token = live.sign_in()
        client = live.plugin_app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/catalog/whoami", headers=headers).status_code == 200
    # The auth backend is gone now; the token stays verified (cached keys), its
    # user info expires from the cache after 5 seconds.
    live.clock.now += 6
    response = client.get("/api/catalog/whoami", headers=headers)
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"]["name"] == "ServiceUnavailableError"
    assert body["error"]["message"].startswith("Failed to fetch user info from the auth backend")
    assert body["response"] == {"statusCode": 503}
    assert token not in response.get_data(as_text=True)


# -- the endpoint refuses ------------------------------------------------------------


def test_token_the_auth_backend_does_not_know_the_user_of(deployment: Deployment) -> None:
    # A valid token without ent, but the user never signed in here (e.g. the
    # auth backend lost its memory store in a restart): no ownership, a 404.
    issued = AuthBackend.state(deployment.auth_app).issuer.issue_token("user:default/bob", [])
    credentials = deployment.credentials(issued.token)
    with pytest.raises(ResponseError) as info:
        deployment.user_info(credentials)
    assert info.value.code == 404
    assert info.value.error_name == "ResponseError"
    assert info.value.description == (
        "Request failed with 404 Not Found; caused by NotFoundError: User info not found"
    )


def test_token_the_auth_backend_refuses_is_a_401(deployment: Deployment) -> None:
    # Credentials of a token signed by another key: the auth backend says 401.
    key = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    forged = jwt.encode(
        {"sub": ALICE, "aud": "backstage", "iat": now, "exp": now + 600},
        key,
        algorithm="ES256",
        headers={"typ": USER_TYP, "kid": "unknown"},
    )
    with pytest.raises(ResponseError) as info:
        deployment.user_info(Credentials(UserPrincipal(ALICE), token=forged))
    assert info.value.code == 401
    assert info.value.description.startswith(
        "Request failed with 401 Unauthorized; caused by AuthenticationError:"
    )


def test_failures_are_not_cached(deployment: Deployment) -> None:
    token = deployment.sign_in()
    credentials = deployment.credentials(token)
    store = AuthBackend.state(deployment.auth_app).user_info_store
    saved = store.get_user_info(ALICE)
    assert saved is not None
    deployment.auth_app.extensions["backstage_auth_backend"].user_info_store = _EmptyStore()
    with pytest.raises(ResponseError):
        deployment.user_info(credentials)
    deployment.auth_app.extensions["backstage_auth_backend"].user_info_store = store
    assert deployment.user_info(credentials).ownership_entity_refs == (ALICE, TEAM)
    assert deployment.counting.userinfo_calls == 2


class _EmptyStore:
    def add_user_info(self, user_info: t.Mapping[str, t.Any]) -> None:
        pass

    def get_user_info(self, user_entity_ref: str) -> dict[str, t.Any] | None:
        return None


# -- the endpoint is down, slow or answers garbage ------------------------------------


def user_token(**claims: t.Any) -> str:
    """A user-token-shaped JWT (the service reads it unverified)."""
    now = int(time.time())
    payload = {"sub": ALICE, "aud": "backstage", "iat": now, "exp": now + 600, **claims}
    return jwt.encode(payload, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")


def service_for(url: str, *, timeout: float = 2.0) -> DefaultUserInfoService:
    discovery = HostDiscovery(url)
    return DefaultUserInfoService(UserInfoClient(discovery, timeout=timeout))


def alice(token: str | None = None) -> Credentials:
    return Credentials(UserPrincipal(ALICE), token=token or user_token())


def answering(status: str, body: bytes, content_type: str = "application/json") -> t.Any:
    def app(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        start_response(status, [("Content-Type", content_type)])
        return [body]

    return app


def test_calls_under_way_are_bounded_too() -> None:
    release = threading.Event()

    def stuck(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        release.wait(5)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"claims": {"ent": []}}']

    with LiveServer(stuck) as server:
        client = UserInfoClient(HostDiscovery(server.url), timeout=0.5, max_workers=1)
        service = DefaultUserInfoService(client)
        errors: list[BaseException] = []
        first = threading.Thread(
            target=lambda: errors.append(
                pytest.raises(ServiceUnavailableError, service.get_user_info, alice()).value
            )
        )
        first.start()
        time.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError, match="took too long"):
            service.get_user_info(alice())  # no worker free: never waits past the deadline
        assert time.monotonic() - started < 1.5
        first.join(timeout=5)
        release.set()
    assert len(errors) == 1


def test_auth_backend_down() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError) as info:
        service_for(f"http://127.0.0.1:{port}").get_user_info(alice())
    assert time.monotonic() - started < 2
    assert info.value.code == 503
    assert info.value.description == (
        "Failed to fetch user info from the auth backend (ConnectionError)"
    )


@pytest.mark.parametrize("mode", ["silent", "trickle", "trickled-headers"])
def test_auth_backend_slow_is_bounded(mode: str) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        stop = threading.Event()

        def serve() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                if mode == "trickled-headers":
                    # one header byte at a time, each well within a read timeout
                    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
                        if stop.is_set():
                            return
                        try:
                            connection.sendall(bytes([byte]))
                        except OSError:
                            return
                        time.sleep(0.05)
                elif mode == "trickle":
                    connection.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100000\r\n\r\n"
                    )
                    while not stop.is_set():
                        try:
                            connection.sendall(b" ")
                        except OSError:
                            return
                        time.sleep(0.05)
                else:
                    stop.wait(5)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        try:
            with pytest.raises(ServiceUnavailableError, match="took too long") as info:
                service_for(url, timeout=0.5).get_user_info(alice())
        finally:
            stop.set()
        elapsed = time.monotonic() - started
        thread.join(timeout=5)
    assert info.value.code == 503
    assert elapsed < 1.5


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            "200 OK",
            b"<html>hello</html>",
            "Invalid user info response from the auth backend, not JSON",
        ),
        ("200 OK", b"[]", "Invalid user info response from the auth backend, no claims"),
        (
            "200 OK",
            b'{"claims": "x"}',
            "Invalid user info response from the auth backend, no claims",
        ),
        ("200 OK", b'{"claims": {}}', "Ownership entity refs can not be determined"),
        ("200 OK", b'{"claims": {"ent": null}}', "Ownership entity refs can not be determined"),
        ("200 OK", b'{"claims": {"ent": "group:default/x"}}', "must be an array of strings"),
        ("200 OK", b'{"claims": {"ent": ["group:default/x", 1]}}', "must be an array of strings"),
        (
            "200 OK",
            b'{"claims": {"sub": "user:default/mallory", "ent": ["group:default/admins"]}}',
            "the user info of another user",
        ),
        ("200 OK", b" " * 300_000, "too large"),
        ("500 Internal Server Error", b"{}", "it answered 500"),
        ("502 Bad Gateway", b"", "it answered 502"),
        ("302 Found", b"", "it answered 302"),
    ],
)
def test_garbage_is_a_503_never_a_guess(status: str, body: bytes, message: str) -> None:
    with LiveServer(answering(status, body)) as server:
        with pytest.raises(ServiceUnavailableError, match=message) as info:
            service_for(server.url).get_user_info(alice())
    assert info.value.code == 503
    assert type(info.value) is ServiceUnavailableError


def test_compressed_answer_is_refused() -> None:
    def app(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Encoding", "gzip")]
        )
        return [b"\x1f\x8b"]

    with LiveServer(app) as server:
        with pytest.raises(ServiceUnavailableError, match="compressed"):
            service_for(server.url).get_user_info(alice())


@pytest.mark.parametrize(
    ("status", "body", "content_type", "code", "message"),
    [
        (
            "401 Unauthorized",
            json.dumps(
                {"error": {"name": "AuthenticationError", "message": "Bad\ntoken"}}
            ).encode(),
            "application/json",
            401,
            "Request failed with 401 Unauthorized; caused by AuthenticationError: Bad token",
        ),
        (
            "404 Not Found",
            b"User info not found",  # Backstage answers plain text
            "text/html",
            404,
            "Request failed with 404 Not Found; caused by User info not found",
        ),
        (
            "400 Bad Request",
            json.dumps({"error": {"name": "<script>", "message": "x" * 1000}}).encode(),
            "application/json",
            400,
            "Request failed with 400 Bad Request; caused by Error: " + "x" * 197 + "...",
        ),
        ("403 Forbidden", b"", "text/plain", 403, "Request failed with 403 Forbidden"),
    ],
)
def test_refusals_keep_backstages_response_error(
    status: str, body: bytes, content_type: str, code: int, message: str
) -> None:
    with LiveServer(answering(status, body, content_type)) as server:
        with pytest.raises(ResponseError) as info:
            service_for(server.url).get_user_info(alice())
    assert info.value.code == code
    assert info.value.description == message
    assert info.value.to_dict()["error"]["name"] == "ResponseError"


def test_the_users_token_is_sent_and_nothing_else() -> None:
    seen: list[dict[str, t.Any]] = []

    def app(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        seen.append(dict(environ))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"claims": {"sub": ALICE, "ent": [ALICE]}}).encode()]

    token = user_token()
    with LiveServer(app) as server:
        info = service_for(server.url).get_user_info(alice(token))
    assert info == BackstageUserInfo(ALICE, (ALICE,))
    (environ,) = seen
    assert environ["PATH_INFO"] == "/api/auth/v1/userinfo"
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["HTTP_AUTHORIZATION"] == f"Bearer {token}"
    assert "HTTP_COOKIE" not in environ


def test_ent_in_the_token_is_used_and_checked() -> None:
    service = service_for("http://127.0.0.1:1")  # never called
    assert service.get_user_info(alice(user_token(ent=[]))) == BackstageUserInfo(ALICE, ())
    assert service.get_user_info(alice(user_token(ent=[TEAM]))) == BackstageUserInfo(ALICE, (TEAM,))
    for bad in ("group:default/x", [TEAM, 3], {"a": 1}):
        with pytest.raises(AuthenticationError, match="must be an array of strings"):
            service.get_user_info(alice(user_token(ent=bad)))
    with pytest.raises(AuthenticationError, match="User entity ref must be a string"):
        service.get_user_info(alice(user_token(sub=7)))


# -- the cache on its own ---------------------------------------------------------------


class Recording:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls = 0
        self.gate = gate
        self.fail: BackstageError | None = None

    def get_user_info(self, credentials: Credentials) -> BackstageUserInfo:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail is not None:
            raise self.fail
        return BackstageUserInfo(ALICE, (str(self.calls),))


def test_cache_shares_one_call_between_concurrent_callers() -> None:
    gate = threading.Event()
    delegate = Recording(gate)
    cache = CachedUserInfoService(delegate)
    results: list[BackstageUserInfo] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_user_info(alice("tok"))))
        for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    gate.set()
    for thread in threads:
        thread.join(timeout=5)
    assert delegate.calls == 1
    assert results == [BackstageUserInfo(ALICE, ("1",))] * 5


def test_cache_drops_failures_sweeps_and_is_bounded() -> None:
    clock = FakeClock()
    delegate = Recording()
    cache = CachedUserInfoService(delegate, clock=clock, max_entries=3)
    delegate.fail = ServiceUnavailableError("down")
    with pytest.raises(ServiceUnavailableError):
        cache.get_user_info(alice("a"))
    assert len(cache) == 0
    delegate.fail = None
    assert cache.get_user_info(alice("a")).ownership_entity_refs == ("2",)
    for token in ("b", "c", "d"):
        cache.get_user_info(alice(token))
    assert len(cache) == 3  # "a" went first
    assert cache.get_user_info(alice("a")).ownership_entity_refs == ("6",)
    clock.now += 31  # past the sweep interval: every expired entry goes
    cache.get_user_info(alice("e"))
    assert len(cache) == 1
    # credentials without a token are never cached
    with pytest.raises(AuthenticationError):
        CachedUserInfoService(service_for("http://127.0.0.1:1")).get_user_info(
            Credentials(UserPrincipal(ALICE))
        )


# -- wiring, mock tokens ------------------------------------------------------------------


def test_extension_exposes_the_service_and_its_timeout() -> None:
    app = Flask("wired", static_folder=None)
    app.config.update(TESTING=True, BACKSTAGE_AUTH_USER_INFO_TIMEOUT=1.5)
    app.config["BACKSTAGE_CONFIG"] = copy.deepcopy(
        {"backend": {"baseUrl": "http://backstage:7007", "auth": {"keys": [{"secret": SECRET}]}}}
    )
    auth = BackstageAuth(app)
    with app.app_context():
        service = auth.user_info
    assert isinstance(service, CachedUserInfoService)
    assert isinstance(service.delegate, DefaultUserInfoService)
    assert service.delegate.client.timeout == 1.5
    assert service.delegate.client.url == "http://backstage:7007/api/auth/v1/userinfo"


def test_mock_user_tokens_own_themselves_in_tests_only() -> None:
    app = Flask("mocked", static_folder=None)
    app.config.update(TESTING=True, BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS=True)
    app.config["BACKSTAGE_CONFIG"] = {"backend": {"auth": {"keys": [{"secret": SECRET}]}}}
    BackstageAuth(app)
    state = BackstageAuth.state(app)
    credentials = state.auth("catalog").authenticate('mock-user-token:{"sub":"user:default/x"}')
    assert state.user_info.get_user_info(credentials) == BackstageUserInfo(
        "user:default/x", ("user:default/x",)
    )
    # without mock tokens accepted, the same string is no user token at all
    plain = DefaultUserInfoService(UserInfoClient(HostDiscovery("http://127.0.0.1:1")))
    with pytest.raises(NotAllowedError):
        plain.get_user_info(credentials)


# -- the legacy bridge ------------------------------------------------------------------


def test_legacy_user_info_compat_asks_the_auth_backend(deployment: Deployment) -> None:
    from flask_backstage_auth.legacy.adapters import UserInfoCompat, create_legacy_auth_adapters

    state = BackstageAuth.state(deployment.plugin_app)
    credentials = deployment.credentials(deployment.sign_in())
    expected = BackstageUserInfo(ALICE, (ALICE, TEAM))
    assert UserInfoCompat(state.discovery).get_user_info(credentials) == expected
    adapters = create_legacy_auth_adapters(
        token_manager=state.token_manager, discovery=state.discovery
    )
    assert adapters.user_info.get_user_info(credentials) == expected
    assert deployment.counting.userinfo_calls == 2  # the compat service has no cache


def test_legacy_identity_carries_ownership_from_user_info(deployment: Deployment) -> None:
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from flask_backstage_auth.legacy.adapters import identity_from_auth

    state = BackstageAuth.state(deployment.plugin_app)
    token = deployment.sign_in()
    builder = EnvironBuilder(headers={"Authorization": f"Bearer {token}"})
    request = Request(builder.get_environ())
    with deployment.plugin_app.app_context():
        plain = identity_from_auth(state.auth("old")).get_identity(request)
        full = identity_from_auth(state.auth("old"), user_info=state.user_info).get_identity(
            request
        )
    assert plain is not None and plain.ownership_entity_refs == ()
    assert full is not None and full.ownership_entity_refs == (ALICE, TEAM)
    assert full.user_entity_ref == ALICE
    # the auth backend gone: no identity with a guessed ownership
    deployment.server.__exit__()
    deployment.clock.now += 6
    with deployment.plugin_app.app_context(), pytest.raises(ServiceUnavailableError):
        identity_from_auth(state.auth("old"), user_info=state.user_info).get_identity(request)


# -- the example's policy: a group's owners manage its service tokens ----------------------


def test_example_policy_delegates_by_ownership(deployment: Deployment) -> None:
    from example_app.permission_policy import ExamplePolicy
    from flask_backstage_auth.access_tokens.permissions import PERSONAL_WRITE, SERVICE_WRITE
    from flask_backstage_auth.permissions import ALLOW, DENY, PolicyQuery

    credentials = deployment.credentials(deployment.sign_in())
    policy = ExamplePolicy(["user:default/admin"], development=False)
    with deployment.plugin_app.app_context():
        assert policy.handle(PolicyQuery(SERVICE_WRITE, TEAM), credentials) == ALLOW
        assert (
            policy.handle(PolicyQuery(SERVICE_WRITE, "group:default/team-b"), credentials) == DENY
        )
        assert policy.handle(PolicyQuery(SERVICE_WRITE, ALICE), credentials) == DENY  # not a group
        assert policy.handle(PolicyQuery(SERVICE_WRITE), credentials) == DENY  # every group
        assert policy.handle(PolicyQuery(PERSONAL_WRITE, ALICE), credentials) == ALLOW
        service = Credentials(ServicePrincipal("plugin:x"))
        assert policy.handle(PolicyQuery(SERVICE_WRITE, TEAM), service) == DENY
    assert deployment.counting.userinfo_calls == 1  # cached for the second group check
    admin = ExamplePolicy([ALICE], development=False)
    with deployment.plugin_app.app_context():
        assert admin.handle(PolicyQuery(SERVICE_WRITE), credentials) == ALLOW
    assert deployment.counting.userinfo_calls == 1  # an admin needs no ownership
    # ownership unknown: the check fails, nothing is allowed
    deployment.server.__exit__()
    deployment.clock.now += 6
    with deployment.plugin_app.app_context(), pytest.raises(ServiceUnavailableError):
        policy.handle(PolicyQuery(SERVICE_WRITE, TEAM), credentials)
