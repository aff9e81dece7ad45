"""The row writes that applying a node state is made of, shared by index/merge.py and
index/placement.py: a fresh inode for a state's content, its versions, the stamps of an
applied state and of a decision, and a directory entry that changed. Call them inside a
Catalog transaction."""

from __future__ import annotations

import base64
import json
import time

from syncd.index.catalog import ASPECTS, Catalog
from syncd.index.chunklist import ChunkList
from syncd.index.effects import Effects
from syncd.index.inline import carried
from syncd.index.schema import ROOT_INO


def new_inode(cat: Catalog, state: dict, effects: Effects) -> int:
    """An inode holding the state's content (its chunks may not be here yet: `local`;
    small content comes with the state)."""
    c = state["content"]
    uid, gid = cat.conn.execute(
        "SELECT uid, gid FROM inodes WHERE ino = ?", (ROOT_INO,)).fetchone()
    now = time.time_ns()
    is_file = state["kind"] == "file"
    size = c["size"] if is_file else 0
    chunks = ChunkList.from_hex(c["chunks"], size) if is_file else ChunkList([])
    target = base64.b64decode(c["target"]) if state["kind"] == "symlink" else None
    digest = chunks.hash if is_file else c["hash"]
    size = size if is_file else len(target or b"")
    mtime = c["mtime_ns"] if state["kind"] != "dir" else now
    # Small content arrives with its state (docs/protocol.md): here at once.
    inline = carried(c, chunks, size) if is_file else {}
    local = all(d in inline for d in cat.absent(chunks, size))
    ino = cat.conn.execute(
        "INSERT INTO inodes (kind, mode, uid, gid, size, mtime_ns, ctime_ns, atime_ns,"
        " hash, chunks, target, local) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (state["kind"], state["mode"]["mode"] & 0o7777, uid, gid, size, mtime, now, now,
         digest, chunks.blob, target, int(local)),
    ).lastrowid
    if chunks.entries:
        cat.add_chunk_refs(chunks, size, inline)
    if not local:
        effects.missing.add(ino)
    if state["xattr"]["attrs"]:
        write_xattrs(cat, ino, state)
    return ino


def no_xattrs() -> dict:
    """The xattr version of a state from a peer that does not carry extended attributes:
    none, at no version (so whatever is here wins)."""
    return {"vv": {}, "made": {}, "clock": 0, "device": None, "attrs": {}}


def write_xattrs(cat: Catalog, ino: int, state: dict) -> None:
    """The inode's extended attributes become the state's, removed ones kept as rows
    without a value (index/schema.py, XATTRS)."""
    cat.conn.execute("DELETE FROM xattrs WHERE ino = ?", (ino,))
    cat.conn.executemany(
        "INSERT INTO xattrs (ino, name, value, clock, device) VALUES (?, ?, ?, ?, ?)",
        [(ino, name, None if a["value"] is None else base64.b64decode(a["value"]),
          a["clock"], a["device"]) for name, a in state["xattr"]["attrs"].items()])


def set_versions(cat: Catalog, node: str, state: dict) -> None:
    sets, params = [], []
    for a in ASPECTS:
        sets += [f"{a}_vv = ?", f"{a}_made = ?", f"{a}_clock = ?", f"{a}_device = ?"]
        params += [json.dumps(state[a]["vv"], sort_keys=True),
                   json.dumps(state[a]["made"], sort_keys=True), state[a]["clock"],
                   state[a]["device"]]
    cat.conn.execute(f"UPDATE nodes SET {', '.join(sets)} WHERE id = ?", (*params, node))


def stamp_state(cat: Catalog, node: str, op: str, origin: str | None, state: dict,
                sender: str | None = None) -> None:
    """Catalog.stamp_applied for a state applied as it is: journalled as made by the
    device of its latest version, and as from `origin` (None: merged here; `sender` is
    then the peer whose state was merged with this one's, for `syncd log`)."""
    device = max((state[a] for a in ASPECTS), key=lambda v: v["clock"])["device"]
    detail = {"from": origin} if origin else {"merged": True}
    if sender and not origin:
        detail["with"] = sender
    cat.stamp_applied(node, op, origin, device, detail)


def decided(cat: Catalog, node: str, op: str, aspects: tuple[str, ...] = ("place",)) -> None:
    """A change this peer decides because of what it holds (a name contest, a merge of
    directories, a cycle, a directory brought back): a new local version, like a user's
    rename. Merging versions of one node needs none, since every peer computes the
    same result; these decisions depend on the state each peer has when the clash
    reaches it, so without a version of their own a peer that decided otherwise, or
    never saw the clash, would keep what it has for ever (soak bug 5)."""
    cat.stamp_local(node, op, aspects, {"decided": True})


def entry_changed(cat: Catalog, parent: str | None, name: str, effects: Effects) -> None:
    """A name under `parent` changed: the kernel forgets the entry, and the directory's
    local mtime and ctime follow."""
    if parent is None:
        return
    row = cat.conn.execute("SELECT ino FROM nodes WHERE id = ? AND deleted = 0",
                           (parent,)).fetchone()
    if row is not None and row[0] is not None:
        effects.entries.add((row[0], name))
        effects.inodes.add(row[0])
        now = time.time_ns()
        cat.conn.execute("UPDATE inodes SET mtime_ns = ?, ctime_ns = ? WHERE ino = ?",
                         (now, now, row[0]))
