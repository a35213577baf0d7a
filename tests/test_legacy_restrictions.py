"""Restricted legacy keys, and the bridges to old-style plugins, in production mode.

Every app here runs with ``TESTING`` and development off, real HS256 secrets,
and tokens minted by this library's own :class:`ServerTokenManager`. The
plugins are ``catalog``, ``search`` and ``scaffolder`` (new style: the
credentials barrier, then a view echoing the credentials) and ``old-plugin``,
an old-style plugin factory that only knows an ``identity`` and a
``token_manager`` (``create_require_authentication_middleware``). The old
plugin is mounted two ways: guarding itself (the barrier steps aside), and
behind the barrier.

The rules (docs/security.rst, "Restricted credentials"):

* each ``backend.auth.keys`` entry honours its own ``accessRestrictions``;
* a key's restrictions cannot be widened by declaring it again, nor by the
  token manager of old-style plugins, which verifies unrestricted keys only;
* ``identity_from_auth`` bridges only full, unrestricted users.
"""

from __future__ import annotations

import base64
import os
import typing as t

import pytest
from click.testing import Result
from flask import Blueprint, Flask, jsonify, request
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from flask_backstage_auth import (
    AuthBackend,
    AuthenticationError,
    BackstageAuth,
    ConfigError,
    Credentials,
    NotAllowedError,
    ServerTokenManager,
    ServicePrincipal,
    create_require_authentication_middleware,
    get_credentials,
)
from flask_backstage_auth.access_tokens.extension import AccessTokens
from flask_backstage_auth.access_tokens.scopes import Scope
from flask_backstage_auth.access_tokens.store import in_memory_store
from flask_backstage_auth.auth.service import AuthService
from flask_backstage_auth.cli import cli
from flask_backstage_auth.credentials import AccessRestrictions, UserPrincipal
from flask_backstage_auth.legacy.adapters import (
    RESTRICTED_MESSAGE,
    AuthCompat,
    create_legacy_auth_adapters,
    identity_from_auth,
)
from flask_backstage_auth.legacy.middleware import (
    LEGACY_SERVICE_SUBJECT,
    get_middleware_credentials,
)
from flask_backstage_auth.legacy.secrets import validate_secret
from flask_backstage_auth.legacy.token_manager import RESTRICTED_ONLY_MESSAGE
from tests.conftest import new_secret

T0 = 1_800_000_000.0
NEW_PLUGINS = ("catalog", "search", "scaffolder")
OLD = "old-plugin"
KEYS = "backend.auth.keys"
EXTERNAL = "backend.auth.externalAccess"
JANE = "user:default/jane"
RESTRICTED_TO_CATALOG = "This token's access is restricted to plugin(s) 'catalog'"


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def mint(secret: str, clock: t.Callable[[], float]) -> str:
    """A legacy token signed with ``secret`` by this library's ServerTokenManager."""
    manager = ServerTokenManager.from_config(
        {"backend": {"auth": {"keys": [{"secret": secret}]}}}, clock=clock
    )
    return manager.get_token().token


def key(secret: str, *plugins: str, **restriction: t.Any) -> dict[str, t.Any]:
    """A ``backend.auth.keys`` entry, restricted to ``plugins`` when any are given."""
    entry: dict[str, t.Any] = {"secret": secret}
    if plugins:
        entry["accessRestrictions"] = [{"plugin": p, **restriction} for p in plugins]
    return entry


def legacy_entry(secret: str, subject: str, *plugins: str) -> dict[str, t.Any]:
    entry: dict[str, t.Any] = {"type": "legacy", "options": {"secret": secret, "subject": subject}}
    if plugins:
        entry["accessRestrictions"] = [{"plugin": p} for p in plugins]
    return entry


class Seen:
    """What the old plugin saw: the credentials its middleware established."""

    def __init__(self) -> None:
        self.seen: list[Credentials] = []


def create_old_router(identity: t.Any, token_manager: t.Any, seen: Seen) -> Blueprint:
    """An old-style plugin factory: it knows nothing of BackstageAuth."""
    router = Blueprint(OLD, __name__, url_prefix=f"/api/{OLD}")
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

    @router.route("/things", methods=["GET", "POST"])
    def things() -> t.Any:
        credentials = get_middleware_credentials(request.environ)
        assert credentials is not None
        seen.seen.append(credentials)
        return jsonify(credentials.to_dict())

    return router


def make_app(
    keys: list[dict[str, t.Any]] | None = None,
    external_access: list[dict[str, t.Any]] | None = None,
    *,
    clock: FakeClock | None = None,
    old_guards_itself: bool = True,
    development: bool = False,
    token_manager: t.Any = None,
    extra: dict[str, t.Any] | None = None,
) -> Flask:
    auth: dict[str, t.Any] = {}
    if keys is not None:
        auth["keys"] = keys
    if external_access is not None:
        auth["externalAccess"] = external_access
    app = Flask("legacy-restrictions", static_folder=None)
    app.config.update(
        TESTING=False,
        BACKSTAGE_AUTH_DEVELOPMENT=development,
        BACKSTAGE_CONFIG={
            "backend": {"baseUrl": "http://localhost:7007", "auth": auth},
            **(extra or {}),
        },
    )
    BackstageAuth(app, clock=clock or FakeClock(), token_manager=token_manager)
    for plugin in NEW_PLUGINS:
        blueprint = Blueprint(plugin, __name__, url_prefix=f"/api/{plugin}")
        blueprint.add_url_rule(
            "/<path:rest>",
            "echo",
            lambda rest: jsonify(get_credentials().to_dict()),
            methods=["GET", "POST", "DELETE"],
        )
        app.register_blueprint(blueprint)
    state = BackstageAuth.state(app)
    app.extensions["old-plugin-seen"] = seen = Seen()
    app.register_blueprint(
        create_old_router(identity_from_auth(state.auth(OLD)), state.token_manager, seen)
    )
    if old_guards_itself:
        BackstageAuth().add_auth_policy(OLD, allow="unauthenticated", app=app)
    return app


def get(
    app: Flask, token: str, path: str, *, method: str = "GET", scheme: str = "Bearer"
) -> tuple[int, dict[str, t.Any]]:
    with app.test_client() as client:
        response = client.open(path, method=method, headers={"Authorization": f"{scheme} {token}"})
        try:
            return response.status_code, response.get_json(silent=True) or {}
        finally:
            response.close()


def message(body: dict[str, t.Any]) -> str:
    return t.cast(str, body.get("error", {}).get("message", ""))


def bearer_request(token: str) -> Request:
    builder = EnvironBuilder(headers=[("Authorization", f"Bearer {token}")])
    try:
        return Request(builder.get_environ())
    finally:
        builder.close()


# -- 1. each backend.auth.keys entry honours its own accessRestrictions ---------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def secrets() -> dict[str, str]:
    return {"catalog_ro": new_secret(), "open": new_secret(), "two": new_secret()}


@pytest.fixture
def app(clock: FakeClock, secrets: dict[str, str]) -> Flask:
    return make_app(
        [
            # The first key is restricted: the token manager must not sign with it.
            key(secrets["catalog_ro"], "catalog", permissionAttribute={"action": "read"}),
            key(secrets["open"]),
            key(secrets["two"], "catalog", "search"),
        ],
        clock=clock,
    )


def test_a_restricted_key_opens_its_plugin_with_its_restrictions(
    app: Flask, clock: FakeClock, secrets: dict[str, str]
) -> None:
    status, body = get(app, mint(secrets["catalog_ro"], clock), "/api/catalog/entities")
    assert status == 200
    assert body == {
        "principal": {
            "type": "service",
            "subject": LEGACY_SERVICE_SUBJECT,
            "accessRestrictions": {"permissionAttributes": {"action": ["read"]}},
        }
    }


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("path", ["/api/search/query", "/api/scaffolder/v2/tasks"])
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_a_restricted_key_gets_backstages_403_elsewhere(
    app: Flask, clock: FakeClock, secrets: dict[str, str], method: str, path: str, scheme: str
) -> None:
    status, body = get(app, mint(secrets["catalog_ro"], clock), path, method=method, scheme=scheme)
    assert status == 403
    assert body["error"]["name"] == "NotAllowedError"
    assert message(body) == RESTRICTED_TO_CATALOG


def test_a_key_restricted_to_two_plugins_names_both(
    app: Flask, clock: FakeClock, secrets: dict[str, str]
) -> None:
    token = mint(secrets["two"], clock)
    for plugin in ("catalog", "search"):
        status, body = get(app, token, f"/api/{plugin}/x")
        assert status == 200
        assert body["principal"]["accessRestrictions"] == {}
    status, body = get(app, token, "/api/scaffolder/x")
    assert status == 403
    assert message(body) == "This token's access is restricted to plugin(s) 'catalog', 'search'"


def test_unrestricted_keys_still_open_every_plugin(
    app: Flask, clock: FakeClock, secrets: dict[str, str]
) -> None:
    for plugin in NEW_PLUGINS:
        status, body = get(app, mint(secrets["open"], clock), f"/api/{plugin}/x", method="POST")
        assert status == 200
        assert body == {"principal": {"type": "service", "subject": LEGACY_SERVICE_SUBJECT}}


def test_the_token_manager_signs_with_the_first_unrestricted_key(
    app: Flask, secrets: dict[str, str]
) -> None:
    manager = BackstageAuth.state(app).token_manager
    assert isinstance(manager, ServerTokenManager)
    assert manager.key_count == 1
    own = manager.get_token().token
    assert own == mint(secrets["open"], BackstageAuth.state(app).clock)
    for plugin in NEW_PLUGINS:
        status, body = get(app, own, f"/api/{plugin}/x")
        assert status == 200
        assert "accessRestrictions" not in body["principal"]


def test_a_restricted_key_is_refused_after_a_cached_success(
    app: Flask, clock: FakeClock, secrets: dict[str, str]
) -> None:
    """The verification cache keeps the restriction: the second plugin still says no."""
    token = mint(secrets["catalog_ro"], clock)
    assert get(app, token, "/api/catalog/x")[0] == 200
    assert get(app, token, "/api/search/x")[0] == 403
    assert get(app, token, "/api/catalog/x")[0] == 200


RESTRICTION_ERRORS = {
    "unknown-key": (
        [{"plugin": "catalog", "plugins": "search"}],
        "Invalid key 'plugins' in 'accessRestrictions' config, expected one of 'plugin',"
        " 'permission', 'permissionAttribute'",
        f"{KEYS}[1].accessRestrictions[0]",
    ),
    "missing-plugin": (
        [{"permission": "catalog.entity.read"}],
        "Missing required config value at",
        f"{KEYS}[1].accessRestrictions[0].plugin",
    ),
    "duplicate-plugin": (
        [{"plugin": "catalog"}, {"plugin": "catalog"}],
        "Attempted to declare 'accessRestrictions' twice for plugin 'catalog', which is not"
        " permitted",
        f"{KEYS}[1].accessRestrictions[1].plugin",
    ),
    "attribute-key": (
        [{"plugin": "catalog", "permissionAttribute": {"verb": "read"}}],
        "Invalid key 'verb' in 'permissionAttribute' config, expected 'action'",
        f"{KEYS}[1].accessRestrictions[0].permissionAttribute",
    ),
    "invalid-action": (
        [{"plugin": "catalog", "permissionAttribute": {"action": ["read", "approve"]}}],
        "Invalid value 'approve' at 'action' in 'permissionAttributes' config, valid values"
        " are 'create', 'read', 'update', 'delete'",
        f"{KEYS}[1].accessRestrictions[0].permissionAttribute.action",
    ),
    "not-a-list": (
        {"plugin": "catalog"},
        "expected a list",
        f"{KEYS}[1].accessRestrictions",
    ),
}


@pytest.mark.parametrize(
    ("restrictions", "text", "path"), RESTRICTION_ERRORS.values(), ids=RESTRICTION_ERRORS.keys()
)
@pytest.mark.parametrize("builder", ["extension", "token-manager"])
def test_bad_restrictions_on_a_keys_entry_name_the_path(
    restrictions: t.Any, text: str, path: str, builder: str
) -> None:
    secret = new_secret()
    keys = [key(new_secret()), {"secret": secret, "accessRestrictions": restrictions}]
    with pytest.raises(ConfigError) as info:
        if builder == "extension":
            make_app(keys)
        else:
            ServerTokenManager.from_config({"backend": {"auth": {"keys": keys}}})
    assert text in str(info.value)
    assert path in str(info.value)
    assert secret not in str(info.value)


def test_empty_restrictions_on_a_keys_entry_mean_unrestricted(clock: FakeClock) -> None:
    """As for externalAccess entries (and Backstage): an empty list restricts nothing."""
    secret = new_secret()
    app = make_app([{"secret": secret, "accessRestrictions": []}], clock=clock)
    assert get(app, mint(secret, clock), "/api/search/x")[0] == 200
    assert get(app, mint(secret, clock), f"/api/{OLD}/things")[0] == 200


# -- 2. old-style plugins refuse restricted keys and narrower users ------------------


def old_app(clock: FakeClock, secrets: dict[str, str], *, old_guards_itself: bool) -> Flask:
    return make_app(
        [
            key(secrets["catalog_ro"], "catalog"),
            key(secrets["open"]),
            # Even restricted to the old plugin itself: it could not keep to
            # the permission restriction, so it never sees the token.
            key(secrets["old_ro"], OLD, permissionAttribute={"action": "read"}),
        ],
        clock=clock,
        old_guards_itself=old_guards_itself,
    )


@pytest.fixture
def old_secrets() -> dict[str, str]:
    return {"catalog_ro": new_secret(), "open": new_secret(), "old_ro": new_secret()}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_old_plugin_refuses_restricted_keys_itself(
    clock: FakeClock, old_secrets: dict[str, str], method: str
) -> None:
    app = old_app(clock, old_secrets, old_guards_itself=True)
    status, body = get(app, mint(old_secrets["open"], clock), f"/api/{OLD}/things", method=method)
    assert status == 200
    assert body == {"principal": {"type": "service", "subject": LEGACY_SERVICE_SUBJECT}}
    for name, cause in (
        ("catalog_ro", f"NotAllowedError: {RESTRICTED_TO_CATALOG}"),
        ("old_ro", "AuthenticationError: Token is not a user token"),
    ):
        status, body = get(app, mint(old_secrets[name], clock), f"/api/{OLD}/things", method=method)
        assert status == 401, name
        assert message(body) == f"Token is not valid; caused by {cause}"
    assert len(app.extensions["old-plugin-seen"].seen) == 1


def test_behind_the_barrier_an_old_plugin_still_refuses_a_key_restricted_to_it(
    clock: FakeClock, old_secrets: dict[str, str]
) -> None:
    app = old_app(clock, old_secrets, old_guards_itself=False)
    # Restricted elsewhere: the barrier answers first, with Backstage's 403.
    status, body = get(app, mint(old_secrets["catalog_ro"], clock), f"/api/{OLD}/things")
    assert (status, message(body)) == (403, RESTRICTED_TO_CATALOG)
    # Restricted to the old plugin: the barrier lets it by, the old plugin does not.
    status, body = get(app, mint(old_secrets["old_ro"], clock), f"/api/{OLD}/things")
    assert status == 401
    assert message(body).startswith("Token is not valid")
    assert app.extensions["old-plugin-seen"].seen == []
    # Nor does it open a new plugin: it names only the old one.
    assert get(app, mint(old_secrets["old_ro"], clock), "/api/catalog/x")[0] == 403


def test_the_token_manager_for_old_plugins_verifies_unrestricted_keys_only(
    clock: FakeClock, old_secrets: dict[str, str]
) -> None:
    app = old_app(clock, old_secrets, old_guards_itself=True)
    manager = BackstageAuth.state(app).token_manager
    manager.authenticate(mint(old_secrets["open"], clock))
    for name in ("catalog_ro", "old_ro"):
        with pytest.raises(AuthenticationError, match="Invalid server token"):
            manager.authenticate(mint(old_secrets[name], clock))
    # The same manager, read the documented way inside the app.
    with app.app_context():
        assert BackstageAuth().token_manager is manager


def test_compat_services_over_the_token_manager_refuse_restricted_keys(
    clock: FakeClock, old_secrets: dict[str, str]
) -> None:
    """A new-style plugin in an old environment, given the app's token manager."""
    app = old_app(clock, old_secrets, old_guards_itself=True)
    state = BackstageAuth.state(app)
    adapters = create_legacy_auth_adapters(
        identity=identity_from_auth(state.auth(OLD)), token_manager=state.token_manager
    )
    credentials = adapters.auth.authenticate(mint(old_secrets["open"], clock))
    assert credentials.principal == ServicePrincipal(LEGACY_SERVICE_SUBJECT)
    for name in ("catalog_ro", "old_ro"):
        with pytest.raises(AuthenticationError, match="Invalid server token"):
            adapters.auth.authenticate(mint(old_secrets[name], clock))


def test_the_cli_shows_a_restricted_keys_restrictions(
    clock: FakeClock, old_secrets: dict[str, str]
) -> None:
    """verify-token runs the barrier's verifier: a restricted key's token is valid,
    with its restrictions, and refused by the plugins outside them."""
    app = old_app(clock, old_secrets, old_guards_itself=True)
    app.cli.add_command(cli)
    runner = app.test_cli_runner()
    restricted = mint(old_secrets["old_ro"], clock)
    result: Result = runner.invoke(
        args=["backstage-auth", "verify-token", restricted, "--plugin", OLD, "--plugin", "catalog"]
    )
    assert result.exit_code == 1
    assert "valid: accepted by externalAccess legacy (backend.auth.keys[2])" in result.output
    assert f'restrictions: only {OLD} {{"permissionAttributes": {{"action": ["read"]}}}}' in (
        result.output
    )
    assert f"plugin {OLD}: accepted" in result.output
    assert "plugin catalog: refused (403" in result.output
    result = runner.invoke(
        args=["backstage-auth", "verify-token", mint(old_secrets["open"], clock)]
    )
    assert result.exit_code == 0
    assert "valid: accepted by externalAccess legacy (backend.auth.keys[1])" in result.output
    assert "restrictions: none (every plugin)" in result.output


# -- users through identity_from_auth ------------------------------------------------


def user_app(clock: FakeClock, *, old_guards_itself: bool = True) -> Flask:
    app = make_app([key(new_secret())], clock=clock, old_guards_itself=old_guards_itself)
    AuthBackend(app)
    return app


def user_token(app: Flask) -> str:
    return AuthBackend.state(app).issuer.issue_token(JANE, [JANE]).token


def limited_token(app: Flask, token: str) -> str:
    auth = BackstageAuth.state(app).auth("catalog")
    return auth.get_limited_user_token(auth.authenticate(token)).token


@pytest.mark.parametrize("old_guards_itself", [True, False])
def test_an_old_plugin_sees_a_full_user_and_refuses_a_limited_token(
    clock: FakeClock, old_guards_itself: bool
) -> None:
    app = user_app(clock, old_guards_itself=old_guards_itself)
    token = user_token(app)
    status, body = get(app, token, f"/api/{OLD}/things")
    assert (status, body) == (200, {"principal": {"type": "user", "userEntityRef": JANE}})
    limited = limited_token(app, token)
    for method in ("GET", "POST"):
        status, body = get(app, limited, f"/api/{OLD}/things", method=method)
        assert status == 401
        assert "Illegal limited user token" in message(body)
    assert len(app.extensions["old-plugin-seen"].seen) == 1


class LimitedAccessAuth:
    """An ``auth`` service that lets limited tokens through (as a cookie route would)."""

    def __init__(self, inner: AuthService) -> None:
        self.inner = inner

    def authenticate(self, token: str, *, allow_limited_access: bool = False) -> Credentials:
        return self.inner.authenticate(token, allow_limited_access=True)

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self.inner, name)


def test_identity_from_auth_refuses_limited_credentials_whatever_the_auth_allows(
    clock: FakeClock,
) -> None:
    app = user_app(clock)
    limited = limited_token(app, user_token(app))
    auth = LimitedAccessAuth(BackstageAuth.state(app).auth(OLD))
    assert auth.authenticate(limited).limited  # the auth service itself lets it by
    identity = identity_from_auth(t.cast(t.Any, auth))
    with pytest.raises(AuthenticationError, match="Illegal limited user token"):
        identity.get_identity(bearer_request(limited))


def pat_app(clock: FakeClock, *, old_guards_itself: bool) -> tuple[Flask, str, str]:
    """An app with personal access tokens; Jane's token scoped to the old plugin (read)."""
    app = make_app(
        [key(new_secret())],
        clock=clock,
        old_guards_itself=old_guards_itself,
        extra={"accessTokens": {"personal": {"enabled": True}}},
    )
    AuthBackend(app)
    scopes = [Scope("old-plugin:read", "Read the old plugin", OLD, ("read",))]
    AccessTokens(app, store=in_memory_store(), scopes=scopes)
    jane = user_token(app)
    tokens = {}
    for scope in ("old-plugin:read", "catalog:read"):
        with app.test_client() as client:
            response = client.post(
                "/api/access-tokens/personal/",
                json={"name": scope.replace(":", "-"), "scopes": [scope]},
                headers={"Authorization": f"Bearer {jane}"},
            )
            assert response.status_code == 201, response.get_json()
            tokens[scope] = response.get_json()["rawToken"]
    return app, tokens["old-plugin:read"], tokens["catalog:read"]


@pytest.mark.parametrize("old_guards_itself", [True, False])
def test_an_old_plugin_refuses_a_scoped_personal_access_token(
    clock: FakeClock, old_guards_itself: bool
) -> None:
    app, old_scoped, catalog_scoped = pat_app(clock, old_guards_itself=old_guards_itself)
    # The new plugin it is scoped to accepts it, with its restriction.
    status, body = get(app, catalog_scoped, "/api/catalog/x")
    assert status == 200
    assert body["principal"]["accessRestrictions"] == {"permissionAttributes": {"action": ["read"]}}
    # Scoped to the old plugin itself: refused, it could not keep to "read".
    status, body = get(app, old_scoped, f"/api/{OLD}/things")
    assert status == 401
    assert message(body) == f"Token is not valid; caused by NotAllowedError: {RESTRICTED_MESSAGE}"
    # Scoped elsewhere: refused too (by the barrier when it runs, 403).
    status, body = get(app, catalog_scoped, f"/api/{OLD}/things")
    assert status == (401 if old_guards_itself else 403)
    assert "This token's access is restricted to plugin(s) 'catalog'" in message(body)
    assert app.extensions["old-plugin-seen"].seen == []


def test_identity_from_auth_refuses_restricted_users_directly(clock: FakeClock) -> None:
    app, old_scoped, _ = pat_app(clock, old_guards_itself=True)
    identity = identity_from_auth(BackstageAuth.state(app).auth(OLD))
    with pytest.raises(NotAllowedError) as info:
        identity.get_identity(bearer_request(old_scoped))
    assert info.value.description == RESTRICTED_MESSAGE


class FixedAuth:
    """An ``auth`` service answering the same credentials for every token."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    def authenticate(self, token: str, *, allow_limited_access: bool = False) -> Credentials:
        return self.credentials


@pytest.mark.parametrize(
    "credentials",
    [
        Credentials(UserPrincipal(JANE, access_restrictions=AccessRestrictions())),
        Credentials(UserPrincipal(JANE), all_access_restrictions={OLD: AccessRestrictions()}),
        Credentials(UserPrincipal(JANE), all_access_restrictions={}),
    ],
    ids=["principal", "all-restrictions", "empty-restrictions"],
)
def test_any_restriction_keeps_a_user_from_the_old_system(credentials: Credentials) -> None:
    """Even an empty restriction set (a token scoped to nothing) is a restriction."""
    identity = identity_from_auth(t.cast(t.Any, FixedAuth(credentials)))
    with pytest.raises(NotAllowedError):
        identity.get_identity(bearer_request("any-token"))
    unrestricted = identity_from_auth(t.cast(t.Any, FixedAuth(Credentials(UserPrincipal(JANE)))))
    found = unrestricted.get_identity(bearer_request("any-token"))
    assert found is not None and found.user_entity_ref == JANE


def test_auth_compat_mints_no_legacy_token_for_restricted_service_credentials(
    clock: FakeClock, secrets: dict[str, str], app: Flask
) -> None:
    """Backstage's AuthCompat would hand any service credentials an unrestricted token."""
    state = BackstageAuth.state(app)
    compat = AuthCompat(None, state.token_manager)
    restricted = state.auth("catalog").authenticate(mint(secrets["catalog_ro"], clock))
    assert restricted.all_access_restrictions is not None
    with pytest.raises(NotAllowedError) as info:
        compat.get_plugin_request_token(on_behalf_of=restricted, target_plugin_id="search")
    assert info.value.description == RESTRICTED_MESSAGE
    with pytest.raises(NotAllowedError):
        compat.get_plugin_request_token(
            on_behalf_of=Credentials(
                ServicePrincipal("external:x"),
                all_access_restrictions={"catalog": AccessRestrictions()},
            ),
            target_plugin_id="catalog",
        )
    unrestricted = state.auth("catalog").authenticate(mint(secrets["open"], clock))
    token = compat.get_plugin_request_token(on_behalf_of=unrestricted, target_plugin_id="search")
    assert get(app, token.token, "/api/search/x")[0] == 200


# -- 3. the next variations: restricted legacy entries, a secret declared twice -------


def test_a_restricted_legacy_external_access_entry_never_passes_an_old_plugin(
    clock: FakeClock,
) -> None:
    """Its secret used to be a verification key of the token manager as well."""
    restricted, open_ = new_secret(), new_secret()
    app = make_app(
        [key(open_)],
        [legacy_entry(restricted, "ci-reader", "catalog"), legacy_entry(new_secret(), "ci")],
        clock=clock,
    )
    token = mint(restricted, clock)
    status, body = get(app, token, "/api/catalog/x")
    assert (status, body["principal"]["subject"]) == (200, "ci-reader")
    assert get(app, token, "/api/search/x") == (
        403,
        {
            "error": {"name": "NotAllowedError", "message": RESTRICTED_TO_CATALOG},
            "request": {"method": "GET", "url": "/x"},
            "response": {"statusCode": 403},
        },
    )
    status, body = get(app, token, f"/api/{OLD}/things")
    assert status == 401
    manager = BackstageAuth.state(app).token_manager
    assert isinstance(manager, ServerTokenManager)
    assert manager.key_count == 2  # the keys entry and the unrestricted legacy entry
    with pytest.raises(AuthenticationError):
        manager.authenticate(token)


def urlsafe_spelling(secret: str) -> str:
    """The same key bytes, written another way (Backstage decodes both alike)."""
    other = secret.replace("+", "-").replace("/", "_").rstrip("=")
    assert other != secret
    return other


DUPLICATES = {
    "restricted-then-open": (
        lambda s: [key(s, "catalog"), key(s)],
        None,
        f"{KEYS}[1]",
        f"{KEYS}[0]",
    ),
    "open-then-restricted": (
        lambda s: [key(s), key(s, "catalog")],
        None,
        f"{KEYS}[1]",
        f"{KEYS}[0]",
    ),
    "two-restrictions": (
        lambda s: [key(s, "catalog"), key(s, "search")],
        None,
        f"{KEYS}[1]",
        f"{KEYS}[0]",
    ),
    "other-spelling": (
        lambda s: [key(s, "catalog"), key(urlsafe_spelling(s))],
        None,
        f"{KEYS}[1]",
        f"{KEYS}[0]",
    ),
    "external-open-keys-restricted": (
        lambda s: [key(s, "catalog")],
        lambda s: [legacy_entry(s, "ci")],
        f"{EXTERNAL}[0]",
        f"{KEYS}[0]",
    ),
}


@pytest.mark.parametrize(
    ("keys", "external", "second", "first"), DUPLICATES.values(), ids=DUPLICATES.keys()
)
def test_a_secret_declared_with_two_sets_of_restrictions_is_refused(
    keys: t.Callable[[str], list[dict[str, t.Any]]],
    external: t.Callable[[str], list[dict[str, t.Any]]] | None,
    second: str,
    first: str,
) -> None:
    """Backstage lets the first entry win for new plugins, and its token manager accept
    the secret everywhere: whichever entry comes first, the answer is "refuse to start"."""
    secret = base64.b64encode(b"\xfb\xff" + os.urandom(30)).decode()  # has '+' or '/'
    config = {"backend": {"auth": {"keys": keys(secret)}}}
    if external is not None:
        config["backend"]["auth"]["externalAccess"] = external(secret)
    for build in (
        lambda: make_app(keys(secret), external(secret) if external else None),
        lambda: ServerTokenManager.from_config(config),
    ):
        with pytest.raises(ConfigError) as info:
            build()
        text = str(info.value)
        assert f"The secret at '{second}' is also declared at '{first}'" in text
        assert secret not in text


def test_a_secret_declared_twice_with_the_same_restrictions_is_kept_restricted(
    clock: FakeClock,
) -> None:
    secret = new_secret()
    app = make_app(
        [key(new_secret()), key(secret, "catalog")],
        [legacy_entry(secret, "ci", "catalog")],
        clock=clock,
    )
    token = mint(secret, clock)
    assert get(app, token, "/api/catalog/x")[1]["principal"]["subject"] == "ci"
    assert get(app, token, "/api/search/x")[0] == 403
    assert get(app, token, f"/api/{OLD}/things")[0] == 401


def test_a_token_manager_given_a_restricted_secret_is_refused(clock: FakeClock) -> None:
    """BackstageAuth(token_manager=...) cannot slip a restricted key past the config."""
    secret = new_secret()
    manager = ServerTokenManager([validate_secret(secret, "test")], clock=clock)
    with pytest.raises(ConfigError) as info:
        make_app([key(new_secret()), key(secret, "catalog")], token_manager=manager)
    assert f"'{KEYS}[1]'" in str(info.value)
    assert secret not in str(info.value)
    # An unrelated secret of its own is accepted, unrestricted, as before.
    other = new_secret()
    own = ServerTokenManager([validate_secret(other, "test")], clock=clock)
    app = make_app([key(secret, "catalog")], token_manager=own, clock=clock)
    assert get(app, mint(other, clock), "/api/search/x")[0] == 200
    assert get(app, mint(secret, clock), "/api/search/x")[0] == 403


# -- only restricted keys -------------------------------------------------------------


def test_only_restricted_keys_in_production(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    secret = new_secret()
    config = {"backend": {"auth": {"keys": [key(secret, "catalog")]}}}
    with pytest.raises(ConfigError) as info:
        ServerTokenManager.from_config(config)
    assert str(info.value) == RESTRICTED_ONLY_MESSAGE
    # The extension starts (as without keys): new plugins enforce the key's restriction,
    # the token manager has no key at all.
    with caplog.at_level("WARNING"):
        app = make_app([key(secret, "catalog")], clock=clock)
    assert "Every legacy key has accessRestrictions" in caplog.text
    assert get(app, mint(secret, clock), "/api/catalog/x")[0] == 200
    assert get(app, mint(secret, clock), "/api/search/x")[0] == 403
    manager = BackstageAuth.state(app).token_manager
    with pytest.raises(ConfigError):
        manager.get_token()
    with pytest.raises(AuthenticationError):
        manager.authenticate(mint(secret, clock))


def test_only_restricted_keys_in_development_generate_an_unrestricted_key(
    clock: FakeClock,
) -> None:
    secret = new_secret()
    app = make_app([key(secret, "catalog")], clock=clock, development=True)
    manager = BackstageAuth.state(app).token_manager
    assert isinstance(manager, ServerTokenManager) and manager.generated_key
    own = manager.get_token().token
    assert get(app, own, "/api/search/x")[0] == 200
    assert get(app, own, f"/api/{OLD}/things")[0] == 200
    assert get(app, mint(secret, clock), "/api/search/x")[0] == 403
    assert get(app, mint(secret, clock), f"/api/{OLD}/things")[0] == 401
