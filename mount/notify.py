"""Telling the kernel what peers changed behind its back.

Invalidation calls block in C until the kernel is done, and the kernel may first need our
handlers: invalidating an entry waits for the operations in progress on its directory
(libfuse's fuse_lowlevel.h lists them), and libfuse's doc/README.notifications forbids
notifying while a request is being handled. So they run on one worker thread, never from a
handler, never under a lock a handler needs, and no handler ever waits for them. Long cache
timeouts stay; this is what keeps a peer's change visible at once.
"""

from __future__ import annotations

import logging
import math

import pyfuse3
import trio
from syncd.index.effects import Effects

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Effects](math.inf)

    def post(self, effects: Effects) -> None:
        if effects.entries or effects.inodes:
            self._send.send_nowait(effects)

    async def run(self) -> None:
        limiter = trio.CapacityLimiter(1)
        async for effects in self._receive:
            await trio.to_thread.run_sync(_invalidate, effects, limiter=limiter,
                                          abandon_on_cancel=True)


def _invalidate(effects: Effects) -> None:
    for parent, name in effects.entries:
        _quietly(pyfuse3.invalidate_entry, parent, name.encode())
    for ino in effects.inodes:
        _quietly(pyfuse3.invalidate_inode, ino, True)


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except FileNotFoundError:
        pass  # the kernel had nothing cached
    except OSError as e:
        log.debug("%s%r: %s", fn.__name__, args, e)
