"""Node states out: a node's whole current state as the wire carries it (docs/protocol.md,
"Node states"), read from the catalog's rows, and the states stamped since a sequence
number (DESIGN, "Sequence numbers": superseded versions are never sent). A state sent to
a peer carries its content's bytes when the index holds them (index/inline.py), so the
peer has them when it applies the state: `data`, within a budget of bytes per batch."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Collection

from syncd.index.chunklist import ChunkList
from syncd.index.inline import encode


def xattrs_json(ino: str) -> str:
    """SQL for the extended attributes of inode `ino` (an SQL expression), removed ones
    too (value null): [[name, hex, clock, device], ...], or null when it has none. A
    tombstone keeps them in this form (schema.TOMBSTONE_XATTRS)."""
    return ("(SELECT json_group_array(json_array(x.name, CASE WHEN x.value IS NULL THEN"
            f" NULL ELSE hex(x.value) END, x.clock, x.device)) FROM xattrs x WHERE x.ino"
            f" = {ino} HAVING count(*) > 0)")


# The columns state_from_row reads, from `nodes n LEFT JOIN inodes i ON i.ino = n.ino`.
NODE_COLUMNS = (
    "n.id, n.kind, n.parent, n.name, n.deleted, n.conflict_of, n.seq, n.origin, n.ino, "
    "n.content_vv, n.content_clock, n.content_device, n.mode_vv, n.mode_clock, "
    "n.mode_device, n.place_vv, n.place_clock, n.place_device, "
    "i.hash, i.size, i.mtime_ns, i.chunks, i.target, "
    # a tombstone's mode is the one it kept (schema.TOMBSTONE_MODE), 0 when unknown
    "CASE WHEN n.deleted THEN coalesce(n.deleted_mode, 0) ELSE i.mode END, "
    "n.content_made, n.mode_made, n.place_made, "
    "n.xattr_vv, n.xattr_made, n.xattr_clock, n.xattr_device, "
    # a tombstone's extended attributes are those it kept (schema.TOMBSTONE_XATTRS)
    f"CASE WHEN n.deleted THEN n.deleted_xattrs ELSE {xattrs_json('n.ino')} END"
)


def state_from_row(row) -> dict:
    (node, kind, parent, name, deleted, conflict_of, _seq, _origin, ino, cvv, cclock, cdev,
     mvv, mclock, mdev, pvv, pclock, pdev, digest, size, mtime, chunks, target, mode,
     cmade, mmade, pmade, xvv, xmade, xclock, xdev, xattrs) = row
    alive = not deleted and ino is not None
    content = {"vv": json.loads(cvv), "made": json.loads(cmade), "clock": cclock,
               "device": cdev, "hash": None,
               "size": 0, "mtime_ns": 0, "chunks": [], "target": None}
    if alive and kind != "dir":
        content.update(hash=digest, size=size, mtime_ns=mtime,
                       chunks=ChunkList.from_blob(chunks).hex(),
                       target=base64.b64encode(target).decode() if target is not None
                       else None)
    return {
        "id": node, "kind": kind, "parent": parent, "name": name, "deleted": bool(deleted),
        "conflict_of": conflict_of, "content": content,
        "mode": {"vv": json.loads(mvv), "made": json.loads(mmade), "clock": mclock,
                 "device": mdev, "mode": mode if alive or deleted else 0},
        "place": {"vv": json.loads(pvv), "made": json.loads(pmade), "clock": pclock,
                  "device": pdev},
        "xattr": {"vv": json.loads(xvv), "made": json.loads(xmade), "clock": xclock,
                  "device": xdev, "attrs": _attrs(xattrs) if alive or deleted else {}},
    }


def _attrs(text: str | None) -> dict:
    """The wire form of an inode's extended attributes: name -> {"value": base64 or null
    (removed), "clock", "device"}."""
    if text is None:
        return {}
    return {name: {"value": None if value is None else
                   base64.b64encode(bytes.fromhex(value)).decode(),
                   "clock": clock, "device": device}
            for name, value, clock, device in json.loads(text)}


def attrs_json(attrs: dict) -> str | None:
    """The stored form (xattrs_json) of extended attributes in wire form, for a
    tombstone to keep."""
    if not attrs:
        return None
    return json.dumps([[name, None if a["value"] is None else
                        base64.b64decode(a["value"]).hex().upper(), a["clock"], a["device"]]
                       for name, a in attrs.items()])


def without_xattrs(state: dict) -> dict:
    """A state for a peer whose hello does not list "xattr" (an older version, whose
    models refuse the field)."""
    state.pop("xattr", None)
    return state


def xattr_bytes(state: dict) -> int:
    """About how many bytes a state's extended attributes take on the wire."""
    attrs = state.get("xattr", {}).get("attrs", {})
    return sum(len(n) + len(a["value"] or "") for n, a in attrs.items())


def node_row(conn: sqlite3.Connection, node: str):
    """A node's row in NODE_COLUMNS, or None."""
    return conn.execute(
        f"SELECT {NODE_COLUMNS} FROM nodes n LEFT JOIN inodes i ON i.ino = n.ino "
        "WHERE n.id = ?", (node,)).fetchone()


# The bytes of small files a batch of states carries at most (docs/protocol.md): with
# base64 (4 of every 3 bytes) and the states themselves, far below the 64 MiB of a body.
BATCH_DATA = 4 << 20

# A state's row with the bytes of its content when they are inline: a file of one stored
# chunk has that chunk's digest as its whole chunk list.
WITH_DATA = (f"SELECT {NODE_COLUMNS}, d.data FROM nodes n LEFT JOIN inodes i ON i.ino = n.ino"
             " LEFT JOIN inline d ON d.hash = i.chunks AND n.deleted = 0 AND n.kind = 'file'")


def state_of(conn: sqlite3.Connection, node: str, with_data: bool = False,
             xattrs: bool = True) -> dict | None:
    """A node's state for a peer, with its inline content's bytes if asked, and its
    extended attributes unless told not to."""
    if not with_data:
        row = node_row(conn, node)
        state = state_from_row(row) if row is not None else None
    else:
        row = conn.execute(f"{WITH_DATA} WHERE n.id = ?", (node,)).fetchone()
        state = _with_data(row) if row is not None else None
    return without_xattrs(state) if state is not None and not xattrs else state


def changes_since(conn: sqlite3.Connection, since: int, limit: int = 1000,
                  skip_origin: str | None = None,
                  data_budget: int = 0, xattrs: bool = True,
                  skip_origins: Collection[str] = ()) -> tuple[list[dict], int]:
    """Node states stamped after `since`, oldest first, and the sequence number to ask
    from next. States that `skip_origin` (or one of `skip_origins`) sent us are left out:
    it holds them. With a
    `data_budget`, states carry their inline content's bytes, and the batch ends before
    the state whose bytes would take it past that many. States carry their extended
    attributes unless `xattrs` is false (a peer that does not take them); their bytes
    count against the same budget (BATCH_DATA without one)."""
    if not data_budget:
        rows = conn.execute(
            f"SELECT {NODE_COLUMNS}, NULL FROM nodes n LEFT JOIN inodes i ON i.ino = n.ino "
            "WHERE n.seq > ? ORDER BY n.seq LIMIT ?", (since, limit)).fetchall()
    else:
        rows = conn.execute(f"{WITH_DATA} WHERE n.seq > ? ORDER BY n.seq LIMIT ?",
                            (since, limit)).fetchall()
    states, last, spent = [], since, 0
    for row in rows:
        if (skip_origin is None or row[7] != skip_origin) and row[7] not in skip_origins:
            state = _with_data(row)
            if not xattrs:
                without_xattrs(state)
            size = len(row[-1] or b"") + xattr_bytes(state)
            if size:
                if spent + size > (data_budget or BATCH_DATA) and states:
                    break
                spent += size
            states.append(state)
        last = row[6]
    return states, last


def _with_data(row) -> dict:
    state = state_from_row(row[:-1])
    if row[-1] is not None:
        state["content"]["data"] = encode(row[-1])
    return state
