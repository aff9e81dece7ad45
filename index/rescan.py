"""Deciding afresh which entries are ignored, below the directories whose rules changed
(index/ignore.py), a batch at a time: a rule file changed, HOME/ignore changed, or a
directory moved. An entry that became ignored stops syncing and stays everywhere
(Catalog.make_local); one that is ignored no more is sent (Catalog.make_shared). On a
receive-only machine, what was made or changed here stays as it is; once the machine is
receive-only no more, a walk from the root shares those edits the same way.

The walk goes down from each directory asked for, parents before children (a child can
be shared only under a shared parent), and never below an ignored directory, where all
is ignored already. Each batch is one transaction of at most BATCH entries, so that the
serving process's other work goes on between batches whatever the share's size."""

from __future__ import annotations

from collections import deque

from syncd.index.catalog import RECEIVE_ONLY, Catalog
from syncd.index.schema import LOCAL_ONLY_KINDS, ROOT_ID

BATCH = 200


class Rescan:
    def __init__(self, catalog: Catalog):
        self.cat = catalog
        self.queue: deque[tuple[str, int]] = deque()  # (directory, entry to go on after)

    def add(self, directory: str) -> None:
        """Decide afresh below `directory`."""
        if (directory, 0) not in self.queue:
            self.queue.append((directory, 0))

    def step(self, budget: int = BATCH) -> bool:
        """One batch; True while there is more to do."""
        if self.queue:
            self.cat.transaction(self._batch, budget)
        return bool(self.queue)

    def _batch(self, budget: int) -> None:
        cat = self.cat
        while self.queue and budget > 0:
            directory, after = self.queue.popleft()
            row = cat.conn.execute("SELECT kind FROM nodes WHERE id = ? AND deleted = 0",
                                   (directory,)).fetchone()
            if row is None or row[0] != "dir" or \
                    (directory != ROOT_ID and cat.kept_local(directory)):
                continue
            children = cat.conn.execute(
                "SELECT id, name, kind, entry FROM nodes WHERE parent = ? AND deleted = 0"
                " AND entry > ? ORDER BY entry LIMIT ?", (directory, after, budget)).fetchall()
            budget -= len(children)
            if children and budget <= 0:
                self.queue.appendleft((directory, children[-1][3]))
            for node, name, kind, _ in children:
                if kind in LOCAL_ONLY_KINDS:
                    continue
                ignored = cat.ignore.ignored(directory, name, kind)
                was = cat.is_local_only(node)
                edited = cat.edited_here(node)
                if edited and cat.mode == RECEIVE_ONLY:
                    pass  # a local edit, until reverted or the mode changes
                elif ignored and (edited or not was):
                    cat.make_local(node, kind == "dir")
                elif was and not ignored:
                    node = cat.make_shared(node)
                if kind == "dir" and not ignored:
                    self.queue.append((node, 0))
