"""File content for the mount: reads, drafts of files being written, and their commits.

A file's writes gather in a Draft (index/draft.py) and become one committed version at
flush or fsync (DESIGN rule 1, Catalog.commit_draft): no SQLite on the write path. The
dirty mark is the file's first working chunk in the store (index/store.py).

Lock: `Content.locks[ino]`, a trio.Lock per inode with a draft. It serialises write,
truncate and commit of that inode, because a commit awaits a worker thread (hashing,
fsync) and a write landing meanwhile would change bytes being hashed. Only a commit that
awaits takes it; a write, a truncate or a commit that awaits nothing (a small file's)
waits for it when it is held and otherwise runs without it: code between awaits is
atomic. Reads take no lock: they never see a half-done write and working chunks are
only renamed, never rewritten, by a commit.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable

import pyfuse3
import trio
from syncd.index.catalog import Catalog
from syncd.index.chunklist import ChunkList, check_size
from syncd.index.draft import Draft, Sealed
from syncd.index.effects import Effects
from syncd.index.merge import Merger
from syncd.index.store import ChunkStore

log = logging.getLogger(__name__)

# Below this many bytes to hash, a commit hashes inline: a thread hop costs more.
INLINE_HASH_BYTES = 1 << 20


class Content:
    def __init__(self, catalog: Catalog, store: ChunkStore, merger: Merger,
                 on_effects: Callable[[Effects], None]):
        """`on_effects` takes what merging a commit made to a detached inode changed
        (Catalog.detached): kernel caches to drop, inodes left without names."""
        self.catalog = catalog
        self.store = store
        self.merger = merger
        self.on_effects = on_effects
        self.drafts: dict[int, Draft] = {}
        self.locks: dict[int, trio.Lock] = {}

    def draft(self, ino: int, empty: bool = False) -> Draft:
        """The inode's draft, started if there is none: for reads (a clean draft caches the
        committed chunk list), writes, and metadata that folds into the next commit.
        `empty`: the file is known to have no content (just created), so the index is not
        asked."""
        draft = self.drafts.get(ino)
        if draft is None:
            draft = self.drafts[ino] = (Draft(self.store, ino, ChunkList([]), 0) if empty
                                        else self.catalog.open_draft(ino))
        return draft

    def _busy(self, ino: int) -> trio.Lock | None:
        """The inode's lock when a commit holds it (it awaits a worker thread)."""
        lock = self.locks.get(ino)
        return lock if lock is not None and lock.locked() else None

    async def locked(self, ino: int) -> trio.Lock:
        """The inode's lock, taken: at once when it is free, as it nearly always is
        (trio's acquire yields to the scheduler even then, a round trip of the run loop
        per write and per commit). The caller releases it."""
        lock = self.locks.get(ino)
        if lock is None:
            lock = self.locks[ino] = trio.Lock()
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        return lock

    def arrived(self, ino: int) -> None:
        """Content of the inode arrived from peers after its draft was made."""
        draft = self.drafts.get(ino)
        if draft is not None and not draft.dirty:
            self.catalog.fill_inline(draft)

    def read(self, ino: int, offset: int, size: int) -> bytes:
        # Through the draft even when nothing is being written: a clean draft holds the
        # committed chunk list, so a read costs no query (dropped at the last close).
        return self.draft(ino).read(offset, size)

    async def write(self, ino: int, offset: int, data: bytes, append: bool = False) -> int:
        """Bytes written: fewer than asked when the disk filled up part way."""
        if (lock := self._busy(ino)) is None:
            return self._write(ino, offset, data, append)
        async with lock:
            return self._write(ino, offset, data, append)

    def _write(self, ino: int, offset: int, data: bytes, append: bool) -> int:
        draft = self.draft(ino)
        start = draft.size if append else offset
        if not self.store.room_for_content():
            raise OSError(errno.ENOSPC, "no space left for content")
        # Replaced chunks kept for peers never cost a write its space.
        written = self.store.retry_when_full(draft.write, start, data)
        draft.mtime_ns = time.time_ns()
        return written

    async def truncate(self, ino: int, size: int) -> None:
        check_size(size)  # before a draft is made for it
        if (lock := self._busy(ino)) is None:
            self._truncate(ino, size)
            return
        async with lock:
            self._truncate(ino, size)

    def _truncate(self, ino: int, size: int) -> None:
        draft = self.draft(ino)
        draft.truncate(size)
        draft.mtime_ns = time.time_ns()

    async def commit(self, ino: int, durable: bool = False) -> bool:
        """Make the draft the committed version: seal and hash it (large parts on a worker
        thread), then Catalog.commit_draft, which is crash-safe at every step. With
        `durable` (fsync), the working chunks reach the disk first and the index's commit
        is a full sync. Returns whether there was anything to commit."""
        draft = self.drafts.get(ino)
        if draft is None or not draft.dirty:  # every close ends here: skip the lock
            return False
        if not durable and self._busy(ino) is None:
            sealed = draft.seal()
            if sealed.pending_bytes() <= INLINE_HASH_BYTES:  # awaits nothing: no lock
                sealed.hash_pending(self.store)
                self._commit_sealed(draft, sealed, durable)
                return True
        lock = await self.locked(ino)
        try:
            draft = self.drafts.get(ino)
            if draft is None or not draft.dirty:
                return False
            sealed = draft.seal()
            if sealed.pending_bytes() > INLINE_HASH_BYTES:
                try:
                    await trio.to_thread.run_sync(sealed.hash_pending, self.store)
                except FileNotFoundError:
                    if self.drafts.get(ino) is draft:
                        raise
                if self.drafts.get(ino) is not draft:
                    return False  # discarded meanwhile: its last name is gone
            else:
                sealed.hash_pending(self.store)
            if durable:
                # One syncfs makes every working chunk durable: fsync per chunk would
                # cost a journal commit each (3x slower for a 1 GiB file here).
                await self.sync_all()
                if self.drafts.get(ino) is not draft:
                    return False
            self._commit_sealed(draft, sealed, durable)
            return True
        finally:
            lock.release()

    def _commit_sealed(self, draft: Draft, sealed: Sealed, durable: bool) -> None:
        self.catalog.commit_draft(draft, sealed, durable)
        # Kept until the inode is discarded: every later commit through a handle on it
        # is again a version concurrent with the change that took it.
        detached = self.catalog.detached.get(draft.ino)
        if detached is not None:
            self.on_effects(self.merger.commit_detached(
                *detached, sealed.chunk_list(), sealed.size, time.time_ns(), draft.ino))

    async def sync_all(self) -> None:
        """Make everything committed so far durable: the store and the index's WAL."""
        await trio.to_thread.run_sync(pyfuse3.syncfs, str(self.store.root))

    def close(self, ino: int) -> None:
        """The last handle is gone and everything is committed: drop the draft."""
        draft = self.drafts.get(ino)
        if draft is not None and not draft.dirty:
            del self.drafts[ino]
            self.locks.pop(ino, None)

    def discard(self, ino: int) -> None:
        """Drop uncommitted writes of an inode that has no names left."""
        draft = self.drafts.pop(ino, None)
        if draft is not None:
            draft.discard()
        self.locks.pop(ino, None)
