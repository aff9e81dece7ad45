"""What tar's requests for one small file cost in the mount's handlers, without the kernel.

    python bench/handlers.py [--n 3000] [--code DIR] [--workload small] [--pages] [--sql]

Calls the FUSE handlers (mount/operations.py) directly in trio on a real index in
/var/tmp, as `tar -xf` of bench/fs.py's tarball makes them per file: LOOKUP (not there),
CREATE, WRITE (100-2,000 bytes), SETATTR of the times, of the owner and of the mode
through the open file, FLUSH (the commit), RELEASE and FORGET, 100 files per directory;
or, with `--workload small`, as bench/fs.py's create + stat + unlink makes them: LOOKUP,
CREATE, WRITE, FLUSH, RELEASE of every file of one directory, then a GETATTR of each, then
UNLINK and FORGET of each, and the purge of them all (in batches, as the mount does).
Prints the process's CPU and the wall time per file, and the statements SQLite ran per
file, the transactions and the pages they wrote to the WAL. `--code DIR` runs another
copy of the code (a checkout, with `syncd/`, `index/` and `mount/` at its top, or an
installed `syncd/` with `index/` and `mount/` inside), to compare two versions in the same
run: the pyfuse3 round trips and the kernel, which bench/fs.py measures, are not in these
figures. `--pages` also unlinks the counted files and purges their inodes (as
`create + stat + unlink` in bench/fs.py ends), and says for tar's files, the unlinks and
the purge which tables and indexes the pages written to the WAL belong to, per file (one
transaction each but the purge's): what each costs at COMMIT and again at the checkpoint.
`--sql` prints the CPU time of SQLite's work per file, by statement (100 more files):
the connection's calls timed, apart from the Python around them (~1 us of it each).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shutil
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--n", type=int, default=3000)
parser.add_argument("--code", help="a directory that holds the syncd package to time")
parser.add_argument("--workload", choices=("tar", "small"), default="tar")
parser.add_argument("--pages", action="store_true",
                    help="also unlink and purge; WAL pages by table and index (tar only)")
parser.add_argument("--sql", action="store_true", help="SQLite's CPU per file by statement")
args = parser.parse_args()


def code_path(code: str | None) -> str:
    """Where to import `syncd` from. A checkout keeps index/ and mount/ beside syncd/ (the
    install maps them into it): they are linked into a package of their own in /tmp, or
    the installed package's would be imported instead of the checkout's."""
    if code is None:
        return str(Path(__file__).resolve().parent.parent)
    top = Path(code).resolve()
    if not (top / "index").is_dir():
        return str(top)
    linked = Path(tempfile.mkdtemp(prefix="syncd-code-")) / "syncd"
    atexit.register(shutil.rmtree, linked.parent, True)
    linked.mkdir()
    for entry in [*(top / "syncd").iterdir(), top / "index", top / "mount"]:
        (linked / entry.name).symlink_to(entry)
    return str(linked.parent)


sys.path.insert(0, code_path(args.code))

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


async def tar(fs: Filesystem, n: int, top: bytes) -> list[tuple[int, bytes]]:
    """Tar's requests for `n` files; their directories' inodes and names."""
    made = []
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
        made.append((d, name))
    return made


async def unlink(fs: Filesystem, made: list[tuple[int, bytes]]) -> None:
    for d, name in made:
        await fs.unlink(d, name, Ctx())


def wal_pages(conn, wal: Path) -> Counter[str]:
    """The frames in the WAL (from its start), by the table or index of their page as it
    is now: SQLite's dbstat; page 1 is the schema's and the file's header."""
    owner = dict(conn.execute("SELECT pageno, name FROM dbstat"))
    data = wal.read_bytes()
    size = 24 + struct.unpack(">I", data[8:12])[0]
    return Counter(owner.get(struct.unpack(">I", data[at:at + 4])[0], "(free)")
                   for at in range(32, len(data) - size + 1, size))


class StatementClock:
    """CPU time of each statement the index's connection runs, by its SQL: its calls
    timed, less the statements they run first (IndexConnection.settle)."""

    METHODS = ("execute", "executemany", "unsettled")

    def __init__(self):
        self.spent: Counter[str] = Counter()
        self.nested = 0.0  # the time of the statements run inside the one timed
        self.kept = {name: getattr(schema.IndexConnection, name) for name in self.METHODS}

    def __enter__(self) -> StatementClock:
        for name, method in self.kept.items():
            setattr(schema.IndexConnection, name, self.timed(method))
        return self

    def __exit__(self, *exc) -> None:
        for name, method in self.kept.items():
            setattr(schema.IndexConnection, name, method)

    def timed(self, method):
        def run(conn, sql, *args):
            outer, self.nested = self.nested, 0.0
            start = time.thread_time()
            try:
                return method(conn, sql, *args)
            finally:
                took = time.thread_time() - start
                self.spent[" ".join(sql.split())] += took - self.nested
                self.nested = outer + took
        return run


def show(what: str, pages: Counter[str], per: int) -> None:
    print(f"  {what}: {sum(pages.values()) / per:.1f} WAL pages per file: " + ", ".join(
        f"{name} {count / per:.2f}" for name, count in pages.most_common()))


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
        if args.sql:
            with StatementClock() as clock:
                trio.run(tar, fs, 100, b"timed")
        statements: list[str] = []
        wal = base / "index.db-wal"
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL starts again, empty
        db.conn.set_trace_callback(statements.append)  # counted apart: it costs time
        made = trio.run(work, fs, 100, b"counted")
        db.conn.set_trace_callback(None)
        frames = (wal.stat().st_size - 32) / (4096 + 24)  # nothing checkpoints meanwhile
        if args.pages and args.workload == "tar":
            show("tar", wal_pages(db.conn, wal), 100)
            for what, run in (("unlink", lambda: trio.run(unlink, fs, made)),
                              ("purge", fs.purge)):
                db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                run()
                show(what, wal_pages(db.conn, wal), 100)
        db.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    # A trigger's statements are traced as the statement that fired it, once more each.
    ran = sum(1 for i, s in enumerate(statements) if i == 0 or s != statements[i - 1])
    commits = statements.count("COMMIT")
    print(f"{args.code or 'this tree'}: {1e6 * cpu / args.n:.0f} us CPU, "
          f"{1e6 * wall / args.n:.0f} us wall, {ran / 100:.1f} statements, "
          f"{commits / 100:.1f} transactions, {frames / 100:.1f} WAL pages per file")
    if args.sql:
        print(f"  SQLite: {1e6 * sum(clock.spent.values()) / 100:.0f} us CPU per file")
        for sql, spent in clock.spent.most_common(8):
            print(f"  {1e6 * spent / 100:6.1f}  {sql[:80]}")


if __name__ == "__main__":
    main()
