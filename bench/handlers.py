"""What tar's requests for one small file cost in the mount's handlers, without the kernel.

    python bench/handlers.py [--n 3000] [--code DIR] [--workload small]

Calls the FUSE handlers (mount/operations.py) directly in trio on a real index in
/var/tmp, as `tar -xf` of bench/fs.py's tarball makes them per file: LOOKUP (not there),
CREATE, WRITE (100-2,000 bytes), SETATTR of the times, of the owner and of the mode
through the open file, FLUSH (the commit), RELEASE and FORGET, 100 files per directory;
or, with `--workload small`, as bench/fs.py's create + stat + unlink makes them: LOOKUP,
CREATE, WRITE, FLUSH, RELEASE of every file of one directory, then a GETATTR of each, then
UNLINK and FORGET of each, and the purge of them all (in batches, as the mount does).
Prints the process's CPU and the wall time per file, and the statements SQLite ran per
file, the transactions and the pages they wrote to the WAL. `--code DIR` runs another
copy of the code (a directory holding `syncd/` with `index/` and `mount/` inside, as
installed), to compare two versions in the same run:
the pyfuse3 round trips and the kernel, which bench/fs.py measures, are not in these
figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--n", type=int, default=3000)
parser.add_argument("--code", help="a directory that holds the syncd package to time")
parser.add_argument("--workload", choices=("tar", "small"), default="tar")
args = parser.parse_args()
sys.path.insert(0, args.code or str(Path(__file__).resolve().parent.parent))

import pyfuse3  # noqa: E402
import trio  # noqa: E402
from syncd.index import schema  # noqa: E402
from syncd.index.catalog import Catalog  # noqa: E402
from syncd.index.store import ChunkStore  # noqa: E402
from syncd.index.versions import keep_versions  # noqa: E402
from syncd.mount.operations import Filesystem  # noqa: E402

MTIME = 1_700_000_000 * 10**9


class Ctx:
    uid, gid, pid, umask = 1000, 1000, 1, 0o022


def fields(**set_) -> SimpleNamespace:
    names = ("size", "mode", "mtime", "uid", "gid", "atime", "ctime")
    return SimpleNamespace(**{f"update_{n}": n in set_ for n in names})


async def tar(fs: Filesystem, n: int, top: bytes) -> None:
    data = [os.urandom(100 + k * 37 % 1900) for k in range(n)]
    for k in range(n):
        if k % 100 == 0:
            d = (await fs.mkdir(pyfuse3.ROOT_INODE, top + b"%03d" % (k // 100), 0o755,
                                Ctx())).st_ino
        name = b"f%03d" % (k % 100)
        with contextlib.suppress(pyfuse3.FUSEError):  # not there yet
            await fs.lookup(d, name, Ctx())
        info, attrs = await fs.create(d, name, 0o100644, os.O_WRONLY | os.O_CREAT, Ctx())
        await fs.write(info.fh, 0, data[k])
        a = pyfuse3.EntryAttributes()
        a.st_mtime_ns, a.st_uid, a.st_gid, a.st_mode = MTIME, 1000, 1000, 0o100644
        for f in (fields(mtime=1), fields(uid=1, gid=1), fields(mode=1)):
            await fs.setattr(attrs.st_ino, a, f, info.fh, Ctx())
        await fs.flush(info.fh)
        await fs.release(info.fh)
        await fs.forget([(attrs.st_ino, 1)])


async def small(fs: Filesystem, n: int, top: bytes) -> None:
    d = (await fs.mkdir(pyfuse3.ROOT_INODE, top, 0o755, Ctx())).st_ino
    names = [b"f%05d" % k for k in range(n)]
    inos = []
    for k, name in enumerate(names):
        with contextlib.suppress(pyfuse3.FUSEError):  # not there yet
            await fs.lookup(d, name, Ctx())
        info, attrs = await fs.create(d, name, 0o100644, os.O_WRONLY | os.O_CREAT, Ctx())
        await fs.write(info.fh, 0, b"file %d\n" % k)
        await fs.flush(info.fh)
        await fs.release(info.fh)
        inos.append(attrs.st_ino)
    for ino in inos:
        await fs.getattr(ino, Ctx())
    for ino, name in zip(inos, names, strict=True):
        await fs.unlink(d, name, Ctx())
        await fs.forget([(ino, 1)])
    fs.purge()


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="syncd-handlers-", dir="/var/tmp"))
    try:
        ChunkStore.create(base / "store")
        schema.create(base / "index.db", "cd" * 16, 1000, 1000, time.time_ns()).close()
        db = schema.open_db(base / "index.db", autocheckpoint=False)  # as the mount's
        store = ChunkStore(base / "store")
        catalog = Catalog(db, store)
        keep_versions(catalog)  # as a serving process does
        fs = Filesystem(catalog, store)
        cpu, wall = time.process_time(), time.perf_counter()
        work = small if args.workload == "small" else tar
        trio.run(work, fs, args.n, b"d")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        statements: list[str] = []
        wal = base / "index.db-wal"
        wal_before = wal.stat().st_size
        db.conn.set_trace_callback(statements.append)  # counted apart: it costs time
        trio.run(work, fs, 100, b"counted")
        frames = (wal.stat().st_size - wal_before) / (4096 + 24)  # nothing checkpoints
        db.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    # A trigger's statements are traced as the statement that fired it, once more each.
    ran = sum(1 for i, s in enumerate(statements) if i == 0 or s != statements[i - 1])
    commits = statements.count("COMMIT")
    print(f"{args.code or 'this tree'}: {1e6 * cpu / args.n:.0f} us CPU, "
          f"{1e6 * wall / args.n:.0f} us wall, {ran / 100:.1f} statements, "
          f"{commits / 100:.1f} transactions, {frames / 100:.1f} WAL pages per file")


if __name__ == "__main__":
    main()
