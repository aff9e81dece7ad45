"""Short working chunks in slots of one file, store/work/slots, instead of a file each.

Most files written through the mount are small (76% of /usr/include is 16 KiB or less).
Giving each one's working chunk a file of its own costs a create and an unlink on the
store's disk per file: 0.1-0.4 ms on ext4 here, more than the rest of its commit. A slot
is part of a file that is always open: a chunk of at most SLOT bytes is written there and
read back into the index at commit, and the slot is free again. It is the same dirty mark
as a working chunk's file (DESIGN rule 1): its header names the inode and chunk index and
says how many bytes it holds, and the recovery at the next start turns every slot in use
into the working chunk file it stands for (ChunkStore.adopt_slots) before it looks.

Slot k lies at k * STRIDE: a header (magic, inode, chunk index, length), then up to SLOT
bytes. A free slot's header is zeros. Bytes are written before the header that counts
them, so a crash never leaves a header claiming bytes that were not written. A chunk that
grows past SLOT moves to a file (ChunkStore.work_write).
"""

from __future__ import annotations

import os
import struct

SLOT = 16 << 10
_HEADER = struct.Struct("<4sQQQ")  # magic, inode, chunk index, length
_MAGIC = b"wsl1"
_DATA = 32  # where a slot's bytes start
STRIDE = _DATA + SLOT


class WorkSlots:
    """The slots file of one store. Only the trio thread changes it; a worker thread may
    read a slot whose chunk its caller keeps unchanged (Sealed.hash_pending)."""

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None  # opened at the first use: a store only read makes none
        # (inode, chunk index) -> [slot, length]
        self.taken: dict[tuple[int, int], list[int]] = {}
        self.free: list[int] = []
        self._next = 0

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            # The slots in use when the store was opened (a crash's) stay taken until
            # adopted (ChunkStore.adopt_slots).
            count = self._count()
            used = {slot for slot, *_ in self.in_use()}
            self.free = [k for k in range(count - 1, -1, -1) if k not in used]
            self._next = count
        return self._fd

    def _count(self) -> int:
        return -(-os.fstat(self._fd).st_size // STRIDE)

    def in_use(self) -> list[tuple[int, int, int, int]]:
        """(slot, inode, chunk index, length) of every slot whose header says it is in
        use, read from the file (none when there is no file)."""
        if self._fd is None and not os.path.exists(self.path):
            return []
        fd = self._open()
        out = []
        for k in range(self._count()):
            raw = os.pread(fd, _HEADER.size, k * STRIDE)
            if len(raw) == _HEADER.size:
                magic, ino, index, length = _HEADER.unpack(raw)
                if magic == _MAGIC and length <= SLOT:
                    out.append((k, ino, index, length))
        return out

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self.taken

    def start(self, key: tuple[int, int], mark: bool = True) -> None:
        """Take a slot for a new, empty working chunk. Without `mark`, its header is left
        to the write that comes next (it writes one with the bytes it counts): until
        then the slot holds nothing a recovery could miss."""
        self._open()
        slot = self.free.pop() if self.free else self._take_new()
        self.taken[key] = [slot, 0]
        if mark:
            self._header(slot, key, 0)

    def _take_new(self) -> int:
        slot, self._next = self._next, self._next + 1
        return slot

    def length(self, key: tuple[int, int]) -> int:
        return self.taken[key][1]

    def write(self, key: tuple[int, int], data: bytes | memoryview, at: int) -> None:
        """All of `data` at `at` (at + len(data) <= SLOT), or OSError (ENOSPC: the file
        could not grow) with the header unchanged."""
        entry = self.taken[key]
        if at > entry[1]:  # a gap reads as zeros, as in a file, not as a former chunk's bytes
            data, at = bytes(at - entry[1]) + bytes(data), entry[1]
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], entry[0] * STRIDE + _DATA + at + done)
        if at + len(view) > entry[1]:
            entry[1] = at + len(view)
            self._header(entry[0], key, entry[1])

    def read(self, key: tuple[int, int], n: int, at: int) -> bytes:
        slot, length = self.taken[key]
        n = max(0, min(n, length - at))
        return os.pread(self._fd, n, slot * STRIDE + _DATA + at) if n else b""

    def truncate(self, key: tuple[int, int], length: int) -> None:
        """Cut the chunk to `length` (<= SLOT) bytes, or make it that long with zeros."""
        entry = self.taken[key]
        if length > entry[1]:
            self.write(key, bytes(length - entry[1]), entry[1])
        elif length < entry[1]:
            entry[1] = length
            self._header(entry[0], key, length)

    def release(self, key: tuple[int, int]) -> None:
        entry = self.taken.pop(key, None)
        if entry is not None:
            os.pwrite(self._fd, bytes(_HEADER.size), entry[0] * STRIDE)
            self.free.append(entry[0])

    def release_found(self, slot: int) -> None:
        """Free a slot found in use when the store was opened (adopted since)."""
        os.pwrite(self._fd, bytes(_HEADER.size), slot * STRIDE)
        self.free.append(slot)

    def read_found(self, slot: int, length: int) -> bytes:
        return os.pread(self._fd, length, slot * STRIDE + _DATA)

    def _header(self, slot: int, key: tuple[int, int], length: int) -> None:
        os.pwrite(self._fd, _HEADER.pack(_MAGIC, key[0], key[1], length), slot * STRIDE)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
