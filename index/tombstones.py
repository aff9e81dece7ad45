"""Tombstone collection: a deleted node's row goes once nobody can need it (DESIGN,
"Sequence numbers"; docs/protocol.md, "Tombstones", has the whole argument).

A tombstone is how a delete wins over the versions it saw and loses to those it did not
(rule 3, rule 4). Dropped too early, a peer that still holds a version the delete saw
could send it back, and the file would return. So a tombstone goes only when every
machine that could send such a version has the delete, as its cursor says (rule 5: a
cursor moves only once the changes are applied): every configured peer (one never
reached has cursor 0), and on every relay this device's own cursor and each member not
lost, once we read that member's batches written before it had the delete and once its
newest snapshot (what a newcomer starts from) has it too. Such a machine sends only its
current state, which is the tombstone or a change that dominates it: a concurrent edit
then arrives as a new node here and is alive, as rule 3 says it must be. What the
collection keeps whatever the cursors say: directory tombstones that stand for a merged
directory, tombstones a conflict copy names, or whose node has a state in limbo or
held, or that came from a relay member (the cursors of our batches say nothing of its
batches), those `syncd log` still shows, and that of a file a writer here still has
open on the inode the delete took from it (its close makes a version concurrent with the
delete, Merger.commit_detached, which needs the tombstone). And the cursors must have passed it
tombstone_keep_days ago: a push a peer built before it had the delete lives for a
request's time (its signature's 300 s), and a person may still want to see the delete.

The collection runs in the serving process, off the mount's requests, a batch of at most
`BATCH` tombstones per transaction."""

from __future__ import annotations

import json
import sqlite3

from syncd.index.catalog import Catalog

BATCH = 500  # tombstones examined per transaction

# Who holds collection back, and the stamp of ours up to which each had our changes. A
# relay member counts once we read its batches up to the newest it had when it said what
# it read of ours (`wrote`), and no further than its newest snapshot read.
HOLDERS = """
SELECT 'peer ' || name, cursor FROM peers
UNION ALL SELECT 'relay ' || name, cursor FROM relays
UNION ALL SELECT 'relay ' || r.relay || ' member ' || r.device,
    CASE WHEN r.upto >= r.wrote THEN min(r.ours, r.snapshot) ELSE 0 END
    FROM relay_reads r JOIN relays ON relays.name = r.relay
    WHERE r.lost = 0 AND r.device != :me
"""

# The tombstones among those examined that may go (see the module's docstring).
COLLECTABLE = """
n.ignored = 0 AND j.at < :log_before
AND NOT (n.kind = 'dir' AND n.conflict_of IS NOT NULL)
AND NOT EXISTS (SELECT 1 FROM nodes c WHERE c.conflict_of = n.id)
AND NOT EXISTS (SELECT 1 FROM limbo WHERE limbo.id = n.id)
AND NOT EXISTS (SELECT 1 FROM held WHERE held.id = n.id)
AND (n.origin IS NULL OR n.origin NOT IN (SELECT device FROM relay_reads))
AND n.id NOT IN (SELECT value FROM json_each(:writing))
"""


def holders(conn: sqlite3.Connection, device: str) -> list[tuple[str, int]]:
    """(who, stamp of ours it had up to) of every peer, relay and relay member."""
    return conn.execute(HOLDERS, {"me": device}).fetchall()


def horizon(cat: Catalog) -> int:
    """The stamp up to which every peer, relay and relay member not lost had our changes."""
    return min([cat.seq, *(n for _, n in holders(cat.conn, cat.device))])


def observe(cat: Catalog, now: int) -> None:
    """Record the horizon at `now` when it moved since the last one recorded. It moves
    back when a peer or relay is added (its cursor is 0): what was recorded beyond it
    no longer holds."""
    seq = horizon(cat)
    with cat.db.atomic():
        last = cat.conn.execute("SELECT max(seq) FROM horizons").fetchone()[0]
        if last is not None and seq < last:
            cat.conn.execute("DELETE FROM horizons WHERE seq > ?", (seq,))
        if last is None or seq != last:
            cat.conn.execute("INSERT INTO horizons (at, seq) VALUES (?, ?)", (now, seq))


def passed(cat: Catalog, before: int) -> int:
    """The stamp that the horizon had passed at `before` (unix seconds); 0 when none is
    recorded that old. Older records than that one are forgotten."""
    with cat.db.atomic():
        row = cat.conn.execute("SELECT max(seq), max(at) FROM horizons WHERE at <= ?",
                               (before,)).fetchone()
        if row[0] is None:
            return 0
        cat.conn.execute("DELETE FROM horizons WHERE at < ?", (row[1],))
    return row[0]


def collect_step(cat: Catalog, upto: int, log_before: int, after: int = 0,
                 limit: int = BATCH) -> tuple[int, int | None]:
    """Drop, in one transaction, the collectable tombstones among the next `limit`
    stamped after `after` and up to `upto`; tombstones stamped in the journal at or
    after `log_before` (unix seconds) stay. Returns how many went and where the next
    step starts (None: done)."""
    def run() -> tuple[int, int | None]:
        rows = cat.conn.execute(
            f"SELECT n.seq, n.entry, ({COLLECTABLE}) FROM nodes n"
            " JOIN journal j ON j.seq = n.seq"
            " WHERE n.deleted = 1 AND n.seq > :after AND n.seq <= :upto"
            " ORDER BY n.seq LIMIT :limit",
            {"after": after, "upto": upto, "log_before": log_before, "limit": limit,
             "writing": json.dumps(sorted({node for node, _ in cat.detached.values()}))},
        ).fetchall()
        gone = [(entry,) for _, entry, ok in rows if ok]
        cat.conn.executemany("DELETE FROM nodes WHERE entry = ? AND deleted = 1", gone)
        return len(gone), rows[-1][0] if len(rows) == limit else None

    return cat.transaction(run)


def kept(conn: sqlite3.Connection) -> int:
    """How many tombstones are kept (a running total, schema.TOMBSTONES)."""
    return conn.execute("SELECT tombstones FROM totals").fetchone()[0]


def held_by(conn: sqlite3.Connection, device: str) -> list[str]:
    """Who has not had the oldest tombstone yet, so holds collection back."""
    oldest = conn.execute(
        "SELECT min(seq) FROM nodes WHERE deleted = 1 AND seq > 0").fetchone()[0]
    if oldest is None:
        return []
    return sorted(who for who, n in holders(conn, device) if n < oldest)
