"""What applying remote states changed here, for the mount and the daemon."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Effects:
    """What applying changed, for the mount: kernel caches to invalidate and inodes that
    may have lost their last name."""

    entries: set[tuple[int, str]] = field(default_factory=set)  # (parent ino, name)
    inodes: set[int] = field(default_factory=set)  # attributes changed in place
    orphans: set[int] = field(default_factory=set)
    # File inodes a remote change took from their node: inode -> (node, content version
    # vector the inode had). Kept in Catalog.detached: a writer still on one makes a
    # concurrent version.
    detached: dict[int, tuple[str, dict[str, int]]] = field(default_factory=dict)
    missing: set[int] = field(default_factory=set)  # new file inodes whose chunks are not here
    # Files whose content may be held by nobody (conflict copies, files back from a
    # delete) and is not all here: the daemon drops those nobody holds (drop_unheld).
    unheld: set[str] = field(default_factory=set)
