"""The serving process of a home: take the home's lock, open the index (recovering what a
crash left), then serve peers with or without a mount until unmounted or signalled, and
close everything in order (DESIGN, "The shape": one process per home). A mount answers
before its daemon is built (syncd/starting.py)."""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import signal
import sqlite3
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from syncd.control import serve_control
from syncd.home import FAILURE, Home, UserError, mount_table
from syncd.ignoring import RulesKeeper
from syncd.index import schema
from syncd.index.cache import Usage
from syncd.index.catalog import Catalog
from syncd.index.effects import Effects
from syncd.index.recovery import recover
from syncd.index.store import ChunkStore
from syncd.mount import session
from syncd.mount.operations import Filesystem
from syncd.settings import Live
from syncd.starting import LateDaemon, prepare

if TYPE_CHECKING:
    from syncd.daemon import Daemon

log = logging.getLogger(__name__)

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def serve(home: Home, mountpoint: str, allow_other: bool = False, debug_fuse: bool = False,
          ready: Callable[[], None] = lambda: None) -> None:
    """Serve `home` on `mountpoint` until it is unmounted or SIGINT/SIGTERM arrives."""
    _raise_fd_limit()
    home.acquire(mountpoint)
    try:
        changed, changes = _change_channel()
        db, store, catalog = _open(home, changed, autocheckpoint=False)  # see _checkpoints
        # What peers' changes did to the index, from the daemon to the mount.
        effects_send, effects = trio.open_memory_channel[Effects](math.inf)
        late = None
        live = Live()  # settings changed while serving (syncd config set)
        requests: Counter[str] = Counter()  # the mount's, by operation; the metrics read it
        usage = Usage()  # the mount's opens and last uses, for the daemon's cache eviction
        if home.key_path.exists():
            prepare(home, catalog)

            def build() -> Daemon:
                from syncd.daemon import Daemon  # imported by LateDaemon.run beforehand

                return Daemon(home, catalog, changes, on_effects=effects_send.send_nowait,
                              live=live, fuse_requests=requests, mountpoint=mountpoint,
                              usage=usage)

            late = LateDaemon(catalog, build)
        else:
            log.warning("%s has no cluster key: serving without peers", home.path)
        config = home.config()
        fs = Filesystem(catalog, store, timeout=float(config["attr_timeout"]), fetch=late,
                        name=config["name"], requests=requests, usage=usage)
        live.on("attr_timeout", lambda seconds: setattr(fs, "timeout", seconds))
        if late is None:  # the daemon's applies it, and releases what it held
            live.on("mode", catalog.set_mode)
        options = session.options(_fsname(home), allow_other, debug_fuse)
        # A SIGTERM between the mount and trio's signal receiver would kill us and leave a
        # dead mount: hold the signals until the receiver is in place.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            with session.mounted(fs, mountpoint, options):
                trio.run(_main, fs, late, effects, home, mountpoint, ready)
            if late is not None and late.failed:
                raise UserError(late.failed)
        except session.MountError as e:
            raise UserError(str(e), FAILURE) from None
        finally:
            dirty = [ino for ino, d in fs.content.drafts.items() if d.dirty]
            if dirty:
                log.warning("files still open for writing at exit keep their uncommitted "
                            "writes for recovery at the next mount: inodes %s", dirty)
            store.close()
            db.close()
    finally:
        home.release()


def serve_only(home: Home, mirror: bool) -> None:
    """`syncd serve`: the daemon without a mount, until SIGINT/SIGTERM."""
    _raise_fd_limit()
    home.acquire(None)
    try:
        changed, changes = _change_channel()
        db, store, catalog = _open(home, changed)
        prepare(home, catalog)
        from syncd.daemon import Daemon

        daemon = Daemon(home, catalog, changes, mirror=mirror)
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            trio.run(_serve_daemon, daemon)
        finally:
            store.close()
            db.close()
    finally:
        home.release()


def _change_channel() -> tuple[Callable[[], None], trio.MemoryReceiveChannel[None]]:
    """How the index tells the daemon that something was stamped here: a channel of one
    place (a burst of changes is one wake-up), and the function that sends on it."""
    send, receive = trio.open_memory_channel[None](1)

    def changed() -> None:
        with contextlib.suppress(trio.WouldBlock):
            send.send_nowait(None)

    return changed, receive


def _open(home: Home, on_change: Callable[[], None], autocheckpoint: bool = True):
    """The home's index, store and catalog, after recovering what a crash left."""
    try:
        db = schema.open_db(home.db_path, autocheckpoint=autocheckpoint)
    except schema.SchemaError as e:
        raise UserError(str(e), FAILURE) from None
    store = ChunkStore(home.store_path)
    store.reserve_released = not store.keep_reserve()
    catalog = Catalog(db, store, on_change, local_rules=home.path / "ignore")
    recover(catalog, store)  # it logs each file it recovers
    catalog.set_mode(home.config()["mode"], at_start=True)
    return db, store, catalog


async def _serve_daemon(daemon: Daemon) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_keep_reserve, daemon.store)
        rules = RulesKeeper(daemon.catalog, daemon.release_held)
        await nursery.start(daemon.run)
        await nursery.start(serve_control, daemon.home.control_path, daemon.control_ops())
        nursery.start_soon(rules.run)  # after the start: see _after_ready
        await _stop_on_signal()
        await daemon.last_upload()
        nursery.cancel_scope.cancel()


def _fsname(home: Home) -> str:
    """Shown as the mount's source in `mount` and /proc/mounts (options split on commas)."""
    path = str(home.path)
    return f"syncd:{path}" if "," not in path else "syncd"


async def _main(fs: Filesystem, late: LateDaemon | None,
                effects: trio.MemoryReceiveChannel[Effects], home: Home, mountpoint: str,
                ready: Callable[[], None]) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.follow, effects)
        nursery.start_soon(_stop_on_signal, session.stop)
        nursery.start_soon(_checkpoints, home.db_path, fs.catalog.conn)
        nursery.start_soon(_keep_reserve, fs.store)
        nursery.start_soon(_raise_readahead, fs, mountpoint)
        nursery.start_soon(fs.notifier.run)
        nursery.start_soon(fs.purge_gathered)
        # Peers' states held while ignored here apply when the rules change (the
        # daemon's merger): the rules' walk starts once the daemon runs.
        rules = RulesKeeper(fs.catalog, lambda: late.daemon.release_held() if late else None)
        if late is not None:  # its ops wait for the daemon
            await nursery.start(serve_control, home.control_path, late.handlers, late.built)
        ready()
        nursery.start_soon(_after_ready, nursery, late, rules)
        await session.serve()
        if late is not None and late.daemon is not None:
            await late.daemon.last_upload()
        nursery.cancel_scope.cancel()


async def _after_ready(nursery: trio.Nursery, late: LateDaemon | None,
                       rules: RulesKeeper) -> None:
    """The daemon, then the ignore rules' first walk, which decides every entry afresh, a
    batch at a time: begun before, its batches ran between the steps of the daemon's start
    (50 ms of CPU at 200,000 files)."""
    if late is None or await late.start(nursery, session.stop):
        nursery.start_soon(rules.run)


async def _raise_readahead(fs: Filesystem, mountpoint: str) -> None:
    await fs.initialized.wait()  # the mount is in the table from then on
    device = mount_table("device").get(mountpoint)
    if device is not None:
        await session.raise_readahead(fs, device)


async def _checkpoints(db_path, conn, interval: float = 1.0) -> None:
    """Checkpoint the WAL on a worker thread, off the request path (the serving
    connection has autocheckpoint off); when it has grown large, the frames committed
    meanwhile on the trio thread, so that it starts again (Checkpointer)."""
    checkpoint = schema.Checkpointer(db_path)
    failing = False
    try:
        while True:
            await trio.sleep(interval)
            try:
                if await trio.to_thread.run_sync(checkpoint):
                    checkpoint.finish(conn)
            except sqlite3.OperationalError as e:
                # A full disk (the database file must grow to take the WAL's pages): the
                # WAL keeps every commit meanwhile, and the next checkpoint copies it.
                if not failing:
                    log.warning("cannot copy the index's WAL into it: %s; tried again "
                                "every %g s", e, interval)
                failing = True
                continue
            if failing:
                log.info("the index's WAL is copied into it again")
            failing = False
    finally:
        checkpoint.close()


async def _keep_reserve(store: ChunkStore, interval: float = 1.0) -> None:
    """Hold the index's reserve of space, made again once a full disk has room."""
    while True:
        await trio.sleep(interval)
        store.reserve_released = not await trio.to_thread.run_sync(store.keep_reserve)


async def _stop_on_signal(stop: Callable[[], None] = lambda: None) -> None:
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        async for signum in signals:
            log.info("signal %d: stopping", signum)
            stop()
            return


def _raise_fd_limit() -> None:
    """Kept chunk fds and working chunks of large files need more than the default 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
