"""Lazy fetch: the content of a file that is not all here, got from peers as it is read
(DESIGN rule 2: no byte is read before the chunk that holds it is verified).

A file's missing chunks arrive as a stream, in file order from where its readers are:
several chunks per request and several requests in flight, each chunk verified against
its digest and installed (write-to-temporary and rename; a short one into the index,
index/inline.py) before any reader sees it. A
read waits only for the chunks it covers, so a big file is readable while it arrives;
a reader that jumps ahead moves the stream with it. A writable open, `syncd fetch` and
pins wait for the whole file. A peer that serves wrong bytes is logged and the next one
asked. Transfers resume per chunk: what arrived stays installed.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Awaitable, Callable

import trio

from syncd.index.catalog import Catalog
from syncd.index.chunklist import CHUNK, ChunkList
from syncd.index.inline import inline_size
from syncd.index.store import matches
from syncd.metrics import FETCH_SECONDS
from syncd.peerlink import PeerError, PeerLink
from syncd.peerset import PeerSet

log = logging.getLogger(__name__)

PER_REQUEST = 8  # chunks of one file asked for in one request: 8 MiB of a big file
PARALLEL = 2  # such requests in flight at once, per file (and as many more installing)
BATCH_CHUNKS = 64  # chunks asked for in one request when prefetching small files


class Stream:
    """The chunks of one file still to arrive, and who waits for which.

    `order` is the missing chunks in file order (each once); `next` is where the next
    request starts: a reader waiting for a chunk ahead of it moves it there, and requests
    go on from there to the end, then from the start for what was skipped."""

    def __init__(self, ino: int, what: str, chunks: ChunkList, missing: list[bytes]):
        self.ino = ino
        self.what = what
        self.chunks = chunks
        self.order = missing
        self.index = {d: i for i, d in enumerate(missing)}
        self.asked: set[bytes] = set()
        self.requests = 0  # requests made so far
        self.asked_in: dict[bytes, int] = {}  # chunk -> the request (1, 2, ...) it was in
        self.arrived = {d: trio.Event() for d in missing}
        self.failed: dict[bytes, OSError] = {}
        self.next = 0
        self.done = trio.Event()
        self.reported = False  # a read that failed for want of a holder was logged

    def progress(self) -> dict:
        """For syncd status: the chunks the stream had to get, and how many are here."""
        here = sum(e.is_set() and d not in self.failed for d, e in self.arrived.items())
        return {"name": self.what, "chunks": len(self.order), "chunks_here": here}

    def missing_in(self, offset: int, size: int) -> list[bytes]:
        """The chunks of the bytes [offset, offset + size) not here yet (or failed)."""
        first, last = offset // CHUNK, (offset + max(size, 1) - 1) // CHUNK
        out = []
        for i in range(first, min(last + 1, self.chunks.slots)):
            digest = self.chunks.at(i)
            if digest in self.failed or (
                    digest in self.arrived and not self.arrived[digest].is_set()):
                out.append(digest)
        return out

    def take(self, n: int) -> list[bytes]:
        """Up to n chunks not asked for yet, from `next` on (wrapping around)."""
        out: list[bytes] = []
        for k in list(range(self.next, len(self.order))) + list(range(self.next)):
            digest = self.order[k]
            if digest not in self.asked:
                out.append(digest)
                self.asked.add(digest)
                if len(out) == n:
                    self.next = k + 1
                    break
        self.requests += 1
        self.asked_in.update(dict.fromkeys(out, self.requests))
        return out

    def stale(self, digest: bytes, requests: int) -> bool:
        """Did this chunk fail for want of a holder in one of the first `requests`?"""
        error = self.failed.get(digest)
        return error is not None and error.errno == errno.EIO and \
            self.asked_in.get(digest, 0) <= requests

    def settle(self, digests: list[bytes], error: OSError | None) -> None:
        for digest in digests:
            if error is not None:
                self.failed[digest] = error
            self.arrived[digest].set()

    async def wait(self, digests: list[bytes]) -> None:
        """Until these chunks are here; OSError of the first that could not be fetched."""
        if digests and digests[0] not in self.asked:
            self.next = self.index[digests[0]]
        for digest in digests:
            await self.arrived[digest].wait()
            if digest in self.failed:
                raise self.failed[digest]


class Fetcher:
    def __init__(self, catalog: Catalog, peers: PeerSet,
                 refresh: Callable[[int], Awaitable[bool]]):
        """`refresh(ino)`, when no peer holds a file's content: ask the peers for its
        node's current state; True when the name has a newer version (or none) now.
        Streams run in `nursery`, the daemon's, set when it runs."""
        self.catalog = catalog
        self.store = catalog.store
        self.peers = peers
        self.refresh = refresh
        self.nursery: trio.Nursery | None = None
        self.streams: dict[int, Stream] = {}
        self.prefetching = 0  # small files in the current ahead-of-time round
        self.relays = None  # the daemon's RelaySet, asked after the peers

    def holders(self) -> list:
        """Whom to ask for content: the peers, then the reachable relays."""
        relays = self.relays.holders() if self.relays is not None else []
        return [*self.peers.holders(), *relays]

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

    # -- the mount's side (mount/operations.py, Fetch)

    async def opening(self, ino: int, whole: bool) -> bool:
        """Before an open: the whole file here and verified (`whole`), or its first chunk;
        True when the rest is still arriving (then reads ask `reading` first). When no
        peer holds it and the name has a newer version now, OSError(ESTALE): the kernel
        looks the name up again and opens that instead."""
        if whole:
            await self.ensure_local(ino)
            return False
        stream = await self._stream(ino)
        if stream is None:
            return False
        try:
            await self._wait(stream, stream.missing_in(0, 1), stream.requests)
        except OSError as e:
            raise await self._failure(ino, e) from None
        return True

    def fetching(self, ino: int) -> bool:
        """Is the content of inode `ino` being fetched right now (user.syncd.state)?"""
        return ino in self.streams

    async def reading(self, ino: int, offset: int, size: int) -> bool:
        """Before a read: the chunks of [offset, offset + size) here and verified; True
        while the file is still arriving."""
        stream = await self._stream(ino)
        if stream is None:
            return False
        try:
            await self._wait(stream, stream.missing_in(offset, size), stream.requests)
        except OSError as e:
            if e.errno == errno.EIO and not stream.reported:  # once: the kernel retries
                stream.reported = True
                log.error("cannot read %s at %d: %s", stream.what, offset, e.strerror)
            raise
        return not stream.done.is_set() or not self.catalog.is_local(ino)

    # -- whole files

    async def ensure_local(self, ino: int) -> None:
        """Return once every chunk of inode `ino` is here and verified; OSError(EIO)
        when some chunk has no holder that serves it right, OSError(ESTALE) when
        meanwhile the name got a newer version."""
        stream = await self._stream(ino)
        if stream is not None:
            sent = stream.requests
            await stream.done.wait()
            try:
                await self._wait(stream, stream.order, sent)
            except OSError as e:
                raise await self._failure(ino, e) from None

    async def _wait(self, stream: Stream, need: list[bytes], sent: int) -> None:
        """Until the chunks `need` are here. A chunk that no holder served in one of the
        stream's first `sent` requests, made before the caller came, is asked for again,
        now: a holder may have it since (put back, or fetched itself), and an answer given
        before a read is no answer to it. OSError of the first still not served."""
        try:
            await stream.wait(need)
        except OSError:
            stale = [d for d in need if stream.stale(d, sent)]
            if not stale:
                raise
            for i in range(0, len(stale), PER_REQUEST):
                await self.fetch_chunks_of(stale[i:i + PER_REQUEST], stream.what)
            for digest in stale:
                stream.failed.pop(digest, None)
            await stream.wait(need)

    async def _failure(self, ino: int, error: OSError) -> OSError:
        """What a fetch that failed means: when no peer holds the content and the name
        has a newer version now, ESTALE (an open then looks the name up again and opens
        that instead); otherwise the error, logged only now: until the refresh, a newer
        version may have been on its way."""
        what = self.catalog.display_name(ino)
        if error.errno == errno.EIO:
            if await self.refresh(ino):
                return OSError(errno.ESTALE, f"{what} has a newer version")
            log.error("cannot fetch %s: %s", what, error.strerror)
        return error

    async def _stream(self, ino: int) -> Stream | None:
        """The running stream of inode `ino`, started if none; None when it is all here."""
        stream = self.streams.get(ino)
        if stream is not None:
            return stream
        if self.catalog.is_local(ino):  # every open of every file asks: one query
            return None
        chunks = self.catalog.chunks(ino)
        missing = self.catalog.missing_chunks(ino)
        stream = self.streams[ino] = Stream(ino, self.catalog.display_name(ino), chunks,
                                            missing)
        here = set(missing) - set(await self.take_back(missing))
        stream.asked |= here
        stream.settle(sorted(here), None)
        if self.nursery is None:  # not serving yet: fetch in the caller's task
            await self._run(stream)
        else:
            self.nursery.start_soon(self._run, stream)
        return stream

    async def _run(self, stream: Stream) -> None:
        """Fetch a stream's chunks, PARALLEL requests in flight. The first request asks
        for one chunk, so that the first read waits for one MiB, not PER_REQUEST. A
        request's slot frees as soon as its answer is in: the next one is on the wire
        while this one's chunks are written (at most PARALLEL more installing)."""
        try:
            async with trio.open_nursery() as nursery:
                asking = trio.Semaphore(PARALLEL)
                tasks = trio.Semaphore(2 * PARALLEL)
                n = 1
                while True:
                    await tasks.acquire()
                    await asking.acquire()
                    # An inode that is gone (deleted, no handle left) needs nothing more.
                    batch = [] if self.catalog.is_local(stream.ino) else stream.take(n)
                    if not batch:
                        asking.release()
                        tasks.release()
                        break
                    nursery.start_soon(self._fetch_some, stream, batch, asking, tasks)
                    n = PER_REQUEST
            if not stream.failed and not self.catalog.missing_chunks(stream.ino):
                self.catalog.mark_local([stream.ino])
        finally:
            del self.streams[stream.ino]
            stream.settle([d for d, e in stream.arrived.items() if not e.is_set()],
                          OSError(errno.ESTALE, f"{stream.what} is gone"))
            stream.done.set()

    async def _fetch_some(self, stream: Stream, digests: list[bytes],
                          asking: trio.Semaphore, tasks: trio.Semaphore) -> None:
        answered = False  # `asking` is released once: at the answer, or at the end

        def received() -> None:
            nonlocal answered
            if not answered:
                answered = True
                asking.release()
        try:
            await self.fetch_chunks_of(digests, stream.what, received)
        except OSError as e:
            stream.settle([d for d in digests if self.catalog.has_chunk(d)], None)
            stream.settle([d for d in digests if not self.catalog.has_chunk(d)], e)
        else:
            stream.settle(digests, None)
        finally:
            received()
            tasks.release()

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
        for link in self.holders():
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

    async def fetch_chunks_of(self, digests: list[bytes], what: str,
                              received: Callable[[], None] = lambda: None) -> None:
        """Get, verify and install these chunks of `what` (at most api.MAX_CHUNKS), asking
        the peers in turn for those still missing; OSError(EIO) when some chunk has no
        peer that serves it right. `received()` runs when an answer is in, before its
        chunks are verified and installed."""
        tried = []
        for link in self.holders():
            try:
                left = await self._take_from(link, digests, what, received)
            except PeerError as e:
                tried.append(f"{link.name} ({e})")
                continue
            if not left:
                return
            tried.append(f"{link.name} ({len(left)} missing or wrong)")
            digests = left
        raise OSError(errno.EIO, f"no peer served chunk {digests[0].hex()[:12]}; tried: "
                                 f"{'; '.join(tried) or 'no peers'}")

    async def _take_from(self, link: PeerLink, digests: list[bytes], what: str,
                         received: Callable[[], None] = lambda: None) -> list[bytes]:
        """Ask one peer for these chunks of `what` and install those that verify; the
        digests still missing (not held there, or wrong bytes: logged). PeerError when
        the peer does not answer. `received()` as in fetch_chunks_of."""
        started = time.perf_counter()
        got = await link.get_chunks(digests)
        FETCH_SECONDS.labels(link.name).observe(time.perf_counter() - started)
        received()
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
        self.catalog.keep_referenced(placed)
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
