"""Node states in: applying remote states to the catalog by DESIGN rule 3.

A node travels as its whole current state (docs/protocol.md, "Node states"). Applying a
remote state compares its three version vectors with the local ones, aspect by aspect:
a dominating remote version is taken, a dominated one ignored, and concurrent ones are
resolved by rules every peer computes alike from the two versions alone (index/rules.py).
A merge takes the pointwise maximum of the vectors with no new local increment, so peers
that merge the same versions agree and stop. Every applied change is stamped with the next
local sequence number and journalled in the same transaction (rule 1, Catalog's stamps),
and remembers which peer sent it (`origin`), so it is not sent back there.

A remote content change gives the node a fresh local inode (rule 6): open handles keep the
bytes they had, and the kernel sees the new inode at its next lookup. The new inode holds
the chunk list; its chunks arrive when the file is opened (the fetcher), and `local` says
whether they all are here.
"""

from __future__ import annotations

import json
import logging
import time

from syncd.index import rules
from syncd.index.catalog import (
    ASPECTS,
    EDITED_HERE,
    IGNORED_CHANGED,
    RECEIVE_ONLY,
    SEND_ONLY,
    Catalog,
    local_only,
)
from syncd.index.chunklist import ChunkList
from syncd.index.effects import Effects
from syncd.index.ignore import IGNORE_FILE
from syncd.index.inline import stored_json
from syncd.index.names import free_tagged_name, utc_stamp
from syncd.index.node_rows import (
    decided,
    entry_changed,
    new_inode,
    no_xattrs,
    set_versions,
    stamp_state,
    write_xattrs,
)
from syncd.index.placement import Placement
from syncd.index.plain_creates import PlainCreates
from syncd.index.schema import LOCAL_ID_PREFIX, ROOT_ID
from syncd.index.states import NODE_COLUMNS, attrs_json, node_row, state_from_row
from syncd.index.unheld import missing_chunk, unheld_file

log = logging.getLogger(__name__)


class Merger:
    """Merges remote node states, and files written here while a peer replaced them, into
    the catalog."""

    def __init__(self, catalog: Catalog, bulk: bool = True):
        """`bulk`: a batch's plain creates are written in bulk (index/plain_creates.py);
        without it every state takes the one-at-a-time path (tests compare the two)."""
        self.cat = catalog
        self.conn = catalog.conn
        self.placement = Placement(catalog)
        self.bulk = bulk

    def apply(self, states: list[dict], origin: str) -> Effects:
        """Apply a batch of remote states in one transaction. States whose parent is not
        known yet wait in `limbo` until it arrives."""
        effects = Effects()
        for state in states:
            if state.get("xattr") is None:  # from a peer that does not carry them
                state["xattr"] = no_xattrs()
            for aspect in ASPECTS:  # a state without "made" was made at its vector
                if state[aspect].get("made") is None:
                    state[aspect]["made"] = state[aspect]["vv"]

        def run() -> None:
            creates = PlainCreates(self.cat, effects) if self.bulk else None
            queue = list(states)
            while queue:
                waiting = []
                for state in queue:
                    if creates is not None:
                        if creates.take(state, origin):
                            continue
                        creates.flush()
                    if self._known(state) or self._parent_known(state):
                        self._apply_or_leave(state, origin, effects)
                    else:
                        waiting.append(state)
                if len(waiting) == len(queue):
                    break
                queue = waiting
            if creates is not None:
                creates.flush()
            for state in queue:
                self.conn.execute(
                    "INSERT OR REPLACE INTO limbo (id, state, origin) VALUES (?, ?, ?)",
                    (state["id"], stored_json(state), origin))
            self._drain_limbo(effects)

        self.cat.transaction(run)
        self.cat.detached.update(effects.detached)
        return effects

    def commit_detached(self, node: str, base_vv: dict[str, int], chunks: ChunkList,
                        size: int, mtime_ns: int, ino: int | None = None) -> Effects:
        """A file written here while a peer's change replaced or deleted it (rule 6) was
        closed: its content is a version concurrent with that change, merged by rule 3
        like any other (the later mtime keeps the name, the other is a conflict copy; an
        edit beats a delete). Nothing anyone wrote is lost. On a receive-only machine
        the peer's version wins: inode `ino` stays as a local copy beside the node."""
        effects = Effects()

        def run() -> None:
            row = node_row(self.conn, node)
            if row is None:
                return
            if self.cat.mode == RECEIVE_ONLY and ino is not None:
                if not self.cat.nodes_of(ino):  # not kept aside yet
                    parent = row[2] if self.cat.is_live_dir(row[2]) else ROOT_ID
                    self._set_aside(ino, parent, row[3], effects)
                return
            mine = state_from_row(row)
            device = self.cat.device
            mine["deleted"] = False
            vv = {**base_vv, device: self.cat.seq + 1}
            mine["content"] = {
                "vv": vv, "made": vv, "clock": self.cat.clock + 1,
                "device": device, "hash": chunks.hash, "size": size,
                "mtime_ns": mtime_ns, "chunks": chunks.hex(), "target": None}
            if mine["mode"]["mode"] == 0:
                mine["mode"]["mode"] = 0o644
            self._apply_one(mine, None, effects)

        self.cat.transaction(run)
        self.cat.detached.update(effects.detached)
        return effects

    def _drain_limbo(self, effects: Effects) -> None:
        progress = True
        while progress:
            progress = False
            for node, text, origin in self.conn.execute(
                    "SELECT id, state, origin FROM limbo").fetchall():
                state = json.loads(text)
                if self._parent_known(state):
                    self.conn.execute("DELETE FROM limbo WHERE id = ?", (node,))
                    self._apply_or_leave(state, origin, effects)
                    progress = True

    def _apply_or_leave(self, state: dict, origin: str | None, effects: Effects) -> None:
        """Apply a peer's state, unless it is of an entry kept here only or would put
        one where the rules here ignore, or this machine is send-only: that is left alone
        (docs/protocol.md, "Ignored entries", "Receive-only and send-only machines"),
        neither applied, nor fetched, nor deleting anything here. On a receive-only
        machine, a newer state of an entry changed here takes it back (_take_over)."""
        node = state["id"]
        edited = self.cat.edited_here(node)
        # An edit of a receive-only machine that is receive-only no more waits for the
        # rescan that shares it (syncd/ignoring.py), then merges with this by rule 3.
        if self.cat.mode == SEND_ONLY or self._ignored_here(state) or \
                (edited and self.cat.mode != RECEIVE_ONLY):
            self.conn.execute("INSERT OR REPLACE INTO held (id, state, origin) VALUES (?, ?, ?)",
                              (state["id"], stored_json(state), origin))
            return
        self.conn.execute("DELETE FROM held WHERE id = ?", (state["id"],))  # older
        if edited:
            if not self._news(state):
                return  # the local edit stays until the group has a newer version
            self._take_over(node, effects, keep=True)
        was = self.conn.execute("SELECT parent, name FROM nodes WHERE id = ?",
                                (state["id"],)).fetchone()
        self._apply_one(state, origin, effects)
        if state["name"] == IGNORE_FILE and state["kind"] == "file":
            self.cat.rules_changed(state["parent"])
        elif state["kind"] == "dir" and was is not None and \
                tuple(was) != (state["parent"], state["name"]):
            self.cat.rules_changed(state["id"])  # it moved: what is below it is decided again

    def release_held(self) -> Effects:
        """Apply the peers' states held while the rules here ignored them, or while this
        machine was send-only, those not ignored now (after the rules changed and the
        entries were decided afresh, or the mode changed). A send-only machine applies
        none of them."""
        effects = Effects()
        if self.cat.mode == SEND_ONLY:
            return effects

        def run() -> None:
            for node, text, origin in self.conn.execute(
                    "SELECT id, state, origin FROM held").fetchall():
                state = json.loads(text)
                if not self._ignored_here(state):
                    self.conn.execute("DELETE FROM held WHERE id = ?", (node,))
                    if self._known(state) or self._parent_known(state):
                        self._apply_or_leave(state, origin, effects)
                    else:
                        self.conn.execute("INSERT OR REPLACE INTO limbo (id, state, origin)"
                                          " VALUES (?, ?, ?)", (node, text, origin))
            self._drain_limbo(effects)

        self.cat.transaction(run)
        self.cat.detached.update(effects.detached)
        return effects

    def _news(self, state: dict) -> bool:
        local = state_from_row(node_row(self.conn, state["id"]))
        raw = {a: rules.compare(local[a]["vv"], state[a]["vv"]) for a in ASPECTS}
        return rules.is_news(local, state, raw,
                             self.cat.has_children(state["id"], local_too=False))

    def _take_over(self, node: str, effects: Effects, keep: bool) -> None:
        """Receive-only: a node made or changed here takes the group's next state whatever
        it is (incoming versions always win). With `keep`, content written here is kept
        aside first, as NAME.sync-local-YYYYMMDD-HHMMSS.EXT on the same inode, local only
        (handles open on it keep their bytes, rule 6). The node then knows no version, so
        that the state applied next dominates it."""
        row = node_row(self.conn, node)
        ignored = self.conn.execute("SELECT ignored FROM nodes WHERE id = ?",
                                    (node,)).fetchone()[0]
        parent, name, deleted, ino = row[2], row[3], row[4], row[8]
        if keep and row[1] == "file" and not deleted and ino is not None and \
                ignored & IGNORED_CHANGED["content"]:
            self._set_aside(ino, parent, name, effects)
            self.conn.execute("UPDATE nodes SET ino = NULL WHERE id = ?", (node,))
        self.conn.execute(
            "UPDATE nodes SET ignored = 0, "
            + ", ".join(f"{a}_vv = '{{}}', {a}_made = '{{}}'" for a in ASPECTS)
            + " WHERE id = ?", (node,))

    def _set_aside(self, ino: int, parent: str, name: str, effects: Effects) -> str:
        """A local-only node for inode `ino` beside `name`: NAME.sync-local-TIME.EXT."""
        entry = self.conn.execute(
            "SELECT coalesce(max(entry), 0) + 1 FROM nodes").fetchone()[0]
        copy = free_tagged_name(name, f"sync-local-{utc_stamp()}",
                                lambda n: self.cat.is_live_name(parent, n))
        self.conn.execute(
            "INSERT INTO nodes (entry, id, kind, ino, parent, name, seq, ignored)"
            " VALUES (?, ?, 'file', ?, ?, ?, 0, ?)",
            (entry, f"{LOCAL_ID_PREFIX}{entry}", ino, parent, copy,
             1 | EDITED_HERE | IGNORED_CHANGED["content"]))
        entry_changed(self.cat, parent, copy, effects)
        log.info("%r, written here, kept aside as %r: a peer's version replaces it",
                 name, copy)
        return copy

    def revert(self, states: list[tuple[dict, str]], under: str) -> Effects:
        """Receive-only `syncd revert`: the nodes made or changed here, `under` or below
        it, take the group's state (`states`, each with the peer that gave it: those of
        the nodes it knows), and those it does not know go, into the old versions."""
        effects = Effects()

        def run() -> None:
            for state, origin in states:
                self._take_over(state["id"], effects, keep=False)
                self._apply_one(state, origin, effects)
            for node, _ in self.cat.edits_here(under):
                if not local_only(node):  # the group has no state of it: so be it here
                    self.conn.execute("UPDATE nodes SET ignored = 0 WHERE id = ?", (node,))
                elif node_row(self.conn, node) is not None:  # not gone with a directory
                    parent = self.cat.placement(node)[0]
                    self._drop(self.cat.drop_local([node]), parent, effects)

        self.cat.transaction(run)
        self.cat.detached.update(effects.detached)
        return effects

    def behind(self) -> int:
        """How many peers' states this machine holds back, ignored entries aside: what a
        send-only machine is behind the group by (those waiting for their parent too)."""
        held = sum(not self._ignored_here(json.loads(text)) for (text,) in
                   self.conn.execute("SELECT state FROM held").fetchall())
        return held + self.conn.execute("SELECT count(*) FROM limbo").fetchone()[0]

    def override(self, under: str) -> int:
        """Send-only: this machine's version of every node below `under` (a live node)
        whose peers' state is held back becomes a new version that dominates it (its
        vectors, each the pointwise maximum of both plus a counter of this device), so
        every peer takes it by rule 3 (docs/protocol.md, "Receive-only and send-only
        machines"). A node
        the group has and this machine does not becomes a tombstone of that kind. The
        states it dominates are dropped; how many were is returned."""
        count = 0

        def run() -> None:
            nonlocal count
            for node, text in self.conn.execute("SELECT id, state FROM held").fetchall():
                state = json.loads(text)
                if self._ignored_here(state) or not self._held_below(state, under):
                    continue
                self.conn.execute("DELETE FROM held WHERE id = ?", (node,))
                row = node_row(self.conn, node)
                if row is None and state["deleted"]:
                    continue  # the group deleted what was never here: so be it
                if row is None:
                    self.conn.execute(
                        "INSERT INTO nodes (id, kind, ino, parent, name, deleted, seq,"
                        " conflict_of) VALUES (?, ?, NULL, ?, ?, 1, 0, ?)",
                        (node, state["kind"], state["parent"], state["name"],
                         state["conflict_of"]))
                    set_versions(self.cat, node, state)
                    vvs = [state[a]["vv"] for a in ASPECTS]
                else:
                    mine = state_from_row(row)
                    vvs = [rules.vv_max(mine[a]["vv"], state[a]["vv"]) for a in ASPECTS]
                self.cat.observe_clock(max(state[a]["clock"] for a in ASPECTS))
                self.cat.stamp_local(node, "override", ASPECTS, {"override": True},
                                     tuple(json.dumps(vv, sort_keys=True) for vv in vvs))
                count += 1

        self.cat.transaction(run)
        return count

    def _held_below(self, state: dict, under: str) -> bool:
        """Is a held state's node `under` or below it: where it is here, or for a node
        not here, where its parent is (held too, maybe)?"""
        if under == ROOT_ID:
            return True
        for _ in range(4096):
            if self._known(state):
                return self.cat.is_within(state["id"], under)
            row = self.conn.execute("SELECT state FROM held WHERE id = ?",
                                    (state["parent"],)).fetchone()
            if row is None:
                return self.cat.is_within(state["parent"], under)
            state = json.loads(row[0])
        return False

    def _ignored_here(self, state: dict) -> bool:
        if self.cat.kept_local(state["id"]):
            return True
        if state["deleted"]:
            return False
        row = self.conn.execute("SELECT kind FROM nodes WHERE id = ? AND deleted = 0",
                                (state["parent"],)).fetchone()
        return row is not None and row[0] == "dir" and \
            self.cat.ignores(state["parent"], state["name"], state["kind"], edits_too=False)

    def _known(self, state: dict) -> bool:
        return node_row(self.conn, state["id"]) is not None

    def _parent_known(self, state: dict) -> bool:
        return state["deleted"] or node_row(self.conn, state["parent"]) is not None

    def _apply_one(self, remote: dict, origin: str | None, effects: Effects) -> None:
        if remote["id"] == ROOT_ID:
            return
        self.cat.observe_clock(max(remote[a]["clock"] for a in ASPECTS))
        row = node_row(self.conn, remote["id"])
        if row is None:
            self._insert(remote, origin, effects)
        elif self._merge_into(row, remote, origin, effects):
            return
        if remote["kind"] == "dir":
            return
        # The node's content, or a conflict copy of another node's, changed: settle the
        # contest among all the versions of that content again.
        self._reconsider(remote["id"], effects)
        if remote["conflict_of"]:
            self._reconsider(remote["conflict_of"], effects)
            if unheld_file(self.cat, remote["id"]) is not None:
                effects.unheld.add(remote["id"])

    def _merge_into(self, row, remote: dict, origin: str | None, effects: Effects) -> bool:
        """Merge a remote state into the node's row; True when nothing changed."""
        local = state_from_row(row)
        if local["kind"] != remote["kind"]:
            # A node's kind is fixed when it is made (its id says who made it, when);
            # a state that says otherwise is not from a syncd that follows this protocol.
            log.warning("ignored a state of node %s from %s: it says %s, the node is a %s",
                        remote["id"], origin, remote["kind"], local["kind"])
            return True
        # Only a tombstone that meets a live node asks whether children here keep it.
        # Special files do not: they are local, no peer could have seen them, and they
        # would keep the directory alive on every peer for ever (_drop_local_children).
        has_children = remote["deleted"] and not local["deleted"] and \
            self.cat.has_children(local["id"], local_too=False)
        raw = {a: rules.compare(local[a]["vv"], remote[a]["vv"]) for a in ASPECTS}
        if not rules.is_news(local, remote, raw, has_children):
            return True
        cmps = {a: rules.refine(raw[a], local[a], remote[a]) for a in ASPECTS}
        merged, loser = rules.merge(local, remote, raw, cmps, has_children)
        if loser is not None:
            self._conflict_copy(loser, merged, effects)
        same_as_remote = all(merged[a]["vv"] == remote[a]["vv"] for a in ASPECTS) and \
            merged["deleted"] == remote["deleted"]
        self._write(row, merged, origin if same_as_remote else None, effects, origin)
        deleter = rules.content_deleted(local, remote, merged, cmps)
        if deleter is not None:
            self._reconsider(remote["id"], effects, deleter)
        if (local["deleted"] or remote["deleted"]) and not merged["deleted"]:
            # Back from a delete by a change that carried no content (a chmod, a move):
            # the deleter may have collected the content before anyone fetched it.
            effects.unheld.add(remote["id"])
        if rules.kept_for_children(local, remote, merged, cmps):
            decided(self.cat, remote["id"], "restore")
        return False

    def _reconsider(self, node: str, effects: Effects, deleter: dict | None = None) -> None:
        """Rule 3 over every version of a node's content that no other one was made
        knowing (its siblings): the node holds the winner of them all, the others are
        conflict copies. A version kept as a copy stays a candidate: when a version made
        without knowing it replaces the one it lost to, it may win now. Without this, a
        peer that met the replacement first kept it, and one that met the copy's
        version first kept that, with the same vector (bug 14).

        Taking a copy's version back adds a dot of this device to the content vector, so
        a peer that holds other copies, or none, takes the result instead of keeping its
        own. The copy stays: it may be renamed or edited by now, and it is the only holder
        of its name's history.

        The version the node held becomes a copy only when it lost: a version a copy's was
        made knowing (its maker edited it again before that edit lost elsewhere) is
        dominated, and is dropped as rule 3 says. A copy of it would be content its own
        maker replaced, made from metadata here, often held by nobody any more (the soak
        of 2026-12-05: readable nowhere, on every peer).

        `deleter`: a tombstone just merged in was made knowing the content the node holds,
        and the node stays for another aspect (rules.content_deleted). That content is then
        no candidate and never a copy, and a copy the deleter did not see wins even with an
        older mtime, as where its version met the tombstone alone (bug 19)."""
        row = node_row(self.conn, node)
        if row is None or row[4] or row[1] == "dir":
            return
        current = state_from_row(row)
        copies = self._copies(current)
        if not copies:
            return
        effects.unheld.update(s["id"] for s in copies if missing_chunk(self.cat, s))
        best = rules.content_to_take(current, copies, deleter)
        if best is None:
            return
        # The vector has seen the tombstone, and gains the sequence number _write stamps
        # the node with.
        vv = rules.vv_max(current["content"]["vv"], best["content"]["vv"])
        if deleter is not None:
            vv = rules.vv_max(vv, deleter["content"]["vv"])
        merged = dict(current, content=dict(best["content"], vv={
            **vv, self.cat.device: self.cat.seq + 1}))
        self._write(row, merged, None, effects)
        if deleter is None and not rules.replaced(current, [current, *copies]):
            self._conflict_copy(current, merged, effects)

    def _conflict_copy(self, loser: dict, merged: dict, effects: Effects) -> None:
        """The loser of a content conflict, as a new node beside the merged one. It takes
        the merged node's placement version with its place: peers that settle the conflict
        while they hold different places of the node (a concurrent rename) then settle the
        copy's place like the node's, instead of each keeping its own (bug 15)."""
        c = loser["content"]
        device = c["device"] or ""
        node = rules.conflict_id(loser["id"], device, c["made"].get(device, 0))
        if node_row(self.conn, node) is not None:
            return
        name = rules.copy_name(loser, merged["name"],
                               lambda n: self.cat.is_live_name(merged["parent"], n))
        state = {
            "id": node, "kind": loser["kind"], "parent": merged["parent"], "name": name,
            "deleted": False, "conflict_of": loser["id"], "content": dict(c),
            # The loser's mode version, vector and all: peers that make this copy from
            # different mode histories then merge its mode like any other.
            "mode": dict(loser["mode"]),
            "place": dict(merged["place"]),
            "xattr": dict(loser["xattr"]),  # as the mode
        }
        self._insert(state, None, effects)
        if name != rules.copy_name(loser, merged["name"]):
            # Numbered because of copies that are here: a peer without them names it
            # otherwise, so the name taken here is a version of its own.
            decided(self.cat, node, "conflict-copy")

    def _copies(self, node: dict) -> list[dict]:
        """The live conflict copies of a node whose content is still the version they
        were made of (the id says which): a copy edited since is a file of its own."""
        out = []
        for r in self.conn.execute(
                f"SELECT {NODE_COLUMNS} FROM nodes n LEFT JOIN inodes i ON i.ino = n.ino "
                "WHERE n.conflict_of = ? AND n.deleted = 0", (node["id"],)):
            copy = state_from_row(r)
            c = copy["content"]
            device = c["device"] or ""
            if copy["kind"] == node["kind"] and copy["id"] == rules.conflict_id(
                    node["id"], device, c["made"].get(device, 0)):
                out.append(copy)
        return out

    def _drop_local_children(self, node: str, dir_name: str, effects: Effects) -> None:
        """A directory a peer deleted goes with the special files, ignored entries and
        local copies it holds here (all below them too, files into the old versions):
        they are what the deleter could not see, and would otherwise bring the directory
        back here alone."""
        for name in self._drop(self.cat.drop_local_children(node), node, effects):
            log.info("%r, local to this machine, goes with its directory %r, deleted "
                     "by a peer", name, dir_name)

    def _drop(self, dropped: list[tuple[int, str | None]], parent: str | None,
              effects: Effects) -> list[str]:
        """What Catalog.drop_local removed from directory `parent`, for the kernel and
        the purge; the names that were in `parent`."""
        names = []
        for ino, name in dropped:
            effects.orphans.add(ino)
            if name is not None:
                names.append(name)
                entry_changed(self.cat, parent, name, effects)
        return names

    # -- writing

    def _insert(self, state: dict, origin: str | None, effects: Effects) -> None:
        node = state["id"]
        if state["deleted"]:
            self.conn.execute(
                "INSERT INTO nodes (id, kind, ino, parent, name, deleted, seq, conflict_of,"
                " deleted_mode, deleted_xattrs) VALUES (?, ?, NULL, ?, ?, 1, 0, ?, ?, ?)",
                (node, state["kind"], state["parent"], state["name"], state["conflict_of"],
                 state["mode"]["mode"], attrs_json(state["xattr"]["attrs"])))
            set_versions(self.cat, node, state)
            stamp_state(self.cat, node, "apply-delete", origin, state)
            return
        parent = self.placement.live_parent(state["parent"], effects)
        ino = new_inode(self.cat, state, effects)
        self.conn.execute(
            "INSERT INTO nodes (id, kind, ino, parent, name, seq, conflict_of)"
            " VALUES (?, ?, ?, NULL, ?, 0, ?)",
            (node, state["kind"], ino, state["name"], state["conflict_of"]))
        set_versions(self.cat, node, state)
        placed = self.placement.place(node, state, parent, effects)
        if placed is None:  # merged into a directory already here
            return
        if placed == (state["parent"], state["name"]):
            stamp_state(self.cat, node, "apply-create", origin, state)
        else:
            decided(self.cat, node, "apply-create")

    def _write(self, row, merged: dict, origin: str | None, effects: Effects,
               sender: str | None = None) -> None:
        """Write a merged state over the node's row; `origin` holds it already (None: every
        peer needs it), `sender` sent the state merged in (the journal says so)."""
        node, ino = merged["id"], row[8]
        old = state_from_row(row)
        old_parent, old_name = old["parent"], old["name"]
        if merged["deleted"]:
            if ino is not None:
                if merged["kind"] == "dir":
                    self._drop_local_children(node, old_name, effects)
                self.conn.execute("UPDATE nodes SET deleted = 1, ino = NULL WHERE id = ?",
                                  (node,))
                self.cat.forget_dir(ino)
                effects.orphans.add(ino)
                effects.detached[ino] = (node, old["content"]["vv"])
                entry_changed(self.cat, old_parent, old_name, effects)
            self.conn.execute(
                "UPDATE nodes SET parent = ?, name = ?, deleted_mode = ?, deleted_xattrs = ?"
                " WHERE id = ?", (merged["parent"], merged["name"], merged["mode"]["mode"],
                                  attrs_json(merged["xattr"]["attrs"]), node))
            set_versions(self.cat, node, merged)
            stamp_state(self.cat, node, "apply-delete", origin, merged, sender)
            return
        parent = self.placement.live_parent(merged["parent"], effects)
        moved = old["deleted"] or (parent, merged["name"]) != (old_parent, old_name)
        content_changed = old["deleted"] or ino is None or any(
            old["content"][k] != merged["content"][k]
            for k in ("hash", "mtime_ns", "target")) or old["kind"] != merged["kind"]
        if content_changed and (merged["kind"] != "dir" or ino is None):
            new_ino = new_inode(self.cat, merged, effects)
            # Coming back from a tombstone, it leaves its old place first (another node may
            # have taken that name meanwhile); place() below settles where it goes.
            self.conn.execute(
                "UPDATE nodes SET ino = ?, deleted = 0, parent = CASE WHEN deleted"
                " THEN NULL ELSE parent END WHERE id = ?", (new_ino, node))
            if ino is not None:
                effects.orphans.add(ino)
                effects.detached[ino] = (node, old["content"]["vv"])
            entry_changed(self.cat, old_parent, old_name, effects)
            ino = new_ino
        else:
            if old["mode"]["mode"] != merged["mode"]["mode"]:
                self.conn.execute("UPDATE inodes SET mode = ?, ctime_ns = ? WHERE ino = ?",
                                  (merged["mode"]["mode"] & 0o7777, time.time_ns(), ino))
                effects.inodes.add(ino)
            if old["xattr"]["attrs"] != merged["xattr"]["attrs"] and ino is not None:
                write_xattrs(self.cat, ino, merged)
        set_versions(self.cat, node, merged)
        placed = (old_parent, old_name)
        if moved:
            entry_changed(self.cat, old_parent, old_name, effects)
            self.conn.execute("UPDATE nodes SET parent = NULL WHERE id = ?", (node,))
            placed = self.placement.place(node, merged, parent, effects)
            if placed is None:
                return
        if placed == (merged["parent"], merged["name"]):
            stamp_state(self.cat, node, "apply", origin, merged, sender)
        else:
            decided(self.cat, node, "apply")
