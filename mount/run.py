"""Serving a home on a mount point: lock, recover, mount, serve until unmounted or
signalled, then unmount and close. One mount per process (pyfuse3 keeps global state)."""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import sqlite3
from collections.abc import Callable

import pyfuse3
import trio
from syncd.index import schema
from syncd.index.catalog import Catalog
from syncd.index.recovery import recover
from syncd.index.store import ChunkStore
from syncd.mount.operations import Filesystem

from syncd.daemon import Daemon
from syncd.home import FAILURE, Home, UserError, mount_table

log = logging.getLogger(__name__)

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def serve(home: Home, mountpoint: str, allow_other: bool = False, debug_fuse: bool = False,
          ready: Callable[[], None] = lambda: None) -> None:
    """Serve `home` on `mountpoint` until it is unmounted or SIGINT/SIGTERM arrives."""
    _raise_fd_limit()
    home.acquire(mountpoint)
    try:
        db, store, catalog = _open(home)
        db.conn.execute("PRAGMA wal_autocheckpoint = 0")  # see _checkpoints
        fs = Filesystem(catalog, store, timeout=float(home.config()["attr_timeout"]))
        daemon = None
        if home.key_path.exists():
            daemon = Daemon(home, catalog, on_effects=fs.remote_changed)
            _check_listen(daemon.listen)
            fs.fetch = daemon.fetcher.ensure_local
        else:
            log.warning("%s has no cluster key: serving without peers", home.path)
        # nosuid, nodev: modes come from peers too, and a set-user-ID bit pushed by any
        # member of the cluster must not make a program run as root here.
        options = set(pyfuse3.default_options) | {"subtype=syncd", _fsname(home), "nosuid",
                                                  "nodev"}
        if allow_other:
            options.add("allow_other")
        if debug_fuse:
            options.add("debug")
        # A SIGTERM between init() and trio's signal receiver would kill us and leave a
        # dead mount: hold the signals until the receiver is in place.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pyfuse3.init(fs, mountpoint, options)
        except RuntimeError as e:
            hint = ""
            if not os.access("/dev/fuse", os.R_OK | os.W_OK):
                hint = (f" (/dev/fuse is mode {os.stat('/dev/fuse').st_mode & 0o777:o} and "
                        "not usable by you; Debian makes it 0666)")
            raise UserError(f"cannot mount on {mountpoint}: {e}{hint}", FAILURE) from None
        try:
            trio.run(_main, fs, daemon, home.db_path, mountpoint, ready)
        finally:
            pyfuse3.close(unmount=True)
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
        db, store, catalog = _open(home)
        daemon = Daemon(home, catalog, mirror=mirror)
        _check_listen(daemon.listen)
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            trio.run(_serve_daemon, daemon)
        finally:
            store.close()
            db.close()
    finally:
        home.release()


def _open(home: Home):
    """The home's index, store and catalog, after recovering what a crash left."""
    try:
        db = schema.open_db(home.db_path)
    except schema.SchemaError as e:
        raise UserError(str(e), FAILURE) from None
    store = ChunkStore(home.store_path)
    store.reserve_released = not store.keep_reserve()
    catalog = Catalog(db, store)
    recover(catalog, store)  # it logs each file it recovers
    return db, store, catalog


async def _serve_daemon(daemon: Daemon) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_keep_reserve, daemon.store)
        await nursery.start(daemon.run)
        await _stop_on_signal()
        nursery.cancel_scope.cancel()


def _check_listen(listen: str) -> None:
    """Fail before mounting, with a clear message, when the peer port is taken."""
    host, _, port = listen.rpartition(":")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), int(port)))
        except OSError as e:
            raise UserError(f"cannot listen for peers on {listen}: {e.strerror} (set "
                            "another address with 'listen' in config.json)") from None


def _fsname(home: Home) -> str:
    """Shown as the mount's source in `mount` and /proc/mounts (options split on commas)."""
    path = str(home.path)
    return f"fsname=syncd:{path}" if "," not in path else "fsname=syncd"


async def _main(fs: Filesystem, daemon: Daemon | None, db_path, mountpoint: str,
                ready: Callable[[], None]) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, pyfuse3.terminate)
        nursery.start_soon(_checkpoints, db_path)
        nursery.start_soon(_keep_reserve, fs.store)
        nursery.start_soon(_raise_readahead, fs, mountpoint)
        nursery.start_soon(fs.notifier.run)
        if daemon is not None:
            await nursery.start(daemon.run)
        ready()
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


READAHEAD_KB = 1024


async def _raise_readahead(fs: Filesystem, mountpoint: str) -> None:
    """FUSE reads come in readahead-sized requests, 128 KiB by default; 1 MiB makes a
    cold sequential read ~30% faster here. Only root may set it, and only after INIT,
    which clamps it to what the kernel proposed."""
    await fs.initialized.wait()
    try:
        device = mount_table("device")[mountpoint]
        path = f"/sys/class/bdi/{device}/read_ahead_kb"
        await trio.to_thread.run_sync(_write_text, path, str(READAHEAD_KB))
    except (OSError, KeyError) as e:
        log.debug("readahead left at the kernel's default: %s", e)


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


async def _checkpoints(db_path, interval: float = 1.0) -> None:
    """Checkpoint the WAL on a worker thread, off the request path (the serving
    connection has autocheckpoint off). Its own connection, used by one thread at a time."""
    conn = sqlite3.connect(db_path, check_same_thread=False)
    try:
        while True:
            await trio.sleep(interval)
            await trio.to_thread.run_sync(schema.checkpoint, conn)
    finally:
        conn.close()


async def _keep_reserve(store: ChunkStore, interval: float = 1.0) -> None:
    """Hold the index's reserve of space, made again once a full disk has room."""
    while True:
        await trio.sleep(interval)
        store.reserve_released = not await trio.to_thread.run_sync(store.keep_reserve)


async def _stop_on_signal(stop: Callable[[], None] = lambda: None) -> None:
    # pyfuse3 installs no signal handlers; terminate() makes main() return.
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
