"""Names that syncd gives to files it creates beside a user's file (DESIGN rules 1 and 3)."""

from __future__ import annotations

import time
from collections.abc import Callable

NAME_MAX = 255


def tagged_name(name: str, tag: str) -> str:
    """NAME.TAG.EXT: EXT is the part after the last dot (none for names like `.bashrc`),
    and NAME is shortened, on a character boundary, to keep the result within 255 bytes."""
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, ext = name, ""
    suffix = f".{tag}" + (f".{ext}" if ext else "")
    room = NAME_MAX - len(suffix.encode())
    raw = stem.encode()[: max(room, 1)]
    return raw.decode("utf-8", "ignore") + suffix


def free_tagged_name(name: str, tag: str, taken: Callable[[str], bool]) -> str:
    """tagged_name, with -2, -3, ... added to the tag until the name is free."""
    candidate = tagged_name(name, tag)
    n = 2
    while taken(candidate):
        candidate = tagged_name(name, f"{tag}-{n}")
        n += 1
    return candidate


def conflict_name(name: str, device: str | None, mtime_ns: int | None = None,
                  taken: Callable[[str], bool] = lambda _: False) -> str:
    """NAME.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.EXT, a conflict copy beside `name` (DESIGN
    rule 3): the loser's mtime in UTC and the first 7 characters of its device id. Without
    an mtime (a directory's is local, not versioned) the device alone. Numbered while
    `taken`."""
    stamp = "" if mtime_ns is None else f"{utc_stamp(mtime_ns / 1e9)}-"
    return free_tagged_name(name, f"sync-conflict-{stamp}{(device or '')[:7]}", taken)


def utc_stamp(t: float | None = None) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(t))
