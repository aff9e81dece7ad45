"""A model of one peer's tree while it is cut off from every other peer (an "island").

Nothing reaches an island peer from outside, so its mount must behave exactly like a
local file system, and what its own operations leave behind is known exactly: the model
says which versions written there are still the content of some file when the island
ends. Those versions are concurrent with everything the other peers did meanwhile, so
DESIGN rule 3 must keep every one of them (as the file, or as a conflict copy).

Content of files that existed before the island is `None` (unknown: the peer may not hold
it, and fetching it is impossible while cut off) until an operation reads it.
"""

from __future__ import annotations

import errno
import posixpath

FILE, DIR = "file", "dir"


class Model:
    def __init__(self, entries: dict[str, tuple[str, str | None]]):
        # path -> (kind, content digest or None); directories have None
        self.entries = dict(entries)

    # -- queries

    def kind(self, path: str) -> str | None:
        e = self.entries.get(path)
        return e[0] if e else None

    def content(self, path: str) -> str | None:
        return self.entries[path][1]

    def children(self, path: str) -> list[str]:
        prefix = path + "/"
        return [p for p in self.entries if p.startswith(prefix)]

    def parent_error(self, path: str) -> int | None:
        """ENOENT or ENOTDIR when a path's parent cannot hold it."""
        parent = posixpath.dirname(path)
        parts = parent.split("/") if parent else []
        for i in range(len(parts)):
            k = self.kind("/".join(parts[: i + 1]))
            if k is None:
                return errno.ENOENT
            if k != DIR:
                return errno.ENOTDIR
        return None

    def lookup_error(self, path: str) -> int | None:
        """The errno of resolving an existing path, or None when it exists."""
        err = self.parent_error(path)
        if err is not None:
            return err
        return None if self.kind(path) else errno.ENOENT

    # -- the operations the soak's workers make (each returns the expected errno)

    def open_existing(self, path: str, write: bool) -> int | None:
        err = self.lookup_error(path)
        if err is not None:
            return err
        if self.kind(path) == DIR and write:
            return errno.EISDIR
        return None

    def create(self, path: str) -> int | None:
        err = self.parent_error(path)
        if err is not None:
            return err
        if self.kind(path):
            return errno.EEXIST
        return None

    def set_content(self, path: str, digest: str | None) -> None:
        self.entries[path] = (FILE, digest)

    def mkdir(self, path: str) -> int | None:
        err = self.parent_error(path)
        if err is not None:
            return err
        if self.kind(path):
            return errno.EEXIST
        self.entries[path] = (DIR, None)
        return None

    def rmdir(self, path: str) -> int | None:
        err = self.lookup_error(path)
        if err is not None:
            return err
        if self.kind(path) != DIR:
            return errno.ENOTDIR
        if self.children(path):
            return errno.ENOTEMPTY
        del self.entries[path]
        return None

    def unlink(self, path: str) -> int | None:
        err = self.lookup_error(path)
        if err is not None:
            return err
        if self.kind(path) == DIR:
            return errno.EISDIR
        del self.entries[path]
        return None

    def chmod(self, path: str) -> int | None:
        return self.lookup_error(path)

    def rename(self, src: str, dst: str) -> int | None:
        err = self.lookup_error(src)
        if err is not None:
            return err
        err = self.parent_error(dst)
        if err is not None:
            return err
        if src == dst:
            return None
        skind, dkind = self.kind(src), self.kind(dst)
        if skind == DIR and (dst + "/").startswith(src + "/"):
            return errno.EINVAL
        if dkind is not None:
            if skind == DIR and dkind != DIR:
                return errno.ENOTDIR
            if skind != DIR and dkind == DIR:
                return errno.EISDIR
            if dkind == DIR and self.children(dst):
                return errno.ENOTEMPTY
            del self.entries[dst]
        moved = {src: self.entries.pop(src)}
        for p in self.children(src):
            moved[p] = self.entries.pop(p)
        for p, e in moved.items():
            self.entries[dst + p[len(src):]] = e
        return None
