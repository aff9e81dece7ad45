"""A file's chunk list: what its content is made of, with holes that cost nothing.

Slot i of a file holds its bytes [i * CHUNK, (i + 1) * CHUNK), the last slot fewer. A slot
is a stored chunk, named by the BLAKE3 digest of its bytes, or a hole: all zero bytes,
stored nowhere. The list is a sequence of 32-byte entries, each a digest or a run of holes:
HOLE_MARK (24 zero bytes) then the run's length in slots, 8 bytes big-endian. (A digest
that starts with 24 zero bytes is as likely as guessing a 192-bit key.)

The list is canonical: every slot whose bytes are all zero is a hole, whether they were
written or never written, and adjacent holes are one run. So equal bytes give equal lists,
and a file's hash, BLAKE3 over the entries, is the same on every peer however its bytes
came to be (a spurious conflict otherwise). A file without holes has the hash it had
before holes existed. Holes cost nothing per slot: a petabyte of hole is one entry, in the
index and on the wire.
"""

from __future__ import annotations

import bisect
import errno
import functools
from collections.abc import Iterator

import blake3

CHUNK = 1 << 20
DIGEST = 32
HOLE_MARK = bytes(24)
# The largest file size: sizes and offsets stay far below the 64-bit limits of SQLite and
# off_t, so no arithmetic on them (size + CHUNK, a slot's end) can overflow anywhere.
MAX_FILE_SIZE = 1 << 60


def check_size(size: int) -> None:
    if size > MAX_FILE_SIZE:
        raise OSError(errno.EFBIG, f"a file is at most {MAX_FILE_SIZE} bytes")


def file_hash(entries: bytes) -> str:
    """A file's content hash, from its chunk list's entries (ChunkList.blob)."""
    return "blake3:" + blake3.blake3(entries).hexdigest()


def digest_of(data: bytes | memoryview) -> bytes:
    return blake3.blake3(data).digest()


@functools.lru_cache(maxsize=64)
def zero_digest(length: int) -> bytes:
    """The digest of `length` zero bytes: a slot holding it is a hole."""
    return digest_of(bytes(length))


def slot_count(size: int) -> int:
    return -(-size // CHUNK)


def slot_length(i: int, size: int) -> int:
    return max(0, min(CHUNK, size - i * CHUNK))


def hole_entry(run: int) -> bytes:
    return HOLE_MARK + run.to_bytes(8, "big")


def hole_run(entry: bytes) -> int:
    """The number of hole slots an entry stands for; 0 for a digest."""
    return int.from_bytes(entry[24:], "big") if entry[:24] == HOLE_MARK else 0


class ChunkList:
    """An immutable chunk list. Build one with Builder, or from its stored or wire form."""

    __slots__ = ("entries", "_starts", "slots")

    def __init__(self, entries: list[bytes]):
        self.entries = entries
        self._starts: list[int] = []  # the first slot of each entry
        slot = 0
        for entry in entries:
            self._starts.append(slot)
            slot += hole_run(entry) or 1
        self.slots = slot

    @classmethod
    def from_blob(cls, blob: bytes | None) -> ChunkList:
        blob = blob or b""
        return cls([blob[i : i + DIGEST] for i in range(0, len(blob), DIGEST)])

    @classmethod
    def from_hex(cls, entries: list[str], size: int) -> ChunkList:
        """The list a peer sent for a file of `size` bytes, canonical: a digest of zeros
        becomes a hole (as a peer of an older version sends them). ValueError when it
        does not describe `size` bytes."""
        raw = [bytes.fromhex(h) for h in entries]
        if any(len(e) != DIGEST for e in raw):
            raise ValueError("a chunk list entry is 64 hex digits")
        if any(e[:24] == HOLE_MARK and hole_run(e) == 0 for e in raw):
            raise ValueError("a run of holes is at least one slot long")
        given = cls(raw)
        if given.slots != slot_count(size):
            raise ValueError(f"a file of {size} bytes has {slot_count(size)} slot(s), not "
                             f"{given.slots}")
        return given.canonical(size)

    def canonical(self, size: int) -> ChunkList:
        """This list with every digest of zeros a hole (for a file of `size` bytes)."""
        b = Builder()
        for i, digest in self.stored():
            b.copy(self, b.slots, i)
            b.add(digest, slot_length(i, size))
        return b.copy(self, b.slots, self.slots).done()

    @property
    def blob(self) -> bytes:
        return b"".join(self.entries)

    @property
    def hash(self) -> str:
        return file_hash(self.blob)

    def hex(self) -> list[str]:
        return [e.hex() for e in self.entries]

    def __len__(self) -> int:
        return self.slots

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChunkList) and self.entries == other.entries

    def __repr__(self) -> str:
        return f"ChunkList({self.slots} slots, {len(self.entries)} entries)"

    def at(self, i: int) -> bytes | None:
        """The digest of slot i; None for a hole (or a slot past the end)."""
        if not 0 <= i < self.slots:
            return None
        entry = self.entries[bisect.bisect_right(self._starts, i) - 1]
        return None if hole_run(entry) else entry

    def stored(self) -> Iterator[tuple[int, bytes]]:
        """(slot, digest) of every slot that is not a hole, in order."""
        for start, entry in zip(self._starts, self.entries, strict=True):
            if not hole_run(entry):
                yield start, entry

    def digests(self) -> list[bytes]:
        """The stored chunks, each once, in order."""
        return list(dict.fromkeys(d for _, d in self.stored()))

    def truncated(self, slots: int) -> ChunkList:
        """The first `slots` slots."""
        return Builder().copy(self, 0, min(slots, self.slots)).done()


class Builder:
    """Makes a canonical ChunkList slot by slot."""

    def __init__(self) -> None:
        self.entries: list[bytes] = []
        self.slots = 0
        self._holes = 0  # a run of holes not appended yet

    def add(self, digest: bytes, length: int) -> Builder:
        """A slot of `length` bytes with this digest (a hole if they are all zero)."""
        if digest == zero_digest(length):
            return self.holes(1)
        self._flush()
        self.entries.append(digest)
        self.slots += 1
        return self

    def holes(self, n: int) -> Builder:
        self._holes += n
        self.slots += n
        return self

    def copy(self, source: ChunkList, start: int, end: int) -> Builder:
        """Slots [start, end) of `source`, holes where it has none. Its entries are
        canonical already: no digest is checked again."""
        slot = start
        if start < source.slots:
            k = bisect.bisect_right(source._starts, start) - 1
            while slot < min(end, source.slots):
                entry = source.entries[k]
                run = hole_run(entry)
                if run:
                    n = min(end, source._starts[k] + run) - slot
                    self.holes(n)
                    slot += n
                else:
                    self._flush()
                    self.entries.append(entry)
                    self.slots += 1
                    slot += 1
                k += 1
        if end > slot:
            self.holes(end - slot)
        return self

    def _flush(self) -> None:
        if self._holes:
            self.entries.append(hole_entry(self._holes))
            self._holes = 0

    def done(self) -> ChunkList:
        self._flush()
        return ChunkList(self.entries)
