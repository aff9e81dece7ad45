"""A relay in a local directory: a USB disk, an NFS or SMB mount, an rclone mount.

Every call runs its blocking I/O on a worker thread. `put` writes a temporary file beside
the object (a name starting with `.tmp-`: `list` never returns a name with a segment
that starts with a dot), fsyncs it and renames it into place, so a reader sees the whole
object or nothing. The root is never created: a missing root or marker is `Unreachable`
(an unplugged disk must not be filled beneath its mount point).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

import trio

from syncd.relay.storage import MARKER, Denied, Full, Missing, RelayError, Unreachable, check_name

TEMP_PREFIX = ".tmp-"


class Directory:
    """Storage over a directory (syncd/relay/storage.py)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.url = self.root.as_uri()

    async def check(self) -> None:
        await trio.to_thread.run_sync(self._check)

    async def list(self, prefix: str) -> list[str]:
        check_name(prefix)
        return await trio.to_thread.run_sync(self._list, prefix)

    async def get(self, name: str) -> bytes:
        check_name(name)
        return await trio.to_thread.run_sync(self._get, name)

    async def put(self, name: str, data: bytes) -> None:
        check_name(name)
        await trio.to_thread.run_sync(self._put, name, data)

    async def delete(self, name: str) -> None:
        check_name(name)
        await trio.to_thread.run_sync(self._delete, name)

    # -- on a worker thread

    def _check(self) -> None:
        with self._errors("check"):
            if not (self.root / MARKER).is_file():
                raise self._absent()

    def _absent(self) -> Unreachable:
        if not self.root.is_dir():
            return Unreachable(f"relay directory {self.root} is not there (an unplugged "
                               "disk or an unmounted share?)")
        return Unreachable(f"relay directory {self.root} has no {MARKER} marker: not a "
                           "relay, or its disk is not mounted there")

    def _list(self, prefix: str) -> list[str]:
        with self._errors(f"list {prefix}"):
            self._check()
            top = self.root / prefix
            names = []
            for folder, dirs, files in os.walk(top):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                rel = Path(folder).relative_to(self.root).as_posix()
                names += [f"{rel}/{f}" for f in files if not f.startswith(".")]
            return sorted(names)

    def _get(self, name: str) -> bytes:
        with self._errors(f"get {name}"):
            try:
                return (self.root / name).read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                if name != MARKER or not self.root.is_dir():
                    self._check()
                raise Missing(f"no object {name} on relay {self.url}") from None

    def _put(self, name: str, data: bytes) -> None:
        with self._errors(f"put {name}"):
            if name != MARKER or not self.root.is_dir():  # the marker makes a relay
                self._check()
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(6)}")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                with open(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(fd)
                os.rename(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    def _delete(self, name: str) -> None:
        with self._errors(f"delete {name}"):
            self._check()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / name)

    @contextlib.contextmanager
    def _errors(self, what: str):
        """OSError as the relay errors a person can act on."""
        try:
            yield
        except RelayError:
            raise
        except OSError as e:
            where = f"relay {self.url}: {what}: {e.strerror or e}"
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise Full(f"{where} (free some room there)") from None
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise Denied(f"{where} (check the directory's owner and mode)") from None
            raise Unreachable(where) from None
