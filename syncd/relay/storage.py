"""The one small interface every relay backend implements: list, get, put-atomic, delete.

Object names are relative keys of `/`-separated segments made of [A-Za-z0-9._-] (no empty
segment, no `.` or `..`), so that the same name works as a path under a directory, as a
WebDAV URL below a collection and as an S3 key below a prefix. A backend never creates its
root: a root that is missing or has no marker object is `Unreachable` (an unplugged disk
must not be filled beneath its mount point).

Errors are the four classes below, each carrying a message a person can act on; a backend
maps its own failures (OSError, HTTP status, timeouts) onto them and lets nothing else out.
"""

from __future__ import annotations

import re
from typing import Protocol

MARKER = ".syncd-relay"
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


class RelayError(Exception):
    """A relay operation failed; str() says why, for the log and `syncd status`."""


class Unreachable(RelayError):
    """The relay is not there: root or marker missing, network failure, connection cut."""


class Denied(RelayError):
    """The relay refused our credentials (WebDAV 401/403, EACCES)."""


class Full(RelayError):
    """The relay has no room (ENOSPC, EDQUOT, WebDAV 507)."""


class Missing(RelayError):
    """The named object does not exist (get of a name nobody wrote, or already removed)."""


def check_name(name: str) -> str:
    """Return `name` if it is a valid object name, else raise ValueError."""
    parts = name.split("/")
    if not all(_SEGMENT.fullmatch(p) and p not in (".", "..") for p in parts):
        raise ValueError(f"invalid relay object name: {name!r}")
    return name


class Storage(Protocol):
    """A relay's storage. All methods are async (trio); blocking backends use worker threads."""

    url: str  # as the user gave it, without credentials: for status and the log

    async def check(self) -> None:
        """Raise Unreachable unless the root exists and holds the marker object."""

    async def list(self, prefix: str) -> list[str]:
        """Names of the complete objects whose name starts with `prefix` + "/" (recursive),
        sorted. An empty list when nothing is there; never names a partial upload."""

    async def get(self, name: str) -> bytes:
        """The whole object; Missing if it does not exist."""

    async def put(self, name: str, data: bytes) -> None:
        """Store the object atomically: a reader sees the old object, nothing, or all of
        `data`, never a part (write-then-rename on a directory, one PUT on WebDAV or S3).
        Creates the parent "directories" the backend needs."""

    async def delete(self, name: str) -> None:
        """Remove the object; no error if it is already gone."""

    async def aclose(self) -> None:
        """Release what the backend holds (a WebDAV client's connections); the storage is
        not used after."""
