"""Another process holds the index's write lock past busy_timeout (5 s) while the serving
process's housekeeping wants it: that pass fails with a warning, the mount goes on, and
the next pass does the work. Before, the exception ended the serving process, and the
mount with it."""

from __future__ import annotations

import sqlite3
import time

from tests.conftest import needs_fuse
from tests.helpers import Mount, force_cleanup, status, syncd, wait_for

pytestmark = needs_fuse

KEEP_DAYS = "0.00002"  # 1.7 s: tombstones are collected every second (the shortest)


def test_housekeeping_outlives_an_index_held_past_busy_timeout(home, tmp_path):
    for key in ("tombstone_keep_days", "log_keep_days"):
        syncd(home, "config", "set", key, KEEP_DAYS)
    m = Mount(home, tmp_path / "mnt")
    m.expect_log(r"WARNING collecting tombstones failed, to be tried again in 1 s: "
                 r"database is locked")
    try:
        m.start()
        (m.path / "f").write_bytes(b"before")
        holder = sqlite3.connect(home / "index.db", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            time.sleep(7)  # one pass waits its 5 s for the lock, then fails
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        wait_for(lambda: "collecting tombstones failed" in m.served_log.text(), 10,
                 "the failed pass to be logged")
        (m.path / "f").unlink()  # a tombstone, which the next passes collect
        (m.path / "g").write_bytes(b"after")
        assert (m.path / "g").read_bytes() == b"after"
        wait_for(lambda: status(home)["tombstones"]["kept"] == 0, 20,
                 "the tombstone collected")
        m.stop()
    finally:
        force_cleanup(home, m.path)

