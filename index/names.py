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


def utc_stamp(t: float | None = None) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(t))
