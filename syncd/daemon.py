"""The sync daemon: the peer API server, one loop per peer, the fetcher and the control
socket, in the nursery of the serving process (DESIGN, "The shape").

It runs beside `pyfuse3.main` in one trio run (or alone, for `syncd serve`), on the trio
thread that makes every SQLite call of the process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as serve_http

from syncd import auth, identity
from syncd.api import Signed, Unproven, build_app
from syncd.cache import Evictor
from syncd.discovery import Discovery
from syncd.fetcher import Fetcher
from syncd.home import Home
from syncd.index import tombstones, versions
from syncd.index.cache import Usage
from syncd.index.catalog import RECEIVE_ONLY, SEND_ONLY, Catalog, local_only
from syncd.index.effects import Effects
from syncd.index.faults import crash_point
from syncd.index.history import prune_step
from syncd.index.importing import Entry, Importer
from syncd.index.merge import Merger
from syncd.index.peers import list_peers
from syncd.index.states import BATCH_DATA, changes_since, state_of
from syncd.index.unheld import drop_unheld, unheld_copies, unheld_file
from syncd.peerlink import Me, NotHeld, PeerError
from syncd.peerset import PeerSet
from syncd.relay import sealing
from syncd.relaylink import RelayLink, RelaySet
from syncd.settings import Live, SettingError, on_disk_of
from syncd.ui import StatusPage

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise

KEEPALIVE_SERVER = 20.0  # seconds; clients drop idle connections sooner (peerlink.py)
# Replaced chunks are served this long after every peer in use confirmed the change that
# replaced them (a fetch may be on its way), and at most this long for one that does not.
KEEP_REPLACED_MIN = 2.0  # seconds
KEEP_REPLACED_MAX = 600.0
PRUNE_EVERY = 3600.0  # seconds between prunings of the history older than log_keep_days
LAST_UPLOAD = 10.0  # seconds the serving process gives reachable relays at its end
EXPIRE_VERSIONS_EVERY = 60.0  # seconds between expiries of old versions (index/versions.py)
# seconds between tombstone collections (index/tombstones.py), or a quarter of
# tombstone_keep_days when that is shorter (a test's), but at least a second
COLLECT_EVERY = 60.0


class Daemon:
    def __init__(self, home: Home, catalog: Catalog,
                 changes: trio.MemoryReceiveChannel[None],
                 on_effects: Callable[[Effects], None] | None = None, mirror: bool = False,
                 live: Live | None = None, fuse_requests: Mapping[str, int] | None = None,
                 mountpoint: str | None = None, usage: Usage | None = None):
        """`changes` says that something was stamped here (Catalog's on_change sends on
        it): the peer loops then push. `on_effects` takes what peers' changes did to the
        index, for the mount (kernel caches, purges); without a mount, inodes left without
        names are purged here. `live` applies settings changed while it runs (the
        control op "config"); the daemon registers its own there. `fuse_requests` is the
        mount's count of requests by operation (the metrics), read only; `mountpoint`
        where it is mounted (the status page); `usage` the mount's opens and last uses
        (the cache's eviction, syncd/cache.py)."""
        self.home = home
        self.catalog = catalog
        self.store = catalog.store
        config = home.config()
        self.name: str = config["name"]
        self.listen: str = config["listen"]
        self.device = catalog.device
        self.identity = home.device_identity(self.device)
        self.me = Me(home.cluster_key(), self.device, self.name, self.identity)
        self.trust = identity.TrustStore(self.identity)
        self.admitted: dict[str, str] = {}  # fingerprint -> device of each pinned peer
        self.merger = Merger(catalog)
        self.changes = changes
        self._changed = catalog.on_change  # what sends on `changes` (_wake_on_change)
        self.peers = PeerSet(self.me, catalog, on_online=self._recheck_unheld,
                             on_pinned=self._pins_changed)
        self.fetcher = Fetcher(catalog, self.peers, self.refresh)
        # Announce this home on the LAN and hear its peers there (setting `discovery`).
        self.discovery = Discovery(self.device, self.name, self.identity.fingerprint,
                                   self.listen, self.peers.found, self.peers.lost) \
            if config["discovery"] else None
        self._relay_keys: sealing.Keys | None = None  # made again when the key changes
        self.relays = RelaySet(catalog, self._relay_link)
        self.fetcher.relays = self.relays
        self.on_effects = on_effects or self._purge_orphans
        self.mirror = mirror  # keep every file's content here (syncd serve --mirror)
        # Files smaller than this are fetched as soon as they are announced, many per
        # request (0: every file waits for its first open).
        self.prefetch_below = int(config["prefetch_below"])
        self.log_keep_days = home.log_keep_days()  # `syncd log`'s history (index/history.py)
        self.live = live or Live()
        self.live.on("prefetch_below", lambda v: setattr(self, "prefetch_below", v))
        self.live.on("log_keep_days", lambda v: setattr(self, "log_keep_days", v))
        # Old versions of files: kept this many days, within this size or share of the
        # disk (index/versions.py). A change applies at once.
        self.versions_keep_days = float(config["versions_keep_days"])
        self.versions_max = config["versions_max"]
        for key in ("versions_keep_days", "versions_max"):
            self.live.on(key, functools.partial(self._versions_setting, key))
        # The mode (set on the catalog at the start, syncd/serving.py) applies at once.
        self.live.on("mode", self._set_mode)
        # Days after which a relay member that does not read is lost (syncd/relaylink.py).
        self.relay_member_days = float(config["relay_member_days"])
        self.live.on("relay_member_days", lambda v: setattr(self, "relay_member_days", v))
        # Days a delete's tombstone is kept once every peer and relay member has it.
        self.tombstone_keep_days = float(config["tombstone_keep_days"])
        self.live.on("tombstone_keep_days",
                     lambda v: setattr(self, "tombstone_keep_days", v))
        # Old versions are kept from the start on (syncd/starting.py, prepare) and
        # expired here (_expire_versions).
        self._small_send, self._small_receive = trio.open_memory_channel[list[int]](math.inf)
        self._nursery: trio.Nursery | None = None
        self._holding: set[bytes] = set()  # chunks being fetched because a peer asked
        self.evictor = Evictor(catalog, self.peers, usage or Usage(), config["cache_limit"],
                               int(config["min_copies"]), mirror)
        self.live.on("cache_limit", self.evictor.set_limit)
        self.live.on("min_copies", self.evictor.set_min_copies)
        self.ui_listen: str = config["ui_listen"]
        self.page = StatusPage(self, self.ui_listen, mountpoint)
        self.fuse_requests = fuse_requests if fuse_requests is not None else {}

    # -- what the API serves (syncd/api.py, PeerService)

    def hello(self, device: str, name: str, fingerprint: str, server: str | None) -> dict:
        """Answer a hello naming both certificates of the connection as seen here
        (docs/protocol.md, "Identity and TLS"); PermissionError when the caller saw
        another certificate than ours (a relay), or shows one not its device's, or none
        for a device whose certificate is pinned here (only it speaks for that device)."""
        client = identity.CLIENT.get()
        if client is None and device in self.admitted.values():
            raise Unproven(f"device {device}'s certificate is pinned here: a hello naming "
                           "it must present that certificate, and this connection presents "
                           "none")
        if server is not None and server != self.identity.fingerprint:
            raise PermissionError(f"this machine's certificate is {self.identity.fingerprint}"
                                  f", not {server}: something between us terminates TLS")
        if client is not None and (client != fingerprint or self.admitted[client] != device):
            raise PermissionError("the hello names another certificate or device than the "
                                  "one this connection presented")
        self.peers.greeted(device, name)
        return {"device": self.device, "name": self.name, "seq": self.catalog.seq,
                "accepts": ["zstd", "inline", "xattr"],
                "fingerprint": self.identity.fingerprint, "client": client}

    def admit(self, method: str, path: str) -> str | None:
        """Who may ask what (DESIGN rule 7): a client whose certificate TLS checked
        against the pins, while its peer is still pinned here; one without a certificate
        may only say hello (the first hello of trust on first use). Pins checked at each
        request: a peer removed meanwhile is refused on a connection it opened before. A
        request admitted is a sign of life: the caller's loop here wakes if it waits."""
        client = identity.CLIENT.get()
        if client is None:
            if (method, path) == ("POST", "/v1/hello"):
                return None
            return ("this connection presents no certificate: only hello is answered "
                    "without one")
        if client not in self.admitted:
            return (f"the certificate {client} is not admitted here: its device was "
                    "removed with 'syncd peer remove'; add it again with 'syncd peer add'")
        self.peers.arrived(self.admitted[client])
        return None

    def caller(self) -> str | None:
        """The device whose pinned certificate this request's connection presented; None
        without one (or one no longer pinned: admit refuses those)."""
        client = identity.CLIENT.get()
        return None if client is None else self.admitted.get(client)

    def take_key(self, key: bytes) -> None:
        """The cluster's key is this one from now on (syncd cluster-key --rotate here or
        on a peer that admits us): in HOME/cluster.key, for requests, answers and checks."""
        self.home.set_cluster_key(key)
        self.me.key = key
        self._relay_keys = None
        self.app.set_key(key)
        log.info("the cluster key was changed")

    async def _rotate_op(self, request: dict) -> dict:
        """`syncd cluster-key --rotate`: a new cluster key, handed over mutual TLS to each
        peer pinned here (the ones this machine admits), then taken here. A device that
        did not get it can no longer prove membership to those that have it."""
        new = auth.new_key()
        handed, missed = [], {}
        for link in sorted(self.peers, key=lambda link: link.name):
            if link.cert is None:
                missed[link.name] = "its certificate is not pinned here yet"
                continue
            try:
                await link.call("POST", "/v1/cluster-key", {"key": new.hex()})
                handed.append(link.name)
            except PeerError as e:
                missed[link.name] = str(e)
        self.take_key(new)
        for link in self.peers:
            link.stale = True  # say hello with the new key
            link.poke()
        return {"ok": True, "handed": handed, "missed": missed}

    def _pins_changed(self) -> None:
        """The peers' certificates changed (pinned, added, removed): trust exactly the
        pinned ones from the next connection and the next request on."""
        pinned = [p for p in list_peers(self.catalog.db) if p.cert is not None]
        self.admitted = {p.fingerprint: p.device for p in pinned}
        self.trust.set([p.cert for p in pinned])

    def relay_keys(self) -> sealing.Keys:
        if self._relay_keys is None:
            self._relay_keys = sealing.Keys([self.home.cluster_key(),
                                             *self.home.old_cluster_keys()])
        return self._relay_keys

    def _relay_link(self, record) -> RelayLink:
        return RelayLink(record, self.catalog, self.relay_keys, self.identity.cert,
                         sealing.signing_key(self.identity), self.receive,
                         lambda: self.relay_member_days)

    def receive(self, device: str, states: list[dict]) -> int:
        effects = self.merger.apply(states, device)
        crash_point("receive:after-index")  # applied, not yet confirmed to the sender
        self.on_effects(effects)
        self._fetch_ahead(effects.missing)
        self.check_unheld(effects.unheld)
        return len(states)

    # -- files nobody can read (soak bug 4)

    def release_held(self) -> None:
        """The ignore rules changed: apply what peers sent that they no longer ignore."""
        self.on_effects(self.merger.release_held())

    def _set_mode(self, mode: str) -> None:
        """Receive-only no more: what was made or changed here is sent (a rescan shares
        it, then releases what peers sent meanwhile). Send-only no more: what was held
        back applies now, by rule 3."""
        self.catalog.set_mode(mode)
        self.release_held()

    async def _revert_op(self, request: dict) -> dict:
        """`syncd revert [PATH]`: the group's state of every node made or changed here,
        asked of the peers; nothing changes unless each node the group knows has one."""
        under = self._node_for(request, "revert", RECEIVE_ONLY)
        if isinstance(under, dict):
            return under
        every = self.catalog.edits_here(under)
        edits = [(n, p) for n, p in every if not local_only(n)]
        states = []
        for node, where in edits:
            found = await self._group_state(node)
            if isinstance(found, str):
                return {"ok": False, "unreachable": True,
                        "error": f"the group's version of /{where} is not known here: "
                                 f"{found}; nothing reverted"}
            states.append(found)
        self.on_effects(self.merger.revert(states, under))
        return {"ok": True, "reverted": len(every)}

    async def _group_state(self, node: str) -> tuple[dict, str] | str:
        """A node's state as a peer that answers has it, and that peer's device; else
        why there is none (no peer answered, or those that did do not know the node)."""
        failed, unknown = [], []
        for link in self.peers.holders():
            if link.device is None:
                continue
            try:
                state = await link.get_node(node)
            except PeerError as e:
                log.info("%s did not give node %s: %s", link.name, node, e)
                failed.append(link.name)
                continue
            if state is not None:
                return state, link.device
            unknown.append(link.name)
        if unknown:
            return f"{', '.join(unknown)} {'does' if len(unknown) == 1 else 'do'} not know it"
        if failed:
            return f"{', '.join(failed)} did not answer"
        return "no peer is online"

    async def _override_op(self, request: dict) -> dict:
        """`syncd override [PATH]`: this machine's versions win over those held back."""
        node = self._node_for(request, "override", SEND_ONLY)
        if isinstance(node, dict):
            return node
        return {"ok": True, "overridden": self.merger.override(node)}

    def _node_for(self, request: dict, command: str, mode: str) -> str | dict:
        """The node at the request's path for a command of `mode` only; else the error
        answer to give."""
        if self.catalog.mode != mode:
            return {"ok": False, "error": f"this machine is {self.catalog.mode}: {command} is "
                                          f"for a {mode} one (syncd mode {mode})"}
        path = request.get("path")
        node = self.catalog.node_at(path) if isinstance(path, str) else None
        if node is None:
            return {"ok": False, "error": f"/{path} is not in the share here"}
        return node

    def _recheck_unheld(self) -> None:
        """A peer answers again: it may hold what nobody answered for before."""
        self.check_unheld(unheld_copies(self.catalog))

    def check_unheld(self, nodes) -> None:
        if nodes and self._nursery is not None:
            self._nursery.start_soon(self.drop_unheld, sorted(nodes))

    async def drop_unheld(self, nodes: list[str]) -> bool:
        """Drop the files among `nodes` that nobody can ever read: a chunk of theirs is
        missing here, and every peer answers that it does not hold it, the content's
        maker included (it replaced or deleted that version before anyone fetched it: a
        conflict copy made from metadata alone, a file a chmod or a move brought back from
        its maker's delete). A peer that holds the chunk serves it and the file stays.
        True when one was dropped."""
        dropped = False
        for node in nodes:
            found = unheld_file(self.catalog, node)
            if found is None or await self._someone_may_hold(*found):
                continue
            effects = drop_unheld(self.catalog, node)
            if effects is not None:
                log.info("dropped %s: no peer holds its content, its maker included",
                         node)
                self.on_effects(effects)
                dropped = True
        return dropped

    async def _someone_may_hold(self, maker: str, digest: bytes) -> bool:
        """Unless every peer, the version's maker among them, answers that it does not
        hold the chunk, someone may: keep the file (and the chunk, if it came)."""
        links = list(self.peers)
        if not any(link.device == maker for link in links) and maker != self.device:
            return True
        for link in links:
            if link.state == "outofuse" or link.device is None:
                return True
            try:
                data, hashed = await link.get_chunk(digest)
            except NotHeld:
                continue
            except PeerError:
                return True
            with contextlib.suppress(OSError):  # a full disk: the file stays anyway
                await self.fetcher.install_all({digest: (data, hashed)})
            return True
        return False

    def _fetch_ahead(self, inos) -> None:
        wanted = [ino for ino in inos if self.mirror or self.catalog.pinned(ino)]
        if wanted:
            self._nursery.start_soon(self._prefetch, wanted)
        small = self._smaller_than([i for i in inos if i not in wanted], self.prefetch_below)
        if small:
            self._small_send.send_nowait(small)

    def _smaller_than(self, inos: list[int], size: int) -> list[int]:
        if not inos or size <= 0:
            return []
        return self.catalog.smaller_than(inos, size)

    async def _prefetch_small(self) -> None:
        async for inos in self._small_receive:
            while True:  # take everything queued meanwhile into one round
                try:
                    inos += self._small_receive.receive_nowait()
                except trio.WouldBlock:
                    break
            await self.fetcher.prefetch_small(inos)

    def changes_since(self, since: int, limit: int, inline: bool,
                      xattr: bool = False) -> tuple[list[dict], int]:
        return changes_since(self.catalog.conn, since, limit,
                             data_budget=BATCH_DATA if inline else 0, xattrs=xattr)

    def state_of(self, node: str, inline: bool, xattr: bool = False) -> dict | None:
        if self.catalog.is_local_only(node):  # its data here is not that of its versions
            return None
        return state_of(self.catalog.conn, node, inline, xattrs=xattr)

    async def refresh(self, ino: int) -> bool:
        """No peer that answered holds the content of inode `ino`: its holder may have
        replaced that version before the newer state reached us (soak bug 7). Ask the
        peers for the node's current state now, and for that of the node a conflict copy
        was made of; True when that gave it another inode. A file nobody holds is
        dropped (True too)."""
        nodes = self.catalog.nodes_of(ino)
        if not nodes:  # a peer's change took it from its name meanwhile (rule 6)
            log.info("inode %d lost its name while it was being fetched", ino)
            return True
        originals = self.catalog.originals_of(nodes)
        for link in self.peers.holders():
            if link.device is None:  # never answered a hello: nothing it says is applied
                continue
            for node in nodes + originals:
                try:
                    state = await link.get_node(node)
                except PeerError as e:
                    log.debug("asking %s for node %s: %s", link.name, node, e)
                    continue
                if state is not None:
                    self.receive(link.device, [state])
        newer = self.catalog.left_inode(nodes, ino)
        log.info("asked the peers for the current state of %s (inode %d): %s", nodes, ino,
                 "it has a newer version" if newer else "no newer version")
        if newer:
            return True
        # A file nobody can read is dropped (here or by a check already under way): the
        # open then finds no file.
        await self.drop_unheld(nodes)
        return self.catalog.left_inode(nodes, ino)

    def read_inline(self, digests: list[bytes]) -> dict[bytes, bytes]:
        return self.catalog.inline.get(digests)

    def read_chunk(self, digest: bytes) -> bytes | None:
        return self.store.read_served(digest)

    def hold(self, digests: list[bytes]) -> int:
        missing = self.catalog.not_held(digests)
        fresh = [d for d in missing if d not in self._holding]
        if fresh:
            self._holding.update(fresh)
            self._nursery.start_soon(self._hold_fetch, fresh)
        return len(missing)

    def lease(self, digests: list[bytes], seconds: float) -> list[bytes]:
        return self.evictor.lease(digests, seconds)

    async def _hold_fetch(self, digests: list[bytes]) -> None:
        try:
            await self.fetcher.fetch_chunks(digests)
        finally:
            self._holding.difference_update(digests)

    async def copies(self, wanted: int, upto: int, timeout: float) -> dict:
        """`syncd wait --copies N`: ask online peers to hold the content of every file
        changed here up to sequence number `upto` until `wanted` of them hold all of it."""
        digests = self.catalog.chunks_made_here(upto)
        left: dict[str, int] = {}
        with trio.move_on_after(timeout):
            while True:
                holders = 0
                for link in self.peers.online():
                    try:
                        left[link.name] = await link.hold(digests)
                    except PeerError as e:
                        left[link.name] = -1
                        log.info("wait --copies: %s", e)
                    holders += left[link.name] == 0
                if holders >= wanted:
                    return {"ok": True, "holders": holders, "chunks": len(digests)}
                await trio.sleep(0.2)
        behind = ", ".join(f"{n} ({'no answer' if m < 0 else f'{m} chunk(s) missing'})"
                           for n, m in sorted(left.items()))
        return {"ok": False, "error": f"fewer than {wanted} peer(s) hold every chunk made "
                f"here; {behind or 'no peer online'}"}

    # -- peers

    # -- content held ahead of time: pins and mirrors

    async def _prefetch(self, inos: list[int]) -> None:
        for ino in inos:
            try:
                await self.fetcher.ensure_local(ino)
            except OSError as e:
                log.warning("could not fetch ahead inode %d: %s", ino, e)

    def resolve(self, path: str) -> str:
        """The node at a share path ('' is the root), or OSError(ENOENT)."""
        node = self.catalog.node_at(path)
        if node is None:
            raise FileNotFoundError(errno.ENOENT, f"no {path!r} in the share")
        return node

    async def fetch_tree(self, path: str) -> dict:
        """`syncd fetch`: every file under `path` here and verified. Local chunks are
        re-hashed; a damaged one is dropped and fetched again."""
        inos = self.catalog.files_under(self.resolve(path))
        damaged, failed, replaced = 0, [], set()
        for ino in inos:
            for digest in self.catalog.chunks(ino).digests():
                if self.store.has(digest):
                    bad = not await trio.to_thread.run_sync(self.store.verify, digest)
                else:  # or held inline: small, so checked here with no thread hop
                    bad = self.catalog.damaged_inline(digest)
                if bad:
                    log.warning("chunk %s in the store is damaged: fetching it again",
                                digest.hex()[:12])
                    self.catalog.drop_damaged_chunk(digest)
                    damaged += 1
            nodes = self.catalog.nodes_of(ino)
            try:
                await self.fetcher.ensure_local(ino)
            except OSError as e:
                if e.errno != errno.ESTALE:
                    failed.append(self.catalog.display_name(ino))
                    continue
                replaced.add(ino)  # a newer version came meanwhile: fetch that instead
                inos += self.catalog.live_files_of(nodes)
        inos = [ino for ino in inos if ino not in replaced]
        size = self.catalog.total_size(inos)
        return {"ok": not failed, "files": len(inos), "bytes": size, "damaged": damaged,
                "failed": failed[:100],
                "error": f"{len(failed)} file(s) have no reachable holder" if failed else None}

    # -- running

    def _purge_orphans(self, effects: Effects) -> None:
        if effects.orphans:  # those left without names
            self.catalog.retire(self.catalog.purge_inodes(list(effects.orphans)))

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        config = _TLSConfig(self.trust)
        config.bind = [self.listen]
        config.accesslog = None
        config.keep_alive_timeout = KEEPALIVE_SERVER
        config.loglevel = "WARNING"
        app = self.app = Signed(build_app(self), self.me.key, self.admit)
        self._pins_changed()
        async with trio.open_nursery() as nursery:
            self._nursery = self.fetcher.nursery = nursery
            try:
                await nursery.start(functools.partial(
                    serve_http, app, config, shutdown_trigger=trio.sleep_forever))
            except OSError as e:
                raise OSError(e.errno, f"cannot listen on {self.listen} for peers: "
                                       f"{e.strerror}") from None
            await nursery.start(self.page.run, self.fuse_requests)
            self.peers.load(nursery)
            if self.discovery is not None:
                nursery.start_soon(self.discovery.run)
            self.relays.load(nursery)
            self._wake_on_change()
            nursery.start_soon(self._push_on_change)
            nursery.start_soon(self._prefetch_small)
            for what, one_pass, every in (
                    ("expiring replaced chunks", self._expire_replaced,
                     lambda: KEEP_REPLACED_MIN / 2),
                    ("pruning the history", self._prune_history, lambda: PRUNE_EVERY),
                    ("expiring old versions", self._expire_versions,
                     lambda: EXPIRE_VERSIONS_EVERY),
                    ("collecting tombstones", self._collect_tombstones, self._collect_every)):
                nursery.start_soon(self._housekeeping, what, one_pass, every)
            nursery.start_soon(self.evictor.run)
            self._fetch_ahead(self.catalog.not_local())
            log.info("%s (%s) listening for peers on %s", self.name, self.device[:7],
                     self.listen)
            task_status.started()

    def control_ops(self) -> dict:
        """What the control socket answers (docs/cli.md, "The control socket")."""
        return {"reload-peers": self._reload_peers, "fetch": self._fetch_op,
                "pin": self._pin_op, "transfers": self._transfers_op,
                "copies": self._copies_op, "import": self._import_op,
                "peers": self._peers_op, "ui": self._ui_op, "cache": self._cache_op,
                "restore": self._restore_op, "override": self._override_op,
                "revert": self._revert_op, "config": self._config_op,
                "rotate-key": self._rotate_op, "reload-relays": self._reload_relays,
                "relays": self._relays_op}

    def _wake_on_change(self) -> None:
        """A commit wakes the push loop only while there is a peer or a relay to push to;
        with none it calls nothing. One added later needs no wake for what was committed
        meanwhile: its loop starts by sending everything past its cursor."""
        wanted = bool(self.peers.links or self.relays.links)
        self.catalog.on_change = self._changed if wanted else _nothing

    async def _push_on_change(self) -> None:
        async for _ in self.changes:
            self.peers.poke_all()
            self.relays.poke_all()

    def _versions_setting(self, key: str, value: object) -> None:
        setattr(self, key, value)
        self.catalog.keeps_versions = self._versions_limit() > 0
        self.expire_versions()

    def _versions_limit(self) -> int:
        """versions_max in bytes (0: keep none, not even for a moment)."""
        return on_disk_of(self.store.root, self.versions_max)

    def expire_versions(self) -> None:
        """Drop the old versions older than versions_keep_days, then the oldest beyond
        versions_max."""
        limit = self._versions_limit()
        gone = versions.expire(self.catalog, self.versions_keep_days * 86400, limit)
        if gone:
            log.info("dropped %d old version(s): older than %g day(s) or beyond %d bytes",
                     gone, self.versions_keep_days, limit)

    async def _expire_versions(self) -> None:
        self.expire_versions()

    async def _restore_op(self, request: dict) -> dict:
        """`syncd restore`: an old version back as a new one. Content not here (a chunk
        found damaged since) is fetched from a peer first."""
        try:
            path, to, at = str(request["path"]), request.get("to"), request.get("at")
            to, at = None if to is None else str(to), None if at is None else int(at)
            uid, gid = int(request["uid"]), int(request["gid"])
            version = versions.choose(self.catalog, path, at)
            absent = versions.check_restorable(self.catalog, version)
            if absent:
                try:
                    await self.fetcher.fetch_chunks_of(absent, f"/{path}")
                except OSError as e:
                    return {"ok": False, "error": "the content of that version is not "
                                                  f"here, and no peer holds it: {e.strerror}"}
            effects = versions.restore(self.catalog, version, to, uid, gid)
        except (KeyError, TypeError, ValueError) as e:
            return {"ok": False, "error": f"malformed restore request: {e}"}
        except (versions.RestoreError, OSError) as e:
            return {"ok": False, "error": str(e)}
        self.on_effects(effects)
        return {"ok": True, "version": version._asdict()}

    async def _housekeeping(self, what: str, one_pass: Callable[[], Awaitable[None]],
                            every: Callable[[], float]) -> None:
        """one_pass() at start, then every every() seconds. A pass that fails on the
        index or the store (a command holding the index past busy_timeout, a full disk)
        is logged and tried again at the next: housekeeping never ends the mount."""
        while True:
            try:
                await one_pass()
            except (sqlite3.OperationalError, OSError) as e:
                log.warning("%s failed, to be tried again in %g s: %s", what, every(), e)
            await trio.sleep(every())

    async def _expire_replaced(self) -> None:
        self.catalog.expire_replaced(self.peers.confirmed(), KEEP_REPLACED_MIN,
                                     KEEP_REPLACED_MAX)

    async def _prune_history(self) -> None:
        """Forget the history older than log_keep_days, a short transaction at a time
        (index/history.py keeps what sync reads)."""
        before = int(time.time() - self.log_keep_days * 86400)
        after: int | None = 0
        pruned = 0
        while after is not None:
            deleted, after = prune_step(self.catalog.db, before, after)
            pruned += deleted
            await trio.sleep(0)
        if pruned:
            log.info("pruned %d journal row(s) older than %g day(s)", pruned,
                     self.log_keep_days)

    async def _collect_tombstones(self) -> None:
        """Record how far every peer and relay member has our changes, and drop the
        tombstones they all had tombstone_keep_days ago (and that `syncd log` no longer
        shows), a short transaction at a time."""
        now = int(time.time())
        tombstones.observe(self.catalog, now)
        upto = tombstones.passed(self.catalog, int(now - self.tombstone_keep_days * 86400))
        log_before = int(now - self.log_keep_days * 86400)
        after: int | None = 0
        dropped = 0
        while after is not None and upto:
            gone, after = tombstones.collect_step(self.catalog, upto, log_before, after)
            dropped += gone
            await trio.sleep(0)
        if dropped:
            log.info("dropped %d tombstone(s) every peer and relay member had over "
                     "%g day(s) ago", dropped, self.tombstone_keep_days)

    def _collect_every(self) -> float:
        return max(1.0, min(COLLECT_EVERY, self.tombstone_keep_days * 21600))

    async def _fetch_op(self, request: dict) -> dict:
        try:
            return await self.fetch_tree(str(request.get("path", "")))
        except FileNotFoundError as e:
            return {"ok": False, "error": e.strerror}

    async def _import_op(self, request: dict) -> dict:
        """Apply one batch of `syncd import` (index/importing.py): its chunks are staged
        in the store by the command, which read the source."""
        try:
            entries = [Entry.from_dict(e) for e in request["entries"]]
            importer = Importer(self.catalog, str(request["into"]), int(request["uid"]),
                                int(request["gid"]))
            outcome, effects = importer.apply(entries)
        except (KeyError, TypeError, ValueError) as e:
            return {"ok": False, "error": f"malformed import batch: {e}"}
        except (OSError, sqlite3.Error) as e:
            return {"ok": False, "error": str(e)}
        self.on_effects(effects)
        return {"ok": True, **dataclasses.asdict(outcome)}

    async def _pin_op(self, request: dict) -> dict:
        """Pin or unpin a subtree (a local fact, never synced); a pin fetches its
        content now, in the background."""
        try:
            node = self.resolve(str(request.get("path", "")))
        except FileNotFoundError as e:
            return {"ok": False, "error": e.strerror}
        pin = bool(request.get("pin"))
        self.catalog.set_pin(node, pin)
        if pin:
            self._nursery.start_soon(self._prefetch, self.catalog.files_under(node))
        return {"ok": True}

    async def _copies_op(self, request: dict) -> dict:
        return await self.copies(int(request["copies"]), int(request["upto"]),
                                 float(request.get("seconds") or 3600))

    def transfers(self) -> dict:
        """What is being fetched right now (syncd status's `transfers`)."""
        return {"fetching": sorted(s.what for s in self.fetcher.streams.values()),
                "arriving": sorted((s.progress() for s in self.fetcher.streams.values()),
                                   key=lambda p: p["name"]),
                "prefetching": self.fetcher.prefetching}

    def cache(self) -> dict:
        """The cache's use against its limit (syncd status's `cache`), as last measured."""
        return self.evictor.status()

    def live_peers(self) -> dict[str, dict]:
        """Each peer as its loop sees it now (syncd status): the index has its state as
        of the last change, and its last answer as of the last push or keep-alive."""
        return {link.name: {"state": link.state, "last_seen": link.last_seen,
                            "last_error": link.last_error, "url": link.url,
                            "addresses": link.addresses + link.discovered,
                            "discovered": link.discovered}
                for link in self.peers}

    async def _transfers_op(self, request: dict) -> dict:
        return {"ok": True, **self.transfers()}

    async def _cache_op(self, request: dict) -> dict:
        """The evictor's rounds, for syncd status (which measures the rest itself)."""
        c = self.evictor.status()
        return {"ok": True, "rounds": c["rounds"], "in_round": c["in_round"]}

    async def _peers_op(self, request: dict) -> dict:
        return {"peers": self.live_peers()}

    async def _ui_op(self, request: dict) -> dict:
        """Where the status page listens (syncd ui adds the token)."""
        return {"url": self.page.url}

    async def _config_op(self, request: dict) -> dict:
        """A live setting changed in config.json (syncd config set): apply it now."""
        try:
            applied = self.live.apply(str(request.get("key")), request.get("value"))
        except SettingError as e:
            return {"ok": False, "error": str(e)}
        log.info("setting %s = %r %s", request.get("key"), request.get("value"),
                 "applied" if applied else "noted (nothing here uses it)")
        return {"ok": True, "applied": applied}

    async def _reload_relays(self, request: dict) -> dict:
        self.relays.load(self._nursery)
        self._wake_on_change()
        return {"ok": True, "relays": sorted(self.relays.links)}

    def live_relays(self) -> dict[str, dict]:
        """Each relay as its loop sees it now (syncd status)."""
        return {link.name: {"state": link.state, "last_seen": link.last_seen,
                            "last_error": link.last_error, "cursor": link.cursor,
                            "stored_bytes": link.stored_bytes, "kept_for": link.kept_for()}
                for link in self.relays}

    async def last_upload(self, seconds: float = LAST_UPLOAD) -> None:
        """Before the process ends (umount, a signal): give each reachable relay up to
        `seconds` to store what is pending for it; log what is left."""
        self.relays.poke_all()
        with trio.move_on_after(seconds):
            while any(link.state == "online" and link.pending().changes
                      for link in self.relays):
                await trio.sleep(0.05)
        for link in self.relays:
            left = link.pending().changes
            if left:
                log.warning("relay %s: %d change(s) made here are not stored there (%s); "
                            "they go at the next exchange with it", link.name, left,
                            link.last_error or link.state)

    async def _relays_op(self, request: dict) -> dict:
        return {"relays": self.live_relays()}

    async def _reload_peers(self, request: dict) -> dict:
        self._pins_changed()
        self.peers.load(self._nursery)
        self._wake_on_change()
        return {"ok": True, "peers": sorted(self.peers.links)}


def _nothing() -> None:
    """A commit's call with no peer and no relay to tell (Daemon._wake_on_change)."""


class _TLSConfig(Config):
    """hypercorn's settings, listening with the trust store's context (identity.py)."""

    def __init__(self, trust: identity.TrustStore):
        super().__init__()
        self.trust = trust
        self.certfile = self.keyfile = str(trust.identity.path)  # TLS on

    def create_ssl_context(self):
        return self.trust.listening
