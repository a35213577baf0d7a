"""Memory of one worker serving the protected route, against bare Flask.

Run: ``python bench/bench_memory.py [--requests 2000 --rounds 3]``. Each
scenario runs in a fresh interpreter that builds its app, serves the route
``--requests`` times through the WSGI callable (as a worker does), then reads
its resident set size (``VmRSS``) from ``/proc/self/status`` (Linux only):

* ``bare Flask``: the same blueprint, no extension;
* ``BackstageAuth, no database``: the route behind the barrier, called with a
  service token (target: at most bare Flask + 15 MiB);
* ``BackstageAuth + database``: the same with ``BACKSTAGE_AUTH_DATABASE_URI``
  (SQLite in memory), for comparison.

The median of ``--rounds`` interpreters is reported, with the modules each
imported.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import typing as t

SCENARIOS = {
    "bare": "bare Flask",
    "protected": "BackstageAuth, no database",
    "database": "BackstageAuth + database",
}
TARGET_MIB = 15.0


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS in /proc/self/status (Linux only)")


def _environ(token: str | None) -> dict[str, t.Any]:
    # bench_barrier.environ_for's twin, on purpose: importing that module would
    # import PyJWT, cryptography and werkzeug.serving into the bare scenario.
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


def child(scenario: str, requests: int) -> None:
    """Build the scenario's app, serve it, print what it cost as JSON."""
    import logging

    logging.disable(logging.WARNING)  # the in-memory key store's notice
    from flask import Blueprint, Flask, jsonify

    modules_before = len(sys.modules)
    app = Flask("memory", static_folder=None)
    token = None
    if scenario != "bare":
        from flask_backstage_auth import BackstageAuth
        from flask_backstage_auth.legacy.secrets import generate_secret

        app.config["BACKSTAGE_CONFIG"] = {
            "backend": {"auth": {"keys": [{"secret": generate_secret(32)}]}}
        }
        if scenario == "database":
            app.config["BACKSTAGE_AUTH_DATABASE_URI"] = "sqlite://"
        BackstageAuth(app)
        token = BackstageAuth.state(app).token_manager.get_token().token
    catalog = Blueprint("catalog", __name__, url_prefix="/api/catalog")

    @catalog.get("/entities")
    def entities() -> t.Any:
        return jsonify([{"kind": "Component", "metadata": {"name": "petstore"}}])

    app.register_blueprint(catalog)
    template = _environ(token)
    statuses: set[str] = set()

    def start_response(status: str, headers: t.Any, exc_info: t.Any = None) -> None:
        statuses.add(status)

    for _ in range(requests):
        body = app(dict(template), start_response)
        for _chunk in body:
            pass
        getattr(body, "close", lambda: None)()
    if statuses != {"200 OK"}:
        raise SystemExit(f"{scenario}: expected 200, got {statuses}")
    heavy = sorted(
        {m.split(".")[0] for m in sys.modules}
        & {"sqlalchemy", "flask_sqlalchemy", "alembic", "requests"}
    )
    print(
        json.dumps(
            {"rss_kib": _rss_kib(), "modules": len(sys.modules) - modules_before, "heavy": heavy}
        )
    )


def measure(scenario: str, requests: int) -> dict[str, t.Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", scenario, "--requests", str(requests)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{scenario} failed:\n{result.stderr}")
    return t.cast(t.Dict[str, t.Any], json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="requests per interpreter")
    parser.add_argument("--rounds", type=int, default=3, help="interpreters per scenario")
    parser.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.requests)
        return
    runs: dict[str, list[dict[str, t.Any]]] = {name: [] for name in SCENARIOS}
    for _ in range(args.rounds):  # interleaved, so drift hits every scenario alike
        for name in SCENARIOS:
            runs[name].append(measure(name, args.requests))
    rss = {
        name: statistics.median(r["rss_kib"] for r in found) / 1024 for name, found in runs.items()
    }
    print(f"{'scenario':30} {'RSS MiB':>9} {'vs bare':>9} {'modules':>8}  heavy imports")
    for name, label in SCENARIOS.items():
        last = runs[name][-1]
        delta = rss[name] - rss["bare"]
        print(
            f"{label:30} {rss[name]:9.1f} {delta:+9.1f} {last['modules']:8d}"
            f"  {', '.join(last['heavy']) or '-'}"
        )
    print(f"\ntarget: BackstageAuth, no database <= bare Flask + {TARGET_MIB:.0f} MiB")


if __name__ == "__main__":
    main()
