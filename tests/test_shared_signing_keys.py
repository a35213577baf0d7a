"""The auth backend's signing keys, shared through the database by every instance.

Each "instance" here is an app object of its own (its own engine, key source,
verifier and caches) on one database: a SQLite file or a PostgreSQL schema.
``tests/test_multi_instance.py`` runs the same over HTTP with real processes.
"""

from __future__ import annotations

import copy
import json
import logging
import typing as t
from pathlib import Path

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Blueprint, Flask, jsonify
from flask.testing import FlaskClient

from flask_backstage_auth import BackstageAuth, ConfigError, get_credentials
from flask_backstage_auth.auth.plugin.keys import (
    InMemoryPublicKeyStore,
    RotatingKeySource,
    StaticKeySource,
    StoredPublicKey,
    public_jwk,
)
from flask_backstage_auth.auth.user.handler import USER_TYP
from flask_backstage_auth.auth_backend.extension import AuthBackend
from flask_backstage_auth.db.storage import (
    SqlPublicKeyStore,
    SqlSigningKeyStore,
    create_tables,
    public_keys_table,
    signing_keys_table,
)
from flask_backstage_auth.testing.audit import capture_audit
from tests.conftest import _pg_url_in
from tests.test_plugin_key_store import write_pair

START = 1_700_000_000.0
GUEST = "user:development/guest"
REFRESH = "/api/auth/guest/refresh"
JWKS = "/api/auth/.well-known/jwks.json"
CONFIG: dict[str, t.Any] = {
    "backend": {"baseUrl": "http://localhost:7007"},
    "auth": {"providers": {"guest": {}}},
}


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


InstanceFactory = t.Callable[..., Flask]


@pytest.fixture(params=["sqlite-file", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One database with our tables, for every instance of a test."""
    if request.param == "sqlite-file":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        postgres_url = request.getfixturevalue("postgres_url")
        schema = request.getfixturevalue("pg_schema")
        url = _pg_url_in(postgres_url, schema).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    try:
        create_tables(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture
def instance(database_url: str) -> t.Iterator[InstanceFactory]:
    """Makes instances of one backend on ``database_url``, each with its own engine."""
    apps: list[Flask] = []

    def make(clock: FakeClock, backstage: dict[str, t.Any] | None = None) -> Flask:
        app = Flask(f"instance-{len(apps)}", static_folder=None)
        # No cache of verified tokens: every request asks the key set.
        app.config.update(
            TESTING=True, BACKSTAGE_AUTH_DATABASE_URI=database_url, BACKSTAGE_AUTH_CACHE_SIZE=0
        )
        app.config["BACKSTAGE_CONFIG"] = copy.deepcopy(backstage or CONFIG)
        BackstageAuth(app, clock=clock)
        AuthBackend(app)
        app.register_blueprint(_whoami("catalog"))
        apps.append(app)
        return app

    try:
        yield make
    finally:
        for app in apps:
            database = BackstageAuth.state(app).database
            assert database is not None
            database.engine.dispose()


def _whoami(plugin: str) -> Blueprint:
    bp = Blueprint(plugin, __name__, url_prefix=f"/api/{plugin}")

    @bp.get("/whoami")
    def whoami() -> t.Any:
        return jsonify(get_credentials().to_dict())

    return bp


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def guest_token(app: Flask) -> str:
    response = app.test_client().post(REFRESH)
    assert response.status_code == 200, response.get_data(as_text=True)
    return t.cast(str, response.get_json()["backstageIdentity"]["token"])


def whoami(client: FlaskClient, token: str) -> tuple[int, t.Any]:
    response = client.get("/api/catalog/whoami", headers=bearer(token))
    return response.status_code, response.get_json()


def kid_of(token: str) -> str:
    return t.cast(str, jwt.get_unverified_header(token)["kid"])


def jwks_kids(app: Flask) -> set[str]:
    return {k["kid"] for k in app.test_client().get(JWKS).get_json()["keys"]}


def engine_of(app: Flask) -> sa.Engine:
    database = BackstageAuth.state(app).database
    assert database is not None
    return database.engine


def empty(app: Flask, table: sa.Table) -> None:
    with engine_of(app).begin() as connection:
        connection.execute(table.delete())


def forge_user_token(private_key: t.Any, kid: str, now: float = START) -> str:
    payload = {"sub": GUEST, "aud": "backstage", "iat": int(now), "exp": int(now) + 600}
    return jwt.encode(
        payload,
        private_key,
        algorithm="ES256",
        headers={"typ": USER_TYP, "alg": "ES256", "kid": kid},
        sort_headers=False,
    )


# -- every instance accepts every instance's tokens ---------------------------------


def test_a_token_of_one_instance_verifies_on_the_others_at_once(
    instance: InstanceFactory,
) -> None:
    clock = FakeClock()
    one, two, three = instance(clock), instance(clock), instance(clock)
    # two and three loaded their keys before one made its key: the unknown kid
    # makes them look in the store, so the very first token verifies.
    assert jwks_kids(two) == jwks_kids(three) == set()
    assert whoami(two.test_client(), guest_token(two))[0] == 200
    token = guest_token(one)
    for other in (two, three):
        status, body = whoami(other.test_client(), token)
        assert status == 200, body
        assert body["principal"] == {"type": "user", "userEntityRef": GUEST}
    # every JWKS serves every instance's key
    assert kid_of(token) in jwks_kids(two)
    assert jwks_kids(one) == jwks_kids(two) == jwks_kids(three)
    assert len(jwks_kids(one)) == 2


def test_on_behalf_of_calls_cross_instances(instance: InstanceFactory) -> None:
    """A user token of one, a plugin token (obo) of two, verified by three."""
    clock = FakeClock()
    one, two, three = instance(clock), instance(clock), instance(clock)
    token = guest_token(one)
    search = BackstageAuth.state(two).auth("search")
    credentials = search.authenticate(token)
    plugin_token = search.get_plugin_request_token(
        on_behalf_of=credentials, target_plugin_id="catalog"
    ).token
    BackstageAuth.state(three).auth("search")  # search is this backend's plugin there too
    status, body = whoami(three.test_client(), plugin_token)
    assert status == 200, body
    assert body["principal"] == {
        "type": "user",
        "userEntityRef": GUEST,
        "actor": {"type": "service", "subject": "plugin:search"},
    }


def test_user_keys_live_apart_from_plugin_keys(instance: InstanceFactory) -> None:
    clock = FakeClock()
    one = instance(clock)
    token = guest_token(one)
    BackstageAuth.state(one).auth("search").get_plugin_request_token(
        on_behalf_of=BackstageAuth.state(one).auth("search").get_own_service_credentials(),
        target_plugin_id="catalog",
    )
    with engine_of(one).connect() as connection:
        user_kids = set(connection.execute(sa.select(signing_keys_table.c.kid)).scalars())
        plugin_kids = set(connection.execute(sa.select(public_keys_table.c.kid)).scalars())
    assert user_kids == {kid_of(token)}
    assert len(plugin_kids) == 1 and not plugin_kids & user_kids
    plugin_jwks = one.test_client().get("/api/catalog/.backstage/auth/v1/jwks.json").get_json()
    assert {k["kid"] for k in plugin_jwks["keys"]} == plugin_kids
    assert jwks_kids(one) == user_kids


# -- a key gone from the store ------------------------------------------------------


def test_an_emptied_table_gives_a_new_key_on_the_next_listing(instance: InstanceFactory) -> None:
    clock = FakeClock()
    one, two = instance(clock), instance(clock)
    old = guest_token(one)
    assert whoami(two.test_client(), old)[0] == 200
    empty(one, signing_keys_table)
    with capture_audit(one) as audit:
        # one's JWKS lists the store: its key is gone, so it signs no more with it
        assert jwks_kids(one) == set()
        new = guest_token(one)
    assert kid_of(new) != kid_of(old)
    (event,) = audit.find("signing-key-rotate", status="succeeded", plugin="auth")
    assert event.meta["reason"] == "missing-from-store"
    assert event.meta["previousKid"] == kid_of(old)
    assert event.meta["kid"] == kid_of(new)
    assert event.meta["purpose"] == "user-tokens"
    assert whoami(two.test_client(), new)[0] == 200
    assert jwks_kids(two) == {kid_of(new)}
    # the vanished key verifies nothing more, on either instance
    assert whoami(two.test_client(), old)[0] == 401
    assert whoami(one.test_client(), old)[0] == 401


def test_an_emptied_table_is_noticed_before_signing(instance: InstanceFactory) -> None:
    """No listing in between: the check before signing, once a minute, finds it."""
    clock = FakeClock()
    one, two = instance(clock), instance(clock)
    old = guest_token(one)
    empty(one, signing_keys_table)
    clock.now += 30
    assert kid_of(guest_token(one)) == kid_of(old)  # checked less than a minute ago
    clock.now += 31
    new = guest_token(one)
    assert kid_of(new) != kid_of(old)
    status, body = whoami(two.test_client(), new)
    assert status == 200, body


def test_plugin_keys_are_renewed_too(instance: InstanceFactory) -> None:
    clock = FakeClock()
    one, two = instance(clock), instance(clock)
    for app in (one, two):
        BackstageAuth.state(app).auth("search")

    def plugin_token() -> str:
        search = BackstageAuth.state(one).auth("search")
        return search.get_plugin_request_token(
            on_behalf_of=search.get_own_service_credentials(), target_plugin_id="catalog"
        ).token

    old = plugin_token()
    assert whoami(two.test_client(), old)[0] == 200
    empty(one, public_keys_table)
    clock.now += 61
    new = plugin_token()
    assert kid_of(new) != kid_of(old)
    status, body = whoami(two.test_client(), new)
    assert status == 200, body
    assert body["principal"] == {"type": "service", "subject": "plugin:search"}
    assert whoami(two.test_client(), old)[0] == 401


# -- what is refused ------------------------------------------------------------------


def test_a_kid_that_is_not_in_the_store_is_refused(instance: InstanceFactory) -> None:
    clock = FakeClock()
    one = instance(clock)
    guest_token(one)
    stranger = ec.generate_private_key(ec.SECP256R1())
    status, body = whoami(one.test_client(), forge_user_token(stranger, "not-published"))
    assert status == 401
    assert body["error"]["message"] == "Failed user token verification"
    # nor with the kid of a published key
    published = next(iter(jwks_kids(one)))
    assert whoami(one.test_client(), forge_user_token(stranger, published))[0] == 401


def test_expired_keys_stop_verifying(instance: InstanceFactory) -> None:
    clock = FakeClock()
    one, two = instance(clock), instance(clock)
    token = guest_token(one)  # the key signs for an hour and is listed for three
    clock.now += 3 * 3600 + 1
    assert whoami(two.test_client(), token)[0] == 401
    assert kid_of(token) not in jwks_kids(two)
    with engine_of(two).connect() as connection:  # and the listing deleted its row
        assert connection.execute(sa.select(signing_keys_table.c.kid)).all() == []


def test_a_plugin_key_never_verifies_a_user_token(instance: InstanceFactory) -> None:
    """A key in the plugin table (another app sharing the database) signs no user."""
    clock = FakeClock()
    one = instance(clock)
    guest_token(one)
    outsider = ec.generate_private_key(ec.SECP256R1())
    SqlPublicKeyStore(engine_of(one)).add_key(
        "outsider", public_jwk(outsider, "outsider"), START + 3600
    )
    status, body = whoami(one.test_client(), forge_user_token(outsider, "outsider"))
    assert status == 401
    assert body["error"]["message"] == "Failed user token verification"


def test_rows_of_the_signing_keys_table_are_trusted(instance: InstanceFactory) -> None:
    """The trust boundary: whoever can write the table signs users in (docs/persistence.rst)."""
    clock = FakeClock()
    one = instance(clock)
    writer = ec.generate_private_key(ec.SECP256R1())
    SqlSigningKeyStore(engine_of(one)).add_key(
        "db-writer", public_jwk(writer, "db-writer"), START + 60
    )
    assert whoami(one.test_client(), forge_user_token(writer, "db-writer"))[0] == 200


@pytest.mark.parametrize("variant", ["rsa", "hs256", "no-alg-pinning", "not-json", "expired"])
def test_rows_that_cannot_verify_es256_are_refused(instance: InstanceFactory, variant: str) -> None:
    """What a row can hold that still signs no user token."""
    clock = FakeClock()
    one = instance(clock)
    writer = ec.generate_private_key(ec.SECP256R1())
    jwk: dict[str, t.Any] = public_jwk(writer, "row")
    expires_at = START + 60
    token = forge_user_token(writer, "row")
    if variant == "rsa":
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
        jwk.update(kid="row", alg="RS256")
        token = jwt.encode(
            {"sub": GUEST, "aud": "backstage", "iat": int(START), "exp": int(START) + 600},
            rsa_key,
            algorithm="RS256",
            headers={"typ": USER_TYP, "kid": "row"},
        )
    elif variant == "hs256":
        jwk = {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "kid": "row"}
        token = jwt.encode(
            {"sub": GUEST, "aud": "backstage", "iat": int(START), "exp": int(START) + 600},
            b"secret-secret-secret-secret-secret",
            algorithm="HS256",
            headers={"typ": USER_TYP, "kid": "row"},
        )
    elif variant == "no-alg-pinning":
        jwk["alg"] = "ES384"  # the key claims another algorithm than the token
    elif variant == "expired":
        expires_at = START - 1
    store = SqlSigningKeyStore(engine_of(one))
    store.add_key("row", jwk, expires_at)
    if variant == "not-json":
        with engine_of(one).begin() as connection:
            connection.execute(signing_keys_table.update().values(key="{not json"))
    status, body = whoami(one.test_client(), token)
    assert status == 401, body


# -- configuration --------------------------------------------------------------------


def test_memory_provider_keeps_keys_in_the_process(instance: InstanceFactory) -> None:
    clock = FakeClock()
    config = copy.deepcopy(CONFIG)
    config["auth"]["keyStore"] = {"provider": "memory"}
    one, two = instance(clock, config), instance(clock, config)
    token = guest_token(one)
    assert whoami(one.test_client(), token)[0] == 200
    assert whoami(two.test_client(), token)[0] == 401
    with engine_of(one).connect() as connection:
        assert connection.execute(sa.select(signing_keys_table.c.kid)).all() == []


def test_static_provider_signs_with_pem_keys(tmp_path: Path) -> None:
    private, public = write_pair(tmp_path, "user")
    config = copy.deepcopy(CONFIG)
    config["auth"]["keyStore"] = {
        "provider": "static",
        "static": {
            "keys": [{"publicKeyFile": str(public), "privateKeyFile": str(private), "keyId": "u1"}]
        },
    }
    apps = []
    for _ in range(2):
        app = Flask("static-user-keys", static_folder=None)
        app.config.update(TESTING=True, BACKSTAGE_CONFIG=copy.deepcopy(config))
        BackstageAuth(app)
        AuthBackend(app)
        app.register_blueprint(_whoami("catalog"))
        apps.append(app)
    assert isinstance(AuthBackend.state(apps[0]).issuer.key_source, StaticKeySource)
    token = guest_token(apps[0])
    assert kid_of(token) == "u1"
    assert whoami(apps[1].test_client(), token)[0] == 200


@pytest.mark.parametrize(
    ("key_store", "message"),
    [
        ({"provider": "vault"}, "Unknown KeyStore provider: vault"),
        ({"provider": "firestore"}, "The 'firestore' KeyStore provider is not supported here"),
        ({"provider": "database"}, "auth.keyStore.provider is 'database' but BackstageAuth has no"),
        ({"provider": "static"}, "At least one key pair must be provided in static.keys"),
    ],
)
def test_key_store_errors(key_store: dict[str, t.Any], message: str) -> None:
    app = Flask("bad-user-key-store", static_folder=None)
    config = copy.deepcopy(CONFIG)
    config["auth"]["keyStore"] = key_store
    app.config.update(TESTING=True, BACKSTAGE_CONFIG=config)
    BackstageAuth(app)
    with pytest.raises(ConfigError, match=message):
        AuthBackend(app)


def test_without_a_database_the_keys_stay_in_memory_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Flask("no-database", static_folder=None)
    app.config.update(BACKSTAGE_AUTH_DEVELOPMENT=False, BACKSTAGE_CONFIG=copy.deepcopy(CONFIG))
    BackstageAuth(app)
    with caplog.at_level(logging.INFO, "flask_backstage_auth.auth_backend.keys"):
        AuthBackend(app)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "User-token signing keys are kept in this process only" in record.getMessage()
    source = AuthBackend.state(app).issuer.key_source
    assert isinstance(source, RotatingKeySource)
    assert isinstance(source.store, InMemoryPublicKeyStore)


# -- RotatingKeySource on its own -------------------------------------------------------


class CountingStore(InMemoryPublicKeyStore):
    def __init__(self) -> None:
        super().__init__()
        self.listings = 0
        self.fail = False

    def list_keys(self) -> list[StoredPublicKey]:
        self.listings += 1
        if self.fail:
            raise RuntimeError("store down")
        return super().list_keys()


def test_the_check_before_signing_is_once_per_interval() -> None:
    clock = FakeClock()
    store = CountingStore()
    source = RotatingKeySource(store, clock=clock, check_interval=60)
    key = source.get_signing_key()
    for _ in range(5):
        clock.now += 20
        assert source.get_signing_key() is key
    assert store.listings == 1  # at +60; +20, +40, +80, +100 within the interval
    # a listing that holds the key counts as a check
    clock.now += 50
    source.list_public_keys()
    clock.now += 50
    assert source.get_signing_key() is key
    assert store.listings == 2


def test_a_store_that_cannot_be_read_keeps_the_key() -> None:
    """A database that is down is no sign the key is gone; nor is it asked at every signing."""
    clock = FakeClock()
    store = CountingStore()
    source = RotatingKeySource(store, clock=clock, check_interval=60)
    key = source.get_signing_key()
    store.fail = True
    clock.now += 61
    assert source.get_signing_key() is key
    assert source.get_signing_key() is key
    assert store.listings == 1
    store.fail = False
    store.remove_keys([key.kid])
    clock.now += 61
    assert source.get_signing_key().kid != key.kid


def test_a_listing_that_races_a_rotation_keeps_the_new_key() -> None:
    """A listing read before a new key was stored does not drop that key."""
    clock = FakeClock()
    store = InMemoryPublicKeyStore()
    source = RotatingKeySource(store, clock=clock, key_duration=3600)
    old = source.get_signing_key()
    clock.now += 3601
    new_keys: list[t.Any] = []

    class Racing(InMemoryPublicKeyStore):
        def list_keys(self) -> list[StoredPublicKey]:
            listed = store.list_keys()  # the rows before the rotation committed
            new_keys.append(source.get_signing_key())  # another thread rotates now
            return listed

    source.store = Racing()
    source.list_public_keys()
    source.store = store
    assert new_keys[0].kid != old.kid
    assert source.get_signing_key() is new_keys[0]


def test_a_failed_rotation_after_a_missing_key_signs_nothing() -> None:
    clock = FakeClock()

    class Broken(InMemoryPublicKeyStore):
        broken = False

        def add_key(self, kid: str, jwk: dict[str, t.Any], expires_at: float) -> None:
            if self.broken:
                raise RuntimeError("cannot write")
            super().add_key(kid, jwk, expires_at)

    store = Broken()
    source = RotatingKeySource(store, clock=clock)
    key = source.get_signing_key()
    store.remove_keys([key.kid])
    store.broken = True
    assert source.list_public_keys() == []
    with pytest.raises(RuntimeError):
        source.get_signing_key()
    with pytest.raises(RuntimeError):  # never the vanished key
        source.get_signing_key()
    store.broken = False
    assert source.get_signing_key().kid != key.kid


def test_a_rotating_source_given_in_code_is_looked_up_at_once(database_url: str) -> None:
    """``AuthBackend(key_source=RotatingKeySource(...))``: no cooldown on unknown kids."""
    clock = FakeClock()
    engine = sa.create_engine(database_url)
    try:
        apps = []
        for _ in range(2):
            app = Flask("given-source", static_folder=None)
            app.config.update(
                TESTING=True, BACKSTAGE_AUTH_CACHE_SIZE=0, BACKSTAGE_CONFIG=copy.deepcopy(CONFIG)
            )
            BackstageAuth(app, clock=clock)
            AuthBackend(app, key_source=RotatingKeySource(SqlSigningKeyStore(engine), clock=clock))
            app.register_blueprint(_whoami("catalog"))
            apps.append(app)
        one, two = apps
        assert whoami(two.test_client(), guest_token(two))[0] == 200  # two has just loaded
        status, body = whoami(two.test_client(), guest_token(one))  # the same instant
        assert status == 200, body
    finally:
        engine.dispose()
