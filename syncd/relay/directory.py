"""A relay in a directory (a USB disk, NFS, SMB, an rclone mount): write to a hidden
temporary file, then rename, so a reader never sees part of an object. Blocking file
calls run in worker threads."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

import trio

from syncd.relay.storage import MARKER, Denied, Full, Missing, RelayError, Unreachable, check_name


class Directory:
    def __init__(self, path: str):
        self.url = path
        self.root = Path(path)

    async def check(self) -> None:
        await trio.to_thread.run_sync(self._check)

    async def list(self, prefix: str) -> list[str]:
        return await trio.to_thread.run_sync(self._list, check_name(prefix))

    async def get(self, name: str) -> bytes:
        return await trio.to_thread.run_sync(self._get, check_name(name))

    async def put(self, name: str, data: bytes) -> None:
        await trio.to_thread.run_sync(self._put, check_name(name), data)

    async def delete(self, name: str) -> None:
        await trio.to_thread.run_sync(self._delete, check_name(name))

    async def aclose(self) -> None:
        """Nothing to release: every call opens and closes its own files."""

    # -- in a worker thread

    def _check(self, marker: bool = True) -> None:
        if not self.root.is_dir():
            raise Unreachable(f"{self.url}: the relay's directory does not exist")
        if marker and not (self.root / MARKER).is_file():
            raise Unreachable(f"{self.url}: no {MARKER} in the directory: not a relay, or "
                              "its disk is not mounted")

    def _list(self, prefix: str) -> list[str]:
        names = []
        if not (self.root / prefix).is_dir():
            self._check()
            return names
        gone: list[OSError] = []

        def onerror(e: OSError) -> None:
            if not isinstance(e, FileNotFoundError):
                raise e
            gone.append(e)
        with self._errors(prefix):
            for dirpath, dirnames, filenames in os.walk(self.root / prefix, onerror=onerror):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                rel = Path(dirpath).relative_to(self.root).as_posix()
                names += [f"{rel}/{f}" for f in filenames if not f.startswith(".")]
        if gone:  # never a directory we remove: the relay was taken away while listed
            self._check()
            raise Unreachable(f"{self.url}: {prefix} went away while it was listed")
        return sorted(names)

    def _get(self, name: str) -> bytes:
        with self._errors(name, marker=name != MARKER):
            return (self.root / name).read_bytes()

    def _put(self, name: str, data: bytes) -> None:
        path = self.root / name
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        with self._errors(name):
            self._check(marker=name != MARKER)  # the marker makes a relay of a directory
            for parent in reversed(path.relative_to(self.root).parents[:-1]):
                (self.root / parent).mkdir(exist_ok=True)
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.rename(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise

    def _delete(self, name: str) -> None:
        with self._errors(name):
            (self.root / name).unlink(missing_ok=True)
            self._check()

    @contextlib.contextmanager
    def _errors(self, name: str, marker: bool = True):
        """Map OSError onto the relay errors: a missing `name` is Missing only while the
        relay itself is there (only its directory, for the marker)."""
        try:
            yield
        except FileNotFoundError as e:
            self._check(marker)
            raise Missing(f"{self.url}: no object {name}") from e
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise Full(f"{self.url}: no room for {name}: {e.strerror}") from e
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise Denied(f"{self.url}: {name}: {e.strerror}") from e
            if e.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):  # a name in the way
                self._check(marker)  # ... or the relay taken away under us
                raise RelayError(f"{self.url}: {name}: {e.strerror}") from e
            raise Unreachable(f"{self.url}: {name}: {e.strerror or e}") from e
