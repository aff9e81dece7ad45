"""A full disk: the writer gets ENOSPC, the index stays consistent, and everything works
again once space is freed. The home lives on a small tmpfs."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess

import pytest

from tests.conftest import needs_fuse
from tests.helpers import Mount, force_cleanup, status, syncd

pytestmark = [needs_fuse, pytest.mark.skipif(os.getuid() != 0, reason="mounts a tmpfs")]


@pytest.fixture
def small_home(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], check=True)
    home = disk / "home"
    m = Mount(home, tmp_path / "mnt")
    try:
        syncd(home, "init")
        m.start()
        yield m
        m.stop()
    finally:
        force_cleanup(home, m.path)
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_enospc_then_recovery(small_home):
    m = small_home.path
    (m / "keep.txt").write_bytes(b"precious")
    block = os.urandom(1 << 20)
    with pytest.raises(OSError) as e, open(m / "big", "wb") as f:
        for _ in range(64):  # more than the disk holds
            f.write(block)
            f.flush()
    assert e.value.errno == errno.ENOSPC
    # The index is consistent and what was committed is intact.
    db = sqlite3.connect(f"file:{small_home.home / 'index.db'}?mode=ro", uri=True)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    assert (m / "keep.txt").read_bytes() == b"precious"
    os.unlink(m / "big")
    # Space is back: writes and commits work again.
    (m / "after.bin").write_bytes(block * 4)
    assert (m / "after.bin").read_bytes() == block * 4
    assert status(small_home.home)["dirty"] == 0
