"""Devices made of real indexes without mounts or network, and the exchanges between them
that the daemon would make: the helpers of the merge tests (tests/index) and of the soak's
reproductions (tests/soak/test_found.py). check_invariants is what must hold of any
catalog after any operation."""

from __future__ import annotations

import itertools
from pathlib import Path

from syncd.index import schema
from syncd.index.catalog import Catalog, local_only
from syncd.index.chunklist import CHUNK, Builder, ChunkList, digest_of, slot_count
from syncd.index.merge import Merger
from syncd.index.schema import LOCAL_ONLY_KINDS
from syncd.index.states import BATCH_DATA, changes_since
from syncd.index.store import ChunkStore

ROOT = schema.ROOT_INO
T = 1_800_000_000 * 10**9  # 2027-01-15 08:00:00 UTC, in ns: a time for mtimes


class Device:
    def __init__(self, path: Path, device_id: str, t0: int):
        ChunkStore.create(path / "store")
        self.db = schema.create(path / "index.db", device_id, 1000, 1000, t0)
        self.cat = Catalog(self.db, ChunkStore(path / "store"))
        self.merger = Merger(self.cat)
        self.id = device_id
        self.sent: dict[str, int] = {}  # peer device -> our seq it has applied

    def ino(self, path: str) -> int:
        ino = ROOT
        for part in filter(None, path.split("/")):
            e = self.cat.lookup(ino, part)
            assert e is not None, f"{path} missing on {self.id[:4]}"
            ino = e.inode.ino
        return ino

    def write(self, path: str, data: bytes, mtime_ns: int) -> None:
        parent, _, name = path.rpartition("/")
        e = self.cat.lookup(self.ino(parent), name)
        ino = e.inode.ino if e else self.cat.create(
            self.ino(parent), name, "file", 0o644, 1000, 1000).inode.ino
        digest = digest_of(data)
        self.cat.store_new_chunks({digest: data})
        chunks = Builder().add(digest, len(data)).done() if data else ChunkList([])
        self.cat.commit_content(ino, chunks, len(data), mtime_ns, None, True)

    def mkdir(self, path: str) -> None:
        parent, _, name = path.rpartition("/")
        self.cat.create(self.ino(parent), name, "dir", 0o755, 1000, 1000)

    def tree(self) -> dict[str, tuple]:
        out = {}

        def walk(ino: int, prefix: str) -> None:
            for e in self.cat.children(ino, 0):
                path = f"{prefix}/{e.name}"
                out[path] = (e.inode.kind, e.inode.hash, e.inode.mode)
                if e.inode.kind == "dir":
                    walk(e.inode.ino, path)

        walk(ROOT, "")
        return out

    def xattrs(self) -> dict[str, dict[str, bytes]]:
        """Each shared path's extended attributes (those listed: removed ones are not)."""
        out = {}
        for path, (kind, _, _) in self.shared_tree().items():
            if kind not in LOCAL_ONLY_KINDS:
                ino = self.ino(path)
                out[path] = {n: self.cat.xattr(ino, n) for n in self.cat.xattr_names(ino)}
        return out

    def shared_tree(self) -> dict[str, tuple]:
        """tree() less what is this device's own: special files and ignored entries."""
        out = {}

        def walk(ino: int, prefix: str) -> None:
            for e in self.cat.children(ino, 0):
                if not self.cat.is_local_only(e.node):
                    out[f"{prefix}/{e.name}"] = (e.inode.kind, e.inode.hash, e.inode.mode)
                    if e.inode.kind == "dir":
                        walk(e.inode.ino, f"{prefix}/{e.name}")

        walk(ROOT, "")
        return out

    def data(self, path: str) -> bytes:
        ino = self.ino(path)
        return self.cat.open_draft(ino).read(0, self.cat.inode(ino).size)


def three_devices(root: Path) -> list[Device]:
    """Devices a, b and c (their ids: 32 times that letter), each in a folder of root."""
    made = []
    for i, dev in enumerate(("a" * 32, "b" * 32, "c" * 32)):
        (root / dev[:1]).mkdir()
        made.append(Device(root / dev[:1], dev, 1_700_000_000 * 10**9 + i))
    return made


def apply(src: Device, dst: Device, states: list[dict]):
    """dst applies states from src, with their chunks (small ones travel in the states;
    the others as a fetch would bring them)."""
    for s in states:
        for h in s["content"]["chunks"]:
            digest = bytes.fromhex(h)
            if not dst.cat.has_chunk(digest) and src.cat.has_chunk(digest):
                dst.cat.store_new_chunks({digest: src.cat.read_chunk(digest, CHUNK)})
    return dst.merger.apply(states, src.id)


def send(src: Device, dst: Device) -> int:
    """What a peer loop does: push src's changes since dst's cursor, chunks included (as
    a fetch would bring them), and move the cursor once applied."""
    applied = 0
    while True:
        states, last = changes_since(src.cat.conn, src.sent.get(dst.id, 0), 100, dst.id,
                                     BATCH_DATA)
        if last == src.sent.get(dst.id, 0):
            return applied
        apply(src, dst, states)
        applied += len(states)
        src.sent[dst.id] = last


def send_some(src: Device, dst: Device, batch: int, batches: int) -> int:
    """Part of a peer loop's push: at most `batches` batches of `batch` states."""
    moved = 0
    for _ in range(batches):
        since = src.sent.get(dst.id, 0)
        states, last = changes_since(src.cat.conn, since, batch, dst.id, BATCH_DATA)
        if last == since:
            break
        apply(src, dst, states)
        src.sent[dst.id] = last
        moved += len(states)
    return moved


def converge(*devices: Device) -> None:
    """Exchange until nothing moves; every device then holds the same tree (but for its
    special files, which are its own)."""
    for _ in range(6):
        moved = sum(send(a, b) for a, b in itertools.permutations(devices, 2))
        if not moved:
            break
    trees = [d.shared_tree() for d in devices]
    for d, t in zip(devices[1:], trees[1:], strict=True):
        assert t == trees[0], f"{d.id[:4]} differs"
    attrs = [d.xattrs() for d in devices]
    for d, x in zip(devices[1:], attrs[1:], strict=True):
        assert x == attrs[0], f"{d.id[:4]}'s extended attributes differ"
    for d in devices:
        check_invariants(d.cat)


def check_invariants(c: Catalog) -> None:
    """What must hold after any operation: counters match the journal, every synced node's
    seq is a journal row about it, local-only nodes (special files, ignored entries) are
    live and never stamped, live names are unique, chunk refs match the chunk lists (of
    inodes and old versions), status's running totals match the nodes and every inode
    without a name is recorded as an orphan."""
    top = c.conn.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()[0]
    assert top == c.seq
    for node, seq, deleted, kind, ignored in c.conn.execute(
            "SELECT id, seq, deleted, kind, ignored FROM nodes WHERE id != 'root'"):
        if local_only(node):  # a special file, or an entry made while ignored
            assert (seq, deleted, kind in LOCAL_ONLY_KINDS) == (0, 0, not ignored), node
            assert c.conn.execute("SELECT 1 FROM journal WHERE node = ?",
                                  (node,)).fetchone() is None
            continue
        assert kind not in LOCAL_ONLY_KINDS, node
        if ignored:  # a synced entry that became ignored: never stamped since
            assert (seq, deleted) == (0, 0), node
            continue
        assert c.conn.execute("SELECT node FROM journal WHERE seq = ?", (seq,)).fetchone() == (
            node,)
    refs: dict[bytes, int] = {}
    for size, blob in c.conn.execute("SELECT size, chunks FROM inodes WHERE kind = 'file'"):
        chunks = ChunkList.from_blob(blob)
        assert chunks == chunks.canonical(size) and chunks.slots == slot_count(size)
        for _, digest in chunks.stored():
            refs[digest] = refs.get(digest, 0) + 1
    # old versions hold references too (index/versions.py), all counted by now
    assert c.conn.execute("SELECT count(*) FROM versions WHERE held = 0").fetchone() == (0,)
    for (blob,) in c.conn.execute("SELECT chunks FROM versions"):
        for _, digest in ChunkList.from_blob(blob).stored():
            refs[digest] = refs.get(digest, 0) + 1
    stored = {h: n for h, n in c.conn.execute("SELECT hash, refs FROM chunks WHERE refs > 0")}
    assert stored == refs
    assert c.conn.execute("SELECT files, local, conflicts, bytes, bytes_local FROM totals"
                          ).fetchone() == c.conn.execute(
        "SELECT count(*), coalesce(sum(i.local), 0), coalesce(sum(n.conflict_of IS NOT NULL), 0),"
        " coalesce(sum(i.size), 0), coalesce(sum(i.size * i.local), 0)"
        " FROM nodes n JOIN inodes i ON i.ino = n.ino WHERE n.kind = 'file' AND n.deleted = 0"
    ).fetchone(), "the running totals are the nodes' (schema.BOOKKEEPING)"
    assert c.conn.execute("SELECT tombstones FROM totals").fetchone() == c.conn.execute(
        "SELECT count(*) FROM nodes WHERE deleted = 1").fetchone(), \
        "the count of tombstones is the nodes' (schema.TOMBSTONES)"
    assert c.conn.execute(
        "SELECT count(*) FROM inodes i WHERE ino != 1 AND ino NOT IN (SELECT ino FROM orphans)"
        " AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.ino = i.ino AND n.deleted = 0)"
    ).fetchone() == (0,), "an inode without a live name is recorded as an orphan"
    inline = dict(c.conn.execute("SELECT hash, data FROM inline"))
    for digest in stored:  # here, in the store or (only) inline, intact
        if digest in inline:
            assert digest_of(inline[digest]) == digest and not c.store.has(digest)
        else:
            assert c.store.verify(digest)
    rows = {h for (h,) in c.conn.execute("SELECT hash FROM chunks")}
    assert inline.keys() <= rows  # every inline chunk is counted, or kept at refs 0
    assert c.conn.execute("SELECT count(*) FROM xattrs WHERE ino NOT IN"
                          " (SELECT ino FROM inodes)").fetchone() == (0,), \
        "extended attributes go with their inode (schema.XATTRS)"
