"""What one small file costs in the index, without FUSE: per-operation microseconds.

    python bench/index.py [--n 3000]

Each figure is the median of 3 runs of N operations on a real SQLite file in /var/tmp,
with the settings the mount uses (WAL, autocheckpoint off: the mount checkpoints on a worker
thread). The baseline, measured in the same run, is one trivial transaction (BEGIN, one
UPDATE, COMMIT); each ratio says how many baselines an operation costs. Together with the
FUSE round trip (bench/fs.py; ~50 us per request here) these bound the small-file figures.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syncd.index import schema  # noqa: E402
from syncd.index.catalog import Catalog  # noqa: E402
from syncd.index.chunklist import ChunkList  # noqa: E402
from syncd.index.draft import Draft  # noqa: E402
from syncd.index.store import ChunkStore  # noqa: E402


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


def one_run(base: Path, n: int) -> dict[str, float]:
    cat, store = fresh(base)
    out = {}

    def timed(name, fn):
        t = time.perf_counter()
        for i in range(n):
            fn(i)
        out[name] = (time.perf_counter() - t) / n * 1e6

    def baseline(i):
        with cat.db.atomic():
            cat.conn.execute("UPDATE meta SET value = value WHERE key = 'created'")

    timed("baseline transaction", baseline)
    timed("create", lambda i: cat.create(1, f"f{i}", "file", 0o644, 0, 0))
    timed("lookup", lambda i: cat.lookup(1, f"f{i}"))
    timed("commit 5 bytes", lambda i: commit_small(cat, store, i + 2, b"x%04d" % (i % 10000)))
    timed("unlink", lambda i: cat.unlink(1, f"f{i}"))
    timed("purge", lambda i: [store.remove(d) for d in cat.purge_inode(i + 2)])
    cat.db.close()
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="syncd-index-bench-", dir="/var/tmp"))
    try:
        runs = [one_run(base / "db", args.n) for _ in range(3)]
    finally:
        shutil.rmtree(base)
    base_us = statistics.median(r["baseline transaction"] for r in runs)
    print(f"{'operation':<22}{'us (median of 3)':>18}{'x baseline':>12}")
    for name in runs[0]:
        us = statistics.median(r[name] for r in runs)
        print(f"{name:<22}{us:>18.0f}{us / base_us:>12.1f}")


if __name__ == "__main__":
    main()
