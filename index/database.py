"""The index's writable database: sqlite-utils' Database, whose transactions take the
write lock when they begin (BEGIN IMMEDIATE).

Commands (`syncd peer set`, `syncd config set`, ...) write the index from processes of
their own while the serving process writes it. A transaction begun plainly is a read
until its first write, and SQLite never waits to turn a read into a write when another
connection writes or has written since: it fails at once with "database is locked",
whatever busy_timeout says. Begun IMMEDIATE, it waits for the other writer as
busy_timeout says, and reads what that one committed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlite_utils


class IndexDatabase(sqlite_utils.Database):
    @contextlib.contextmanager
    def atomic(self) -> Iterator[IndexDatabase]:
        """One transaction, begun IMMEDIATE; inside another, a savepoint of it."""
        if self.conn.in_transaction:
            with super().atomic():
                yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
