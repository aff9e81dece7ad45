"""Discovery on the LAN with mDNS/DNS-SD (docs/protocol.md, "Discovery on the LAN").

A serving home announces itself as a `_syncd._tcp.local.` service whose TXT names its
device id and certificate fingerprint, on the addresses it listens on, and browses for
the others. What is found is advisory: a known peer found here is tried at the address
found too (matched by device id and fingerprint, never by address), and TLS with the
pinned certificate decides who answers; an unknown device is only listed
(`syncd peer discover`).

zeroconf's synchronous `Zeroconf` runs its own thread (an asyncio loop of its own), and
its ServiceBrowser another that calls our handler: nothing of zeroconf runs on the trio
thread. What is found reaches trio through its token (`Discovery.run`); starting and
stopping, which block for the announcements and the goodbyes, run on worker threads.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio
from zeroconf import (
    InterfaceChoice,
    IPVersion,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
    get_all_addresses,
)

log = logging.getLogger(__name__)

SERVICE = "_syncd._tcp.local."
RESOLVE_MS = 3000  # how long a service's details are waited for once it is seen
STOP_SECONDS = 5.0  # the most a stop may take (goodbyes, threads); a mount must unmount

_DEVICE = re.compile(r"[0-9a-f]{32}")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # settings.device_name: what a hello accepts


@dataclass(frozen=True)
class Found:
    """A home seen on the LAN, as it announced itself: nothing in it is proven."""

    service: str  # the DNS-SD instance name, which its goodbye names
    name: str | None  # its `name` setting, when it is a valid one
    host: str  # the host name its service points to
    device: str
    fingerprint: str
    urls: tuple[str, ...]  # https://HOST:PORT at each address announced


def _found(info: ServiceInfo) -> Found | None:
    """What a resolved service says, or None when it is not a syncd home's announcement
    (the TXT keys are missing or malformed): LAN input is checked like any other."""
    props = info.decoded_properties
    device, fingerprint = props.get("device") or "", props.get("fingerprint") or ""
    if not _DEVICE.fullmatch(device) or not _FINGERPRINT.fullmatch(fingerprint) or \
            not info.port:
        return None
    name = props.get("name")
    host = (info.server or "").rstrip(".")
    addresses = [a for a in info.parsed_addresses(IPVersion.V4Only)
                 if not ipaddress.ip_address(a).is_link_local]
    if not addresses:
        return None
    return Found(info.name, name if name and _NAME.fullmatch(name) else None,
                 host if _NAME.fullmatch(host) else "-", device, fingerprint,
                 tuple(f"https://{a}:{info.port}" for a in addresses))


def listen_addresses(listen: str) -> list[str]:
    """The IPv4 addresses a server bound to `listen` (HOST:PORT) answers on, loopback
    left out: none when it listens on loopback only (nobody on the LAN could call it).
    Discovery speaks mDNS over IPv4 only (a wildcard `[::]` takes IPv4 calls too)."""
    host = listen.rpartition(":")[0].strip("[]")
    if host in ("0.0.0.0", "::", ""):
        found = get_all_addresses()
    else:
        try:
            found = [str(a[4][0]) for a in socket.getaddrinfo(host, None, socket.AF_INET)]
        except OSError:  # an IPv6 address, or a name that does not resolve to IPv4
            found = []
    return sorted({a for a in found if not ipaddress.ip_address(a).is_loopback
                   and not ipaddress.ip_address(a).is_link_local})


def browse(on_found: Callable[[Found], None],
           on_lost: Callable[[str], None] = lambda service: None,
           interfaces: list[str] | InterfaceChoice = InterfaceChoice.All) -> Zeroconf:
    """Start browsing for syncd homes; the handlers run on zeroconf's browser thread.
    The caller closes the Zeroconf returned (that stops the browser too)."""
    zc = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)

    def changed(zeroconf: Zeroconf, service_type: str, name: str,
                state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            on_lost(name)
            return
        info = zeroconf.get_service_info(service_type, name, timeout=RESOLVE_MS)
        found = _found(info) if info is not None else None
        if found is not None:
            on_found(found)

    ServiceBrowser(zc, SERVICE, handlers=[changed])
    return zc


def discover(seconds: float) -> list[Found]:
    """Every syncd home heard on the LAN within `seconds` (syncd peer discover), one per
    device, by name."""
    seen: dict[str, Found] = {}
    lock = threading.Lock()  # the browser's thread adds, this one reads at the end

    def add(found: Found) -> None:
        with lock:
            seen[found.device] = found

    zc = browse(add)
    try:
        time.sleep(seconds)
    finally:
        zc.close()
    with lock:
        return sorted(seen.values(), key=lambda f: (f.name or f.host, f.device))


class Discovery:
    """This serving home on the LAN: its announcement (when it listens beyond loopback)
    and its browser, which hands what it finds to `on_found` and `on_lost` on the trio
    thread."""

    def __init__(self, device: str, name: str, fingerprint: str, listen: str,
                 on_found: Callable[[Found], None], on_lost: Callable[[str], None]):
        self.device = device
        self.name = name
        self.fingerprint = fingerprint
        self.port = int(listen.rpartition(":")[2])
        self.addresses = listen_addresses(listen)
        self.on_found = on_found
        self.on_lost = on_lost
        self.zc: Zeroconf | None = None

    def info(self) -> ServiceInfo:
        return ServiceInfo(
            SERVICE, f"{self.name}-{self.device[:8]}.{SERVICE}", port=self.port,
            properties={"device": self.device, "fingerprint": self.fingerprint,
                        "name": self.name, "proto": "1"},
            server=f"syncd-{self.device}.local.", parsed_addresses=self.addresses)

    async def run(self) -> None:
        """Announce and browse until cancelled; a failure of zeroconf is logged and
        leaves sync as it is (peers at their addresses)."""
        if not self.addresses:
            log.info("discovery: listening on loopback only, nothing to announce on the LAN")
            return
        token = trio.lowlevel.current_trio_token()
        try:
            try:
                await trio.to_thread.run_sync(self._start, token)
            except Exception as e:  # zeroconf's errors and OSError alike: sync goes on
                log.warning("discovery on the LAN is off: zeroconf failed: %r", e)
                return
            log.info("discovery: announcing %s on %s", SERVICE, ", ".join(self.addresses))
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(STOP_SECONDS) as late:
                await trio.to_thread.run_sync(self._stop, abandon_on_cancel=True)
            if late.cancelled_caught:
                log.warning("discovery: zeroconf did not stop within %g s", STOP_SECONDS)

    def _start(self, token: trio.lowlevel.TrioToken) -> None:
        def soon(handler: Callable, *args) -> None:
            with contextlib.suppress(trio.RunFinishedError):  # the process is stopping
                token.run_sync_soon(handler, *args)

        def found(f: Found) -> None:
            if f.device != self.device:
                soon(self.on_found, f)

        self.zc = browse(found, lambda service: soon(self.on_lost, service),
                         interfaces=self.addresses)
        self.zc.register_service(self.info(), allow_name_change=True)

    def _stop(self) -> None:
        if self.zc is not None:
            self.zc.close()  # unregisters (goodbyes), stops the browser and its threads
            self.zc = None

