"""A never-seen token through the real verifier vs. a bare PyJWT decode of the same token.

Run: ``python bench/bench_verify.py [--batches 40 --size 100]``. Every token is
verified once: the call is the one the barrier makes,
``AuthService.authenticate(token)`` (the app's ``TokenVerifier`` behind it,
with a cache miss every time), and the baseline is ``jwt.decode`` of the same
token with its key and pinned algorithm. The two alternate in small batches
(A B A B ...) so that drift in the machine's speed hits both alike; the
figure is the median of the per-batch ratios (with their range).

* ``HS256 service token``: a legacy token on ``backend.auth.keys``, after the
  ``static``, ``legacy`` and ``jwks`` ``externalAccess`` entries that come
  first (target: <= 1.5).
* ``ES256 plugin token``: a plugin-to-plugin token of a plugin of this app
  (target: <= 1.3).
* ``ES256 user token``: a user token of the app's ``AuthBackend`` (target: <= 1.3).
* ``verify_legacy_token alone``: the figure this project's bench used to
  report: the legacy check alone, without the verifier (not a target).
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import time
import typing as t
import uuid
from pathlib import Path

import jwt
from flask import Flask

sys.path.insert(0, str(Path(__file__).parent))
from bench_barrier import catalog, interleaved_samples  # noqa: E402

from flask_backstage_auth import BackstageAuth  # noqa: E402
from flask_backstage_auth.auth_backend.extension import AuthBackend  # noqa: E402
from flask_backstage_auth.legacy.secrets import decode_backstage_secret  # noqa: E402
from flask_backstage_auth.legacy.tokens import verify_legacy_token  # noqa: E402

SECRET = base64.b64encode(os.urandom(32)).decode()
PLUGIN = "catalog"
USER = "user:default/bench"


def build_app() -> Flask:
    """An app as a deployment has it: externalAccess entries, legacy keys, an auth backend."""
    app = Flask("protected", static_folder=None)
    app.config["BACKSTAGE_CONFIG"] = {
        "backend": {
            "auth": {
                "keys": [{"secret": SECRET}],
                "externalAccess": [
                    {
                        "type": "static",
                        "options": {"token": "bench-static-token-0123456789", "subject": "s"},
                    },
                    {
                        "type": "legacy",
                        "options": {
                            "secret": base64.b64encode(os.urandom(32)).decode(),
                            "subject": "bench-legacy",
                        },
                    },
                    # Never fetched: no token of this bench is one it would verify.
                    {"type": "jwks", "options": {"url": "http://127.0.0.1:9/jwks.json"}},
                ],
            }
        }
    }
    BackstageAuth(app)
    AuthBackend(app)
    app.register_blueprint(catalog())
    return app


class Kind:
    """One token kind: fresh tokens, and how each side verifies one."""

    def __init__(
        self,
        name: str,
        tokens: list[str],
        ours: t.Callable[[str], object],
        bare: t.Callable[[str], object],
    ) -> None:
        self.name = name
        self.tokens = tokens
        self.ours = ours
        self.bare = bare
        self._ours_at = 0
        self._bare_at = 0

    def _batch(self, verify: t.Callable[[str], object], start: int, count: int) -> float:
        batch = self.tokens[start : start + count]
        if len(batch) < count:
            raise SystemExit(f"{self.name}: ran out of fresh tokens")
        began = time.perf_counter()
        for token in batch:
            verify(token)
        return (time.perf_counter() - began) / count

    def run_ours(self, count: int) -> float:
        """Seconds per token through the verifier; every token is new to it."""
        seconds = self._batch(self.ours, self._ours_at, count)
        self._ours_at += count
        return seconds

    def run_bare(self, count: int) -> float:
        """Seconds per token of ``jwt.decode``, on the batch the verifier just had."""
        seconds = self._batch(self.bare, self._bare_at, count)
        self._bare_at += count
        return seconds


def kinds(app: Flask, count: int) -> list[Kind]:
    state = BackstageAuth.state(app)
    auth = state.auth(PLUGIN)
    key = decode_backstage_secret(SECRET)
    exp = int(time.time()) + 3000
    # HS256 tokens are deterministic: a unique jti makes each one new (both sides accept it).
    service = [
        jwt.encode(
            {"sub": "backstage-server", "exp": exp, "jti": uuid.uuid4().hex},
            key,
            algorithm="HS256",
            headers={"typ": None},
        )
        for _ in range(count)
    ]
    plugin = [
        state.plugin_tokens.issue_token(plugin_id=PLUGIN, target_plugin_id=PLUGIN)
        for _ in range(count)
    ]
    issuer = AuthBackend.state(app).issuer
    user = [issuer.issue_token(USER, [USER]).token for _ in range(count)]
    (plugin_key,) = [jwt.PyJWK(k).key for k in state.key_source.list_public_keys()]
    (user_key,) = [jwt.PyJWK(k).key for k in issuer.key_source.list_public_keys()]

    def authenticate(token: str) -> object:
        return auth.authenticate(token)

    def legacy_alone(token: str) -> object:
        return verify_legacy_token(token, [key], now=time.time())

    def bare_hs256(token: str) -> object:
        return jwt.decode(token, key, algorithms=["HS256"])

    return [
        Kind("HS256 service token", service, authenticate, bare_hs256),
        Kind(
            "ES256 plugin token",
            plugin,
            authenticate,
            lambda token: jwt.decode(token, plugin_key, algorithms=["ES256"], audience=PLUGIN),
        ),
        Kind(
            "ES256 user token",
            user,
            authenticate,
            lambda token: jwt.decode(token, user_key, algorithms=["ES256"], audience="backstage"),
        ),
        Kind("verify_legacy_token alone (old figure)", list(service), legacy_alone, bare_hs256),
    ]


TARGETS = {"HS256 service token": 1.5, "ES256 plugin token": 1.3, "ES256 user token": 1.3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=40, help="alternating batches")
    parser.add_argument("--size", type=int, default=100, help="tokens per batch")
    args = parser.parse_args()

    app = build_app()
    all_kinds = kinds(app, (args.batches + 1) * args.size)
    for kind in all_kinds:  # warm up: key sets loaded, code paths run once
        kind.run_ours(args.size)
        kind.run_bare(args.size)
    runs = [run for kind in all_kinds for run in (kind.run_ours, kind.run_bare)]
    samples = interleaved_samples(runs, args.batches, args.size)

    print(f"{'never-seen token, verifier / jwt.decode':40} {'median':>8} {'range':>15}   target")
    for index, kind in enumerate(all_kinds):
        ours, bare = samples[2 * index], samples[2 * index + 1]
        ratios = [a / b for a, b in zip(ours, bare)]
        target = TARGETS.get(kind.name)
        print(
            f"{kind.name:40} {statistics.median(ratios):8.2f} "
            f"{min(ratios):7.2f}-{max(ratios):<7.2f}   "
            + (f"<= {target}" if target else "(not a target)")
            + f"   [{statistics.median(ours) * 1e6:.1f} vs {statistics.median(bare) * 1e6:.1f} us]"
        )


if __name__ == "__main__":
    main()
