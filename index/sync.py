"""Replication: node states out (changes since a sequence number) and in (DESIGN rule 3).

A node travels as its whole current state (docs/protocol.md, "Node states"). Applying a
remote state compares its three version vectors with the local ones, aspect by aspect:
a dominating remote version is taken, a dominated one ignored, and concurrent ones are
resolved by rules every peer computes alike from the two versions alone. A merge takes the
pointwise maximum of the vectors with no new local increment, so peers that merge the same
versions agree and stop. Every applied change is stamped with the next local sequence
number and journalled in the same transaction (rule 1), and remembers which peer sent it
(`origin`), so it is not sent back there.

A remote content change gives the node a fresh local inode (rule 6): open handles keep the
bytes they had, and the kernel sees the new inode at its next lookup. The new inode holds
the chunk list; its chunks arrive when the file is opened (the fetcher), and `local` says
whether they all are here.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass, field

import blake3
from syncd.index.catalog import ASPECTS, Catalog, check_name
from syncd.index.names import conflict_name
from syncd.index.schema import ROOT_ID, ROOT_INO
from syncd.index.store import file_hash, split_chunks

log = logging.getLogger(__name__)

# Outcome of comparing two version vectors: local is equal, greater (dominates), less, or
# concurrent with remote.
EQ, GT, LT, CC = "eq", "gt", "lt", "cc"


def compare(local: dict[str, int], remote: dict[str, int]) -> str:
    ge = all(local.get(d, 0) >= c for d, c in remote.items())
    le = all(remote.get(d, 0) >= c for d, c in local.items())
    return EQ if ge and le else GT if ge else LT if le else CC


def vv_max(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {d: max(a.get(d, 0), b.get(d, 0)) for d in sorted(a.keys() | b.keys())}


def supersedes(x: dict, y: dict) -> bool:
    """Version x's data was made knowing version y: its maker had y, or a later version by
    y's maker, when it made x. Vectors that merely merged y in (vv) do not count: a merge
    keeps one side's data, so a version merged with a third one can look concurrent with
    a later edit of its own maker, and then which wins would depend on the order in which a
    peer met them (found by tests/index/test_convergence.py)."""
    device = y["device"] or ""
    return x["made"].get(device, 0) >= y["made"].get(device, 0)


def refine(cmp: str, local: dict, remote: dict) -> str:
    """Concurrent vectors whose data is not: the version made knowing the other wins."""
    if cmp != CC:
        return cmp
    knows_local, knows_remote = supersedes(remote, local), supersedes(local, remote)
    return LT if knows_local and not knows_remote else \
        GT if knows_remote and not knows_local else CC


def conflict_id(node: str, device: str, counter: int) -> str:
    """A conflict copy's id: the same on every peer that makes it (DESIGN, "Nodes")."""
    return blake3.blake3(f"{node}|{device}|{counter}".encode()).hexdigest()[:32] + ":0"


@dataclass
class Effects:
    """What applying changed, for the mount: kernel caches to invalidate and inodes that
    may have lost their last name."""

    entries: set[tuple[int, str]] = field(default_factory=set)  # (parent ino, name)
    inodes: set[int] = field(default_factory=set)  # attributes changed in place
    orphans: set[int] = field(default_factory=set)
    # File inodes a remote change took from their node: inode -> (node, content version
    # vector the inode had). A local writer still on one makes a concurrent version.
    detached: dict[int, tuple[str, dict[str, int]]] = field(default_factory=dict)
    missing: set[int] = field(default_factory=set)  # new file inodes whose chunks are not here
    # Files whose content may be held by nobody (conflict copies, files back from a
    # delete) and is not all here: the daemon drops those nobody holds (drop_unheld).
    unheld: set[str] = field(default_factory=set)


NODE_COLUMNS = (
    "n.id, n.kind, n.parent, n.name, n.deleted, n.conflict_of, n.seq, n.origin, n.ino, "
    "n.content_vv, n.content_clock, n.content_device, n.mode_vv, n.mode_clock, "
    "n.mode_device, n.place_vv, n.place_clock, n.place_device, "
    "i.hash, i.size, i.mtime_ns, i.chunks, i.target, i.mode, "
    "n.content_made, n.mode_made, n.place_made"
)


def _state(row) -> dict:
    (node, kind, parent, name, deleted, conflict_of, _seq, _origin, ino, cvv, cclock, cdev,
     mvv, mclock, mdev, pvv, pclock, pdev, digest, size, mtime, chunks, target, mode,
     cmade, mmade, pmade) = row
    alive = not deleted and ino is not None
    content = {"vv": json.loads(cvv), "made": json.loads(cmade), "clock": cclock,
               "device": cdev, "hash": None,
               "size": 0, "mtime_ns": 0, "chunks": [], "target": None}
    if alive and kind != "dir":
        content.update(hash=digest, size=size, mtime_ns=mtime,
                       chunks=[c.hex() for c in split_chunks(chunks or b"")],
                       target=base64.b64encode(target).decode() if target is not None
                       else None)
    return {
        "id": node, "kind": kind, "parent": parent, "name": name, "deleted": bool(deleted),
        "conflict_of": conflict_of, "content": content,
        "mode": {"vv": json.loads(mvv), "made": json.loads(mmade), "clock": mclock,
                 "device": mdev, "mode": mode if alive else 0},
        "place": {"vv": json.loads(pvv), "made": json.loads(pmade), "clock": pclock,
                  "device": pdev},
    }


def pending(conn, cursor: int, device: str | None,
            upto: int | None = None) -> tuple[int, int, int | None]:
    """What a peer has yet to receive (DESIGN, "Sequence numbers"): the nodes stamped
    after its cursor (and up to `upto`) that it did not send us, their content bytes, and
    the journal time (unix seconds) of the oldest."""
    changes, size, oldest_seq = conn.execute(
        "SELECT count(*), coalesce(sum(i.size), 0), min(n.seq) FROM nodes n "
        "LEFT JOIN inodes i ON i.ino = n.ino AND n.kind = 'file' "
        "WHERE n.seq > ? AND n.seq <= ? AND (n.origin IS NULL OR n.origin != ?)",
        (cursor, upto if upto is not None else 1 << 62, device or ""),
    ).fetchone()
    row = conn.execute("SELECT at FROM journal WHERE seq = ?", (oldest_seq,)).fetchone()
    return changes, size, row[0] if row else None


class Replica:
    def __init__(self, catalog: Catalog):
        self.cat = catalog
        self.conn = catalog.conn
        self.store = catalog.store

    # -- out

    def changes_since(self, since: int, limit: int = 1000,
                      skip_origin: str | None = None) -> tuple[list[dict], int]:
        """Node states stamped after `since`, oldest first, and the sequence number to ask
        from next. States that `skip_origin` sent us are left out: it holds them."""
        rows = self.conn.execute(
            f"SELECT {NODE_COLUMNS} FROM nodes n LEFT JOIN inodes i ON i.ino = n.ino "
            "WHERE n.seq > ? ORDER BY n.seq LIMIT ?", (since, limit),
        ).fetchall()
        if not rows:
            return [], since
        states = [_state(r) for r in rows if skip_origin is None or r[7] != skip_origin]
        return states, rows[-1][6]

    def state_of(self, node: str) -> dict | None:
        row = self._row(node)
        return _state(row) if row is not None else None

    # -- in

    def apply(self, states: list[dict], origin: str) -> Effects:
        """Apply a batch of remote states in one transaction. States whose parent is not
        known yet wait in `limbo` until it arrives."""
        effects = Effects()
        for state in states:
            for aspect in ASPECTS:  # a state without "made" was made at its vector
                if state[aspect].get("made") is None:
                    state[aspect]["made"] = state[aspect]["vv"]

        def run() -> None:
            queue = list(states)
            while queue:
                waiting = []
                for state in queue:
                    if self._known(state) or self._parent_known(state):
                        self._apply_one(state, origin, effects)
                    else:
                        waiting.append(state)
                if len(waiting) == len(queue):
                    break
                queue = waiting
            for state in queue:
                self.conn.execute(
                    "INSERT OR REPLACE INTO limbo (id, state, origin) VALUES (?, ?, ?)",
                    (state["id"], json.dumps(state), origin))
            self._drain_limbo(effects)

        self.cat.transaction(run)
        return effects

    def commit_detached(self, node: str, base_vv: dict[str, int], chunks: list[bytes],
                        size: int, mtime_ns: int) -> Effects:
        """A file written here while a peer's change replaced or deleted it (rule 6) was
        closed: its content is a version concurrent with that change, merged by rule 3
        like any other (the later mtime keeps the name, the other is a conflict copy; an
        edit beats a delete). Nothing anyone wrote is lost."""
        effects = Effects()

        def run() -> None:
            row = self._row(node)
            if row is None:
                return
            mine = _state(row)
            device = self.cat.device
            mine["deleted"] = False
            vv = {**base_vv, device: self.cat.seq + 1}
            mine["content"] = {
                "vv": vv, "made": vv, "clock": self.cat.clock + 1,
                "device": device, "hash": file_hash(b"".join(chunks)), "size": size,
                "mtime_ns": mtime_ns, "chunks": [c.hex() for c in chunks], "target": None}
            if mine["mode"]["mode"] == 0:
                mine["mode"]["mode"] = 0o644
            self._apply_one(mine, None, effects)

        self.cat.transaction(run)
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
                    self._apply_one(state, origin, effects)
                    progress = True

    def _row(self, node: str):
        return self.conn.execute(
            f"SELECT {NODE_COLUMNS} FROM nodes n LEFT JOIN inodes i ON i.ino = n.ino "
            "WHERE n.id = ?", (node,)).fetchone()

    def _known(self, state: dict) -> bool:
        return self._row(state["id"]) is not None

    def _parent_known(self, state: dict) -> bool:
        return state["deleted"] or self._row(state["parent"]) is not None

    def _apply_one(self, remote: dict, origin: str, effects: Effects) -> None:
        if remote["id"] == ROOT_ID:
            return
        self.cat.observe_clock(max(remote[a]["clock"] for a in ASPECTS))
        row = self._row(remote["id"])
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
            if self.unheld_file(remote["id"]) is not None:
                effects.unheld.add(remote["id"])

    def _merge_into(self, row, remote: dict, origin: str, effects: Effects) -> bool:
        """Merge a remote state into the node's row; True when nothing changed."""
        local = _state(row)
        if local["kind"] != remote["kind"]:
            # A node's kind is fixed when it is made (its id says who made it, when);
            # a state that says otherwise is not from a syncd that follows this protocol.
            log.warning("ignored a state of node %s from %s: it says %s, the node is a %s",
                        remote["id"], origin, remote["kind"], local["kind"])
            return True
        raw = {a: compare(local[a]["vv"], remote[a]["vv"]) for a in ASPECTS}
        if all(c in (EQ, GT) for c in raw.values()) and not (
                remote["deleted"] and not local["deleted"] and self._deletable(local)
                and all(c == EQ for c in raw.values())):
            return True  # nothing newer: dominated or the same
        cmps = {a: refine(raw[a], local[a], remote[a]) for a in ASPECTS}
        merged = self._merge(local, remote, raw, cmps, effects)
        same_as_remote = all(merged[a]["vv"] == remote[a]["vv"] for a in ASPECTS) and \
            merged["deleted"] == remote["deleted"]
        self._write(row, merged, origin if same_as_remote else None, effects)
        if (local["deleted"] or remote["deleted"]) and not merged["deleted"]:
            # Back from a delete by a change that carried no content (a chmod, a move):
            # the deleter may have collected the content before anyone fetched it.
            effects.unheld.add(remote["id"])
        if remote["deleted"] and not merged["deleted"] and not local["deleted"] and all(
                c in (EQ, LT) for c in cmps.values()):
            # A directory the deleter had seen whole, kept for the children it has here
            # that the deleter did not: it comes back as a new version, so the deleter
            # takes it back too instead of both keeping what they had.
            self._decided(remote["id"], "restore")
        return False

    def _reconsider(self, node: str, effects: Effects) -> None:
        """Rule 3 over every version of a node's content that no other one was made
        knowing (its siblings): the node holds the winner of them all, the others are
        conflict copies. A version kept as a copy stays a candidate: when a version made
        without knowing it replaces the one it lost to, it may win now. Without this, a
        peer that met the replacement first kept it, and one that met the copy's
        version first kept that, with the same vector (bug 14).

        Taking a copy's version back adds a dot of this device to the content vector, so
        a peer that holds other copies, or none, takes the result instead of keeping its
        own. The copy stays: it may be renamed or edited by now, and it is the only holder
        of its name's history."""
        row = self._row(node)
        if row is None or row[4] or row[1] == "dir":
            return
        current = _state(row)
        siblings = [current, *self._copies(current)]
        if len(siblings) == 1:
            return
        frontier = [s for s in siblings if not _replaced(s, siblings)]
        effects.unheld.update(s["id"] for s in siblings[1:] if self._missing_chunk(s))
        best = max(frontier, key=_content_key)
        if best["content"]["hash"] == current["content"]["hash"] or (
                _content_key(best) <= _content_key(current)):
            return
        # The vector gains the sequence number _write stamps the node with.
        vv = {**vv_max(current["content"]["vv"], best["content"]["vv"]),
              self.cat.device: self.cat.seq + 1}
        merged = dict(current, content=dict(best["content"], vv=vv))
        self._write(row, merged, None, effects)
        self._conflict_copy(current, merged, effects)

    # -- merging (DESIGN rule 3)

    def _merge(self, local: dict, remote: dict, raw: dict[str, str], cmps: dict[str, str],
               effects: Effects) -> dict:
        """The merged state. `raw` compares the vectors, `cmps` the versions (refine)."""
        merged = {k: remote[k] for k in ("id", "kind", "conflict_of")}
        # Deletion: a tombstone that has seen every version of the live side deletes it;
        # any concurrent or newer change keeps the node alive (rule 3, delete vs change).
        if local["deleted"] and remote["deleted"]:
            deleted = True
        elif remote["deleted"]:
            deleted = all(c in (EQ, LT) for c in cmps.values()) and self._deletable(local)
        elif local["deleted"]:
            deleted = all(c in (EQ, GT) for c in cmps.values())
        else:
            deleted = False
        merged["deleted"] = deleted
        alive_side = local if remote["deleted"] else remote
        loser = None
        for aspect in ASPECTS:
            cmp = cmps[aspect]
            if cmp == LT:
                take = remote
            elif cmp in (EQ, GT):
                take = local
            elif local["deleted"] != remote["deleted"]:
                take = alive_side
            elif aspect == "content":
                take, loser = self._content_winner(local, remote)
            else:  # mode, placement: the higher (Lamport clock, device) wins
                key = lambda s, a=aspect: (s[a]["clock"], s[a]["device"] or "")  # noqa: E731
                take = remote if key(remote) > key(local) else local
            if take["deleted"] and not deleted and aspect != "place":
                take = alive_side  # a tombstone carries no content or mode data
            # The data, its clock and what it was made at are the side taken; the
            # vector has seen both.
            merged[aspect] = dict(take[aspect])
            if raw[aspect] == CC:
                merged[aspect]["vv"] = vv_max(local[aspect]["vv"], remote[aspect]["vv"])
            if aspect == "place":
                merged["parent"], merged["name"] = take["parent"], take["name"]
                if take["deleted"] and not deleted:
                    # A node back from a delete keeps the deleter's placement version,
                    # with the lowest clock: a move concurrent with that delete must
                    # still win (rule 3, delete vs change) on peers where the node is
                    # alive, as it does where it meets the tombstone itself.
                    merged["place"]["clock"] = 0
        if loser is not None:
            self._conflict_copy(loser, merged, effects)
        return merged

    @staticmethod
    def _content_winner(local: dict, remote: dict) -> tuple[dict, dict | None]:
        """Concurrent content: the later mtime wins (ties: the higher device id); the other
        (returned second) becomes a conflict copy. Equal hashes are no conflict."""
        winner, loser = (remote, local) if _content_key(remote) > _content_key(local) \
            else (local, remote)
        if local["content"]["hash"] == remote["content"]["hash"] or local["kind"] == "dir":
            return winner, None
        return winner, loser

    def _conflict_copy(self, loser: dict, merged: dict, effects: Effects) -> None:
        """The loser of a content conflict, as a new node beside the merged one. It takes
        the merged node's placement version with its place: peers that settle the conflict
        while they hold different places of the node (a concurrent rename) then settle the
        copy's place like the node's, instead of each keeping its own (bug 15)."""
        c = loser["content"]
        device = c["device"] or ""
        node = conflict_id(loser["id"], device, c["made"].get(device, 0))
        if self._row(node) is not None:
            return
        name = conflict_name(merged["name"], device, c["mtime_ns"],
                             lambda n: self.cat.is_live_name(merged["parent"], n))
        state = {
            "id": node, "kind": loser["kind"], "parent": merged["parent"], "name": name,
            "deleted": False, "conflict_of": loser["id"], "content": dict(c),
            # The loser's mode version, vector and all: peers that make this copy from
            # different mode histories then merge its mode like any other.
            "mode": dict(loser["mode"]),
            "place": dict(merged["place"]),
        }
        self._insert(state, None, effects)
        if name != conflict_name(merged["name"], device, c["mtime_ns"]):
            # Numbered because of copies that are here: a peer without them names it
            # otherwise, so the name taken here is a version of its own.
            self._decided(node, "conflict-copy")

    def _copies(self, node: dict) -> list[dict]:
        """The live conflict copies of a node whose content is still the version they
        were made of (the id says which): a copy edited since is a file of its own."""
        out = []
        for r in self.conn.execute(
                f"SELECT {NODE_COLUMNS} FROM nodes n LEFT JOIN inodes i ON i.ino = n.ino "
                "WHERE n.conflict_of = ? AND n.deleted = 0", (node["id"],)):
            copy = _state(r)
            c = copy["content"]
            device = c["device"] or ""
            if copy["kind"] == node["kind"] and copy["id"] == conflict_id(
                    node["id"], device, c["made"].get(device, 0)):
                out.append(copy)
        return out

    def _missing_chunk(self, state: dict) -> bytes | None:
        """A chunk of the state's content that is not in the store here, if any (a
        retired one counts as here: the fetcher takes it back)."""
        return next((d for d in map(bytes.fromhex, state["content"]["chunks"])
                     if not self.store.has(d) and not self.store.is_retired(d)), None)

    # -- files nobody can read (soak bug 4)

    def unheld_copies(self) -> list[str]:
        """Every conflict copy whose content is not all here: drop_unheld drops one when
        no peer holds its content either."""
        return [r[0] for r in self.conn.execute(
            "SELECT n.id FROM nodes n JOIN inodes i ON i.ino = n.ino WHERE n.conflict_of"
            " IS NOT NULL AND n.deleted = 0 AND n.kind = 'file' AND i.local = 0")]

    def unheld_file(self, node: str) -> tuple[str, bytes] | None:
        """For a live file whose content is not all here: the device that made its
        content, and a chunk of it that is missing here. None for any other node."""
        row = self._row(node)
        if row is None or row[4] or row[1] != "file":
            return None
        state = _state(row)
        missing = self._missing_chunk(state)
        return None if missing is None else (state["content"]["device"] or "", missing)

    def drop_unheld(self, node: str) -> Effects | None:
        """Delete a file unheld_file names, as a change of this peer: the daemon found
        that no peer holds that chunk, its content's maker included (the maker replaced or
        deleted that version before anyone fetched it), so nobody can ever read the file.
        None when it is not such a file any more."""
        effects = Effects()

        def run() -> bool:
            if self.unheld_file(node) is None:
                return False
            row = self._row(node)
            ino, parent, name = row[8], row[2], row[3]
            self.conn.execute("UPDATE nodes SET deleted = 1, ino = NULL WHERE id = ?",
                              (node,))
            effects.orphans.add(ino)
            # A writer that opened it with O_TRUNC keeps what it writes (rule 6).
            effects.detached[ino] = (node, _state(row)["content"]["vv"])
            self._decided(node, "drop-unheld", ASPECTS)
            self._entry_changed(parent, name, effects)
            return True

        return effects if self.cat.transaction(run) else None

    def _deletable(self, local: dict) -> bool:
        """A directory with live children stays: the children are changes the deleter
        did not see."""
        return not (local["kind"] == "dir" and self.cat.has_children(local["id"]))

    # -- writing

    def _decided(self, node: str, op: str, aspects: tuple[str, ...] = ("place",)) -> None:
        """A change this peer decides because of what it holds (a name contest, a merge of
        directories, a cycle, a directory brought back): a new local version, like a user's
        rename. Merging versions of one node needs none, since every peer computes the
        same result; these decisions depend on the state each peer has when the clash
        reaches it, so without a version of their own a peer that decided otherwise, or
        never saw the clash, would keep what it has for ever (soak bug 5)."""
        self.cat.stamp_local(node, op, aspects, {"decided": True})

    def _insert(self, state: dict, origin: str | None, effects: Effects) -> None:
        node = state["id"]
        if state["deleted"]:
            self.conn.execute(
                "INSERT INTO nodes (id, kind, ino, parent, name, deleted, seq, conflict_of)"
                " VALUES (?, ?, NULL, ?, ?, 1, 0, ?)",
                (node, state["kind"], state["parent"], state["name"], state["conflict_of"]))
            self._set_versions(node, state)
            self._stamp(node, "apply-delete", origin, state)
            return
        parent = self._live_parent(state["parent"], effects)
        ino = self._new_inode(state, effects)
        self.conn.execute(
            "INSERT INTO nodes (id, kind, ino, parent, name, seq, conflict_of)"
            " VALUES (?, ?, ?, NULL, ?, 0, ?)",
            (node, state["kind"], ino, state["name"], state["conflict_of"]))
        self._set_versions(node, state)
        placed = self._place(node, state, parent, effects)
        if placed is None:  # merged into a directory already here
            return
        if placed == (state["parent"], state["name"]):
            self._stamp(node, "apply-create", origin, state)
        else:
            self._decided(node, "apply-create")

    def _write(self, row, merged: dict, origin: str | None, effects: Effects) -> None:
        node, ino = merged["id"], row[8]
        old = _state(row)
        old_parent, old_name = old["parent"], old["name"]
        if merged["deleted"]:
            if ino is not None:
                self.conn.execute("UPDATE nodes SET deleted = 1, ino = NULL WHERE id = ?",
                                  (node,))
                self.cat.forget_dir(ino)
                effects.orphans.add(ino)
                effects.detached[ino] = (node, old["content"]["vv"])
                self._entry_changed(old_parent, old_name, effects)
            self.conn.execute("UPDATE nodes SET parent = ?, name = ? WHERE id = ?",
                              (merged["parent"], merged["name"], node))
            self._set_versions(node, merged)
            self._stamp(node, "apply-delete", origin, merged)
            return
        parent = self._live_parent(merged["parent"], effects)
        moved = old["deleted"] or (parent, merged["name"]) != (old_parent, old_name)
        content_changed = old["deleted"] or any(
            old["content"][k] != merged["content"][k]
            for k in ("hash", "mtime_ns", "target")) or old["kind"] != merged["kind"]
        if content_changed and (merged["kind"] != "dir" or ino is None):
            new_ino = self._new_inode(merged, effects)
            # Coming back from a tombstone, it leaves its old place first (another node may
            # have taken that name meanwhile); _place below settles where it goes.
            self.conn.execute(
                "UPDATE nodes SET ino = ?, deleted = 0, parent = CASE WHEN deleted"
                " THEN NULL ELSE parent END WHERE id = ?", (new_ino, node))
            if ino is not None:
                effects.orphans.add(ino)
                effects.detached[ino] = (node, old["content"]["vv"])
            self._entry_changed(old_parent, old_name, effects)
            ino = new_ino
        elif old["mode"]["mode"] != merged["mode"]["mode"]:
            self.conn.execute("UPDATE inodes SET mode = ?, ctime_ns = ? WHERE ino = ?",
                              (merged["mode"]["mode"] & 0o7777, time.time_ns(), ino))
            effects.inodes.add(ino)
        self._set_versions(node, merged)
        placed = (old_parent, old_name)
        if moved:
            self._entry_changed(old_parent, old_name, effects)
            self.conn.execute("UPDATE nodes SET parent = NULL WHERE id = ?", (node,))
            placed = self._place(node, merged, parent, effects)
            if placed is None:
                return
        if placed == (merged["parent"], merged["name"]):
            self._stamp(node, "apply", origin, merged)
        else:
            self._decided(node, "apply")

    def _new_inode(self, state: dict, effects: Effects) -> int:
        c = state["content"]
        uid, gid = self.conn.execute(
            "SELECT uid, gid FROM inodes WHERE ino = ?", (ROOT_INO,)).fetchone()
        now = time.time_ns()
        chunks = [bytes.fromhex(h) for h in c["chunks"]] if state["kind"] == "file" else []
        target = base64.b64decode(c["target"]) if state["kind"] == "symlink" else None
        digest = file_hash(b"".join(chunks)) if state["kind"] == "file" else c["hash"]
        size = c["size"] if state["kind"] == "file" else len(target or b"")
        mtime = c["mtime_ns"] if state["kind"] != "dir" else now
        local = all(self.store.has(d) for d in chunks)
        ino = self.conn.execute(
            "INSERT INTO inodes (kind, mode, uid, gid, size, mtime_ns, ctime_ns, atime_ns,"
            " hash, chunks, target, local) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (state["kind"], state["mode"]["mode"] & 0o7777, uid, gid, size, mtime, now, now,
             digest, b"".join(chunks), target, int(local)),
        ).lastrowid
        if chunks:
            self.cat.add_chunk_refs(chunks, size)
        if not local:
            effects.missing.add(ino)
        return ino

    def _set_versions(self, node: str, state: dict) -> None:
        sets, params = [], []
        for a in ASPECTS:
            sets += [f"{a}_vv = ?", f"{a}_made = ?", f"{a}_clock = ?", f"{a}_device = ?"]
            params += [json.dumps(state[a]["vv"], sort_keys=True),
                       json.dumps(state[a]["made"], sort_keys=True), state[a]["clock"],
                       state[a]["device"]]
        self.conn.execute(f"UPDATE nodes SET {', '.join(sets)} WHERE id = ?",
                          (*params, node))

    def _stamp(self, node: str, op: str, origin: str | None, state: dict) -> None:
        """An applied change, journalled as made by the device of its latest version."""
        device = max((state[a] for a in ASPECTS), key=lambda v: v["clock"])["device"]
        self.cat.stamp_applied(node, op, origin, device,
                               {"from": origin} if origin else {"merged": True})

    # -- placement

    def _live_parent(self, parent: str, effects: Effects,
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

    def _resurrect(self, node: str, effects: Effects, seen: set[str]) -> None:
        row = self._row(node)
        state = _state(row)
        parent = self._live_parent(state["parent"], effects, seen)
        state["mode"]["mode"] = 0o755
        ino = self._new_inode(state, effects)
        self.conn.execute("UPDATE nodes SET deleted = 0, ino = ?, parent = NULL WHERE id = ?",
                          (ino, node))
        if self._place(node, state, parent, effects) is not None:
            self._decided(node, "restore")

    def _place(self, node: str, state: dict, parent: str,
               effects: Effects) -> tuple[str, str] | None:
        """Put a live node under `parent` at its name, unless another live node has that
        name (rule 3, two nodes on one name): two directories merge, the higher id keeping
        the name and taking in the other's children; otherwise the winner by the content
        rule keeps the name and the other becomes a conflict copy. Returns the (parent,
        name) taken, or None when the node was merged into another directory."""
        name = check_name(state["name"])
        if state["kind"] == "dir":
            parent, name = self._break_cycle(node, state, parent, name, effects)
        row = self.conn.execute(
            f"SELECT {NODE_COLUMNS} FROM nodes n LEFT JOIN inodes i ON i.ino = n.ino "
            "WHERE n.parent = ? AND n.name = ? AND n.deleted = 0 AND n.id != ?",
            (parent, name, node)).fetchone()
        if row is not None:
            other = _state(row)
            if state["kind"] == "dir" and other["kind"] == "dir":
                if node < other["id"]:
                    self._alias(node, other["id"], effects)
                    return None
                self._alias(other["id"], node, effects)
                self._set_place(node, parent, name, effects)
                return parent, name
            if _name_key(state) > _name_key(other):
                self._rename_loser(other, node, parent, effects)
            else:
                name = self._loser_name(state, parent)
                self.conn.execute("UPDATE nodes SET conflict_of = coalesce(conflict_of, ?)"
                                  " WHERE id = ?",
                                  (other["id"], node))
        self._set_place(node, parent, name, effects)
        return parent, name

    def _break_cycle(self, node: str, state: dict, parent: str, name: str,
                     effects: Effects) -> tuple[str, str]:
        """Concurrent moves that would put a directory inside itself (rule 3): of the
        directories on the cycle, the one whose move is oldest (lowest Lamport clock, then
        device, then id) goes to the share's root under a conflict name. Every peer sees
        the same cycle and picks the same one."""
        ring, at = [], parent
        while at is not None and at != ROOT_ID and at != node:
            ring.append(at)
            at = self.conn.execute("SELECT parent FROM nodes WHERE id = ?",
                                   (at,)).fetchone()[0]
        if at != node:
            return parent, name
        members = [state] + [_state(self._row(n)) for n in ring]
        loser = min(members, key=lambda s: (s["place"]["clock"], s["place"]["device"] or "",
                                            s["id"]))
        free = conflict_name(loser["name"], loser["place"]["device"],
                             taken=lambda n: self.cat.is_live_name(ROOT_ID, n))
        if loser["id"] == node:
            return ROOT_ID, free
        self._entry_changed(loser["parent"], loser["name"], effects)
        self._set_place(loser["id"], ROOT_ID, free, effects)
        self._decided(loser["id"], "cycle-move")
        return parent, name

    def _set_place(self, node: str, parent: str, name: str, effects: Effects) -> None:
        self.conn.execute("UPDATE nodes SET parent = ?, name = ? WHERE id = ?",
                          (parent, name, node))
        self._entry_changed(parent, name, effects)

    def _loser_name(self, state: dict, parent: str) -> str:
        """A conflict name by the content version; directories have no content time (their
        mtime is local), so theirs names the device of their placement alone."""
        def taken(n: str) -> bool:
            return self.cat.is_live_name(parent, n)

        if state["kind"] == "dir":
            return conflict_name(state["name"], state["place"]["device"], taken=taken)
        c = state["content"]
        return conflict_name(state["name"], c["device"], c["mtime_ns"], taken)

    def _rename_loser(self, loser: dict, winner: str, parent: str, effects: Effects) -> None:
        name = self._loser_name(loser, parent)
        # A conflict copy that loses a name stays a copy of the node it was made of.
        self.conn.execute("UPDATE nodes SET name = ?, conflict_of = coalesce(conflict_of, ?)"
                          " WHERE id = ?",
                          (name, winner, loser["id"]))
        self._decided(loser["id"], "conflict-rename")
        self._entry_changed(parent, loser["name"], effects)
        self._entry_changed(parent, name, effects)

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
            "parent, (SELECT parent FROM nodes WHERE id = ?)) WHERE id = ?",
            (into, into, node))
        if ino is not None:
            self.cat.forget_dir(ino)
            effects.orphans.add(ino)
        self._decided(node, "merge-dir", ASPECTS)
        self._entry_changed(parent, name, effects)

    def _adopt(self, from_dir: str, into: str, effects: Effects) -> None:
        for row in self.conn.execute(
                f"SELECT {NODE_COLUMNS} FROM nodes n LEFT JOIN inodes i ON i.ino = n.ino "
                "WHERE n.parent = ? AND n.deleted = 0", (from_dir,)).fetchall():
            child = _state(row)
            self._entry_changed(from_dir, child["name"], effects)
            self.conn.execute("UPDATE nodes SET parent = NULL WHERE id = ?", (child["id"],))
            if self._place(child["id"], child, into, effects) is not None:
                self._decided(child["id"], "merge-move")

    def _entry_changed(self, parent: str | None, name: str, effects: Effects) -> None:
        if parent is None:
            return
        row = self.conn.execute("SELECT ino FROM nodes WHERE id = ? AND deleted = 0",
                                (parent,)).fetchone()
        if row is not None and row[0] is not None:
            effects.entries.add((row[0], name))
            effects.inodes.add(row[0])
            now = time.time_ns()
            self.conn.execute("UPDATE inodes SET mtime_ns = ?, ctime_ns = ? WHERE ino = ?",
                              (now, now, row[0]))


def _replaced(version: dict, siblings: list[dict]) -> bool:
    """Another of the siblings was made knowing this version's content."""
    return any(supersedes(o["content"], version["content"]) and not supersedes(
        version["content"], o["content"]) for o in siblings)


def _content_key(state: dict) -> tuple:
    """Who wins concurrent content (rule 3): the later mtime, then the higher device."""
    c = state["content"]
    return (c["mtime_ns"], c["device"] or "")


def _name_key(state: dict) -> tuple:
    """Who keeps a name two nodes want: the content rule, then the id."""
    return (*_content_key(state), state["id"])
