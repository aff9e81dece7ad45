"""What one small file costs in the index, without FUSE: per-operation microseconds.

    python bench/index.py [--n 3000] [--inline]

Each figure is the median of 3 runs of N operations on a real SQLite file in /var/tmp,
with the settings the mount uses (WAL, autocheckpoint off: the mount checkpoints on a worker
thread). The baseline, measured in the same run, is one trivial transaction (BEGIN, one
UPDATE, COMMIT); each ratio says how many baselines an operation costs. Together with the
FUSE round trip (bench/fs.py; ~50 us per request here) these bound the small-file figures.
A purge (and the retiring of the chunks it leaves unreferenced) is timed one inode per
transaction, as the mount purges a file that holds a chunk or more, and in the mount's
batches.

--inline also times files of 4, 16 and 64 KiB with their chunk in the index and as a file
in the store (index/inline.py; INLINE_MAX set for the run): commit (what a flush does),
sync (what the commits left to write, per file: a WAL checkpoint, then sync(2), which the
mount leaves to a worker thread and the kernel), read (a fresh draft reads the whole
file: a first read after open; more files than the store keeps open) and purge (unlink,
purge, retire) of files on disk. Its figures chose INLINE_MAX.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syncd.index import inline, schema  # noqa: E402
from syncd.index.catalog import Catalog  # noqa: E402
from syncd.index.chunklist import ChunkList  # noqa: E402
from syncd.index.draft import Draft  # noqa: E402
from syncd.index.store import ChunkStore  # noqa: E402
from syncd.mount.operations import PURGE_BATCH  # noqa: E402

SIZES = (4 << 10, 16 << 10, 64 << 10)


def fresh(base: Path) -> tuple[Catalog, ChunkStore]:
    if base.exists():
        shutil.rmtree(base)
    base.mkdir()
    ChunkStore.create(base / "store")
    schema.create(base / "index.db", "ab" * 16, 0, 0, time.time_ns()).close()
    db = schema.open_db(base / "index.db", autocheckpoint=False)
    store = ChunkStore(base / "store")
    return Catalog(db, store), store


def commit_small(cat: Catalog, store: ChunkStore, ino: int, data: bytes) -> None:
    """What a flush does for a small file: draft, seal, hash, Catalog.commit_draft."""
    draft = Draft(store, ino, ChunkList([]), 0)
    draft.write(0, data)
    sealed = draft.seal()
    sealed.hash_pending(store)
    cat.commit_draft(draft, sealed)


def timer(out: dict[str, float], n: int):
    """timed(name, fn): the microseconds of one of `count` calls fn(i) (default n), or of
    one of `ops` operations they make together."""
    def timed(name, fn, count=n, ops=None):
        t = time.perf_counter()
        for i in range(count):
            fn(i)
        out[name] = (time.perf_counter() - t) / (ops or count) * 1e6
    return timed


def one_run(base: Path, n: int) -> dict[str, float]:
    cat, store = fresh(base)
    out: dict[str, float] = {}
    timed = timer(out, n)

    def baseline(i):
        with cat.db.atomic():
            cat.conn.execute("UPDATE meta SET value = value WHERE key = 'created'")

    timed("baseline transaction", baseline)
    timed("create", lambda i: cat.create(1, f"f{i}", "file", 0o644, 0, 0))
    timed("lookup", lambda i: cat.lookup(1, f"f{i}"))
    timed("getattr", lambda i: cat.inode(i + 2))
    timed("chmod", lambda i: cat.set_attributes(i + 2, mode=0o600))
    timed("utimens", lambda i: cat.set_attributes(i + 2, mtime_ns=i, atime_ns=i))
    timed("chown", lambda i: cat.set_attributes(i + 2, uid=1, gid=1))
    timed("rename", lambda i: cat.rename(1, f"f{i}", 1, f"g{i}"))
    timed("commit 5 bytes", lambda i: commit_small(cat, store, i + 2, b"x%04d" % (i % 10000)))
    timed("unlink", lambda i: cat.unlink(1, f"g{i}"))
    half = n // 2
    timed("purge, one", lambda i: cat.retire(cat.purge_inodes([i + 2])), half)
    rest = list(range(half + 2, n + 2))
    batches = [rest[k:k + PURGE_BATCH] for k in range(0, len(rest), PURGE_BATCH)]
    timed(f"purge, {PURGE_BATCH} at once", lambda i: cat.retire(cat.purge_inodes(batches[i])),
          len(batches), len(rest))
    cat.db.close()
    store.close()
    return out


def inline_run(base: Path, n: int) -> dict[str, float]:
    """Files of each of SIZES, inline and as files: commit, read, purge."""
    out: dict[str, float] = {}
    kept = inline.INLINE_MAX
    try:
        for size in SIZES:
            for where, limit in (("inline", size), ("file", 0)):
                inline.INLINE_MAX = limit
                sized_run(base, n, size, f"{size >> 10} KiB {where}", out)
    finally:
        inline.INLINE_MAX = kept
    return out


def sized_run(base: Path, n: int, size: int, name: str, out: dict[str, float]) -> None:
    timed = timer(out, n)
    cat, store = fresh(base)
    inos = [cat.create(1, f"f{i}", "file", 0o644, 0, 0).inode.ino for i in range(n)]
    blob = bytes(size - 8)
    timed(f"commit {name}",
          lambda i: commit_small(cat, store, inos[i], blob + (i + 1).to_bytes(8, "big")))
    t = time.perf_counter()
    cat.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.sync()
    out[f"sync {name}"] = (time.perf_counter() - t) / n * 1e6
    store.fds.close()  # a read opens what it reads, as after a restart
    timed(f"read {name}", lambda i: cat.open_draft(inos[i]).read(0, size))
    timed(f"unlink+purge {name}",
          lambda i: (cat.unlink(1, f"f{i}"), cat.retire(cat.purge_inodes([inos[i]]))))
    cat.db.close()
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--inline", action="store_true",
                        help="also files of 4, 16, 64 KiB inline and as files")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="syncd-index-bench-", dir="/var/tmp"))
    try:
        runs = []
        for _ in range(3):
            run = one_run(base / "db", args.n)
            if args.inline:
                run.update(inline_run(base / "db", args.n))
            runs.append(run)
    finally:
        shutil.rmtree(base)
    base_us = statistics.median(r["baseline transaction"] for r in runs)
    print(f"{'operation':<26}{'us (median of 3)':>18}{'x baseline':>12}")
    for name in runs[0]:
        us = statistics.median(r[name] for r in runs)
        print(f"{name:<26}{us:>18.0f}{us / base_us:>12.1f}")


if __name__ == "__main__":
    main()
