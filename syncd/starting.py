"""The serving process's start around the mount's "ready" (README, "The fixed cost").

What must hold from the mount's first request is done before it answers: the keys checked
and the ports found free (so `syncd mount` itself reports them), old versions and replaced
chunks kept (a file replaced in the first second keeps its old version), the control
socket bound. The daemon, whose imports (FastAPI, pydantic, hypercorn, httpx) were most of
the start, is imported on a worker thread and built once the mount answers; until then an
open of a file whose content is all here needs none of it, and the rest (an open that must
fetch, the control socket's ops) waits for it. Changes made meanwhile are stamped as ever
and pushed once the peer loops run, from each peer's cursor.
"""

from __future__ import annotations

import importlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from syncd.home import Home, UserError
from syncd.index import versions
from syncd.index.catalog import Catalog
from syncd.settings import on_disk_of

if TYPE_CHECKING:
    from syncd.control import Handler
    from syncd.daemon import Daemon

log = logging.getLogger(__name__)


def prepare(home: Home, catalog: Catalog) -> None:
    """Before the daemon is built: UserError for a bad cluster key or device key, or a
    port taken; from here on, old versions and replaced chunks are kept."""
    config = home.config()
    home.cluster_key()
    home.device_identity(catalog.device)
    check_listen(config["listen"])
    check_listen(config["ui_listen"], "ui_listen", "the status page")
    keep_versions(catalog, config["versions_max"])
    catalog.keep_replaced()


def check_listen(listen: str, key: str = "listen", what: str = "peers") -> None:
    """Fail before mounting, with a clear message, when the port for `what` is taken."""
    host, _, port = listen.rpartition(":")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), int(port)))
        except OSError as e:
            raise UserError(f"cannot listen for {what} on {listen}: {e.strerror} (set "
                            f"another address with 'syncd config set {key}')") from None


def keep_versions(catalog: Catalog, versions_max: str) -> None:
    """Keep old versions of files from now on, unless versions_max is 0."""
    versions.keep_versions(catalog)
    catalog.keeps_versions = on_disk_of(catalog.store.root, versions_max) > 0


class LateDaemon:
    """The daemon of a mount, built after the mount answers. It stands for the daemon's
    fetcher in the mount (mount/operations.py, Fetch) and for its control ops."""

    def __init__(self, catalog: Catalog, build: Callable[[], Daemon]):
        """`build` makes the daemon once its module is imported."""
        self.catalog = catalog
        self.build = build
        self.daemon: Daemon | None = None
        self.built = trio.Event()
        self.handlers: dict[str, Handler] = {}  # the control socket's, once built
        self.failed: str | None = None  # why the daemon could not start

    async def start(self, nursery: trio.Nursery, stop: Callable[[], None]) -> bool:
        """Import the daemon (on a worker thread, so the mount's requests go on), build it
        and start it in `nursery`; True once it runs. When it cannot (a port taken since
        the check), `stop` the mount: the process then ends with the reason (`failed`)."""
        await trio.to_thread.run_sync(importlib.import_module, "syncd.daemon",
                                      abandon_on_cancel=True)
        daemon = self.build()
        try:
            await nursery.start(daemon.run)
        except* OSError as group:  # hypercorn's, in the groups of trio's nurseries
            why = "; ".join(sorted({e.strerror or str(e) for e in _leaves(group)}))
            self.failed = (f"cannot listen for peers on {daemon.listen} or for the status "
                           f"page on {daemon.ui_listen}: {why} (set another address with "
                           "'syncd config set listen' or 'ui_listen')")
        if self.failed:
            log.error("%s: the mount stops", self.failed)
            stop()
            return False
        self.daemon = daemon
        self.handlers.update(daemon.control_ops())
        self.built.set()
        return True

    # -- the mount's fetcher (mount/operations.py, Fetch)

    async def opening(self, ino: int, whole: bool) -> bool:
        if self.daemon is None:
            if self.catalog.is_local(ino):  # all here: what the fetcher would answer
                return False
            await self.built.wait()
        return await self.daemon.fetcher.opening(ino, whole)

    async def reading(self, ino: int, offset: int, size: int) -> bool:
        await self.built.wait()  # only after an opening that the fetcher answered
        return await self.daemon.fetcher.reading(ino, offset, size)

    def fetching(self, ino: int) -> bool:
        return self.daemon is not None and self.daemon.fetcher.fetching(ino)


def _leaves(group: BaseExceptionGroup) -> list[OSError]:
    """The exceptions in a group, and in the groups it holds (trio's nurseries nest)."""
    return [leaf for e in group.exceptions
            for leaf in (_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])]
