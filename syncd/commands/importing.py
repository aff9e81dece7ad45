"""`syncd import SRC [--into PATH]`: an existing tree into the share at disk speed
(index/importing.py says how). This command reads and hashes the source in worker
processes; the batches are applied by the serving process over the control socket when
one owns the home, else here under the home's lock.

Processes, not threads: a batch is read while the one before it is applied, and with
reading threads every system call of a reader and every SQLite step of the applying
thread handed Python's lock back and forth (an import of 100,000 small files made 6
million futex calls, and spent more time in the kernel than in Python)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import multiprocessing
import os
import select
import signal
import sqlite3
import sys
import threading
from pathlib import Path

from syncd import control
from syncd.home import FAILURE, OK, USAGE, Home, UserError, mounted_at
from syncd.index.catalog import open_catalog
from syncd.index.importing import (
    Entry,
    Importer,
    Outcome,
    blocked,
    read_file,
    scan,
    staged_digests,
    wanted,
)
from syncd.index.store import ChunkStore
from syncd.paths import share_path

BATCH_FILES = 2000  # entries applied in one transaction
BATCH_BYTES = 256 << 20  # content read ahead of one transaction
READERS = 2  # processes reading and hashing files
GROUP = 64  # files one reading task reads (a future per file cost the applying thread)


def add_parsers(sub, common) -> None:
    p = sub.add_parser("import", parents=[common],
                       help="put an existing directory tree into the share, without "
                            "copying it through the mount")
    p.add_argument("src", metavar="SRC", help="the directory to import")
    p.add_argument("--into", metavar="PATH",
                   help="where in the share SRC's contents go (default: a directory named "
                        "like SRC at the share's root)")


def cmd_import(home: Home, args) -> int:
    home.require()
    src = Path(args.src).resolve()
    if not src.is_dir():
        raise UserError(f"{args.src} is not a directory", USAGE)
    mountpoint = mounted_at(home)[0]
    for inside, what in ((mountpoint, "the mount of this share"), (str(home.path), "the home")):
        if inside and (src == Path(inside) or Path(inside) in src.parents):
            raise UserError(f"{src} is inside {what}: import a tree from elsewhere", USAGE)
    into = share_path(home, args.into if args.into is not None else src.name, mountpoint)
    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        if why := blocked(cat, into):
            raise UserError(why, USAGE)
    try:
        if home.holder() is None:
            home.acquire(None)
            try:
                with open_catalog(home.db_path, home.store_path) as cat:
                    cat.mode = home.config()["mode"]  # receive-only: the import stays here
                    return _run(home, src, into, lambda batch: _apply_here(cat, into, batch))
            finally:
                home.release()
        return _run(home, src, into, lambda batch: _apply_there(home, into, batch))
    except NotADirectoryError as e:
        raise UserError(str(e), USAGE) from None


def _apply_there(home: Home, into: str, batch: list[Entry]) -> Outcome:
    """A batch applied by the serving process."""
    try:
        answer = control.request(home, "import", timeout=600.0, into=into, uid=os.getuid(),
                                 gid=os.getgid(), entries=[e.as_dict() for e in batch])
    except UserError as e:
        raise UserError(f"{e}; the batch it was given may be in the share: its content "
                        "stays in the store for the next start of this home to sort out, "
                        "then run the import again", e.code) from None
    if not answer.get("ok"):
        raise UserError(answer.get("error") or "import failed")
    return Outcome(answer["created"], answer["skipped"], answer["bytes"], answer["differing"],
                   answer["refused"])


def _apply_here(cat, into: str, batch: list[Entry]) -> Outcome:
    try:
        return Importer(cat, into, os.getuid(), os.getgid()).apply(batch)[0]
    except sqlite3.Error as e:  # the batch is not applied: its staged chunks are dropped
        raise UserError(f"the index cannot take more ({e})", FAILURE) from None


def _run(home: Home, src: Path, into: str, apply) -> int:
    """Read each batch on the pool while the one before it is applied: the index bounds
    the import, and then never waits for the disk or the hashing."""
    from tqdm import tqdm

    skipped: list[str] = []
    entries = list(scan(src, skipped))
    total = sum(e.size for e in entries if e.kind == "file")
    store = ChunkStore(home.store_path)
    done = Outcome()
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"/{into}",
               disable=not sys.stderr.isatty(), leave=False)
    try:
        with _readers(home) as pool:
            read: _Reading | None = None  # read, to apply
            reading: _Reading | None = None
            # The last batch whose apply was asked for. Its staged chunks are never dropped
            # here, even when the apply fails: the applier drops them when its transaction
            # fails, and when it died after its commit, they are all that holds the new
            # files' content, which the recovery at its next start moves into the store.
            sent: _Reading | None = None
            try:
                for batch in [*_batches(entries), None]:
                    if batch is not None:
                        with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
                            todo = wanted(cat, into, batch)
                        reading = _Reading(pool, store, src, batch, todo,
                                           read.digests if read else set())
                    if read is not None:
                        sent = read
                        with _uninterrupted():
                            done.add(apply(read.batch))
                        bar.update(sum(x.size for x in read.batch if x.kind == "file"))
                        bar.set_postfix_str(f"{done.created + done.skipped} files",
                                            refresh=False)
                        read = None
                    if reading is not None:
                        reading.finish()
                        read, reading = reading, None
            except BaseException:
                for r in (read, reading):
                    if r is not None and r is not sent:
                        r.abandon()
                raise
    except _Unread as x:
        e = x.error
        if e.errno == errno.ENOSPC:
            raise UserError(f"no space left on the home's disk: {_summary(done)}; "
                            "free some space and run again", FAILURE) from None
        raise UserError(f"cannot read {e.filename}: {e.strerror}") from None
    except KeyboardInterrupt:
        print(f"interrupted: {_summary(done)}; run again to import the rest",
              file=sys.stderr)
        return FAILURE
    finally:
        bar.close()
        store.close()
    print(f"/{into}: {_summary(done)}")
    for rel in done.differing:
        print(f"  not imported, a different entry is there: {rel}", file=sys.stderr)
    for line in done.refused + skipped:
        print(f"  skipped {line}", file=sys.stderr)
    return OK if not (done.differing or done.refused or skipped) else FAILURE


@contextlib.contextmanager
def _uninterrupted():
    """Ctrl-C waits for the block to end, then interrupts: a batch's transaction and the
    move of its chunks into the store go together (interrupted in between, the command
    dropped chunks the index had just taken, or the serving process was about to)."""
    pressed = []
    before = signal.signal(signal.SIGINT, lambda *_: pressed.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
    if pressed:
        raise KeyboardInterrupt


class _Reading:
    """The files of one batch (`todo`, those it must read) read and staged on the pool's
    threads, GROUP files a task. Chunks in `busy` (staged by the batch being applied)
    are held in memory and staged once `finish` is called, after that apply."""

    def __init__(self, pool, store: ChunkStore, src: Path, batch: list[Entry],
                 todo: list[Entry], busy: set[bytes]):
        self.store, self.batch, self.busy = store, batch, busy
        self.digests: set[bytes] = set()  # what this batch stages
        self.tasks = [(group, pool.submit(_read_group, src, [(e.rel, e.size) for e in group],
                                          busy))
                      for group in (todo[i:i + GROUP] for i in range(0, len(todo), GROUP))]

    def finish(self) -> None:
        """Wait for every read, then stage the held chunks; the first error once every
        read is over, so that a failed batch can drop all it staged."""
        error, held = self._read()
        for digest, data in held.items():
            self.store.stage(digest, data)
        if error is not None:
            raise _Unread(error)

    def _read(self) -> tuple[OSError | None, dict[bytes, bytes]]:
        """Wait for every read: the first error, and the chunks held in memory."""
        error, held = None, {}
        for group, task in self.tasks:
            for e, result in zip(group, task.result(), strict=True):
                if isinstance(result, OSError):
                    error = error or result
                    continue
                chunks, e.size, short, more = result
                e.chunks = chunks
                if short is not None:
                    e.data = short
                self.digests.update(chunks.digests())
                held |= more
        self.tasks = []
        return error, held

    def abandon(self) -> None:
        """This batch will not be applied: drop what it staged, once its reads are over;
        not the chunks it held (`busy`): those staged are the batch before's."""
        self._read()
        self.store.drop_staged([d for e in self.batch for d in staged_digests(e)
                                if d not in self.busy])


class _Unread(Exception):
    """A file of a batch could not be read, or its chunks staged (`error`)."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def _readers(home: Home) -> concurrent.futures.ProcessPoolExecutor:
    """The reading processes, started by a fork server (this process may hold SQLite
    connections, which a forked child must not inherit), with syncd's reading modules
    already imported."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return concurrent.futures.ProcessPoolExecutor(
        READERS, mp_context=context, initializer=_start_reading,
        initargs=(str(home.store_path), os.getpid()))


_store: ChunkStore | None = None  # a reading process's store, to stage chunks in


def _start_reading(store_path: str, command: int) -> None:
    global _store
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's to handle
    threading.Thread(target=_end_with, args=(os.pidfd_open(command),), daemon=True).start()
    _store = ChunkStore(Path(store_path))


def _end_with(command: int) -> None:
    """End this reading process when the command ends (its pidfd becomes readable), even
    killed: it would wait for work forever, and its fork server for it."""
    select.select([command], [], [])
    os._exit(1)


def _read_group(src: Path, group: list[tuple[str, int]], busy: set[bytes]) -> list:
    """read_file for each (path, size listed) in a reading process: its result, or the
    OSError it raised."""
    results: list = []
    for rel, size in group:
        try:
            results.append(read_file(_store, src / rel, busy, size))
        except OSError as x:
            results.append(x)
    return results


def _batches(entries: list[Entry]):
    batch: list[Entry] = []
    size = 0
    for e in entries:
        batch.append(e)
        size += e.size
        if len(batch) >= BATCH_FILES or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _summary(o: Outcome) -> str:
    return (f"{o.created} entries imported ({o.bytes} bytes), {o.skipped} already there"
            + (f", {len(o.differing)} different" if o.differing else ""))


COMMANDS = {"import": cmd_import}
