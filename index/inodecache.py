"""Inodes as last read, so that the mount's getattr and setattr, and a commit, need not
read an inode row again; kept exact by asking SQLite only whether anything changed.

While a process serves a home, its one connection is the index's only writer (DESIGN,
"The shape": other commands ask it over the control socket). SQLite counts every row
that connection inserts, updates or deletes (`Connection.total_changes`: triggers
included, and rolled back changes too, as they were made). A cached inode is valid while
that count has not moved since it was read: any write, whatever it touched, empties the
cache. So does a commit by another connection (PRAGMA data_version): nothing else should
write while a home is served, but a cache must not hide it if something does. Rows read
inside a transaction are never kept (a rollback would undo what they show without moving
the count). A writer that knows every inode row its transaction
wrote, and their values, hands them to `wrote` after the commit, so the requests that
follow a create or a commit (tar's setattrs, a stat) find them.
"""

from __future__ import annotations

import sqlite3
from typing import Generic, TypeVar

T = TypeVar("T")

# The most rows kept: a `find` over a large share reads every inode without writing,
# and memory must not grow with the share. The requests this cache serves (a create's
# setattrs, a stat after a close) come within a few of the read or write they follow.
LIMIT = 4096


class InodeCache(Generic[T]):
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        # Asks nothing that new files kept in memory would change (IndexConnection).
        self._pragma = getattr(conn, "unsettled", conn.execute)
        self.rows: dict[int, T] = {}
        # (conn.total_changes, PRAGMA data_version) when `rows` were last known exact
        self.at: tuple[int, int] | None = None

    def _outside(self) -> int:
        """SQLite's count of commits by other connections (PRAGMA data_version)."""
        return self._pragma("PRAGMA data_version").fetchone()[0]

    def get(self, ino: int) -> T | None:
        now = (self.conn.total_changes, self._outside())
        if now != self.at:
            self.rows.clear()
            self.at = now
            return None
        return self.rows.get(ino)

    def read(self, ino: int, row: T) -> None:
        """`row` was just read from the index (after a `get` that missed)."""
        if (not self.conn.in_transaction and self.at is not None
                and self.conn.total_changes == self.at[0]):
            if len(self.rows) >= LIMIT:
                self.rows.clear()
            self.rows[ino] = row

    def wrote(self, before: int, after: int, rows: dict[int, T]) -> None:
        """A transaction ran from change count `before` to its commit at `after`, and the
        inode rows it wrote are exactly `rows` (ino -> the row as it is now); no other
        inode row changed, the link counts included. Kept only when no other connection
        committed since the cache was last exact: else `rows` may be stale already."""
        outside = None if self.at is None else self._outside()
        if (self.conn.in_transaction or self.conn.total_changes != after
                or outside is None or outside != self.at[1]):
            self.rows.clear()  # a caller's transaction (may roll back), or written since
            self.at = None
            return
        if self.at[0] != before or len(self.rows) + len(rows) > LIMIT:
            self.rows.clear()
        self.rows.update(rows)
        self.at = (after, outside)
