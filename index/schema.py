"""The SQLite schema of a home's index, and opening it.

The schema is the reference for what each column means. `PRAGMA user_version` holds
SCHEMA_VERSION; `open_db` migrates older databases forward, one MIGRATIONS step per version
(SQL, or a function of the connection), each in one transaction.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.index.chunklist import ChunkList

if TYPE_CHECKING:
    import sqlite_utils

SCHEMA_VERSION = 20
ROOT_INO = 1  # pyfuse3.ROOT_INODE
ROOT_ID = "root"  # the same on every device
# Special files: local to the machine that made them (a socket or a device means nothing
# elsewhere; a FIFO is a meeting point of processes on one machine). See the nodes table.
LOCAL_ONLY_KINDS = ("fifo", "socket", "chardev", "blockdev")
LOCAL_ID_PREFIX = "local:"

# What a mount's start and `syncd status` read instead of scanning every node.
#
# Running totals of the live files (a hard link counts once per name): `syncd status`
# reads one row. Triggers keep it: a change of a node's
# kind, liveness, inode or conflict mark moves its file out of and into the totals, and a
# change of an inode's size or `local` moves every live file node on it.
#
# Orphans: inodes that lost their last live name (kept while a handle is open; recovery
# purges those a crash left), recorded as it happens. Pinned nodes have an index of their
# own, as do inodes not all here (the fetcher's round at start).
BOOKKEEPING = """
CREATE TABLE orphans (ino INTEGER PRIMARY KEY);
CREATE TRIGGER orphans_name_gone AFTER UPDATE OF ino, deleted ON nodes
WHEN old.ino IS NOT NULL AND old.deleted = 0 AND (new.ino IS NOT old.ino OR new.deleted)
BEGIN
    INSERT OR IGNORE INTO orphans (ino) SELECT old.ino WHERE NOT EXISTS
        (SELECT 1 FROM nodes WHERE ino = old.ino AND deleted = 0);
END;
CREATE TRIGGER orphans_node_gone AFTER DELETE ON nodes
WHEN old.ino IS NOT NULL AND old.deleted = 0 BEGIN
    INSERT OR IGNORE INTO orphans (ino) SELECT old.ino WHERE NOT EXISTS
        (SELECT 1 FROM nodes WHERE ino = old.ino AND deleted = 0);
END;
CREATE TRIGGER orphans_purged AFTER DELETE ON inodes BEGIN
    DELETE FROM orphans WHERE ino = old.ino;
END;
CREATE INDEX nodes_pinned ON nodes (id) WHERE pinned = 1;
CREATE INDEX inodes_not_local ON inodes (ino) WHERE local = 0;
CREATE TABLE totals (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    files       INTEGER NOT NULL DEFAULT 0,
    local       INTEGER NOT NULL DEFAULT 0,   -- of them, with all content here
    conflicts   INTEGER NOT NULL DEFAULT 0,   -- of them, conflict copies
    bytes       INTEGER NOT NULL DEFAULT 0,
    bytes_local INTEGER NOT NULL DEFAULT 0
);
INSERT INTO totals (id) VALUES (1);
CREATE TRIGGER totals_node_in AFTER INSERT ON nodes
WHEN new.kind = 'file' AND new.deleted = 0 AND new.ino IS NOT NULL BEGIN
    UPDATE totals SET files = files + 1, conflicts = conflicts + (new.conflict_of IS NOT NULL),
        local = local + (SELECT local FROM inodes WHERE ino = new.ino),
        bytes = bytes + (SELECT size FROM inodes WHERE ino = new.ino),
        bytes_local = bytes_local + (SELECT size * local FROM inodes WHERE ino = new.ino);
END;
CREATE TRIGGER totals_node_out AFTER DELETE ON nodes
WHEN old.kind = 'file' AND old.deleted = 0 AND old.ino IS NOT NULL BEGIN
    UPDATE totals SET files = files - 1, conflicts = conflicts - (old.conflict_of IS NOT NULL),
        local = local - coalesce((SELECT local FROM inodes WHERE ino = old.ino), 0),
        bytes = bytes - coalesce((SELECT size FROM inodes WHERE ino = old.ino), 0),
        bytes_local = bytes_local
            - coalesce((SELECT size * local FROM inodes WHERE ino = old.ino), 0);
END;
CREATE TRIGGER totals_node_change AFTER UPDATE OF kind, deleted, ino, conflict_of ON nodes
BEGIN
    UPDATE totals SET files = files - 1, conflicts = conflicts - (old.conflict_of IS NOT NULL),
        local = local - coalesce((SELECT local FROM inodes WHERE ino = old.ino), 0),
        bytes = bytes - coalesce((SELECT size FROM inodes WHERE ino = old.ino), 0),
        bytes_local = bytes_local
            - coalesce((SELECT size * local FROM inodes WHERE ino = old.ino), 0)
    WHERE old.kind = 'file' AND old.deleted = 0 AND old.ino IS NOT NULL;
    UPDATE totals SET files = files + 1, conflicts = conflicts + (new.conflict_of IS NOT NULL),
        local = local + coalesce((SELECT local FROM inodes WHERE ino = new.ino), 0),
        bytes = bytes + coalesce((SELECT size FROM inodes WHERE ino = new.ino), 0),
        bytes_local = bytes_local
            + coalesce((SELECT size * local FROM inodes WHERE ino = new.ino), 0)
    WHERE new.kind = 'file' AND new.deleted = 0 AND new.ino IS NOT NULL;
END;
CREATE TRIGGER totals_inode_change AFTER UPDATE OF size, local ON inodes
WHEN new.size != old.size OR new.local != old.local BEGIN
    UPDATE totals SET
        local = local + (new.local - old.local) * (SELECT count(*) FROM nodes
            WHERE ino = new.ino AND kind = 'file' AND deleted = 0),
        bytes = bytes + (new.size - old.size) * (SELECT count(*) FROM nodes
            WHERE ino = new.ino AND kind = 'file' AND deleted = 0),
        bytes_local = bytes_local + (new.size * new.local - old.size * old.local)
            * (SELECT count(*) FROM nodes WHERE ino = new.ino AND kind = 'file' AND deleted = 0);
END;
"""


# Extended attributes (`user.*` only; docs/cli.md, "What is shared"), schema 12. They belong
# to the inode, as the mode does (the nodes of a hard-link group share them), and are one
# version of each node (the xattr_* columns), apart from content and mode, so a setxattr
# here never conflicts with a chmod or an edit there. Within that version each attribute
# carries the Lamport clock and device of the change that set or removed it: a removed
# one stays as a row without a value, so that merging two sets is the per-name maximum by
# (clock, device), the same whatever the order in which a peer meets them
# (index/rules.py, merge_xattrs). The rows go with their inode (a trigger).
XATTRS = """
CREATE TABLE xattrs (
    ino    INTEGER NOT NULL,
    name   TEXT NOT NULL,        -- the full name, 'user.…', UTF-8
    value  BLOB,                 -- NULL: removed (kept for the merge, never listed)
    clock  INTEGER NOT NULL,     -- Lamport clock of the change that set or removed it
    device TEXT NOT NULL,        -- the device that made that change
    PRIMARY KEY (ino, name)
) WITHOUT ROWID;
CREATE TRIGGER xattrs_inode_gone AFTER DELETE ON inodes BEGIN
    DELETE FROM xattrs WHERE ino = old.ino;
END;
"""

# Old versions (docs/cli.md, "syncd versions"), schema 13: a file's content that was
# replaced or deleted here, by this machine or by a peer's change, kept for
# versions_keep_days within versions_max (index/versions.py). Two triggers record one as
# it goes, so that no path that replaces or deletes content can miss it: a file node that
# leaves its inode when that inode keeps no other live name (a delete, a peer's newer
# version, a file renamed over it), and an inode whose chunk list changes under its names
# (a commit here). Only content all held here is kept (nothing to restore otherwise), and
# never empty content. A row holds references to its chunks in `chunks`, as an inode does,
# so the store keeps them; the triggers cannot walk a chunk list (no CTE in a trigger), so
# a new row is `held = 0` until the catalog counts its references, within the same
# transaction (Catalog.transaction).
VERSIONS = """
CREATE TABLE versions (
    id       INTEGER PRIMARY KEY,
    node     TEXT NOT NULL,        -- the node it was a version of
    parent   TEXT,                 -- where it was: parent node id and name ...
    name     TEXT NOT NULL,
    path     TEXT,                 -- ... and its path from the share's root (set when held)
    size     INTEGER NOT NULL,
    hash     TEXT NOT NULL,        -- 'blake3:<hex>' of the chunk list
    chunks   BLOB NOT NULL,        -- the chunk list (chunklist.py)
    mtime_ns INTEGER NOT NULL,     -- its mtime: when it was written
    mode     INTEGER NOT NULL,
    device   TEXT,                 -- the device that made it
    replaced INTEGER NOT NULL,     -- unix seconds when it was replaced or deleted here
    held     INTEGER NOT NULL DEFAULT 0  -- its chunk references are counted
);
CREATE INDEX versions_path ON versions (path);
CREATE INDEX versions_node ON versions (node);
CREATE INDEX versions_replaced ON versions (replaced);
CREATE INDEX versions_unheld ON versions (id) WHERE held = 0;
CREATE TRIGGER versions_left AFTER UPDATE OF ino, deleted ON nodes
WHEN old.kind = 'file' AND old.ino IS NOT NULL AND old.deleted = 0
    AND (new.ino IS NOT old.ino OR new.deleted) BEGIN
    INSERT INTO versions (node, parent, name, size, hash, chunks, mtime_ns, mode, device,
                          replaced)
    SELECT old.id, old.parent, old.name, i.size, i.hash, i.chunks, i.mtime_ns, i.mode,
           old.content_device, CAST(strftime('%s', 'now') AS INTEGER)
    FROM inodes i WHERE i.ino = old.ino AND i.local = 1 AND i.size > 0
        AND NOT EXISTS (SELECT 1 FROM nodes WHERE ino = old.ino AND deleted = 0);
END;
CREATE TRIGGER versions_rewritten AFTER UPDATE OF chunks ON inodes
WHEN old.kind = 'file' AND old.hash IS NOT new.hash AND old.local = 1 AND old.size > 0
BEGIN
    INSERT INTO versions (node, parent, name, size, hash, chunks, mtime_ns, mode, device,
                          replaced)
    SELECT n.id, n.parent, n.name, old.size, old.hash, old.chunks, old.mtime_ns, old.mode,
           n.content_device, CAST(strftime('%s', 'now') AS INTEGER)
    FROM nodes n WHERE n.ino = old.ino AND n.deleted = 0;
END;
"""


# Ignored entries (schema 14; index/ignore.py, docs/cli.md "Ignore rules"): local-only like
# special files, never stamped (seq 0) so never sent nor pending. One made while ignored
# has a local id ('local:<n>') as a special file does; a synced one that became ignored
# (a rule changed, or it moved under an ignored path) keeps its global id, so that peers'
# states of it are recognised and left alone, and its versions when it is shared again.
# `ignored` marks both (special files are local by their kind, not by a rule). Every live
# local-only node has seq 0, and so has the root: the index counts them for `syncd status`.
# A peer's state that the rules here leave alone is held, its latest by node, and applied
# once the rules here no longer ignore it (index/merge.py, release_held).
IGNORED = """
ALTER TABLE nodes ADD COLUMN ignored INTEGER NOT NULL DEFAULT 0;
CREATE INDEX nodes_local_only ON nodes (kind) WHERE seq = 0 AND deleted = 0;
CREATE TABLE held (id TEXT PRIMARY KEY, state TEXT NOT NULL, origin TEXT NOT NULL);
"""


# The bounded cache's walk, least recently used first (index/cache.py, candidates): the
# files all here with content beyond the index (over INLINE_MAX, 16384 bytes, which stays
# in the index), by last use. Partial, so a small file's create and commit never touch it.
CACHE_LRU = """
CREATE INDEX inodes_lru ON inodes (atime_ns, ino)
    WHERE local = 1 AND kind = 'file' AND size > 16384;
"""

# Relays: storage that runs no syncd (syncd/relay/, index/relays.py). `cursor` is this
# device's sequence number up to which its states are on the relay (rule 5: moved only
# after the batch is stored); `relay_reads` says, per member that writes there, up to which
# of its stamps its batches were applied here, and pins the certificate it published.
RELAYS = """
CREATE TABLE relays (
    name         TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    credentials  TEXT,                            -- `relay add --credentials FILE`, or NULL
    state        TEXT NOT NULL DEFAULT 'unknown', -- unknown, online, unreachable, failing
    cursor       INTEGER NOT NULL DEFAULT 0,
    last_seen    INTEGER,                         -- unix seconds of the last exchange
    last_error   TEXT,
    stored_bytes INTEGER NOT NULL DEFAULT 0       -- this device's objects there, last count
);
CREATE TABLE relay_reads (
    relay        TEXT NOT NULL,
    device       TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    upto         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (relay, device)
);
"""

# Tombstone collection (schema 18; index/tombstones.py, docs/protocol.md "Tombstones"). A
# running count of the tombstones for `syncd status`; an index of them by stamp, so that a
# collection batch reads only tombstones; `horizons`, the stamp up to which every peer and
# relay member had this device's changes, as seen at each time it moved (a tombstone goes
# only once that has been so for tombstone_keep_days); and, per member of a relay, what the
# member said it read of this device's batches (`ours`), the newest batch of its own then
# (`wrote`: read here too before that counts), what its newest snapshot had read of ours
# (`snapshot`), and whether it is lost (relay_member_days: then it counts no more).
TOMBSTONES = """
ALTER TABLE totals ADD COLUMN tombstones INTEGER NOT NULL DEFAULT 0;
UPDATE totals SET tombstones = (SELECT count(*) FROM nodes WHERE deleted = 1);
CREATE TRIGGER totals_tombstone_in AFTER INSERT ON nodes WHEN new.deleted = 1 BEGIN
    UPDATE totals SET tombstones = tombstones + 1;
END;
CREATE TRIGGER totals_tombstone_out AFTER DELETE ON nodes WHEN old.deleted = 1 BEGIN
    UPDATE totals SET tombstones = tombstones - 1;
END;
CREATE TRIGGER totals_tombstone_change AFTER UPDATE OF deleted ON nodes
WHEN new.deleted IS NOT old.deleted BEGIN
    UPDATE totals SET tombstones = tombstones + new.deleted - old.deleted;
END;
CREATE INDEX nodes_tombstones ON nodes (seq) WHERE deleted = 1;
CREATE TABLE horizons (at INTEGER NOT NULL, seq INTEGER NOT NULL);
ALTER TABLE relay_reads ADD COLUMN ours INTEGER NOT NULL DEFAULT 0;
ALTER TABLE relay_reads ADD COLUMN wrote INTEGER NOT NULL DEFAULT 0;
ALTER TABLE relay_reads ADD COLUMN snapshot INTEGER NOT NULL DEFAULT 0;
ALTER TABLE relay_reads ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;
"""

# The mode a tombstone keeps (schema 19): the permission bits its node had when it was
# deleted, the data of the tombstone's mode version. A node that a concurrent change brings
# back takes it when that version wins (index/rules.py, merge), as every peer does, the
# ones that never met the delete included. NULL or 0: unknown (a tombstone from before this
# step, or from a peer of an older version, which sends 0; a mode of 000 reads the same).
TOMBSTONE_MODE = """
ALTER TABLE nodes ADD COLUMN deleted_mode INTEGER;
"""

# The extended attributes a tombstone keeps (schema 20): those its node had when it was
# deleted, removed ones included, in the form of index/states.py, xattrs_json. A node
# that a concurrent change brings back takes them, merged name by name with the other
# side's (index/rules.py, merge_xattrs), as every peer does. NULL: none known (a tombstone
# from before this step, or from a peer of an older version, which sends none).
TOMBSTONE_XATTRS = """
ALTER TABLE nodes ADD COLUMN deleted_xattrs TEXT;
"""



SCHEMA = """
-- Key/value facts about this device: device_id, created (unix seconds); while a crash
-- recovery is cut short, recovering:<ino> = the inode of the recovered copy it committed
-- (index/recovery.py); ignore_refused = why rule files are refused, a JSON list
-- (index/ignore.py, for `syncd status`). The sequence number and the Lamport clock are
-- those of the last journal row (every stamp writes one).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value
);

-- Local inodes: what the kernel sees. Never reused (AUTOINCREMENT). Content, mode and times
-- belong to the inode, so the nodes of a hard-link group share them. uid, gid and atime are
-- local facts, never synced.
CREATE TABLE inodes (
    ino         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL CHECK (kind IN ('file', 'dir', 'symlink', 'fifo', 'socket',
                                              'chardev', 'blockdev')),
    mode        INTEGER NOT NULL,            -- permission bits only (07777)
    uid         INTEGER NOT NULL,
    gid         INTEGER NOT NULL,
    size        INTEGER NOT NULL DEFAULT 0,  -- committed size (symlink: target length)
    mtime_ns    INTEGER NOT NULL,
    ctime_ns    INTEGER NOT NULL,
    atime_ns    INTEGER NOT NULL,
    hash        TEXT,                        -- 'blake3:<hex>' of the chunk list (files)
    chunks      BLOB NOT NULL DEFAULT x'',   -- the chunk list's 32-byte entries: BLAKE3
                                             -- digests and runs of holes (chunklist.py)
    target      BLOB,                        -- symlink target
    local       INTEGER NOT NULL DEFAULT 1,  -- 1 when every chunk is in the store
    rdev        INTEGER NOT NULL DEFAULT 0   -- device number of a chardev or blockdev, as
                                             -- the kernel passes it (major:12, minor:20 bits)
);
-- A file with uncommitted writes is marked dirty by its working chunks in the store,
-- store/work/<ino>.<index> (index/store.py), not by a column: writing costs no SQLite.

-- Nodes: the synced identity of each file, directory and symlink. A hard link is a second
-- node on the same inode. Tombstones (deleted = 1) keep their versions and have no inode
-- (their mode is `deleted_mode`, TOMBSTONE_MODE, their extended attributes
-- `deleted_xattrs`, TOMBSTONE_XATTRS).
-- Each of content, mode and placement carries a version vector (JSON {device: counter}), a
-- Lamport clock and the device that made that version (DESIGN, "The data model"). The
-- vector (_vv) grows with every version merged in; _made is the vector its data was made
-- at, which says which versions that data was made with knowledge of (index/merge.py).
-- Special files (LOCAL_ONLY_KINDS: FIFOs, sockets, device nodes) are nodes too, local to
-- this machine: their ids are 'local:<n>', they are never stamped (seq 0, no versions, no
-- journal row), so no peer ever receives them or counts them as pending, and an unlinked
-- one leaves no tombstone. A peer's node that wants the name of one takes it, and the
-- special file moves aside (index/placement.py).
CREATE TABLE nodes (
    entry          INTEGER PRIMARY KEY,  -- local; readdir offset (stable, increasing)
    id             TEXT NOT NULL UNIQUE,  -- global id '<device>:<counter>'; 'local:<n>'
    kind           TEXT NOT NULL CHECK (kind IN ('file', 'dir', 'symlink', 'fifo', 'socket',
                                                 'chardev', 'blockdev')),
    ino            INTEGER REFERENCES inodes (ino),
    parent         TEXT,                               -- parent node id; NULL for the root
    name           TEXT NOT NULL,
    deleted        INTEGER NOT NULL DEFAULT 0,
    seq            INTEGER NOT NULL,                   -- local sequence stamp of last change
    pinned         INTEGER NOT NULL DEFAULT 0,
    conflict_of    TEXT,                               -- node id this is a conflict copy of
    content_vv     TEXT NOT NULL DEFAULT '{}',
    content_clock  INTEGER NOT NULL DEFAULT 0,
    content_device TEXT,
    mode_vv        TEXT NOT NULL DEFAULT '{}',
    mode_clock     INTEGER NOT NULL DEFAULT 0,
    mode_device    TEXT,
    place_vv       TEXT NOT NULL DEFAULT '{}',
    place_clock    INTEGER NOT NULL DEFAULT 0,
    place_device   TEXT,
    origin         TEXT,   -- device that sent the current state; NULL when changed here
    content_made   TEXT NOT NULL DEFAULT '{}',
    mode_made      TEXT NOT NULL DEFAULT '{}',
    place_made     TEXT NOT NULL DEFAULT '{}',
    xattr_vv       TEXT NOT NULL DEFAULT '{}',   -- the extended attributes' version
    xattr_clock    INTEGER NOT NULL DEFAULT 0,   -- (schema 12; see the xattrs table)
    xattr_device   TEXT,
    xattr_made     TEXT NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX nodes_name ON nodes (parent, name) WHERE deleted = 0;
CREATE INDEX nodes_children ON nodes (parent, entry) WHERE deleted = 0;
CREATE INDEX nodes_ino ON nodes (ino);
CREATE INDEX nodes_seq ON nodes (seq);
CREATE INDEX nodes_copies ON nodes (conflict_of) WHERE conflict_of IS NOT NULL;

-- History: one row per change, in the same transaction as the change (rule 1).
CREATE TABLE journal (
    seq    INTEGER PRIMARY KEY,
    clock  INTEGER NOT NULL,     -- the Lamport clock after this change
    node   TEXT NOT NULL,
    op     TEXT NOT NULL,        -- create, content, mode, rename, delete, recover, apply,
                                 -- apply-create, apply-delete, and decisions (index/history.py)
    device TEXT NOT NULL,        -- the device that made the change
    at     INTEGER NOT NULL,     -- unix seconds
    detail TEXT                  -- JSON, op-specific
);

-- Peers (DESIGN, "Peer states"). cursor: our sequence number up to which the peer has
-- confirmed applying our changes (rule 5). state: unknown, online, offline or outofuse.
-- addresses: where it may be reached, in the operator's order; url: the one of them that
-- last answered as this peer (its device), tried first (the first until one answers).
CREATE TABLE peers (
    name       TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    device     TEXT,                  -- learned at the first hello
    state      TEXT NOT NULL DEFAULT 'unknown'
               CHECK (state IN ('unknown', 'online', 'offline', 'outofuse')),
    cursor     INTEGER NOT NULL DEFAULT 0,
    last_seen  INTEGER,               -- unix seconds of the last answer
    last_error TEXT,
    addresses  TEXT NOT NULL DEFAULT '[]',  -- JSON list of URLs
    fingerprint TEXT,                 -- SHA-256 of its certificate: given, or pinned
    cert       TEXT                   -- its certificate (PEM), pinned at the first hello
);

-- Pushes a peer confirmed (rule 5), for `syncd log` (index/history.py): the cursor of the
-- peer named `peer` (device `device`) moved from `after` to `upto` at `at`, by a push read
-- when this device's sequence number was `seen`. What it carried is in the journal: a
-- node's last row in (after, upto], unless that row came from the peer itself or the node
-- has a later row up to `seen`. One row per push that carried something; pruned with the
-- journal after log_keep_days.
CREATE TABLE sent (
    peer   TEXT NOT NULL,
    device TEXT,
    after  INTEGER NOT NULL,
    upto   INTEGER NOT NULL,
    seen   INTEGER NOT NULL,
    at     INTEGER NOT NULL
);

-- Remote node states whose parent has not arrived yet; applied when it does.
CREATE TABLE limbo (
    id     TEXT PRIMARY KEY,
    state  TEXT NOT NULL,             -- the node state as received (JSON, docs/protocol.md)
    origin TEXT NOT NULL
);

-- Committed chunks, with how many inode chunk-list slots refer to each (holes are no
-- chunks: they are stored nowhere). A chunk's bytes are a file in the store, or, for a
-- chunk of at most INLINE_MAX bytes, a row of `inline`. A row at 0 whose bytes are inline
-- is a replaced chunk kept for peers until it expires (index/inline.py); any other row at
-- 0 is a chunk on its way out of the store (or, before a commit, on its way in): its row
-- goes once the file has (Catalog.retire); after a crash, recovery collects it.
CREATE TABLE chunks (
    hash BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    refs INTEGER NOT NULL
) WITHOUT ROWID;
-- The rows at 0, for recovery, the mount's start and `syncd status`: never a scan of them all.
CREATE INDEX chunks_unreferenced ON chunks (hash) WHERE refs <= 0;

-- Small content inside the index (DESIGN, "The content store"; index/inline.py): the bytes
-- of every chunk of at most INLINE_MAX bytes (a small file's one chunk, a big file's short
-- last one), keyed by the chunk's BLAKE3 digest, instead of a file in the store. Its row in
-- `chunks` counts its references. A table of its own, not a column of `chunks`: a change of
-- a row's refs rewrites the whole row, and a WITHOUT ROWID table keeps large values badly
-- (reading 64 KiB from one cost 10x as much as from this table, measured).
CREATE TABLE inline (
    hash BLOB PRIMARY KEY,
    data BLOB NOT NULL
);
""" + XATTRS + VERSIONS



def _holes(conn: sqlite3.Connection) -> None:
    """Chunk lists become canonical (index/chunklist.py): a zero chunk is a hole, stored
    nowhere. The hash of a file with zero chunks changes with its list, the same on every
    peer; the zero chunks lose their references and leave the store at the next start
    (Catalog.collect_unreferenced). States kept in limbo are made canonical too."""
    for ino, size, blob in conn.execute(
            "SELECT ino, size, chunks FROM inodes WHERE kind = 'file'").fetchall():
        old = ChunkList.from_blob(blob)
        new = old.canonical(size)
        if new == old:
            continue
        conn.execute("UPDATE inodes SET chunks = ?, hash = ? WHERE ino = ?",
                     (new.blob, new.hash, ino))
        gone = Counter(d for _, d in old.stored()) - Counter(d for _, d in new.stored())
        conn.executemany("UPDATE chunks SET refs = refs - ? WHERE hash = ?",
                         [(n, d) for d, n in gone.items()])
    for node, text in conn.execute("SELECT id, state FROM limbo").fetchall():
        state = json.loads(text)
        c = state["content"]
        if state["kind"] == "file" and not state["deleted"]:
            chunks = ChunkList.from_hex(c["chunks"], c["size"])
            c["chunks"], c["hash"] = chunks.hex(), chunks.hash
            conn.execute("UPDATE limbo SET state = ? WHERE id = ?", (json.dumps(state), node))


def _addresses(conn: sqlite3.Connection) -> None:
    """Several addresses per peer (schema 11): the one each had is its list. A table
    that has the column already (a database whose version was set back) keeps it."""
    if "addresses" not in [r[1] for r in conn.execute("PRAGMA table_info(peers)")]:
        conn.execute("ALTER TABLE peers ADD COLUMN addresses TEXT NOT NULL DEFAULT '[]'")
    conn.execute("UPDATE peers SET addresses = json_array(url) WHERE addresses = '[]'")


def _pins(conn: sqlite3.Connection) -> None:
    """Peers talk TLS with pinned certificates (schema 13): each peer gets a fingerprint
    and a certificate, pinned at its first hello, and its addresses become https (the
    same host and port: the peer port speaks TLS only). A table that has the columns
    already (a database whose version was set back) keeps them."""
    columns = [r[1] for r in conn.execute("PRAGMA table_info(peers)")]
    for column in ("fingerprint", "cert"):
        if column not in columns:
            conn.execute(f"ALTER TABLE peers ADD COLUMN {column} TEXT")
    conn.execute("UPDATE peers SET url = 'https://' || substr(url, 8) WHERE url LIKE 'http://%'")
    conn.execute("UPDATE peers SET addresses = (SELECT json_group_array(CASE WHEN value LIKE "
                 "'http://%' THEN 'https://' || substr(value, 8) ELSE value END) FROM "
                 "json_each(peers.addresses))")


# Each step takes a database of version N-1 to version N.
MIGRATIONS: dict[int, str | Callable[[sqlite3.Connection], None]] = {
    2: """
        ALTER TABLE nodes ADD COLUMN origin TEXT;
        CREATE TABLE peers (
            name       TEXT PRIMARY KEY,
            url        TEXT NOT NULL,
            device     TEXT,
            state      TEXT NOT NULL DEFAULT 'unknown'
                       CHECK (state IN ('unknown', 'online', 'offline', 'outofuse')),
            cursor     INTEGER NOT NULL DEFAULT 0,
            last_seen  INTEGER,
            last_error TEXT
        );
        CREATE TABLE limbo (id TEXT PRIMARY KEY, state TEXT NOT NULL, origin TEXT NOT NULL);
    """,
    # The vector each version's data was made at; the merged vector is the best we know.
    3: """
        ALTER TABLE nodes ADD COLUMN content_made TEXT NOT NULL DEFAULT '{}';
        ALTER TABLE nodes ADD COLUMN mode_made TEXT NOT NULL DEFAULT '{}';
        ALTER TABLE nodes ADD COLUMN place_made TEXT NOT NULL DEFAULT '{}';
        UPDATE nodes SET content_made = content_vv, mode_made = mode_vv, place_made = place_vv;
    """,
    # A node's conflict copies, looked up on every applied change (index/merge.py).
    4: """
        CREATE INDEX nodes_copies ON nodes (conflict_of) WHERE conflict_of IS NOT NULL;
    """,
    5: _holes,
    # Special files: four more kinds (a CHECK changes only by rebuilding its table) and a
    # device number. The rebuilt inodes table keeps the AUTOINCREMENT high-water mark, so
    # inode numbers are still never reused.
    6: """
        CREATE TABLE inodes_v6 (
            ino         INTEGER PRIMARY KEY AUTOINCREMENT,
            kind        TEXT NOT NULL CHECK (kind IN ('file', 'dir', 'symlink', 'fifo',
                                                      'socket', 'chardev', 'blockdev')),
            mode        INTEGER NOT NULL,
            uid         INTEGER NOT NULL,
            gid         INTEGER NOT NULL,
            size        INTEGER NOT NULL DEFAULT 0,
            mtime_ns    INTEGER NOT NULL,
            ctime_ns    INTEGER NOT NULL,
            atime_ns    INTEGER NOT NULL,
            hash        TEXT,
            chunks      BLOB NOT NULL DEFAULT x'',
            target      BLOB,
            local       INTEGER NOT NULL DEFAULT 1,
            rdev        INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO inodes_v6 (ino, kind, mode, uid, gid, size, mtime_ns, ctime_ns,
                               atime_ns, hash, chunks, target, local)
            SELECT ino, kind, mode, uid, gid, size, mtime_ns, ctime_ns, atime_ns, hash,
                   chunks, target, local FROM inodes;
        UPDATE sqlite_sequence
            SET seq = (SELECT seq FROM sqlite_sequence WHERE name = 'inodes')
            WHERE name = 'inodes_v6';
        DROP TABLE inodes;
        ALTER TABLE inodes_v6 RENAME TO inodes;
        CREATE TABLE nodes_v6 (
            entry          INTEGER PRIMARY KEY,
            id             TEXT NOT NULL UNIQUE,
            kind           TEXT NOT NULL CHECK (kind IN ('file', 'dir', 'symlink', 'fifo',
                                                         'socket', 'chardev', 'blockdev')),
            ino            INTEGER REFERENCES inodes (ino),
            parent         TEXT,
            name           TEXT NOT NULL,
            deleted        INTEGER NOT NULL DEFAULT 0,
            seq            INTEGER NOT NULL,
            pinned         INTEGER NOT NULL DEFAULT 0,
            conflict_of    TEXT,
            content_vv     TEXT NOT NULL DEFAULT '{}',
            content_clock  INTEGER NOT NULL DEFAULT 0,
            content_device TEXT,
            mode_vv        TEXT NOT NULL DEFAULT '{}',
            mode_clock     INTEGER NOT NULL DEFAULT 0,
            mode_device    TEXT,
            place_vv       TEXT NOT NULL DEFAULT '{}',
            place_clock    INTEGER NOT NULL DEFAULT 0,
            place_device   TEXT,
            origin         TEXT,
            content_made   TEXT NOT NULL DEFAULT '{}',
            mode_made      TEXT NOT NULL DEFAULT '{}',
            place_made     TEXT NOT NULL DEFAULT '{}'
        );
        INSERT INTO nodes_v6 (entry, id, kind, ino, parent, name, deleted, seq, pinned,
                              conflict_of, content_vv, content_clock, content_device,
                              mode_vv, mode_clock, mode_device, place_vv, place_clock,
                              place_device, origin, content_made, mode_made, place_made)
            SELECT entry, id, kind, ino, parent, name, deleted, seq, pinned, conflict_of,
                   content_vv, content_clock, content_device, mode_vv, mode_clock,
                   mode_device, place_vv, place_clock, place_device, origin, content_made,
                   mode_made, place_made FROM nodes;
        DROP TABLE nodes;
        ALTER TABLE nodes_v6 RENAME TO nodes;
        CREATE UNIQUE INDEX nodes_name ON nodes (parent, name) WHERE deleted = 0;
        CREATE INDEX nodes_children ON nodes (parent, entry) WHERE deleted = 0;
        CREATE INDEX nodes_ino ON nodes (ino);
        CREATE INDEX nodes_seq ON nodes (seq);
        CREATE INDEX nodes_copies ON nodes (conflict_of) WHERE conflict_of IS NOT NULL;
    """,
    # Running totals for syncd status and the orphans, filled once from the nodes.
    7: BOOKKEEPING + """
        INSERT INTO orphans (ino) SELECT ino FROM inodes i WHERE ino != 1 AND NOT EXISTS
            (SELECT 1 FROM nodes n WHERE n.ino = i.ino AND n.deleted = 0);
        UPDATE totals SET (files, local, conflicts, bytes, bytes_local) = (
            SELECT count(*), coalesce(sum(i.local), 0),
                   coalesce(sum(n.conflict_of IS NOT NULL), 0),
                   coalesce(sum(i.size), 0), coalesce(sum(i.size * i.local), 0)
            FROM nodes n JOIN inodes i ON i.ino = n.ino WHERE n.kind = 'file' AND n.deleted = 0);
    """,
    # Small content inside the index (index/inline.py). Chunks stored before stay files.
    8: """
        CREATE TABLE inline (hash BLOB PRIMARY KEY, data BLOB NOT NULL);
    """,
    # The unreferenced chunks, which the mount's start and `syncd status` read, indexed.
    9: """
        CREATE INDEX chunks_unreferenced ON chunks (hash) WHERE refs <= 0;
    """,
    # What each peer confirmed, and when (index/history.py, `syncd log`).
    10: """
        CREATE TABLE IF NOT EXISTS sent (peer TEXT NOT NULL, device TEXT, after INTEGER NOT NULL,
                           upto INTEGER NOT NULL, seen INTEGER NOT NULL, at INTEGER NOT NULL);
    """,
    # Several addresses per peer: the one it had is its list.
    11: _addresses,
    # Extended attributes: a version of their own per node, the attributes per inode.
    12: """
        ALTER TABLE nodes ADD COLUMN xattr_vv TEXT NOT NULL DEFAULT '{}';
        ALTER TABLE nodes ADD COLUMN xattr_clock INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE nodes ADD COLUMN xattr_device TEXT;
        ALTER TABLE nodes ADD COLUMN xattr_made TEXT NOT NULL DEFAULT '{}';
    """ + XATTRS,
    # Old versions of files, kept a while (index/versions.py).
    13: VERSIONS,
    # Ignored entries: a mark on the node, and the local-only ones indexed for status.
    14: IGNORED,
    # Pinned certificates; https addresses.
    15: _pins,
    # The bounded cache: an index of the files it may evict, by last use.
    16: CACHE_LRU,
    # Relays and what was read from each.
    17: RELAYS,
    # Tombstone collection: their count and index, and what peers and members had.
    18: TOMBSTONES,
    # The mode a tombstone keeps; tombstones of before keep none.
    19: TOMBSTONE_MODE,
    # The extended attributes a tombstone keeps; tombstones of before keep none.
    20: TOMBSTONE_XATTRS,
}


class SchemaError(Exception):
    """The database is of a schema this version cannot open."""


class Checkpointer:
    """Copies the WAL into the database file from a connection of its own, for a worker
    thread (one at a time), so that commits on a serving connection opened with
    `autocheckpoint=False` never pay for it.

    SQLite starts the WAL again from its beginning only at a commit that finds every frame
    copied back, and under steady commits (tar, an import) some always land while the
    worker copies: the WAL then grows without bound (1.8 GB for a `tar -xf` of 20,000
    small files, written once more to the disk as it grows). Once it is over RESTART_BYTES,
    `finish` copies the frames committed meanwhile on the serving connection itself, where
    no commit can come in between (8-18 ms here), and the next commit starts it again."""

    RESTART_BYTES = 64 << 20

    def __init__(self, path: Path):
        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.wal = Path(f"{path}-wal")

    def __call__(self) -> bool:
        """Copy the WAL as it is now; whether the serving connection should `finish`."""
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        try:
            return self.wal.stat().st_size > self.RESTART_BYTES
        except FileNotFoundError:
            return False

    @staticmethod
    def finish(serving: sqlite3.Connection) -> None:
        """On the serving connection's thread, between its transactions: copy the rest."""
        serving.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        self.conn.close()


class ReadOnly:
    """A read-only index: the connection alone. What only looks runs no transaction, so
    it needs nothing of sqlite-utils, whose import (pluggy, dateutil, click) and scan of
    every installed package for its plugins were half of `syncd status`'s time."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    @contextlib.contextmanager
    def atomic(self) -> Iterator[ReadOnly]:
        """A write through it fails at its first statement ("readonly"), as it would
        through sqlite-utils."""
        with self.conn:
            yield self

    def close(self) -> None:
        self.conn.close()


class IndexConnection(sqlite3.Connection):
    """The index's connection: before any statement, `settle` (when set) writes what its
    owner keeps in memory until then (Catalog's new files, which commit with the first
    transaction after their create), so no statement ever sees an index without them."""

    settle: Callable[[], None] | None = None

    def execute(self, sql: str, parameters=(), /) -> sqlite3.Cursor:
        if self.settle is not None:
            self.settle()
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters, /) -> sqlite3.Cursor:
        if self.settle is not None:
            self.settle()
        return super().executemany(sql, parameters)

    def executescript(self, script: str, /) -> sqlite3.Cursor:
        if self.settle is not None:
            self.settle()
        return super().executescript(script)

    def unsettled(self, sql: str, parameters=(), /) -> sqlite3.Cursor:
        """A statement that reads nothing `settle` would write (what other connections
        committed, the next inode number), run as it is."""
        return super().execute(sql, parameters)


def connect(path: Path, readonly: bool = False,
            autocheckpoint: bool = True) -> sqlite_utils.Database | ReadOnly:
    """Open the index with the settings every user of it needs. Without `autocheckpoint`,
    a Checkpointer must copy the WAL back."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False,
                               factory=IndexConnection)
        conn.execute("PRAGMA busy_timeout = 5000")
        return ReadOnly(conn)
    from syncd.index.database import IndexDatabase  # here, not at the top: see ReadOnly

    conn = sqlite3.connect(path, check_same_thread=False, factory=IndexConnection)
    # No sqlite-utils plugins: finding them scans every installed package's entry points
    # (50 ms at each start), and one installed for something else would hook our index.
    db = IndexDatabase(conn, execute_plugins=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL stays consistent across crashes; fsync() commits switch to FULL.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA wal_autocheckpoint = {8192 if autocheckpoint else 0}")
    return db


def create(path: Path, device_id: str, uid: int, gid: int, now_ns: int) -> sqlite_utils.Database:
    """Create a new index: schema, identity, the root directory and the version stamp
    commit together, so a crash leaves either nothing or a whole index."""
    if not re.fullmatch(r"[0-9a-f]{32}", device_id):
        raise ValueError(f"bad device id {device_id!r}")
    db = connect(path)
    db.conn.executescript(
        f"""BEGIN;
        {SCHEMA};
        {BOOKKEEPING};
        {IGNORED};
        {CACHE_LRU};
        {RELAYS};
        {TOMBSTONES};
        {TOMBSTONE_MODE};
        {TOMBSTONE_XATTRS};
        INSERT INTO meta (key, value) VALUES ('device_id', '{device_id}'),
            ('created', {now_ns // 10**9});
        INSERT INTO inodes (ino, kind, mode, uid, gid, mtime_ns, ctime_ns, atime_ns)
            VALUES ({ROOT_INO}, 'dir', {0o755}, {int(uid)}, {int(gid)}, {now_ns}, {now_ns},
                    {now_ns});
        INSERT INTO nodes (id, kind, ino, parent, name, seq)
            VALUES ('{ROOT_ID}', 'dir', {ROOT_INO}, NULL, '', 0);
        PRAGMA user_version = {SCHEMA_VERSION};
        COMMIT;"""
    )
    return db


def open_db(path: Path, readonly: bool = False,
            autocheckpoint: bool = True) -> sqlite_utils.Database | ReadOnly:
    """Open an existing index, migrating it to SCHEMA_VERSION unless read-only."""
    if not path.exists():
        raise FileNotFoundError(path)
    db = connect(path, readonly, autocheckpoint)
    version = db.conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"{path} has schema version {version}; this syncd knows only up to "
            f"{SCHEMA_VERSION}: upgrade syncd"
        )
    if version < 1:
        raise SchemaError(f"{path} is not a syncd index (schema version {version})")
    if version < SCHEMA_VERSION:
        if readonly:
            raise SchemaError(f"{path} has schema version {version}; mount it once with "
                              "this syncd to upgrade it")
        _migrate(db, version)
    return db


def _migrate(db: sqlite_utils.Database, version: int) -> None:
    for target in range(version + 1, SCHEMA_VERSION + 1):
        step = MIGRATIONS[target]
        if callable(step):
            with db.conn:  # one transaction
                db.conn.execute("BEGIN IMMEDIATE")
                step(db.conn)
                db.conn.execute(f"PRAGMA user_version = {target}")
        else:
            db.conn.executescript(
                f"BEGIN IMMEDIATE; {step}; PRAGMA user_version = {target}; COMMIT;")
