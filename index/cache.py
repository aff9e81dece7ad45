"""The bounded cache (docs/cli.md, "The cache"): which files' content may leave this
machine, least recently used first, and leaving it.

A file's last use is its inode's `atime_ns`: an open or the last release here sets it in
memory (`Usage`, a dict assignment, nothing per read), and the daemon writes them in
batches (flush_use). The mount counts open handles in the same object, so the daemon knows
what is open without asking the mount.

What is evicted is a file's chunks in the store that nothing else here refers to: chunks
shared with another file or with a kept old version (index/versions.py) stay, so evicting
a file never drops an old version's content (versions_max bounds those). Content held in
the index (index/inline.py: a small file's one chunk, a big file's short last one) is
never evicted: it costs a row, and the eviction is about the disk the store takes. The
inode is marked not local, so the next open fetches it again (syncd/fetcher.py).
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from typing import NamedTuple

from syncd.index.catalog import Catalog
from syncd.index.chunklist import ChunkList
from syncd.index.inline import INLINE_MAX


class Usage:
    """Open handles per inode and last uses not yet written to the index. Only the trio
    thread touches it (the mount's open and release, the daemon's flush)."""

    def __init__(self) -> None:
        self.open: Counter[int] = Counter()
        self.used: dict[int, int] = {}

    def opened(self, ino: int) -> None:
        self.open[ino] += 1
        self.used[ino] = time.time_ns()

    def released(self, ino: int) -> None:
        self.open[ino] -= 1
        if self.open[ino] <= 0:
            del self.open[ino]
        self.used[ino] = time.time_ns()


def flush_use(cat: Catalog, usage: Usage, most: int | None = None) -> int:
    """Write the last uses gathered in memory to the inodes' atime, at most `most` of them
    in one transaction (an explicit atime set later is kept); how many."""
    if most is None or len(usage.used) <= most:
        used, usage.used = usage.used, {}
    else:
        used = {ino: usage.used.pop(ino) for ino in list(itertools.islice(usage.used, most))}
    if used:
        with cat.db.atomic():
            cat.conn.executemany(
                "UPDATE inodes SET atime_ns = max(atime_ns, ?) WHERE ino = ?",
                [(ns, ino) for ino, ns in used.items()])
    return len(used)


class Candidate(NamedTuple):
    ino: int
    atime_ns: int
    chunks: bytes  # the chunk list's blob, to see that it did not change meanwhile
    size: int


def candidates(cat: Catalog, after: tuple[int, int], limit: int) -> list[Candidate]:
    """Files all here, synced (not local-only: nobody else could hold them), with content
    beyond the index (over INLINE_MAX bytes), least recently used first, after the
    (atime_ns, ino) `after`; at most `limit`. Open, pinned and uncommitted ones are for the
    caller to skip (evictable says)."""
    return [Candidate(*r) for r in cat.conn.execute(
        "SELECT i.ino, i.atime_ns, i.chunks, i.size FROM inodes i INDEXED BY inodes_lru"
        f" WHERE i.kind = 'file' AND i.local = 1 AND i.size > {INLINE_MAX}"
        " AND (i.atime_ns, i.ino) > (?, ?)"
        " AND EXISTS (SELECT 1 FROM nodes n WHERE n.ino = i.ino AND n.deleted = 0"
        " AND n.seq > 0) ORDER BY i.atime_ns, i.ino LIMIT ?",
        (after[0], after[1], limit))]


def evictable(cat: Catalog, usage: Usage, dirty: set[int], c: Candidate) -> bool:
    """May this file's content leave now: not open, not uncommitted (`dirty`: inodes
    with working chunks), not pinned, and still the content it was chosen with?"""
    if c.ino in usage.open or c.ino in dirty or cat.pinned(c.ino):
        return False
    row = cat.conn.execute("SELECT local, chunks FROM inodes WHERE ino = ?",
                           (c.ino,)).fetchone()
    return row is not None and row[0] == 1 and row[1] == c.chunks


def own_chunks(cat: Catalog, c: Candidate) -> list[bytes]:
    """The chunks in the store that only this file refers to (every reference to them
    is one of its slots), each once: what evicting it frees."""
    counts = Counter(d for _, d in ChunkList.from_blob(c.chunks).stored())
    out = []
    for digest, n in counts.items():
        row = cat.conn.execute("SELECT refs FROM chunks WHERE hash = ?", (digest,)).fetchone()
        if row is not None and row[0] == n and cat.store.has(digest):
            out.append(digest)
    return out


def evict(cat: Catalog, c: Candidate, digests: list[bytes]) -> None:
    """Drop these chunks of a file (own_chunks, checked evictable in the same block of
    code): the index first says the file is not all here, then the store follows. A crash
    between leaves chunks an open takes back as here."""
    with cat.db.atomic():
        cat.conn.execute("UPDATE inodes SET local = 0 WHERE ino = ?", (c.ino,))
    for digest in digests:
        cat.store.remove(digest)


def chunk_bytes(store_root: str | os.PathLike) -> int:
    """The bytes of the chunks in the store (not retired, not inline): what cache_limit
    bounds. Reads the directory (a stat per chunk): for a worker thread, or `syncd status`."""
    total = 0
    try:
        subdirs = list(os.scandir(f"{store_root}/chunks"))
    except FileNotFoundError:
        return 0
    for sub in subdirs:
        with os.scandir(sub.path) as entries:
            for e in entries:
                try:
                    total += e.stat().st_size
                except FileNotFoundError:
                    continue
    return total
