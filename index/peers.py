"""Peer records: the peers table (DESIGN, "Peer states"), and what each has yet to receive.

The operator's commands add, remove and take peers out of use; the serving process loads
them and saves what it learns of each (state, device, cursor, last answer, last error).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # annotations only (schema.ReadOnly says why)
    import sqlite_utils


# What the serving process records about a peer as it talks to it (url: the address that
# answered last, of its addresses).
SAVED_COLUMNS = frozenset({"device", "state", "cursor", "last_seen", "last_error", "url",
                           "fingerprint", "cert"})


class PeerExists(Exception):
    """A peer of that name is already in the table."""


class NoSuchPeer(LookupError):
    """No peer of that name is in the table."""


@dataclass
class Peer:
    name: str
    url: str
    device: str | None  # learned at the first hello
    state: str  # unknown, online, offline or outofuse
    cursor: int  # our sequence number up to which it confirmed our changes (rule 5)
    last_seen: int | None  # unix seconds of its last answer
    last_error: str | None
    addresses: list[str] = field(default_factory=list)  # tried in order, `url` first
    fingerprint: str | None = None  # its certificate's SHA-256: given at add, or pinned
    cert: str | None = None  # its certificate (PEM), pinned at the first proven hello


class Pending(NamedTuple):
    changes: int
    bytes: int
    oldest: int | None  # unix seconds of the oldest change's journal row


def add_peer(db: sqlite_utils.Database, name: str, *addresses: str,
             fingerprint: str | None = None) -> None:
    """A new peer at these addresses (tried in order), state unknown, its certificate
    that of `fingerprint` when given (else the one its first proven hello shows);
    PeerExists when the name is taken."""
    if not addresses:
        raise ValueError("a peer needs an address")
    try:
        with db.atomic():
            db.conn.execute("INSERT INTO peers (name, url, addresses, fingerprint)"
                            " VALUES (?, ?, ?, ?)", (name, addresses[0],
                                                     json.dumps(list(addresses)), fingerprint))
    except sqlite3.IntegrityError:
        raise PeerExists(name) from None


def set_peer_addresses(db: sqlite_utils.Database, name: str, addresses: list[str]) -> None:
    """Replace a peer's addresses; the first is tried first until one answers. Its device,
    state and cursor stay: identity comes from its hello, never from an address.
    NoSuchPeer when there is none of that name."""
    if not addresses:
        raise ValueError("a peer needs an address")
    with db.atomic():
        if not db.conn.execute("UPDATE peers SET addresses = ?, url = ? WHERE name = ?",
                               (json.dumps(addresses), addresses[0], name)).rowcount:
            raise NoSuchPeer(name)


def remove_peer(db: sqlite_utils.Database, name: str) -> None:
    """Forget a peer and its catch-up; NoSuchPeer when there is none of that name."""
    with db.atomic():
        if not db.conn.execute("DELETE FROM peers WHERE name = ?", (name,)).rowcount:
            raise NoSuchPeer(name)


def set_peer_use(db: sqlite_utils.Database, name: str, use: str) -> None:
    """use: "outofuse" (never contacted, catch-up kept) or "auto" (probed afresh, so its
    state starts over as unknown). NoSuchPeer when there is none of that name."""
    if use not in ("outofuse", "auto"):
        raise ValueError(f"bad use {use!r}")
    state = "outofuse" if use == "outofuse" else "unknown"
    with db.atomic():
        if not db.conn.execute("UPDATE peers SET state = ? WHERE name = ?",
                               (state, name)).rowcount:
            raise NoSuchPeer(name)


def list_peers(db: sqlite_utils.Database) -> list[Peer]:
    """Every peer, by name."""
    return [Peer(*row[:7], json.loads(row[7]) or [row[1]], *row[8:]) for row in db.conn.execute(
        "SELECT name, url, device, state, cursor, last_seen, last_error, addresses,"
        " fingerprint, cert FROM peers ORDER BY name")]


def save_peer(db: sqlite_utils.Database, name: str, **columns) -> None:
    """Record what the serving process learnt of a peer (SAVED_COLUMNS only). A url that
    is not one of its addresses is not saved: the operator replaced them meanwhile
    (`syncd peer set NAME --address`), and the serving process reloads the peer."""
    if not columns or not set(columns) <= SAVED_COLUMNS:
        raise ValueError(f"cannot save {sorted(columns)} of a peer")
    with db.atomic():
        if "url" in columns and not db.conn.execute(
                "SELECT 1 FROM peers, json_each(peers.addresses) WHERE name = ?"
                " AND json_each.value = ?", (name, columns["url"])).fetchone():
            del columns["url"]
            if not columns:
                return
        db.conn.execute(
            f"UPDATE peers SET {', '.join(f'{c} = ?' for c in columns)} WHERE name = ?",
            (*columns.values(), name))


def confirm_push(db: sqlite_utils.Database, name: str, device: str | None, after: int,
                 upto: int, seen: int | None, last_seen: int | None) -> None:
    """The peer confirmed a push of the changes in (after, upto]: its cursor moves (rule 5)
    and, when the push carried states (`seen`: this device's sequence number when they were
    read), the push is recorded for `syncd log` (the `sent` table), in one transaction."""
    with db.atomic():
        db.conn.execute("UPDATE peers SET cursor = ?, last_seen = ? WHERE name = ?",
                        (upto, last_seen, name))
        if seen is not None:
            db.conn.execute(
                "INSERT INTO sent (peer, device, after, upto, seen, at)"
                " VALUES (?, ?, ?, ?, ?, ?)", (name, device, after, upto, seen,
                                               int(time.time())))


# A node whose current state the peer whose device id is :peer holds already (DESIGN,
# "Sequence numbers"): it sent us that state (`origin`), or it made every version of it,
# by version vector: each aspect's version is that device's (`device`), and nothing was
# merged into it since (its vector is still the one it was made at, `made`; both are
# canonical JSON, so equal vectors are equal text). Column comparisons only, no JSON
# parsing: a count costs what the scan of the nodes stamped after the cursor costs.
HELD = ("(n.origin IS :peer OR (n.content_device IS :peer AND n.mode_device IS :peer"
        " AND n.place_device IS :peer AND n.content_vv = n.content_made"
        " AND n.mode_vv = n.mode_made AND n.place_vv = n.place_made))")


def pending_for(db: sqlite_utils.Database, peer: Peer, upto: int | None = None) -> Pending:
    """What a peer has yet to receive (DESIGN, "Sequence numbers"): the nodes stamped
    after its cursor (and up to `upto`) whose current state it does not hold (HELD),
    their content bytes, and the journal time of the oldest."""
    changes, size, oldest_seq = db.conn.execute(
        "SELECT count(*), coalesce(sum(i.size), 0), min(n.seq) FROM nodes n "
        "LEFT JOIN inodes i ON i.ino = n.ino AND n.kind = 'file' "
        f"WHERE n.seq > :cursor AND n.seq <= :upto AND NOT {HELD}",
        {"cursor": peer.cursor, "upto": upto if upto is not None else 1 << 62,
         "peer": peer.device or ""},
    ).fetchone()
    row = db.conn.execute("SELECT at FROM journal WHERE seq = ?", (oldest_seq,)).fetchone()
    return Pending(changes, size, row[0] if row else None)


class Waiting(NamedTuple):
    path: str  # from the share's root, without a leading slash
    kind: str  # file, dir or symlink
    change: str  # create (new to the peer), delete, or change (anything else)
    size: int  # a live file's content size; 0 for the others
    since: int  # unix seconds of the node's change that waits (its stamp's journal row)


def waiting_for(db: sqlite_utils.Database, peer: Peer) -> list[Waiting]:
    """The nodes pending_for counts, oldest first, each with its path and what waits: a
    node that came into being here after the peer's cursor (a journal row `create`,
    `recover` or `apply-create`), and that the peer did not make (its id names its maker), is new to
    it."""
    rows = db.conn.execute(
        "WITH RECURSIVE waiting (id, kind, deleted, size, seq) AS ("
        " SELECT n.id, n.kind, n.deleted, coalesce(i.size, 0), n.seq FROM nodes n"
        " LEFT JOIN inodes i ON i.ino = n.ino AND n.kind = 'file'"
        f" WHERE n.seq > :cursor AND NOT {HELD}),"
        " up (start, parent, path, depth) AS ("
        " SELECT id, parent, name, 0 FROM nodes WHERE id IN (SELECT id FROM waiting)"
        " UNION ALL SELECT up.start, n.parent, n.name || '/' || up.path, up.depth + 1"
        " FROM up JOIN nodes n ON n.id = up.parent WHERE n.id != 'root'),"
        # the path climbed furthest (SQLite takes a bare column from the max() row)
        " paths (id, path, depth) AS (SELECT start, path, max(depth) FROM up"
        " GROUP BY start),"
        " created (id) AS (SELECT DISTINCT node FROM journal"
        " WHERE seq > :cursor AND op IN ('create', 'apply-create', 'recover'))"
        " SELECT p.path, w.kind, w.deleted, w.id IN created AND w.id NOT LIKE :made,"
        " w.size, j.at FROM waiting w JOIN paths p ON p.id = w.id"
        " JOIN journal j ON j.seq = w.seq ORDER BY w.seq",
        {"cursor": peer.cursor, "peer": peer.device or "",
         "made": f"{peer.device}:%" if peer.device else ""}).fetchall()
    return [Waiting(path, kind, "delete" if deleted else "create" if new else "change",
                    size, at) for path, kind, deleted, new, size, at in rows]
