"""Key rotation and clocks: a new ``kid`` verifies at once, forged ones cost a
bounded number of fetches, a known ``kid`` never waits for a fetch, and an
``iat`` slightly ahead is accepted within ``BACKSTAGE_AUTH_IAT_LEEWAY``.

The auth backend and other backends are played by the real HTTP server of
``tests/test_jwks_bounds.py``; apps run in production mode (cooldown 30 s)
with an injected clock, which also drives the forced-reload budget.
"""

from __future__ import annotations

import secrets
import threading
import time
import typing as t

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask

from flask_backstage_auth import BackstageAuth, ConfigError
from flask_backstage_auth.auth.jwks import (
    FORCED_RELOAD_LIMIT,
    FetchBudget,
    JwksCache,
    JwksFetcher,
    JwksUnavailable,
    forced_reloads,
)
from flask_backstage_auth.auth.key_sets import LocalKeySet
from tests.test_jwks_bounds import (
    JWKS_PATH,
    FakeClock,
    KeySetServer,
    eventually,
    get,
    hold,
    make_app,
    public_jwks,
)

USER_JWKS = "/api/auth/.well-known/jwks.json"
OLD = ec.generate_private_key(ec.SECP256R1())
NEW = ec.generate_private_key(ec.SECP256R1())
ATTACKER = ec.generate_private_key(ec.SECP256R1())


#: Fetches here take milliseconds; a long wait keeps exact fetch counts true on a busy machine.
PATIENT = {"BACKSTAGE_AUTH_JWKS_TIMEOUT": 10, "BACKSTAGE_AUTH_JWKS_WAIT": 10}


@pytest.fixture
def server() -> t.Iterator[KeySetServer]:
    instance = KeySetServer()
    instance.thread.start()
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def key_set(*keys: tuple[ec.EllipticCurvePrivateKey, str]) -> dict[str, t.Any]:
    return {"keys": [jwk for private, kid in keys for jwk in public_jwks(private, kid)["keys"]]}


def user_token(
    clock: FakeClock,
    key: ec.EllipticCurvePrivateKey = OLD,
    kid: str = "old",
    *,
    iat: float | None = None,
    lifetime: int = 3600,
) -> str:
    issued = int(clock()) if iat is None else int(iat)
    return jwt.encode(
        {"sub": "user:default/jane", "iat": issued, "exp": issued + lifetime},
        key,
        algorithm="ES256",
        headers={"typ": "vnd.backstage.user", "kid": kid},
    )


def plugin_token(
    clock: FakeClock,
    key: ec.EllipticCurvePrivateKey = OLD,
    kid: str = "old",
    *,
    iat: float | None = None,
) -> str:
    issued = int(clock()) if iat is None else int(iat)
    return jwt.encode(
        {"sub": "scaffolder", "aud": "catalog", "iat": issued, "exp": issued + 3600},
        key,
        algorithm="ES256",
        headers={"typ": "vnd.backstage.plugin", "kid": kid},
    )


# -- A. availability during rotations --------------------------------------------


def test_a_user_token_of_a_new_key_is_accepted_at_once(
    server: KeySetServer, clock: FakeClock
) -> None:
    server.json(USER_JWKS, key_set((OLD, "old")))
    app = make_app(server.url, clock, **PATIENT)
    assert get(app, user_token(clock)).status_code == 200
    assert server.count(USER_JWKS) == 1
    # The auth backend restarts with a new key; our clock has not moved.
    server.json(USER_JWKS, key_set((NEW, "new"), (OLD, "old")))
    clock.now += 1
    reply = get(app, user_token(clock, NEW, "new"))
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.get_json()["principal"]["userEntityRef"] == "user:default/jane"
    assert server.count(USER_JWKS) == 2
    assert get(app, user_token(clock)).status_code == 200  # old key still known: no fetch
    assert server.count(USER_JWKS) == 2


@pytest.mark.parametrize("configured", [True, False], ids=["endpoints", "baseUrl"])
def test_a_plugin_token_of_a_restarted_backend_is_accepted_at_once(
    server: KeySetServer, clock: FakeClock, configured: bool
) -> None:
    path = f"/api/scaffolder{JWKS_PATH}"
    server.json(path, key_set((OLD, "old")))
    app = make_app(server.url, clock, **PATIENT, endpoints=["scaffolder"] if configured else ())
    assert get(app, plugin_token(clock)).status_code == 200
    server.json(path, key_set((NEW, "new")))  # a rolling restart: a new key, the old gone
    clock.now += 5
    reply = get(app, plugin_token(clock, NEW, "new"))
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.get_json()["principal"]["subject"] == "plugin:scaffolder"
    assert server.count(path) == 2


def test_a_new_kid_signed_by_an_unknown_key_still_fails(
    server: KeySetServer, clock: FakeClock
) -> None:
    server.json(USER_JWKS, key_set((OLD, "old")))
    app = make_app(server.url, clock, **PATIENT, BACKSTAGE_AUTH_CACHE_SIZE=0)
    assert get(app, user_token(clock)).status_code == 200
    server.json(USER_JWKS, key_set((NEW, "new"), (OLD, "old")))
    for kid in ("new", "old", "other"):  # the published kids, and one nobody published
        reply = get(app, user_token(clock, ATTACKER, kid))
        assert reply.status_code == 401
        assert reply.get_json()["error"]["message"] == "Failed user token verification"
    assert get(app, plugin_token(clock, ATTACKER, "new")).status_code == 401
    assert get(app, user_token(clock, NEW, "new")).status_code == 200


def test_a_storm_of_forged_kids_costs_at_most_the_forced_reloads(
    server: KeySetServer, clock: FakeClock
) -> None:
    server.json(USER_JWKS, key_set((OLD, "old")))
    app = make_app(server.url, clock, **PATIENT, BACKSTAGE_AUTH_CACHE_SIZE=0)
    assert get(app, user_token(clock)).status_code == 200  # fetch 1 starts the cooldown

    def storm(requests: int) -> None:
        for _ in range(requests):
            forged = user_token(clock, ATTACKER, secrets.token_hex(8))
            assert get(app, forged).status_code == 401

    storm(100)
    assert server.count(USER_JWKS) == 1 + FORCED_RELOAD_LIMIT
    storm(100)  # the clock stands still: nothing refills
    assert server.count(USER_JWKS) == 1 + FORCED_RELOAD_LIMIT
    clock.now += 30  # the cooldown is over (one fetch), and 30 s refill five forced reloads
    storm(100)
    assert server.count(USER_JWKS) == 1 + FORCED_RELOAD_LIMIT + 1 + 5
    # Through it all, the real key verified without a fetch of its own.
    assert get(app, user_token(clock)).status_code == 200
    assert server.count(USER_JWKS) == 17
    # Once the storm has spent the forced reloads, a real new key waits for the cooldown.
    server.json(USER_JWKS, key_set((NEW, "new"), (OLD, "old")))
    assert get(app, user_token(clock, NEW, "new")).status_code == 401
    clock.now += 30
    assert get(app, user_token(clock, NEW, "new")).status_code == 200


def test_forged_kids_against_many_plugins_share_the_fetch_budget(
    server: KeySetServer, clock: FakeClock
) -> None:
    """For plugins only ``backend.baseUrl`` finds, forced reloads also cost budget."""
    for name in ("one", "two", "three"):
        server.json(f"/api/{name}{JWKS_PATH}", key_set((OLD, "old")))
    app = make_app(server.url, clock, **PATIENT, BACKSTAGE_AUTH_JWKS_FETCH_BUDGET=3)

    def token(sub: str, kid: str) -> str:
        now = int(clock())
        return jwt.encode(
            {"sub": sub, "aud": "catalog", "iat": now, "exp": now + 600},
            OLD if kid == "old" else ATTACKER,
            algorithm="ES256",
            headers={"typ": "vnd.backstage.plugin", "kid": kid},
        )

    for name in ("one", "two", "three"):
        assert get(app, token(name, "old")).status_code == 200
    assert server.count() == 3  # the budget's burst is spent
    for _ in range(30):
        for name in ("one", "two", "three"):
            assert get(app, token(name, secrets.token_hex(4))).status_code == 401
    assert server.count() == 3


def test_concurrent_unknown_kids_share_one_fetch_and_a_known_kid_never_waits(
    server: KeySetServer, clock: FakeClock
) -> None:
    server.json(USER_JWKS, key_set((OLD, "old")))
    app = make_app(
        server.url,
        clock,
        BACKSTAGE_AUTH_JWKS_TIMEOUT=10,
        BACKSTAGE_AUTH_JWKS_WAIT=10,
        BACKSTAGE_AUTH_CACHE_SIZE=0,
    )
    assert get(app, user_token(clock)).status_code == 200
    server.routes[USER_JWKS] = hold(key_set((NEW, "new"), (OLD, "old")))
    replies: list[int] = []
    lock = threading.Lock()

    def new_key() -> None:
        status = get(app, user_token(clock, NEW, "new")).status_code
        with lock:
            replies.append(status)

    waiting = [threading.Thread(target=new_key) for _ in range(5)]
    for thread in waiting:
        thread.start()
    try:
        assert eventually(lambda: server.held == 1)
        started = time.monotonic()
        for _ in range(5):  # the old key's tokens go through while the fetch hangs
            assert get(app, user_token(clock)).status_code == 200
        assert time.monotonic() - started < 3
        assert replies == [] and server.held == 1
    finally:
        server.release.set()
        for thread in waiting:
            thread.join(10)
    assert replies == [200] * 5
    assert server.count(USER_JWKS) == 2  # one fetch for the five


def test_a_stale_set_is_refreshed_without_holding_a_known_kid(
    server: KeySetServer, clock: FakeClock
) -> None:
    server.json(USER_JWKS, key_set((OLD, "old")))
    app = make_app(
        server.url,
        clock,
        BACKSTAGE_AUTH_JWKS_TIMEOUT=10,
        BACKSTAGE_AUTH_JWKS_WAIT=10,
        BACKSTAGE_AUTH_CACHE_SIZE=0,
    )
    assert get(app, user_token(clock)).status_code == 200
    server.routes[USER_JWKS] = hold(key_set((OLD, "old")))
    clock.now += 601  # older than the ten minutes of jose's cacheMaxAge
    started = time.monotonic()
    assert get(app, user_token(clock)).status_code == 200
    assert time.monotonic() - started < 3
    assert eventually(lambda: server.held == 1)  # the refresh runs in the background
    assert get(app, user_token(clock)).status_code == 200  # and starts no second one
    server.release.set()
    assert eventually(lambda: server.held == 0)
    assert server.count(USER_JWKS) == 2


def test_external_jwks_entries_keep_jose_cooldown(server: KeySetServer, clock: FakeClock) -> None:
    """Backstage's ``jwks`` entries use jose alone: no forced reloads."""
    server.json("/issuer.json", key_set((OLD, "old")))
    app = make_app(
        server.url,
        clock,
        external_access=[{"type": "jwks", "options": {"url": f"{server.url}/issuer.json"}}],
    )

    def external(key: ec.EllipticCurvePrivateKey, kid: str) -> str:
        return jwt.encode(
            {"sub": "ci", "exp": int(clock()) + 600}, key, algorithm="ES256", headers={"kid": kid}
        )

    assert get(app, external(OLD, "old")).status_code == 200
    server.json("/issuer.json", key_set((NEW, "new")))
    assert get(app, external(NEW, "new")).status_code == 401
    assert server.count("/issuer.json") == 1
    clock.now += 30
    assert get(app, external(NEW, "new")).status_code == 200


def test_forced_reloads_refill_at_ten_a_minute() -> None:
    now = [0.0]
    budget = forced_reloads(lambda: now[0])
    taken = 0
    while budget.acquire():
        budget.release()
        taken += 1
    assert taken == FORCED_RELOAD_LIMIT
    now[0] += 6  # one a six seconds
    assert budget.acquire() is True
    budget.release()
    assert budget.acquire() is False
    assert FetchBudget(1, burst=4, clock=lambda: now[0]).burst == 4
    assert FetchBudget(0, burst=4, clock=lambda: now[0]).acquire() is False


def test_a_cache_without_forced_reloads_waits_for_the_cooldown(server: KeySetServer) -> None:
    now = [1000.0]
    server.json("/k.json", key_set((OLD, "old")))
    fetcher = JwksFetcher(timeout=5, wait=5)
    plain = JwksCache(f"{server.url}/k.json", fetcher=fetcher, clock=lambda: now[0])
    forced = JwksCache(
        f"{server.url}/k.json",
        fetcher=fetcher,
        clock=lambda: now[0],
        forced=forced_reloads(lambda: now[0]),
    )
    for cache in (plain, forced):
        assert cache.get_key("old", "ES256") is not None
    server.json("/k.json", key_set((NEW, "new")))
    assert plain.get_key("new", "ES256") is None
    assert forced.get_key("new", "ES256") is not None
    assert server.count("/k.json") == 3


# -- LocalKeySet: this app's keys ------------------------------------------------


def test_local_key_set_answers_a_known_kid_while_a_reload_is_running() -> None:
    keys = key_set((OLD, "old"))["keys"]
    entered = threading.Event()
    release = threading.Event()
    loads = []

    def load() -> list[dict[str, t.Any]]:
        loads.append(1)
        if len(loads) > 1:
            entered.set()
            release.wait(10)
        return keys

    local = LocalKeySet(load, cooldown=0, clock=lambda: 1000.0)
    assert local.get_key("old", "ES256") is not None
    reloading = threading.Thread(target=lambda: local.get_key("unknown", "ES256"))
    reloading.start()
    try:
        assert entered.wait(5)
        started = time.monotonic()
        assert local.get_key("old", "ES256") is not None
        assert time.monotonic() - started < 2
    finally:
        release.set()
        reloading.join(10)
    assert len(loads) == 2


# -- B. clocks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ahead", "settings", "status"),
    [
        (5, {}, 200),
        (60, {}, 200),
        (61, {}, 401),
        (3600, {}, 401),
        (1, {"BACKSTAGE_AUTH_IAT_LEEWAY": 0}, 401),
        (0, {"BACKSTAGE_AUTH_IAT_LEEWAY": 0}, 200),
        (100, {"BACKSTAGE_AUTH_IAT_LEEWAY": 120}, 200),
    ],
)
@pytest.mark.parametrize("kind", ["user", "plugin"])
def test_an_iat_ahead_is_accepted_within_the_iat_leeway(
    server: KeySetServer,
    clock: FakeClock,
    kind: str,
    ahead: int,
    settings: dict[str, t.Any],
    status: int,
) -> None:
    server.json(USER_JWKS, key_set((OLD, "old")))
    server.json(f"/api/scaffolder{JWKS_PATH}", key_set((OLD, "old")))
    app = make_app(server.url, clock, **settings)
    make = user_token if kind == "user" else plugin_token
    reply = get(app, make(clock, iat=clock() + ahead))  # the issuer's clock is ahead
    assert reply.status_code == status, reply.get_data(as_text=True)
    if status == 401:
        expected = "Failed user token verification" if kind == "user" else "plugin token"
        assert expected in reply.get_json()["error"]["message"]


def test_the_iat_leeway_leaves_exp_alone(server: KeySetServer, clock: FakeClock) -> None:
    server.json(USER_JWKS, key_set((OLD, "old")))
    app = make_app(server.url, clock, BACKSTAGE_AUTH_IAT_LEEWAY=600)
    for exp_offset in (0, -1):  # exp <= now is expired, as jose with clockTolerance 0
        expired = jwt.encode(
            {
                "sub": "user:default/jane",
                "iat": int(clock()) - 60,
                "exp": int(clock()) + exp_offset,
            },
            OLD,
            algorithm="ES256",
            headers={"typ": "vnd.backstage.user", "kid": "old"},
        )
        assert get(app, expired).status_code == 401
    assert get(app, user_token(clock, lifetime=1)).status_code == 200


def test_a_day_long_user_token_from_a_clock_ahead(server: KeySetServer, clock: FakeClock) -> None:
    """Backstage issues user tokens for up to 24 h: the cap moves with the iat leeway."""
    server.json(USER_JWKS, key_set((OLD, "old")))
    app = make_app(server.url, clock)
    day = 86_400
    assert get(app, user_token(clock, iat=clock() + 30, lifetime=day)).status_code == 200
    assert get(app, user_token(clock, iat=clock() + 30, lifetime=day + 31)).status_code == 401


@pytest.mark.parametrize("value", [-1, "5", True])
def test_an_invalid_iat_leeway_fails_at_startup(value: t.Any) -> None:
    app = Flask("bad-iat-leeway", static_folder=None)
    app.config.update(BACKSTAGE_AUTH_IAT_LEEWAY=value, BACKSTAGE_CONFIG={})
    with pytest.raises(ConfigError, match="BACKSTAGE_AUTH_IAT_LEEWAY"):
        BackstageAuth(app)


def test_the_iat_leeway_defaults_to_a_minute() -> None:
    app = Flask("default-iat-leeway", static_folder=None)
    app.config["BACKSTAGE_CONFIG"] = {}
    BackstageAuth(app)
    assert app.config["BACKSTAGE_AUTH_IAT_LEEWAY"] == 60
    assert BackstageAuth.state(app).settings.iat_leeway == 60


def test_no_key_set_at_all_is_unavailable(clock: FakeClock) -> None:
    cache = JwksCache("http://127.0.0.1:1/jwks.json", clock=clock, forced=forced_reloads(clock))
    with pytest.raises(JwksUnavailable):
        cache.get_key("any", "ES256")
