"""Another process holds the index's write lock past busy_timeout (5 s) while the serving
process's housekeeping or the cache's round wants it: that pass fails with a warning, the
mount goes on, and the next pass does the work. Before, the exception ended the serving
process, and the mount with it."""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager

from tests.conftest import needs_fuse
from tests.helpers import Mount, force_cleanup, status, syncd, wait_for

pytestmark = needs_fuse

KEEP_DAYS = "0.00002"  # 1.7 s: tombstones are collected every second (the shortest)


@contextmanager
def index_held(home):
    """A command's transaction on the index, kept open."""
    holder = sqlite3.connect(home / "index.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@contextmanager
def mounted(home, tmp_path, *expected: str):
    m = Mount(home, tmp_path / "mnt")
    m.expect_log(*expected)
    try:
        m.start()
        yield m
        m.stop()
    finally:
        force_cleanup(home, m.path)


def test_housekeeping_outlives_an_index_held_past_busy_timeout(home, tmp_path):
    for key in ("tombstone_keep_days", "log_keep_days"):
        syncd(home, "config", "set", key, KEEP_DAYS)
    with mounted(home, tmp_path, r"WARNING collecting tombstones failed, to be tried again "
                                 r"in 1 s: database is locked") as m:
        (m.path / "f").write_bytes(b"before")
        with index_held(home):
            time.sleep(7)  # one pass waits its 5 s for the lock, then fails
        wait_for(lambda: "collecting tombstones failed" in m.served_log.text(), 10,
                 "the failed pass to be logged")
        (m.path / "f").unlink()  # a tombstone, which the next passes collect
        (m.path / "g").write_bytes(b"after")
        assert (m.path / "g").read_bytes() == b"after"
        wait_for(lambda: status(home)["tombstones"]["kept"] == 0, 20,
                 "the tombstone collected")


def test_the_cache_outlives_an_index_held_past_busy_timeout(home, tmp_path):
    with mounted(home, tmp_path, r"WARNING the cache's round failed: database is locked; "
                                 r"tried again in 5 s") as m:
        (m.path / "f").write_bytes(b"before")
        with index_held(home):
            # an open: its last use is for the cache's next round (every 5 s) to write
            assert (m.path / "f").read_bytes() == b"before"
            time.sleep(11)  # that round starts, waits its 5 s for the lock, and fails
        wait_for(lambda: "the cache's round failed" in m.served_log.text(), 10,
                 "the failed round to be logged")
        (m.path / "g").write_bytes(b"after")
        assert (m.path / "g").read_bytes() == b"after"
