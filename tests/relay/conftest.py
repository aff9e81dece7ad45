"""Relays on real storage: a directory, and a WebDAV collection served by Apache
(webdav_server.py). `relay` runs a test once per backend."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from syncd.relay.directory import Directory
from syncd.relay.storage import MARKER, Storage
from syncd.relay.webdav import WebDAV
from tests.relay.webdav_server import WebDAVServer, webdav_server

USER, PASSWORD = "relay", "pass-7Qx!"


@dataclass
class Relay:
    """A relay's storage: `root` on disk holds the objects; `at(path)` opens the backend
    on any directory below `served` (the root, or one that is missing or has no marker)."""

    kind: str
    served: Path
    root: Path
    server: WebDAVServer | None = None

    def at(self, path: Path, password: str = PASSWORD) -> Storage:
        if self.server is None:
            return Directory(str(path))
        return WebDAV(self.server.url + path.relative_to(self.served).as_posix() + "/",
                      USER, password)

    def run(self, test: Callable[[Storage], Awaitable[object]], path: Path | None = None,
            **kw) -> object:
        """trio.run `test(storage)` on a backend opened for this run."""
        async def main():
            storage = self.at(path or self.root, **kw)
            try:
                return await test(storage)
            finally:
                if isinstance(storage, WebDAV):
                    await storage.aclose()
        return trio.run(main)

    def files(self) -> list[str]:
        """Every file under `served` but the marker, as written on disk: what a put left."""
        return sorted(str(p.relative_to(self.served)) for p in self.served.rglob("*")
                      if p.is_file() and p.name != MARKER)


def make_relay(kind: str, served: Path) -> Iterator[Relay]:
    root = served / "relay"
    root.mkdir(parents=True)
    (root / MARKER).write_text("syncd relay\n")  # as `syncd relay add` leaves it
    if kind == "directory":
        yield Relay(kind, served, root)
        return
    with webdav_server(served, USER, PASSWORD) as server:
        yield Relay(kind, served, root, server)


@pytest.fixture(params=["directory", "webdav"])
def relay(request, tmp_path: Path) -> Iterator[Relay]:
    yield from make_relay(request.param, tmp_path / "served")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `path`, unmounted after the block even on failure."""
    if os.getuid() != 0:
        pytest.skip("mounts a tmpfs: needs root")
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
