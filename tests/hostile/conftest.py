"""A real `syncd serve` on 127.0.0.1 for hostile input: started with the real CLI, fed
requests signed (or not) with the home's cluster key, and stopped after the test even when
it fails. No mount: the peer API is the surface under test."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
from pathlib import Path

import blake3
import httpx
import pytest
from syncd.index.chunklist import file_hash

from syncd import auth, identity
from tests.helpers import SERVED_LOGS, SYNCD, free_port, served_log, syncd, tls_context, wait_for

TABLES = ("meta", "inodes", "nodes", "journal", "peers", "limbo", "chunks", "inline", "xattrs")


class Server:
    """One home served by `syncd serve` (no mount), its log in HOME/../NAME.log, checked
    when the test ends (tests.helpers.ServedLog)."""

    def __init__(self, root: Path, name: str = "target"):
        self.home = root / name
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        syncd(self.home, "init", "--name", name, "--listen", f"127.0.0.1:{self.port}")
        self.key = auth.parse_key(syncd(self.home, "cluster-key").stdout)
        self.log_path = root / f"{name}.log"
        self.served_log = served_log(self.log_path)
        self.proc: subprocess.Popen | None = None
        self.peer = self._admitted_peer(root / f"{name}-peer")
        self.tls = tls_context(self.home, self.peer)
        self.client = httpx.Client(base_url=self.url, timeout=30, trust_env=False,
                                   verify=self.tls)
        self._mark = 0

    def _admitted_peer(self, home: Path) -> Path:
        """A device whose certificate the server pinned (as its first hello to a peer
        it added would), taken out of use so that it is never called: the requests of
        these tests come with its certificate. Returns the directory of its device.pem."""
        home.mkdir()
        peer = identity.ensure(home / "device.pem", new_device())
        self.peer_device = peer.device  # the sender of every push these tests make
        syncd(self.home, "peer", "add", "peer", f"127.0.0.1:{free_port()}")
        syncd(self.home, "peer", "set", "peer", "outofuse")
        with sqlite3.connect(self.home / "index.db") as conn:
            conn.execute("UPDATE peers SET device = ?, fingerprint = ?, cert = ?",
                         (peer.device, peer.fingerprint, peer.cert.pem))
        conn.close()
        return home

    def start(self) -> Server:
        self.served_log.serving()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*SYNCD, "--home", str(self.home), "serve"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        wait_for(lambda: self._listening() or not self.alive(), 30, "syncd serve to listen")
        assert self.alive(), f"syncd serve died at start:\n{self.log()}"
        return self

    def _listening(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=1):
            return True
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (a clean stop), SIGKILL if that does not end it within 10 s."""
        self.client.close()
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    # -- requests

    def request(self, method: str, target: str, body: bytes = b"", *,
                key: bytes | None | bool = True, headers: dict | None = None,
                now: float | None = None, nonce: str | None = None) -> httpx.Response:
        """Send one request; key=True signs it with the cluster key, None leaves it
        unsigned, bytes sign with that key. A signed answer's signature is checked."""
        signing = self.key if key is True else key or None
        sent = {"content-type": "application/json"} if body else {}
        if signing:
            sent.update(auth.sign_request(signing, method, target, body, now=now,
                                          nonce=nonce))
        sent.update(headers or {})
        r = self.client.send(self.client.build_request(method, target, content=body,
                                                       headers=sent), stream=True)
        try:
            raw = b"".join(r.iter_raw())  # the bytes as sent, maybe zstd: what is signed
        finally:
            r.close()
        if signing == self.key and r.status_code not in (401, 413):  # refused unread
            auth.check_response(self.key, r.status_code, sent[auth.NONCE], r.headers,
                                auth.body_hash(raw))
        return httpx.Response(r.status_code, headers=r.headers, content=raw,
                              request=r.request)

    def push(self, states: list[dict], device: str | None = None, **kw) -> httpx.Response:
        """Push as the admitted peer (the device of the certificate presented), or as
        `device`."""
        device = self.peer_device if device is None else device
        body = json.dumps({"device": device, "changes": states}).encode()
        return self.request("POST", "/v1/changes", body, **kw)

    # -- what a request must not change

    def snapshot(self) -> dict:
        """Every table of the index (read through a read-only connection) and the chunk
        files in the store."""
        db = self.home / "index.db"
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            tables = {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                      for t in TABLES}
        finally:
            conn.close()
        store = self.home / "store" / "chunks"
        files = sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())
        return {"tables": tables, "chunk_files": files}

    # -- the log

    def expect_log(self, *patterns: str) -> None:
        """Records matching these may appear in the log (tests.helpers.ServedLog)."""
        self.served_log.expect_log(*patterns)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self) -> None:
        """Later new_log() calls return only what was logged after this."""
        self._mark = len(self.log())

    def new_log(self) -> str:
        return self.log()[self._mark:]


def refused(server, response, status: int, *words: str) -> str:
    """Check a refusal: its status, a `detail` naming what was wrong, one log line (the
    one this test expects)."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail, detail
    for word in words:
        assert word in detail, detail
    complaints = [line for line in server.new_log().splitlines()
                  if " WARNING " in line or " ERROR " in line]
    assert len(complaints) == 1, f"want one log line about it, got: {complaints}"
    server.expect_log(re.escape(complaints[0]))
    return detail


def new_device() -> str:
    return secrets.token_hex(16)


def state(node: str, parent: str | None = "root", name: str = "f", kind: str = "file",
          device: str | None = None, counter: int = 1, deleted: bool = False,
          data: bytes = b"", mtime_ns: int = 1_763_900_000 * 10**9) -> dict:
    """A well-formed node state (docs/protocol.md) whose three versions were all made by
    `device` at `counter`; content is a file with `data` (not sent: only its hash)."""
    if device is None:
        device = node.split(":")[0] if ":" in node else new_device()
    version = {"vv": {device: counter}, "clock": counter, "device": device}
    chunks: list[str] = []
    digest = None
    if kind == "file" and not deleted:
        chunks = [blake3.blake3(data).hexdigest()] if data else []
        digest = file_hash(b"".join(bytes.fromhex(c) for c in chunks))
    target = None
    if kind == "symlink" and not deleted:
        target = base64.b64encode(data or b"t").decode()
    return {
        "id": node, "kind": kind, "parent": parent, "name": name, "deleted": deleted,
        "conflict_of": None,
        "content": {**version, "hash": digest, "size": len(data) if kind == "file" else 0,
                    "mtime_ns": mtime_ns, "chunks": chunks, "target": target},
        "mode": {**version, "mode": 0o755 if kind == "dir" else 0o644},
        "place": dict(version),
    }


def node_id(device: str | None = None, counter: int = 1) -> str:
    return f"{device or new_device()}:{counter}"


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One serving process for a module's tests (each checks what it changed)."""
    server = Server(tmp_path_factory.mktemp("hostile"))
    try:
        server.start()
        server.served_log.check()  # starting; each test then checks its own part
        yield server
        assert server.alive(), f"syncd serve died:\n{server.log()}"
    finally:
        server.served_log.expected.clear()
        server.stop()
    server.served_log.check()  # what no test checked: stopping


@pytest.fixture
def server(shared_server):
    """The module's server; its log is checked for what this test made it log."""
    shared_server.mark()
    shared_server.served_log.mark()
    SERVED_LOGS[shared_server.served_log.path] = shared_server.served_log
    yield shared_server
    assert shared_server.alive(), f"syncd serve died:\n{shared_server.log()}"


@pytest.fixture
def unchanged(server):
    """The index and store are exactly as they were when the test ends."""
    before = server.snapshot()
    yield
    assert server.snapshot() == before


@pytest.fixture
def fresh_server(tmp_path):
    """A serving process of its own, for tests that may crash or poison it."""
    server = Server(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()

