"""The catalog: nodes, inodes, versions and the journal (DESIGN, "The data model").

Every public method that changes the share runs in one transaction that also stamps each
changed node with the next sequence number, bumps its version vector and Lamport clock for
the aspect that changed (content, mode or placement) and appends a journal row (rule 1).
Local-only facts (owner, atime) change without a stamp. States applied from peers are
stamped here too (`stamp_applied`, for index/merge.py), so the journal and the counters
have this one writer.

Errors are OSError with the errno POSIX gives, so the mount can pass them on as they are.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from syncd.index.chunklist import ChunkList, digest_of, file_hash, slot_length
from syncd.index.draft import Draft, Sealed
from syncd.index.faults import crash_point
from syncd.index.ignore import IGNORE_FILE, RULES_MAX, IgnoreRules
from syncd.index.inline import InlineChunks, inline_size, inline_slot
from syncd.index.inodecache import InodeCache
from syncd.index.schema import (
    LOCAL_ID_PREFIX,
    LOCAL_ONLY_KINDS,
    ROOT_ID,
    ROOT_INO,
    IndexConnection,
    open_db,
)
from syncd.index.states import xattrs_json
from syncd.index.store import ChunkStore

if TYPE_CHECKING:  # annotations only (schema.ReadOnly says why)
    import sqlite_utils

ASPECTS = ("content", "mode", "place", "xattr")
# Each aspect's version columns: vector, the vector its maker made, Lamport clock, device.
VERSION_COLUMNS = {a: (f"{a}_vv", f"{a}_made", f"{a}_clock", f"{a}_device") for a in ASPECTS}
NAME_MAX = 255
INODE_BLOCK = 1024  # inode numbers reserved at a time for new files (Catalog._take_ino)
# Extended attributes (docs/cli.md, "What is shared"): a value is at most XATTR_SIZE_MAX
# bytes (Linux's own limit, which the kernel checks before we see it; a peer's state is
# checked against it too), a name at most XATTR_NAME_MAX, and one file's names and values
# at most XATTR_TOTAL_MAX together, so a node state stays small; more is E2BIG.
XATTR_SIZE_MAX = 64 << 10
XATTR_NAME_MAX = 255
XATTR_TOTAL_MAX = 128 << 10
# What a node state's attributes may hold on the wire (names of every entry, removed ones
# too, and the values): a merge keeps each machine's concurrent sets (rules.merge_xattrs),
# so it passes XATTR_TOTAL_MAX; this leaves room for 128 machines' at once.
XATTR_STATE_MAX = 16 << 20
# Version vectors and journal details as stored: JSON with sorted keys. One encoder for
# all (json.dumps with options builds a new one per call).
to_json = json.JSONEncoder(sort_keys=True).encode
KIND_FILE = to_json({"kind": "file"})  # a new file's journal detail
EMPTY_HASH = file_hash(b"")  # an empty file's content hash
# nodes.ignored: 1 for an ignored node, and for one that was shared before, a bit per
# aspect changed here while it was ignored: what gets a new version once it is shared.
IGNORED_CHANGED = {"content": 2, "mode": 4, "place": 8, "xattr": 16}
# nodes.ignored: local only because it was made or changed here while this machine was
# receive-only, not because of the rules (with 1 and the bits above; docs/protocol.md,
# "Receive-only machines"): a local edit, until `syncd revert`, a peer's newer version or a
# change of mode.
EDITED_HERE = 32
# What this machine does with changes (docs/cli.md, "syncd mode"; the setting `mode`,
# syncd/settings.py): the first sends and applies them, the second keeps its own and takes
# the group's, the third sends its own and holds the group's back (index/merge.py).
SEND_RECEIVE, RECEIVE_ONLY, SEND_ONLY = "send-receive", "receive-only", "send-only"
MODES = (SEND_RECEIVE, RECEIVE_ONLY, SEND_ONLY)

# An Inode's columns. The table goes unaliased, so that an UPDATE of it can return them.
INODE_COLUMNS = (
    "inodes.ino, inodes.kind, inodes.mode, inodes.uid, inodes.gid, inodes.size, "
    "inodes.mtime_ns, inodes.ctime_ns, inodes.atime_ns, inodes.hash, inodes.target, "
    "inodes.rdev, "
    "(SELECT count(*) FROM nodes l WHERE l.ino = inodes.ino AND l.deleted = 0) AS nlink"
)


# The live nodes of a subtree: bind the top node's id; select from `subtree`.
SUBTREE = (
    "WITH RECURSIVE subtree (id, kind, ino) AS ("
    " SELECT id, kind, ino FROM nodes WHERE id = ? AND deleted = 0"
    " UNION SELECT n.id, n.kind, n.ino FROM nodes n JOIN subtree s ON n.parent = s.id"
    " WHERE n.deleted = 0) "
)


def local_only(node: str) -> bool:
    """Is this a node with a local id (a special file, or an entry made while ignored),
    never stamped and never sent (schema.py)? Catalog.is_local_only adds the synced ones
    that became ignored."""
    return node.startswith(LOCAL_ID_PREFIX)


def fail(code: int, what: str = "") -> OSError:
    return OSError(code, os.strerror(code) + (f": {what}" if what else ""))


def check_name(name: str | bytes) -> str:
    """A name as stored: valid UTF-8, no slash or NUL, at most NAME_MAX bytes."""
    raw = name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")
    if len(raw) > NAME_MAX:
        raise fail(errno.ENAMETOOLONG)
    if not raw or b"/" in raw or b"\0" in raw or raw in (b".", b".."):
        raise fail(errno.EINVAL, repr(raw))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # One policy for every peer: names are UTF-8, as the sync protocol carries them.
        raise fail(errno.EILSEQ, f"name is not valid UTF-8: {raw!r}") from None


class Inode(NamedTuple):
    """An inode row as read (shared from the InodeCache, so immutable; a tuple, not a
    frozen dataclass: made and copied several times per request, at a third of the cost)."""

    ino: int
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    hash: str | None
    target: bytes | None
    rdev: int
    nlink: int


@dataclass
class Entry:
    """A live name: the node that holds it and the inode it points to."""

    node: str
    entry: int  # stable readdir offset
    name: str
    inode: Inode


class _NewFile(NamedTuple):
    """A new file's create, kept in memory until the next transaction writes it
    (Catalog.create with `later`)."""

    inode: Inode
    parent_ino: int
    node: dict[str, object]  # the node row's columns
    journal: tuple  # the journal row
    chunks: bytes = b""  # its chunk list, once its first commit gave it content


class Catalog:
    def __init__(self, db: sqlite_utils.Database, store: ChunkStore,
                 on_change: Callable[[], None] = lambda: None,
                 local_rules: Path | None = None):
        self.db = db
        self.conn: sqlite3.Connection = db.conn
        self.store = store
        store.in_use = self._in_use
        self.device: str = self.conn.execute(
            "SELECT value FROM meta WHERE key = 'device_id'").fetchone()[0]
        # New files not written yet (create with `later`), by inode, and the inodes as
        # they are until then: those files and their directories. Every statement on the
        # connection writes them first (IndexConnection.settle), and a transaction of
        # ours writes them as its own first rows: a file's create and its commit at close
        # are one transaction.
        self._new_files: dict[int, _NewFile] = {}
        self._unsettled: dict[int, Inode] = {}
        # The last lookup that found nothing: (directory node, name, conn.total_changes
        # then, the directory's `ignored`). A create of that name that comes next,
        # nothing written in between (the kernel looks a name up before it creates it),
        # need not ask again.
        self._absent: tuple[str, str, int, int] | None = None
        # Their inode numbers: the next one, the last one reserved (see _take_ino), and a
        # reservation to write with them (None: written).
        self._next_ino, self._ino_ceiling = 1, 0
        self._ino_reserve: int | None = None
        # The inode rows the last transaction wrote of them, for _wrote.
        self._settled: dict[int, Inode] = {}
        self._unsettled_sql = getattr(self.conn, "unsettled", self.conn.execute)
        self._load_counters()
        self._dir_nodes: dict[int, str] = {ROOT_INO: ROOT_ID}
        self._inodes: InodeCache[Inode] = InodeCache(self.conn)
        self._chunk_blobs: InodeCache[bytes] = InodeCache(self.conn)  # inodes.chunks
        # Called after every transaction that stamped something (the daemon's wake-up).
        self.on_change = on_change
        # File inodes a peer's change took from their node (rule 6): inode -> (node, the
        # content version vector the inode had). They live on while handles are open, and
        # what a writer commits to one is a version concurrent with that change
        # (Merger.commit_detached). Known from the moment the change is applied, so no
        # commit can miss it; forgotten when the inode is purged.
        self.detached: dict[int, tuple[str, dict[str, int]]] = {}
        # Chunks retired since the last transaction, whose rows (refs 0) that transaction
        # deletes, with the bytes of those inline (see retire).
        self._collected: list[bytes] = []
        self._held_at = -1  # conn.total_changes when no version was left unheld
        self.committed_at = -1  # conn.total_changes at the last commit of `transaction`
        self.inline = InlineChunks(db)
        # Keep old versions of files (index/versions.py, keep_versions)? Not without a
        # serving process, which expires them: replaced content then goes at once.
        self.keeps_versions = False
        # Ignore rules (index/ignore.py), HOME/ignore given as `local_rules`. When they
        # change, or a directory moves, the entries below a directory may need a new
        # decision: on_rules_change(directory node) asks for it (syncd/ignoring.py).
        self.ignore = IgnoreRules(self.placement, self._rule_file, local_rules,
                                  self._save_refused)
        self.on_rules_change: Callable[[str], None] = lambda node: None
        # The mode setting (syncd/settings.py): "send-only" holds peers' states back
        # (index/merge.py); the serving process sets it, and nothing else applies states.
        self.mode = SEND_RECEIVE
        # and "receive-only" keeps every change made here local (EDITED_HERE).

    # -- reading

    def inode(self, ino: int) -> Inode:
        inode = self._unsettled.get(ino)
        if inode is not None:
            return inode
        inode = self._inodes.get(ino)
        if inode is not None:
            return inode
        row = self.conn.execute(
            f"SELECT {INODE_COLUMNS} FROM inodes WHERE ino = ?", (ino,)
        ).fetchone()
        if row is None:
            raise fail(errno.ENOENT, f"inode {ino}")
        inode = Inode(*row)
        self._inodes.read(ino, inode)
        return inode

    def chunks(self, ino: int) -> ChunkList:
        if ino in self._new_files:
            return ChunkList([])
        blob = self._chunk_blobs.get(ino)
        if blob is None:
            row = self.conn.execute("SELECT chunks FROM inodes WHERE ino = ?",
                                    (ino,)).fetchone()
            blob = row[0] if row else None
            if blob is not None:
                self._chunk_blobs.read(ino, blob)
        return ChunkList.from_blob(blob)

    def dir_node(self, ino: int) -> str:
        """The node id of a directory inode (directories have exactly one node)."""
        node = self._dir_nodes.get(ino)
        if node is None:
            row = self.conn.execute(
                "SELECT id, kind FROM nodes WHERE ino = ? AND deleted = 0", (ino,)
            ).fetchone()
            if row is None:
                raise fail(errno.ENOENT, f"inode {ino}")
            if row[1] != "dir":
                raise fail(errno.ENOTDIR)
            node = self._dir_nodes[ino] = row[0]
        return node

    def lookup(self, parent_ino: int, name: str) -> Entry | None:
        parent = self.dir_node(parent_ino)
        # With the directory's `ignored`, for a create that follows a miss (_create_later).
        row = self.conn.execute(
            f"SELECT d.ignored, n.id, n.entry, n.name, {INODE_COLUMNS} FROM nodes d "
            "LEFT JOIN nodes n ON n.parent = d.id AND n.name = ? AND n.deleted = 0 "
            "LEFT JOIN inodes ON inodes.ino = n.ino WHERE d.id = ?",
            (name, parent),
        ).fetchone()
        if row is None or row[1] is None:
            self._absent = (parent, name, self.conn.total_changes, row[0] if row else 0)
            return None
        return Entry(row[1], row[2], row[3], Inode(*row[4:]))

    def names_taken(self, parent_ino: int, names: list[str]) -> set[str]:
        """Those of `names` that are live entries of a directory: one statement, where a
        lookup each would cost a statement and an Entry per name (syncd import)."""
        return {r[0] for r in self.conn.execute(
            "SELECT name FROM nodes WHERE parent = ? AND deleted = 0"
            " AND name IN (SELECT value FROM json_each(?))",
            (self.dir_node(parent_ino), json.dumps(names)))}

    def children(self, dir_ino: int, after: int, limit: int = 1000) -> list[Entry]:
        rows = self.conn.execute(
            f"SELECT n.id, n.entry, n.name, {INODE_COLUMNS} FROM nodes n "
            "JOIN inodes ON inodes.ino = n.ino "
            "WHERE n.parent = ? AND n.deleted = 0 AND n.entry > ? ORDER BY n.entry LIMIT ?",
            (self.dir_node(dir_ino), after, limit),
        ).fetchall()
        return [Entry(r[0], r[1], r[2], Inode(*r[3:])) for r in rows]

    def parent_ino(self, dir_ino: int) -> int:
        if dir_ino == ROOT_INO:
            return ROOT_INO
        row = self.conn.execute(
            "SELECT p.ino FROM nodes n JOIN nodes p ON p.id = n.parent "
            "WHERE n.ino = ? AND n.deleted = 0",
            (dir_ino,),
        ).fetchone()
        if row is None:
            raise fail(errno.ENOENT)
        return row[0]

    def nodes_of(self, ino: int) -> list[str]:
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT id FROM nodes WHERE ino = ? AND deleted = 0 ORDER BY entry", (ino,)
            )
        ]

    def placement(self, node: str) -> tuple[str | None, str]:
        row = self.conn.execute("SELECT parent, name FROM nodes WHERE id = ?", (node,)).fetchone()
        return row[0], row[1]

    def ino_of(self, node: str) -> int | None:
        row = self.conn.execute("SELECT ino FROM nodes WHERE id = ?", (node,)).fetchone()
        return row[0] if row else None

    def size_of(self, ino: int) -> int | None:
        """An inode's committed size; None when there is no such inode (recovery)."""
        row = self.conn.execute("SELECT size FROM inodes WHERE ino = ?", (ino,)).fetchone()
        return None if row is None else row[0]

    # -- transactions and stamps (DESIGN rule 1)
    #
    # A node change, its sequence stamp and its journal row commit in one transaction:
    # local changes and applied remote states alike go through these, and nothing else
    # writes the journal or the counters.

    def transaction(self, fn, *args):
        """fn(*args) in one SQLite transaction; its result. When it fails, nothing it did
        stays, the counters included; when it stamped something, on_change follows.
        Inside a caller's db.atomic() block it is a savepoint of that transaction; on its
        own, BEGIN IMMEDIATE and COMMIT (sqlite-utils' atomic() costs ~1.5 us more, on every
        change)."""
        return self._transaction(fn, args)

    def _transaction(self, fn, args, makes_versions: bool = True):
        """transaction(fn, *args); without `makes_versions`, fn writes nothing the
        VERSIONS triggers record (inserts, times), so nothing is asked of them after it."""
        before = self.seq
        settling = bool(self._new_files) and not self.conn.in_transaction
        try:
            if self.conn.in_transaction:
                with self.db.atomic():
                    result = self._collect_and(fn, args, makes_versions)
            else:
                self._disarm()  # new files kept in memory are this transaction's first rows

                def work():
                    if settling:
                        self._write_new_files()
                    return self._collect_and(fn, args, makes_versions)
                result = self._own_transaction(work)
        except BaseException:
            self._rolled_back()
            raise
        self._collected = []
        if settling:
            self._new_files_written()
        if self.seq != before or settling:
            self.on_change()
        return result

    def _rolled_back(self) -> None:
        """What this catalog keeps in memory of the index may name rows that a failed
        transaction (or savepoint) wrote or read and that its rollback took back: the
        counters are read again, and the directories' nodes and the ignore rules'
        decisions are forgotten, to be read again as they are asked for."""
        self._load_counters()
        self._dir_nodes = {ROOT_INO: ROOT_ID}
        self.ignore.forget()

    def _own_transaction(self, work: Callable[[], object]):
        """work() between BEGIN and COMMIT; its result. When it fails, ROLLBACK, and the
        new files kept in memory stay to be written by the next statement."""
        self._settled = {}
        self.conn.execute("BEGIN IMMEDIATE")  # why: index/database.py
        try:
            result = work()
            self.conn.execute("COMMIT")
            self.committed_at = self.conn.total_changes
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self._settled = {}
            self._arm()
            raise
        return result

    # New files kept in memory (create with `later`) until the next statement.

    def _arm(self) -> None:
        if self._new_files and isinstance(self.conn, IndexConnection):
            self.conn.settle = self.settle

    def _disarm(self) -> None:
        if isinstance(self.conn, IndexConnection):
            self.conn.settle = None

    def settle(self) -> None:
        """Write the new files kept in memory, in a transaction of their own (another
        statement is about to run, or a close has nothing else to commit); nothing to do
        when there are none. On a full disk the store's reserve gives way for them: the
        statement that asked (often one freeing room) must not run before them."""
        if not self._new_files:
            return
        self._disarm()
        if self.conn.in_transaction:  # one begun outside `transaction`: they join it
            self._write_new_files()
            self._new_files_written()
            self._ino_ceiling = 0  # its rollback takes the reservation: a new block next
            return
        try:
            self._settle()
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode != sqlite3.SQLITE_FULL or not self.store.release_reserve():
                raise
            self._disarm()
            self._settle()

    def _settle(self) -> None:
        before = self.conn.total_changes
        self._own_transaction(self._write_new_files)
        self._wrote(before, {}, {})
        self._new_files_written()
        self.on_change()

    def _write_new_files(self) -> None:
        """Insert the new files kept in memory (inside a transaction), in the order of
        their stamps. Inserts leave no old version to hold (schema.VERSIONS)."""
        held = self._held_at == self.conn.total_changes
        for new in sorted(self._new_files.values(), key=lambda n: n.journal[0]):
            i = new.inode
            self.conn.execute(
                "INSERT INTO inodes (ino, kind, mode, uid, gid, size, mtime_ns, ctime_ns,"
                " atime_ns, hash, chunks, target, rdev) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, ?, ?, ?)", (i.ino, i.kind, i.mode, i.uid, i.gid, i.size, i.mtime_ns,
                                 i.ctime_ns, i.atime_ns, i.hash, new.chunks, None, 0))
            self.conn.execute(
                f"INSERT INTO nodes ({', '.join(new.node)})"
                f" VALUES ({', '.join('?' * len(new.node))})", tuple(new.node.values()))
            self.conn.execute(
                "INSERT INTO journal (seq, clock, node, op, device, at, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)", new.journal)
            self._touch_dir(new.parent_ino, i.ctime_ns)
        if self._ino_reserve is not None:
            self.conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?)"
                              " WHERE name = 'inodes'", (self._ino_reserve,))
        self._settled = dict(self._unsettled)
        if held:
            self._held_at = self.conn.total_changes

    def _new_files_written(self) -> None:
        self._new_files.clear()
        self._ino_reserve = None
        self._unsettled.clear()

    def _wrote(self, before: int, inodes: dict[int, Inode], blobs: dict[int, bytes]) -> None:
        """The transaction just committed from change count `before` wrote exactly these
        inode rows (and chunk lists), and no other but those of the new files it wrote
        first (index/inodecache.py)."""
        self._inodes.wrote(before, self.committed_at, {**self._settled, **inodes})
        self._chunk_blobs.wrote(before, self.committed_at, blobs)

    def _collect_and(self, fn, args, makes_versions: bool = True):
        if self._collected:  # rows of chunks retired since the last transaction
            self.inline.drop_unreferenced([(d,) for d in self._collected])
        if self.conn.total_changes != self._held_at:
            self._hold_versions()  # any a write outside these transactions recorded
        result = fn(*args)
        if makes_versions:
            self._hold_versions()
        self._held_at = self.conn.total_changes  # nothing written since: none to hold
        return result

    def _hold_versions(self) -> None:
        """Count the chunk references of the old versions the triggers just recorded
        (index/schema.py, VERSIONS), and where they were, while their inodes still hold
        the chunks: from now on the versions do."""
        if not self.keeps_versions:
            self.conn.execute("DELETE FROM versions WHERE held = 0")
            return
        for vid, parent, name, blob, size in self.conn.execute(
                "SELECT id, parent, name, chunks, size FROM versions WHERE held = 0"
        ).fetchall():
            self._reref(ChunkList.from_blob(blob), size, ChunkList([]))
            self.conn.execute("UPDATE versions SET held = 1, path = ? WHERE id = ?",
                              (self.path_of(parent, name), vid))

    def path_of(self, parent: str | None, name: str) -> str:
        """The path from the share's root of `name` under node `parent`, live or not."""
        row = self.conn.execute(
            "WITH RECURSIVE up (id, path, depth) AS (SELECT ?, ?, 0"
            " UNION ALL SELECT n.parent, n.name || '/' || up.path, up.depth + 1"
            " FROM nodes n JOIN up ON n.id = up.id WHERE up.id != ? AND up.depth < 4096)"
            " SELECT path FROM up WHERE id = ?", (parent, name, ROOT_ID, ROOT_ID)).fetchone()
        return row[0] if row else name

    def stamp_local(self, node: str, op: str, aspects: tuple[str, ...],
                    detail: dict | None, vvs: tuple[str, ...] | None = None,
                    sets: dict[str, object] | None = None,
                    ignored: int | None = None) -> None:
        """A change made here (inside a transaction): the next sequence number, a new
        version of each of `aspects` (this device's entry in its vector is that number,
        its clock the next Lamport clock) and a journal row. `vvs`: the node's vectors of
        `aspects` as stored, when the caller has read them already; `sets`: the change
        itself, columns of the node written in the same UPDATE; `ignored`: the node's
        column of that name, when the caller has read it. A local-only node has no
        versions: only `sets` is written, nothing is stamped, so nothing of it is ever
        sent."""
        local = self.is_local_only(node) if ignored is None else \
            local_only(node) or ignored > 0
        if self.mode == RECEIVE_ONLY and not (detail or {}).get("decided") and not local:
            self.conn.execute("UPDATE nodes SET ignored = ?, seq = 0, origin = NULL"
                              " WHERE id = ?", (1 | EDITED_HERE, node))
            local = True
        if local:
            if sets:
                self._set_node(node, sets)
            if aspects and not local_only(node):  # shared once: say what changed since
                self.conn.execute("UPDATE nodes SET ignored = ignored | ? WHERE id = ?",
                                  (sum(IGNORED_CHANGED[a] for a in aspects), node))
            return
        self._next_stamp()
        columns = {**(sets or {}), "seq": self.seq, "origin": None}
        if aspects:
            if vvs is None:
                vvs = self.conn.execute(
                    f"SELECT {', '.join(f'{a}_vv' for a in aspects)} FROM nodes WHERE id = ?",
                    (node,)).fetchone()
            columns |= self._new_versions(aspects, vvs)
        self._set_node(node, columns)
        self._journal(node, op, self.device, detail)

    def _set_node(self, node: str, columns: dict[str, object]) -> None:
        self.conn.execute(f"UPDATE nodes SET {' = ?, '.join(columns)} = ? WHERE id = ?",
                          (*columns.values(), node))

    def _new_versions(self, aspects: tuple[str, ...], vvs: tuple[str, ...]) -> dict:
        """The version columns of a local change to `aspects` at the current stamp, from
        their vectors as stored."""
        columns: dict[str, object] = {}
        # A new node's vectors are all '{}': to_json's text of {device: seq}, written out
        # (the device id is hex), spares every create a JSON parse and encode.
        done = {"{}": f'{{"{self.device}": {self.seq}}}'}
        for aspect, text in zip(aspects, vvs, strict=True):
            new = done.get(text)
            if new is None:
                vv = json.loads(text)
                vv[self.device] = self.seq
                new = done[text] = to_json(vv)
            vv_column, made, clock, device = VERSION_COLUMNS[aspect]
            columns[vv_column] = columns[made] = new
            columns[clock], columns[device] = self.clock, self.device
        return columns

    def stamp_applied(self, node: str, op: str, origin: str | None, device: str | None,
                      detail: dict) -> None:
        """A state applied from a peer, or merged here (inside a transaction): the next
        sequence number and a journal row, no new version. `origin` is the peer that sent
        it, which holds it already (None: every peer needs it); `device` made the change
        (None: this one)."""
        self._next_stamp()
        self.conn.execute("UPDATE nodes SET seq = ?, origin = ? WHERE id = ?",
                          (self.seq, origin, node))
        self._journal(node, op, device or self.device, detail)

    def observe_clock(self, clock: int) -> None:
        """A Lamport clock seen in a remote state: changes made here come after it."""
        self.clock = max(self.clock, clock)

    def _next_stamp(self) -> None:
        self.seq += 1
        self.clock += 1

    def _journal(self, node: str, op: str, device: str, detail: dict | None) -> None:
        self.conn.execute(
            "INSERT INTO journal (seq, clock, node, op, device, at, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.seq, self.clock, node, op, device, int(time.time()),
             to_json(detail) if detail else None),
        )

    def _load_counters(self) -> None:
        """The sequence number and clock are those of the last journal row. Also used when
        a failed transaction rolled back the counters it advanced."""
        row = self._unsettled_sql(
            "SELECT seq, clock FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        self.seq, self.clock = row if row else (0, 0)
        for new in self._new_files.values():  # stamped, not written yet
            self.seq, self.clock = max(self.seq, new.journal[0]), max(self.clock, new.journal[1])


    # -- creating

    def create(
        self, parent_ino: int, name: str, kind: str, mode: int, uid: int, gid: int,
        target: bytes | None = None, mtime_ns: int | None = None, rdev: int = 0,
        content: tuple[ChunkList, int] | None = None, op: str = "create",
        later: bool = False, directory: Inode | None = None,
    ) -> Entry:
        """A new file, directory, symlink or special file (`rdev` for a device): one new
        inode, one new node, one change (none for a special file: it is local-only). A
        file may be made with its content (its chunks in the store) and an mtime of its
        own (syncd import). `op` is its journal row's: `recover` for the copy crash
        recovery makes of uncommitted writes (index/recovery.py, `syncd log`).

        `later` (the mount's create of an empty file): the inode number, stamp and rows
        are decided now, and written by the next transaction or statement, normally
        the file's commit at close (one transaction per file, not two). Entries that
        stamp nothing (ignored ones, a receive-only machine's) and rule files are
        written at once. `directory`: the parent's inode, as the caller just read it."""
        name = check_name(name)
        now = time.time_ns()
        mtime = mtime_ns if mtime_ns is not None else now
        parent = self.dir_node(parent_ino)
        if later and kind == "file" and content is None and mtime_ns is None and \
                name != IGNORE_FILE and self.mode != RECEIVE_ONLY and \
                isinstance(self.conn, IndexConnection) and not self.conn.in_transaction:
            created = self._create_later(parent_ino, parent, name, mode, uid, gid, now,
                                         directory)
            if created is not None:
                return created
        chunks, size = content or (ChunkList([]), len(target) if target is not None else 0)

        def run() -> Entry:
            digest = chunks.hash if kind == "file" else None
            if kind == "symlink":
                digest = "blake3:" + digest_of(target or b"").hex()
            mode_bits = mode & 0o7777
            directory = self.inode(parent_ino)  # before any write: the cache may have it
            ino = self.conn.execute(
                "INSERT INTO inodes (kind, mode, uid, gid, size, mtime_ns, ctime_ns, atime_ns,"
                " hash, chunks, target, rdev) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, mode_bits, uid, gid, size, mtime, now, now, digest, chunks.blob, target,
                 rdev),
            ).lastrowid
            if chunks.entries:
                self._reref(chunks, size, ChunkList([]))
            node, entry = self._add_node(kind, ino, parent, name, {"kind": kind}, op)
            self._touch_dir(parent_ino, now)
            inode = Inode(ino, kind, mode_bits, uid, gid, size, mtime, now, now, digest,
                          target, rdev, 1)
            return Entry(node, entry, name, inode), directory._replace(mtime_ns=now,
                                                                       ctime_ns=now)

        before = self.conn.total_changes
        created, directory = self.transaction(run)
        if name != IGNORE_FILE:  # a rule file's effects reach further
            self._wrote(before, {created.inode.ino: created.inode, parent_ino: directory},
                        {created.inode.ino: chunks.blob})
        return created

    def _create_later(self, parent_ino: int, parent: str, name: str, mode: int, uid: int,
                      gid: int, now: int, directory: Inode | None) -> Entry | None:
        """create(later=True) of an empty file, or None when it must be written at once
        (ignored). Its inode number comes after every one SQLite handed out and every
        one kept in memory; its stamp is taken now, so it is written before any later
        one (every transaction writes it first)."""
        absent, self._absent = self._absent, None
        # Looked up just now, nothing written since (the lookup wrote the new files kept
        # before): the name is free, and `directory` and its `ignored` are as read then.
        looked_up = absent is not None and absent[:3] == (
            parent, name, self.conn.total_changes) and not self._new_files
        if not looked_up:
            if self.is_live_name(parent, name):  # also writes the new files kept before
                raise fail(errno.EEXIST, name)
            directory = None  # read again, below
        if self.ignores(parent, name, "file", parent_ignored=absent[3] if looked_up else None):
            return None
        if directory is None:
            directory = self.inode(parent_ino)
        ino = self._take_ino()
        self._next_stamp()
        node = f"{self.device}:{self.seq}"
        columns = {"id": node, "seq": self.seq,
                   **self._new_versions(ASPECTS, ("{}",) * len(ASPECTS)),
                   "kind": "file", "ino": ino, "parent": parent, "name": name}
        inode = Inode(ino, "file", mode & 0o7777, uid, gid, 0, now, now, now,
                      EMPTY_HASH, None, 0, 1)
        self._new_files[ino] = _NewFile(
            inode, parent_ino, columns,
            (self.seq, self.clock, node, "create", self.device, now // 10**9,
             KIND_FILE))
        self._unsettled[ino] = inode
        self._unsettled[parent_ino] = directory._replace(mtime_ns=now, ctime_ns=now)
        self._arm()
        return Entry(node, 0, name, inode)  # its entry (readdir offset) comes at insert

    def _take_ino(self) -> int:
        """An inode number for a new file kept in memory. AUTOINCREMENT writes its
        counter's page (sqlite_sequence) at every insert past it, one WAL page in each new
        file's transaction; so the counter is moved INODE_BLOCK at a time, with the new
        files that take the first number past it, and the numbers below it are handed out
        from here: their inserts leave it alone. An insert that takes its number from
        SQLite gets one past the block; a new process starts past the last block (a crash
        skips what was left of it). Every statement writes the new files kept in memory
        first (IndexConnection.settle), the reservation with them."""
        if self._next_ino > self._ino_ceiling:
            row = self._unsettled_sql(
                "SELECT seq FROM sqlite_sequence WHERE name = 'inodes'").fetchone()
            self._next_ino = max([row[0] if row else 0, *self._new_files]) + 1
            self._ino_ceiling = self._ino_reserve = self._next_ino + INODE_BLOCK - 1
        self._next_ino += 1
        return self._next_ino - 1

    def creates_plainly(self, parent: str, name: str, kind: str,
                        parent_ignored: int | None = None) -> bool:
        """Would `create` make this entry a plain shared node, as NewEntries makes it: not
        a special file, not ignored, not a rule file, not on a receive-only machine?
        `parent_ignored`: as for `ignores`."""
        return (kind not in LOCAL_ONLY_KINDS and self.mode != RECEIVE_ONLY
                and name != IGNORE_FILE
                and not self.ignores(parent, name, kind, parent_ignored=parent_ignored))

    def new_entries(self, uid: int, gid: int) -> NewEntries:
        """New entries made in bulk inside the caller's transaction (NewEntries)."""
        return NewEntries(self, uid, gid)

    def link(self, ino: int, parent_ino: int, name: str) -> Entry:
        """A hard link: a second node on the same inode (peers see a separate file)."""
        name = check_name(name)
        parent = self.dir_node(parent_ino)
        now = time.time_ns()

        def run() -> Entry:
            inode = self.inode(ino)
            if inode.kind == "dir":
                raise fail(errno.EPERM)
            self._add_node(inode.kind, ino, parent, name, {"kind": inode.kind, "link": True})
            self.conn.execute("UPDATE inodes SET ctime_ns = ? WHERE ino = ?", (now, ino))
            self._touch_dir(parent_ino, now)
            return self.lookup(parent_ino, name)

        return self.transaction(run)

    def _add_node(self, kind: str, ino: int, parent: str, name: str,
                  detail: dict, op: str = "create") -> tuple[str, int]:
        """A new live node: its id and entry. A synced node is stamped as it is inserted,
        and its id takes the counter of that stamp; a local-only node, never stamped,
        takes its entry number."""
        receive_only = self.mode == RECEIVE_ONLY
        ignored = kind not in LOCAL_ONLY_KINDS and \
            self.ignores(parent, name, kind, edits_too=not receive_only)
        edited = kind not in LOCAL_ONLY_KINDS and not ignored and receive_only
        if kind in LOCAL_ONLY_KINDS or ignored or edited:
            entry = self.conn.execute(
                "SELECT coalesce(max(entry), 0) + 1 FROM nodes").fetchone()[0]
            node = f"{LOCAL_ID_PREFIX}{entry}"
            columns = {"entry": entry, "id": node, "seq": 0,
                       "ignored": 1 | EDITED_HERE if edited else int(ignored)}
        else:
            self._next_stamp()
            node = f"{self.device}:{self.seq}"
            columns = {"id": node, "seq": self.seq,
                       **self._new_versions(ASPECTS, ("{}",) * len(ASPECTS))}
        columns |= {"kind": kind, "ino": ino, "parent": parent, "name": name}
        try:
            entry = self.conn.execute(
                f"INSERT INTO nodes ({', '.join(columns)})"
                f" VALUES ({', '.join('?' * len(columns))})", tuple(columns.values()),
            ).lastrowid
        except sqlite3.IntegrityError:  # nodes_name: one live node per name
            raise fail(errno.EEXIST, name) from None
        if not local_only(node):
            self._journal(node, op, self.device, detail)
        if name == IGNORE_FILE:
            self.rules_changed(parent)
        return node, entry

    # -- removing

    def unlink(self, parent_ino: int, name: str) -> int | None:
        """Remove a non-directory name: its node becomes a tombstone. Returns the inode if
        that was its last name, for the caller to purge once nothing refers to it."""
        rows: dict[int, Inode] = {}
        before = self.conn.total_changes
        ino = self.transaction(self._remove, parent_ino, check_name(name), False, rows)
        if rows:  # the stat and the purge that follow need not read them
            self._wrote(before, rows, {})
        return ino

    def rmdir(self, parent_ino: int, name: str) -> int | None:
        return self.transaction(self._remove, parent_ino, check_name(name), True)

    def _remove(self, parent_ino: int, name: str, want_dir: bool,
                rows: dict[int, Inode] | None = None) -> int | None:
        """`rows` (a file's unlink): filled with the inode rows it wrote, as they are
        then, unless a rule file's removal reaches further."""
        directory = None if rows is None else self.inode(parent_ino)  # before any write
        found = self._lookup_versions(parent_ino, name)
        if found is None:
            raise fail(errno.ENOENT, name)
        entry, vvs, ignored = found
        is_dir = entry.inode.kind == "dir"
        if want_dir and not is_dir:
            raise fail(errno.ENOTDIR, name)
        if not want_dir and is_dir:
            raise fail(errno.EISDIR, name)
        if is_dir and self.has_children(entry.node):
            raise fail(errno.ENOTEMPTY, name)
        self._tombstone(entry, vvs, ignored)
        now = time.time_ns()
        self.conn.execute("UPDATE inodes SET ctime_ns = ? WHERE ino = ?", (now, entry.inode.ino))
        self._touch_dir(parent_ino, now)
        if name == IGNORE_FILE:
            self.rules_changed(self.dir_node(parent_ino))
        elif directory is not None:
            rows[entry.inode.ino] = entry.inode._replace(ctime_ns=now,
                                                         nlink=entry.inode.nlink - 1)
            rows[parent_ino] = directory._replace(mtime_ns=now, ctime_ns=now)
        return entry.inode.ino if entry.inode.nlink == 1 else None

    def _tombstone(self, entry: Entry, vvs: tuple[str, ...], ignored: int) -> None:
        """A removed name: a tombstone that carries the delete to peers, or, for a
        local-only node that no peer knows, nothing. `ignored`: the node's column."""
        if local_only(entry.node) or ignored > 0:
            self.conn.execute("DELETE FROM nodes WHERE id = ?", (entry.node,))
            self._dir_nodes.pop(entry.inode.ino, None)
            return
        attrs = self.conn.execute(f"SELECT {xattrs_json('?')}",
                                  (entry.inode.ino,)).fetchone()[0]
        self.stamp_local(entry.node, "delete", ASPECTS, None, vvs,
                         {"deleted": 1, "ino": None, "deleted_mode": entry.inode.mode,
                          "deleted_xattrs": attrs}, ignored=ignored)
        if entry.inode.kind == "dir":
            self._dir_nodes.pop(entry.inode.ino, None)

    def _lookup_versions(self, parent_ino: int,
                         name: str) -> tuple[Entry, tuple, int] | None:
        """`lookup`, the node's version vectors as stored (ASPECTS' order) and its
        `ignored` column, for a change that stamps it: no second query for them."""
        row = self.conn.execute(
            f"SELECT n.id, n.entry, n.name, n.ignored, n.content_vv, n.mode_vv, n.place_vv,"
            f" n.xattr_vv, {INODE_COLUMNS} FROM nodes n JOIN inodes ON inodes.ino = n.ino "
            "WHERE n.parent = ? AND n.name = ? AND n.deleted = 0",
            (self.dir_node(parent_ino), name),
        ).fetchone()
        if row is None:
            return None
        return Entry(row[0], row[1], row[2], Inode(*row[8:])), row[4:8], row[3]

    # -- renaming

    def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str,
        noreplace: bool = False,
    ) -> int | None:
        """Move a name. Returns the inode that lost its last name by being replaced, if
        any.

        Rename over an existing file (how editors save): the target keeps its node and
        takes the source's inode as an edit, and the source node is deleted (DESIGN rule 3).
        """
        old_name, new_name = check_name(old_name), check_name(new_name)
        return self.transaction(self._rename, old_parent, old_name, new_parent, new_name,
                                noreplace)

    def _rename(self, old_parent, old_name, new_parent, new_name, noreplace):
        found = self._lookup_versions(old_parent, old_name)
        if found is None:
            raise fail(errno.ENOENT, old_name)
        src, src_vvs, src_ignored = found
        dst, dst_vvs, dst_ignored = self._lookup_versions(new_parent, new_name) or \
            (None, None, 0)
        new_parent_node = self.dir_node(new_parent)
        now = time.time_ns()
        takes_inode = False
        if src.inode.kind == "dir" and self.is_within(new_parent_node, src.node):
            raise fail(errno.EINVAL, "cannot move a directory into itself")
        if dst is not None:
            if noreplace:
                raise fail(errno.EEXIST, new_name)
            if dst.inode.ino == src.inode.ino:
                return None  # two links to one inode: POSIX says do nothing
            if src.inode.kind == "dir" and dst.inode.kind != "dir":
                raise fail(errno.ENOTDIR, new_name)
            if src.inode.kind != "dir" and dst.inode.kind == "dir":
                raise fail(errno.EISDIR, new_name)
            if dst.inode.kind == "dir" and self.has_children(dst.node):
                raise fail(errno.ENOTEMPTY, new_name)
            # A file over a file: the target node takes the source inode's content and
            # mode as one edit. Only content held here: that edit would be a version of
            # ours whose chunks only the source's holder has, and that holder drops them
            # once it replaces the source (soak bug 4). A source not fetched yet moves as
            # itself instead, so the holder's newer versions still reach it.
            takes_inode = src.inode.kind == "file" and dst.inode.kind == "file" and \
                self.is_local(src.inode.ino)
            if takes_inode:
                # The source's extended attributes come with its inode (rsync -X sets
                # them on its temporary file): the target's that it lacks are removed.
                self._remove_xattrs_missing(src.inode.ino, dst.inode.ino)
                if self.is_local_only(dst.node) and not self.is_local_only(src.node):
                    self.make_local(src.node, False)  # into an ignored file: peers keep it
                    src_ignored = 1
                self.stamp_local(dst.node, "content", ("content", "mode", "xattr"),
                                 {"replaced_by": src.node},
                                 (dst_vvs[0], dst_vvs[1], dst_vvs[3]),
                                 {"ino": src.inode.ino})
                self._tombstone(src, src_vvs, src_ignored)
            else:
                self._tombstone(dst, dst_vvs, dst_ignored)
        if not takes_inode:
            was_local = self.is_local_only(src.node)
            ignored = src.inode.kind not in LOCAL_ONLY_KINDS and \
                self.ignores(new_parent_node, new_name, src.inode.kind)
            if ignored and not was_local:  # stops syncing: peers keep it where it was
                self.make_local(src.node, src.inode.kind == "dir")
            self.stamp_local(src.node, "rename", ("place",),
                             {"from": [self.dir_node(old_parent), old_name]}, src_vvs[2:3],
                             {"parent": new_parent_node, "name": new_name})
            if was_local and not ignored and src.inode.kind not in LOCAL_ONLY_KINDS:
                node = self.make_shared(src.node)  # sent from now on, like a new entry
                if src.inode.kind == "dir":
                    self.on_rules_change(node)  # what is below it, in the background
            elif src.inode.kind == "dir" and not ignored:
                self.on_rules_change(src.node)  # the rules above what is below it changed
            if src.inode.kind == "dir":
                self.ignore.invalidate()  # the paths below it changed
        if IGNORE_FILE in (old_name, new_name):
            self.rules_changed(self.dir_node(old_parent))
            self.rules_changed(new_parent_node)
        self.conn.execute("UPDATE inodes SET ctime_ns = ? WHERE ino = ?", (now, src.inode.ino))
        self._touch_dir(old_parent, now)
        if new_parent != old_parent:
            self._touch_dir(new_parent, now)
        return dst.inode.ino if dst is not None and dst.inode.nlink == 1 else None

    # -- attributes

    def set_attributes(self, ino: int, **columns: int) -> Inode:
        """chmod, utimens and chown of an inode not open for writing, in one transaction;
        the inode as it is then. A new `mode` is a new mode version of each node of the
        inode, and a new `mtime_ns` of a file or symlink a new content version (the mtime
        is part of it); both set the ctime. `uid`, `gid`, `atime_ns`, `ctime_ns` and a
        directory's mtime are local facts, which stamp nothing."""
        assert columns and set(columns) <= {"mode", "mtime_ns", "uid", "gid", "atime_ns",
                                            "ctime_ns"}
        versioned = {k: columns[k] for k in ("mtime_ns", "mode") if k in columns}
        if "mode" in versioned:
            versioned["mode"] = columns["mode"] = columns["mode"] & 0o7777
        if versioned:
            columns.setdefault("ctime_ns", time.time_ns())

        def run() -> Inode:
            row = self.conn.execute(
                f"UPDATE inodes SET {' = ?, '.join(columns)} = ? WHERE ino = ?"
                f" RETURNING {INODE_COLUMNS}", (*columns.values(), ino)).fetchone()
            if row is None:
                raise fail(errno.ENOENT, f"inode {ino}")
            if versioned:
                for node, kind, content_vv, mode_vv in self.conn.execute(
                        "SELECT id, kind, content_vv, mode_vv FROM nodes"
                        " WHERE ino = ? AND deleted = 0 ORDER BY entry", (ino,)).fetchall():
                    stored = {"content": content_vv, "mode": mode_vv}
                    change = {k: v for k, v in versioned.items()
                              if k == "mode" or kind != "dir"}
                    aspects = tuple(a for a, k in (("content", "mtime_ns"), ("mode", "mode"))
                                    if k in change)
                    if aspects:
                        self.stamp_local(node, aspects[0], aspects, change,
                                         tuple(stored[a] for a in aspects))
            return Inode(*row)

        before = self.conn.total_changes
        inode = self.transaction(run)
        self._wrote(before, {ino: inode}, {})
        return inode

    # -- extended attributes (user.* only: the mount refuses the others)

    def xattr(self, ino: int, name: str) -> bytes | None:
        row = self.conn.execute("SELECT value FROM xattrs WHERE ino = ? AND name = ?",
                                (ino, name)).fetchone()
        return None if row is None else row[0]

    def xattr_names(self, ino: int) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT name FROM xattrs WHERE ino = ? AND value IS NOT NULL ORDER BY name",
            (ino,))]

    def set_xattr(self, ino: int, name: str, value: bytes | None) -> None:
        """Set (or, with None, remove) an extended attribute of an inode: a new xattr
        version of each of its nodes, in one transaction. ENODATA to remove one that is
        not there; E2BIG when the inode's attributes (names and values) would pass
        XATTR_TOTAL_MAX."""
        def run() -> None:
            self.inode(ino)  # ENOENT
            rows = dict(self.conn.execute(
                "SELECT name, length(CAST(name AS BLOB)) + length(value) FROM xattrs"
                " WHERE ino = ? AND value IS NOT NULL", (ino,)).fetchall())
            if value is None and name not in rows:
                raise fail(errno.ENODATA, name)
            if value is not None:
                rows[name] = len(name.encode()) + len(value)
                if sum(rows.values()) > XATTR_TOTAL_MAX:
                    raise fail(errno.E2BIG, f"{name}: over {XATTR_TOTAL_MAX} bytes of "
                               "extended attributes on one file")
            nodes = self.conn.execute(
                "SELECT id, xattr_vv FROM nodes WHERE ino = ? AND deleted = 0 ORDER BY entry",
                (ino,)).fetchall()
            self._write_xattr(ino, name, value, self.clock + 1)
            for node, vv in nodes:
                self.stamp_local(node, "xattr", ("xattr",),
                                 {"name": name, "removed": value is None}, (vv,))
            self.conn.execute("UPDATE inodes SET ctime_ns = ? WHERE ino = ?",
                              (time.time_ns(), ino))

        self.transaction(run)

    def sync_facts(self, ino: int) -> tuple[bool, bool, list[tuple[str, str | None]]]:
        """What user.syncd.state and user.syncd.holders show of an inode: (local-only: a
        special file; a conflict copy; the makers of its nodes' content, as (device,
        that device's name as a peer here, or None)."""
        rows = self.conn.execute(
            "SELECT n.id, n.conflict_of, n.content_device, p.name FROM nodes n"
            " LEFT JOIN peers p ON p.device = n.content_device"
            " WHERE n.ino = ? AND n.deleted = 0 ORDER BY n.entry", (ino,)).fetchall()
        return (any(self.is_local_only(r[0]) for r in rows),
                any(r[1] is not None for r in rows),
                [(r[2], r[3]) for r in rows if r[2] is not None])

    def _write_xattr(self, ino: int, name: str, value: bytes | None, clock: int) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO xattrs (ino, name, value, clock, device)"
            " VALUES (?, ?, ?, ?, ?)", (ino, name, value, clock, self.device))

    def _remove_xattrs_missing(self, ino: int, other: int) -> None:
        """Rows removing, on inode `ino`, the attributes `other` has and `ino` lacks."""
        for (name,) in self.conn.execute(
                "SELECT name FROM xattrs o WHERE ino = ? AND value IS NOT NULL AND NOT EXISTS"
                " (SELECT 1 FROM xattrs x WHERE x.ino = ? AND x.name = o.name)",
                (other, ino)).fetchall():
            self._write_xattr(ino, name, None, self.clock + 1)

    def commit_content(
        self, ino: int, chunks: ChunkList, size: int, mtime_ns: int | None,
        mode: int | None, content_changed: bool, owner: dict[str, int] | None = None,
        inline: dict[bytes, bytes] | None = None,
    ) -> list[bytes]:
        """Commit new content of a file in the index: new chunk list, size and hash, plus
        any metadata set while it was open, as one change per node (`owner`, uid and gid,
        is local and stamps nothing). The chunks must be in the store or the index, or be
        installed right after with nothing in between (commit_draft); `inline` gives the
        bytes of those that go into the index now, by digest. Returns the chunks left with
        no reference, for `retire`."""
        blob = chunks.blob
        if ino in self._new_files:
            self._commit_new_file(ino, chunks, size, mtime_ns, mode, owner or {}, inline)
            return []

        def run() -> tuple[list[bytes], Inode, bool]:
            inode = self.inode(ino)
            old = self.chunks(ino)
            now = time.time_ns()
            digest = file_hash(blob)
            changed_content = content_changed and (digest != inode.hash or size != inode.size)
            new_mtime = mtime_ns if mtime_ns is not None else inode.mtime_ns
            aspects: tuple[str, ...] = ()
            if changed_content or new_mtime != inode.mtime_ns:
                aspects += ("content",)
            if mode is not None and (mode & 0o7777) != inode.mode:
                aspects += ("mode",)
            after = inode._replace(size=size, hash=digest, mtime_ns=new_mtime, ctime_ns=now,
                                   mode=inode.mode if mode is None else mode & 0o7777,
                                   uid=(owner or {}).get("uid", inode.uid),
                                   gid=(owner or {}).get("gid", inode.gid))
            self.conn.execute(
                "UPDATE inodes SET chunks = ?, size = ?, hash = ?, mtime_ns = ?, mode = ?,"
                " ctime_ns = ?, uid = ?, gid = ? WHERE ino = ?",
                (blob, size, digest, new_mtime, after.mode, now, after.uid, after.gid, ino),
            )
            garbage = self._reref(chunks, size, old, inline)
            rules = False
            if aspects or changed_content:
                for node, name, parent, ignored, *vvs in self.conn.execute(
                        "SELECT id, name, parent, ignored, content_vv, mode_vv FROM nodes"
                        " WHERE ino = ? AND deleted = 0 ORDER BY entry", (ino,)).fetchall():
                    if aspects:
                        stored = dict(zip(("content", "mode"), vvs, strict=True))
                        self.stamp_local(node, "content" if "content" in aspects else "mode",
                                         aspects, {"hash": digest, "size": size},
                                         tuple(stored[a] for a in aspects), ignored=ignored)
                    if changed_content and name == IGNORE_FILE:
                        self.rules_changed(parent)
                        rules = True
            return garbage, after, rules

        before = self.conn.total_changes
        garbage, after, rules = self.transaction(run)
        if not rules:  # a rule file's effects reach further
            self._wrote(before, {ino: after}, {ino: blob})
        return garbage

    def _commit_new_file(self, ino: int, chunks: ChunkList, size: int, mtime_ns: int | None,
                         mode: int | None, owner: dict[str, int],
                         inline: dict[bytes, bytes] | None) -> None:
        """The first commit of a new file its create kept in memory: the create takes the
        content and metadata, and is written with its chunk references in one
        transaction, one change (a file made with its content, as syncd import makes
        one): no second stamp, journal row or update of rows just inserted."""
        new = self._new_files[ino]
        old = new.inode
        after = old._replace(size=size, hash=file_hash(chunks.blob), ctime_ns=time.time_ns(),
                             mtime_ns=old.mtime_ns if mtime_ns is None else mtime_ns,
                             mode=old.mode if mode is None else mode & 0o7777,
                             uid=owner.get("uid", old.uid), gid=owner.get("gid", old.gid))
        self._new_files[ino] = new._replace(inode=after, chunks=chunks.blob)
        self._unsettled[ino] = after
        before = self.conn.total_changes
        # Inserts and the directory's times: no old version to hold.
        self._transaction(self._reref, (chunks, size, ChunkList([]), inline), False)
        self._wrote(before, {ino: after}, {ino: chunks.blob})

    def _reref(self, new: ChunkList, size: int, old: ChunkList,
               inline: dict[bytes, bytes] | None = None) -> list[bytes]:
        """Move chunk reference counts from `old` to `new` (a file of `size` bytes), with
        the bytes of `new`'s chunks that go inline (by digest); return chunks left
        unreferenced. Holes are no chunks."""
        sizes = {d: slot_length(i, size) for i, d in new.stored()}
        delta: dict[bytes, int] = dict.fromkeys(sizes, 0)
        for _, d in new.stored():
            delta[d] += 1
        for _, d in old.stored():
            delta[d] = delta.get(d, 0) - 1
        garbage = []
        self.conn.executemany(  # one statement for all: a new version of a big file
            "INSERT INTO chunks (hash, size, refs) VALUES (?, ?, ?) "
            "ON CONFLICT (hash) DO UPDATE SET refs = refs + excluded.refs",
            [(digest, sizes[digest], change) for digest, change in delta.items()
             if change > 0])
        for digest, change in delta.items():
            if change < 0:
                # A row left at 0 stays until its chunk has left the store (retire), so
                # that a crash in between leaves a record of it (collect_unreferenced).
                left = self.conn.execute(  # fetchall: the statement runs to its end
                    "UPDATE chunks SET refs = refs + ? WHERE hash = ? RETURNING refs",
                    (change, digest)).fetchall()
                if left and left[0][0] <= 0:
                    garbage.append(digest)
        if inline:
            self.inline.add(inline)
        return garbage

    def retire(self, garbage: list[bytes]) -> None:
        """Chunks a commit or purge left unreferenced leave the store or the index (kept a
        while when peers may still ask for them: ChunkStore.keep_replaced,
        InlineChunks.keep_replaced); their rows go with the next transaction, which costs
        no commit of its own."""
        for digest in garbage:
            row = self.conn.execute(
                "SELECT refs, EXISTS (SELECT 1 FROM inline WHERE hash = ?1) FROM chunks"
                " WHERE hash = ?1", (digest,)).fetchone()
            if row is not None and row[0] > 0:
                continue  # referred to again meanwhile
            if row is not None and row[1]:  # inline: row and bytes stay while kept
                if self.inline.retire(digest, self.seq):
                    continue
            else:
                self.store.retire(digest, self.seq)
            self._collected.append(digest)

    def collect_unreferenced(self) -> int:
        """After a crash: remove the chunks a commit or purge left unreferenced that had
        not left the store yet, and their rows. Inline ones stay, as replaced chunks kept
        for peers (retired files stay too). How many there were."""
        unreferenced = ("FROM chunks WHERE refs <= 0"
                        " AND NOT EXISTS (SELECT 1 FROM inline i WHERE i.hash = chunks.hash)")
        garbage = [r[0] for r in self.conn.execute(f"SELECT hash {unreferenced}")]
        for digest in garbage:
            self.store.remove(digest)
        with self.db.atomic():
            self.conn.execute(f"DELETE {unreferenced}")
        return len(garbage)

    def store_new_chunks(self, wanted: dict[bytes, bytes]) -> None:
        """Put chunks given as bytes into the store, or the index when they are short
        enough, ahead of a commit that will refer to them. Rows are recorded first, with
        refs 0: a crash before that commit leaves a record of them (collect_unreferenced;
        an inline one is then kept a while like a replaced one), not a stray chunk. Chunks
        already here cost one exists() each."""
        missing = {d: v for d, v in wanted.items() if not self.has_chunk(d)}
        if not missing:
            return
        with self.db.atomic():
            self.conn.executemany(
                "INSERT OR IGNORE INTO chunks (hash, size, refs) VALUES (?, ?, 0)",
                [(d, len(v)) for d, v in missing.items()])
            self.inline.add({d: v for d, v in missing.items() if inline_size(len(v))})
        for v in missing.values():
            if not inline_size(len(v)):
                self.store.put(v)

    def reserve_inodes(self, upto: int) -> None:
        """Inode numbers up to `upto` are taken (by new files a crash kept from the index,
        whose working chunks name them): never handed out again."""
        with self.db.atomic():
            self.conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?)"
                              " WHERE name = 'inodes'", (upto,))

    def recovery_target(self, ino: int) -> int | None:
        """The inode a recovery of `ino`'s uncommitted writes created, if that recovery
        was cut short after its commit (recovery.py)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?",
                                (f"recovering:{ino}",)).fetchone()
        return None if row is None else int(row[0])

    def set_recovery_target(self, ino: int, target: int | None) -> None:
        """Record (inside the transaction that creates the recovered copy) or forget it."""
        with self.db.atomic():
            if target is None:
                self.conn.execute("DELETE FROM meta WHERE key = ?", (f"recovering:{ino}",))
            else:
                self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                  (f"recovering:{ino}", target))

    def commit_draft(self, draft: Draft, sealed: Sealed, durable: bool = False) -> None:
        """Make a sealed, hashed draft the file's committed version (DESIGN rule 1). The
        index decides and the store follows, so every crash point leaves either the new
        version or the old one with the draft still dirty:

        1. One transaction: the new chunk list, size, hash and pending metadata, the chunk
           references, a stamp and journal row per node. Until it commits, the working
           chunks (the dirty mark) are untouched: a crash keeps the old version, and
           recovery turns the draft into a `.sync-recovered-` copy.
           A short working chunk (index/inline.py) goes into that transaction itself,
           its bytes read back from the working chunk.
        2. The working chunks are renamed into the store under their digests; those of
           zeros, holes now, are dropped, and so are those the index holds now. A crash
           meanwhile leaves working chunks whose digests the committed chunk list names:
           recovery finishes the install.
        3. Chunks no version refers to any more leave the store; after a crash, their
           rows (refs 0) say which (collect_unreferenced).

        With `durable` (fsync), the caller has made the working chunks durable first, and
        the transaction is a full sync. Nothing here awaits: no other task sees the index
        claim a chunk that is not in the store yet."""
        chunks = sealed.chunk_list()
        installs = sealed.installs()
        short = {i for i, digest in installs.items()  # a chunk that is a file stays one
                 if inline_size(sealed.work[i].length) and not self.store.has(digest)}
        inline = {installs[i]: self.store.read_work(draft.ino, i, sealed.work[i].length)
                  for i in short}
        if durable:  # not a statement that writes the new files first: they join the commit
            self._unsettled_sql("PRAGMA synchronous = FULL")
        try:
            crash_point("commit:before-index")
            garbage = self.commit_content(
                draft.ino, chunks, sealed.size, draft.mtime_ns, draft.mode,
                draft.content_changed, draft.owner, inline)
        finally:
            if durable:
                self._unsettled_sql("PRAGMA synchronous = NORMAL")
        crash_point("commit:after-index")
        for n, (i, digest) in enumerate(installs.items()):
            if n == 1:
                crash_point("commit:installing")
            if i not in short:
                self.store.install_work(draft.ino, i, digest)
        for i in (sealed.work.keys() - installs.keys()) | short:
            self.store.drop_work(draft.ino, i)
        crash_point("commit:installed")
        draft.rebase(chunks, sealed.size, inline)
        self.retire(garbage)
        crash_point("commit:retired")

    def purge_inodes(self, inos: list[int]) -> list[bytes]:
        """Forget inodes that have no names, no lookups and no handles left, in one
        transaction (a purge changes nothing in the share, so the mount gathers them).
        One that has a name again is kept. Returns the chunks left unreferenced."""
        def run() -> tuple[list[int], list[bytes]]:
            purged = self.conn.execute(
                "DELETE FROM inodes WHERE ino IN (SELECT value FROM json_each(?))"
                " AND NOT EXISTS (SELECT 1 FROM nodes n"
                " WHERE n.ino = inodes.ino AND n.deleted = 0) RETURNING ino, chunks",
                (json.dumps(inos),)).fetchall()
            garbage = []
            for _, blob in purged:
                garbage += self._reref(ChunkList([]), 0, ChunkList.from_blob(blob))
            return [ino for ino, _ in purged], garbage

        purged, garbage = self.transaction(run)
        for ino in purged:
            self._dir_nodes.pop(ino, None)
            self.detached.pop(ino, None)
        return garbage

    def orphan_inodes(self) -> list[int]:
        """Inodes with no live node (their last handle was open at a crash): those the
        `orphans` table recorded as they lost their last name, so that recovery costs
        nothing per inode of the share."""
        return [r[0] for r in self.conn.execute(
            "SELECT ino FROM orphans o WHERE NOT EXISTS "
            "(SELECT 1 FROM nodes n WHERE n.ino = o.ino AND n.deleted = 0)")]

    # -- helpers

    def is_live_name(self, parent: str, name: str) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM nodes WHERE parent = ? AND name = ? AND deleted = 0", (parent, name)
        ).fetchone() is not None

    def is_live_dir(self, node: str | None) -> bool:
        return self.conn.execute("SELECT 1 FROM nodes WHERE id = ? AND deleted = 0 AND"
                                 " kind = 'dir'", (node,)).fetchone() is not None

    def has_children(self, node: str, local_too: bool = True) -> bool:
        """Has directory `node` live children (synced ones only, without `local_too`)?"""
        return self.conn.execute(
            "SELECT 1 FROM nodes WHERE parent = ? AND deleted = 0"
            + ("" if local_too else
               f" AND id NOT LIKE '{LOCAL_ID_PREFIX}%' AND ignored = 0")
            + " LIMIT 1", (node,)).fetchone() is not None

    def drop_local_children(self, node: str) -> list[tuple[int, str]]:
        """Remove the local-only children of directory `node` (inside a transaction),
        which is going, and all below them (drop_local)."""
        rows = self.conn.execute(
            "SELECT id FROM nodes WHERE parent = ? AND deleted = 0"
            f" AND (id LIKE '{LOCAL_ID_PREFIX}%' OR ignored > 0)", (node,)).fetchall()
        return self.drop_local([r[0] for r in rows])

    def drop_local(self, nodes: list[str]) -> list[tuple[int, str | None]]:
        """Remove local-only nodes and all below them (inside a transaction), the content
        of their files into the old versions (index/versions.py): the nodes' (inode,
        name)s, for the caller to invalidate, and the inodes below them as (inode, None),
        to purge."""
        rows = [self.conn.execute("SELECT id, ino, name FROM nodes WHERE id = ?",
                                  (node,)).fetchone() for node in nodes]
        below = []
        for child, _, _ in rows:
            below += self.conn.execute(
                SUBTREE + "SELECT id, ino FROM subtree WHERE id != ?", (child, child)).fetchall()
        gone = [(r[0],) for r in [*rows, *below]]
        # A file that leaves its inode is recorded as an old version (schema.VERSIONS),
        # with its path while the nodes above it are still there.
        self.conn.executemany("UPDATE nodes SET deleted = 1 WHERE id = ?", gone)
        self._hold_versions()
        self.conn.executemany("DELETE FROM nodes WHERE id = ?", gone)
        for _, ino in below:
            self._dir_nodes.pop(ino, None)
        for _, ino, _ in rows:
            self._dir_nodes.pop(ino, None)
        return [(ino, name) for _, ino, name in rows] + [(ino, None) for _, ino in below]

    # -- local-only entries: ignored ones (index/ignore.py)

    def is_local_only(self, node: str) -> bool:
        """Is this node kept here only: a special file, or an ignored entry?"""
        return local_only(node) or self.ignored_of(node) > 0

    def ignored_of(self, node: str) -> int:
        """A node's nodes.ignored (0 when there is no such node)."""
        row = self.conn.execute("SELECT ignored FROM nodes WHERE id = ?", (node,)).fetchone()
        return row[0] if row else 0

    def kept_local(self, node: str) -> bool:
        """Is this node kept here only by its kind or by the rules (is_local_only, less
        the edits of a receive-only machine, which peers' newer versions replace)?"""
        ignored = self.ignored_of(node)
        return (local_only(node) or ignored > 0) and not ignored & EDITED_HERE

    def edited_here(self, node: str) -> bool:
        """Was this node made or changed here while receive-only, and is kept local for
        that (EDITED_HERE)?"""
        return self.conn.execute("SELECT ignored & ? FROM nodes WHERE id = ?",
                                 (EDITED_HERE, node)).fetchone() not in (None, (0,))

    def ignores(self, parent: str, name: str, kind: str, edits_too: bool = True,
                parent_ignored: int | None = None) -> bool:
        """Would an entry `name` of `kind` in directory `parent` be ignored: is the
        directory itself local-only (without `edits_too`: kept_local), or do the rules
        ignore the name? `parent_ignored`: the directory's nodes.ignored as the caller just
        read it, so is_local_only need not read it again (with `edits_too` only)."""
        if parent != ROOT_ID:
            if parent_ignored is None:
                local = self.is_local_only if edits_too else self.kept_local
                if local(parent):
                    return True
            elif local_only(parent) or parent_ignored > 0:  # is_local_only, as read
                return True
        return self.ignore.ignored(parent, name, kind)

    def make_local(self, node: str, is_dir: bool) -> None:
        """A synced node and everything below it become ignored (inside a transaction):
        never stamped from now on, so never sent; peers keep what they have of them. Its
        global id stays, so its peers' states are known as its and left alone
        (Merger), and its versions are there when it is shared again."""
        change = f"UPDATE nodes SET ignored = (ignored | 1) & ~{EDITED_HERE}, seq = 0," \
            " origin = NULL"
        if not is_dir:
            self.conn.execute(f"{change} WHERE id = ?", (node,))
            return
        self.conn.execute(
            f"{SUBTREE}{change} WHERE id IN (SELECT id FROM subtree)"
            f" AND kind NOT IN {LOCAL_ONLY_KINDS}", (node,))

    def make_shared(self, node: str) -> str:
        """An ignored node is ignored no more (inside a transaction; its parent is
        shared): one made while ignored becomes a new node, a create, under a global id;
        one that was shared before gets a new version of what changed here meanwhile
        (IGNORED_CHANGED), so that peers take it, and keeps the versions of the rest.
        Returns its id. What is below it waits for its own decision. On a receive-only
        machine, one made or changed here stays local, as that machine's edit."""
        if self.mode == RECEIVE_ONLY:
            changed = sum(IGNORED_CHANGED.values())
            self.conn.execute(
                "UPDATE nodes SET ignored = CASE WHEN ? OR ignored & ? THEN ignored | ?"
                " ELSE 0 END WHERE id = ?",
                (local_only(node), changed, 1 | EDITED_HERE, node))
            return node
        if not local_only(node):
            row = self.conn.execute(
                "SELECT ignored, content_vv, mode_vv, place_vv, xattr_vv FROM nodes"
                " WHERE id = ?", (node,)).fetchone()
            changed = [(a, vv) for a, vv in zip(ASPECTS, row[1:], strict=True)
                       if row[0] & IGNORED_CHANGED[a]]
            self.conn.execute("UPDATE nodes SET ignored = 0 WHERE id = ?", (node,))
            if changed:
                self.stamp_local(node, "share", tuple(a for a, _ in changed), None,
                                 tuple(vv for _, vv in changed))
            else:
                self.stamp_applied(node, "share", None, None, {})
            return node
        self._next_stamp()
        new = f"{self.device}:{self.seq}"
        columns = {"id": new, "seq": self.seq, "ignored": 0, "origin": None,
                   **self._new_versions(ASPECTS, ("{}",) * len(ASPECTS))}
        ino = self.conn.execute(
            f"UPDATE nodes SET {' = ?, '.join(columns)} = ? WHERE id = ? RETURNING ino",
            (*columns.values(), node)).fetchone()[0]
        self.conn.execute("UPDATE nodes SET parent = ? WHERE parent = ?", (new, node))
        self.conn.execute("UPDATE xattrs SET clock = ?, device = ? WHERE ino = ?",
                          (self.clock, self.device, ino))
        if self._dir_nodes.get(ino) == node:
            self._dir_nodes[ino] = new
        self._journal(new, "create", self.device, {"shared": True})
        return new

    def edits_here(self, under: str = ROOT_ID) -> list[tuple[str, str]]:
        """The nodes made or changed here while receive-only (EDITED_HERE), `under` or
        below it (where they are here; a delete where it was), with their paths. Such a
        node is never stamped (seq 0): the index of sequence numbers finds them."""
        return [(node, self.path_of(parent, name)) for node, parent, name in
                self.conn.execute("SELECT id, parent, name FROM nodes WHERE seq = 0 AND"
                                  " ignored & ? ORDER BY entry", (EDITED_HERE,)).fetchall()
                if under == ROOT_ID or self.is_within(node, under)]

    def local_edits(self) -> list[tuple[str, str]]:
        """What a receive-only machine made or changed here, by path: each with what it
        is (`copy`: kept aside, `made`, `changed`, `deleted`)."""
        out = []
        for node, path in self.edits_here():
            deleted = self.conn.execute("SELECT deleted FROM nodes WHERE id = ?",
                                        (node,)).fetchone()[0]
            out.append((path, "deleted" if deleted else "changed" if not local_only(node)
                        else "copy" if ".sync-local-" in path.rpartition("/")[2] else "made"))
        return sorted(out)

    def set_mode(self, mode: str, at_start: bool = False) -> None:
        """The mode setting, at the start or changed. Receive-only no more (now, or since
        the last start): what was made or changed here meanwhile is shared, a delete
        here, and the rest by a rescan of the rules (make_shared; a rescan of the root
        is done at every start)."""
        was, self.mode = self.mode, mode
        if mode != RECEIVE_ONLY and (at_start or was == RECEIVE_ONLY):
            self._share_edited_deletes()
            if not at_start:
                self.rules_changed(ROOT_ID)

    def _share_edited_deletes(self) -> None:
        def run() -> None:
            for node, in self.conn.execute(
                    "SELECT id FROM nodes WHERE seq = 0 AND deleted = 1 AND ignored & ?",
                    (EDITED_HERE,)).fetchall():
                self.conn.execute("UPDATE nodes SET ignored = 0 WHERE id = ?", (node,))
                self.stamp_local(node, "delete", ASPECTS, None)

        self.transaction(run)

    def local_only_files(self) -> int:
        """How many live entries other than directories are kept here only (an index
        of them: constant in the share's size)."""
        return self.conn.execute(
            "SELECT count(*) FROM nodes WHERE seq = 0 AND deleted = 0 AND kind != 'dir'"
        ).fetchone()[0]

    def rules_changed(self, directory: str) -> None:
        """A rule file in `directory` changed: decide afresh below it."""
        self.ignore.invalidate()
        self.on_rules_change(directory)

    def _save_refused(self, refused: list[str]) -> None:
        """Why rule files are refused, for `syncd status` (a local fact: no stamp)."""
        with self.db.atomic():
            self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES"
                              " ('ignore_refused', ?)", (to_json(refused),))

    def refused_rules(self) -> list[str]:
        """Why rule files are refused, as the serving process last found."""
        row = self.conn.execute(
            "SELECT value FROM meta WHERE key = 'ignore_refused'").fetchone()
        return json.loads(row[0]) if row else []

    def _rule_file(self, directory: str) -> tuple[str, bytes] | None:
        """The content hash and bytes of the `.syncdignore` in `directory`, if there is
        one whose content is here."""
        row = self.conn.execute(
            "SELECT i.ino, i.hash, i.size, i.local FROM nodes n JOIN inodes i ON i.ino = n.ino"
            " WHERE n.parent = ? AND n.name = ? AND n.deleted = 0 AND n.kind = 'file'",
            (directory, IGNORE_FILE)).fetchone()
        if row is None:
            return None
        ino, digest, size, here = row
        if size > RULES_MAX:  # refused for its size; its bytes need not be read
            return digest, bytes(size)
        return (digest, self.open_draft(ino).read(0, size)) if here else None

    def forget_dir(self, ino: int) -> None:
        """A directory inode whose node is gone (deleted, or merged into another)."""
        self._dir_nodes.pop(ino, None)

    def add_chunk_refs(self, chunks: ChunkList, size: int,
                       inline: dict[bytes, bytes] | None = None) -> None:
        """A new inode holds these chunks (`size` bytes of content): a reference each;
        `inline`, the bytes of those that arrive with it (a peer's state carries them)."""
        self._reref(chunks, size, ChunkList([]), inline)

    def release_chunk_refs(self, chunks: ChunkList) -> list[bytes]:
        """What held these chunks (an old version) goes: a reference each less; the
        chunks left unreferenced, for `retire`."""
        return self._reref(ChunkList([]), 0, chunks)

    def is_within(self, node: str, ancestor: str) -> bool:
        """Is `node` `ancestor` or below it?"""
        while node is not None:
            if node == ancestor:
                return True
            node = self.placement(node)[0]
        return False

    def _touch_dir(self, dir_ino: int, now: int) -> None:
        """A directory's mtime and ctime are local: they follow its entries here."""
        self.conn.execute(
            "UPDATE inodes SET mtime_ns = ?, ctime_ns = ? WHERE ino = ?", (now, now, dir_ino)
        )

    # -- content state: what is here, pins, and what the commands that look report.
    # `local` and `pinned` are local facts: they change without a stamp.

    def node_at(self, path: str) -> str | None:
        """The live node at a share path ('a/b', '' for the root), or None."""
        node = ROOT_ID
        for part in filter(None, path.split("/")):
            row = self.conn.execute(
                "SELECT id FROM nodes WHERE parent = ? AND name = ? AND deleted = 0",
                (node, part)).fetchone()
            if row is None:
                return None
            node = row[0]
        return node

    def display_name(self, ino: int) -> str:
        """How logs and messages name an inode: a name of it, quoted, or its number."""
        row = self.conn.execute("SELECT name FROM nodes WHERE ino = ? AND deleted = 0",
                                (ino,)).fetchone()
        return repr(row[0]) if row else f"inode {ino}"

    def is_local(self, ino: int) -> bool:
        """Is every chunk of inode `ino` here? One that is gone has nothing to fetch."""
        row = self.conn.execute("SELECT local FROM inodes WHERE ino = ?", (ino,)).fetchone()
        return row is None or bool(row[0])

    def missing_chunks(self, ino: int) -> list[bytes]:
        """The chunks of inode `ino` that are not here, each once (none when it is marked
        local)."""
        row = self.conn.execute("SELECT local, chunks, size FROM inodes WHERE ino = ?",
                                (ino,)).fetchone()
        if row is None or row[0]:
            return []
        return self.absent(ChunkList.from_blob(row[1]), row[2])

    def absent(self, chunks: ChunkList, size: int) -> list[bytes]:
        """The chunks of content of `size` bytes made of `chunks` that are neither in the
        store nor inline, each once. Only the last can be inline: one query at most."""
        tail = inline_slot(chunks, size)
        return [d for d in chunks.digests()
                if not (d == tail and self.inline.has(d)) and not self.store.has(d)]

    def not_held(self, digests: list[bytes]) -> list[bytes]:
        """Those of `digests` that are neither in the store nor inline."""
        return [d for d in digests if not self.has_chunk(d)]

    def has_chunk(self, digest: bytes) -> bool:
        return self.inline.has(digest) or self.store.has(digest)

    def read_chunk(self, digest: bytes, length: int) -> bytes:
        """The first `length` bytes of a chunk held here, inline or in the store."""
        held = self.inline.get([digest]).get(digest)
        return held[:length] if held is not None else self.store.read(digest, 0, length)

    def open_draft(self, ino: int) -> Draft:
        """A draft over inode `ino`'s committed content, given the bytes of its inline
        chunk (if any), which it then reads from memory."""
        row = self.conn.execute("SELECT size, chunks FROM inodes WHERE ino = ?",
                                (ino,)).fetchone()
        if row is None:
            raise fail(errno.ENOENT, f"inode {ino}")
        size, chunks = row[0], ChunkList.from_blob(row[1])
        tail = inline_slot(chunks, size)
        return Draft(self.store, ino, chunks, size,
                     self.inline.get([tail]) if tail is not None else None)

    def fill_inline(self, draft: Draft) -> None:
        """Give a draft made while its file's content was still arriving the bytes of its
        inline chunk, if they have arrived since."""
        tail = inline_slot(draft.base, draft.size)
        if tail is not None and tail not in draft.inline:
            draft.inline.update(self.inline.get([tail]))

    def install_inline(self, chunks: dict[bytes, bytes]) -> None:
        """Hold chunks from a peer, verified and short enough, in the index. One that no
        version here refers to (a peer asked us to hold it before we knew the version) is
        kept a while like a replaced chunk."""
        if not chunks:
            return
        with self.db.atomic():
            self.conn.executemany(
                "INSERT OR IGNORE INTO chunks (hash, size, refs) VALUES (?, ?, 0)",
                [(d, len(v)) for d, v in chunks.items()])
            self.inline.add(chunks)
        for digest in chunks:
            if self.conn.execute("SELECT refs FROM chunks WHERE hash = ?",
                                 (digest,)).fetchone()[0] <= 0:
                self.inline.retire(digest, self.seq)

    def damaged_inline(self, digest: bytes) -> bool:
        """Is the chunk held inline with bytes that no longer match its name?"""
        held = self.inline.get([digest]).get(digest)
        return held is not None and digest_of(held) != digest

    def keep_replaced(self) -> None:
        """From now on, keep replaced chunks a while for peers (syncd/daemon.py)."""
        self.store.keep_replaced(self.seq)
        self.inline.keep_replaced(self.seq)

    def expire_replaced(self, confirmed: int, min_age: float, max_age: float) -> None:
        """Drop the replaced chunks kept for peers that have served their time (see
        ChunkStore.expire_retired)."""
        self.store.expire_retired(confirmed, min_age, max_age)
        self.inline.expire(confirmed, min_age, max_age)

    def mark_local(self, inos: list[int]) -> None:
        """Every chunk of these inodes is here now, verified when it was installed."""
        with self.db.atomic():
            self.conn.executemany("UPDATE inodes SET local = 1 WHERE ino = ?",
                                  [(ino,) for ino in inos])

    def keep_referenced(self, digests: set[bytes]) -> set[bytes]:
        """Chunks just installed from a peer that no version here refers to any more (the
        file was deleted or replaced while they travelled) leave the store at once,
        or nothing would ever collect them. Returns those that stay."""
        kept = self.referenced(digests)
        for digest in digests - kept:
            self.store.remove(digest)
        return kept

    def _in_use(self, digest: bytes) -> bool:
        """Does some version here refer to this chunk (ChunkStore.in_use)?"""
        return self.conn.execute("SELECT 1 FROM chunks WHERE hash = ? AND refs > 0",
                                 (digest,)).fetchone() is not None

    def referenced(self, digests: set[bytes]) -> set[bytes]:
        """Those of these chunks that some version here refers to."""
        return {d for d in digests if self.conn.execute(
            "SELECT 1 FROM chunks WHERE hash = ? AND refs > 0", (d,)).fetchone()}

    def drop_damaged_chunk(self, digest: bytes) -> None:
        """A chunk here no longer matches its name: the inodes that use it are no longer
        local (so they are fetched again), then the chunk leaves the store or the index."""
        with self.db.atomic():
            self.conn.execute("UPDATE inodes SET local = 0 WHERE instr(chunks, ?) > 0",
                              (digest,))
            self.conn.execute("DELETE FROM inline WHERE hash = ?", (digest,))
        self.store.remove(digest)

    def not_local(self) -> list[int]:
        """Inodes with some chunk not here."""
        return [r[0] for r in self.conn.execute("SELECT ino FROM inodes WHERE local = 0")]

    def is_smaller(self, ino: int, size: int) -> bool:
        """Is an inode's committed size below `size` bytes (one just unlinked is usually
        in the InodeCache)? False when there is no such inode."""
        try:
            return self.inode(ino).size < size
        except FileNotFoundError:
            return False

    def smaller_than(self, inos: list[int], size: int) -> list[int]:
        """Those of `inos` whose committed size is below `size` bytes."""
        return [r[0] for r in self.conn.execute(
            "SELECT ino FROM inodes WHERE size < ? AND ino IN (SELECT value FROM json_each(?))",
            (size, json.dumps(inos)))]

    def total_size(self, inos: list[int]) -> int:
        """The committed sizes of these inodes, added up."""
        return self.conn.execute(
            "SELECT coalesce(sum(size), 0) FROM inodes"
            " WHERE ino IN (SELECT value FROM json_each(?))", (json.dumps(inos),)).fetchone()[0]

    def pinned(self, ino: int) -> bool:
        """Is inode `ino` under a pin: pinned itself, or a directory above one of its
        names?"""
        row = self.conn.execute(
            "WITH RECURSIVE up (id, parent, pinned) AS ("
            " SELECT id, parent, pinned FROM nodes WHERE ino = ? AND deleted = 0"
            " UNION SELECT n.id, n.parent, n.pinned FROM nodes n JOIN up ON n.id = up.parent)"
            " SELECT max(pinned) FROM up", (ino,)).fetchone()
        return bool(row and row[0])

    def set_pin(self, node: str, pinned: bool) -> None:
        """Pin or unpin the subtree at `node`: its content is kept here, fetched ahead of
        any open (a local fact, never synced)."""
        with self.db.atomic():
            self.conn.execute("UPDATE nodes SET pinned = ? WHERE id = ?", (int(pinned), node))

    def files_under(self, node: str) -> list[int]:
        """The inodes of the files in the live subtree at `node`, each once."""
        return [r[0] for r in self.conn.execute(
            SUBTREE + "SELECT DISTINCT ino FROM subtree WHERE kind = 'file'", (node,))]

    def bytes_under(self, node: str) -> tuple[int, int]:
        """(content bytes, bytes held here) of the files in the live subtree at `node`."""
        return self.conn.execute(
            SUBTREE + "SELECT coalesce(sum(i.size), 0), coalesce(sum(i.size * i.local), 0)"
            " FROM subtree s JOIN inodes i ON i.ino = s.ino WHERE s.kind = 'file'",
            (node,)).fetchone()

    def live_files_of(self, nodes: list[str]) -> list[int]:
        """The inodes of those of `nodes` that are live files now."""
        return [r[0] for r in self.conn.execute(
            "SELECT ino FROM nodes WHERE deleted = 0 AND kind = 'file'"
            " AND id IN (SELECT value FROM json_each(?))", (json.dumps(nodes),))]

    def left_inode(self, nodes: list[str], ino: int) -> bool:
        """Has any of `nodes` left inode `ino`: another inode now (a newer version came),
        or none (deleted)?"""
        return self.conn.execute(
            "SELECT 1 FROM nodes WHERE (ino IS NULL OR ino != ?)"
            " AND id IN (SELECT value FROM json_each(?)) LIMIT 1",
            (ino, json.dumps(nodes))).fetchone() is not None

    def originals_of(self, nodes: list[str]) -> list[str]:
        """The nodes that those of `nodes` which are conflict copies were made of."""
        return [r[0] for r in self.conn.execute(
            "SELECT conflict_of FROM nodes WHERE conflict_of IS NOT NULL"
            " AND id IN (SELECT value FROM json_each(?))", (json.dumps(nodes),))]

    def chunks_made_here(self, upto: int) -> list[bytes]:
        """The chunks, each once, of the live files whose current version was made here
        at sequence number `upto` or before (syncd wait --copies)."""
        return list(dict.fromkeys(
            d for (blob,) in self.conn.execute(
                "SELECT i.chunks FROM nodes n JOIN inodes i ON i.ino = n.ino"
                " WHERE n.kind = 'file' AND n.deleted = 0 AND n.origin IS NULL"
                " AND n.seq BETWEEN 1 AND ?", (upto,))
            for d in ChunkList.from_blob(blob).digests()))

    def conflicts(self) -> list[Conflict]:
        """The live conflict copies (files and symlinks), by path."""
        return [Conflict(*row) for row in self.conn.execute(
            "WITH RECURSIVE up (start, id, parent, path) AS ("
            " SELECT id, id, parent, name FROM nodes WHERE conflict_of IS NOT NULL"
            " AND deleted = 0 AND kind != 'dir'"
            " UNION ALL SELECT up.start, n.id, n.parent, n.name || '/' || up.path"
            " FROM nodes n JOIN up ON n.id = up.parent WHERE n.id != 'root')"
            " SELECT up.path, i.size, i.mtime_ns FROM up"
            " JOIN nodes c ON c.id = up.start JOIN inodes i ON i.ino = c.ino"
            " WHERE up.parent = 'root' ORDER BY up.path")]

    def file_counts(self) -> FileCounts:
        """What `syncd status` says of the files: a hard link counts once per name. The
        running totals (schema.BOOKKEEPING) and the pinned subtrees, never a scan of every
        node."""
        files, local, conflicts, size, size_local = self.conn.execute(
            "SELECT files, local, conflicts, bytes, bytes_local FROM totals").fetchone()
        pinned = self.conn.execute(
            "WITH RECURSIVE pinned (id, kind) AS ("
            " SELECT id, kind FROM nodes WHERE pinned = 1 AND deleted = 0"
            " UNION SELECT n.id, n.kind FROM nodes n JOIN pinned p ON n.parent = p.id"
            " WHERE n.deleted = 0)"
            " SELECT count(*) FROM pinned WHERE kind = 'file'").fetchone()[0]
        return FileCounts(files, local, pinned, conflicts, size, size_local)


# A new node's columns as NewEntries writes them, versions in _new_versions' order.
NEW_NODE_COLUMNS = ("id", "seq", *(f"{a}_{c}" for a in ASPECTS
                                   for c in ("vv", "made", "clock", "device")),
                    "kind", "ino", "parent", "name", "origin")


class NewEntries:
    """Files, directories and symlinks made in bulk: for each the rows `create` writes
    (inode, node, journal row, chunk references, inline bytes), gathered and written with
    one statement per table at `flush`, each parent's mtime set once. `add` makes an
    entry as `create` makes it (syncd import), `add_applied` a node from a peer's state
    as Merger makes it (index/plain_creates.py). Only for entries `Catalog.creates_plainly`
    allows (or plain creates, for a peer's), under parents that exist or were added here,
    and names checked and free. Inside one transaction of the caller's, which flushes
    before anything else reads or writes the index: each entry's inode number and stamp
    are allocated at once, so a directory's children can be added before it is
    written."""

    def __init__(self, cat: Catalog, uid: int, gid: int):
        self.cat, self.uid, self.gid = cat, uid, gid
        self.now = time.time_ns()
        self.next_ino: int | None = None  # the next inode number, read at the first add
        self.inodes: list[tuple] = []
        self.nodes: list[tuple] = []
        self.journal: list[tuple] = []
        self.refs: Counter[bytes] = Counter()
        self.sizes: dict[bytes, int] = {}
        self.inline: dict[bytes, bytes] = {}
        self.parents: set[int] = set()

    def add(self, parent_ino: int, parent: str, name: str, kind: str, mode: int,
            mtime_ns: int | None = None, target: bytes | None = None,
            content: tuple[ChunkList, int] | None = None,
            inline: dict[bytes, bytes] | None = None) -> tuple[int, str]:
        """One new entry, as `create` makes it (with `inline`: bytes of its chunks held in
        the index); its inode number and node id."""
        chunks, size = content or (ChunkList([]), len(target) if target is not None else 0)
        digest = chunks.hash if kind == "file" else None
        if kind == "symlink":
            digest = "blake3:" + digest_of(target or b"").hex()
        ino = self._inode(kind, mode, size, mtime_ns, digest, chunks, target, True, inline)
        self.cat._next_stamp()
        node = f"{self.cat.device}:{self.cat.seq}"
        vv = to_json({self.cat.device: self.cat.seq})  # every aspect's first version
        self._node(node, (vv, vv, self.cat.clock, self.cat.device) * len(ASPECTS), kind, ino,
                   parent_ino, parent, name, None, "create", self.cat.device, {"kind": kind})
        return ino, node

    def add_applied(self, parent_ino: int, state: dict, origin: str, size: int,
                    chunks: ChunkList, target: bytes | None, local: bool,
                    inline: dict[bytes, bytes]) -> int:
        """A node a peer's state makes (it is not here), with the state's versions, as
        sent by `origin`: its content as node_rows.new_inode reads it (`local`: all of it
        here; `inline`: the bytes the state carried), journalled as Merger stamps it; its
        inode number."""
        c, kind = state["content"], state["kind"]
        ino = self._inode(kind, state["mode"]["mode"], size,
                          c["mtime_ns"] if kind != "dir" else None,
                          chunks.hash if kind == "file" else c["hash"], chunks, target,
                          local, inline)
        self.cat.observe_clock(max(state[a]["clock"] for a in ASPECTS))
        self.cat._next_stamp()
        texts: list[tuple[dict, str]] = []  # a new node's vectors are mostly one

        def text(vv: dict) -> str:
            for known, encoded in texts:
                if known == vv:
                    return encoded
            texts.append((vv, to_json(vv)))
            return texts[-1][1]

        versions = tuple(v for a in ASPECTS for v in (
            text(state[a]["vv"]), text(state[a]["made"]), state[a]["clock"],
            state[a]["device"]))
        maker = max((state[a] for a in ASPECTS), key=lambda v: v["clock"])["device"]
        self._node(state["id"], versions, kind, ino, parent_ino, state["parent"],
                   state["name"], origin, "apply-create", maker or self.cat.device,
                   {"from": origin})
        return ino

    def _inode(self, kind: str, mode: int, size: int, mtime_ns: int | None,
               digest: str | None, chunks: ChunkList, target: bytes | None, local: bool,
               inline: dict[bytes, bytes] | None) -> int:
        if self.next_ino is None:  # AUTOINCREMENT's next, as an INSERT would take it
            self.next_ino = self.cat.conn.execute(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'inodes'),"
                " 0), coalesce((SELECT max(ino) FROM inodes), 0)) + 1").fetchone()[0]
        ino, self.next_ino = self.next_ino, self.next_ino + 1
        mtime = mtime_ns if mtime_ns is not None else self.now
        self.inodes.append((ino, kind, mode & 0o7777, self.uid, self.gid, size, mtime,
                            self.now, self.now, digest, chunks.blob, target, int(local)))
        for i, d in chunks.stored():
            self.refs[d] += 1
            self.sizes[d] = slot_length(i, size)
        self.inline.update(inline or {})
        return ino

    def _node(self, node: str, versions: tuple, kind: str, ino: int, parent_ino: int,
              parent: str, name: str, origin: str | None, op: str, device: str,
              detail: dict) -> None:
        cat = self.cat
        self.nodes.append((node, cat.seq, *versions, kind, ino, parent, name, origin))
        self.journal.append((cat.seq, cat.clock, node, op, device, self.now // 10**9,
                             to_json(detail)))
        self.parents.add(parent_ino)

    def flush(self) -> None:
        """Write what was added since the last flush."""
        if not self.nodes:
            return
        conn = self.cat.conn
        conn.executemany(
            "INSERT INTO inodes (ino, kind, mode, uid, gid, size, mtime_ns, ctime_ns,"
            " atime_ns, hash, chunks, target, local)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self.inodes)
        conn.executemany(
            f"INSERT INTO nodes ({', '.join(NEW_NODE_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(NEW_NODE_COLUMNS))})", self.nodes)
        conn.executemany(
            "INSERT INTO journal (seq, clock, node, op, device, at, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)", self.journal)
        conn.executemany(
            "INSERT INTO chunks (hash, size, refs) VALUES (?, ?, ?) "
            "ON CONFLICT (hash) DO UPDATE SET refs = refs + excluded.refs",
            [(d, self.sizes[d], n) for d, n in self.refs.items()])
        self.cat.inline.add(self.inline)
        conn.executemany("UPDATE inodes SET mtime_ns = ?1, ctime_ns = ?1 WHERE ino = ?2",
                         [(self.now, ino) for ino in self.parents])
        self.inodes, self.nodes, self.journal = [], [], []
        self.refs, self.sizes, self.inline, self.parents = Counter(), {}, {}, set()
        self.next_ino = None  # a create may come before the next add


class Conflict(NamedTuple):
    path: str  # from the share's root, without a leading slash
    size: int
    mtime_ns: int


class FileCounts(NamedTuple):
    total: int
    local: int
    pinned: int
    conflicts: int
    bytes: int
    bytes_local: int


@contextlib.contextmanager
def open_catalog(db_path: Path, store_path: Path, readonly: bool = False) -> Iterator[Catalog]:
    """A home's catalog for one command, closed when the block ends. Read-only for the
    commands that only look: WAL lets them read while the serving process writes, and
    any write through it fails."""
    db = open_db(db_path, readonly=readonly)
    try:
        catalog = Catalog(db, ChunkStore(store_path))
        try:
            yield catalog
        finally:
            catalog.store.close()
    finally:
        db.close()
