"""A commit killed at each of its steps (DESIGN rule 1, Catalog.commit_draft): the mount
arms a fault point through the environment (index/faults.py) and dies by SIGKILL there,
as a power cut would. Whatever the step, the next mount shows either the new version, or
the old one with the new bytes in a `.sync-recovered-` copy beside it; nothing is left
dirty, and the store holds exactly the chunks the index refers to. Each for a file of
chunks (its short last one inline, index/inline.py) and for a small file, wholly inline."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from syncd.index.chunklist import CHUNK
from syncd.index.store import ChunkStore

from tests.conftest import needs_fuse
from tests.helpers import Mount, force_cleanup, status, wait_for

pytestmark = needs_fuse

OLD = os.urandom(3 * CHUNK + 11)
HEAD, TAIL = os.urandom(CHUNK), os.urandom(1000)
NEW = HEAD + bytes(2 * CHUNK) + TAIL  # two chunks of it are a hole


def write_new_version(path: Path) -> None:
    """Replace the content: two written chunks around a hole, so the commit installs a
    working chunk, puts the short last one into the index and leaves the four old chunks
    unreferenced."""
    with open(path, "wb") as f:
        f.write(HEAD)
        f.seek(3 * CHUNK)
        f.write(TAIL)


def write_new_small(path: Path) -> None:
    path.write_bytes(b"new small content")


# kind -> (the committed version, how the new one is written, its bytes)
KINDS = {"chunks": (OLD, write_new_version, NEW),
         "small": (b"old small content", write_new_small, b"new small content")}


def crash_in_commit(m: Mount, point: str, write) -> None:
    """Mount with `point` armed and close a new version of f.bin: the mount dies there."""
    m.start(env={"SYNCD_FAULT": point})
    pid = m.pid
    with pytest.raises(OSError):  # the close, or a request before it, meets a dead mount
        write(m.path / "f.bin")
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10, "the mount to die")
    force_cleanup(m.home, m.path)


def store_matches_index(home: Path) -> None:
    """No chunk file that the index does not refer to, none missing, nothing in work/;
    every chunk the index holds inline is referred to or kept for peers (refs 0)."""
    root = home / "store"
    files = {p.name for p in (root / "chunks").glob("*/*")}
    db = sqlite3.connect(f"file:{home / 'index.db'}?mode=ro", uri=True)
    try:
        referred = {h.hex() for (h,) in db.execute(
            "SELECT hash FROM chunks WHERE refs > 0 AND hash NOT IN (SELECT hash FROM inline)")}
        uncounted = db.execute(
            "SELECT count(*) FROM inline WHERE hash NOT IN (SELECT hash FROM chunks)").fetchone()
    finally:
        db.close()
    assert files == referred
    assert uncounted == (0,)
    assert set(os.listdir(root / "work")) <= {"slots"}
    store = ChunkStore(root)
    try:
        assert store.work_inodes() == []
    finally:
        store.close()


def recovered_copies(m: Mount) -> list[str]:
    return sorted(n for n in os.listdir(m.path) if n.startswith("f.sync-recovered-"))


@pytest.fixture(params=sorted(KINDS))
def share(home: Path, tmp_path: Path, request):
    old, write, new = KINDS[request.param]
    m = Mount(home, tmp_path / "mnt")
    try:
        m.start()
        (m.path / "f.bin").write_bytes(old)
        m.stop()
        yield m, old, write, new
        m.stop()
    finally:
        force_cleanup(home, m.path)


AFTER_INDEX = ["commit:after-index", "commit:installing", "commit:installed",
               "commit:retired"]


@pytest.mark.parametrize(  # a file of one chunk has no second chunk to install
    "share, point", [(kind, point) for kind in sorted(KINDS) for point in AFTER_INDEX
                     if (kind, point) != ("small", "commit:installing")],
    indirect=["share"])
def test_killed_after_the_index_decided_keeps_the_new_version(share, point):
    m, _, write, new = share
    crash_in_commit(m, point, write)
    m.start()
    assert (m.path / "f.bin").read_bytes() == new
    assert recovered_copies(m) == []
    assert status(m.home)["dirty"] == 0
    store_matches_index(m.home)


def test_killed_before_the_index_decided_keeps_the_old_version_and_a_copy(share):
    m, old, write, new = share
    m.expect_log(r"WARNING recovered uncommitted writes to inode \d+ as f.sync-recovered-")
    crash_in_commit(m, "commit:before-index", write)
    m.start()
    assert (m.path / "f.bin").read_bytes() == old
    [copy] = recovered_copies(m)
    assert copy.endswith(".bin")
    assert (m.path / copy).read_bytes() == new
    assert status(m.home)["dirty"] == 0
    store_matches_index(m.home)


def test_a_recovery_killed_after_its_commit_makes_one_copy(share):
    m, old, write, new = share
    crash_in_commit(m, "commit:before-index", write)
    with pytest.raises(AssertionError, match="died"):  # `syncd mount` reports the death
        m.start(env={"SYNCD_FAULT": "recover:after-index"})
    force_cleanup(m.home, m.path)
    m.start()
    assert (m.path / "f.bin").read_bytes() == old
    [copy] = recovered_copies(m)
    assert (m.path / copy).read_bytes() == new
    assert status(m.home)["dirty"] == 0
    store_matches_index(m.home)
