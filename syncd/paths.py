"""PATH arguments (docs/cli.md, "PATH arguments"): a place in the share, resolved
lexically, without touching the file system (the mount may be down, or be the path)."""

from __future__ import annotations

import os

from syncd.home import USAGE, Home, UserError


def share_path(home: Home, arg: str, mountpoint: str | None) -> str:
    """The path inside the share, '' for its root, components joined by '/'."""
    mount = os.path.normpath(mountpoint) if mountpoint else None
    if os.path.isabs(arg) or (mount and _inside(os.path.abspath(arg), mount)):
        full = os.path.normpath(os.path.abspath(arg))
        if mount is None or not _inside(full, mount):
            where = f"the mount point {mount}" if mount else "a mount of this share"
            raise UserError(f"{arg} is outside {where}: give a path inside it, or a path "
                            "relative to the share's root", USAGE)
        rel = os.path.relpath(full, mount)
    else:
        rel = os.path.normpath(arg)
    if rel == ".":
        return ""
    if rel.startswith(".."):
        raise UserError(f"{arg} leaves the share", USAGE)
    return rel


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
