"""Lazy fetch: the content of a file that is not all here, got from peers before the open
proceeds (DESIGN rule 2).

A file's missing chunks are asked for several per request, of the peers in turn (online
ones first); their bytes are verified against their digests and installed by
write-to-temporary and rename, so the store never holds a chunk that does not match its
name (a short one goes into the index, index/inline.py). A peer that serves wrong bytes
is logged and the next one asked for them. Transfers resume per chunk: the chunks that
arrived are installed, so a retry asks only for the rest. Concurrent opens of one file
share one fetch.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable

import trio

from syncd.index.catalog import Catalog
from syncd.index.inline import inline_size
from syncd.index.store import matches
from syncd.peerlink import PeerError, PeerLink
from syncd.peerset import PeerSet

log = logging.getLogger(__name__)

PER_REQUEST = 8  # chunks of one file asked for in one request: 8 MiB of a big file
PARALLEL = 2  # such requests in flight at once
BATCH_CHUNKS = 64  # chunks asked for in one request when prefetching small files


class Fetcher:
    def __init__(self, catalog: Catalog, peers: PeerSet,
                 refresh: Callable[[int], Awaitable[bool]]):
        """`refresh(ino)`, when no peer holds a file's content: ask the peers for its
        node's current state; True when the name has a newer version (or none) now."""
        self.catalog = catalog
        self.store = catalog.store
        self.peers = peers
        self.refresh = refresh
        self.inflight: dict[int, trio.Event] = {}
        self.prefetching = 0  # small files in the current ahead-of-time round

    async def take_back(self, digests: list[bytes]) -> list[bytes]:
        """Put back the retired chunks among `digests` that are intact (hashed on a worker
        thread): no fetch needed for those. Returns the digests still missing."""
        left = []
        for digest in digests:
            if self.store.is_retired(digest):
                intact = await trio.to_thread.run_sync(self.store.retired_intact, digest)
                if self.store.put_back(digest, intact):
                    continue
            left.append(digest)
        return left

    async def ensure_local(self, ino: int) -> None:
        """Return once every chunk of inode `ino` is here and verified; OSError(EIO)
        when some chunk has no holder that serves it right."""
        while ino in self.inflight:
            await self.inflight[ino].wait()
        if self.catalog.is_local(ino):  # every open of every file asks: one query
            return
        done = self.inflight[ino] = trio.Event()
        what = self.catalog.display_name(ino)
        try:
            failed: list[OSError] = []
            # Several chunks per request (each request costs both sides more than a MiB
            # of body), and two requests in flight, so that each side's CPU work
            # overlaps the other's and the network's.
            async with trio.open_nursery() as nursery:
                limit = trio.Semaphore(PARALLEL)
                todo = await self.take_back(self.catalog.missing_chunks(ino))
                for i in range(0, len(todo), PER_REQUEST):
                    await limit.acquire()
                    nursery.start_soon(self._fetch_some, todo[i:i + PER_REQUEST], what,
                                       limit, failed)
            if failed:
                if await self.refresh(ino):
                    # The name has a newer version now: ESTALE makes the kernel look
                    # the name up again and open that instead.
                    raise OSError(errno.ESTALE, f"{what} has a newer version")
                if failed[0].errno == errno.EIO:
                    # Only now is it an error: until the refresh, a newer version may
                    # have been on its way, and the open then goes on with that one.
                    log.error("cannot fetch %s: %s", what, failed[0].strerror)
                raise failed[0]
            self.catalog.mark_local([ino])
        finally:
            del self.inflight[ino]
            done.set()

    async def _fetch_some(self, digests: list[bytes], what: str, limit: trio.Semaphore,
                          failed: list[OSError]) -> None:
        try:
            await self.fetch_chunks_of(digests, what)
        except OSError as e:
            failed.append(e)
        finally:
            limit.release()

    async def prefetch_small(self, inos: list[int]) -> None:
        """Fetch the content of small files ahead of any open, many chunks per request: for
        a small file the round trip costs more than its bytes. Best effort: what fails
        here is fetched again on open."""
        wanted: dict[bytes, None] = {}
        for ino in inos:
            wanted.update(dict.fromkeys(self.catalog.missing_chunks(ino)))
        todo = await self.take_back(list(wanted))
        self.prefetching = len(inos)
        try:
            await self._prefetch_chunks(todo)
        finally:
            self.prefetching = 0
        self.catalog.mark_local([ino for ino in inos if not self.catalog.missing_chunks(ino)])

    async def fetch_chunks(self, digests: list[bytes]) -> None:
        """Chunks a peer asked us to hold, then the files they complete marked local."""
        await self._prefetch_chunks(await self.take_back(self.catalog.not_held(digests)))
        self.catalog.mark_local([ino for ino in self.catalog.not_local()
                                 if not self.catalog.missing_chunks(ino)])

    async def _prefetch_chunks(self, todo: list[bytes]) -> None:
        for link in self.peers.holders():
            left = []
            for i in range(0, len(todo), BATCH_CHUNKS):
                batch = todo[i:i + BATCH_CHUNKS]
                try:
                    left += await self._take_from(link, batch, "a small file")
                except PeerError as e:
                    log.debug("prefetch from %s: %s", link.name, e)
                    left += batch
            todo = left
            if not todo:
                break

    async def fetch_chunks_of(self, digests: list[bytes], what: str) -> None:
        """Get, verify and install these chunks of `what` (at most api.MAX_CHUNKS), asking
        the peers in turn for those still missing; OSError(EIO) when some chunk has no
        peer that serves it right."""
        tried = []
        for link in self.peers.holders():
            try:
                left = await self._take_from(link, digests, what)
            except PeerError as e:
                tried.append(f"{link.name} ({e})")
                continue
            if not left:
                return
            tried.append(f"{link.name} ({len(left)} missing or wrong)")
            digests = left
        raise OSError(errno.EIO, f"no peer served chunk {digests[0].hex()[:12]}; tried: "
                                 f"{'; '.join(tried) or 'no peers'}")

    async def _take_from(self, link: PeerLink, digests: list[bytes], what: str) -> list[bytes]:
        """Ask one peer for these chunks of `what` and install those that verify; the
        digests still missing (not held there, or wrong bytes: logged). PeerError when
        the peer does not answer."""
        got = await link.get_chunks(digests)
        installed = await self.install_all(got)
        for digest in set(got) - installed:
            log.warning("peer %s served wrong bytes for chunk %s of %s: not installed",
                        link.name, digest.hex()[:12], what)
        return [d for d in digests if d not in installed]

    async def install_all(self, got: dict[bytes, tuple[memoryview, bytes | None]]
                          ) -> set[bytes]:
        """Install the chunks of a get_chunks answer that verify, on a worker thread (the
        short ones into the index, from here); their digests. A full disk first gives up
        the replaced chunks kept for peers."""
        try:
            placed, short = await trio.to_thread.run_sync(self._install_all, got)
        except OSError as e:
            if e.errno != errno.ENOSPC or not self.store.make_room():
                raise
            placed, short = await trio.to_thread.run_sync(self._install_all, got)
        self.catalog.install_inline(short)
        return placed | short.keys()

    def _install_all(self, got: dict[bytes, tuple[memoryview, bytes | None]]
                     ) -> tuple[set[bytes], dict[bytes, bytes]]:
        """The chunks placed in the store, and the bytes of the short ones that verify."""
        placed, short = set(), {}
        for d, (data, hashed) in got.items():
            if inline_size(len(data)):
                if matches(d, data, hashed):
                    short[d] = bytes(data)
            elif self.store.put_verified(d, data, hashed):
                placed.add(d)
        return placed, short
