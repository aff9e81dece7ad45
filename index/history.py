"""What happened here, for `syncd log` (docs/cli.md): read from the journal, which has a row
for every change stamped here (rule 1), and from the `sent` table, which has a row for every
push a peer confirmed (schema.py). Nothing else is recorded for it.

- arrived: a journal row of a state applied as a peer sent it (`apply`, `apply-create`,
  `apply-delete`, its detail naming the sender, `from`), or merged with the one here (its
  detail naming the sender as `with`).
- sent: a push's range of sequence numbers, (after, upto]: each node's last row in it went
  to the peer, unless that row came from the peer itself (a push leaves out what the peer
  sent us) or the node was stamped again before the push was read (up to `seen`: then its
  newer state went, in a later push). Superseded versions never travel, so a node counts
  once per push.
- conflict: a conflict copy that came into being here (an `apply-create` of a node that is
  a copy, made here or sent by a peer), or a node renamed as one after it lost its name
  (`conflict-rename`).
- dropped (`drop-unheld`: no peer held the content), recovered (`recover`: crash recovery's
  copy of uncommitted writes), restored (`restore`: brought back from a delete, rule 3).

Paths are where the nodes are now (a deleted node's, where it was), as `syncd pending`
gives them: the journal records nodes, not names.

Pruning (`prune_step`) deletes journal rows older than the cutoff except those sync and
`syncd status`/`pending` read: the last row (the sequence number and Lamport clock come
from it, Catalog._load_counters), each node's current stamp (pending's time and kind of
change, pending_for/waiting_for) and the row that made each node (whether it is new to a
peer). So the journal keeps at most two rows per node beyond the last log_keep_days.
"""

from __future__ import annotations

import bisect
import json
from typing import TYPE_CHECKING, NamedTuple

from syncd.index.peers import Peer

if TYPE_CHECKING:  # annotations only (schema.ReadOnly says why)
    import sqlite_utils

CREATES = ("create", "apply-create", "recover")
DELETES = ("delete", "apply-delete", "drop-unheld", "merge-dir")
APPLIED = ("apply", "apply-create", "apply-delete")
EVENTS = {"drop-unheld": "dropped", "recover": "recovered", "restore": "restored"}


class Event(NamedTuple):
    at: int  # unix seconds: the change's, or the confirmation's for `sent`
    event: str  # arrived, sent, conflict, dropped, recovered, restored
    peer: str | None  # the peer's name here (None: none, or a device not a peer here)
    device: str | None  # that peer's device id
    node: str
    path: str | None  # from the share's root
    kind: str | None  # file, dir or symlink
    change: str | None  # create, change or delete (arrived and sent)
    of: str | None  # a conflict copy's original's path


class _Row(NamedTuple):
    seq: int
    node: str
    op: str
    at: int
    sender: str | None  # the device that sent it as it is (detail "from")
    merged: str | None  # the device whose state was merged with this one's (detail "with")
    after: int | None  # the node's next journal row


def history(db: sqlite_utils.Database, since: int, peers: list[Peer],
            after: int = 0) -> list[Event]:
    """Every event at or after `since` (unix seconds), oldest first. With `after`, only
    those of the journal rows after that sequence number (a push's too): the status page
    reads the journal's tail so, at a cost that does not grow with the journal."""
    names = {p.device: p.name for p in peers if p.device}
    pushes = db.conn.execute(
        "SELECT peer, device, after, upto, seen, at FROM sent WHERE at >= ? AND upto > ?"
        " ORDER BY at, rowid", (since, after)).fetchall()
    first = db.conn.execute("SELECT min(seq) FROM journal WHERE seq > ? AND at >= ?",
                            (after, since)).fetchone()[0]
    starts = [max(p[2], after) for p in pushes] + ([first - 1] if first is not None else [])
    if not starts:
        return []
    rows = [_Row(seq, node, op, at, d.get("from"), d.get("with"), nxt)
            for seq, node, op, at, d, nxt in _with_details(db.conn.execute(
                "SELECT seq, node, op, at, detail,"
                " lead(seq) OVER (PARTITION BY node ORDER BY seq)"
                " FROM journal WHERE seq > ? ORDER BY seq", (min(starts),)))]
    found: list[tuple[tuple, dict]] = []
    for r in rows:
        if r.at < since:
            continue
        if r.op in APPLIED and (r.sender or r.merged):
            found.append(((r.at, 0, r.seq), {"event": "arrived", "row": r,
                                             "device": r.sender or r.merged}))
        elif r.op in ("apply-create", "conflict-rename"):
            found.append(((r.at, 0, r.seq), {"event": "conflict?", "row": r}))
        elif r.op in EVENTS:
            found.append(((r.at, 0, r.seq), {"event": EVENTS[r.op], "row": r}))
    seqs = [r.seq for r in rows]
    for n, (peer, device, after, upto, seen, at) in enumerate(pushes):
        last: dict[str, _Row] = {}
        made: set[str] = set()
        for r in rows[bisect.bisect_right(seqs, after):bisect.bisect_right(seqs, upto)]:
            last[r.node] = r
            if r.op in CREATES:
                made.add(r.node)
        for r in last.values():
            if (device and r.sender == device) or (r.after is not None and r.after <= seen):
                continue
            change = "delete" if r.op in DELETES else "create" if r.node in made else "change"
            found.append(((at, 1, n, r.seq), {"event": "sent", "row": r, "device": device,
                                              "peer": peer, "change": change, "at": at}))
    nodes = _nodes(db, {f["row"].node for _, f in found})
    me = db.conn.execute("SELECT value FROM meta WHERE key = 'device_id'").fetchone()[0]
    events = []
    for _, f in sorted(found, key=lambda kf: kf[0]):
        r: _Row = f["row"]
        path, kind, copy_of, made_by = nodes.get(r.node, (None, None, None, None))
        event, device, change, of = f["event"], f.get("device"), f.get("change"), None
        if event == "conflict?" or (event == "arrived" and r.op == "apply-create"
                                    and copy_of is not None):
            if copy_of is None:
                continue  # a node that arrived under its own name, placed by a decision
            event = "conflict"
            of = nodes.get(copy_of, (None,))[0]
            if device is None:  # made here: the other machine is the other version's
                device = made_by if made_by != me else nodes.get(copy_of, (0,) * 4)[3]
                device = None if device == me else device
        elif event == "arrived":
            change = ("create" if r.op == "apply-create" else
                      "delete" if r.op == "apply-delete" else "change")
        events.append(Event(f.get("at", r.at), event, f.get("peer") or names.get(device),
                            device, r.node, path, kind, change, of))
    return events


def _with_details(rows):
    for seq, node, op, at, detail, nxt in rows:
        yield seq, node, op, at, json.loads(detail) if detail else {}, nxt


def _nodes(db: sqlite_utils.Database, ids: set[str]) -> dict[str, tuple]:
    """Each node's (path, kind, conflict_of, content device), with its original's too."""
    if not ids:
        return {}
    extra = {r[0] for r in db.conn.execute(
        "SELECT conflict_of FROM nodes WHERE id IN (SELECT value FROM json_each(?))"
        " AND conflict_of IS NOT NULL", (json.dumps(sorted(ids)),))}
    wanted = json.dumps(sorted(ids | extra))
    paths = dict((node, path) for node, path, _ in db.conn.execute(
        "WITH RECURSIVE up (start, parent, path, depth) AS ("
        " SELECT id, parent, name, 0 FROM nodes WHERE id IN (SELECT value FROM json_each(?))"
        " UNION ALL SELECT up.start, n.parent, n.name || '/' || up.path, up.depth + 1"
        " FROM up JOIN nodes n ON n.id = up.parent WHERE n.id != 'root' AND up.depth < 4096)"
        # the path climbed furthest (SQLite takes a bare column from the max() row)
        " SELECT start, path, max(depth) FROM up GROUP BY start", (wanted,)))
    return {node: (paths.get(node), kind, copy_of, device)
            for node, kind, copy_of, device in db.conn.execute(
                "SELECT id, kind, conflict_of, content_device FROM nodes"
                " WHERE id IN (SELECT value FROM json_each(?))", (wanted,))}


# The rows pruning keeps whatever their age: see the module's docstring.
_PRUNE = (
    "DELETE FROM journal WHERE seq > :after AND seq <= :upto AND at < :before"
    " AND seq < (SELECT max(seq) FROM journal)"
    " AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.seq = journal.seq)"
    f" AND NOT (op IN {CREATES} AND EXISTS (SELECT 1 FROM nodes n WHERE n.id = journal.node))"
)


def prune_step(db: sqlite_utils.Database, before: int, after: int = 0,
               batch: int = 5000) -> tuple[int, int | None]:
    """Prune the history of what happened before `before` (unix seconds), one batch of at
    most `batch` journal rows after sequence number `after` in one short transaction, so
    that a caller on the serving thread can let other work run in between. Returns the
    rows deleted and where the next batch starts (None: done; the `sent` rows of that age
    went with the last batch)."""
    rows = db.conn.execute("SELECT seq, at FROM journal WHERE seq > ? ORDER BY seq LIMIT ?",
                           (after, batch)).fetchall()
    upto, done = after, len(rows) < batch
    for seq, at in rows:
        if at >= before:  # the journal is in time order, but for clock steps
            done = True
            break
        upto = seq
    with db.atomic():
        deleted = db.conn.execute(_PRUNE, {"after": after, "upto": upto,
                                           "before": before}).rowcount
        if done:
            db.conn.execute("DELETE FROM sent WHERE at < ?", (before,))
    return deleted, None if done else upto
