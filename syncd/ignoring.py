"""Keeping the ignore rules applied while serving (index/ignore.py, index/rescan.py): a
rule file changed here or by a peer, a directory moved, or HOME/ignore changed (looked at
every second), and the entries below are decided afresh in the background, without a
remount."""

from __future__ import annotations

from collections.abc import Callable

import trio

from syncd.index.catalog import Catalog
from syncd.index.rescan import Rescan
from syncd.index.schema import ROOT_ID


class RulesKeeper:
    def __init__(self, catalog: Catalog, rescanned: Callable[[], None] = lambda: None,
                 poll: float = 1.0):
        """`rescanned` runs each time the entries were decided afresh: peers' states held
        while ignored here may apply now (Daemon.release_held)."""
        self.catalog = catalog
        self.rescanned = rescanned
        self.poll = poll
        self.rescan = Rescan(catalog)
        self.wake = trio.Event()
        catalog.on_rules_change = self.changed

    def changed(self, directory: str) -> None:
        self.rescan.add(directory)
        self.wake.set()

    async def run(self) -> None:
        # The rules, or the defaults, may have changed while nothing served the home.
        self.rescan.add(ROOT_ID)
        while True:
            if self.rescan.queue:
                while self.rescan.step():
                    await trio.sleep(0)
                self.rescanned()
            with trio.move_on_after(self.poll):
                await self.wake.wait()
            self.wake = trio.Event()
            if self.catalog.ignore.read_local():
                self.rescan.add(ROOT_ID)
