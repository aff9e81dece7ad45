"""The bounded cache (cache_limit, min_copies; docs/cli.md, "The cache"): evicts the least
recently used content beyond the limit, off the mount's requests, a batch of files at a
time, never a last copy.

Before dropping a file's chunks this machine asks its peers to lease them: a peer that
holds a chunk promises not to evict it for LEASE_SECONDS (POST /v1/lease,
docs/protocol.md). The chunks go only when at least min_copies peers leased every one of
them, and a machine never evicts a chunk it leased to another while the lease lasts. So
two machines that each hold the last two copies cannot drop both: each one's lease to the
other stops its own drop, whichever asks first (git-annex locks a remote copy before a
drop in the same way).

A relay (storage that runs nothing of ours, DESIGN rule 7) would count as a holder here
only for the chunks its rules keep: `_lease_from` is where it would answer; none exists
yet.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time

import trio

from syncd.index import cache
from syncd.index.cache import Candidate, Usage
from syncd.index.catalog import Catalog
from syncd.peerlink import PeerError
from syncd.peerset import PeerSet
from syncd.settings import by_disk

log = logging.getLogger(__name__)

EVERY = 5.0  # seconds between looks at the cache's use (and flushes of last uses)
BATCH = 32  # files looked at in one batch, between which other tasks run
FLUSH_BATCH = 2000  # last uses written in one transaction (~5 us each)
LEASE_SECONDS = 60.0  # how long a peer keeps a chunk it leased to us
MAX_LEASE_SECONDS = 600.0  # the longest lease this machine grants


class Evictor:
    def __init__(self, catalog: Catalog, peers: PeerSet, usage: Usage,
                 limit: int | str, min_copies: int, mirror: bool):
        self.catalog = catalog
        self.store = catalog.store
        self.peers = peers
        self.usage = usage
        self.limit = limit  # the setting: "none", bytes, or a share of the disk
        self.min_copies = min_copies
        self.mirror = mirror  # syncd serve --mirror keeps everything: no eviction
        self.used: int | None = None  # bytes of chunks in the store, as last measured
        # Chunks leased to peers: digest -> monotonic time the last lease ends. Only the
        # trio thread touches it; _drop checks it in the same block of code that drops.
        self.leased: dict[bytes, float] = {}
        self._wake = trio.Event()
        # Rounds (step) completed, and whether one runs now: what status shows, so that
        # an observer knows when a whole round has looked at the cache since a moment.
        self.rounds = 0
        self.in_round = False

    # -- settings

    def set_limit(self, value: int | str) -> None:
        self.limit = value
        self._wake.set()

    def set_min_copies(self, value: int) -> None:
        self.min_copies = value
        self._wake.set()

    def limit_bytes(self) -> int | None:
        """cache_limit in bytes; None when there is none."""
        if self.limit == "none":
            return None
        st = os.statvfs(self.store.root)
        return by_disk(self.limit, st.f_blocks * st.f_frsize)

    def status(self) -> dict:
        """For syncd status: the use as last measured, the limit, over it or not, and the
        rounds completed."""
        limit = self.limit_bytes()
        return {"bytes": self.used, "limit": limit, "setting": self.limit,
                "min_copies": self.min_copies,
                "over": limit is not None and self.used is not None and self.used > limit,
                "rounds": self.rounds, "in_round": self.in_round}

    # -- leases this machine grants (syncd/api.py, POST /v1/lease)

    def lease(self, digests: list[bytes], seconds: float) -> list[bytes]:
        """Promise not to evict those of `digests` held in the store for `seconds`; the
        ones promised. A retired chunk is not held: it leaves on its own clock."""
        until = time.monotonic() + min(seconds, MAX_LEASE_SECONDS)
        held = [d for d in digests if self.store.has(d)]
        for digest in held:
            self.leased[digest] = max(self.leased.get(digest, 0.0), until)
        return held

    def _leased_out(self, digests: list[bytes]) -> bool:
        now = time.monotonic()
        for digest in [d for d, until in self.leased.items() if until <= now]:
            del self.leased[digest]
        return any(d in self.leased for d in digests)

    # -- eviction

    async def run(self) -> None:
        try:
            while True:
                with trio.move_on_after(EVERY):
                    await self._wake.wait()
                self._wake = trio.Event()
                self.in_round = True
                try:
                    await self.step()
                except sqlite3.OperationalError as e:  # a full disk, an index held long
                    log.warning("the cache's round failed: %s; tried again in %g s", e, EVERY)
                self.in_round = False
                self.rounds += 1
        finally:
            cache.flush_use(self.catalog, self.usage)

    async def step(self) -> int:
        """Write the last uses, measure, and evict while over the limit; bytes freed."""
        while cache.flush_use(self.catalog, self.usage, FLUSH_BATCH) == FLUSH_BATCH:
            await trio.sleep(0)
        limit = self.limit_bytes()
        if limit is None:
            self.used = None
            return 0
        self.used = await trio.to_thread.run_sync(cache.chunk_bytes, self.store.root)
        if self.mirror or self.used <= limit:
            return 0
        freed = 0
        after = (-1, -1)
        dirty = set(self.store.work_inodes())
        while self.used > limit:
            batch = cache.candidates(self.catalog, after, BATCH)
            if not batch:
                break
            after = (batch[-1].atime_ns, batch[-1].ino)
            for c in batch:
                if self.used <= limit:
                    break
                gone = await self._evict(c, dirty)
                freed += gone
                self.used -= gone
            await trio.sleep(0)
        if freed:
            log.info("cache: evicted %d bytes; %d of %d bytes used", freed, self.used, limit)
        return freed

    async def _evict(self, c: Candidate, dirty: set[int]) -> int:
        """Evict one file's own chunks if it may go and enough peers lease them all;
        the bytes freed."""
        if not cache.evictable(self.catalog, self.usage, dirty, c):
            return 0
        digests = cache.own_chunks(self.catalog, c)
        if not digests or self._leased_out(digests):
            return 0
        if await self._lease_from(digests) < self.min_copies:
            return 0
        # No await from here on: what was checked holds while the chunks go.
        if not cache.evictable(self.catalog, self.usage, dirty, c) or \
                self._leased_out(digests) or digests != cache.own_chunks(self.catalog, c):
            return 0
        sizes = [self._size(d) for d in digests]
        cache.evict(self.catalog, c, digests)
        log.debug("cache: evicted %s (%d chunk(s))", self.catalog.display_name(c.ino),
                  len(digests))
        return sum(sizes)

    def _size(self, digest: bytes) -> int:
        try:
            return os.stat(self.store.chunk_path(digest)).st_size
        except FileNotFoundError:
            return 0

    async def _lease_from(self, digests: list[bytes]) -> int:
        """How many peers leased every one of `digests`, asked in turn until min_copies
        have. A peer counts only for the chunks it holds itself (a relay would count only
        for those its rules keep)."""
        leased = 0
        for link in self.peers.online():
            try:
                held = await link.lease(digests, LEASE_SECONDS)
            except PeerError as e:
                log.debug("cache: no lease from %s: %s", link.name, e)
                continue
            if held >= set(digests):
                leased += 1
                if leased >= self.min_copies:
                    break
        return leased
