"""The peers of a home as its serving process runs them: one PeerLink loop each, started
and stopped as the peer records in the index change (`syncd peer ...`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import trio

from syncd.discovery import Found
from syncd.index.catalog import Catalog
from syncd.index.peers import list_peers
from syncd.peerlink import Me, PeerLink


class PeerSet:
    def __init__(self, me: Me, catalog: Catalog, on_online: Callable[[], None],
                 on_pinned: Callable[[], None]):
        """`on_online` runs each time a peer answers again after it did not, `on_pinned`
        when a peer's certificate is pinned."""
        self.me = me
        self.catalog = catalog
        self.on_online = on_online
        self.on_pinned = on_pinned
        self.links: dict[str, PeerLink] = {}
        self.heard: dict[str, Found] = {}  # what discovery heard on the LAN, by service

    def __iter__(self) -> Iterator[PeerLink]:
        return iter(list(self.links.values()))

    def load(self, nursery: trio.Nursery) -> None:
        """Start a loop for each peer in the index, stop those removed from it, and take
        the operator's outofuse/auto."""
        records = {p.name: p for p in list_peers(self.catalog.db)}
        for name, link in list(self.links.items()):
            record = records.get(name)
            if record is None or [a.rstrip("/") for a in record.addresses] != link.addresses \
                    or (record.fingerprint, record.cert) != (link.fingerprint, link.cert):
                link.cancel.cancel()
                del self.links[name]
            elif (record.state == "outofuse") != (link.state == "outofuse"):
                link.state = record.state
                link.poke()
        for name, record in records.items():
            if name not in self.links:
                link = self.links[name] = PeerLink(record, self.me, self.catalog,
                                                   self.on_online, self.on_pinned)
                nursery.start_soon(link.run, name=f"peer {name}")
        self._discovered()

    def found(self, found: Found) -> None:
        """Discovery heard a home announce itself (syncd/discovery.py)."""
        self.heard[found.service] = found
        self._discovered()

    def lost(self, service: str) -> None:
        """A home announced earlier said goodbye."""
        if self.heard.pop(service, None) is not None:
            self._discovered()

    def _discovered(self) -> None:
        """Give each peer the addresses its device was heard at. A device is known by
        its certificate's fingerprint, the one pinned or given with --fingerprint, and
        its device id once learnt, never by an address; TLS checks the pin as ever."""
        for link in self:
            urls = [url for f in self.heard.values() if f.fingerprint == link.fingerprint
                    and link.device in (None, f.device) for url in f.urls]
            link.found_at(urls)

    def holders(self) -> list[PeerLink]:
        """Peers to ask for content, the ones known to answer first."""
        usable = [p for p in self if p.state != "outofuse"]
        return sorted(usable, key=lambda p: p.state != "online")

    def online(self) -> list[PeerLink]:
        return [p for p in self if p.state == "online"]

    def poke_all(self) -> None:
        """Something changed here: every loop pushes what its peer lacks."""
        for link in self:
            link.poke()

    def greeted(self, device: str, name: str) -> None:
        """A peer said hello: it is back, so send it what waits for it now. A hello under
        a peer's name from another device (its home made again, which this loop may not
        have noticed yet) makes that peer's loop say hello to it at once: it learns, and
        says, that the device is not the one pinned, not after a back-off or keep-alive."""
        for link in self:
            if link.device == device:
                link.heard_from()
            elif link.name == name:
                link.stale = True
                link.heard_from()

    def arrived(self, device: str) -> None:
        """An admitted request came from this device (a push, a fetch, ...): one whose loop
        here thinks it offline is evidently back, so its loop wakes now. Loops of peers
        online are left alone: they push as changes come, and a request is no news."""
        for link in self:
            if link.device == device and link.state != "online":
                link.heard_from()

    def confirmed(self) -> int:
        """The sequence number up to which every peer in use has confirmed our changes."""
        return min((link.cursor for link in self if link.state != "outofuse"),
                   default=self.catalog.seq)
