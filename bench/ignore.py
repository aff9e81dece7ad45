"""What ignore rules cost in the index, without FUSE.

    python bench/ignore.py [--n 5000] [--files 20000]

create: N creates, each followed by a chmod (a stamped change), spread over 50
directories, with a root `.syncdignore` of five rules and the defaults, against the same
with rule matching and the local-only lookup switched off (what a create did before);
3 runs each, taking turns, medians. rescan: the walk that follows a change of the rules
(index/rescan.py, in its batches) over FILES files in directories of 100: a rule that
changes nothing, one that ignores every file, and back (every file shared again); the
whole walk and its longest batch, which is how long it holds the serving process's thread.
Real SQLite files in /var/tmp, WAL with autocheckpoint off, as the mount runs.
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
from syncd.index.catalog import Catalog, local_only  # noqa: E402
from syncd.index.chunklist import Builder, digest_of  # noqa: E402
from syncd.index.rescan import Rescan  # noqa: E402
from syncd.index.store import ChunkStore  # noqa: E402

ROOT = schema.ROOT_INO


def catalog(where: Path) -> Catalog:
    ChunkStore.create(where / "store")
    schema.create(where / "index.db", "ab" * 16, 0, 0, 1).close()
    return Catalog(schema.open_db(where / "index.db", autocheckpoint=False),
                   ChunkStore(where / "store"))


def write_rules(cat: Catalog, text: bytes) -> None:
    e = cat.lookup(ROOT, ".syncdignore") or cat.create(ROOT, ".syncdignore", "file", 0o644,
                                                       0, 0)
    digest = digest_of(text)
    cat.store_new_chunks({digest: text})
    cat.commit_content(e.inode.ino, Builder().add(digest, len(text)).done(), len(text),
                       None, None, True)


def creates(where: Path, n: int, rules: bool) -> float:
    cat = catalog(where)
    if rules:
        write_rules(cat, b"build/\n*.o\nnode_modules/\n__pycache__/\n!keep.o\n")
    else:
        cat.ignore.ignored = lambda *a: False
        cat.is_local_only = local_only
    dirs = [cat.create(ROOT, f"d{i}", "dir", 0o755, 0, 0).inode.ino for i in range(50)]
    t = time.perf_counter()
    for i in range(n):
        e = cat.create(dirs[i % 50], f"f{i}.txt", "file", 0o644, 0, 0)
        cat.set_attributes(e.inode.ino, mode=0o600)
    return n / (time.perf_counter() - t)


def rescans(where: Path, files: int) -> None:
    cat = catalog(where)
    for i in range(files // 100):
        ino = cat.create(ROOT, f"d{i}", "dir", 0o755, 0, 0).inode.ino
        cat.transaction(lambda ino=ino: [cat.create(ino, f"f{j}.txt", "file", 0o644, 0, 0)
                                         for j in range(100)])
    for what, rules in (("nothing changes", b"build/\n"), ("every file ignored", b"*.txt\n"),
                        ("every file shared again", b"build/\n")):
        write_rules(cat, rules)
        walk, longest = Rescan(cat), 0.0
        walk.add("root")
        start = more = time.perf_counter()
        while more:
            batch = time.perf_counter()
            more = walk.step()
            longest = max(longest, time.perf_counter() - batch)
        print(f"rescan, {what}: {time.perf_counter() - start:.2f} s, longest batch "
              f"{longest * 1000:.0f} ms ({cat.local_only_files()} local-only)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--files", type=int, default=20000)
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="syncd-bench-ignore-", dir="/var/tmp"))
    try:
        runs: dict[bool, list[float]] = {False: [], True: []}
        for r in range(3):
            for rules in (False, True):
                runs[rules].append(creates(base / f"c{r}{rules}", args.n, rules))
        for rules, rates in runs.items():
            print(f"create+chmod, rules {'on' if rules else 'off'}: "
                  f"{statistics.median(rates):,.0f}/s")
        rescans(base / "rescan", args.files)
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
