"""The relays of a home as its serving process runs them: one loop per relay that, while
the relay is reachable, stores the changes made here (with the content they need) and
applies the other members' batches as a peer's push would be applied (DESIGN rule 3).
docs/protocol.md, "Relays", says what is where and why.

A relay is polled: looked at POLL seconds after the last exchange ended (a directory: a
few stats and listings), REMOTE_POLL for WebDAV (requests to a server), and at once when
something is stamped here. A 4 KiB file written on one side is thus readable on the other
within about the poll interval plus the time of two exchanges.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator

import pydantic
import trio

from syncd.api import Changes
from syncd.identity import Certificate
from syncd.index import relays
from syncd.index.catalog import Catalog
from syncd.index.chunklist import ChunkList
from syncd.index.peers import Pending, list_peers
from syncd.index.states import BATCH_DATA, changes_since
from syncd.peerlink import PeerError
from syncd.relay.backends import BadRelay, open_storage
from syncd.relay.objects import Objects
from syncd.relay.sealing import Keys, Rejected
from syncd.relay.storage import Missing, RelayError, Unreachable

log = logging.getLogger(__name__)

POLL = 0.2  # seconds between looks at a directory relay (docs/protocol.md, "Relays")
REMOTE_POLL = 2.0  # seconds between looks at a WebDAV relay
BATCH_STATES = 1000  # node states in one batch at most, as in a push
# A device writes a snapshot of every node's state once it has this many batches on a
# relay past its last one, and then removes its batches that every member read.
SNAPSHOT_BATCHES = 16
COMPACT_EVERY = 10.0  # seconds between looks at what can be removed
CURSOR_EVERY = 3600.0  # seconds between rewrites of our cursor object when it did not move
SAVE_EVERY = 30.0  # seconds between saves of a relay's last exchange while nothing changes


class RelayLink:
    def __init__(self, record: relays.Relay, catalog: Catalog, keys: Callable[[], Keys],
                 cert: Certificate, signer, receive: Callable[[str, list[dict]], int],
                 member_days: Callable[[], float] = lambda: 30.0):
        """`receive(device, states)` applies a member's states (the daemon's, as for a
        push); `keys()` the relay keys of the cluster key now and those it replaced;
        `member_days()` the setting relay_member_days (a member whose cursor is older is
        lost: not waited for)."""
        self.member_days = member_days
        self.name = record.name
        self.url = record.url
        self.credentials = record.credentials
        self.state = record.state
        self.cursor = record.cursor
        self.last_seen = record.last_seen
        self.last_error = record.last_error
        self.stored_bytes = record.stored_bytes
        self.catalog = catalog
        self.keys = keys
        self.cert = cert
        self.signer = signer
        self.receive = receive
        self.objects: Objects | None = None
        # the relay answered this round's check: a holder for fetches on open from then
        # on, before the round ends (states it brings down are opened at once)
        self.reachable = False
        self.members: dict[str, Certificate] = {}  # tag -> certificate, as last read
        # tag -> why, of the members whose certificate did not open in the last round:
        # what they read is unknown, so none of our batches is removed meanwhile
        self.unreadable: dict[str, str] = {}
        self.rejected: set[str] = set()  # objects skipped (logged once each)
        self.problems: list[str] = []  # why objects were skipped in this round (status)
        self.chunks_there: set[str] | None = None  # our chunks stored there, once listed
        self.cancel = trio.CancelScope()
        self._wake = trio.Event()
        self._saved = 0.0  # time.monotonic() of the last save of the state
        self._compacted = -math.inf  # time.monotonic() of the last compaction
        # our chunks are looked over after a removal of our batches or snapshots (not at
        # start: the first round is what makes the relay a holder for content fetches)
        self._sweep_due = False
        self.lost: dict[str, str] = {}  # device -> why it is not waited for (status)
        self._cursor_written: tuple | None = None  # our cursor object as written
        # the `read` of our newest snapshot there, which our cursor object repeats for the
        # others' tombstone collection; read from the snapshot at the first round
        self.snapshot_read: dict[str, int] | None = None
        self._cursor_at = -math.inf  # time.monotonic() when it was
        # the stamp of our last batch there (a reader that has not read up to it when it
        # reads the next has missed some: index/relays.py), found at the first upload
        self.prev_batch: int | None = None

    def pending(self) -> Pending:
        """What is not stored on the relay yet (index/relays.py)."""
        return relays.pending_to(self.catalog.db, relays.Relay(
            self.name, self.url, self.credentials, self.state, self.cursor, self.last_seen,
            self.last_error, self.stored_bytes))

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        try:
            await self._rounds()
        finally:
            if self.objects is not None:
                with trio.CancelScope(shield=True):
                    await self.objects.storage.aclose()

    async def _rounds(self) -> None:
        with self.cancel:
            while True:
                try:
                    await self.exchange()
                except BadRelay as e:
                    self._set("failing", str(e))
                except Unreachable as e:
                    self._set("unreachable", str(e))
                except RelayError as e:
                    self._set("failing", str(e))
                with trio.move_on_after(POLL if self.url.startswith("file:") else REMOTE_POLL):
                    await self._wake.wait()
                self._wake = trio.Event()

    def _set(self, state: str, error: str | None) -> None:
        """Take the outcome of a round; saved when it changed, else at most every SAVE_EVERY
        seconds (a relay is looked at twice a second: not a commit each time)."""
        if state != "online" and (state, error) != (self.state, self.last_error):
            log.warning("relay %s: %s", self.name, error)
        elif state == "online" and self.state != "online":
            log.info("relay %s (%s) is reachable", self.name, self.url)
        now = time.monotonic()
        self.reachable = state == "online"
        changed = (state, error) != (self.state, self.last_error)
        self.state, self.last_error = state, error
        if error is None or state == "online":
            self.last_seen = int(time.time())
        if changed or now - self._saved > SAVE_EVERY:
            self._saved = now
            relays.save_relay(self.catalog.db, self.name, state=state, last_error=error,
                              last_seen=self.last_seen, stored_bytes=self.stored_bytes)

    async def exchange(self) -> None:
        """One round: check, publish, upload, download. RelayError when it fails; what
        was done before stays done (each batch moves a cursor only once stored or
        applied)."""
        keys = self.keys()
        if self.objects is None or self.objects.keys is not keys:
            try:
                storage = open_storage(self.name, self.url, self.credentials)
            except ModuleNotFoundError as e:
                raise BadRelay(f"this syncd cannot open {self.url}: {e}") from None
            if self.objects is not None:
                await self.objects.storage.aclose()
            self.objects = Objects(storage, keys, self.cert, self.signer)
            self.chunks_there = None
        self.problems = []
        await self.objects.check()
        self.reachable = True
        compact = time.monotonic() - self._compacted > COMPACT_EVERY
        if self.state != "online" or compact:  # mended if damaged or removed meanwhile
            await self.objects.publish()
        if not relays.members(self.catalog.db, self.name):
            await self.start_from_snapshots()  # a newcomer does not replay history
        await self.upload()
        await self.download()
        if compact:
            await self.compact()
            self._compacted = time.monotonic()
        self._set("online", next(iter([*self.problems, *self.lost.values()]), None))

    # -- up

    async def upload(self) -> None:
        objects = self.objects
        if self.chunks_there is None:
            self.chunks_there = await objects.our_chunks()
        while True:
            # what a member sent is in its own objects there already
            members = relays.members(self.catalog.db, self.name).keys()
            states, last = changes_since(self.catalog.conn, self.cursor, BATCH_STATES,
                                         data_budget=BATCH_DATA, skip_origins=members)
            if last == self.cursor:
                return
            states = self._storable(states)
            if not states:  # all from members: nothing to store, the cursor moves
                self.cursor = last
                relays.save_relay(self.catalog.db, self.name, cursor=last)
                continue
            for digest in self._chunks_of(states):
                name = objects.chunk_name(digest)
                if name in self.chunks_there:
                    continue
                data = await self._read_chunk(digest)
                if data is None:
                    continue  # not here (fetched on open elsewhere, from whoever has it)
                self.stored_bytes += await objects.put_chunk(digest, data)
                self.chunks_there.add(name)
            if self.prev_batch is None:
                self.prev_batch = await self._last_batch(last)
            self.stored_bytes += await objects.put_batch(self.prev_batch, last, states)
            self.prev_batch = last
            self.cursor = last
            relays.save_relay(self.catalog.db, self.name, cursor=last,
                              stored_bytes=self.stored_bytes)

    def _storable(self, states: list[dict]) -> list[dict]:
        """Our states that pass the validation readers make: one that does not (a bug
        here) is left out with a log line, as a peer refuses it in a push; stored, it
        would hold back that batch and every later one of ours at every reader, and
        reading its chunks would end this process."""
        out = []
        for s in states:
            try:
                Changes.model_validate({"device": self.cert.device, "changes": [s]})
            except pydantic.ValidationError as e:
                log.error("relay %s: node %s (%r) is not stored there, which skips it: %s",
                          self.name, s.get("id"), s.get("name"), e.errors()[0]["msg"])
                continue
            out.append(s)
        return out

    async def _last_batch(self, below: int) -> int:
        """The stamp of our newest batch there below `below` (found after a restart):
        compaction keeps our newest batch for this. A snapshot does not do: it can be
        ahead of the batches (it holds states received since the last upload), and a
        PREV beyond what a reader read tells it that batches were removed unread. Only
        a relay that holds no batch of ours, written so by an older syncd, falls back to
        our snapshots: then readers take them once."""
        batches = [n for n, _ in await self.objects.numbered("b") if n < below]
        if batches:
            return batches[-1]
        return max([0, *(n for n, _ in await self.objects.numbered("s") if n < below)])

    @staticmethod
    def _chunks_of(states: list[dict]) -> list[bytes]:
        """The chunks of the live files among `states` that do not carry their bytes."""
        out: dict[bytes, None] = {}
        for s in states:
            content = s["content"]
            if s["kind"] == "file" and not s["deleted"] and "data" not in content:
                chunks = ChunkList.from_hex(content["chunks"], content["size"])
                out.update(dict.fromkeys(d for d in chunks.digests()))
        return list(out)

    async def _read_chunk(self, digest: bytes) -> bytes | None:
        inline = self.catalog.inline.get([digest])
        if digest in inline:
            return inline[digest]
        return await trio.to_thread.run_sync(self.catalog.store.read_served, digest)

    # -- down

    async def download(self) -> None:
        objects = self.objects
        self.members, unreadable = await objects.members()
        pinned = relays.members(self.catalog.db, self.name)
        read = {}
        for device, (_, upto) in pinned.items():  # its batches wait; our cursor keeps it
            if objects.keys.tag(device) in unreadable:
                read[device] = upto
        self.unreadable = {}
        for tag, why in sorted(unreadable.items()):
            self.unreadable[tag] = (
                f"{why}: the batches of member {tag}{self._who(tag, pinned)} wait, and none "
                f"of ours is removed from this relay until its certificate opens again; if "
                f"that machine is gone for good: 'syncd relay forget {self.name} {tag}'")
            self._reject(f"m/{tag}", self.unreadable[tag])
        for tag, cert in sorted(self.members.items()):
            fingerprint, upto = pinned.get(cert.device, (cert.fingerprint, 0))
            if fingerprint != cert.fingerprint:
                self._reject(f"m/{tag}", f"device {cert.device} published another "
                             f"certificate ({cert.fingerprint[:16]}...) than the one first "
                             f"read there ({fingerprint[:16]}...): its objects are skipped")
                continue
            if cert.device not in pinned:
                relays.pin_member(self.catalog.db, self.name, cert.device, cert.fingerprint)
            for last, name in await objects.batches(tag, upto):
                try:
                    batch = await objects.read_batch(cert, name)
                    pages = self._validated(cert.device, name, batch["states"])
                except Missing:
                    continue
                except Rejected as e:
                    self._reject(name, str(e))
                    break  # later batches of that member wait: order matters
                prev = batch.get("prev")
                if isinstance(prev, int) and prev > upto and await self._gap(cert, upto, prev):
                    return  # the snapshots were applied: read on from there next round
                for page in pages:
                    self.receive(cert.device, page)
                relays.consumed(self.catalog.db, self.name, cert.device, last)
                upto = last
            read[cert.device] = upto
        if self.snapshot_read is None:
            self.snapshot_read = await self._our_snapshot_read()
        # written when it moved, and now and then so that members see we are not lost
        written = (read, self.snapshot_read)
        if written != self._cursor_written or \
                time.monotonic() - self._cursor_at > CURSOR_EVERY:
            await objects.put_cursor(read, self.snapshot_read)
            self._cursor_written, self._cursor_at = written, time.monotonic()

    def _who(self, tag: str, pinned: dict[str, tuple[str, int]]) -> str:
        """' (device D, peer P)' for a member's tag, as far as the members read here
        before and the peers say; '' when neither knows it."""
        tag_of = self.objects.keys.tag
        device = next((d for d in pinned if tag_of(d) == tag), None)
        peer = next((p for p in list_peers(self.catalog.db)
                     if p.device and tag_of(p.device) == tag), None)
        if peer is not None:
            return f" (device {peer.device}, peer {peer.name})"
        return f" (device {device})" if device else ""

    def kept_for(self) -> list[dict]:
        """The members whose certificate did not open in the last round, for which
        nothing of ours is removed (syncd status)."""
        return [{"member": tag, "error": why} for tag, why in sorted(self.unreadable.items())]

    async def _our_snapshot_read(self) -> dict[str, int]:
        """What our newest snapshot there says we had read ({} without one)."""
        snapshots = await self.objects.numbered("s")
        if not snapshots:
            return {}
        try:
            read = (await self.objects.read_batch(self.cert, snapshots[-1][1])).get("read")
        except (Missing, Rejected) as e:
            log.warning("relay %s: our snapshot %s does not open: %s", self.name,
                        snapshots[-1][1], e)
            return {}
        return read if isinstance(read, dict) else {}

    async def _gap(self, cert: Certificate, upto: int, prev: int) -> bool:
        """A member's batches after `upto` up to `prev` were removed before they were read
        here (a member lost for relay_member_days, or one that joined after them): take the
        snapshots. True when they cover the gap; else it is logged and reading goes on."""
        log.warning("relay %s: batches of %s in (%d, %d] were removed before they were "
                    "read here: taking the snapshots", self.name, cert.device, upto, prev)
        await self.start_from_snapshots()
        if relays.members(self.catalog.db, self.name).get(cert.device, ("", 0))[1] >= prev:
            return True
        self._reject(f"b/{self.objects.keys.tag(cert.device)}", f"no snapshot covers the "
                     f"batches of {cert.device} in ({upto}, {prev}]: changes in them that "
                     "no later state carries are missing here")
        return False

    @staticmethod
    def _validated(device: str, name: str, states) -> list[list[dict]]:
        """States as a push's are validated, in pages of a push's size; Rejected when
        any fails (nothing of the object is applied then)."""
        if not isinstance(states, list):
            raise Rejected(f"{name}: no states")
        pages = []
        for i in range(0, max(len(states), 1), BATCH_STATES):
            try:
                changes = Changes.model_validate(
                    {"device": device, "changes": states[i:i + BATCH_STATES]}).changes
            except pydantic.ValidationError as e:
                raise Rejected(f"{name}: states that fail validation: "
                               f"{str(e).splitlines()[0]}") from None
            for s in changes:
                if s.parent is None and s.id != "root":
                    raise Rejected(f"{name}: node {s.id} has no parent")
            pages.append([s.model_dump() for s in changes])
        return pages

    async def start_from_snapshots(self) -> None:
        """Apply every member's newest snapshot, then read each member's batches from
        the newest stamp of it that a snapshot covers: a device that joins later, or a
        lost member whose batches were removed, does not replay (or miss) history."""
        objects = self.objects
        members, _ = await objects.members()
        self.members = members  # the content of what is applied is fetched from them now
        upto: dict[str, int] = {}
        for tag, cert in sorted(members.items()):
            snapshots = await objects.numbered("s", tag)
            if not snapshots:
                continue
            last, name = snapshots[-1]
            try:
                snapshot = await objects.read_batch(cert, name)
                pages = self._validated(cert.device, name, snapshot["states"])
                read = snapshot.get("read")
                if not isinstance(read, dict):
                    raise Rejected(f"{name}: a snapshot without what its member read")
            except Missing:
                continue
            except Rejected as e:
                self._reject(name, str(e))
                continue
            for page in pages:
                self.receive(cert.device, page)
            upto[cert.device] = max(upto.get(cert.device, 0), last)
            for device, n in read.items():
                if isinstance(n, int):
                    upto[device] = max(upto.get(device, 0), n)
            log.info("relay %s: applied the snapshot of %s up to its stamp %d", self.name,
                     cert.device, last)
        pinned = relays.members(self.catalog.db, self.name)
        for cert in members.values():
            if cert.device not in pinned:
                relays.pin_member(self.catalog.db, self.name, cert.device, cert.fingerprint)
            if upto.get(cert.device, 0) > pinned.get(cert.device, ("", 0))[1]:
                relays.consumed(self.catalog.db, self.name, cert.device, upto[cert.device])

    async def compact(self) -> None:
        """Write a snapshot once SNAPSHOT_BATCHES of our batches are past the last one,
        then remove our batches but the newest that it covers and that every member not
        lost has read
        (none while a member's certificate or cursor does not open: a member unknown is
        not a member absent), our older snapshots, and then our chunks that nothing left
        of ours names."""
        objects = self.objects
        ours = await objects.numbered("b")
        snapshots = await objects.numbered("s")
        newest = snapshots[-1][0] if snapshots else 0
        if sum(last > newest for last, _ in ours) >= SNAPSHOT_BATCHES:
            newest = await self._snapshot()
            snapshots.append((newest, None))
        for _, name in snapshots[:-1]:
            self.stored_bytes -= await objects.delete(name)
            self._sweep_due = True
        # a member whose certificate does not open may not have read anything of ours
        floor = 0 if self.unreadable else newest
        for cert in self.members.values():
            try:
                cursor = await objects.cursor(cert)
            except Rejected as e:
                self._reject(f"r/{objects.keys.tag(cert.device)}", str(e))
                cursor = None
            days = self.member_days()
            if cursor is not None and time.time() - cursor["at"] > days * 86400:
                if cert.device not in self.lost:
                    self.lost[cert.device] = (
                        f"member {cert.device} has not read this relay for over {days:g} "
                        "days (relay_member_days): its batches are no longer kept for it; "
                        "when it comes back it starts from the snapshots")
                    log.warning("relay %s: %s", self.name, self.lost[cert.device])
                await self._member_read(cert, cursor, lost=True)
                continue
            self.lost.pop(cert.device, None)
            read = cursor["read"].get(self.cert.device, 0) if cursor else 0
            floor = min(floor, read if isinstance(read, int) else 0)
            await self._member_read(cert, cursor, lost=False)
        for last, name in ours[:-1]:  # the newest one says what a next batch follows
            if last <= floor:
                self.stored_bytes -= await objects.delete(name)
                self._sweep_due = True
        if self._sweep_due:
            await self._remove_unneeded_chunks()
            self._sweep_due = False

    async def _member_read(self, cert: Certificate, cursor: dict | None, lost: bool) -> None:
        """Record for tombstone collection what a member's cursor object says it read of
        ours, in its batches and in its newest snapshot, and the newest batch it had
        written by then (listed after the cursor was read: a state of its from before it
        had a delete is in a batch up to that one)."""
        def ours(read: object) -> int:
            n = read.get(self.cert.device, 0) if isinstance(read, dict) else 0
            return n if isinstance(n, int) else 0

        batches = await self.objects.numbered("b", self.objects.keys.tag(cert.device))
        relays.member_read(self.catalog.db, self.name, cert.device,
                           ours(cursor["read"]) if cursor else 0,
                           batches[-1][0] if batches else 0,
                           ours(cursor.get("snapshot")) if cursor else 0, lost)

    async def _remove_unneeded_chunks(self) -> None:
        """Remove our chunks that neither our newest snapshot nor a batch of ours still
        there refers to. Every member reads content through states: the snapshot holds
        every current state (what a newcomer, or a lazy member opening a file, needs) and
        a removed batch was read by every member and is covered by the snapshot, so no one
        can look up a chunk that no remaining object of ours names. Old versions are kept
        by each device in its own store, never on a relay."""
        objects = self.objects
        needed: set[str] = set()
        for _, name in [*(await objects.numbered("s"))[-1:], *await objects.numbered("b")]:
            try:
                batch = await objects.read_batch(self.cert, name)
            except Missing:
                continue
            except Rejected as e:  # ours, altered there: what it names is unknown
                log.warning("relay %s: no chunk removed: %s", self.name, e)
                return
            needed.update(objects.chunk_name(d) for d in self._chunks_of(batch["states"]))
        for name in sorted(await objects.our_chunks() - needed):
            self.stored_bytes -= await objects.delete(name)
            if self.chunks_there is not None:
                self.chunks_there.discard(name)
        relays.save_relay(self.catalog.db, self.name, stored_bytes=self.stored_bytes)

    async def _snapshot(self) -> int:
        """Store a snapshot of every node's state here; the stamp it is at."""
        states, last = [], 0
        while True:
            page, upto = changes_since(self.catalog.conn, last, BATCH_STATES,
                                       data_budget=1 << 62)
            if upto == last:
                break
            states += page
            last = upto
            await trio.sleep(0)  # a page at a time on the trio thread
        read = {device: n for device, (_, n) in
                relays.members(self.catalog.db, self.name).items()}
        self.stored_bytes += await self.objects.put_snapshot(last, read, states)
        self.snapshot_read = read
        log.info("relay %s: stored a snapshot of %d node(s) up to stamp %d", self.name,
                 len(states), last)
        return last

    def _reject(self, name: str, why: str) -> None:
        if name not in self.rejected:
            log.warning("relay %s: skipped %s, nothing of it applied: %s", self.name, name,
                        why)
            self.rejected.add(name)
        self.problems.append(why)

    # -- content, for the fetcher

    async def get_chunks(self, digests: list[bytes]) -> dict[bytes, tuple[bytes, None]]:
        """The chunks some member stored, not yet verified (as PeerLink.get_chunks);
        PeerError when the relay does not answer."""
        if self.objects is None or not self.reachable:
            raise PeerError(f"relay {self.name} is {self.state}")
        tags = sorted(self.members)
        out = {}
        try:
            for digest in digests:
                data = await self.objects.get_chunk(digest, tags)
                if data is not None:
                    out[digest] = (data, None)
        except RelayError as e:
            raise PeerError(f"relay {self.name}: {e}") from None
        return out


class RelaySet:
    """One RelayLink loop per relay in the index, started and stopped as `syncd relay`
    changes them."""

    def __init__(self, catalog: Catalog, make: Callable[[relays.Relay], RelayLink]):
        self.catalog = catalog
        self.make = make
        self.links: dict[str, RelayLink] = {}

    def __iter__(self) -> Iterator[RelayLink]:
        return iter(list(self.links.values()))

    def load(self, nursery: trio.Nursery) -> None:
        records = {r.name: r for r in relays.list_relays(self.catalog.db)}
        for name, link in list(self.links.items()):
            record = records.get(name)
            if record is None or (record.url, record.credentials) != (link.url,
                                                                     link.credentials):
                link.cancel.cancel()
                del self.links[name]
        for name, record in records.items():
            if name not in self.links:
                link = self.links[name] = self.make(record)
                nursery.start_soon(link.run, name=f"relay {name}")

    def poke_all(self) -> None:
        for link in self:
            link.poke()

    def holders(self) -> list[RelayLink]:
        return [link for link in self if link.reachable]
