"""syncd import: an existing directory tree into the share without copying it through the
mount.

Whoever runs the import reads the source on worker threads (scan, read_file): each file is
hashed in 1 MiB slots and its chunks are staged in the store (ChunkStore.stage), but for a
short last one (index/inline.py), whose bytes travel with the batch into the index. Batches
of entries are then applied in one transaction each (Importer.apply), by the process that
owns the index, and their staged chunks moved among the committed ones right after, with
nothing in between; the next batch is read meanwhile (its chunks that the batch being
applied has staged too are staged once that is over). A batch is all or nothing: an
interrupted or failed import leaves whole files or none, and staged chunks no transaction
took are dropped (recovery does it after a crash). Peers learn the imported files as
ordinary changes.

What is already in the share at a path is left alone: the same kind, size and mtime count
as imported (a run again skips them without reading); a different file is reported, not
replaced. Modes, mtimes and symlinks are kept; hard links become separate files (as peers
see them anyway); special files (sockets, FIFOs, devices) are reported and skipped.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from syncd.index.catalog import Catalog, NewEntries, check_name
from syncd.index.chunklist import CHUNK, Builder, ChunkList, digest_of, zero_digest
from syncd.index.effects import Effects
from syncd.index.faults import crash_point
from syncd.index.inline import inline_size, inline_slot
from syncd.index.store import ChunkStore

KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink"}


@dataclass
class Entry:
    """One entry of the source tree, as it travels in a batch (over the control socket as
    JSON: as_dict and from_dict)."""

    rel: str  # its path below the source's root, '/'-separated
    kind: str  # file, dir or symlink
    mode: int
    mtime_ns: int
    size: int = 0
    target: str | None = None  # a symlink's target (surrogate-escaped)
    chunks: ChunkList | None = None  # a file's chunk list, once read (hex in JSON)
    data: bytes | None = None  # its short last chunk's bytes, kept inline

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if v is not None}
        if self.chunks is not None:
            d["chunks"] = self.chunks.hex()
        if self.data is not None:
            d["data"] = base64.b64encode(self.data).decode()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Entry:
        """An entry as another process sent it: its inline bytes checked against its
        chunk list (those read here, by read_file, are the bytes it hashed)."""
        e = cls(**d)
        if e.chunks is not None:
            e.chunks = ChunkList.from_hex(e.chunks, e.size)
        if e.data is not None:
            e.data = base64.b64decode(e.data, validate=True)
            if e.chunks is None or inline_slot(e.chunks, e.size) != digest_of(e.data):
                raise ValueError(f"{e.rel}: its inline bytes are not its last chunk")
        return e


@dataclass
class Outcome:
    """What applying batches did."""

    created: int = 0
    skipped: int = 0  # already there, the same
    bytes: int = 0  # content bytes created
    differing: list[str] = field(default_factory=list)  # there, but not the same: left alone
    refused: list[str] = field(default_factory=list)  # names the share cannot hold, and why

    def add(self, other: Outcome) -> None:
        self.created += other.created
        self.skipped += other.skipped
        self.bytes += other.bytes
        self.differing += other.differing
        self.refused += other.refused


def scan(src: Path, skipped: list[str]) -> Iterator[Entry]:
    """The source tree below `src`, parents before their children, symlinks not followed.
    What cannot be imported (special files, unreadable directories) goes to `skipped`."""
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(src / rel if rel else src) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as e:
            skipped.append(f"{rel or '.'}: {e.strerror}")
            continue
        for item in items:
            path = f"{rel}/{item.name}" if rel else item.name
            st = item.stat(follow_symlinks=False)
            kind = KINDS.get(stat.S_IFMT(st.st_mode))
            if kind is None:
                skipped.append(f"{path}: a special file")
                continue
            if not _utf8(item.name):
                skipped.append(f"{path!r}: a name that is not UTF-8 (the share's names are)")
                continue
            entry = Entry(path, kind, stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            if kind == "file":
                entry.size = st.st_size
            elif kind == "symlink":
                entry.target = os.fsdecode(os.readlink(item.path))
            yield entry
            if kind == "dir":
                stack.append(path)


def _utf8(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:  # undecodable bytes, kept by os.fsdecode as surrogates
        return False
    return True


def read_file(store: ChunkStore, path: Path, busy: set[bytes] | frozenset = frozenset(),
              expected: int = CHUNK) -> tuple[ChunkList, int, bytes | None, dict[bytes, bytes]]:
    """Hash a file in slots and stage its chunks (a worker thread's work); its chunk list
    and size as read (the file may have changed since it was listed), the bytes of a
    short last chunk, which is not staged: it goes inline, and those of chunks in `busy`,
    not staged either: another batch, being applied, has them staged under the same
    names, which its apply moves or drops (the caller stages them once it is over). When
    it fails (a full disk), what it staged is dropped. `expected`: its size when listed."""
    b = Builder()
    size, short, held = 0, None, {}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for piece in _chunks(fd, expected):
                digest = digest_of(piece)
                if inline_size(len(piece)) and digest != zero_digest(len(piece)):
                    short = piece
                elif digest in busy:
                    held[digest] = piece
                elif digest != zero_digest(len(piece)):
                    store.stage(digest, piece)
                b.add(digest, len(piece))
                size += len(piece)
        finally:
            os.close(fd)
    except OSError:
        store.drop_staged([d for d in b.done().digests() if d not in busy])
        raise
    return b.done(), size, short, held


def _chunks(fd: int, expected: int) -> Iterator[bytes]:
    """A file's slots, CHUNK bytes each but the last, read with reads no bigger than its
    expected size allows: a read of 1 MiB for a file of 4 KiB allocated and freed 1 MiB
    (an mmap and munmap each time), which made reading a tree of small files 2.5x
    slower. Bytes beyond `expected` are read too (the file grew)."""
    chunk, left = b"", expected
    while True:
        more = os.read(fd, min(CHUNK - len(chunk), max(left, 0) + 1))
        if not more:
            break
        chunk += more
        left -= len(more)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = b""
    if chunk:
        yield chunk


def staged_digests(e: Entry) -> list[bytes]:
    """The chunks of a file read for a batch that were staged: all but its short last
    one, which is inline (holes are no chunks)."""
    if e.chunks is None:
        return []
    short = inline_slot(e.chunks, e.size) if e.data is not None else None
    return [d for d in e.chunks.digests() if d != short]


def wanted(catalog: Catalog, into: str, entries: list[Entry]) -> list[Entry]:
    """The files of a batch whose content must be read: those not in the share yet (a run
    again reads nothing it imported before). Read-only; one statement per directory."""
    dirs = _Dirs(catalog, _Dirs(catalog, catalog.ino_of(catalog.node_at(""))).get(into))
    by_dir: dict[str, list[Entry]] = {}
    for e in entries:
        if e.kind == "file":
            by_dir.setdefault(e.rel.rpartition("/")[0], []).append(e)
    out = []
    for head, files in by_dir.items():
        parent = dirs.get(head)
        taken = set() if parent is None else catalog.names_taken(
            parent, [e.rel.rpartition("/")[2] for e in files])
        out += [e for e in files if e.rel.rpartition("/")[2] not in taken]
    return out


def blocked(catalog: Catalog, into: str) -> str | None:
    """Why nothing can be imported into `into`, if a part of it is not a directory."""
    ino = catalog.ino_of(catalog.node_at(""))
    for part in filter(None, into.split("/")):
        found = catalog.lookup(ino, part)
        if found is None:
            return None
        if found.inode.kind != "dir":
            return f"/{into}: {part!r} is not a directory"
        ino = found.inode.ino
    return None


class _Dirs:
    """The inodes of the directories below one (`root`), by path, each looked up once: a
    batch's entries share their parents. Those made by this batch (`fresh`) have no other
    entries than it made, so nothing below them is looked up."""

    def __init__(self, catalog: Catalog, root: int | None):
        self.catalog = catalog
        self.known: dict[str, int | None] = {"": root}
        self.fresh: set[int] = set()

    def get(self, path: str) -> int | None:
        """The directory at `path`; None when there is no such directory."""
        if path not in self.known:
            head, _, name = path.rpartition("/")
            parent = self.get(head)
            found = None if parent is None or parent in self.fresh else \
                self.catalog.lookup(parent, name)
            self.known[path] = found.inode.ino if found and found.inode.kind == "dir" else None
        return self.known[path]


class Importer:
    """Applies batches of entries under one directory of the share, `into` (made if need
    be). Runs where the index is owned: the serving process, or the command itself.

    A batch's new entries are written in bulk (Catalog.new_entries: one statement per
    table for many entries) rather than by one `create` each, which is what bounded the
    import; what `create` alone decides (an ignored entry, a rule file, a receive-only
    machine) still goes through it, after what was gathered is written."""

    def __init__(self, catalog: Catalog, into: str, uid: int, gid: int):
        self.catalog = catalog
        self.uid, self.gid = uid, gid
        self.dirs = _Dirs(catalog, self._make_dirs(into))

    def _make_dirs(self, path: str) -> int:
        ino = self.catalog.ino_of(self.catalog.node_at(""))
        for part in filter(None, path.split("/")):
            found = self.catalog.lookup(ino, part)
            if found is None:
                found = self.catalog.create(ino, part, "dir", 0o755, self.uid, self.gid)
            elif found.inode.kind != "dir":
                raise NotADirectoryError(f"/{path}: {part!r} is not a directory")
            ino = found.inode.ino
        return ino

    def _parent(self, rel: str) -> tuple[int | None, str]:
        """The directory inode a path goes in (None when it is not a directory here)."""
        head, _, name = rel.rpartition("/")
        return self.dirs.get(head), name

    def apply(self, entries: list[Entry]) -> tuple[Outcome, Effects]:
        """One transaction for the batch, then its staged chunks into the store: with no
        await in between, no reader sees the index claim a chunk that is not there."""
        outcome, effects = Outcome(), Effects()
        staged = {d for e in entries for d in staged_digests(e)}
        used: set[bytes] = set()

        def run() -> None:
            batch = _Batch(self.catalog.new_entries(self.uid, self.gid), entries)
            for e in entries:
                self._apply_one(e, e.chunks, outcome, effects, used, batch)
            batch.flush()

        try:
            self.catalog.transaction(run)
        except BaseException:
            self.catalog.store.drop_staged(staged)
            raise
        crash_point("import:after-index")
        self.catalog.store.unstage(used)
        self.catalog.store.drop_staged(staged - used)
        return outcome, effects

    def _apply_one(self, e: Entry, chunks: ChunkList | None, outcome: Outcome,
                   effects: Effects, used: set[bytes], batch: _Batch) -> None:
        parent, name = self._parent(e.rel)
        if parent is None:
            outcome.differing.append(e.rel)
            return
        try:
            name = check_name(name)
        except OSError as x:  # a name the share cannot hold (too long, not UTF-8)
            outcome.refused.append(f"{e.rel}: {x.strerror}")
            return
        found = None
        if parent not in self.dirs.fresh and name in batch.taken(self.catalog, parent, e.rel):
            found = self.catalog.lookup(parent, name)
        if found is not None:
            if self._same(found.inode, e):
                outcome.skipped += 1
            else:
                outcome.differing.append(e.rel)
            return
        content, inline = None, None
        if e.kind == "file":
            if chunks is None:  # not there when the batch was read, there since
                outcome.differing.append(e.rel)
                return
            content = (chunks, e.size)
            if e.data is not None:  # its short last chunk, inline
                digest = inline_slot(chunks, e.size)
                if digest is None:
                    raise ValueError(f"{e.rel}: it has no chunk to hold inline")
                inline = {digest: e.data}
        target = os.fsencode(e.target) if e.kind == "symlink" else None
        mtime = e.mtime_ns if e.kind != "dir" else None
        if parent in batch.pending:  # the ignore rules read the parent from the index
            batch.flush()
        parent_node = batch.nodes.get(parent) or self.catalog.dir_node(parent)
        if self.catalog.creates_plainly(parent_node, name, e.kind,
                                        batch.ignored(self.catalog, parent_node)):
            ino, node = batch.new.add(parent, parent_node, name, e.kind, e.mode, mtime,
                                      target, content, inline)
            if e.kind == "dir":
                batch.pending.add(ino)
        else:  # as a create decides it, on what was gathered so far
            batch.flush()
            batch.dirs_ignored.clear()  # it may change what is ignored
            if inline:
                self.catalog.inline.add(inline)
            try:
                made = self.catalog.create(parent, name, e.kind, e.mode, self.uid, self.gid,
                                           target, mtime_ns=mtime, content=content)
            except OSError as x:  # a name create refuses: reported, the batch goes on
                outcome.refused.append(f"{e.rel}: {x.strerror}")
                return
            ino, node = made.inode.ino, made.node
        outcome.created += 1
        if e.kind == "dir":
            self.dirs.known[e.rel] = ino
            self.dirs.fresh.add(ino)
            batch.nodes[ino] = node
        if chunks is not None:
            used.update(staged_digests(e))
            outcome.bytes += e.size
        effects.entries.add((parent, name))
        effects.inodes.add(parent)

    @staticmethod
    def _same(inode, e: Entry) -> bool:
        if inode.kind != e.kind:
            return False
        if e.kind == "file":
            return inode.size == e.size and inode.mtime_ns == e.mtime_ns
        if e.kind == "symlink":
            return inode.target == os.fsencode(e.target)
        return True


class _Batch:
    """What one batch's transaction has gathered: the entries not written yet (`new`),
    the directories among them (`pending`), the node of each directory it made, and
    which of its names are taken in the directories that were there before it."""

    def __init__(self, new: NewEntries, entries: list[Entry]):
        self.new = new
        self.pending: set[int] = set()
        self.nodes: dict[int, str] = {}
        self.names: dict[str, list[str]] = {}  # the batch's names, by directory path
        for e in entries:
            head, _, name = e.rel.rpartition("/")
            if _utf8(name):  # others are refused
                self.names.setdefault(head, []).append(name)
        self._taken: dict[int, set[str]] = {}
        self.dirs_ignored: dict[str, int] = {}  # nodes.ignored of directories, by node

    def ignored(self, catalog: Catalog, node: str) -> int:
        """A directory's nodes.ignored, read once per batch (a statement per entry was 5%
        of an import's time)."""
        if node not in self.dirs_ignored:
            self.dirs_ignored[node] = catalog.ignored_of(node)
        return self.dirs_ignored[node]

    def taken(self, catalog: Catalog, parent: int, rel: str) -> set[str]:
        """The names of the batch in `rel`'s directory (inode `parent`) that are taken."""
        if parent not in self._taken:
            self._taken[parent] = catalog.names_taken(parent,
                                                      self.names[rel.rpartition("/")[0]])
        return self._taken[parent]

    def flush(self) -> None:
        self.new.flush()
        self.pending.clear()
