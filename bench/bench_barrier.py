"""Throughput of a route behind the credentials barrier vs. the same route unprotected.

Run: ``python bench/bench_barrier.py [--batches 200 --size 200]``. Every figure is a ratio
to a baseline measured in the same run, on the same machine:

* ``ratio`` per token kind: requests/s through ``BackstageAuth`` with a
  repeated token, divided by requests/s of the same view in an app without
  the extension (target: >= 0.93).

A never-seen token's verification is measured by ``bench/bench_verify.py``.
"""

from __future__ import annotations

import argparse
import base64
import gc
import io
import json
import os
import statistics
import sys
import threading
import time
import typing as t

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Blueprint, Flask, jsonify
from werkzeug.serving import make_server

from flask_backstage_auth import BackstageAuth, ServerTokenManager

SECRET = base64.b64encode(os.urandom(32)).decode()
LEGACY_EXTERNAL_SECRET = base64.b64encode(os.urandom(32)).decode()
STATIC_TOKEN = "bench-static-token-0123456789"


def catalog() -> Blueprint:
    bp = Blueprint("catalog", __name__, url_prefix="/api/catalog")

    @bp.get("/entities")
    def entities() -> t.Any:
        return jsonify([{"kind": "Component", "metadata": {"name": "petstore"}}])

    return bp


def jwks_server(public_jwk: dict[str, t.Any]) -> tuple[str, t.Callable[[], None]]:
    body = json.dumps({"keys": [public_jwk]}).encode()

    def app(environ: t.Any, start_response: t.Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return f"http://127.0.0.1:{server.server_port}/jwks.json", stop


def build_apps(jwks_url: str) -> tuple[Flask, Flask]:
    plain = Flask("plain", static_folder=None)
    plain.register_blueprint(catalog())
    protected = Flask("protected", static_folder=None)
    protected.config["BACKSTAGE_CONFIG"] = {
        "backend": {
            "auth": {
                "keys": [{"secret": SECRET}],
                "externalAccess": [
                    {"type": "static", "options": {"token": STATIC_TOKEN, "subject": "bench"}},
                    {
                        "type": "legacy",
                        "options": {"secret": LEGACY_EXTERNAL_SECRET, "subject": "bench-legacy"},
                    },
                    {"type": "jwks", "options": {"url": jwks_url, "issuer": "bench"}},
                ],
            }
        }
    }
    BackstageAuth(protected)
    protected.register_blueprint(catalog())
    return plain, protected


def environ_for(token: str | None) -> dict[str, t.Any]:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api/catalog/entities",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return environ


class Runner:
    """Calls an app's WSGI callable with a prepared request, in batches."""

    def __init__(self, app: Flask, token: str | None) -> None:
        self.app = app
        self.template = environ_for(token)
        self.status: list[str] = []
        self.batch(1)
        if self.status != ["200 OK"]:
            raise SystemExit(f"{app.name}: expected 200, got {self.status}")

    def _start_response(self, status: str, headers: t.Any, exc_info: t.Any = None) -> t.Any:
        self.status.append(status)
        return None

    def batch(self, count: int) -> float:
        """Seconds per request over ``count`` requests."""
        app, template, start_response = self.app, self.template, self._start_response
        self.status.clear()
        start = time.perf_counter()
        for _ in range(count):
            body = app(dict(template), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close:
                close()
        return (time.perf_counter() - start) / count


def throughput_ratio(plain: Flask, protected: Flask, token: str, batches: int, size: int) -> float:
    """Protected throughput over unprotected throughput.

    The two alternate in small batches (A B A B ...) so that drift in the
    machine's speed hits both alike; the ratio of the medians is reported.
    """
    base, guarded = interleaved_medians(
        [Runner(plain, None).batch, Runner(protected, token).batch], batches, size
    )
    return base / guarded


def interleaved_samples(
    runs: t.Sequence[t.Callable[[int], float]], batches: int, size: int
) -> list[list[float]]:
    """Seconds per call of each run in each batch, alternating batches (A B A B ...).

    Drift in the machine's speed then hits every run alike; the garbage
    collector is off while they run.
    """
    times: list[list[float]] = [[] for _ in runs]
    gc.collect()
    gc.disable()
    try:
        for _ in range(batches):
            for run, samples in zip(runs, times):
                samples.append(run(size))
    finally:
        gc.enable()
    return times


def interleaved_medians(
    runs: t.Sequence[t.Callable[[int], float]], batches: int, size: int
) -> list[float]:
    """Median seconds per call of each run, alternating batches (A B A B ...)."""
    return [statistics.median(samples) for samples in interleaved_samples(runs, batches, size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=200, help="alternating batches")
    parser.add_argument("--size", type=int, default=200, help="requests per batch")
    args = parser.parse_args()

    private = ec.generate_private_key(ec.SECP256R1())
    public_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    public_jwk.update({"kid": "bench", "alg": "ES256"})
    url, stop = jwks_server(public_jwk)
    try:
        plain, protected = build_apps(url)
        state = BackstageAuth.state(protected)
        legacy_external = ServerTokenManager.from_config(
            {"backend": {"auth": {"keys": [{"secret": LEGACY_EXTERNAL_SECRET}]}}}
        )
        jwks_token = jwt.encode(
            {"sub": "ci-robot", "iss": "bench", "exp": int(time.time()) + 3600},
            private,
            algorithm="ES256",
            headers={"kid": "bench"},
        )
        kinds = {
            "service token (backend.auth.keys)": state.token_manager.get_token().token,
            "static externalAccess token": STATIC_TOKEN,
            "legacy externalAccess token": legacy_external.get_token().token,
            "jwks externalAccess token": jwks_token,
        }
        print(f"{'token kind':40} {'ratio to unprotected':>22}   (target >= 0.93)")
        for name, token in kinds.items():
            ratio = throughput_ratio(plain, protected, token, args.batches, args.size)
            print(f"{name:40} {ratio:22.3f}")
    finally:
        stop()


if __name__ == "__main__":
    main()
