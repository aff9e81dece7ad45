"""Old versions of files: kept, listed, expired and restored (docs/cli.md, "Old versions
and deleted files", `syncd versions`, `syncd restore`).

Content replaced or deleted here, by this machine or by a peer's change, becomes a row of
`versions` (index/schema.py, VERSIONS: triggers record it, the catalog counts its chunk
references in the same transaction). Its chunks then stay in the store because a version
refers to them, as an inode's do; when it expires, its references go and its chunks leave
by the one way every replaced chunk leaves (Catalog.retire: kept a while for peers that
still know the version, then removed). Expiry is by age (versions_keep_days), by total size
(versions_max, oldest first), and under a full disk, where old versions are given up before
anything else (ChunkStore.make_room).

Only content held here when it was replaced is kept: a version never fetched here is not
listed (the machines that held it keep it in their own lists).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from typing import NamedTuple

from syncd.index.catalog import Catalog
from syncd.index.chunklist import ChunkList
from syncd.index.effects import Effects
from syncd.index.schema import ROOT_INO

log = logging.getLogger(__name__)

# A full disk gives up the oldest versions at least this many bytes at a time.
GIVE_UP_BATCH = 64 << 20

_COLUMNS = "id, path, node, size, hash, mtime_ns, mode, device, replaced"


class Version(NamedTuple):
    id: int
    path: str  # where it was, from the share's root
    node: str
    size: int
    hash: str
    mtime_ns: int  # when it was written: its time
    mode: int
    device: str | None  # the device that made it
    replaced: int  # unix seconds when it was replaced or deleted here


def versions_of(cat: Catalog, path: str) -> list[Version]:
    """The kept versions of what is or was at `path`: those that were there, and those of
    the file there now wherever they were (it may have been renamed since). Oldest first."""
    node = cat.node_at(path) if path else None
    return [Version(*r) for r in cat.conn.execute(
        f"SELECT {_COLUMNS} FROM versions WHERE held = 1 AND (path = ? OR node = ?)"
        " ORDER BY mtime_ns, id", (path, node))]


def pick(versions: list[Version], at: int | None) -> Version | None:
    """The version to restore: the newest, or with `at` (unix seconds) the newest whose
    time (in whole seconds, as listed) is at or before it."""
    if at is not None:
        versions = [v for v in versions if v.mtime_ns // 10**9 <= at]
    return versions[-1] if versions else None


def choose(cat: Catalog, path: str, at: int | None) -> Version:
    """The version of `path` to restore (pick), or RestoreError saying why there is none."""
    found = versions_of(cat, path)
    chosen = pick(found, at)
    if chosen is None:
        raise RestoreError(f"/{path} has no kept version" if not found else
                           f"/{path} has no kept version from {_utc(at)} or before "
                           f"(the oldest is from {_utc(found[0].mtime_ns // 10**9)})")
    return chosen


def _utc(seconds: int | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def usage(cat: Catalog) -> tuple[int, int]:
    """How many versions are kept, and their bytes (each counted at its size)."""
    return cat.conn.execute(
        "SELECT count(*), coalesce(sum(size), 0) FROM versions WHERE held = 1").fetchone()


def expire(cat: Catalog, keep_seconds: float, max_bytes: int,
           now: float | None = None) -> int:
    """Drop the versions replaced more than `keep_seconds` ago, then the oldest until the
    rest take at most `max_bytes`. How many went."""
    cutoff = int((time.time() if now is None else now) - keep_seconds)
    gone = [r[0] for r in cat.conn.execute(
        "SELECT id FROM versions WHERE held = 1 AND replaced < ?", (cutoff,))]
    total = usage(cat)[1] - cat.conn.execute(
        "SELECT coalesce(sum(size), 0) FROM versions WHERE held = 1 AND replaced < ?",
        (cutoff,)).fetchone()[0]
    if total > max_bytes:
        for vid, size in cat.conn.execute(
                "SELECT id, size FROM versions WHERE held = 1 AND replaced >= ?"
                " ORDER BY replaced, id", (cutoff,)).fetchall():
            gone.append(vid)
            total -= size
            if total <= max_bytes:
                break
    _drop(cat, gone)
    return len(gone)


def keep_versions(cat: Catalog) -> None:
    """From now on keep old versions (the serving process, which expires them), and give
    them up first when the disk is full (ChunkStore.make_room)."""
    cat.keeps_versions = True
    cat.store.give_up_versions = lambda: give_up(cat)


def give_up(cat: Catalog, at_least: int = GIVE_UP_BATCH) -> bool:
    """The disk is full: drop the oldest versions, at least `at_least` bytes of them (or
    all). True when any went. Never inside a transaction (a rollback would bring back rows
    whose chunks are gone); when the index cannot write either, with its reserve."""
    if cat.conn.in_transaction:
        return False
    gone, freed = [], 0
    for vid, size in cat.conn.execute(
            "SELECT id, size FROM versions WHERE held = 1 ORDER BY replaced, id"):
        gone.append(vid)
        freed += size
        if freed >= at_least:
            break
    try:
        _drop(cat, gone)
    except sqlite3.Error:
        # The index could not write either: the reserve is there for that (a delete must
        # still commit on a full disk); the serving process makes it again once there is
        # room (ChunkStore.keep_reserve).
        if not cat.store.release_reserve():
            return False
        try:
            _drop(cat, gone)
        except sqlite3.Error:
            return False
    if gone:
        log.info("gave up %d old version(s), the oldest: the disk is full", len(gone))
    return bool(gone)


def _drop(cat: Catalog, ids: list[int]) -> None:
    if not ids:
        return

    def run() -> list[bytes]:
        garbage = []
        for blob, in cat.conn.execute(
                "DELETE FROM versions WHERE id IN (SELECT value FROM json_each(?))"
                " RETURNING chunks", (json.dumps(ids),)).fetchall():
            garbage += cat.release_chunk_refs(ChunkList.from_blob(blob))
        return garbage

    cat.retire(cat.transaction(run))


class RestoreError(Exception):
    """A restore that cannot be done; the message says why. Nothing was changed."""


def restore(cat: Catalog, version: Version, to: str | None, uid: int, gid: int) -> Effects:
    """Bring `version` back as a new version with the current time as its mtime: at `to`
    (which must not exist), or where it was, over the file there now or as a new file
    (with any missing directories above it). Its content must be here (Catalog.absent).
    One transaction; what it changed, for the kernel's caches."""
    row = cat.conn.execute("SELECT chunks FROM versions WHERE id = ?",
                           (version.id,)).fetchone()
    if row is None:  # expired while its content was being fetched
        raise RestoreError(f"that version of /{version.path} is no longer kept")
    chunks = ChunkList.from_blob(row[0])
    target = version.path if to is None else to
    effects = Effects()

    def run() -> None:
        node = cat.node_at(target)
        if node is not None and to is not None:
            raise RestoreError(f"/{target} exists: give --to a path that does not")
        now = time.time_ns()
        if node is None:
            parent_ino, name = _make_parents(cat, target, uid, gid, effects)
            cat.create(parent_ino, name, "file", version.mode, uid, gid, mtime_ns=now,
                       content=(chunks, version.size))
            effects.entries.add((parent_ino, name))
            return
        _replace(cat, node, target, chunks, version.size, now, effects)

    cat.transaction(run)
    cat.detached.update(effects.detached)
    return effects


def _make_parents(cat: Catalog, path: str, uid: int, gid: int,
                  effects: Effects) -> tuple[int, str]:
    """The inode of the directory `path` goes in, made (mode 0755) where missing, and
    its name."""
    *dirs, name = path.split("/")
    ino = ROOT_INO
    for i, part in enumerate(dirs):
        entry = cat.lookup(ino, part)
        if entry is None:
            entry = cat.create(ino, part, "dir", 0o755, uid, gid)
            effects.entries.add((ino, part))
        elif entry.inode.kind != "dir":
            raise RestoreError(f"/{'/'.join(dirs[:i + 1])} is not a directory: restore "
                               "with --to somewhere else")
        ino = entry.inode.ino
    return ino, name


def _replace(cat: Catalog, node: str, path: str, chunks: ChunkList, size: int, now: int,
             effects: Effects) -> None:
    """The file `node` takes the content as an edit made here, in an inode of its own (as
    a peer's change does: handles open on the old one keep their bytes, DESIGN rule 6)."""
    row = cat.conn.execute(
        "SELECT n.kind, n.ino, n.content_vv, i.mode, i.uid, i.gid FROM nodes n"
        " JOIN inodes i ON i.ino = n.ino WHERE n.id = ?", (node,)).fetchone()
    kind, old_ino, vv, mode, uid, gid = row
    if kind != "file":
        raise RestoreError(f"/{path} is a {'directory' if kind == 'dir' else kind} now: "
                           "restore with --to somewhere else")
    new_ino = cat.conn.execute(
        "INSERT INTO inodes (kind, mode, uid, gid, size, mtime_ns, ctime_ns, atime_ns, hash,"
        " chunks) VALUES ('file', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (mode, uid, gid, size, now, now, now, chunks.hash, chunks.blob)).lastrowid
    cat.add_chunk_refs(chunks, size)
    cat.conn.execute("INSERT INTO xattrs (ino, name, value, clock, device)"
                     " SELECT ?, name, value, clock, device FROM xattrs WHERE ino = ?",
                     (new_ino, old_ino))
    cat.stamp_local(node, "content", ("content",), {"hash": chunks.hash, "size": size,
                                                    "restored": True}, (vv,),
                    {"ino": new_ino})
    parent, name = cat.placement(node)
    parent_ino = cat.ino_of(parent)
    effects.entries.add((parent_ino, name))
    effects.inodes.add(parent_ino)
    if not cat.nodes_of(old_ino):
        effects.orphans.add(old_ino)
        effects.detached[old_ino] = (node, json.loads(vv))


def check_restorable(cat: Catalog, version: Version) -> list[bytes]:
    """The chunks of `version` that are not here (to fetch before restoring it)."""
    blob, = cat.conn.execute("SELECT chunks FROM versions WHERE id = ?",
                             (version.id,)).fetchone()
    return cat.absent(ChunkList.from_blob(blob), version.size)

