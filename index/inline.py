"""Small content inside the index (DESIGN, "The content store").

A chunk of at most INLINE_MAX bytes keeps its bytes in the `inline` table, keyed by the
same BLAKE3 digest, instead of a file in the store: no file to create, rename, open and
remove per small file. Only where the bytes live differs: the chunk list, the file's hash,
the chunk's row in `chunks` (its references) and every check of its bytes against its name
are those of any chunk. Every slot of a file is CHUNK bytes but its last, so only the last
can be that short: a file has at most one inline chunk, and a file of at most INLINE_MAX
bytes (not all zeros) is wholly inline.

New chunks follow the size rule wherever they come from (a commit, a peer's push or
fetch); a short chunk that is a file already (a home from before inline chunks) stays one.

A replaced inline chunk is kept for peers like a file in store/retired/ (ChunkStore's
keep_replaced): its row stays at refs 0 with its bytes here, served, until it expires;
after a restart it counts as replaced at that moment, as retired files do.

INLINE_MAX is 16 KiB, measured (`python bench/index.py --inline`, README "Speed"): a small
file's whole life (commit, the writes it leaves, a first read, its removal) costs 70-80%
as much inline at 4 KiB and 60% at 16 KiB, mostly for the chunk file it no longer creates
and removes; at 64 KiB nothing is gained (SQLite writes a value twice, WAL then database,
and a 64 KiB one is 16 overflow pages to read and free). Three files in four of a source
tree or a Python environment are at most 16 KiB, a fifth of their bytes.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from syncd.index.chunklist import ChunkList, digest_of, slot_count, slot_length

if TYPE_CHECKING:  # annotations only (schema.ReadOnly says why)
    import sqlite_utils

INLINE_MAX = 16 << 10


def inline_size(length: int) -> bool:
    """Is a chunk of `length` bytes kept inline?"""
    return 0 < length <= INLINE_MAX


def inline_slot(chunks: ChunkList, size: int) -> bytes | None:
    """The digest of the one chunk of a file (`chunks`, `size` bytes) that may be inline:
    its last slot, when that is stored and short enough."""
    last = slot_count(size) - 1
    if last < 0 or not inline_size(slot_length(last, size)):
        return None
    return chunks.at(last)


def carried(content: dict, chunks: ChunkList, size: int) -> dict[bytes, bytes]:
    """The bytes a node state carries for its inline content (`data`, docs/protocol.md),
    by digest, once they match its chunk list (DESIGN rule 2; the API refuses a state whose
    bytes do not, so here they do). Empty when it carries none, or more than is inline here
    (a peer with a higher INLINE_MAX): those are fetched. `data` is the bytes, as the API
    decoded them, or their base64 (a state read back from limbo or held: stored_json)."""
    data = content.get("data")
    digest = chunks.at(0)
    if not data or chunks.slots != 1 or digest is None or not inline_size(size):
        return {}
    if isinstance(data, str):
        data = base64.b64decode(data)
    return {digest: data} if len(data) == size and digest_of(data) == digest else {}


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _base64_of_bytes(value: object) -> str:
    if isinstance(value, bytes):
        return encode(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


# A state kept for later (limbo, held) as JSON: its carried bytes as base64, as sent.
stored_json = json.JSONEncoder(default=_base64_of_bytes).encode


class InlineChunks:
    """The `inline` table: SQL only, on the trio thread's connection. Writes run inside
    the caller's transaction (Catalog) unless said otherwise."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db
        self.conn = db.conn
        # Replaced inline chunk -> (the catalog's sequence number when it was replaced,
        # monotonic time), as ChunkStore.retired for files; None until keep_replaced
        # (no daemon): replaced chunks go at once.
        self.retired: dict[bytes, tuple[int, float]] | None = None

    def get(self, digests: Iterable[bytes]) -> dict[bytes, bytes]:
        """The bytes of those of `digests` held inline."""
        out = {}
        for digest in digests:
            row = self.conn.execute("SELECT data FROM inline WHERE hash = ?",
                                    (digest,)).fetchone()
            if row is not None:
                out[digest] = row[0]
        return out

    def has(self, digest: bytes) -> bool:
        return self.conn.execute("SELECT 1 FROM inline WHERE hash = ?",
                                 (digest,)).fetchone() is not None

    def add(self, chunks: dict[bytes, bytes]) -> None:
        """Hold these chunks' bytes (verified by the caller); one already held stays."""
        self.conn.executemany("INSERT OR IGNORE INTO inline (hash, data) VALUES (?, ?)",
                              chunks.items())

    # -- replaced, kept a while for peers (see ChunkStore's keep_replaced: the same rules)

    def keep_replaced(self, seq: int) -> None:
        """Keep replaced inline chunks from now on. Those replaced before a restart (rows
        at refs 0 with their bytes here) count as replaced at `seq`, now."""
        now = time.monotonic()
        self.retired = {d: (seq, now) for (d,) in self.conn.execute(
            "SELECT c.hash FROM chunks c JOIN inline i ON i.hash = c.hash"
            " WHERE c.refs <= 0")}

    def retire(self, digest: bytes, seq: int) -> bool:
        """An inline chunk no version here refers to since `seq`: True when it is kept
        (its row and bytes stay until it expires), False when it goes now."""
        if self.retired is None:
            return False
        self.retired[digest] = (seq, time.monotonic())
        return True

    def expire(self, confirmed: int, min_age: float, max_age: float) -> None:
        """Drop the kept chunks every peer has seen replaced (replaced at or before
        `confirmed`) once `min_age` seconds old, any at `max_age`: one transaction. One
        referred to again meanwhile keeps its row and bytes."""
        if not self.retired:
            return
        now = time.monotonic()
        gone = [(d,) for d, (seq, at) in self.retired.items()
                if now - at >= max_age or (seq <= confirmed and now - at >= min_age)]
        if not gone:
            return
        with self.db.atomic():
            self.drop_unreferenced(gone)
        for (d,) in gone:
            del self.retired[d]

    def drop_unreferenced(self, digests: list[tuple[bytes]]) -> None:
        """Delete these chunks' rows and bytes where no version refers to them."""
        self.conn.executemany("DELETE FROM chunks WHERE hash = ? AND refs <= 0", digests)
        self.conn.executemany(
            "DELETE FROM inline WHERE hash = ?1"
            " AND NOT EXISTS (SELECT 1 FROM chunks WHERE hash = ?1)", digests)

    def usage(self) -> tuple[int, int]:
        """How many replaced inline chunks are kept, and their bytes (syncd status)."""
        return self.conn.execute(
            "SELECT count(*), coalesce(sum(c.size), 0) FROM chunks c"
            " JOIN inline i ON i.hash = c.hash WHERE c.refs <= 0").fetchone()
