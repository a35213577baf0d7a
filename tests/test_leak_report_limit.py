"""The leak-report limit: per client address, bounded memory, and the right address behind a proxy."""

from __future__ import annotations

import pytest
from flask import Flask, Request
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_backstage_auth.access_tokens import api
from flask_backstage_auth.access_tokens.ratelimit import LEAK_REPORTS_PER_MINUTE, RateLimit
from tests.access_token_app import Clock, build

REPORT = "/api/access-tokens/service/revoke"
PROXY = "10.0.0.1"  # the reverse proxy every request comes through


def report(app: Flask, remote: str = "192.0.2.1", **headers: str) -> int:
    response = app.test_client().post(
        REPORT, json={"tokens": []}, headers=headers, environ_base={"REMOTE_ADDR": remote}
    )
    return response.status_code


# -- RateLimit ------------------------------------------------------------------


def test_many_keys_do_not_reset_an_active_key() -> None:
    limit = RateLimit(3, per=60, max_keys=10)
    assert [limit.allow("a", 0) for _ in range(4)] == [True, True, True, False]
    for index in range(1000):
        assert limit.allow(f"k{index}", 1)
        assert not limit.allow("a", 1), index  # still refused: never forgotten wholesale
    assert len(limit) == 10
    assert limit.allow("a", 60)  # its first moment is a minute old


def test_eviction_is_one_by_one_and_memory_is_bounded() -> None:
    limit = RateLimit(2, per=60, max_keys=5)
    for index in range(5):
        limit.allow(f"k{index}", index)
    assert len(limit) == 5
    limit.allow("k5", 5)  # one more: the key idle the longest goes, and only it
    assert len(limit) == 5
    assert "k0" not in limit and all(f"k{i}" in limit for i in range(1, 6))
    limit.allow("k1", 6)  # activity moves k1 to the back: k2 is next to go
    limit.allow("k6", 7)
    assert "k2" not in limit and "k1" in limit
    for index in range(10_000):
        limit.allow(f"spray{index}", 8)
    assert len(limit) == 5  # bounded, whatever the number of addresses


def test_expired_keys_are_forgotten_as_they_come_up() -> None:
    limit = RateLimit(2, per=60, max_keys=100)
    for index in range(3):
        limit.allow(f"k{index}", 0)
    assert len(limit) == 3
    limit.allow("late", 61)  # each call forgets at most one expired key
    assert len(limit) == 3 and "k0" not in limit
    limit.allow("late", 62)
    limit.allow("late", 63)
    assert len(limit) == 1 and "late" in limit


@pytest.mark.parametrize(
    "arguments", [(0, 60.0, 10), (1, 0.0, 10), (1, 60.0, 0)], ids=["limit", "per", "keys"]
)
def test_invalid_limits_are_refused(arguments: tuple[int, float, int]) -> None:
    count, per, keys = arguments
    with pytest.raises(ValueError):
        RateLimit(count, per=per, max_keys=keys)


# -- through the HTTP interface ---------------------------------------------------


def test_many_addresses_do_not_reset_anothers_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "LEAK_REPORT_CLIENTS", 20)
    app = build()
    for _ in range(LEAK_REPORTS_PER_MINUTE):
        assert report(app, "192.0.2.1") == 200
    assert report(app, "192.0.2.1") == 429
    for index in range(50):  # more addresses than the limiter remembers
        assert report(app, f"198.51.100.{index}") == 200
        assert report(app, "192.0.2.1") == 429, index


def test_behind_proxyfix_the_forwarded_address_is_counted() -> None:
    clock = Clock()
    app = build(clock)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    client_a = {"X-Forwarded-For": "203.0.113.7"}
    for _ in range(LEAK_REPORTS_PER_MINUTE):
        assert report(app, PROXY, **client_a) == 200
    assert report(app, PROXY, **client_a) == 429
    # Another client through the same proxy has its own count.
    assert report(app, PROXY, **{"X-Forwarded-For": "198.51.100.2"}) == 200
    # Only the proxy's own entry counts: a client cannot prepend addresses to escape.
    assert report(app, PROXY, **{"X-Forwarded-For": "1.2.3.4, 203.0.113.7"}) == 429
    clock.now += 60
    assert report(app, PROXY, **client_a) == 200


def test_without_proxyfix_a_forged_header_changes_nothing() -> None:
    app = build()
    for index in range(LEAK_REPORTS_PER_MINUTE):
        assert report(app, PROXY, **{"X-Forwarded-For": f"203.0.113.{index}"}) == 200
    refused = app.test_client().post(
        REPORT,
        json={"tokens": []},
        headers={"X-Forwarded-For": "203.0.113.250"},
        environ_base={"REMOTE_ADDR": PROXY},
    )
    assert refused.status_code == 429
    assert refused.get_json()["error"]["name"] == "TooManyRequestsError"


def test_a_custom_client_address_source() -> None:
    def real_ip(request: Request) -> str | None:
        return request.headers.get("X-Real-IP")

    app = build(client_address=real_ip)
    for _ in range(LEAK_REPORTS_PER_MINUTE):
        assert report(app, PROXY, **{"X-Real-IP": "203.0.113.7"}) == 200
    assert report(app, PROXY, **{"X-Real-IP": "203.0.113.7"}) == 429
    assert report(app, PROXY, **{"X-Real-IP": "203.0.113.8"}) == 200


def test_a_failing_source_counts_every_request_as_one_unknown_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(request: Request) -> str | None:
        raise RuntimeError("no address here")

    app = build(client_address=broken)
    statuses = [report(app, f"192.0.2.{index}") for index in range(LEAK_REPORTS_PER_MINUTE + 1)]
    assert statuses == [200] * LEAK_REPORTS_PER_MINUTE + [429]  # fail closed, never 500
    assert "client address source failed" in caplog.text
