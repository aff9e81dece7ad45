"""A full disk: the writer gets ENOSPC, the index stays consistent, and everything works
again once space is freed. The home lives on a small tmpfs."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess

import pytest

from tests.conftest import needs_fuse
from tests.helpers import Mount, force_cleanup, free_port, status, syncd, wait_for

pytestmark = [needs_fuse, pytest.mark.skipif(os.getuid() != 0, reason="mounts a tmpfs")]


@pytest.fixture
def small_home(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], check=True)
    home = disk / "home"
    m = Mount(home, tmp_path / "mnt")
    try:
        syncd(home, "init", "--listen", f"127.0.0.1:{free_port()}")
        m.start()
        yield m
        m.stop()
    finally:
        force_cleanup(home, m.path)
        try:
            m.served_log.check()  # now: the log is on the tmpfs
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=False)


def test_enospc_then_recovery(small_home):
    # the store fills, then the index on the same disk: its commit at close fails too
    small_home.expect_log(r"WARNING write: no space left in ",
                          r"WARNING flush: the index is full \(no space left on its disk\)")
    m = small_home.path
    (m / "keep.txt").write_bytes(b"precious")
    block = os.urandom(1 << 20)
    with pytest.raises(OSError) as e, open(m / "big", "wb") as f:
        for _ in range(64):  # more than the disk holds; no two chunks alike
            f.write(os.urandom(1 << 20))
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


def write_on_a_full_disk(m, home) -> None:
    """Open a file in the mount, fill the home's disk to the last byte, then write to it:
    the write must take all its bytes (not ENOSPC, and not short), and they stay."""
    fd = os.open(m / "new", os.O_WRONLY | os.O_CREAT, 0o644)
    ballast = home.parent / "ballast"  # beside the home: every byte of the disk taken
    try:
        with open(ballast, "wb", buffering=0) as f, pytest.raises(OSError) as e:
            while True:
                f.write(os.urandom(1 << 20))
        assert e.value.errno == errno.ENOSPC
        data = os.urandom(256 << 10)
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)
    ballast.unlink()
    assert (m / "new").read_bytes() == data


def test_chunks_kept_for_peers_give_way_to_a_write(small_home):
    """A deleted file's chunks are kept for a peer that has not confirmed the delete (here
    one that never answers); a write that needs their space gets it instead of ENOSPC,
    even when the disk is full from its very first byte."""
    m, home = small_home.path, small_home.home
    syncd(home, "peer", "add", "ghost", f"127.0.0.1:{free_port()}")
    syncd(home, "config", "set", "versions_max", "0")  # no old versions (the test below)
    (m / "old").write_bytes(os.urandom(12 << 20))
    os.unlink(m / "old")
    wait_for(lambda: status(home)["replaced"]["chunks"] == 12, 10, "old's chunks kept")
    write_on_a_full_disk(m, home)
    assert status(home)["replaced"] == {"chunks": 0, "bytes": 0}


def test_old_versions_give_way_to_a_write_first(small_home):
    """Old versions are kept within 10% of the disk by default, but the disk may fill with
    other things: a write that needs their space gets it, the oldest going first."""
    m, home = small_home.path, small_home.home
    syncd(home, "config", "set", "versions_max", "100%")
    for name in ("old", "older"):
        (m / name).write_bytes(os.urandom(6 << 20))
        os.unlink(m / name)
    assert status(home)["versions"] == {"count": 2, "bytes": 12 << 20}
    write_on_a_full_disk(m, home)
    assert status(home)["versions"] == {"count": 0, "bytes": 0}
    assert status(home)["replaced"] == {"chunks": 0, "bytes": 0}


def test_a_write_cut_short_by_a_full_disk_keeps_what_it_reported(small_home):
    """A write that fills the disk half way through a request: the mount wrote part of it
    and the kernel's next request failed, or it reported all of it written with zeros in
    place of the tail (short pwrite results were ignored). What write() said it wrote is
    what the file holds."""
    small_home.expect_log(r"WARNING write: no space left in ")
    m = small_home.path
    ballast = small_home.home.parent / "ballast"  # beside the home, on its small disk
    ballast.write_bytes(os.urandom(4 << 20))
    data = os.urandom(40 << 20)  # more than the disk holds
    fd = os.open(m / "big", os.O_WRONLY | os.O_CREAT, 0o644)
    written = 0
    try:
        with pytest.raises(OSError) as e:
            while written < len(data):
                written += os.write(fd, data[written:])
        assert e.value.errno == errno.ENOSPC and written > 0
        ballast.unlink()  # room for the commit at close
    finally:
        os.close(fd)
    got = (m / "big").read_bytes()
    assert len(got) == written
    assert got == data[:written]
