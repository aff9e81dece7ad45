"""A peer's states that only make new nodes, applied in bulk (a fresh peer joining a share
receives little else): the rows Merger's one-at-a-time path writes for them, gathered and
written with one statement per table (Catalog.new_entries, as syncd import does).

Only a plain create goes this way (DESIGN rule 3 has nothing to decide for it): a live
file, directory or symlink that this machine does not have, with no extended attributes,
not a conflict copy and with none of its own here, not a rules file, into a live
directory under a name nobody holds there, not ignored here, and not on a send-only
machine. Everything else goes the one-at-a-time path, after what was gathered is written.
Each node keeps its own stamp and journal row; the bytes a state carries are verified
against its chunk list before they are kept (rule 2: node_rows.new_inode's check)."""

from __future__ import annotations

import base64

from syncd.index.catalog import SEND_ONLY, Catalog, check_name
from syncd.index.chunklist import ChunkList
from syncd.index.effects import Effects
from syncd.index.ignore import IGNORE_FILE
from syncd.index.inline import carried
from syncd.index.schema import LOCAL_ID_PREFIX, ROOT_INO

KINDS = ("file", "dir", "symlink")


class PlainCreates:
    """The plain creates of one transaction's batch. `take` gathers a state or declines
    it; `flush` writes what was gathered, before the index is read or written otherwise."""

    def __init__(self, catalog: Catalog, effects: Effects):
        self.cat = catalog
        self.conn = catalog.conn
        self.effects = effects
        uid, gid = self.conn.execute("SELECT uid, gid FROM inodes WHERE ino = ?",
                                     (ROOT_INO,)).fetchone()
        self.new = catalog.new_entries(uid, gid)
        self.dirs: dict[str, int] = {}  # directories gathered, not written yet: node -> ino
        self.names: set[tuple[str, str]] = set()  # (parent, name) gathered
        self.ids: set[str] = set()  # nodes gathered, in this batch
        # A node that was held here (ignored before) drops its held state once applied.
        self.held = self.conn.execute("SELECT 1 FROM held LIMIT 1").fetchone() is not None
        self.unheld: list[tuple[str]] = []

    def take(self, state: dict, origin: str) -> bool:
        """Gather a plain create; False (nothing done) for any other state."""
        parent_ino = self._plain(state)
        if parent_ino is None:
            return False
        node, kind, c = state["id"], state["kind"], state["content"]
        size, chunks, target, inline = 0, ChunkList([]), None, {}
        if kind == "file":
            size = c["size"]
            chunks = ChunkList.from_hex(c["chunks"], size)
            inline = carried(c, chunks, size)  # its bytes, once they match the list
        elif kind == "symlink":
            target = base64.b64decode(c["target"])
            size = len(target)
        local = kind != "file" or set(chunks.digests()) <= inline.keys() or all(
            d in inline or d in self.new.inline for d in self.cat.absent(chunks, size))
        ino = self.new.add_applied(parent_ino, state, origin, size, chunks, target, local,
                                   inline)
        if not local:
            self.effects.missing.add(ino)
        self.effects.entries.add((parent_ino, state["name"]))
        self.effects.inodes.add(parent_ino)
        if kind == "dir":
            self.dirs[node] = ino
        self.names.add((state["parent"], state["name"]))
        self.ids.add(node)
        if self.held:
            self.unheld.append((node,))
        return True

    def _plain(self, state: dict) -> int | None:
        """The inode of the directory a plain create goes into; None for another state."""
        node, parent, name = state["id"], state["parent"], state["name"]
        if state["deleted"] or state["conflict_of"] or state["kind"] not in KINDS or \
                name == IGNORE_FILE or state["xattr"]["attrs"] or \
                self.cat.mode == SEND_ONLY or node in self.ids or \
                node.startswith(LOCAL_ID_PREFIX) or (parent, name) in self.names:
            return None
        try:
            check_name(name)
        except OSError:
            return None
        if parent in self.dirs:  # the ignore rules read the directory from the index
            self.flush()
        row = self.conn.execute("SELECT ino FROM nodes WHERE id = ? AND kind = 'dir'"
                                " AND deleted = 0", (parent,)).fetchone()
        if row is None or row[0] is None or \
                self.conn.execute("SELECT 1 FROM nodes WHERE id = ?", (node,)).fetchone() or \
                self.conn.execute("SELECT 1 FROM nodes WHERE conflict_of = ?",
                                  (node,)).fetchone() or \
                self.cat.is_live_name(parent, name) or \
                self.cat.ignores(parent, name, state["kind"], edits_too=False):
            return None
        return row[0]

    def flush(self) -> None:
        self.new.flush()
        self.dirs.clear()
        self.conn.executemany("DELETE FROM held WHERE id = ?", self.unheld)
        self.unheld = []
