"""A fault-injecting TCP proxy for the soak: one per direction between two peers.

Each peer's URL for another points at a proxy, so one direction of one pair can be cut
without touching the third peer. Modes:

- `pass`: forward both ways.
- `reset`: refuse: every connection, open or new, is closed with a TCP reset (the peer
  sees "connection reset" at once).
- `blackhole`: a silent partition: open connections are reset once, new ones are accepted
  and then nothing is forwarded or answered (the peer waits for its own timeouts).
- `flaky`: forward, but each new connection is reset, with probability `cut_rate`, after a
  random number of bytes of the answer (a transfer interrupted half way).
- `close_reused`: forward the first exchange of each connection (the TLS handshake, then
  the first request and its answer); when the client sends again on it after that answer,
  close it unanswered: what a server that closes an idle keep-alive connection does when a
  request crosses its close. (The peers' TLS servers send no session tickets, so the
  handshake is one answer.)
- `cut_request`, `cut_answer`: forward, but reset each new connection once `cut_bytes` of
  its request (an upload) or of its answer (a download) have passed: a transfer cut half
  way, every time.

Threads, not trio: the proxy runs beside blocking test code. Every socket it opens is
closed by `close()`.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading

MODES = ("pass", "reset", "blackhole", "flaky", "close_reused", "cut_request", "cut_answer")


def _reset(sock: socket.socket) -> None:
    """Close with RST, not FIN: the other side learns at once, as from a dead link."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        # Wakes a thread blocked in recv() on it (close() alone would not, and the
        # reset would wait for that recv to return).
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


class Proxy:
    def __init__(self, target_port: int, name: str = "", seed: int = 0,
                 cut_rate: float = 0.3, cut_bytes: int = 64 * 1024):
        self.name = name
        self.target = ("127.0.0.1", target_port)
        self.mode = "pass"
        self.cut_rate = cut_rate
        self.cut_bytes = cut_bytes
        self.rng = random.Random(seed)
        self.lock = threading.Lock()  # guards mode, conns and held
        self.conns: set[tuple[socket.socket, socket.socket]] = set()
        self.held: set[socket.socket] = set()  # blackholed clients, answered never
        self.stats = {"accepted": 0, "refused": 0, "held": 0, "cut": 0}
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.closed = False
        self.thread = threading.Thread(target=self._accept, name=f"proxy {name}",
                                       daemon=True)
        self.thread.start()

    # -- control

    def set_mode(self, mode: str) -> None:
        assert mode in MODES, mode
        with self.lock:
            self.mode = mode
            cut = list(self.conns) if mode in ("reset", "blackhole") else []
            self.conns.difference_update(cut)
            released = list(self.held) if mode != "blackhole" else []
            self.held.difference_update(released)
        for client, upstream in cut:
            _reset(client)
            _reset(upstream)
        for client in released:
            _reset(client)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.listener.close()
        self.set_mode("reset")
        self.thread.join(5)

    # -- forwarding

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                mode = self.mode
                if mode == "blackhole":
                    self.held.add(client)
                    self.stats["held"] += 1
                    continue
            if mode == "reset":
                self.stats["refused"] += 1
                _reset(client)
                continue
            cut_after = cut_request = None
            if mode == "flaky" and self.rng.random() < self.cut_rate:
                cut_after = self.rng.randrange(0, 256 * 1024)
            elif mode == "cut_answer":
                cut_after = self.cut_bytes
            elif mode == "cut_request":
                cut_request = self.cut_bytes
            threading.Thread(target=self._connect, args=(client, cut_after, cut_request),
                             daemon=True, name=f"proxy {self.name} conn").start()

    def _connect(self, client: socket.socket, cut_after: int | None,
                 cut_request: int | None = None) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            _reset(client)  # the peer is down: as a refused connection would
            return
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = (client, upstream)
        with self.lock:
            if self.mode in ("reset", "blackhole") or self.closed:
                _reset(client)
                _reset(upstream)
                return
            self.conns.add(pair)
            self.stats["accepted"] += 1
        done = threading.Semaphore(0)  # one release per direction that has ended
        answered = threading.Event()  # the server has sent something on this connection
        threading.Thread(target=self._pump, args=(client, upstream, pair, cut_request, done,
                                                  answered), daemon=True).start()
        self._pump(upstream, client, pair, cut_after, done, None, answered)
        done.acquire()
        done.acquire()
        with self.lock:
            self.conns.discard(pair)
        for s in pair:
            with contextlib.suppress(OSError):
                s.close()

    def _pump(self, src: socket.socket, dst: socket.socket, pair, cut_after: int | None,
              done: threading.Semaphore, reused: threading.Event | None = None,
              answered: threading.Event | None = None) -> None:
        """Copy src to dst. `reused` (client to server only): set once the server has
        answered, so a further request can be refused in close_reused mode; `answered`
        (server to client only): set when it does."""
        sent = turns = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                if reused is not None and reused.is_set():
                    # the client sends after an answer: its second turn is its first
                    # request (the first is the TLS handshake's end), its third a reuse
                    reused.clear()
                    turns += 1
                    if turns >= 2 and self.mode == "close_reused":
                        self.stats["cut"] += 1
                        for sock in pair:  # FINs, as a server closing the connection sends
                            with contextlib.suppress(OSError):
                                sock.shutdown(socket.SHUT_RDWR)
                        return
                if answered is not None:
                    answered.set()
                if cut_after is not None and sent + len(data) > cut_after:
                    dst.sendall(data[: cut_after - sent])
                    self.stats["cut"] += 1
                    raise ConnectionResetError("cut by the proxy")
                dst.sendall(data)
                sent += len(data)
        except OSError:
            with self.lock:
                self.conns.discard(pair)
            for s in pair:
                _reset(s)
        finally:
            done.release()
