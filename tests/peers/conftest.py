"""Clusters of real peers on 127.0.0.1: each a home, a daemon and a real mount."""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import needs_fuse
from tests.helpers import Mount, force_cleanup, free_port, status, syncd, wait_for

pytestmark = needs_fuse


class Peer:
    def __init__(self, root: Path, name: str, key: str | None):
        self.name = name
        self.home = root / name
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        args = ["init", "--name", name, "--listen", f"127.0.0.1:{self.port}"]
        if key:
            args += ["--cluster-key", key]
        syncd(self.home, *args)
        self.key = key or syncd(self.home, "cluster-key").stdout.strip()
        self.mount = Mount(self.home, root / f"{name}-mnt")
        self.path = self.mount.path

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel

    def expect_log(self, *patterns: str) -> None:
        """Records matching these may appear in this peer's log (tests.helpers.ServedLog)."""
        self.mount.expect_log(*patterns)

    def start(self) -> Peer:
        self.mount.start()
        return self

    def stop(self) -> None:
        self.mount.stop()

    def status(self) -> dict:
        return status(self.home)

    def peer(self, name: str) -> dict:
        (entry,) = [p for p in self.status()["peers"] if p["name"] == name]
        return entry

    def set_peer(self, name: str, mode: str) -> None:
        syncd(self.home, "peer", "set", name, mode)


def read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def wait_content(path: Path, data: bytes, timeout: float = 20) -> None:
    wait_for(lambda: read(path) == data, timeout, f"{path} to hold {data[:40]!r}")


def wait_gone(path: Path, timeout: float = 20) -> None:
    wait_for(lambda: not os.path.lexists(path), timeout, f"{path} to disappear")


def settled(*peers: Peer) -> bool:
    """No peer has anything pending for any other."""
    return all(p["pending_changes"] == 0 and p["state"] in ("online", "outofuse")
               for peer in peers for p in peer.status()["peers"])


def at_once(work, items: list) -> list:
    """work(item) for every item on threads of their own, as each mostly waits for a
    `syncd` process (a peer's init, its mount): a cluster starts and stops in the time of
    one peer. Waits for all; the first exception is raised."""
    if not items:
        return []
    with ThreadPoolExecutor(len(items)) as pool:
        futures = [pool.submit(work, item) for item in items]
    return [f.result() for f in futures]


@pytest.fixture
def cluster(tmp_path):
    """make(n, mounted=True): n peers that all know each other; unmounted and stopped
    after the test, even when it fails; their logs are checked (tests/conftest.py)."""
    made: list[Peer] = []

    def make(n: int = 2, mounted: bool = True) -> list[Peer]:
        names = ["alpha", "beta", "gamma", "delta"][:n]
        first = Peer(tmp_path, names[0], None)
        made.append(first)
        others = at_once(lambda name: Peer(tmp_path, name, first.key), names[1:])
        made.extend(others)
        peers = [first, *others]

        def introduce(p: Peer) -> None:
            for q in peers:
                if q is not p:
                    syncd(p.home, "peer", "add", q.name, q.url)

        at_once(introduce, peers)
        if mounted:
            at_once(Peer.start, peers)
        return peers

    try:
        yield make
        os.chdir("/")
        at_once(Peer.stop, [p for p in made if p.mount.pid])
    finally:
        for p in made:
            with contextlib.suppress(Exception):
                force_cleanup(p.home, p.path)
