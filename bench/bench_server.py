"""Throughput under a real server: gunicorn on 127.0.0.1, loaded by ``wrk``.

Run (from the repository root, about 5 minutes with the defaults)::

    pip install -e '.[bench]'           # gunicorn, Flask-JWT-Extended
    apt-get install wrk                 # Debian/Ubuntu; or build github.com/wg/wrk
    python bench/bench_server.py [--rounds 5 --duration 3 --worker-class gthread]

What it does:

* starts gunicorn (2 workers, ``gthread`` with 4 threads by default, i.e.
  keep-alive; ``--worker-class sync`` makes a connection per request) on
  127.0.0.1 at a free port, serving ``server_app.py``: the same view as bare
  Flask, behind the library (real keys: legacy HS256 ``backend.auth.keys``,
  ES256 plugin and user tokens whose JWKS a thread of this script serves on
  127.0.0.1), behind a plain PyJWT ``before_request`` hook, and behind
  Flask-JWT-Extended (if installed);
* pins gunicorn to one CPU and ``wrk -t1 -c4`` to another (``taskset``; off
  with ``--no-pin``), so throughput is one core's worth and the load
  generator takes no server CPU;
* mints, just before each run of a "NEW token" scenario, its own tokens
  (1.5 x what the fastest bare run would take; the script itself runs on
  the load generator's CPU): no token is ever made or sent twice (checked
  when minting, and ``tokens.lua`` counts the sends; a run that ran out of
  tokens is reported invalid). The verified-token cache
  (``BACKSTAGE_AUTH_CACHE_SIZE``, 10,000 per worker) can therefore never
  help; every such request pays a full verification;
* checks first that each protected route answers 200 with its token and 401
  without one or with a token signed by another key;
* warms every route, then runs interleaved rounds: bare, X1, bare, X2, ...,
  bare (the order rotates each round). Each run lasts ``--duration`` seconds;
  its ratio is its req/s over the mean of the two bare runs around it. The
  table shows the median (and range) of those ratios over the rounds (the
  figure the targets are about), the median req/s and latency, and the
  workers' CPU time per request (user + system, from ``/proc``) with the
  same ratio computed from it: bare CPU/request over the scenario's. Other
  load on the machine moves throughput a lot and CPU per request little, so
  the second ratio is the steadier cross-check.

Every run is bounded (``wrk -d``, with a timeout on top); the script stops
gunicorn and its JWKS thread on exit, Ctrl-C included. Without ``wrk`` or
gunicorn it says how to get them and exits (status 0, nothing measured).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

HERE = Path(__file__).resolve().parent
LUA = HERE / "tokens.lua"
HOST = "127.0.0.1"
ROUTE = "/api/catalog/entities"
#: Issued tokens live this long; the whole run must fit in it.
TOKEN_LIFETIME = 3600
#: A bound on the whole run (the load alone), so that it always ends.
MAX_LOAD_SECONDS = 3600
#: Tokens minted per run: the fastest bare run's req/s x duration x this margin.
TOKEN_MARGIN = 1.5

PLUGIN_TYP = "vnd.backstage.plugin"
USER_TYP = "vnd.backstage.user"
ISSUING_PLUGIN = "scaffolder"
TARGET_PLUGIN = "catalog"

MISSING_WRK = """\
SKIPPED: wrk (the load generator) is not installed.
  Debian/Ubuntu: apt-get update && apt-get install -y wrk
  macOS: brew install wrk; elsewhere: build https://github.com/wg/wrk"""
MISSING_GUNICORN = """\
SKIPPED: gunicorn is not installed in this environment.
  pip install -e '.[bench]'   (gunicorn and Flask-JWT-Extended)"""


# -- keys and tokens ---------------------------------------------------------


@dataclasses.dataclass
class Keys:
    """Fresh key material for one benchmark run."""

    backend_secret: str
    user_key: ec.EllipticCurvePrivateKey
    user_kid: str
    plugin_key: ec.EllipticCurvePrivateKey
    plugin_kid: str
    fjwt_secret: str
    other_key: ec.EllipticCurvePrivateKey  # signs nothing the server trusts

    @classmethod
    def generate(cls) -> Keys:
        return cls(
            backend_secret=base64.b64encode(os.urandom(32)).decode(),
            user_key=ec.generate_private_key(ec.SECP256R1()),
            user_kid=str(uuid.uuid4()),
            plugin_key=ec.generate_private_key(ec.SECP256R1()),
            plugin_kid=str(uuid.uuid4()),
            fjwt_secret=os.urandom(32).hex(),
            other_key=ec.generate_private_key(ec.SECP256R1()),
        )

    @property
    def backend_key(self) -> bytes:
        return base64.b64decode(self.backend_secret)

    def jwk(self, which: str) -> dict[str, t.Any]:
        private, kid = (
            (self.user_key, self.user_kid)
            if which == "user"
            else (self.plugin_key, self.plugin_kid)
        )
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
        jwk.update({"kid": kid, "alg": "ES256", "use": "sig"})
        return t.cast(t.Dict[str, t.Any], jwk)


class Minter:
    """Mints the tokens of each kind; every call gives a token never made before."""

    def __init__(
        self, keys: Keys, jwks_base: str, clock: t.Callable[[], float] = time.time
    ) -> None:
        self.keys = keys
        self.issuer = f"{jwks_base}/api/auth"
        self.clock = clock
        self.count = 0
        self._fjwt: t.Callable[[str], str] | None = None

    def _next(self) -> int:
        self.count += 1
        return self.count

    def service(self, key: bytes | None = None) -> str:
        """A legacy service token (``backend.auth.keys``), shaped as Backstage's;
        the ``jti`` makes each one unique."""
        claims = {
            "sub": "backstage-server",
            "exp": int(self.clock()) + TOKEN_LIFETIME,
            "jti": f"{self._next():x}-{uuid.uuid4().hex}",
        }
        return jwt.encode(
            claims, key or self.keys.backend_key, algorithm="HS256", headers={"typ": None}
        )

    def plugin(self, key: ec.EllipticCurvePrivateKey | None = None) -> str:
        """A plugin token from ``scaffolder`` to ``catalog``."""
        iat = int(self.clock()) - self._next() % 300
        return jwt.encode(
            {"sub": ISSUING_PLUGIN, "aud": TARGET_PLUGIN, "iat": iat, "exp": iat + TOKEN_LIFETIME},
            key or self.keys.plugin_key,
            algorithm="ES256",
            headers={"typ": PLUGIN_TYP, "kid": self.keys.plugin_kid},
        )

    def user(self, key: ec.EllipticCurvePrivateKey | None = None) -> str:
        """A user token as the auth backend issues it (one user per token)."""
        n = self._next()
        iat = int(self.clock()) - n % 300
        claims = {
            "iss": self.issuer,
            "sub": f"user:default/user-{n}",
            "aud": "backstage",
            "iat": iat,
            "exp": iat + TOKEN_LIFETIME,
            "uip": base64.urlsafe_b64encode(os.urandom(64)).rstrip(b"=").decode(),
        }
        return jwt.encode(
            claims,
            key or self.keys.user_key,
            algorithm="ES256",
            headers={"typ": USER_TYP, "kid": self.keys.user_kid},
        )

    def fjwt(self) -> str:
        """An access token made by Flask-JWT-Extended itself (unique ``jti``)."""
        if self._fjwt is None:
            from flask import Flask
            from flask_jwt_extended import JWTManager, create_access_token

            app = Flask("fjwt-minter")
            app.config["JWT_SECRET_KEY"] = self.keys.fjwt_secret
            JWTManager(app)
            lifetime = datetime.timedelta(seconds=TOKEN_LIFETIME)

            def mint(identity: str) -> str:
                with app.app_context():
                    return create_access_token(identity=identity, expires_delta=lifetime)

            self._fjwt = mint
        return self._fjwt(f"user-{self._next()}")

    def forged(self, kind: str) -> str:
        """A token of ``kind`` signed by a key the server does not trust."""
        if kind == "service":
            return self.service(os.urandom(32))
        if kind == "plugin":
            return self.plugin(self.keys.other_key)
        if kind == "user":
            return self.user(self.keys.other_key)
        return jwt.encode({"sub": "x", "type": "access"}, os.urandom(32).hex(), algorithm="HS256")

    def mint(self, kind: str) -> str:
        return t.cast(t.Callable[[], str], getattr(self, kind))()


# -- scenarios ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    mount: str
    #: ``none``: no token; ``fresh``: a never-seen token per request; ``repeat``: one token.
    mode: str
    kind: str | None = None
    target: float | None = None
    requires: str | None = None  # a module the scenario needs
    #: What refuses a missing or forged token (Flask-JWT-Extended answers 422 to a bad one).
    refused: tuple[int, ...] = (401,)

    @property
    def path(self) -> str:
        return self.mount + ("/api/catalog/open" if self.name == "library-open" else ROUTE)

    @property
    def protected(self) -> bool:
        return self.mode != "none"


BARE = Scenario("bare", "bare Flask, no auth (the baseline)", "/bare", "none")
SCENARIOS = [
    Scenario("library-open", "library, @unauthenticated route", "/library", "none"),
    Scenario(
        "service-new",
        "library, NEW service token (HS256) each request",
        "/library",
        "fresh",
        "service",
        0.75,
    ),
    Scenario(
        "plugin-new",
        "library, NEW plugin token (ES256) each request",
        "/library",
        "fresh",
        "plugin",
        0.60,
    ),
    Scenario(
        "user-new",
        "library, NEW user token (ES256) each request",
        "/library",
        "fresh",
        "user",
        0.60,
    ),
    Scenario(
        "service-repeat", "library, one service token repeated", "/library", "repeat", "service"
    ),
    Scenario("user-repeat", "library, one user token repeated", "/library", "repeat", "user"),
    Scenario(
        "pyjwt-hs256", "peer: PyJWT hook, NEW HS256 token", "/pyjwt-hs256", "fresh", "service"
    ),
    Scenario("pyjwt-es256", "peer: PyJWT hook, NEW ES256 token", "/pyjwt-es256", "fresh", "user"),
    Scenario(
        "fjwt",
        "peer: Flask-JWT-Extended, NEW token",
        "/fjwt",
        "fresh",
        "fjwt",
        requires="flask_jwt_extended",
        refused=(401, 422),
    ),
]


# -- the servers ---------------------------------------------------------------


class JwksServer:
    """Serves the auth backend's and the issuing plugin's public keys on 127.0.0.1."""

    def __init__(self, keys: Keys) -> None:
        documents = {
            "/api/auth/.well-known/jwks.json": {"keys": [keys.jwk("user")]},
            f"/api/{ISSUING_PLUGIN}/.backstage/auth/v1/jwks.json": {"keys": [keys.jwk("plugin")]},
        }
        bodies = {path: json.dumps(doc).encode() for path, doc in documents.items()}

        def app(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
            body = bodies.get(environ.get("PATH_INFO", ""))
            if body is None:
                start_response("404 Not Found", [("Content-Type", "application/json")])
                return [b"{}"]
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]

        self.server: BaseWSGIServer = make_server(
            HOST, 0, app, threaded=True, request_handler=QuietHandler
        )
        self.url = f"http://{HOST}:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: t.Any, **kwargs: t.Any) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Gunicorn:
    """gunicorn serving ``server_app:app`` on 127.0.0.1; :meth:`stop` ends it."""

    def __init__(
        self,
        args: argparse.Namespace,
        port: int,
        config_path: Path,
        log_path: Path,
        cpu: int | None,
    ) -> None:
        self.port = port
        self.url = f"http://{HOST}:{self.port}"
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            str(args.workers),
            "--worker-class",
            args.worker_class,
            "--bind",
            f"{HOST}:{self.port}",
            "--chdir",
            str(HERE),
            "--log-level",
            "warning",
            "--graceful-timeout",
            "5",
        ]
        if args.worker_class == "gthread":
            command += ["--threads", str(args.threads)]
        command.append("server_app:app")
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        env = {**os.environ, "BENCH_SERVER_CONFIG": str(config_path)}
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        # Its own session: stop() can end the master and its workers together.
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, path: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"gunicorn exited ({self.process.returncode}):\n{self.log()}")
            try:
                status, _ = http_get(self.url + path)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"gunicorn did not answer within {timeout:.0f} s:\n{self.log()}")

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system, all threads) used so far by the workers; Linux only."""
        ticks = 0
        try:
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry.name}/stat", encoding="ascii") as file:
                        fields = file.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue  # gone meanwhile
                # After "pid (comm)": state ppid ... utime (14th) stime (15th) of stat.
                if int(fields[1]) == self.process.pid:
                    ticks += int(fields[11]) + int(fields[12])
        except OSError:
            return None
        return ticks / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self._log.close()


def http_get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# -- wrk -------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    scenario: str
    round: int
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    errors: int
    non_2xx: int
    tokens: int
    tokens_sent: int
    wraps: int
    #: The gunicorn workers' CPU time (user + system) per completed request, µs.
    cpu_us: float | None = None

    @property
    def problem(self) -> str | None:
        if self.non_2xx:
            return f"{self.non_2xx} responses were not 2xx/3xx"
        if self.errors:
            return f"{self.errors} socket errors or timeouts"
        if self.requests == 0:
            return "no request completed"
        return None


def run_wrk(
    args: argparse.Namespace,
    url: str,
    scenario: Scenario,
    round_: int,
    seconds: int,
    token_file: Path | None,
    cpu: int | None,
) -> Run:
    command = [
        "wrk",
        "-t1",
        f"-c{args.connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA),
        url + scenario.path,
        "--",
        scenario.mode,
        str(token_file or ""),
        "1",
    ]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
    match = re.search(r"^BENCH (\{.*\})$", done.stdout, re.M)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(match.group(1))
    return Run(
        scenario=scenario.name,
        round=round_,
        rps=data["requests"] / (data["duration_us"] / 1e6),
        requests=data["requests"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=data["connect_errors"]
        + data["read_errors"]
        + data["write_errors"]
        + data["timeouts"],
        non_2xx=data["non_2xx_3xx"],
        tokens=data["tokens"],
        tokens_sent=data["tokens_sent"],
        wraps=data["wraps"],
    )


# -- the benchmark -------------------------------------------------------------------


class Load:
    """Runs wrk against the server; mints each NEW-token run's tokens just before it."""

    def __init__(
        self,
        args: argparse.Namespace,
        server: Gunicorn,
        minter: Minter,
        work: Path,
        cpu: int | None,
    ) -> None:
        self.args = args
        self.server = server
        self.url = server.url
        self.minter = minter
        self.work = work
        self.cpu = cpu
        self.seen: set[bytes] = set()
        self.fastest_bare = 0.0
        self.minted = 0
        self.minting = 0.0

    def run(self, scenario: Scenario, round_: int, seconds: int) -> Run:
        token_file = None
        if scenario.kind is not None:
            count = 1
            if scenario.mode == "fresh":
                count = math.ceil(self.fastest_bare * TOKEN_MARGIN * seconds) + 500
            token_file = self.work / f"{scenario.name}-{round_}.txt"
            started = time.perf_counter()
            write_tokens(token_file, self.minter, scenario.kind, count, self.seen)
            self.minting += time.perf_counter() - started
            self.minted += count
        try:
            cpu_before = self.server.cpu_seconds()
            result = run_wrk(self.args, self.url, scenario, round_, seconds, token_file, self.cpu)
            cpu_after = self.server.cpu_seconds()
        finally:
            if token_file is not None:
                token_file.unlink()
        if cpu_before is not None and cpu_after is not None and result.requests:
            result.cpu_us = (cpu_after - cpu_before) * 1e6 / result.requests
        if scenario is BARE:
            self.fastest_bare = max(self.fastest_bare, result.rps)
        return result


def pick_cpus(args: argparse.Namespace) -> tuple[int | None, int | None]:
    """(server CPU, load-generator CPU), or (None, None) when not pinning."""
    if args.no_pin or shutil.which("taskset") is None:
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def preflight(server: Gunicorn, minter: Minter, scenarios: list[Scenario]) -> None:
    """Each route answers 200 with its token, 401 without one or with a forged one."""
    for scenario in [BARE, *scenarios]:
        url = server.url + scenario.path
        token = minter.mint(scenario.kind) if scenario.kind else None
        status, body = http_get(url, token)
        if status != 200:
            raise SystemExit(f"{scenario.name}: expected 200, got {status}: {body[:300]!r}")
        if not scenario.protected:
            continue
        for case, bad in (("no token", None), ("forged token", minter.forged(scenario.kind or ""))):
            status, _ = http_get(url, bad)
            if status not in scenario.refused:
                raise SystemExit(
                    f"{scenario.name}: {case} got {status}, expected {scenario.refused}"
                )


def write_tokens(path: Path, minter: Minter, kind: str, count: int, seen: set[bytes]) -> None:
    """Write ``count`` new tokens of ``kind``; none may be one already made."""
    with open(path, "w", encoding="ascii") as file:
        for _ in range(count):
            token = minter.mint(kind)
            digest = hashlib.blake2b(token.encode(), digest_size=16).digest()
            if digest in seen:
                raise SystemExit(
                    f"a {kind} token was minted twice: the NEW-token figures would lie"
                )
            seen.add(digest)
            file.write(token + "\n")


def versions() -> str:
    names = ["flask", "werkzeug", "pyjwt", "cryptography", "gunicorn", "flask-jwt-extended"]
    found = []
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name} {importlib.metadata.version(name)}")
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    wrk_version = re.search(r"wrk (\S+)", wrk)
    return (
        f"Python {platform.python_version()}, "
        + ", ".join(found)
        + (f", wrk {wrk_version.group(1)}" if wrk_version else "")
    )


def _ratio(value: float | None, bare: tuple[float | None, float | None]) -> float | None:
    if value is None or bare[0] is None or bare[1] is None:
        return None
    return value / ((bare[0] + bare[1]) / 2)


def summarize(runs: list[Run], scenarios: list[Scenario]) -> list[dict[str, t.Any]]:
    """Per scenario and round: its figures over the mean of the bare runs on either side.

    ``ratios``: req/s over bare req/s (the throughput kept). ``cpu_ratios``: bare
    CPU per request over its CPU per request (the same figure from the workers'
    CPU time, which other load on the machine disturbs far less).
    """
    rows = []
    for scenario in [BARE, *scenarios]:
        row: dict[str, t.Any] = {
            "scenario": scenario,
            "ratios": [],
            "cpu_ratios": [],
            "runs": [],
            "problems": [],
        }
        for index, run in enumerate(runs):
            if run.scenario != scenario.name:
                continue
            row["runs"].append(run)
            if run.problem:
                row["problems"].append(run.problem)
            if scenario.mode == "fresh" and run.wraps:
                row["problems"].append(
                    f"tokens ran out ({run.tokens} for {run.tokens_sent} requests)"
                )
            if scenario is BARE:
                continue
            before, after = runs[index - 1], runs[index + 1]
            assert before.scenario == after.scenario == BARE.name
            row["ratios"].append(_ratio(run.rps, (before.rps, after.rps)))
            cpu = _ratio(run.cpu_us, (before.cpu_us, after.cpu_us))
            if cpu is not None:
                row["cpu_ratios"].append(1 / cpu)
        rows.append(row)
    return rows


def _median_range(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.median(values):.3f} ({min(values):.2f}–{max(values):.2f})"


def _verdict(ratios: list[float], target: float) -> str:
    return "met" if statistics.median(ratios) >= target else "MISSED"


def print_table(rows: list[dict[str, t.Any]]) -> None:
    head = (
        f"{'scenario':48} {'n':>2}  {'req/s ÷ bare':>20} {'req/s':>5} {'p50/p99 ms':>11}"
        f"  {'CPU µs/req':>10} {'CPU: bare ÷ it':>20}  target"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        scenario: Scenario = row["scenario"]
        runs: list[Run] = row["runs"]
        ratio = _median_range(row["ratios"]) if scenario is not BARE else "1"
        cpu_ratio = _median_range(row["cpu_ratios"]) if scenario is not BARE else "1"
        latency = (
            f"{statistics.median(r.p50_ms for r in runs):.1f}/"
            f"{statistics.median(r.p99_ms for r in runs):.1f}"
        )
        cpus = [r.cpu_us for r in runs if r.cpu_us is not None]
        cpu = f"{statistics.median(cpus):.0f}" if cpus else ""
        target = ""
        if scenario.target is not None and row["ratios"]:
            target = f">= {scenario.target:.2f}: {_verdict(row['ratios'], scenario.target)}"
            if row["cpu_ratios"]:
                target += f" (CPU: {_verdict(row['cpu_ratios'], scenario.target)})"
        rps = statistics.median(r.rps for r in runs)
        print(
            f"{scenario.label:48} {len(runs):>2}  {ratio:>20} {rps:5.0f}"
            f" {latency:>11}  {cpu:>10} {cpu_ratio:>20}  {target}"
        )
        for problem in dict.fromkeys(row["problems"]):
            print(f"    INVALID: {problem}")


def parse_args(argv: t.Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run (3)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up seconds per route (1)")
    parser.add_argument("--worker-class", choices=["gthread", "sync"], default="gthread")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker (4)")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections (4)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and wrk to CPUs")
    parser.add_argument(
        "--only", help="comma-separated scenario names: " + ", ".join(s.name for s in SCENARIOS)
    )
    parser.add_argument("--json", type=Path, help="also write every run to this file")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--rounds must be >= 1, --duration > 0, --warmup >= 0")
    return args


def selected(args: argparse.Namespace) -> list[Scenario]:
    chosen = SCENARIOS
    if args.only:
        names = {name.strip() for name in args.only.split(",")}
        unknown = names - {s.name for s in SCENARIOS}
        if unknown:
            raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
        chosen = [s for s in SCENARIOS if s.name in names]
    usable = []
    for scenario in chosen:
        if scenario.requires and importlib.util.find_spec(scenario.requires) is None:
            print(f"skipping {scenario.name}: {scenario.requires} is not installed ('.[bench]')")
            continue
        usable.append(scenario)
    return usable


def main(argv: t.Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if shutil.which("wrk") is None:
        print(MISSING_WRK, file=sys.stderr)
        return 0
    if importlib.util.find_spec("gunicorn") is None:
        print(MISSING_GUNICORN, file=sys.stderr)
        return 0
    scenarios = selected(args)
    if not scenarios:
        raise SystemExit("no scenario to run")
    runs_per_round = 2 * len(scenarios) + 1
    estimate = (len(scenarios) + 1) * args.warmup + args.rounds * runs_per_round * args.duration
    if estimate > MAX_LOAD_SECONDS:
        raise SystemExit(f"about {estimate:.0f} s of load: keep it under {MAX_LOAD_SECONDS} s")
    server_cpu, load_cpu = pick_cpus(args)
    pinned = server_cpu is not None

    keys = Keys.generate()
    jwks = JwksServer(keys)
    server: Gunicorn | None = None
    work = Path(tempfile.mkdtemp(prefix="bench-server-"))

    def interrupted(signum: int, frame: t.Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        config = work / "config.json"
        port = free_port()
        config.write_text(
            json.dumps(
                {
                    "base_url": f"http://{HOST}:{port}",
                    "backend_secret": keys.backend_secret,
                    "jwks_base": jwks.url,
                    "user_public_jwk": keys.jwk("user"),
                    "fjwt_secret": keys.fjwt_secret,
                }
            )
        )
        print(versions())
        print(
            f"gunicorn --workers {args.workers} --worker-class {args.worker_class}"
            + (f" --threads {args.threads}" if args.worker_class == "gthread" else "")
            + f"; wrk -t1 -c{args.connections}; "
            + (f"server on CPU {server_cpu}, wrk on CPU {load_cpu}" if pinned else "not pinned")
            + f"; {args.rounds} rounds x {args.duration} s (load: about {estimate:.0f} s);"
            + " load average"
            f" {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        server = Gunicorn(args, port, config, work / "gunicorn.log", server_cpu)
        server.wait_ready(BARE.path)
        if load_cpu is not None:
            os.sched_setaffinity(0, {load_cpu})  # minting stays off the server's CPU
        minter = Minter(keys, jwks.url)
        preflight(server, minter, scenarios)

        load = Load(args, server, minter, work, load_cpu)
        # The fastest bare run so far sizes every token file (protected runs are slower).
        for _ in range(3):
            load.run(BARE, -1, 1)
        for scenario in [BARE, *scenarios] if args.warmup else []:
            load.run(scenario, -1, args.warmup)

        runs: list[Run] = []
        for round_ in range(args.rounds):
            offset = round_ % len(scenarios)
            order = scenarios[offset:] + scenarios[:offset]
            runs.append(load.run(BARE, round_, args.duration))
            for scenario in order:
                runs.append(load.run(scenario, round_, args.duration))
                runs.append(load.run(BARE, round_, args.duration))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        print(
            f"minted {load.minted:,} distinct tokens, in {load.minting:.0f} s between runs"
            f" (the fastest bare run: {load.fastest_bare:.0f} req/s)"
        )

        print()
        rows = summarize(runs, scenarios)
        print_table(rows)
        print(
            "\nEach ratio is taken against the mean of the bare runs just before and after it,"
            " per round; median (range) over rounds. NEW = a never-seen token on every"
            " request (none sent twice). CPU = the gunicorn workers' user + system time"
            " per request."
            f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "args": {k: str(v) for k, v in vars(args).items()},
                        "versions": versions(),
                        "runs": [dataclasses.asdict(r) for r in runs],
                    },
                    indent=1,
                )
            )
        invalid = any(row["problems"] for row in rows)
        return 1 if invalid else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            server.stop()
        jwks.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
