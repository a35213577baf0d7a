"""A TCP proxy to PostgreSQL that a test can pause (stop forwarding) or take down.

Paused, it still accepts and holds every connection, as a stopped server
whose kernel keeps acknowledging packets: nothing a client sends is answered,
and a client without a timeout waits forever. Down, it closes every
connection and each new one at once, as a server that is gone.
"""

from __future__ import annotations

import select
import socket
import threading
import typing as t

import sqlalchemy as sa


class PausableProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._down = False
        self._closed = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._start(self._accept)

    @classmethod
    def to(cls, url: str | sa.engine.URL) -> PausableProxy:
        parsed = sa.engine.make_url(url)
        return cls((parsed.host or "127.0.0.1", parsed.port or 5432))

    def url_for(self, url: str | sa.engine.URL) -> sa.engine.URL:
        """``url`` through this proxy."""
        return sa.engine.make_url(url).set(host="127.0.0.1", port=self.port)

    def _start(self, target: t.Callable[..., None], *args: t.Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def pause(self) -> None:
        self._forwarding.clear()

    def resume(self) -> None:
        self._down = False
        self._forwarding.set()

    def take_down(self) -> None:
        """Close every connection; new ones are closed as they come."""
        self._down = True
        self._close_connections()

    def _close_connections(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self._closed = True
        self._forwarding.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        except OSError:
            pass
        self._listener.close()
        self._close_connections()
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> PausableProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            self._start(self._pump, client, upstream)
            self._start(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while not self._closed:
                if not self._forwarding.wait(0.05):
                    continue
                readable, _, _ = select.select([source], [], [], 0.05)
                if not readable or not self._forwarding.is_set():
                    continue
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
