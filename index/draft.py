"""A draft: the uncommitted content of one file, between its first write and its commit.

The draft starts from the file's committed chunk list (`base`). A write to chunk i goes to
a private working chunk (store/work/<ino>.<i>, or a slot: index/workslots.py), first filled
from base[i] when the write
does not cover the whole chunk (copy-on-write), so committed chunks are never modified.
Reads see working chunks where they exist, base chunks below, zeros elsewhere (holes,
index/chunklist.py). Nothing here costs anything per slot of a hole: a truncate to a
petabyte is as cheap as one to a kilobyte. A base chunk held in the index (index/inline.py:
only a file's short last chunk can be) is handed to the draft when it is made
(Catalog.open_draft), so reading it costs no query.

Sequential writes are hashed as they arrive, so committing a large new file does not read
it back; anything else is hashed at commit (`Sealed.hash_pending`, on a worker thread).

The draft is synchronous and knows nothing of FUSE; the mount serialises writes and commits
of one file with a lock (mount/content.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import blake3
from syncd.index.chunklist import (
    CHUNK,
    Builder,
    ChunkList,
    check_size,
    slot_count,
    slot_length,
    zero_digest,
)
from syncd.index.inline import inline_slot
from syncd.index.store import ChunkStore
from syncd.index.workslots import SLOT

PREFETCH_CHUNKS = 2


class WorkChunk:
    """One working chunk. `hasher` covers bytes [0, hashed) while writes arrive in order;
    it is dropped (None) when a write lands elsewhere, and the chunk is rehashed at commit."""

    __slots__ = ("length", "hasher", "hashed")

    def __init__(self) -> None:
        self.length = 0
        self.hasher: blake3.blake3 | None = blake3.blake3()
        self.hashed = 0

    def wrote(self, within: int, data: memoryview | bytes) -> None:
        end = within + len(data)
        if self.hasher is not None:
            if within == self.hashed and self.hashed == self.length:
                self.hasher.update(data)
                self.hashed = end
            else:
                self.hasher = None
        self.length = max(self.length, end)


@dataclass
class Sealed:
    """A draft's content ready to commit: the committed slots it keeps (`base`, cut to the
    final size) and the working chunks that replace slots of it, to be hashed and
    installed. Slots in neither are holes."""

    ino: int
    size: int
    base: ChunkList
    work: dict[int, WorkChunk] = field(default_factory=dict)
    digests: dict[int, bytes] = field(default_factory=dict)
    _chunks: ChunkList | None = None

    def hash_pending(self, store: ChunkStore) -> None:
        """Hash working chunks not hashed on the fly. Safe on a worker thread: it touches
        only these files, which the inode's lock keeps unchanged meanwhile."""
        for i, wc in self.work.items():
            if wc.hasher is not None and wc.hashed == wc.length:
                self.digests[i] = wc.hasher.digest()
            else:
                self.digests[i] = store.hash_work(self.ino, i)

    def chunk_list(self) -> ChunkList:
        """The final chunk list (after hash_pending): working chunks of zeros are holes."""
        if self._chunks is None:
            b = Builder()
            for i in sorted(self.work):
                b.copy(self.base, b.slots, i)
                b.add(self.digests[i], self.work[i].length)
            self._chunks = b.copy(self.base, b.slots, slot_count(self.size)).done()
        return self._chunks

    def installs(self) -> dict[int, bytes]:
        """The working chunks that go into the store, by slot: all but those of zeros."""
        return {i: d for i, d in self.digests.items()
                if d != zero_digest(self.work[i].length)}

    def pending_bytes(self) -> int:
        return sum(
            wc.length for wc in self.work.values()
            if wc.hasher is None or wc.hashed != wc.length
        )


class Draft:
    def __init__(self, store: ChunkStore, ino: int, base: ChunkList, size: int,
                 inline: dict[bytes, bytes] | None = None):
        """`inline`: the bytes of base chunks held in the index, by digest."""
        self.store = store
        self.ino = ino
        self.base = base
        self.inline = inline or {}
        self.size = size
        self.floor = size  # the lowest size since the draft began (see store.set_floor)
        self.floor_recorded = False
        self._prefetched = -1  # the last chunk whose successors were prefetched
        self.work: dict[int, WorkChunk] = {}
        self.content_changed = False
        self.mtime_ns: int | None = None  # pending, folded into the commit
        self.mode: int | None = None
        self.owner: dict[str, int] = {}  # pending uid/gid (local: stamps nothing)

    def chunk_len(self, i: int) -> int:
        return slot_length(i, self.size)

    # -- reading

    def read(self, offset: int, n: int) -> bytes:
        end = min(self.size, offset + n)
        out = []
        pos = offset
        while pos < end:
            i, within = divmod(pos, CHUNK)
            want = min(end - pos, CHUNK - within)
            if i in self.work:
                data = self.store.work_read(self.ino, i, want, within)
            elif (digest := self.base.at(i)) is not None:
                if i != self._prefetched:
                    self._prefetch(i)
                data = self._committed(digest, within, want)
            else:  # a hole
                data = b""
            if len(data) < want:
                data += bytes(want - len(data))
            out.append(data)
            pos += want
        return b"".join(out)

    def _committed(self, digest: bytes, offset: int, n: int) -> bytes:
        held = self.inline.get(digest)
        if held is not None:
            return held[offset:offset + n]
        return self.store.read(digest, offset, n)

    def _prefetch(self, i: int) -> None:
        """Each chunk is a file of its own, so the kernel's readahead stops at its end: on
        reaching chunk i, ask for the next ones, so a sequential reader finds them in the
        page cache instead of waiting for the disk chunk by chunk."""
        self._prefetched = i
        for j in range(i + 1, i + 1 + PREFETCH_CHUNKS):
            digest = self.base.at(j)
            if j not in self.work and digest is not None and digest not in self.inline:
                self.store.prefetch(digest)

    # -- changing

    def _work_chunk(self, i: int, covers: bool, upto: int,
                    writing: bool = False) -> WorkChunk:
        """The working chunk for index i, made by copy-on-write unless the coming write
        (up to `upto` within the chunk) covers the chunk's whole committed extent. One
        that stays within SLOT bytes takes a slot, not a file (index/workslots.py).
        `writing`: a write follows at once, and marks the chunk dirty itself."""
        wc = self.work.get(i)
        if wc is None:
            wc = WorkChunk()
            self.store.start_work(self.ino, i, small=max(upto, self.chunk_len(i)) <= SLOT,
                                  mark=not writing)
            digest = self.base.at(i)
            if digest is not None and not covers:
                data = self._committed(digest, 0, CHUNK)
                try:
                    self._write_all(i, data, 0)
                except OSError:  # a full disk: no half copy may pass for the chunk
                    self.store.drop_work(self.ino, i)
                    raise
                wc.wrote(0, data)
            self.work[i] = wc
        return wc

    def _write_all(self, i: int, data: bytes, at: int) -> None:
        """All of `data` into working chunk i at `at`, or OSError: a short write means the
        disk is full, and writing the rest says so (ENOSPC)."""
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += self.store.work_write(self.ino, i, view[done:], at + done)

    def _grow(self, new_size: int) -> None:
        """Before the size grows past a partial last chunk, give that chunk a working copy:
        its committed bytes become a prefix of a longer chunk (a hole just grows)."""
        last = (self.size - 1) // CHUNK if self.size else -1
        if self.size % CHUNK and self.base.at(last) is not None and new_size > self.size:
            self._work_chunk(last, covers=False, upto=0)

    def write(self, offset: int, data: bytes) -> int:
        """Write `data` at `offset`; how many bytes were written: fewer when the disk
        filled up part way (as write(2) reports it), OSError (ENOSPC) when none were."""
        end = offset + len(data)
        check_size(end)
        self.content_changed = True
        if end > self.size:
            self._grow(end)
        view = memoryview(data)
        pos = offset
        while pos < end:
            i, within = divmod(pos, CHUNK)
            n = min(end - pos, CHUNK - within)
            covers = within == 0 and n >= self.chunk_len(i)
            done = 0
            try:
                wc = self._work_chunk(i, covers, within + n, writing=True)
                piece = view[pos - offset : pos - offset + n]
                try:
                    while done < n:  # a short write: the disk is full, and the next says so
                        done += self.store.work_write(self.ino, i, piece[done:], within + done)
                finally:
                    if done:  # what was written stays accounted for
                        wc.wrote(within, piece[:done])
                        self.size = max(self.size, pos + done)
            except OSError:
                if pos + done == offset:
                    raise
                return pos + done - offset
            pos += n
        return len(data)

    def truncate(self, new_size: int) -> None:
        check_size(new_size)
        self.content_changed = True
        if new_size > self.size:
            self._grow(new_size)
        elif new_size < self.size:
            keep = -(-new_size // CHUNK)  # chunks that still hold data
            for i in [i for i in self.work if i >= keep]:
                del self.work[i]
                self.store.drop_work(self.ino, i)
            self.base = self.base.truncated(keep)
            tail = new_size % CHUNK
            i = new_size // CHUNK
            if tail and (i in self.work or self.base.at(i) is not None):  # a hole stays one
                wc = self._work_chunk(i, covers=False, upto=0)
                self.store.work_truncate(self.ino, i, min(wc.length, tail))
                wc.length = min(wc.length, tail)
                if wc.hashed > wc.length:
                    wc.hasher = None
            if new_size < self.floor:
                self.floor = new_size
                self.store.set_floor(self.ino, new_size)
                self.floor_recorded = True
        self.size = new_size

    # -- committing

    def seal(self) -> Sealed:
        """Fix the final content. Working chunks are brought to their exact length (a
        shorter one grows with zeros, as reads showed it); slots never written are holes.
        The store is not touched: Catalog.commit_draft installs what the commit needs."""
        nchunks = slot_count(self.size)
        for i in [i for i in self.work if i >= nchunks]:  # left by a write that failed
            del self.work[i]
            self.store.drop_work(self.ino, i)
        for i, wc in self.work.items():
            length = self.chunk_len(i)
            if wc.length < length:
                if wc.hasher is not None and wc.hashed == wc.length:
                    wc.hasher.update(bytes(length - wc.length))
                    wc.hashed = length
                self.store.work_truncate(self.ino, i, length)
                wc.length = length
        return Sealed(self.ino, self.size, self.base.truncated(nchunks), dict(self.work))

    def discard(self) -> None:
        """Drop every uncommitted write, and with them the dirty mark."""
        for i in self.work:
            self.store.drop_work(self.ino, i)
        self.work = {}
        if self.floor_recorded:
            self.store.drop_floor(self.ino)

    def rebase(self, chunks: ChunkList, size: int, inline: dict[bytes, bytes]) -> None:
        """After a commit (Catalog.commit_draft, which moved the working chunks into the
        store, and `inline`, by digest, into the index): the committed version is the new
        base; nothing is pending."""
        if self.floor_recorded:
            self.store.drop_floor(self.ino)
            self.floor_recorded = False
        self._prefetched = -1
        tail = inline_slot(chunks, size)
        held = {**self.inline, **inline}
        self.inline = {tail: held[tail]} if tail in held else {}
        self.base = chunks
        self.size = size
        self.floor = size
        self.work = {}
        self.content_changed = False
        self.mtime_ns = None
        self.mode = None
        self.owner = {}

    @property
    def dirty(self) -> bool:
        return (self.content_changed or self.mtime_ns is not None or self.mode is not None
                or bool(self.owner))

