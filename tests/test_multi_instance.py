"""Three processes of the example backend on one database, over HTTP.

Each instance is ``python -m example_app`` on a port of its own, with its own
signing keys; they share the database (a SQLite file, or a PostgreSQL
schema). A user token signed by any of them is accepted by all, a search on
one indexes the catalog of another on behalf of a user signed in on a third,
and after the key table is emptied the instances sign with keys they
publish again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import typing as t
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
import requests
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from flask_backstage_auth.db.storage import signing_keys_table
from tests.conftest import _pg_url_in, free_port

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "example_app" / "app-config.yaml"
GUEST = "user:development/guest"
TIMEOUT = 10


@dataclass
class Instance:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _start(name: str, tmp_path: Path, port: int, database: str, extra: str = "") -> Instance:
    config = tmp_path / f"app-config.{name}.yaml"
    config.write_text(
        f"backend:\n  baseUrl: http://127.0.0.1:{port}\n  listen:\n    port: {port}\n"
        f"  database:\n{database}{extra}",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKSTAGE_", "PYTEST"))}
    env["BACKSTAGE_APP_CONFIG"] = os.pathsep.join([str(BASE), str(config)])
    log = tmp_path / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "example_app"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Instance(name, f"http://127.0.0.1:{port}", process, log)


def _wait(instance: Instance) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and instance.process.poll() is None:
        try:
            requests.get(f"{instance.url}/api/app/health", timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    pytest.fail(f"{instance.name} did not start:\n{instance.output()}")


def _stop(instance: Instance) -> None:
    instance.process.terminate()
    try:
        instance.process.wait(timeout=30)
    except subprocess.TimeoutExpired:  # pragma: no cover
        instance.process.kill()
        instance.process.wait()


@pytest.fixture(params=["sqlite-file", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """``backend.database`` of every instance, and the SQLAlchemy URL of the same database."""
    if request.param == "sqlite-file":
        path = tmp_path / "shared.sqlite"
        return f"    client: sqlite3\n    connection: {path}\n", f"sqlite:///{path}"
    postgres_url = request.getfixturevalue("postgres_url")
    schema = request.getfixturevalue("pg_schema")
    url = _pg_url_in(postgres_url, schema).render_as_string(hide_password=False)
    # Backstage's connection string: the schema in libpq's options, "=" escaped
    plain = sa.engine.make_url(postgres_url).set(drivername="postgresql", query={})
    connection = f"{plain.render_as_string(hide_password=False)}?options=-csearch_path%3D{schema}"
    return f"    client: pg\n    connection: '{connection}'\n", url


@pytest.fixture
def instances(tmp_path: Path, database: tuple[str, str]) -> t.Iterator[dict[str, Instance]]:
    """one, two and three; two's search finds the catalog on three."""
    backend_database, _ = database
    ports = {name: free_port() for name in ("one", "two", "three")}
    elsewhere = (
        "discovery:\n  endpoints:\n"
        f"    - target: http://127.0.0.1:{ports['three']}/api/{{{{pluginId}}}}\n"
        "      plugins: [catalog]\n"
    )
    started: dict[str, Instance] = {}
    try:
        # one migrates the database first; the others find it at head
        started["one"] = _start("one", tmp_path, ports["one"], backend_database)
        _wait(started["one"])
        started["two"] = _start("two", tmp_path, ports["two"], backend_database, elsewhere)
        started["three"] = _start("three", tmp_path, ports["three"], backend_database)
        _wait(started["two"])
        _wait(started["three"])
        yield started
    finally:
        for instance in started.values():
            _stop(instance)
    for instance in started.values():
        assert "Traceback" not in instance.output(), instance.output()


def _sign_in(instance: Instance) -> str:
    response = requests.post(f"{instance.url}/api/auth/guest/refresh", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return t.cast(str, response.json()["backstageIdentity"]["token"])


def _whoami(instance: Instance, token: str) -> requests.Response:
    return requests.get(f"{instance.url}/api/app/whoami", headers=_bearer(token), timeout=TIMEOUT)


def _kid(token: str) -> str:
    return t.cast(str, jwt.get_unverified_header(token)["kid"])


def _jwks_kids(instance: Instance) -> set[str]:
    response = requests.get(f"{instance.url}/api/auth/.well-known/jwks.json", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return {key["kid"] for key in response.json()["keys"]}


def test_every_instance_accepts_every_instances_user_tokens(
    instances: dict[str, Instance], database: tuple[str, str]
) -> None:
    accepted: dict[tuple[str, str], int] = {}
    for _ in range(10):
        for signer in instances.values():
            token = _sign_in(signer)  # the first request after a new key included
            for verifier in instances.values():
                response = _whoami(verifier, token)
                assert response.status_code == 200, (signer.name, verifier.name, response.text)
                assert response.json()["principal"] == {"type": "user", "userEntityRef": GUEST}
                accepted[signer.name, verifier.name] = (
                    accepted.get((signer.name, verifier.name), 0) + 1
                )
    assert set(accepted.values()) == {10}
    kids = [_jwks_kids(instance) for instance in instances.values()]
    assert kids[0] == kids[1] == kids[2]
    assert len(kids[0]) == 3  # one key per process, every one served by every JWKS

    # on behalf of a user signed in on one: two's search indexes three's catalog
    token = _sign_in(instances["one"])
    rebuilt = requests.post(
        f"{instances['two'].url}/api/search/index", headers=_bearer(token), timeout=30
    )
    assert rebuilt.status_code == 200, rebuilt.text
    assert rebuilt.json()["indexed"]["software-catalog"] >= 4

    # an operator empties the table: the next listing makes each signer renew its key
    _, url = database
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(signing_keys_table.delete())
        assert _jwks_kids(instances["one"]) == set()
        fresh = _sign_in(instances["one"])
        assert _kid(fresh) not in kids[0]
        for verifier in instances.values():
            response = _whoami(verifier, fresh)
            assert response.status_code == 200, (verifier.name, response.text)
        with engine.connect() as connection:
            stored = set(connection.execute(sa.select(signing_keys_table.c.kid)).scalars())
        assert _kid(fresh) in stored
    finally:
        engine.dispose()

    # a token signed with a key nobody published is refused everywhere
    stranger = jwt.encode(
        {"sub": GUEST, "aud": "backstage", "iat": int(time.time()), "exp": int(time.time()) + 60},
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"typ": "vnd.backstage.user", "kid": "nobody-published-this"},
    )
    for verifier in instances.values():
        assert _whoami(verifier, stranger).status_code == 401
