"""Where a live node goes when a remote state is applied (DESIGN rule 3): into a live
directory (a deleted one comes back for it), at its name unless another live node has that
name (two directories merge; otherwise the loser is renamed as a conflict copy), and never
inside itself (a cycle's losing move goes to the root). The decisions are index/rules.py's;
this writes them, each decided change stamped as a version of this peer.

A special file here (local-only, schema.py) never holds a name against a synced node: no
peer knows it, so the synced node takes the name and the special file moves aside under a
conflict name, here alone. Deciding it the other way would rename a file on every peer for
a socket or a FIFO that only this machine has."""

from __future__ import annotations

import logging

from syncd.index import rules
from syncd.index.catalog import ASPECTS, Catalog, check_name, local_only
from syncd.index.effects import Effects
from syncd.index.names import conflict_name
from syncd.index.node_rows import decided, entry_changed, new_inode
from syncd.index.schema import ROOT_ID
from syncd.index.states import NODE_COLUMNS, node_row, state_from_row, xattrs_json

log = logging.getLogger(__name__)


class Placement:
    def __init__(self, catalog: Catalog):
        self.cat = catalog
        self.conn = catalog.conn

    def live_parent(self, parent: str, effects: Effects,
                    seen: set[str] | None = None) -> str:
        """The live directory a node goes into: a directory merged into another stands
        for that one; a deleted one comes back (rule 3: the child's change wins). A chain
        of parents that loops ends at the root."""
        seen = set() if seen is None else seen
        while True:
            row = self.conn.execute(
                "SELECT deleted, conflict_of, kind, ino FROM nodes WHERE id = ?", (parent,)
            ).fetchone()
            if row is None or row[2] != "dir" or parent in seen:
                return ROOT_ID  # unknown or not a directory: keep the node, at the root
            seen.add(parent)
            deleted, merged_into, _, _ = row
            if deleted and merged_into:
                parent = merged_into
                continue
            if not deleted:
                return parent
            self._resurrect(parent, effects, seen)
            seen.discard(parent)  # alive now, or merged into another directory

    def place(self, node: str, state: dict, parent: str,
              effects: Effects) -> tuple[str, str] | None:
        """Put a live node under `parent` at its name, unless another live node has that
        name (rule 3, two nodes on one name): two directories merge, the higher id keeping
        the name and taking in the other's children; otherwise the winner by the content
        rule keeps the name and the other becomes a conflict copy. Returns the (parent,
        name) taken, or None when the node was merged into another directory."""
        name = check_name(state["name"])
        if local_only(node):  # a directory it was in merged into another
            return self._place_local(node, state, parent, name, effects)
        if state["kind"] == "dir":
            parent, name = self._break_cycle(node, state, parent, name, effects)
        self._make_way(parent, name, effects)
        row = self.conn.execute(
            f"SELECT {NODE_COLUMNS} FROM nodes n LEFT JOIN inodes i ON i.ino = n.ino "
            "WHERE n.parent = ? AND n.name = ? AND n.deleted = 0 AND n.id != ?",
            (parent, name, node)).fetchone()
        if row is not None:
            other = state_from_row(row)
            keeps = rules.name_winner(state, other)
            if state["kind"] == "dir" and other["kind"] == "dir":
                if keeps is other:
                    self._alias(node, other["id"], effects)
                    return None
                self._alias(other["id"], node, effects)
                self._set_place(node, parent, name, effects)
                return parent, name
            if keeps is state:
                self._rename_loser(other, node, parent, effects)
            else:
                name = self._loser_name(state, parent)
                self.conn.execute("UPDATE nodes SET conflict_of = coalesce(conflict_of, ?)"
                                  " WHERE id = ?",
                                  (other["id"], node))
        self._set_place(node, parent, name, effects)
        return parent, name

    def _place_local(self, node: str, state: dict, parent: str, name: str,
                     effects: Effects) -> tuple[str, str]:
        """A special file goes to its name, or beside it when that is taken."""
        if self.cat.is_live_name(parent, name):
            name = self._aside_name(parent, name, state["content"]["mtime_ns"])
        self._set_place(node, parent, name, effects)
        return parent, name

    def _make_way(self, parent: str, name: str, effects: Effects) -> None:
        """A special file on the name a synced node takes moves aside."""
        row = self.conn.execute(
            "SELECT n.id, i.mtime_ns FROM nodes n JOIN inodes i ON i.ino = n.ino"
            " WHERE n.parent = ? AND n.name = ? AND n.deleted = 0", (parent, name)).fetchone()
        if row is None or not local_only(row[0]):
            return
        aside = self._aside_name(parent, name, row[1])
        log.info("a peer's node takes the name %r, so the special file there (local to "
                 "this machine) is now %r", name, aside)
        entry_changed(self.cat, parent, name, effects)
        self._set_place(row[0], parent, aside, effects)

    def _aside_name(self, parent: str, name: str, mtime_ns: int) -> str:
        """A conflict name, by its mtime and this device, for a special file that yields
        `name`."""
        return conflict_name(name, self.cat.device, mtime_ns,
                             lambda n: self.cat.is_live_name(parent, n))

    def _resurrect(self, node: str, effects: Effects, seen: set[str]) -> None:
        """A deleted directory back for a child: with the mode its tombstone kept (0755
        when it kept none), whose version takes the lowest clock, as in rules.merge."""
        state = state_from_row(node_row(self.conn, node))
        parent = self.live_parent(state["parent"], effects, seen)
        state["mode"]["mode"] = state["mode"]["mode"] or 0o755
        ino = new_inode(self.cat, state, effects)
        self.conn.execute("UPDATE nodes SET deleted = 0, ino = ?, parent = NULL,"
                          " mode_clock = 0 WHERE id = ?", (ino, node))
        if self.place(node, state, parent, effects) is not None:
            decided(self.cat, node, "restore")

    def _break_cycle(self, node: str, state: dict, parent: str, name: str,
                     effects: Effects) -> tuple[str, str]:
        """Concurrent moves that would put a directory inside itself (rule 3): the loser
        (rules.cycle_loser) goes to the share's root under a conflict name."""
        ring, at = [], parent
        while at is not None and at != ROOT_ID and at != node:
            ring.append(at)
            at = self.conn.execute("SELECT parent FROM nodes WHERE id = ?",
                                   (at,)).fetchone()[0]
        if at != node:
            return parent, name
        members = [state] + [state_from_row(node_row(self.conn, n)) for n in ring]
        loser = rules.cycle_loser(members)
        # A move lost: the name carries the device of that placement version.
        free = conflict_name(loser["name"], loser["place"]["device"],
                             taken=lambda n: self.cat.is_live_name(ROOT_ID, n))
        if loser["id"] == node:
            return ROOT_ID, free
        entry_changed(self.cat, loser["parent"], loser["name"], effects)
        self._set_place(loser["id"], ROOT_ID, free, effects)
        decided(self.cat, loser["id"], "cycle-move")
        return parent, name

    def _set_place(self, node: str, parent: str, name: str, effects: Effects) -> None:
        self.conn.execute("UPDATE nodes SET parent = ?, name = ? WHERE id = ?",
                          (parent, name, node))
        entry_changed(self.cat, parent, name, effects)

    def _loser_name(self, state: dict, parent: str) -> str:
        return rules.copy_name(state, state["name"],
                               lambda n: self.cat.is_live_name(parent, n))

    def _rename_loser(self, loser: dict, winner: str, parent: str, effects: Effects) -> None:
        name = self._loser_name(loser, parent)
        # A conflict copy that loses a name stays a copy of the node it was made of.
        self.conn.execute("UPDATE nodes SET name = ?, conflict_of = coalesce(conflict_of, ?)"
                          " WHERE id = ?",
                          (name, winner, loser["id"]))
        decided(self.cat, loser["id"], "conflict-rename")
        entry_changed(self.cat, parent, loser["name"], effects)
        entry_changed(self.cat, parent, name, effects)

    def _alias(self, node: str, into: str, effects: Effects) -> None:
        """A directory merged into another: a tombstone that stands for `into`. Its
        children move first, so a peer that applies these changes in order finds it empty
        when the tombstone comes."""
        self._adopt(node, into, effects)
        ino, parent, name = self.conn.execute(
            "SELECT ino, parent, name FROM nodes WHERE id = ?", (node,)).fetchone()
        # A node on its way to a place (parent NULL meanwhile) keeps the place it merged
        # at: every state sent to a peer has a parent.
        self.conn.execute(
            "UPDATE nodes SET deleted = 1, ino = NULL, conflict_of = ?, parent = coalesce("
            "parent, (SELECT parent FROM nodes WHERE id = ?)),"
            " deleted_mode = (SELECT mode FROM inodes WHERE inodes.ino = nodes.ino),"
            f" deleted_xattrs = {xattrs_json('nodes.ino')} WHERE id = ?",
            (into, into, node))
        if ino is not None:
            self.cat.forget_dir(ino)
            effects.orphans.add(ino)
        decided(self.cat, node, "merge-dir", ASPECTS)
        entry_changed(self.cat, parent, name, effects)

    def _adopt(self, from_dir: str, into: str, effects: Effects) -> None:
        for row in self.conn.execute(
                f"SELECT {NODE_COLUMNS} FROM nodes n LEFT JOIN inodes i ON i.ino = n.ino "
                "WHERE n.parent = ? AND n.deleted = 0", (from_dir,)).fetchall():
            child = state_from_row(row)
            entry_changed(self.cat, from_dir, child["name"], effects)
            self.conn.execute("UPDATE nodes SET parent = NULL WHERE id = ?", (child["id"],))
            if self.place(child["id"], child, into, effects) is not None:
                decided(self.cat, child["id"], "merge-move")
