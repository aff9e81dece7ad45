"""The content store: immutable 1 MiB chunks named by their BLAKE3 digest.

Layout under the store root:
    chunks/ab/abcdef...   committed chunks (the two-hex-digit fan-out is made at init)
    work/<ino>/<index>    working chunks of a file with uncommitted writes (see draft.py);
    work/<ino>/floor      the lowest size since the draft began, when below the committed
                          size. The directory work/<ino>/ is the file's dirty mark.

A file's content is its chunk list; its hash is BLAKE3 over the concatenated digests. Every
chunk is CHUNK bytes except the last, which may be shorter. Committed chunks are never
modified: a write goes to a working chunk that is renamed into place at commit.
"""

from __future__ import annotations

import errno
import os
from collections import OrderedDict
from pathlib import Path

import blake3

CHUNK = 1 << 20
DIGEST = 32


def file_hash(chunks: bytes) -> str:
    """The content hash of a file from its concatenated chunk digests."""
    return "blake3:" + blake3.blake3(chunks).hexdigest()


def digest_of(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


def split_chunks(blob: bytes) -> list[bytes]:
    return [blob[i : i + DIGEST] for i in range(0, len(blob), DIGEST)]


ZERO_CHUNK = digest_of(bytes(CHUNK))


class FdCache:
    """A bounded cache of open file descriptors, least recently used closed first.

    Reads of committed chunks and writes to working chunks go through kept fds, so a
    request costs one pread/pwrite, not an open and a close.
    """

    def __init__(self, limit: int = 512):
        self.limit = limit
        self._fds: OrderedDict[object, int] = OrderedDict()

    def get(self, key: object, path: Path, flags: int) -> int:
        fd = self._fds.get(key)
        if fd is not None:
            self._fds.move_to_end(key)
            return fd
        fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
        self._fds[key] = fd
        if len(self._fds) > self.limit:
            _, old = self._fds.popitem(last=False)
            os.close(old)
        return fd

    def rekey(self, old: object, new: object) -> None:
        """A file was renamed: keep its fd under its new name (if that is not cached)."""
        fd = self._fds.pop(old, None)
        if fd is None:
            return
        if new in self._fds:
            os.close(fd)
        else:
            self._fds[new] = fd

    def drop(self, key: object) -> None:
        fd = self._fds.pop(key, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])


class ChunkStore:
    def __init__(self, root: Path):
        self.root = root
        self.chunks_dir = root / "chunks"
        self.work_dir = root / "work"
        self.fds = FdCache()

    @staticmethod
    def create(root: Path) -> None:
        for i in range(256):
            (root / "chunks" / f"{i:02x}").mkdir(parents=True, exist_ok=True)
        (root / "work").mkdir(exist_ok=True)

    # -- committed chunks

    def chunk_path(self, digest: bytes) -> Path:
        h = digest.hex()
        return self.chunks_dir / h[:2] / h

    def has(self, digest: bytes) -> bool:
        return self.chunk_path(digest).exists()

    def read(self, digest: bytes, offset: int, size: int) -> bytes:
        fd = self.fds.get(digest, self.chunk_path(digest), os.O_RDONLY)
        return os.pread(fd, size, offset)

    def put(self, data: bytes) -> bytes:
        """Store a chunk given as bytes (small edits, zeros); returns its digest."""
        digest = digest_of(data)
        path = self.chunk_path(digest)
        if not path.exists():
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
            os.rename(tmp, path)
        return digest

    def ensure_zero(self, length: int) -> bytes:
        """The digest of `length` zero bytes, stored (holes in sparse files)."""
        if length == CHUNK and self.chunk_path(ZERO_CHUNK).exists():
            return ZERO_CHUNK
        return self.put(bytes(length))

    def install(self, work_key: object, work_path: Path, digest: bytes) -> None:
        """Move a finished working chunk into the store under its digest."""
        path = self.chunk_path(digest)
        if path.exists():  # identical content is stored once
            os.unlink(work_path)
            self.fds.drop(work_key)
        else:
            os.rename(work_path, path)
            self.fds.rekey(work_key, digest)

    def remove(self, digest: bytes) -> None:
        self.fds.drop(digest)
        try:
            os.unlink(self.chunk_path(digest))
        except FileNotFoundError:
            pass

    def verify(self, digest: bytes) -> bool:
        try:
            data = self.chunk_path(digest).read_bytes()
        except FileNotFoundError:
            return False
        return digest_of(data) == digest

    # -- working chunks

    def work_path(self, ino: int, index: int) -> Path:
        return self.work_dir / str(ino) / str(index)

    def work_fd(self, ino: int, index: int) -> int:
        return self.fds.get(("w", ino, index), self.work_path(ino, index),
                            os.O_RDWR | os.O_CREAT)

    def mark_dirty(self, ino: int) -> None:
        """Before a file's first uncommitted write: its working directory is its mark."""
        try:
            os.mkdir(self.work_dir / str(ino))
        except FileExistsError:
            pass

    def set_floor(self, ino: int, floor: int) -> None:
        """A truncate lowered the draft below its committed size: recovery must not take
        committed bytes above `floor` (store-then-rename, so never half written)."""
        tmp = self.work_dir / str(ino) / "floor.tmp"
        tmp.write_text(str(floor))
        os.rename(tmp, tmp.with_name("floor"))

    def floor(self, ino: int) -> int | None:
        try:
            return int((self.work_dir / str(ino) / "floor").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def dirty_inodes(self) -> list[int]:
        return [int(n) for n in os.listdir(self.work_dir) if n.isdigit()]

    def drop_work(self, ino: int, index: int) -> None:
        self.fds.drop(("w", ino, index))
        try:
            os.unlink(self.work_path(ino, index))
        except FileNotFoundError:
            pass

    def clear_work(self, ino: int) -> None:
        """Remove an inode's working directory, and with it its dirty mark (after a commit,
        whose chunks were moved out of it, or a discard)."""
        d = self.work_dir / str(ino)
        try:
            os.rmdir(d)  # the common case: a commit left it empty
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.ENOTEMPTY:
                raise
        for name in os.listdir(d):
            if name.isdigit():
                self.drop_work(ino, int(name))
            else:
                os.unlink(d / name)
        os.rmdir(d)

    def work_chunks(self, ino: int) -> dict[int, Path]:
        d = self.work_dir / str(ino)
        try:
            return {int(n): d / n for n in os.listdir(d) if n.isdigit()}
        except FileNotFoundError:
            return {}

    def close(self) -> None:
        self.fds.close()


def hash_file(path: Path) -> bytes:
    with open(path, "rb") as f:
        return digest_of(f.read())
