"""The soak's fault-injecting proxy does what each mode says (no FUSE needed)."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest

from tests.soak.proxy import Proxy


@pytest.fixture
def echo():
    """A TCP server that answers every connection with 1 MiB, then echoes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    def handle(conn):
        with conn:
            try:
                conn.sendall(b"x" * (1 << 20))
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    stop.set()
    srv.shutdown(socket.SHUT_RDWR)
    srv.close()


def fetch(port: int, timeout: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        out = b""
        while len(out) < 1 << 20:
            data = s.recv(65536)
            if not data:
                break
            out += data
        return out


def test_modes(echo):
    proxy = Proxy(echo, "test", seed=1, cut_rate=1.0)
    try:
        assert fetch(proxy.port) == b"x" * (1 << 20)
        held = socket.create_connection(("127.0.0.1", proxy.port))
        held.settimeout(5)
        assert held.recv(10) == b"x" * 10
        proxy.set_mode("reset")  # an open connection is reset, new ones refused
        with pytest.raises(ConnectionResetError):
            while held.recv(65536):
                pass
        with pytest.raises((ConnectionResetError, ConnectionRefusedError)):
            fetch(proxy.port)
        proxy.set_mode("blackhole")  # accepted, never answered
        with pytest.raises(TimeoutError):
            fetch(proxy.port, timeout=0.5)
        proxy.set_mode("flaky")  # cut_rate 1: every answer is cut short
        for _ in range(5):
            with contextlib.suppress(ConnectionResetError):
                assert len(fetch(proxy.port)) < 1 << 20
        assert proxy.stats["cut"] == 5
        proxy.set_mode("close_reused")  # the first exchange passes, the next is closed
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as s:
            got = b""
            while len(got) < 1 << 20:  # as a TLS server's handshake flight
                got += s.recv(65536)
            s.sendall(b"first")  # the handshake's end and the first request: passed on
            assert s.recv(10) == b"first"
            s.sendall(b"again")  # a request after that answer: closed unanswered
            assert s.recv(10) == b""
        proxy.set_mode("pass")
        assert fetch(proxy.port) == b"x" * (1 << 20)
    finally:
        proxy.close()
    assert not proxy.conns and not proxy.held
