"""The one bounded outgoing HTTP call: deadline, size cap, no compression, no cookie.

A raw socket server on 127.0.0.1 (plain or TLS with a throwaway certificate)
answers each test's way, byte by byte when asked. Time bounds are generous: a
0.5 s deadline must end a call in under 3 s, where the server alone would hold
it for 10 s or more.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
import typing as t
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flask_backstage_auth.bounded_http import CallFailed, LazySession, call
from flask_backstage_auth.credentials import Credentials, NonePrincipal
from flask_backstage_auth.permissions.model import PolicyQuery, create_permission
from flask_backstage_auth.permissions.remote import (
    PermissionBackendUnavailable,
    PermissionClient,
)

Answering = t.Callable[[socket.socket, bytes], None]
TLS_CERT: tuple[bytes, bytes] | None = None


def tls_certificate() -> tuple[bytes, bytes]:
    """A self-signed certificate for 127.0.0.1 and its key, both PEM (made once)."""
    global TLS_CERT
    if TLS_CERT is None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        TLS_CERT = (
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    return TLS_CERT


class RawServer:
    """Accepts connections on 127.0.0.1 and lets ``answer`` write to each."""

    def __init__(self, answer: Answering, tls_dir: Path | None = None) -> None:
        self.answer = answer
        self.stop = threading.Event()
        self.requests: list[bytes] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.listener.settimeout(0.2)
        self.context: ssl.SSLContext | None = None
        scheme = "http"
        self.ca_file: str | None = None
        if tls_dir is not None:
            cert, key = tls_certificate()
            (tls_dir / "cert.pem").write_bytes(cert)
            (tls_dir / "key.pem").write_bytes(key)
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(tls_dir / "cert.pem", tls_dir / "key.pem")
            self.ca_file = str(tls_dir / "cert.pem")
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self.handle, args=(connection,), daemon=True).start()

    def handle(self, connection: socket.socket) -> None:
        try:
            if self.context is not None:
                connection = self.context.wrap_socket(connection, server_side=True)
            connection.settimeout(5)
            with connection:
                while True:
                    request = self.read_request(connection)
                    if not request:
                        return
                    self.requests.append(request)
                    self.answer(connection, request)
        except OSError:
            return

    @staticmethod
    def read_request(connection: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return b""
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
                while len(rest) < length:
                    rest += connection.recv(65536)
        return head + b"\r\n\r\n" + rest

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.listener.close()


def reply(head: bytes, body: bytes = b"") -> Answering:
    def answer(connection: socket.socket, request: bytes) -> None:
        connection.sendall(head + b"\r\n\r\n" + body)

    return answer


def trickle(prefix: bytes, stop: threading.Event) -> Answering:
    """``prefix``, then one byte every 50 ms (each read well within its timeout)."""

    def answer(connection: socket.socket, request: bytes) -> None:
        connection.sendall(prefix)
        for _ in range(200):
            if stop.is_set():
                return
            connection.sendall(b"a")
            time.sleep(0.05)

    return answer


def get(
    server: RawServer, *, timeout: float = 2.0, max_bytes: int = 1024, **kwargs: t.Any
) -> t.Any:
    session = LazySession().session
    if server.ca_file is not None:
        session.trust_env = False  # else REQUESTS_CA_BUNDLE wins over verify
        session.verify = server.ca_file
    return call(
        session,
        "GET",
        f"{server.url}/x",
        timeout=timeout,
        max_bytes=max_bytes,
        headers={"Accept": "application/json"},
        **kwargs,
    )


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize(
    "prefix",
    [
        b"HTTP/1.1 200 OK\r\nX-Slow: ",  # the headers, a byte at a time
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",  # an endless body without a length
    ],
    ids=["headers", "body"],
)
def test_a_trickling_server_ends_at_the_deadline(
    scheme: str, prefix: bytes, tmp_path: Path
) -> None:
    stop = threading.Event()
    with RawServer(trickle(prefix, stop), tmp_path if scheme == "https" else None) as server:
        started = time.monotonic()
        try:
            with pytest.raises(CallFailed) as info:
                get(server, timeout=0.5, max_bytes=1_000_000)
        finally:
            stop.set()
        elapsed = time.monotonic() - started
    assert info.value.reason == "late"  # never a truncated body
    assert elapsed < 3


def test_an_answer_is_its_status_headers_and_body() -> None:
    with RawServer(reply(b"HTTP/1.1 201 Created\r\nX-Id: 7\r\nContent-Length: 2", b"{}")) as server:
        answer = get(server)
    assert (answer.status, answer.headers["x-id"], answer.body) == (201, "7", b"{}")
    request = server.requests[0].lower()
    assert b"accept-encoding: identity" in request
    assert b"accept: application/json" in request


def test_a_post_sends_its_body() -> None:
    with RawServer(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0")) as server:
        answer = call(
            LazySession().session,
            "POST",
            f"{server.url}/x",
            timeout=2,
            max_bytes=10,
            headers={"Content-Type": "application/json"},
            data=b'{"a": 1}',
        )
    assert answer.status == 200
    assert server.requests[0].startswith(b"POST /x ")
    assert server.requests[0].endswith(b'\r\n\r\n{"a": 1}')


@pytest.mark.parametrize(
    ("head", "body", "reason"),
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2",
            b"\x1f\x8b",
            "compressed",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2", b"ab", "compressed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1025", b"a" * 1025, "too large"),  # declared
        (b"HTTP/1.1 200 OK\r\nConnection: close", b"a" * 1025, "too large"),  # streamed
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10", b"abc", "broken"),  # cut short
    ],
    ids=["gzip", "br", "declared-too-large", "streamed-too-large", "cut-short"],
)
def test_answers_that_are_refused(head: bytes, body: bytes, reason: str) -> None:
    def answer(connection: socket.socket, request: bytes) -> None:
        connection.sendall(head + b"\r\n\r\n" + body)
        connection.shutdown(socket.SHUT_WR)

    with RawServer(answer) as server:
        with pytest.raises(CallFailed) as info:
            get(server, max_bytes=1024)
    assert info.value.reason == reason


def test_a_body_at_the_cap_is_read() -> None:
    with RawServer(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 1024", b"a" * 1024)) as server:
        assert get(server, max_bytes=1024).body == b"a" * 1024


def test_a_status_whose_body_is_not_wanted_is_not_read_or_checked() -> None:
    head = b"HTTP/1.1 500 Oops\r\nContent-Encoding: gzip\r\nContent-Length: 5000"
    with RawServer(reply(head, b"a" * 5000)) as server:
        answer = get(server, max_bytes=10, read_body=lambda status: status == 200)
    assert (answer.status, answer.body) == (500, b"")


def test_a_redirect_is_an_answer_not_followed() -> None:
    head = b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0"
    with RawServer(reply(head)) as server:
        assert get(server).status == 302
    assert len(server.requests) == 1


def test_no_cookie_travels_from_one_call_to_the_next() -> None:
    head = b"HTTP/1.1 200 OK\r\nSet-Cookie: session=secret; Path=/\r\nContent-Length: 0"
    with RawServer(reply(head)) as server:
        session = LazySession().session
        for _ in range(2):
            call(session, "GET", f"{server.url}/x", timeout=2, max_bytes=10, headers={})
    assert len(server.requests) == 2
    assert b"cookie" not in server.requests[1].lower()
    assert not session.cookies


def test_nobody_listening_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CallFailed) as info:
        call(
            LazySession().session,
            "GET",
            f"http://127.0.0.1:{port}/",
            timeout=2,
            max_bytes=10,
            headers={},
        )
    assert (info.value.reason, info.value.cause_name) == ("unreachable", "ConnectionError")


def test_one_session_per_holder_made_at_the_first_use() -> None:
    holder = LazySession()
    assert holder.session is holder.session
    assert LazySession().session is not holder.session


def test_the_permission_backend_trickling_its_headers_is_bounded() -> None:
    # The permission client goes through the same call: the watchdog ends it.
    stop = threading.Event()
    with RawServer(trickle(b"HTTP/1.1 200 OK\r\nX-Slow: ", stop)) as server:
        client = PermissionClient(base_url=lambda: server.url, token=lambda _: None, timeout=0.5)
        query = PolicyQuery(create_permission("catalog.entity.read", {"action": "read"}))
        started = time.monotonic()
        try:
            with pytest.raises(PermissionBackendUnavailable, match="did not answer in time"):
                client.authorize(Credentials(NonePrincipal()), [query])
        finally:
            stop.set()
        elapsed = time.monotonic() - started
    assert elapsed < 3


def test_a_compressed_permission_answer_is_refused() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2"
    with RawServer(reply(head, b"\x1f\x8b")) as server:
        client = PermissionClient(base_url=lambda: server.url, token=lambda _: None)
        query = PolicyQuery(create_permission("catalog.entity.read", {"action": "read"}))
        with pytest.raises(PermissionBackendUnavailable, match="compressed") as info:
            client.authorize(Credentials(NonePrincipal()), [query])
    assert info.value.code == 503
