"""One peer, seen from here: its signed HTTP client and its loop (DESIGN, "Peer states").

The loop pushes the changes stamped here after the peer's cursor, a batch at a time (at
most BATCH states, and BATCH_DATA bytes of small files carried in them), and moves the
cursor only when the peer has answered that it applied them (rule 5). It sleeps
until something changes here (event-driven: a close reaches the peer within a round trip)
or until a keep-alive probe is due. A peer that does not answer becomes `offline` and is
probed again with exponential back-off; any request from it that arrives here (its hello,
a push, a fetch) wakes the loop at once and starts the back-off again from its least. Any
exchange, the fetcher's too, that fails at the network level marks the peer offline there
and then; one it answers, even with an HTTP error, is its last sign of life (`last_seen`,
kept here and saved with the state, the cursor and each keep-alive).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import trio

from syncd import auth, compress, identity, tlsread
from syncd.api import NodeState, off_loop
from syncd.index.catalog import Catalog
from syncd.index.peers import Peer, confirm_push, save_peer
from syncd.index.states import BATCH_DATA, changes_since
from syncd.metrics import BYTES_RECEIVED, BYTES_SENT

log = logging.getLogger(__name__)

BATCH = 1000
MANY = 100  # states in a push whose body is made on a worker thread
KEEPALIVE = 30.0  # seconds between probes of an idle online peer
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
# A push this soon (seconds) after a push of many states waits a little, so that it
# carries more (a burst: fewer, fuller pushes cost both peers less; 1,000 small files
# arrive ~30% sooner than with a 5 ms wait). After a push of one or two states it goes at
# once: that is a file's content following its create, which a small file's bytes travel
# with, so the wait would be its latency (bench/sync.py: 20-25 ms with 5 ms, 16 without).
BURST, COALESCE_BURST = 0.05, 0.02
# A stall, not a transfer, is bounded: every read must make progress within `read`.
TIMEOUT = httpx.Timeout(connect=3.0, read=10.0, write=10.0, pool=10.0)


MAX_ANSWER = 128 << 20  # bytes an answer may decompress to


@dataclass
class Reply:
    status: int
    headers: httpx.Headers
    body: bytes
    pieces: list[bytes] | None  # auth.pieces(body), when it travelled as it is
    server_cert: bytes | None = None  # the certificate (DER) the connection showed

    def digest_at(self, at: int, size: int) -> bytes | None:
        """The BLAKE3 digest of body[at:at + size] if the signature check computed it:
        when that slice is one whole piece, or the body's last. None otherwise."""
        if self.pieces is None or at % auth.PIECE or not 0 < size <= auth.PIECE:
            return None
        end = min(at + auth.PIECE, len(self.body))
        return self.pieces[at // auth.PIECE] if at + size == end else None


class PeerError(Exception):
    """The peer did not answer, or answered something we cannot accept."""


class Unreachable(PeerError):
    """The peer did not answer at the network level (refused, timed out, reset)."""


class Refused(PeerError):
    """The peer answered that the request itself is wrong (4xx other than 401)."""


class NotHeld(PeerError):
    """The peer answered that it does not hold the chunk asked for."""


@dataclass
class Me:
    """This device as its peers know it, the cluster key it signs with and its
    certificate."""

    key: bytes
    device: str
    name: str
    identity: identity.Identity


class PeerLink:
    def __init__(self, record: Peer, me: Me, catalog: Catalog,
                 on_online: Callable[[], None], on_pinned: Callable[[], None]):
        """One peer from its record in the index; `on_online` runs each time it answers
        again after it did not, `on_pinned` when its certificate is pinned."""
        self.me = me
        self.catalog = catalog
        self.on_online = on_online
        self.on_pinned = on_pinned
        self.name = record.name
        # Where it may be reached, in the operator's order; `url` is the one in use: the
        # one that last answered its hello as this peer, tried first (hello()).
        self.addresses = [a.rstrip("/") for a in record.addresses or [record.url]]
        # Where discovery on the LAN last heard it (syncd/discovery.py), besides those:
        # tried after them, and never saved.
        self.discovered: list[str] = []
        self.url = record.url.rstrip("/")
        self.device = record.device
        self.fingerprint = record.fingerprint  # given at add, or pinned with `cert`
        self.cert = record.cert  # its certificate (PEM) once pinned
        self.state = record.state
        self.cursor = record.cursor
        self.last_seen = record.last_seen  # unix seconds of its last answer
        self.last_error = record.last_error
        self.wake = trio.Event()
        self.backoff = BACKOFF_MIN
        self.cancel = trio.CancelScope()
        # Say hello first: whatever state was stored, the peer must learn that we are back
        # (its loop for us may be sleeping in back-off), and we learn what it accepts.
        self.stale = True
        self.last_push = 0.0
        self.last_size = 0  # states in the last push
        self.accepts_zstd = False  # learned at hello
        self.accepts_inline = False  # states may carry small files' bytes (hello too)
        self.accepts_xattr = False  # states may carry extended attributes (hello too)
        self.client = self._client(self.cert)

    def _client(self, pinned: str | None, present: bool = False) -> httpx.AsyncClient:
        """A client that trusts only the pinned certificate and presents ours; with none
        pinned, one that trusts what hello() checks and presents ours only when `present`
        (TLS in identity.py). Idle connections are dropped here before the server drops them
        (KEEPALIVE_SERVER in daemon.py), so a request rarely meets a connection closing
        under it."""
        return httpx.AsyncClient(timeout=TIMEOUT, transport=tlsread.Transport(
            retries=0, socket_options=_NODELAY, limits=httpx.Limits(keepalive_expiry=2.0),
            verify=identity.client_context(self.me.identity, pinned, present)))

    def poke(self) -> None:
        self.wake.set()

    def heard_from(self) -> None:
        """A request from this peer arrived: it is back, so try it now, and soon again if
        that fails (its server may still be starting), not after a grown back-off."""
        self.backoff = BACKOFF_MIN
        self.poke()

    def found_at(self, urls: list[str]) -> None:
        """Discovery heard this peer's device and certificate announced at `urls` (none:
        it said goodbye). Those not among its addresses are tried after them; a peer not
        online is tried at once."""
        discovered = [u for u in urls if u not in self.addresses]
        if discovered == self.discovered:
            return
        if discovered:
            log.info("peer %s announces itself on the LAN at %s", self.name,
                     " ".join(discovered))
        self.discovered = discovered
        if self.state != "online":
            self.poke()

    # -- requests

    def body(self, payload: dict | None) -> Body:
        """A request's body as it travels: compressed when the peer accepts zstd and it
        pays. Touches nothing shared: a worker thread may make it."""
        data = json.dumps(payload).encode() if payload is not None else b""
        headers = {"content-type": "application/json"} if payload is not None else {}
        packed = compress.pack(data) if self.accepts_zstd else None
        if packed is not None:
            data = packed
            headers["content-encoding"] = "zstd"
        return Body(data, headers, auth.body_hash(data))

    async def request(self, method: str, path: str, payload: dict | None = None,
                      headers: dict | None = None, url: str | None = None,
                      client: httpx.AsyncClient | None = None, body: Body | None = None,
                      sent: trio.Event | None = None) -> Reply:
        """One signed exchange, with the address in use or `url`: of `payload`, or of a
        `body` made before (self.body). The signature covers the bytes as sent, both
        ways. `sent` is set once the body has gone out (or the exchange failed). A
        network failure at `url` raises Unreachable and leaves the state alone (hello()
        is trying the peer's addresses); one at the address in use marks the peer
        offline at once."""
        base = url or self.url
        body = body or self.body(payload)
        all_headers = {"accept-encoding": "zstd", **(headers or {}), **body.headers}
        content: bytes | AsyncIterator[bytes] = body.data
        # Every request of the protocol may be sent twice (applying states is idempotent),
        # so one that fails on a kept-alive connection the server closed at that moment is
        # sent again on a new one, signed anew (the nonce of the first may have arrived).
        for attempt in (1, 2):
            signed = auth.sign_request(self.me.key, method, path, body.data, digest=body.digest)
            all_headers.update(signed)
            if sent is not None:  # its length given, httpx sends it as it is, not chunked
                all_headers["content-length"] = str(len(body.data))
                content = _then_set(body.data, sent)
            try:
                client = client or self.client
                request = client.build_request(method, base + path, content=content,
                                               headers=all_headers)
                r = await client.send(request, stream=True)
                try:
                    tls = r.extensions["network_stream"].get_extra_info("ssl_object")
                    parts = [part async for part in r.aiter_raw()]
                finally:
                    await r.aclose()
                break
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
                if attempt == 2:
                    _set(sent)
                    raise self._unreachable(e, url) from None
            except httpx.HTTPError as e:
                _set(sent)
                raise self._unreachable(e, url) from None
            except BaseException:
                _set(sent)
                raise
        server_cert = tls.getpeercert(binary_form=True) if tls is not None else None
        raw, pieces = await off_loop(sum(map(len, parts)), _joined, parts)
        BYTES_SENT.labels(self.name).inc(len(body.data))
        BYTES_RECEIVED.labels(self.name).inc(len(raw))
        try:
            auth.check_response(self.me.key, r.status_code, signed[auth.NONCE], r.headers,
                                auth.hash_of_pieces(pieces))
        except auth.AuthError as e:
            raise PeerError(self._unsigned(r.status_code, raw, e, base)) from None
        self.last_seen = int(time.time())
        if r.headers.get("content-encoding") == "zstd":
            try:
                unpacked = await off_loop(len(raw), compress.unpack, raw, MAX_ANSWER)
            except compress.BadEncoding as e:
                raise PeerError(f"{self.name} sent a bad body: {e}") from None
            return Reply(r.status_code, r.headers, unpacked, None, server_cert)
        return Reply(r.status_code, r.headers, raw, pieces, server_cert)

    def _unsigned(self, status: int, body: bytes, error: auth.AuthError, url: str) -> str:
        """Why an answer came unsigned. A 401 is the peer refusing our signature, and its
        body says which check failed (docs/protocol.md): a bad signature means that the
        two machines do not hold the same cluster key, which is no network fault."""
        if status != 401:
            return f"{self.name} answered without a valid signature: {error}"
        try:
            detail = str(json.loads(body)["detail"])
        except (ValueError, KeyError, TypeError):
            detail = body[:200].decode(errors="replace")
        if detail.startswith("bad signature"):
            return (f"{self.name} ({url}) does not accept this machine's signature: the "
                    "two do not share a cluster key. Compare 'syncd cluster-key' on both; on "
                    "the one that differs from the cluster's, put the cluster's key in "
                    "HOME/cluster.key (mode 0600) and restart its mount or serve")
        return f"{self.name} ({url}) refuses this machine's requests: {detail}"

    def _unreachable(self, error: Exception, url: str | None = None) -> PeerError:
        """An exchange failed at the network level (refused, timed out, reset, TLS): a
        peer seen online is offline now, whoever asked, and its loop probes it again at
        once (one connection reset is no reason to wait out a back-off); one offline
        already is left to the back-off. At an address being tried (`url`), only that
        address failed."""
        failure = Unreachable(f"{self.name} ({url or self.url}) does not answer: "
                              f"{self._reason(error)}")
        if url is None and self.state in ("online", "unknown"):
            self._set_state("offline", str(failure))
            self.poke()
        return failure

    def _reason(self, error: Exception) -> str:
        """What a failed exchange says, with what TLS failures mean here."""
        cause: BaseException | None = error
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return ("its certificate is not the one pinned here: another machine, or "
                        "its home made again. Compare 'syncd id' there with the fingerprint "
                        "'syncd peer list --json' shows here; if that is right, run "
                        f"'syncd peer remove {self.name}' and 'syncd peer add {self.name} "
                        f"{' '.join(self.addresses)}' here, and it is sent everything")
            if isinstance(cause, ssl.SSLError) and "ALERT" in (cause.reason or "") and \
                    self.cert is not None:
                return (f"it refused this machine's certificate ({cause.reason}): it has not "
                        "pinned it (has it added this machine, with 'syncd peer add'?), or "
                        "removed it")
            cause = cause.__cause__ or cause.__context__
        if self.cert is not None and isinstance(error, (httpx.RemoteProtocolError,
                                                        httpx.ReadError, httpx.WriteError)):
            return (f"{error!r}: it closed the connection before answering, as a peer does "
                    "to a certificate it has not pinned (has it added this machine, with "
                    "'syncd peer add'?), or it is stopping")
        return repr(error)

    async def call(self, method: str, path: str, payload: dict | None = None,
                   url: str | None = None, body: Body | None = None,
                   sent: trio.Event | None = None) -> dict:
        r = await self.request(method, path, payload, url=url, body=body, sent=sent)
        if r.status == 403:  # this machine, not the request: nothing of it is skipped
            raise PeerError(f"{self.name} does not admit this machine: "
                            f"{r.body[:300].decode(errors='replace')}")
        if r.status != 200:
            error = Refused if 400 <= r.status < 500 and r.status != 401 else PeerError
            raise error(f"{self.name} refused {method} {path}: {r.status} "
                        f"{r.body[:300].decode(errors='replace')}")
        try:
            return json.loads(r.body)
        except ValueError:
            raise PeerError(f"{self.name} answered {method} {path} with bad JSON") from None

    async def hello(self) -> None:
        """Greet the peer at its addresses, the one that answered last first, then the
        others in the operator's order, then those discovery found, until one answers as
        this peer over mutual TLS
        with the certificate pinned here. A peer not pinned yet is pinned by the first
        hello it answers proving the cluster key (trust on first use, _first_hello).
        That address is then the one in use."""
        failures, seen = [], self.last_seen
        tried = self.addresses + self.discovered
        for url in [self.url] + [a for a in tried if a != self.url]:
            self.last_seen = seen  # only an answer as this peer is one of its answers
            try:
                if self.cert is None:
                    await self._first_hello(url)
                answer = await self.call("POST", "/v1/hello", self._greeting(), url=url)
                self._check_answer(answer, url)
            except PeerError as e:  # not there, or not a peer that accepts us: the next
                failures.append(str(e))
                continue
            self.accepts_zstd = "zstd" in answer.get("accepts", [])
            self.accepts_inline = "inline" in answer.get("accepts", [])
            self.accepts_xattr = "xattr" in answer.get("accepts", [])
            if url != self.url:
                log.info("peer %s answers at %s", self.name, url)
                self.url = url
            # each keep-alive too
            self._save(device=self.device, last_seen=self.last_seen, url=self.url)
            return
        self.last_seen = seen
        raise PeerError("; ".join(failures))

    def _greeting(self) -> dict:
        """The hello's body: who we are, our certificate's fingerprint and the one we
        expect the peer's to be (None before it is pinned), all under the signature."""
        return {"device": self.me.device, "name": self.me.name,
                "fingerprint": self.me.identity.fingerprint, "server": self.fingerprint
                if self.cert is not None else None}

    def _check_answer(self, answer: dict, url: str) -> None:
        """A hello answered over mutual TLS names both certificates as the peer saw
        them, under its signature: its own (the one pinned here, which TLS checked) and
        ours, so a connection relayed through another certificate is never taken."""
        if answer.get("fingerprint") != self.fingerprint or \
                answer.get("client") != self.me.identity.fingerprint:
            raise PeerError(f"{self.name} ({url}) signed a hello for other certificates than "
                            "those of this connection: something between the two machines "
                            "terminates TLS")
        if answer.get("device") != self.device:
            raise PeerError(f"{self.name} ({url}) answered as device {answer.get('device')} "
                            f"with the certificate of {self.device}")

    async def _first_hello(self, url: str) -> None:
        """Trust on first use: say hello without a certificate of ours, and pin the one
        the peer showed when its signed answer names that certificate's fingerprint
        (proof that whoever holds the cluster key is the end of this TLS connection, not
        a relay: a relay's certificate is not the one the peer names), its device is the
        certificate's, and the certificate is the one given with --fingerprint, if one
        was, and of the device known under this name, if one is. A peer that pinned
        our certificate already (its first hello to us came first) refuses a hello in
        our name without it (403): then it is said again presenting ours."""
        for present in (False, True):
            async with self._client(None, present) as bare:
                r = await self.request("POST", "/v1/hello", self._greeting(), url=url,
                                       client=bare)
            if r.status != 403:
                break
        else:  # our certificate, presented, did not reach it
            raise Refused(f"{self.name} ({url}) refused hello even with this machine's "
                          "certificate presented: something between the two machines "
                          "terminates TLS; nothing was pinned "
                          f"({r.body[:300].decode(errors='replace')})")
        if r.status != 200:
            raise Refused(f"{self.name} ({url}) refused hello: {r.status} "
                          f"{r.body[:300].decode(errors='replace')}")
        try:
            answer = json.loads(r.body)
            cert = identity.Certificate.from_der(r.server_cert or b"")
        except (ValueError, identity.IdentityError) as e:
            raise PeerError(f"{self.name} ({url}) answered hello with {e}") from None
        if answer.get("fingerprint") != cert.fingerprint or answer.get("device") != cert.device:
            raise PeerError(f"{self.name} ({url}) showed a certificate ({cert.fingerprint}) "
                            "that is not the one its signed hello names: something between "
                            "the two machines terminates TLS; nothing was pinned")
        if self.fingerprint is not None and cert.fingerprint != self.fingerprint:
            raise PeerError(f"{self.name} ({url}) shows certificate {cert.fingerprint}, not "
                            f"{self.fingerprint} given with --fingerprint: another machine, or "
                            "its home made again; compare 'syncd id' there")
        if self.device is not None and cert.device != self.device:
            # Its cursor counts what the device added under this name holds: another
            # device there holds none of it, and would never be sent it.
            raise PeerError(
                f"{self.name} ({url}) answers as device {cert.device}, not as {self.device}, "
                "the device added under that name: another machine, or its home made "
                f"again. If that is right, run 'syncd peer remove {self.name}' and "
                f"'syncd peer add {self.name} {' '.join(self.addresses)}' here, and it "
                "is sent everything")
        log.info("peer %s: pinned certificate %s of device %s", self.name, cert.fingerprint,
                 cert.device)
        self.device, self.fingerprint, self.cert = cert.device, cert.fingerprint, cert.pem
        self._save(device=self.device, fingerprint=self.fingerprint, cert=self.cert)
        old, self.client = self.client, self._client(self.cert)
        await old.aclose()
        self.on_pinned()

    async def get_chunk(self, digest: bytes) -> tuple[bytes, bytes | None]:
        """A chunk's bytes, not yet verified, and their BLAKE3 digest when the signature
        check computed it (None: not computed)."""
        r = await self.request("GET", f"/v1/chunks/{digest.hex()}")
        if r.status == 404:
            raise NotHeld(f"{self.name} does not hold chunk {digest.hex()[:12]}")
        if r.status != 200:
            raise PeerError(f"{self.name} answered {r.status} for a chunk")
        return r.body, r.digest_at(0, len(r.body))

    async def get_node(self, node: str) -> dict | None:
        """The peer's current state of one node, validated as a push is; None when the
        peer does not know it."""
        r = await self.request("GET", f"/v1/nodes/{node}?inline=1&xattr=1")
        if r.status == 404:
            return None
        if r.status != 200:
            raise PeerError(f"{self.name} answered {r.status} for node {node}")
        try:
            state = NodeState.model_validate(json.loads(r.body)["state"])
        except (ValueError, KeyError, TypeError) as e:
            raise PeerError(f"{self.name} sent a bad state of node {node}: {e}") from None
        if state.id != node or state.parent is None:
            raise PeerError(f"{self.name} sent a state of another node or with no parent")
        return state.model_dump()

    async def get_chunks(self, digests: list[bytes]
                         ) -> dict[bytes, tuple[memoryview, bytes | None]]:
        """Many chunks in one request, not yet verified, each with its BLAKE3 digest when
        the signature check computed it (as get_chunk); those not held are left out."""
        r = await self.request("POST", "/v1/chunks", {"chunks": [d.hex() for d in digests]})
        if r.status != 200:
            raise PeerError(f"{self.name} answered {r.status} for chunks")
        try:
            sizes = [int(n) for n in r.headers["x-syncd-sizes"].split(",")]
        except (KeyError, ValueError):
            raise PeerError(f"{self.name} sent chunks without valid sizes") from None
        if len(sizes) != len(digests) or sum(n for n in sizes if n > 0) != len(r.body):
            raise PeerError(f"{self.name} sent chunks that do not add up")
        out, at, view = {}, 0, memoryview(r.body)
        for digest, n in zip(digests, sizes, strict=True):
            if n >= 0:
                out[digest] = view[at:at + n], r.digest_at(at, n)
                at += n
        return out

    async def hold(self, digests: list[bytes]) -> int:
        """Ask the peer to keep a copy of these chunks; how many it still lacks."""
        missing = 0
        for i in range(0, len(digests), 1000):
            batch = [d.hex() for d in digests[i:i + 1000]]
            missing += int((await self.call("POST", "/v1/hold", {"chunks": batch}))["missing"])
        return missing

    async def lease(self, digests: list[bytes], seconds: float) -> set[bytes]:
        """Ask the peer not to evict these chunks for `seconds` (syncd/cache.py); those it
        holds and promised to keep."""
        held: set[bytes] = set()
        for i in range(0, len(digests), 1000):
            batch = [d.hex() for d in digests[i:i + 1000]]
            answer = await self.call("POST", "/v1/lease", {"chunks": batch, "seconds": seconds})
            try:
                held.update(bytes.fromhex(h) for h in answer["leased"])
            except (KeyError, TypeError, ValueError):
                raise PeerError(f"{self.name} sent a malformed lease answer") from None
        return held

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
            await self._back_off()
            return
        except sqlite3.OperationalError as e:
            # This machine's index, not the peer: a full disk, or a command holding it
            # past busy_timeout. What was being recorded rolled back; the exchange is
            # made again, from the cursor, after the backoff.
            log.warning("peer %s: cannot record the exchange here: %s; tried again in "
                        "%g s", self.name, e, self.backoff)
            await self._back_off()
            return
        self.backoff = BACKOFF_MIN
        with trio.move_on_after(KEEPALIVE) as idle:
            await self.wake.wait()
        self.stale |= idle.cancelled_caught  # or made stale while it waited (PeerSet.greeted)

    async def _back_off(self) -> None:
        """Wait before the next try, twice as long as the last time, unless woken."""
        delay, self.backoff = self.backoff, min(self.backoff * 2, BACKOFF_MAX)
        with trio.move_on_after(delay):
            await self.wake.wait()

    async def _push(self) -> bool:
        """Send the changes after the cursor, a batch at a time; True when there may be
        more. In a burst of changes (the last push, of many, was moments ago), wait a
        little so that one batch carries many."""
        if time.monotonic() - self.last_push < BURST and self.last_size > 2:
            await trio.sleep(COALESCE_BURST)
        push: _Push | None = self._read(self.cursor)
        self.last_push, self.last_size = time.monotonic(), len(push.states)
        if push.last == self.cursor:
            return False
        if push.states:
            push.body = await self._encode(push.states)
        while push is not None:
            push = await self._deliver(push)
        return True

    def _read(self, since: int) -> _Push:
        seen = self.catalog.seq  # what a later stamp of a node sent now supersedes
        states, last = changes_since(self.catalog.conn, since, BATCH, self.device,
                                     BATCH_DATA if self.accepts_inline else 0,
                                     xattrs=self.accepts_xattr)
        return _Push(states, last, seen)

    async def _deliver(self, push: _Push) -> _Push | None:
        """Send a push and move the cursor once the peer answered that it applied it
        (rule 5). When more waits behind it, the next push is read and encoded while
        this one is in flight (the peer applies one while we prepare the next, rather
        than waiting for us), and returned; it goes only after this one is confirmed, so
        the peer applies them in order. A push that fails raises, and the one prepared is
        dropped: the next round sends again from the cursor."""
        sent, failed, ahead = trio.Event(), [], None

        async def send() -> None:
            try:
                await self._send(push.states, push.body, sent)
            except PeerError as e:
                failed.append(e)
            finally:
                sent.set()

        async with trio.open_nursery() as nursery:
            if push.states:
                nursery.start_soon(send)
            else:  # all held by the peer already: only the cursor moves
                sent.set()
            if push.last < push.seen:  # the batch was full: more waits
                await sent.wait()  # its body is out: reading now holds nothing up
                ahead = self._read(push.last)
                if ahead.states:
                    ahead.body = await self._encode(ahead.states)
        if failed:
            raise failed[0]
        after, self.cursor = self.cursor, push.last
        confirm_push(self.catalog.db, self.name, self.device, after, push.last,
                     push.seen if push.states else None, self.last_seen)
        if ahead is None:
            return None
        self.last_push, self.last_size = time.monotonic(), len(ahead.states)
        return ahead

    async def _encode(self, states: list[dict]) -> Body:
        """A push's body, on a worker thread when it holds many states."""
        payload = {"device": self.me.device, "changes": states}
        if len(states) < MANY:
            return self.body(payload)
        return await trio.to_thread.run_sync(self.body, payload)

    async def _send(self, states: list[dict], body: Body | None = None,
                    sent: trio.Event | None = None) -> None:
        """Push states (`body`: encoded already); a batch the peer refuses as malformed is
        split until the state it refuses is found, and that one is skipped with an error:
        sending it again would be refused again, and would hold up everything after it
        for ever."""
        try:
            await self.call("POST", "/v1/changes", {"device": self.me.device,
                                                    "changes": states}, body=body, sent=sent)
        except Refused as e:
            if len(states) == 1:
                log.error("peer %s refuses node %s (%r), which is skipped: %s", self.name,
                          states[0]["id"], states[0]["name"], e)
                return
            half = len(states) // 2
            await self._send(states[:half])
            await self._send(states[half:])

    def _set_state(self, state: str, error: str | None = None) -> None:
        # outofuse is the operator's (PeerSet.load): an exchange that was under way when
        # it came does not undo it
        if self.state == "outofuse" or (state == self.state and error == self.last_error):
            return
        if state == self.state:  # offline still, for another reason
            self.last_error = error
            self._save(last_error=error)
            return
        if state == "offline":
            # a laptop closing is normal operation; status shows it and what waits
            log.info("peer %s is offline: %s", self.name, error)
        elif state == "online":
            log.info("peer %s is online", self.name)
            self.on_online()
        self.state, self.last_error = state, error
        self._save(state=state, last_error=error, last_seen=self.last_seen)

    def _save(self, **columns) -> None:
        save_peer(self.catalog.db, self.name, **columns)


@dataclass
class Body:
    """A request's body as it travels, its headers and its BODYHASH (auth.body_hash):
    made once, signed at each sending."""

    data: bytes
    headers: dict[str, str]
    digest: bytes


@dataclass
class _Push:
    states: list[dict]
    last: int  # the sequence number the cursor moves to once the peer applied it
    seen: int  # this device's sequence number when the states were read
    body: Body | None = None  # encoded ahead, while the push before was in flight


async def _then_set(data: bytes, sent: trio.Event) -> AsyncIterator[bytes]:
    """A body as httpx sends it, setting `sent` once it is out."""
    yield data
    sent.set()


def _set(event: trio.Event | None) -> None:
    if event is not None:
        event.set()


def _joined(parts: list[bytes]) -> tuple[bytes, list[bytes]]:
    """A body from the parts it arrived in, and its auth.pieces."""
    body = b"".join(parts)
    return body, auth.pieces(body)


_NODELAY = [(6, 1, 1)]  # IPPROTO_TCP, TCP_NODELAY, on: no Nagle delay per exchange
