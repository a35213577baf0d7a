"""Access tokens: request overhead, and lookups as the token table grows.

Run: ``python bench/bench_access_tokens.py [--batches 200 --size 200 --tokens-large 1000000]``.
Every figure is a ratio of two measurements made in the same run, alternating
in small batches (A B A B ...) so that drift in the machine's speed hits both
alike; the ratio of the medians is reported.

* ``request``: requests/s of a route authenticated by an access token (after
  its first use: the verification is cached for ``revocationCheckSeconds``,
  then looked up again), divided by requests/s of the same view in an app
  without the extension (target: >= 0.85).
* ``reference``: the same with a static ``externalAccess`` token, the barrier's
  own cost measured in the same run (not a target).
* ``first use``: the time of the first request with a never-used token (its
  lookup, and its ``last_used_at`` written), divided by the time of a request
  whose token must be looked up again but whose last use is already recorded
  (the lookup alone), on a SQLite file, with the verification cache off
  (target: <= 1.1: the write is not on the request's path).
* ``lookup``: the median time of ``find_by_digest`` (the one query a new
  token costs) with ``--tokens-large`` tokens stored, divided by the same with
  ``--tokens-small`` stored, on SQLite files (target: <= 1.5).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sqlite3
import sys
import tempfile
import time
import typing as t
from pathlib import Path

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).parent))
from bench_barrier import Runner, catalog, environ_for, interleaved_medians  # noqa: E402

from flask_backstage_auth import BackstageAuth  # noqa: E402
from flask_backstage_auth.access_tokens.extension import DAY, AccessTokens  # noqa: E402
from flask_backstage_auth.access_tokens.format import generate_token  # noqa: E402
from flask_backstage_auth.access_tokens.store import (  # noqa: E402
    TOKENS,
    SqlAccessTokenStore,
    to_datetime,
)
from flask_backstage_auth.db.cli import upgrade_database  # noqa: E402
from flask_backstage_auth.db.storage import create_tables  # noqa: E402

# How SQLAlchemy stores a DateTime on SQLite (all rows alike: it is not what we measure).
_SQLITE_DATETIME = "2026-01-01 00:00:00.000000"
_FAR_FUTURE = "2099-01-01 00:00:00.000000"
#: A reference in the same run: the barrier's own cost with a static externalAccess token.
STATIC = {"token": "bench-static-token-0123456789", "subject": "bench"}


# -- (a) a request authenticated by an access token ---------------------------


def build_apps(directory: Path) -> tuple[Flask, Flask, str, t.Callable[[], None]]:
    # The baseline has the same Flask-SQLAlchemy setup (its teardown runs on every
    # request of both apps): only BackstageAuth and AccessTokens differ.
    plain = Flask("plain", static_folder=None)
    plain.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{directory / 'plain.db'}"
    plain_db = SQLAlchemy()
    plain_db.init_app(plain)
    plain.register_blueprint(catalog())

    protected = Flask("protected", static_folder=None)
    protected.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{directory / 'app.db'}"
    protected.config["BACKSTAGE_CONFIG"] = {
        "backend": {
            "baseUrl": "http://127.0.0.1:7007",
            "auth": {"externalAccess": [{"type": "static", "options": STATIC}]},
        }
    }
    db = SQLAlchemy()
    db.init_app(protected)
    BackstageAuth(protected, db=db)
    with protected.app_context():
        upgrade_database(db.engine)
    AccessTokens(protected, register_blueprint=False)
    protected.register_blueprint(catalog())

    state = AccessTokens.state(protected)
    token = generate_token("service")
    now = time.time()
    with protected.app_context():
        state.store.create(
            kind="service",
            name="bench",
            description="",
            digest=token.digest,
            token_prefix=token.display_prefix,
            owner_ref="group:default/bench",
            scopes=["catalog:read"],
            created_by="bench",
            expires_at=now + DAY,
            now=now,
        )

    def close() -> None:
        AccessTokens.state(protected).usage.close()  # written before the database goes
        for app, database in ((plain, plain_db), (protected, db)):
            with app.app_context():
                for engine in database.engines.values():
                    engine.dispose()

    return plain, protected, token.value, close


def request_ratios(batches: int, size: int) -> tuple[float, float]:
    """(access token, static externalAccess token): throughput over the baseline's."""
    with tempfile.TemporaryDirectory() as directory:
        plain, protected, token, close = build_apps(Path(directory))
        try:
            base = Runner(plain, None)
            guarded = Runner(protected, token)  # the token's first use happens here
            static = Runner(protected, STATIC["token"])
            base_median, guarded_median, static_median = interleaved_medians(
                [base.batch, guarded.batch, static.batch], batches, size
            )
            if set(guarded.status) != {"200 OK"}:
                raise SystemExit(f"protected app answered {set(guarded.status)}")
            return (
                base_median / guarded_median,
                base_median / static_median,
            )
        finally:
            close()


# -- (b) the first request with a token ---------------------------------------


class Requests:
    """Requests that each present the next token of ``tokens`` (cycling), in batches."""

    def __init__(self, app: Flask, tokens: t.Sequence[str]) -> None:
        self.app = app
        self.environs = [environ_for(token) for token in tokens]
        self.position = 0
        self.status: set[str] = set()

    def _start_response(self, status: str, headers: t.Any, exc_info: t.Any = None) -> t.Any:
        self.status.add(status)
        return None

    def batch(self, count: int) -> float:
        """Seconds per request over ``count`` requests."""
        app, environs, start_response = self.app, self.environs, self._start_response
        start = time.perf_counter()
        for _ in range(count):
            environ = environs[self.position % len(environs)]
            self.position += 1
            body = app(dict(environ), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close:
                close()
        return (time.perf_counter() - start) / count


def first_use_ratio(batches: int, size: int) -> float:
    """First request with a new token over a re-verified token's (both look it up)."""
    with tempfile.TemporaryDirectory() as directory:
        app = Flask("first-use", static_folder=None)
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{Path(directory) / 'app.db'}"
        # A verification is cached for a microsecond: every request looks its token up.
        app.config["BACKSTAGE_CONFIG"] = {
            "backend": {"baseUrl": "http://127.0.0.1:7007"},
            "accessTokens": {"service": {"revocationCheckSeconds": 0.000001}},
        }
        db = SQLAlchemy()
        db.init_app(app)
        BackstageAuth(app, db=db)
        with app.app_context():
            upgrade_database(db.engine)
        AccessTokens(app, register_blueprint=False)
        app.register_blueprint(catalog())
        fresh = [generate_token("service") for _ in range(batches * size)]
        known = [generate_token("service") for _ in range(20)]
        now = time.time()
        with app.app_context(), db.engine.begin() as connection:
            connection.execute(
                TOKENS.insert(),
                [
                    {
                        "id": f"{index:036d}",
                        "kind": "service",
                        "name": f"t{index}",
                        "description": "",
                        "token_hash": token.digest,
                        "token_prefix": token.display_prefix,
                        "owner_ref": "group:default/bench",
                        "scopes": '["catalog:read"]',
                        "created_by": "bench",
                        "created_at": to_datetime(now),
                        "expires_at": to_datetime(now + DAY),
                    }
                    for index, token in enumerate([*fresh, *known])
                ],
            )
        try:
            first = Requests(app, [token.value for token in fresh])
            again = Requests(app, [token.value for token in known])
            again.batch(len(known))  # their first use: recorded before we measure
            AccessTokens.state(app).usage.flush()
            first_median, again_median = interleaved_medians(
                [first.batch, again.batch], batches, size
            )
            if first.status != {"200 OK"} or again.status != {"200 OK"}:
                raise SystemExit(f"first-use app answered {first.status | again.status}")
            return first_median / again_median
        finally:
            AccessTokens.state(app).usage.close()  # written before the database goes
            with app.app_context():
                for engine in db.engines.values():
                    engine.dispose()


# -- (c) the lookup by digest, small vs large table ---------------------------


def _digest(i: int) -> str:
    return hashlib.sha256(b"bench-token-%d" % i).hexdigest()


def _prefix(digest: str) -> str:
    return "bsat_" + digest[:7]


def build_store(path: Path, count: int, *, analyze: bool = False) -> tuple[Engine, float]:
    """A SQLite file holding ``count`` minimal token rows; the build time in seconds."""
    engine = sa.create_engine(f"sqlite:///{path}")
    create_tables(engine)
    start = time.perf_counter()
    raw = engine.raw_connection()
    try:
        sqlite = t.cast(sqlite3.Connection, raw.driver_connection)
        cursor = sqlite.cursor()
        cursor.execute("PRAGMA synchronous = OFF")
        cursor.execute("PRAGMA journal_mode = MEMORY")
        rows = (
            (
                f"{i:036d}",
                "service",
                f"t{i}",
                "",
                digest,
                _prefix(digest),
                "group:default/bench",
                '["catalog:read"]',
                "bench",
                _SQLITE_DATETIME,
                _FAR_FUTURE,
            )
            for i, digest in ((i, _digest(i)) for i in range(count))
        )
        cursor.executemany(
            f"INSERT INTO {TOKENS.name} (id, kind, name, description, token_hash,"
            " token_prefix, owner_ref, scopes, created_by, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        raw.commit()
        if analyze:  # what PRAGMA optimize may do: see --analyze
            cursor.execute("ANALYZE")
            raw.commit()
        cursor.close()
    finally:
        raw.close()
    return engine, time.perf_counter() - start


class Lookups:
    """``find_by_digest`` of tokens present in the table, in batches."""

    def __init__(self, engine: Engine, count: int, sample: int) -> None:
        self.store = SqlAccessTokenStore(engine)
        chosen = random.Random(count).sample(range(count), min(sample, count))
        self.keys = [(_digest(i), _prefix(_digest(i))) for i in chosen]
        self.position = 0
        for digest, prefix in self.keys[:5]:  # warm up, and check we find them
            match, _ = self.store.find_by_digest(digest, prefix)
            if match is None:
                raise SystemExit("a stored token was not found")

    def batch(self, size: int) -> float:
        """Seconds per lookup over ``size`` lookups."""
        find, keys = self.store.find_by_digest, self.keys
        start = time.perf_counter()
        for _ in range(size):
            digest, prefix = keys[self.position % len(keys)]
            self.position += 1
            find(digest, prefix)
        return (time.perf_counter() - start) / size


def lookup_ratio(
    small: int, large: int, batches: int, size: int, *, analyze: bool = False
) -> tuple[float, float, float]:
    """(large/small median ratio, small median µs, large build seconds)."""
    with tempfile.TemporaryDirectory() as directory:
        small_engine, _ = build_store(Path(directory) / "small.db", small, analyze=analyze)
        large_engine, build_seconds = build_store(
            Path(directory) / "large.db", large, analyze=analyze
        )
        try:
            a, b = Lookups(small_engine, small, 1000), Lookups(large_engine, large, 1000)
            small_median, large_median = interleaved_medians([a.batch, b.batch], batches, size)
            ratio = large_median / small_median
            return ratio, small_median * 1e6, build_seconds
        finally:
            small_engine.dispose()
            large_engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=200, help="alternating batches")
    parser.add_argument("--size", type=int, default=200, help="requests per batch")
    parser.add_argument("--tokens-small", type=int, default=1_000)
    parser.add_argument("--tokens-large", type=int, default=1_000_000)
    parser.add_argument("--first-use-batches", type=int, default=40)
    parser.add_argument(
        "--first-use-size", type=int, default=25, help="requests per batch (one new token each)"
    )
    parser.add_argument("--lookup-batches", type=int, default=100)
    parser.add_argument("--lookup-size", type=int, default=100, help="lookups per batch")
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="run ANALYZE after the build (SQLite then plans the OR lookup as a full scan)",
    )
    args = parser.parse_args()

    ratio, static = request_ratios(args.batches, args.size)
    print(f"{'measure':58} {'ratio':>8}   target")
    print(f"{'request with an access token / without the extension':58} {ratio:8.3f}   >= 0.85")
    print(f"{'  reference: static externalAccess token / without':58} {static:8.3f}")
    first_use = first_use_ratio(args.first_use_batches, args.first_use_size)
    print(f"{'first request with a token / a re-verified token':58} {first_use:8.3f}   <= 1.10")
    lookups, small_us, build = lookup_ratio(
        args.tokens_small,
        args.tokens_large,
        args.lookup_batches,
        args.lookup_size,
        analyze=args.analyze,
    )
    label = f"find_by_digest, {args.tokens_large:,} / {args.tokens_small:,} tokens"
    if args.analyze:
        label += " (ANALYZE)"
    print(f"{label:58} {lookups:8.3f}   <= 1.50")
    print()
    print(
        f"(lookup median with {args.tokens_small:,} tokens: {small_us:.0f} µs;"
        f" {args.tokens_large:,} rows inserted in {build:.1f} s)"
    )


if __name__ == "__main__":
    main()
