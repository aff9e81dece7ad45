"""A disk that fills up during a fetch: the open fails with ENOSPC, nothing half written
stays in the store, the index is consistent, and once space is freed the same open works.
Beta's home lives on a small tmpfs."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess

import pytest

from tests.helpers import force_cleanup, syncd, wait_for
from tests.peers.conftest import Peer, wait_content

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="mounts a tmpfs")


def test_a_fetch_that_fills_the_disk_fails_cleanly_and_works_once_space_is_freed(
        cluster, tmp_path):
    (a,) = cluster(1)
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
                   check=True)
    try:
        b = Peer(disk, "beta", a.key)
        b.expect_log(r"WARNING (open|read): no space left in ")  # the fetch fills the disk
        syncd(a.home, "peer", "add", "beta", b.url)
        syncd(b.home, "peer", "add", "alpha", a.url)
        b.start()
        try:
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
            b.stop()
        finally:
            force_cleanup(b.home, b.path)
            b.mount.served_log.check()  # now: the log is on the tmpfs
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
