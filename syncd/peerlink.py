"""One peer, seen from here: its signed HTTP client and its loop (DESIGN, "Peer states").

The loop pushes the changes stamped here after the peer's cursor, a batch at a time, and
moves the cursor only when the peer has answered that it applied them (rule 5). It sleeps
until something changes here (event-driven: a close reaches the peer within a round trip)
or until a keep-alive probe is due. A peer that does not answer becomes `offline` and is
probed again with exponential back-off; a hello from it wakes the loop at once.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

import httpx
import trio

from syncd import auth

if TYPE_CHECKING:
    from syncd.daemon import Daemon

log = logging.getLogger(__name__)

BATCH = 1000
KEEPALIVE = 30.0  # seconds between probes of an idle online peer
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
# A stall, not a transfer, is bounded: every read must make progress within `read`.
TIMEOUT = httpx.Timeout(connect=3.0, read=10.0, write=10.0, pool=10.0)


class PeerError(Exception):
    """The peer did not answer, or answered something we cannot accept."""


class PeerLink:
    def __init__(self, daemon: Daemon, name: str, url: str, device: str | None,
                 state: str, cursor: int):
        self.daemon = daemon
        self.name = name
        self.url = url.rstrip("/")
        self.device = device
        self.state = state
        self.cursor = cursor
        self.wake = trio.Event()
        self.backoff = BACKOFF_MIN
        self.cancel = trio.CancelScope()
        self.stale = False  # an idle keep-alive is due: say hello again
        self.client = httpx.AsyncClient(timeout=TIMEOUT, transport=httpx.AsyncHTTPTransport(
            retries=0, socket_options=_NODELAY))

    def poke(self) -> None:
        self.wake.set()

    # -- requests

    async def request(self, method: str, path: str, payload: dict | None = None,
                      headers: dict | None = None) -> httpx.Response:
        body = json.dumps(payload).encode() if payload is not None else b""
        signed = auth.sign_request(self.daemon.key, method, path, body)
        all_headers = {**signed, **(headers or {})}
        if payload is not None:
            all_headers["content-type"] = "application/json"
        try:
            r = await self.client.request(method, self.url + path, content=body,
                                          headers=all_headers)
        except httpx.HTTPError as e:
            raise PeerError(f"{self.name} ({self.url}) does not answer: {e!r}") from None
        try:
            auth.check_response(self.daemon.key, r.status_code, signed[auth.NONCE], r.headers,
                                r.content)
        except auth.AuthError as e:
            raise PeerError(f"{self.name} answered without a valid signature: {e}") from None
        return r

    async def call(self, method: str, path: str, payload: dict | None = None) -> dict:
        r = await self.request(method, path, payload)
        if r.status_code != 200:
            raise PeerError(f"{self.name} refused {method} {path}: {r.status_code} "
                            f"{r.text[:300]}")
        return r.json()

    async def hello(self) -> None:
        answer = await self.call("POST", "/v1/hello", {"device": self.daemon.device,
                                                      "name": self.daemon.name})
        if self.device is None or self.device != answer.get("device"):
            self.device = answer["device"]
            self.daemon.save_peer(self, device=self.device)

    async def get_chunk(self, digest: bytes) -> bytes:
        """A chunk's bytes, not yet verified. Transfers resume per chunk: the chunks of a
        file that arrived are installed, so a retry asks only for the rest."""
        r = await self.request("GET", f"/v1/chunks/{digest.hex()}")
        if r.status_code == 404:
            raise PeerError(f"{self.name} does not hold chunk {digest.hex()[:12]}")
        if r.status_code != 200:
            raise PeerError(f"{self.name} answered {r.status_code} for a chunk")
        return r.content

    # -- the loop

    async def run(self) -> None:
        with self.cancel:
            try:
                while True:
                    await self._step()
            finally:
                await self.client.aclose()

    async def _step(self) -> None:
        self.wake = trio.Event()
        if self.state == "outofuse":
            await self.wake.wait()
            return
        try:
            if self.state != "online" or self.stale:
                await self.hello()
                self.stale = False
                self._set_state("online")
            if await self._push():
                return
        except PeerError as e:
            self._set_state("offline", str(e))
            with trio.move_on_after(self.backoff):
                await self.wake.wait()
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)
            return
        self.backoff = BACKOFF_MIN
        with trio.move_on_after(KEEPALIVE) as idle:
            await self.wake.wait()
        self.stale = idle.cancelled_caught

    async def _push(self) -> bool:
        """Send one batch; True when there may be more."""
        states, last = self.daemon.replica.changes_since(self.cursor, BATCH, self.device)
        if last == self.cursor:
            return False
        if states:
            await self.call("POST", "/v1/changes", {"device": self.daemon.device,
                                                    "changes": states})
        self.cursor = last
        self.daemon.save_peer(self, cursor=last, last_seen=int(time.time()))
        return True

    def _set_state(self, state: str, error: str | None = None) -> None:
        if state == self.state:
            return
        if state == "offline":
            log.warning("peer %s is offline: %s", self.name, error)
        elif state == "online":
            log.info("peer %s is online", self.name)
        self.state = state
        self.daemon.save_peer(self, state=state, last_error=error,
                              **({"last_seen": int(time.time())} if state == "online" else {}))


_NODELAY = [(6, 1, 1)]  # IPPROTO_TCP, TCP_NODELAY, on: no Nagle delay per exchange
