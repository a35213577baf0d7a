"""The load benchmark measures what it says: real keys, protected routes, new tokens.

``bench/bench_server.py`` needs gunicorn and wrk; these tests check its app and
its bookkeeping in-process, without either.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import typing as t
from pathlib import Path

import pytest
from werkzeug.test import Client

BENCH = Path(__file__).parents[1] / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> t.Iterator[types.ModuleType]:
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.delenv("BENCH_SERVER_CONFIG", raising=False)
    import bench_server

    yield bench_server
    for name in ("bench_server", "server_app"):
        sys.modules.pop(name, None)


@pytest.fixture
def served(bench: types.ModuleType) -> t.Iterator[tuple[Client, t.Any]]:
    """The benchmark's app (production mode) with its JWKS server, and a minter."""
    import server_app

    keys = bench.Keys.generate()
    jwks = bench.JwksServer(keys)
    try:
        app = server_app.create_app(
            {
                "base_url": "http://127.0.0.1:1",
                "backend_secret": keys.backend_secret,
                "jwks_base": jwks.url,
                "user_public_jwk": keys.jwk("user"),
                "fjwt_secret": keys.fjwt_secret,
            }
        )
        yield Client(app), bench.Minter(keys, jwks.url)
    finally:
        jwks.stop()


def scenarios(bench: types.ModuleType) -> list[t.Any]:
    usable = []
    for scenario in bench.SCENARIOS:
        if scenario.requires and importlib.util.find_spec(scenario.requires) is None:
            continue
        usable.append(scenario)
    return usable


def test_every_route_accepts_its_token_and_refuses_none_or_a_forged_one(
    bench: types.ModuleType, served: tuple[Client, t.Any]
) -> None:
    client, minter = served
    assert client.get(bench.BARE.path).status_code == 200
    for scenario in scenarios(bench):
        if not scenario.protected:
            assert client.get(scenario.path).status_code == 200, scenario.name
            continue
        token = minter.mint(scenario.kind)
        ok = client.get(scenario.path, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200, (scenario.name, ok.get_data(as_text=True))
        assert client.get(scenario.path).status_code in scenario.refused, scenario.name
        forged = minter.forged(scenario.kind)
        refused = client.get(scenario.path, headers={"Authorization": f"Bearer {forged}"})
        assert refused.status_code in scenario.refused, scenario.name
        # Another method on the same route is not a way around the guard.
        assert client.post(scenario.path).status_code in (*scenario.refused, 405), scenario.name


def test_the_library_route_refuses_a_token_of_one_kind_signed_by_another_kinds_key(
    bench: types.ModuleType, served: tuple[Client, t.Any]
) -> None:
    client, minter = served
    path = "/library" + bench.ROUTE
    # A user token signed with the plugin key, and a plugin token with the user key.
    for token in (minter.user(minter.keys.plugin_key), minter.plugin(minter.keys.user_key)):
        assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_minted_tokens_never_repeat(bench: types.ModuleType, tmp_path: Path) -> None:
    keys = bench.Keys.generate()
    minter = bench.Minter(keys, "http://127.0.0.1:1")
    seen: set[bytes] = set()
    for kind in ("service", "plugin", "user"):
        path = tmp_path / f"{kind}.txt"
        bench.write_tokens(path, minter, kind, 300, seen)
        lines = path.read_text().splitlines()
        assert len(lines) == len(set(lines)) == 300
    assert len(seen) == 900


def test_minting_a_token_twice_stops_the_benchmark(
    bench: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    minter = bench.Minter(bench.Keys.generate(), "http://127.0.0.1:1")
    monkeypatch.setattr(minter, "mint", lambda kind: "a.b.c")
    with pytest.raises(SystemExit, match="minted twice"):
        bench.write_tokens(tmp_path / "t.txt", minter, "service", 2, set())


def run(bench: types.ModuleType, scenario: str, rps: float, **extra: t.Any) -> t.Any:
    fields = dict(
        round=0,
        requests=int(rps),
        p50_ms=1.0,
        p99_ms=2.0,
        errors=0,
        non_2xx=0,
        tokens=100_000,
        tokens_sent=int(rps),
        wraps=0,
    )
    fields.update(extra)
    return bench.Run(scenario=scenario, rps=rps, **fields)


def test_each_ratio_is_taken_against_the_bare_runs_on_either_side(
    bench: types.ModuleType,
) -> None:
    service = next(s for s in bench.SCENARIOS if s.name == "service-new")
    runs = [
        run(bench, "bare", 1000, cpu_us=300.0),
        run(bench, "service-new", 600, cpu_us=800.0),
        run(bench, "bare", 1400, cpu_us=500.0),
    ]
    rows = bench.summarize(runs, [service])
    assert rows[1]["ratios"] == [pytest.approx(0.5)]
    assert rows[1]["cpu_ratios"] == [pytest.approx(0.5)]  # 400 µs bare vs 800 µs
    assert rows[1]["problems"] == []
    assert [r.rps for r in rows[0]["runs"]] == [1000, 1400]


def test_a_run_that_reused_tokens_or_saw_errors_is_invalid(bench: types.ModuleType) -> None:
    service = next(s for s in bench.SCENARIOS if s.name == "service-new")
    for bad in ({"wraps": 1}, {"non_2xx": 3}, {"errors": 1}):
        runs = [run(bench, "bare", 1000), run(bench, "service-new", 600, **bad)]
        runs.append(run(bench, "bare", 1000))
        assert bench.summarize(runs, [service])[1]["problems"], bad
