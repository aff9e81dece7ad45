"""A peer's pending catch-up (DESIGN, "Sequence numbers").

Node states go out through index/states.py and come in through index/merge.py.
"""

from __future__ import annotations


def pending(conn, cursor: int, device: str | None,
            upto: int | None = None) -> tuple[int, int, int | None]:
    """What a peer has yet to receive (DESIGN, "Sequence numbers"): the nodes stamped
    after its cursor (and up to `upto`) that it did not send us, their content bytes, and
    the journal time (unix seconds) of the oldest."""
    changes, size, oldest_seq = conn.execute(
        "SELECT count(*), coalesce(sum(i.size), 0), min(n.seq) FROM nodes n "
        "LEFT JOIN inodes i ON i.ino = n.ino AND n.kind = 'file' "
        "WHERE n.seq > ? AND n.seq <= ? AND (n.origin IS NULL OR n.origin != ?)",
        (cursor, upto if upto is not None else 1 << 62, device or ""),
    ).fetchone()
    row = conn.execute("SELECT at FROM journal WHERE seq = ?", (oldest_seq,)).fetchone()
    return changes, size, row[0] if row else None
