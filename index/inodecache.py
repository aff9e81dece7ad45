"""Inodes as last read, so that the mount's getattr and setattr, and a commit, need not
read an inode row again; kept exact without asking SQLite whether anything changed.

While a process serves a home, its one connection is the index's only writer (DESIGN,
"The shape": other commands ask it over the control socket). SQLite counts every row
that connection inserts, updates or deletes (`Connection.total_changes`: triggers
included, and rolled back changes too, as they were made). A cached inode is valid while
that count has not moved since it was read: any write, whatever it touched, empties the
cache. Rows read inside a transaction are never kept (a rollback would undo what they
show without moving the count). A writer that knows every inode row its transaction
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
        self.rows: dict[int, T] = {}
        self.at = -1  # conn.total_changes when `rows` were last known exact

    def get(self, ino: int) -> T | None:
        changes = self.conn.total_changes
        if changes != self.at:
            self.rows.clear()
            self.at = changes
            return None
        return self.rows.get(ino)

    def read(self, ino: int, row: T) -> None:
        """`row` was just read from the index (after a `get` that missed)."""
        if not self.conn.in_transaction and self.conn.total_changes == self.at:
            if len(self.rows) >= LIMIT:
                self.rows.clear()
            self.rows[ino] = row

    def wrote(self, before: int, after: int, rows: dict[int, T]) -> None:
        """A transaction ran from change count `before` to its commit at `after`, and the
        inode rows it wrote are exactly `rows` (ino -> the row as it is now); no other
        inode row changed, the link counts included."""
        if self.conn.in_transaction or self.conn.total_changes != after:
            self.rows.clear()  # a caller's transaction (may roll back), or written since
            self.at = -1
            return
        if self.at != before or len(self.rows) + len(rows) > LIMIT:
            self.rows.clear()
        self.rows.update(rows)
        self.at = after
