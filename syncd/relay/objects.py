"""The objects on a relay and how each is written and read (docs/protocol.md, "Relays").

    .syncd-relay            the marker: {"syncd_relay": 1, "share": SHARE}, plain JSON
    m/TAG                   a member's certificate (PEM), sealed
    b/TAG/LAST              a batch of that member's node states, stamps up to LAST (16
                            digits): sealed, signed, zstd-compressed JSON {"device",
                            "prev", "last", "states"}, PREV the LAST of the member's
                            batch (or snapshot) before it
    c/TAG/CTAG              a content chunk the member stored, sealed (verified against
                            its digest, like any chunk, when installed)
    r/TAG                   the member's cursor: sealed, signed JSON {"device", "at",
                            "read": {DEVICE: UPTO}} of the batches it applied, and
                            "snapshot": {DEVICE: UPTO}, the "read" of its newest
                            snapshot (tombstone collection reads it)
    s/TAG/LAST              a snapshot: sealed, signed, zstd-compressed JSON {"device",
                            "last", "read", "states"}: every node's state as the member
                            held it at its stamp LAST, small files' bytes included, and
                            up to which stamp of each member it had applied batches

TAG is keys.tag(device id), CTAG keys.tag(chunk digest): names reveal no id, digest or
path. Every device writes under its own TAG only, so no two devices write one object.
"""

from __future__ import annotations

import json
import logging
import time

import trio
import zstandard

from syncd.identity import Certificate, IdentityError
from syncd.relay import sealing
from syncd.relay.sealing import Keys, Rejected
from syncd.relay.storage import MARKER, Missing, Storage, Unreachable

log = logging.getLogger(__name__)

MAX_BATCH = 64 << 20  # a batch's JSON at most, decompressed (as a push body)


class Objects:
    """One device's view of one relay: what it writes as itself, and what it reads and
    checks of the others."""

    def __init__(self, storage: Storage, keys: Keys, cert: Certificate, signer):
        self.storage = storage
        self.keys = keys
        self.cert = cert
        self.signer = signer  # the device's private key (sealing.signing_key)
        self.tag = keys.tag(cert.device)

    async def check(self) -> None:
        """Unreachable unless the relay is there and is this share's."""
        await self.storage.check()
        try:
            self.keys.check_marker(await self.storage.get(MARKER))
        except Missing:
            raise Unreachable(f"{self.storage.url} has no {MARKER} marker") from None
        except Rejected as e:
            raise Unreachable(f"{self.storage.url}: {e}") from None

    async def _put_sealed(self, name: str, plain: bytes, signed: bool) -> int:
        def seal() -> bytes:
            body = sealing.sign(self.signer, name, plain) if signed else plain
            return self.keys.seal(name, body)
        data = await trio.to_thread.run_sync(seal)
        await self.storage.put(name, data)
        return len(data)

    async def _get_open(self, name: str) -> bytes:
        data = await self.storage.get(name)
        return await trio.to_thread.run_sync(self.keys.open, name, data)

    # -- written by this device

    async def publish(self) -> None:
        """Our certificate, unless the one there is already ours."""
        name = f"m/{self.tag}"
        try:
            if (await self._get_open(name)).decode() == self.cert.pem:
                return
        except (Missing, Rejected, UnicodeDecodeError):
            pass
        await self._put_sealed(name, self.cert.pem.encode(), signed=False)

    async def put_batch(self, prev: int, last: int, states: list[dict]) -> int:
        """Store a batch of our states stamped up to `last`, after our batch (or snapshot)
        up to `prev`; its size there."""
        return await self._put_packed(f"b/{self.tag}/{last:016d}", {
            "device": self.cert.device, "prev": prev, "last": last, "states": states})

    async def put_snapshot(self, last: int, read: dict[str, int], states: list[dict]) -> int:
        return await self._put_packed(f"s/{self.tag}/{last:016d}", {
            "device": self.cert.device, "last": last, "read": read, "states": states})

    async def _put_packed(self, name: str, body: dict) -> int:
        def pack() -> bytes:
            text = json.dumps(body, separators=(",", ":")).encode()
            return zstandard.ZstdCompressor(level=3).compress(text)
        return await self._put_sealed(name, await trio.to_thread.run_sync(pack), signed=True)

    async def delete(self, name: str) -> int:
        """Remove one of our own objects; its size (read first: the interface has no
        stat, and removals are rare), for the bytes we store there."""
        if name.split("/")[1] != self.tag:
            raise ValueError(f"{name} is not this device's to remove")
        try:
            size = len(await self.storage.get(name))
        except Missing:
            return 0
        await self.storage.delete(name)
        return size

    async def put_chunk(self, digest: bytes, data: bytes) -> int:
        return await self._put_sealed(f"c/{self.tag}/{self.keys.tag(digest)}", data, False)

    async def our_chunks(self) -> set[str]:
        """The names of the chunks we stored."""
        return set(await self.storage.list(f"c/{self.tag}"))

    def chunk_name(self, digest: bytes, tag: str | None = None) -> str:
        return f"c/{tag or self.tag}/{self.keys.tag(digest)}"

    async def put_cursor(self, read: dict[str, int], snapshot: dict[str, int]) -> None:
        body = json.dumps({"device": self.cert.device, "at": int(time.time()),
                           "read": read, "snapshot": snapshot}).encode()
        await self._put_sealed(f"r/{self.tag}", body, signed=True)

    async def numbered(self, kind: str, tag: str | None = None) -> list[tuple[int, str]]:
        """(last stamp, name) of a member's batches (kind "b") or snapshots ("s"), in
        order; ours when `tag` is None."""
        out = []
        for name in await self.storage.list(f"{kind}/{tag or self.tag}"):
            last = name.rpartition("/")[2]
            if len(last) == 16 and last.isdigit():
                out.append((int(last), name))
        return sorted(out)

    # -- written by the others

    async def members(self) -> tuple[dict[str, Certificate], dict[str, str]]:
        """tag -> certificate of each other member whose certificate opens and names the
        device its tag is of, and tag -> why for those whose certificate does not (damaged,
        foreign): still members, whose reading nobody can check meanwhile."""
        out, unreadable = {}, {}
        for name in await self.storage.list("m"):
            tag = name.rpartition("/")[2]
            if tag == self.tag:
                continue
            try:
                cert = Certificate.from_pem((await self._get_open(name)).decode())
            except (Rejected, IdentityError, UnicodeDecodeError) as e:
                unreadable[tag] = f"member certificate {name}: {e}"
                continue
            except Missing:
                continue
            if self.keys.tag(cert.device) != tag:
                unreadable[tag] = (f"member certificate {name}: it is device {cert.device}'s, "
                                   "filed under another device")
                continue
            out[tag] = cert
        return out, unreadable

    async def batches(self, tag: str, after: int) -> list[tuple[int, str]]:
        """(last stamp, name) of a member's batches past `after`, in order."""
        return [(last, name) for last, name in await self.numbered("b", tag) if last > after]

    async def cursor(self, cert: Certificate) -> dict | None:
        """A member's cursor object, checked; None when it wrote none. Rejected if wrong."""
        name = f"r/{self.keys.tag(cert.device)}"
        try:
            data = await self.storage.get(name)
        except Missing:
            return None

        def unpack() -> dict:
            try:
                cursor = json.loads(sealing.verify(cert, name, self.keys.open(name, data)))
            except ValueError as e:
                raise Rejected(f"{name}: not a cursor: {e}") from None
            if not isinstance(cursor, dict) or cursor.get("device") != cert.device \
                    or not isinstance(cursor.get("read"), dict) \
                    or not isinstance(cursor.get("at"), int):
                raise Rejected(f"{name}: not a cursor of device {cert.device}")
            return cursor
        return await trio.to_thread.run_sync(unpack)

    async def read_batch(self, cert: Certificate, name: str) -> dict:
        """A member's batch or snapshot, opened, signature checked and unpacked; Rejected
        if anything about it is wrong (Missing if it is gone)."""
        data = await self.storage.get(name)

        def unpack() -> dict:
            payload = sealing.verify(cert, name, self.keys.open(name, data))
            try:
                text = zstandard.ZstdDecompressor().decompress(payload,
                                                               max_output_size=MAX_BATCH)
                batch = json.loads(text)
            except (zstandard.ZstdError, ValueError) as e:
                raise Rejected(f"{name}: not a batch: {e}") from None
            if not isinstance(batch, dict) or batch.get("device") != cert.device \
                    or not isinstance(batch.get("states"), list) \
                    or not isinstance(batch.get("last"), int) \
                    or f"{batch['last']:016d}" != name.rpartition("/")[2]:
                raise Rejected(f"{name}: not a batch of device {cert.device} up to its name")
            return batch
        return await trio.to_thread.run_sync(unpack)

    async def get_chunk(self, digest: bytes, tags: list[str]) -> bytes | None:
        """A chunk's bytes from the first member that stored it (not verified yet)."""
        for tag in tags:
            name = self.chunk_name(digest, tag)
            try:
                return await self._get_open(name)
            except Missing:
                continue
            except Rejected as e:
                log.warning("relay %s: skipped chunk %s: %s", self.storage.url, name, e)
        return None
