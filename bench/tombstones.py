"""What collecting tombstones costs the serving process's thread, without FUSE.

    python bench/tombstones.py [--files 50000] [--live 50000]

FILES files are created and deleted (FILES tombstones) beside LIVE live files, then
collected as the serving process does (index/tombstones.py): the horizon recorded, then
batches of tombstones.BATCH in one transaction each. Prints the whole collection, its
longest batch (how long it holds the thread) and what `syncd status` pays to count
them. Real SQLite files in /var/tmp, WAL with autocheckpoint off during the collection,
as the mount runs (on during the setup: its 150,000 commits would grow the WAL by
gigabytes).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syncd.index import schema, tombstones  # noqa: E402
from syncd.index.catalog import Catalog  # noqa: E402
from syncd.index.store import ChunkStore  # noqa: E402

ROOT = schema.ROOT_INO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50000)
    parser.add_argument("--live", type=int, default=50000)
    args = parser.parse_args()
    where = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="bench-tombstones-"))
    try:
        ChunkStore.create(where / "store")
        schema.create(where / "index.db", "ab" * 16, 0, 0, 1).close()
        cat = Catalog(schema.open_db(where / "index.db"), ChunkStore(where / "store"))
        for i in range(args.live):
            cat.create(ROOT, f"live{i}", "file", 0o644, 0, 0)
        for i in range(args.files):
            cat.create(ROOT, f"gone{i}", "file", 0o644, 0, 0)
            cat.unlink(ROOT, f"gone{i}")
        cat.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cat.conn.execute("PRAGMA wal_autocheckpoint = 0")
        t = time.perf_counter()
        kept = tombstones.kept(cat.conn), tombstones.held_by(cat.conn, cat.device)
        counted = time.perf_counter() - t
        now = int(time.time())
        start = time.perf_counter()
        tombstones.observe(cat, now)
        upto = tombstones.passed(cat, now)
        batches, after, dropped = [], 0, 0
        while after is not None:
            t = time.perf_counter()
            gone, after = tombstones.collect_step(cat, upto, now + 1, after)
            batches.append(time.perf_counter() - t)
            dropped += gone
        total = time.perf_counter() - start
        print(f"{args.files} tombstones beside {args.live} live files: status counted "
              f"{kept[0]} in {counted * 1e3:.2f} ms")
        print(f"collected {dropped} in {total:.2f} s, {len(batches)} batches of "
              f"{tombstones.BATCH}: longest {max(batches) * 1e3:.1f} ms, "
              f"median {sorted(batches)[len(batches) // 2] * 1e3:.1f} ms; "
              f"{tombstones.kept(cat.conn)} kept")
        cat.db.close()
    finally:
        shutil.rmtree(where)


if __name__ == "__main__":
    main()
