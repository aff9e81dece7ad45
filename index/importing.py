"""syncd import: an existing directory tree into the share without copying it through the
mount.

Whoever runs the import reads the source on worker threads (scan, read_file): each file is
hashed in 1 MiB slots and its chunks are staged in the store (ChunkStore.stage), but for a
short last one (index/inline.py), whose bytes travel with the batch into the index. Batches
of entries are then applied in one transaction each (Importer.apply), by the process that
owns the index, and their staged chunks moved among the committed ones right after, with
nothing in between. A batch is all or nothing: an interrupted or failed import leaves
whole files or none, and staged chunks no transaction took are dropped (recovery does it
after a crash). Peers learn the imported files as ordinary changes.

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

from syncd.index.catalog import Catalog
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
    chunks: list[str] | None = None  # a file's chunk list (hex), once read
    data: bytes | None = None  # its short last chunk's bytes, kept inline

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if v is not None}
        if self.data is not None:
            d["data"] = base64.b64encode(self.data).decode()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Entry:
        e = cls(**d)
        if e.data is not None:
            e.data = base64.b64decode(e.data, validate=True)
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


def read_file(store: ChunkStore, path: Path) -> tuple[ChunkList, int, bytes | None]:
    """Hash a file in slots and stage its chunks (a worker thread's work); its chunk list
    and size as read (the file may have changed since it was listed), and the bytes of a
    short last chunk, which is not staged: it goes inline. When it fails (a full disk),
    what it staged is dropped."""
    b = Builder()
    size, short = 0, None
    try:
        with open(path, "rb") as f:
            while piece := f.read(CHUNK):
                digest = digest_of(piece)
                if inline_size(len(piece)) and digest != zero_digest(len(piece)):
                    short = piece
                elif digest != zero_digest(len(piece)):
                    store.stage(digest, piece)
                b.add(digest, len(piece))
                size += len(piece)
    except OSError:
        store.drop_staged(b.done().digests())
        raise
    return b.done(), size, short


def wanted(catalog: Catalog, into: str, entries: list[Entry]) -> list[Entry]:
    """The files of a batch whose content must be read: those not in the share yet (a run
    again reads nothing it imported before). Read-only."""
    dirs = _Dirs(catalog, _Dirs(catalog, catalog.ino_of(catalog.node_at(""))).get(into))
    out = []
    for e in entries:
        head, _, name = e.rel.rpartition("/")
        parent = dirs.get(head)
        if e.kind == "file" and (parent is None or catalog.lookup(parent, name) is None):
            out.append(e)
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
    batch's entries share their parents."""

    def __init__(self, catalog: Catalog, root: int | None):
        self.catalog = catalog
        self.known: dict[str, int | None] = {"": root}

    def get(self, path: str) -> int | None:
        """The directory at `path`; None when there is no such directory."""
        if path not in self.known:
            head, _, name = path.rpartition("/")
            parent = self.get(head)
            found = None if parent is None else self.catalog.lookup(parent, name)
            self.known[path] = found.inode.ino if found and found.inode.kind == "dir" else None
        return self.known[path]


class Importer:
    """Applies batches of entries under one directory of the share, `into` (made if need
    be). Runs where the index is owned: the serving process, or the command itself."""

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
        chunks = {e.rel: ChunkList.from_hex(e.chunks, e.size)
                  for e in entries if e.chunks is not None}
        staged = {d for c in chunks.values() for d in c.digests()}
        used: set[bytes] = set()

        def run() -> None:
            for e in entries:
                self._apply_one(e, chunks.get(e.rel), outcome, effects, used)

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
                   effects: Effects, used: set[bytes]) -> None:
        parent, name = self._parent(e.rel)
        if parent is None:
            outcome.differing.append(e.rel)
            return
        found = self.catalog.lookup(parent, name)
        if found is not None:
            if self._same(found.inode, e):
                outcome.skipped += 1
            else:
                outcome.differing.append(e.rel)
            return
        content = None
        if e.kind == "file":
            if chunks is None:  # not there when the batch was read, there since
                outcome.differing.append(e.rel)
                return
            content = (chunks, e.size)
            if e.data is not None:  # its short last chunk, inline
                data = e.data
                if inline_slot(chunks, e.size) != digest_of(data):
                    raise ValueError(f"{e.rel}: its inline bytes are not its last chunk")
                self.catalog.inline.add({digest_of(data): data})
        target = os.fsencode(e.target) if e.kind == "symlink" else None
        try:
            made = self.catalog.create(parent, name, e.kind, e.mode, self.uid, self.gid,
                                       target, mtime_ns=e.mtime_ns if e.kind != "dir" else None,
                                       content=content)
        except OSError as x:  # a name the share cannot hold (too long, not UTF-8)
            outcome.refused.append(f"{e.rel}: {x.strerror}")
            return
        outcome.created += 1
        if e.kind == "dir":
            self.dirs.known[e.rel] = made.inode.ino
        if chunks is not None:
            used.update(chunks.digests())
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
