"""A full disk on a peer: beta's home lives on a small tmpfs. A fetch that fills it fails
cleanly; pushes it cannot store are refused; once space is freed, all works."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess

import pytest

from tests.helpers import force_cleanup, syncd, wait_for
from tests.peers.conftest import Peer, wait_content

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="mounts a tmpfs")


@contextlib.contextmanager
def beta_on_a_small_disk(a: Peer, tmp_path, *expected: str):
    """(beta, its disk): a peer of `a` whose home is on a 16 MiB tmpfs, mounted; its log
    may hold `expected`. Unmounted (a clean unmount is part of the test), its log checked
    and the tmpfs gone after, even when the test fails."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
                   check=True)
    try:
        b = Peer(disk, "beta", a.key)
        b.expect_log(*expected)
        syncd(a.home, "peer", "add", "beta", b.url)
        syncd(b.home, "peer", "add", "alpha", a.url)
        b.start()
        try:
            yield b, disk
            b.stop()
        finally:
            force_cleanup(b.home, b.path)
            b.mount.served_log.check()  # now: the log is on the tmpfs
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_fetch_that_fills_the_disk_fails_cleanly_and_works_once_space_is_freed(
        cluster, tmp_path):
    """The open fails with ENOSPC, nothing half written stays in the store, the index is
    consistent, and once space is freed the same open works."""
    (a,) = cluster(1)
    fetch_fills_it = r"WARNING (open|read): no space left in "
    with beta_on_a_small_disk(a, tmp_path, fetch_fills_it) as (b, _):
        data = os.urandom(24 << 20)  # more than beta's disk holds
        (a / "big").write_bytes(data)
        wait_for(lambda: os.path.exists(b / "big") and
                 os.stat(b / "big").st_size == len(data), 20, "big listed on beta")
        with pytest.raises(OSError) as e:
            (b / "big").read_bytes()
        assert e.value.errno == errno.ENOSPC
        assert not list((b.home / "store" / "chunks").rglob("*.tmp"))
        db = sqlite3.connect(f"file:{b.home / 'index.db'}?mode=ro", uri=True)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        db.close()
        (a / "small").write_bytes(b"still syncing")
        wait_content(b / "small", b"still syncing")
        os.unlink(a / "big")  # frees beta's partial chunks
        wait_for(lambda: not os.path.exists(b / "big"), 20, "big gone on beta")
        wait_for(lambda: sum(p.stat().st_size for p in
                             (b.home / "store" / "chunks").rglob("*") if p.is_file())
                 < 1 << 20, 20, "beta's store emptied")
        (a / "fits").write_bytes(data[: 8 << 20])
        wait_content(b / "fits", data[: 8 << 20])


def fill(path) -> None:
    """Take every byte left on path's file system (appending to path), also what was
    freed since the last call."""
    with open(path, "ab", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)


def test_a_full_disk_while_changes_arrive_holds_them_back_until_space_is_freed(
        cluster, tmp_path):
    """Beta's index cannot grow: it refuses alpha's pushes with 507, applies nothing of
    them, its mount goes on, and alpha's status says why; once space is freed, all
    arrives."""
    (a,) = cluster(1)
    full = "database or disk is full"
    waits = (rf"WARNING refused POST /v1/changes: 507 this machine cannot store it now: {full}",
             rf"WARNING cannot copy the index's WAL into it: {full}",
             rf"WARNING peer alpha: cannot record the exchange here: {full}",
             rf"WARNING purging \d+ inode\(s\) without names failed: {full}")
    with beta_on_a_small_disk(a, tmp_path, *waits) as (b, disk):
        (a / "first").write_bytes(b"before the disk filled")
        wait_content(b / "first", b"before the disk filled")
        # Beta's WAL, emptied, must grow to take any commit (it would take some in the
        # space it had): the disk is then full for the index.
        db = sqlite3.connect(b.home / "index.db")
        db.execute("PRAGMA busy_timeout = 5000")
        assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        db.close()
        filler = disk / "filler"
        fill(filler)
        # beta gives up the space it holds for its index on a full disk (index/store.py,
        # RESERVE): that is taken too
        wait_for(lambda: not (b.home / "store" / "reserve").exists(), 10,
                 "beta to give up its reserve")
        fill(filler)
        for i in range(200):
            (a / f"f{i}").write_bytes(b"x%d" % i * 100)
        (a / "first").write_bytes(b"changed while beta's disk was full")

        def refused() -> bool:
            fill(filler)  # what beta freed meanwhile (its WAL restarting)
            return "disk is full" in (a.peer("beta")["last_error"] or "")
        wait_for(refused, 20, "alpha's status to say why beta takes nothing")
        assert a.peer("beta")["pending_changes"] > 0
        assert "first" in os.listdir(b.path)  # beta's mount still answers
        # the last change of all: what came before it may have fitted, not it
        assert (b / "first").read_bytes() == b"before the disk filled"
        os.unlink(filler)
        # alpha tries again after its backoff, at most BACKOFF_MAX (30 s)
        wait_content(b / "f199", b"x199" * 100, timeout=45)
        for i in range(200):
            wait_content(b / f"f{i}", b"x%d" % i * 100)
        wait_content(b / "first", b"changed while beta's disk was full")
