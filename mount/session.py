"""The kernel's side of one mount: pyfuse3's init, main loop and close. One mount per
process (pyfuse3 keeps global state); syncd/serving.py runs the process around it."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import pyfuse3
import trio
from syncd.mount.operations import Filesystem

log = logging.getLogger(__name__)

READAHEAD_KB = 1024


class MountError(Exception):
    """The kernel refused the mount; the message says why and what to check."""


def options(fsname: str, allow_other: bool, debug: bool) -> set[str]:
    # nosuid, nodev: modes come from peers too, and a set-user-ID bit pushed by any
    # member of the cluster must not make a program run as root here.
    out = set(pyfuse3.default_options) | {"subtype=syncd", f"fsname={fsname}", "nosuid",
                                          "nodev"}
    if allow_other:
        out.add("allow_other")
    if debug:
        out.add("debug")
    return out


class _LateReplies(logging.Filter):
    """pyfuse3 logs an ERROR when a reply finds no request waiting for it (ENOENT): the
    kernel gave up on that request, interrupted or unmounted meanwhile (a file's release,
    which the kernel sends after close() returned, just before `fusermount3 -u`). Nothing
    is lost: a close commits before it returns. Not an error, so not logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "fuse_reply_* failed with No such file or directory" not in record.getMessage()


@contextlib.contextmanager
def mounted(fs: Filesystem, mountpoint: str, opts: set[str]) -> Iterator[None]:
    """The file system mounted on `mountpoint` for the block; unmounted after it."""
    logging.getLogger("pyfuse3").addFilter(_LateReplies())
    try:
        pyfuse3.init(fs, mountpoint, opts)
    except RuntimeError as e:
        hint = ""
        if not os.access("/dev/fuse", os.R_OK | os.W_OK):
            hint = (f" (/dev/fuse is mode {os.stat('/dev/fuse').st_mode & 0o777:o} and "
                    "not usable by you; Debian makes it 0666)")
        raise MountError(f"cannot mount on {mountpoint}: {e}{hint}") from None
    try:
        yield
    finally:
        pyfuse3.close(unmount=True)


async def serve() -> None:
    """Answer the kernel's requests until the file system is unmounted or `stop`."""
    await pyfuse3.main()


def stop() -> None:
    """Make `serve` return (pyfuse3 installs no signal handlers of its own)."""
    pyfuse3.terminate()


async def raise_readahead(fs: Filesystem, device: str) -> None:
    """FUSE reads come in readahead-sized requests, 128 KiB by default; 1 MiB makes a
    cold sequential read ~30% faster here. Only root may set it, and only after INIT,
    which clamps it to what the kernel proposed. `device`: the mount's major:minor."""
    await fs.initialized.wait()
    try:
        await trio.to_thread.run_sync(_write_text, f"/sys/class/bdi/{device}/read_ahead_kb",
                                      str(READAHEAD_KB))
    except OSError as e:
        log.debug("readahead left at the kernel's default: %s", e)


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
