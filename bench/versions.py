"""What keeping old versions (index/versions.py) costs a commit, without FUSE.

    python bench/versions.py [--runs 5]

A file of N chunks (1, 1 GiB's 1,024, 10 GiB's 10,240; the chunk rows exist, no bytes are
written) gets one chunk replaced and is committed (Catalog.commit_content, what a flush
does): the median milliseconds without keeping versions and keeping the one it replaces,
which takes a reference to each of its chunks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syncd.index import schema  # noqa: E402
from syncd.index.catalog import Catalog  # noqa: E402
from syncd.index.chunklist import CHUNK, Builder  # noqa: E402
from syncd.index.store import ChunkStore  # noqa: E402
from syncd.index.versions import keep_versions  # noqa: E402


def commit_ms(n: int, keep: bool, runs: int) -> float:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        ChunkStore.create(Path(d) / "store")
        db = schema.create(Path(d) / "index.db", "ab" * 16, 0, 0, time.time_ns())
        cat = Catalog(db, ChunkStore(Path(d) / "store"))
        if keep:
            keep_versions(cat)
        ino = cat.create(schema.ROOT_INO, "f", "file", 0o644, 0, 0).inode.ino
        digests = [os.urandom(32) for _ in range(n + runs)]
        with db.atomic():
            db.conn.executemany("INSERT INTO chunks (hash, size, refs) VALUES (?, ?, 0)",
                                [(x, CHUNK) for x in digests])

        def listing(first: int):
            b = Builder()
            for x in [digests[first]] + digests[runs:runs + n - 1]:
                b.add(x, CHUNK)
            return b.done()

        cat.commit_content(ino, listing(0), n * CHUNK, 1, None, True)
        took = []
        for i in range(1, runs):
            chunks = listing(i)
            start = time.perf_counter()
            cat.commit_content(ino, chunks, n * CHUNK, 1 + i, None, True)
            took.append(time.perf_counter() - start)
        db.close()
        return statistics.median(took) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for n in (1, 1024, 10240):
        print(f"{n:6d} chunks: commit {commit_ms(n, False, args.runs):7.2f} ms without "
              f"versions, {commit_ms(n, True, args.runs):7.2f} ms keeping the old one")


if __name__ == "__main__":
    main()
