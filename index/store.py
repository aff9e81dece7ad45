"""The content store: immutable 1 MiB chunks named by their BLAKE3 digest.

Layout under the store root:
    chunks/ab/abcdef...   committed chunks (the two-hex-digit fan-out is made at init)
    work/<ino>.<index>    working chunks of a file with uncommitted writes (see draft.py);
                          the first one is the file's dirty mark
    work/slots            working chunks of at most SLOT bytes, a slot each instead of a
                          file (index/workslots.py)
    work/<ino>.floor      the lowest size since the draft began, when below the committed
                          size
    retired/<hex>         chunks no version here refers to any more, kept a while for
                          peers that still know the version they belonged to (keep_replaced)
    import/<hex>          chunks of an import (syncd import) written ahead of the
                          transaction that refers to them (stage, unstage)
    reserve               RESERVE bytes held for the index: on a full disk it gives way,
                          so that a file can still be deleted (make_room)

A file's content is its chunk list (index/chunklist.py): stored chunks and holes, which
are stored nowhere. Every chunk is CHUNK bytes except a file's last, which may be shorter;
one of at most INLINE_MAX bytes is held in the index instead (index/inline.py), so a small
file has no chunk file here. Committed chunks are never modified: a write goes to a working
chunk that is renamed into place (or read into the index) at commit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from syncd.index.chunklist import CHUNK, DIGEST, digest_of
from syncd.index.workslots import SLOT, WorkSlots

# Space held back for the index. Without it, a disk filled by a file's writes would leave
# the index unable to commit anything, even the unlink that would free the space.
RESERVE = 4 << 20


class FdCache:
    """A bounded cache of open file descriptors, least recently used closed first.

    Reads of committed chunks and writes to working chunks go through kept fds, so a
    request costs one pread/pwrite, not an open and a close.
    """

    def __init__(self, limit: int = 512):
        self.limit = limit
        self._fds: OrderedDict[object, int] = OrderedDict()

    def get(self, key: object, path: str, flags: int) -> int:
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
        self.work_dir = root / "work"
        # Plain strings on the hot paths: building pathlib paths cost ~60 us per commit.
        self._chunks = f"{root}/chunks"
        self._work = f"{root}/work"
        self._retired = f"{root}/retired"
        self._import = f"{root}/import"
        self.fds = FdCache()
        self.slots = WorkSlots(f"{self._work}/slots")
        # Retired chunk -> (the catalog's sequence number when it was retired, monotonic
        # time); None until keep_replaced (no daemon): replaced chunks are removed at once.
        # Only the trio thread touches it; read_served, on worker threads, reads files.
        self.retired: dict[bytes, tuple[int, float]] | None = None
        # Does some version here refer to this chunk? Set by the Catalog, which knows. A
        # retired chunk can be referred to again (a peer's conflict copy of the version it
        # was replaced in, the same bytes in another file): it counts as here, taken back
        # when read (syncd/fetcher.py, take_back), and is then the only copy of its bytes
        # here, so neither its expiry nor a full disk removes it.
        self.in_use: Callable[[bytes], bool] = lambda digest: False
        # Give up some kept old versions, oldest first: set by index/versions.py
        # (keep_versions). True when it gave up any; their chunks are retired.
        self.give_up_versions: Callable[[], bool] = lambda: False
        self._reserve = f"{root}/reserve"
        # The reserve was given up (the index ran out of space) and not made again yet:
        # writes of content then stop short of the last RESERVE bytes (room_for_content).
        self.reserve_released = False

    @staticmethod
    def create(root: Path) -> None:
        for i in range(256):
            (root / "chunks" / f"{i:02x}").mkdir(parents=True, exist_ok=True)
        (root / "work").mkdir(exist_ok=True)

    # -- committed chunks

    def chunk_path(self, digest: bytes) -> str:
        h = digest.hex()
        return f"{self._chunks}/{h[:2]}/{h}"

    def has(self, digest: bytes) -> bool:
        return os.path.exists(self.chunk_path(digest))

    def read(self, digest: bytes, offset: int, size: int) -> bytes:
        fd = self.fds.get(digest, self.chunk_path(digest), os.O_RDONLY)
        return os.pread(fd, size, offset)

    def prefetch(self, digest: bytes) -> None:
        """Start reading a chunk into the page cache in the background (if it is here: a
        file still arriving from peers may not have it yet)."""
        try:
            fd = self.fds.get(digest, self.chunk_path(digest), os.O_RDONLY)
        except FileNotFoundError:
            return
        os.posix_fadvise(fd, 0, CHUNK, os.POSIX_FADV_WILLNEED)

    def put(self, data: bytes) -> bytes:
        """Store a chunk given as bytes (small edits, zeros); returns its digest."""
        digest = digest_of(data)
        if not self.has(digest):
            self._place(digest, data)
        return digest

    def install(self, work_key: object, work_path: str, digest: bytes) -> None:
        """Move a finished working chunk into the store under its digest. Identical
        content is stored once: renaming over an existing chunk replaces it with the same
        bytes (and mends it, were it damaged)."""
        os.rename(work_path, self.chunk_path(digest))
        self.fds.rekey(work_key, digest)

    def remove(self, digest: bytes) -> None:
        self.fds.drop(digest)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.chunk_path(digest))

    def put_verified(self, digest: bytes, data: bytes | memoryview,
                     hashed: bytes | None = None) -> bool:
        """Install a chunk that came from elsewhere (a peer) if its bytes match `digest`
        (`hashed`: their digest, when already computed); False, installing nothing, when
        they do not (DESIGN rule 2)."""
        if not matches(digest, data, hashed):
            return False
        self._place(digest, data)
        return True

    def _place(self, digest: bytes, data: bytes | memoryview) -> None:
        """Write a chunk under its name through a temporary of its own (several worker
        threads may install at once) and a rename, so the store never holds a half-written
        chunk: a write that fails (a full disk) leaves nothing behind."""
        _write_whole(self.chunk_path(digest), data)

    # -- chunks staged by an import: written (on worker threads, by whichever process
    # reads the source) before the transaction that refers to them, and moved among the
    # committed chunks right after it. Recovery sorts out what a crash left (staged).

    def staged_path(self, digest: bytes) -> str:
        return f"{self._import}/{digest.hex()}"

    def stage(self, digest: bytes, data: bytes) -> None:
        """Write a chunk of an import, even one the store has: that one may leave the
        store before the import's transaction refers to it."""
        os.makedirs(self._import, exist_ok=True)
        _write_whole(self.staged_path(digest), data)

    def unstage(self, digests: list[bytes]) -> None:
        """Move staged chunks among the committed ones (renaming over one the store has
        replaces it with the same bytes)."""
        for digest in digests:
            with contextlib.suppress(FileNotFoundError):
                os.rename(self.staged_path(digest), self.chunk_path(digest))

    def drop_staged(self, digests: list[bytes]) -> None:
        for digest in digests:
            _unlink(self.staged_path(digest))

    def staged(self) -> list[bytes]:
        """Every chunk staged and not moved yet (after a crash or an interrupted import)."""
        try:
            names = os.listdir(self._import)
        except FileNotFoundError:
            return []
        return [bytes.fromhex(n) for n in names if len(n) == 2 * DIGEST]

    # -- replaced chunks, kept a while. A peer that learnt of a version just before its
    # maker replaced or deleted it asks for its chunks: without them it could open nothing
    # (soak bug 16), and a conflict copy or a file a move brought back from a delete would
    # be held by nobody (bug 4). They are served, never read by the mount.

    def keep_replaced(self, seq: int) -> None:
        """Retire replaced chunks from now on instead of removing them. Those retired
        before a restart count as retired at `seq`, now."""
        os.makedirs(self._retired, exist_ok=True)
        now = time.monotonic()
        self.retired = {bytes.fromhex(name): (seq, now) for name in os.listdir(self._retired)
                        if len(name) == 2 * DIGEST}

    def retire(self, digest: bytes, seq: int) -> None:
        """A chunk no version here refers to since sequence number `seq`. One retired
        already (a version referred to it again meanwhile) is kept from now on, as if
        retired only now: peers may know that version."""
        if self.retired is None:
            self.remove(digest)
            return
        self.fds.drop(digest)
        try:
            os.rename(self.chunk_path(digest), self._retired_path(digest))
        except FileNotFoundError:
            if digest not in self.retired:
                return
        self.retired[digest] = (seq, time.monotonic())

    def read_served(self, digest: bytes) -> bytes | None:
        """A chunk's bytes for a peer, retired or not; None when it is not here."""
        for path in (self.chunk_path(digest), self._retired_path(digest)):
            try:
                with open(path, "rb") as f:
                    return f.read()
            except FileNotFoundError:
                continue
        return None

    def expire_retired(self, confirmed: int, min_age: float, max_age: float) -> None:
        """Remove the retired chunks every peer has seen replaced (retired at or before
        the sequence number `confirmed`) once `min_age` seconds old, any at `max_age`;
        never one a version here refers to again (in_use)."""
        if not self.retired:
            return
        now = time.monotonic()
        for digest, (seq, at) in list(self.retired.items()):
            if (now - at >= max_age or (seq <= confirmed and now - at >= min_age)) \
                    and not self.in_use(digest):
                del self.retired[digest]
                _unlink(self._retired_path(digest))

    def drop_retired(self) -> bool:
        """Remove every retired chunk that no version here refers to again (the disk is
        full); True when there were any."""
        if not self.retired:
            return False
        dropped = False
        for digest in list(self.retired):
            if not self.in_use(digest):
                del self.retired[digest]
                _unlink(self._retired_path(digest))
                dropped = True
        return dropped

    # -- a full disk

    def make_room(self, for_index: bool = False) -> bool:
        """The disk is full: give up old versions (a batch of the oldest), then the
        replaced chunks kept for peers and, when the index itself could not commit, the
        reserve. True when anything was freed (worth one more try)."""
        freed = self.give_up_versions()
        freed = self.drop_retired() or freed
        if for_index:
            freed = self.release_reserve() or freed
        return freed

    def release_reserve(self) -> bool:
        """Give up the reserve, so that the index can commit; True when it was there."""
        if not os.path.exists(self._reserve):
            return False
        _unlink(self._reserve)
        self.reserve_released = True
        return True

    def retry_when_full(self, fn, *args):
        """fn(*args), tried once more after make_room when it fails with ENOSPC."""
        try:
            return fn(*args)
        except OSError as e:
            if e.errno != errno.ENOSPC or not self.make_room():
                raise
        return fn(*args)

    def room_for_content(self) -> bool:
        """Is there room for content? Always, unless the reserve is given up (the index ran
        out of space) and the disk is within RESERVE of full even after the replaced chunks
        kept for peers are given up: the index's last bytes are not for content. One
        statvfs while the reserve is given up; nothing otherwise."""
        if not self.reserve_released or self._free() >= RESERVE:
            return True
        self.make_room()
        return self._free() >= RESERVE

    def _free(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def keep_reserve(self) -> bool:
        """Hold the reserve when the disk has room for it with as much to spare, give it up
        when the disk is fuller than it; True when it is in place. Blocks (fallocate): for
        a worker thread; the caller sets `reserve_released` from the answer."""
        free = self._free()
        if os.path.exists(self._reserve):
            if free >= RESERVE:
                return True
            _unlink(self._reserve)
            return False
        if free < 2 * RESERVE:
            return False
        fd = os.open(self._reserve + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE)
        except OSError:
            _unlink(self._reserve + ".tmp")
            return False
        finally:
            os.close(fd)
        os.rename(self._reserve + ".tmp", self._reserve)
        return True

    def retired_usage(self) -> tuple[int, int]:
        """How many retired chunks there are, and their bytes (read from the disk, so
        `syncd status` can tell without the serving process)."""
        try:
            sizes = [e.stat().st_size for e in os.scandir(self._retired)]
        except FileNotFoundError:
            return 0, 0
        return len(sizes), sum(sizes)

    def _retired_path(self, digest: bytes) -> str:
        return f"{self._retired}/{digest.hex()}"

    def is_retired(self, digest: bytes) -> bool:
        return bool(self.retired) and digest in self.retired

    def retired_intact(self, digest: bytes) -> bool:
        """Does a retired chunk still match its name? Reads and hashes up to 1 MiB: for a
        worker thread."""
        try:
            with open(self._retired_path(digest), "rb") as f:
                return digest_of(f.read()) == digest
        except FileNotFoundError:
            return False

    def put_back(self, digest: bytes, intact: bool) -> bool:
        """A version needs a retired chunk again: back in place when `intact`
        (retired_intact said so), removed when not. True when it is in place."""
        if not self.retired or self.retired.pop(digest, None) is None:
            return False
        path = self._retired_path(digest)
        if not intact:
            _unlink(path)
            return False
        try:
            os.rename(path, self.chunk_path(digest))
        except FileNotFoundError:
            return False
        return True

    def verify(self, digest: bytes) -> bool:
        try:
            with open(self.chunk_path(digest), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return False
        return digest_of(data) == digest

    # -- working chunks: store/work/<ino>.<index>, and <ino>.floor. A file's first working
    # chunk is its dirty mark (DESIGN rule 1): marking costs no syscall of its own.

    def work_path(self, ino: int, index: int) -> str:
        return f"{self._work}/{ino}.{index}"

    def work_fd(self, ino: int, index: int) -> int:
        return self.fds.get(("w", ino, index), self.work_path(ino, index),
                            os.O_RDWR | os.O_CREAT)

    def start_work(self, ino: int, index: int, small: bool, mark: bool = True) -> None:
        """Begin a working chunk, empty: in a slot when it is expected to stay `small`
        (at most SLOT bytes), else a file; without `mark`, a write follows at once
        (WorkSlots.start). A leftover of an interrupted draft is not ours.
        Truncating a fresh, empty file would cost more than the check: ext4 then allocates
        its blocks at once (auto_da_alloc), so a chunk dropped right after its commit frees
        blocks, which a disk mounted with `discard` pays for (~0.5 ms a file here)."""
        if small:
            self.slots.start((ino, index), mark)
            return
        fd = self.work_fd(ino, index)
        if os.fstat(fd).st_size:
            os.ftruncate(fd, 0)

    def work_write(self, ino: int, index: int, data: bytes | memoryview, at: int) -> int:
        """Write to a working chunk; how many bytes were written (fewer when the disk
        filled up part way). A slot's chunk that would grow past SLOT moves to a file."""
        key = (ino, index)
        if key in self.slots:
            if at + len(data) <= SLOT:
                self.slots.write(key, data, at)
                return len(data)
            self._to_file(key)
        return os.pwrite(self.work_fd(ino, index), data, at)

    def work_read(self, ino: int, index: int, n: int, at: int) -> bytes:
        key = (ino, index)
        if key in self.slots:
            return self.slots.read(key, n, at)
        return os.pread(self.work_fd(ino, index), n, at)

    def work_truncate(self, ino: int, index: int, length: int) -> None:
        key = (ino, index)
        if key in self.slots:
            if length <= SLOT:
                self.slots.truncate(key, length)
                return
            self._to_file(key)
        os.ftruncate(self.work_fd(ino, index), length)

    def _to_file(self, key: tuple[int, int]) -> None:
        """Move a slot's chunk to a working chunk file of its own (it outgrew the slot):
        the file is whole before the slot is given up."""
        data = self.slots.read(key, SLOT, 0)
        fd = self.work_fd(*key)
        os.ftruncate(fd, 0)
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], done)
        self.slots.release(key)

    def read_work(self, ino: int, index: int, length: int) -> bytes:
        """The first `length` bytes of a working chunk."""
        return self.work_read(ino, index, length, 0)

    def hash_work(self, ino: int, index: int) -> bytes:
        """The digest of a working chunk. Safe on a worker thread for a chunk that nobody
        changes meanwhile: a file is read through a descriptor of its own."""
        if (ino, index) in self.slots:
            return digest_of(self.slots.read((ino, index), SLOT, 0))
        return hash_file(self.work_path(ino, index))

    def install_work(self, ino: int, index: int, digest: bytes) -> None:
        """Make a finished working chunk the store's chunk `digest` (a slot's is written
        out; a file is renamed into place, install)."""
        key = (ino, index)
        if key in self.slots:
            if not self.has(digest):
                self._place(digest, self.slots.read(key, SLOT, 0))
            self.slots.release(key)
            return
        self.install(("w", ino, index), self.work_path(ino, index), digest)

    def drop_work(self, ino: int, index: int) -> None:
        if (ino, index) in self.slots:
            self.slots.release((ino, index))
            return
        self.fds.drop(("w", ino, index))
        _unlink(self.work_path(ino, index))

    def adopt_slots(self) -> None:
        """At the start, before the recovery looks at the work area: every slot found in
        use becomes the working chunk file it stands for, which it replaces (it was
        written last: a chunk moves from a slot to a file before the slot is freed)."""
        for slot, ino, index, length in self.slots.in_use():
            self.slots.taken.pop((ino, index), None)
            path = self.work_path(ino, index)
            self.fds.drop(("w", ino, index))
            _write_whole(path, self.slots.read_found(slot, length))
            self.slots.release_found(slot)

    def set_floor(self, ino: int, floor: int) -> None:
        """A truncate lowered the draft below its committed size: recovery must not take
        committed bytes above `floor` (write-then-rename, so never half written)."""
        tmp = self.work_dir / f"{ino}.floor.tmp"
        tmp.write_text(str(floor))
        os.rename(tmp, self.work_dir / f"{ino}.floor")

    def drop_floor(self, ino: int) -> None:
        _unlink(self.work_dir / f"{ino}.floor")

    def floor(self, ino: int) -> int | None:
        try:
            return int((self.work_dir / f"{ino}.floor").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _work_files(self) -> dict[int, dict[str, str]]:
        files: dict[int, dict[str, str]] = {}
        for name in os.listdir(self._work):
            ino, _, part = name.partition(".")
            if ino.isdigit():
                files.setdefault(int(ino), {})[part] = f"{self._work}/{name}"
        return files

    def work_inodes(self) -> list[int]:
        """Inodes with anything in the work area: uncommitted writes, or what a commit cut
        short left (a floor without working chunks)."""
        return sorted(self._work_files().keys() | {ino for _, ino, _, _ in self.slots.in_use()})

    def dirty_inodes(self) -> list[int]:
        """Inodes with uncommitted writes (only a mount's start and status scan for them)."""
        files = {ino for ino, parts in self._work_files().items()
                 if any(p.isdigit() for p in parts)}
        return sorted(files | {ino for _, ino, _, _ in self.slots.in_use()})

    def work_chunks(self, ino: int) -> dict[int, str]:
        parts = self._work_files().get(ino, {})
        return {int(p): path for p, path in parts.items() if p.isdigit()}

    def clear_work(self, ino: int) -> None:
        """Remove everything an inode left in the work area (recovery, discard)."""
        for part in self._work_files().get(ino, {}):
            if part.isdigit():
                self.drop_work(ino, int(part))
            else:
                _unlink(self.work_dir / f"{ino}.{part}")

    def close(self) -> None:
        self.fds.close()
        self.slots.close()


def _write_whole(path: str, data: bytes | memoryview) -> None:
    """Write a file through a temporary of its own and a rename: all of it or nothing."""
    tmp = f"{path}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, path)
    except OSError:
        _unlink(tmp)
        raise


def _unlink(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def matches(digest: bytes, data: bytes | memoryview, hashed: bytes | None = None) -> bool:
    """Are these a chunk's bytes (`hashed`: their digest, when already computed)?"""
    return (digest_of(data) if hashed is None else hashed) == digest


def hash_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return digest_of(f.read())
