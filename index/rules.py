"""DESIGN rule 3, "Version vectors decide", as pure decisions on node states.

A node state is the dict docs/protocol.md calls one ("Node states"): id, kind, parent,
name, deleted, conflict_of, and per aspect (content, mode, place, xattr) a version: `vv` (its
vector, with every version merged into it), `made` (the vector its data was made at),
`clock` (Lamport) and `device` (the data's maker), beside the aspect's data. Nothing here
reads or writes the catalog: every peer computes these from the versions alone, never
from arrival order or the time of merging, so peers that merge the same versions agree.
index/merge.py and index/placement.py apply what these decide.
"""

from __future__ import annotations

from collections.abc import Callable

import blake3
from syncd.index.catalog import ASPECTS
from syncd.index.names import conflict_name

# -- comparing versions

# Outcome of comparing two version vectors: local is equal, greater (dominates), less, or
# concurrent with remote.
EQ, GT, LT, CC = "eq", "gt", "lt", "cc"


def compare(local: dict[str, int], remote: dict[str, int]) -> str:
    ge = all(local.get(d, 0) >= c for d, c in remote.items())
    le = all(remote.get(d, 0) >= c for d, c in local.items())
    return EQ if ge and le else GT if ge else LT if le else CC


def vv_max(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """A merge result's vector: the pointwise maximum, with no new local increment."""
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


def is_news(local: dict, remote: dict, raw: dict[str, str], has_children: bool) -> bool:
    """A remote state dominated by the local one, or the same, is ignored. `raw` compares
    the vectors per aspect. A tombstone with the very vectors of the node alive here is
    news all the same, when the node may be deleted (`deletable`)."""
    if not all(c in (EQ, GT) for c in raw.values()):
        return True
    return remote["deleted"] and not local["deleted"] and deletable(local, has_children) \
        and all(c == EQ for c in raw.values())


# -- delete vs any concurrent change: the change wins, and what it needs comes back


def deletable(local: dict, has_children: bool) -> bool:
    """A directory with live children here stays: the children are changes the deleter
    did not see (a child created, edited or moved into it)."""
    return not (local["kind"] == "dir" and has_children)


def stays_deleted(local: dict, remote: dict, cmps: dict[str, str],
                  has_children: bool) -> bool:
    """Whether the merged node is a tombstone: one that has seen every version of the live
    side deletes it; any concurrent or newer change keeps the node alive. `cmps` compares
    the versions per aspect (refine)."""
    if local["deleted"] and remote["deleted"]:
        return True
    if remote["deleted"]:
        return all(c in (EQ, LT) for c in cmps.values()) and deletable(local, has_children)
    if local["deleted"]:
        return all(c in (EQ, GT) for c in cmps.values())
    return False


def kept_for_children(local: dict, remote: dict, merged: dict, cmps: dict[str, str]) -> bool:
    """A directory alive here that a tombstone had seen whole, kept for the children it
    has here that the deleter did not see. It comes back as a new version of this peer,
    so the deleter takes it back too instead of both keeping what they had."""
    return remote["deleted"] and not merged["deleted"] and not local["deleted"] and all(
        c in (EQ, LT) for c in cmps.values())


# -- content vs content: the later mtime wins (ties: the higher device id)


def content_key(state: dict) -> tuple:
    """Who wins concurrent content: the later mtime, then the higher device."""
    c = state["content"]
    return (c["mtime_ns"], c["device"] or "")


def content_winner(local: dict, remote: dict) -> tuple[dict, dict | None]:
    """Concurrent content: the winner keeps the node, and the loser (second, None when
    there is none) becomes a conflict copy. Equal hashes are no conflict, and directories
    have no content to lose."""
    winner, loser = (remote, local) if content_key(remote) > content_key(local) \
        else (local, remote)
    if local["content"]["hash"] == remote["content"]["hash"] or local["kind"] == "dir":
        return winner, None
    return winner, loser


def replaced(version: dict, siblings: list[dict]) -> bool:
    """Another of the siblings was made knowing this version's content."""
    return any(supersedes(o["content"], version["content"]) and not supersedes(
        version["content"], o["content"]) for o in siblings)


def content_to_take(current: dict, copies: list[dict],
                    deleted: dict | None = None) -> dict | None:
    """Of a node's content and that of its conflict copies still at the version they were
    made of, the winner among those no other one was made knowing: the state whose content
    the node should hold, or None when it holds that already. With `deleted` (a tombstone,
    content_deleted), the content the node holds is no candidate, nor is a copy the
    tombstone was made knowing."""
    siblings = [current, *copies]
    candidates = siblings if deleted is None else [
        s for s in copies if not supersedes(deleted["content"], s["content"])]
    frontier = [s for s in candidates if not replaced(s, siblings)]
    if not frontier:
        return None
    best = max(frontier, key=content_key)
    if best["content"]["hash"] == current["content"]["hash"] or (
            deleted is None and content_key(best) <= content_key(current)):
        return None
    return best


def content_deleted(local: dict, remote: dict, merged: dict, cmps: dict[str, str]) -> dict | None:
    """The tombstone of two states whose content version wins (it was made knowing the
    live side's content) while another aspect keeps the node alive: the content the node
    keeps is one its deleter saw and deleted, or None. A conflict copy the deleter did not
    see then takes the node back (content_to_take), as it would where the copy's version
    met the tombstone without the version it lost to (bug 19)."""
    if merged["deleted"] or local["deleted"] == remote["deleted"]:
        return None
    if remote["deleted"]:
        return remote if cmps["content"] == LT else None
    return local if cmps["content"] == GT else None


# -- mode vs mode, placement vs placement: the higher (Lamport clock, device id) wins


def later_by_clock(local: dict, remote: dict, aspect: str) -> dict:
    """The side whose version of `aspect` wins; the loser is dropped (nothing a user wrote
    is in it)."""
    def key(s: dict) -> tuple:
        return (s[aspect]["clock"], s[aspect]["device"] or "")

    return remote if key(remote) > key(local) else local


# -- extended attributes: per name, the later (Lamport clock, device id) wins


def xattr_key(entry: dict) -> tuple:
    return (entry["clock"], entry["device"] or "", entry["value"] or "")


def merge_xattrs(local: dict, remote: dict, deleted: bool) -> dict:
    """Two sets of a node's extended attributes merged name by name: of the two entries
    for a name (a value, or its removal), the one with the higher (clock, device) wins,
    so a set made knowing the other keeps its changes, and concurrent changes to different
    attributes both stay (nothing anyone wrote is lost). The result is the same in any
    order of merging: a maximum per name. A tombstone's are those its node had when
    deleted (schema.TOMBSTONE_XATTRS; none from a peer of an older version), so a node
    back from a delete keeps a change made before it; a live side's do not count when
    the merged node is `deleted` (its deleter saw them: the tombstone's are enough)."""
    out: dict = {}
    for side in (local, remote):
        if side["deleted"] or not deleted:
            for name, entry in side["xattr"]["attrs"].items():
                if name not in out or xattr_key(entry) > xattr_key(out[name]):
                    out[name] = entry
    return dict(sorted(out.items()))


# -- merging two states of one node


def kept_by_tombstone(tombstone: dict, aspect: str) -> bool:
    """Does a tombstone carry the data of its version of `aspect`? Its placement, and the
    mode its node had when deleted (schema.TOMBSTONE_MODE; 0 from a peer of an older
    version: unknown); never content. Its extended attributes are merged with the other
    side's name by name whichever version wins (merge_xattrs)."""
    return aspect == "place" or aspect == "mode" and tombstone["mode"]["mode"] != 0


def merge(local: dict, remote: dict, raw: dict[str, str], cmps: dict[str, str],
          has_children: bool) -> tuple[dict, dict | None]:
    """The merged state of one node, and the loser of a content conflict (None when there
    is none), which becomes a conflict copy. `raw` compares the vectors, `cmps` the
    versions (refine); `has_children`: the local node has live children here."""
    merged = {k: remote[k] for k in ("id", "kind", "conflict_of")}
    deleted = merged["deleted"] = stays_deleted(local, remote, cmps, has_children)
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
            take, loser = content_winner(local, remote)
        else:
            take = later_by_clock(local, remote, aspect)
        if take["deleted"] and not deleted and not kept_by_tombstone(take, aspect):
            take = alive_side
        # The data, its clock and what it was made at are the side taken; the vector has
        # seen both.
        merged[aspect] = dict(take[aspect])
        if raw[aspect] == CC:
            merged[aspect]["vv"] = vv_max(local[aspect]["vv"], remote[aspect]["vv"])
        if aspect == "xattr":
            merged["xattr"]["attrs"] = merge_xattrs(local, remote, deleted)
        if aspect == "place":
            merged["parent"], merged["name"] = take["parent"], take["name"]
        if take["deleted"] and not deleted:
            # A node back from a delete keeps the deleter's placement (and mode) version,
            # with the lowest clock: a move (a chmod) concurrent with that delete must
            # still win (delete vs change) on peers where the node is alive, as it does
            # where it meets the tombstone itself.
            merged[aspect]["clock"] = 0
    return merged, loser


# -- two nodes on one name


def name_winner(a: dict, b: dict) -> dict:
    """Of two live nodes that want one name, the one that keeps it. Two directories merge
    into one, and the higher node id keeps the name; otherwise the winner by the content
    rule (then the higher id) keeps it, and the other is renamed as a conflict copy."""
    if a["kind"] == "dir" and b["kind"] == "dir":
        return a if a["id"] > b["id"] else b
    return a if (*content_key(a), a["id"]) > (*content_key(b), b["id"]) else b


# -- a move that would put a directory inside itself


def cycle_loser(members: list[dict]) -> dict:
    """Of the directories on a cycle that concurrent moves made, the one whose move is
    oldest (lowest Lamport clock, then device, then id): it goes to the share's root under
    a conflict name. Every peer sees the same cycle and picks the same one."""
    return min(members, key=lambda s: (s["place"]["clock"], s["place"]["device"] or "",
                                       s["id"]))


# -- conflict copies


def conflict_id(node: str, device: str, counter: int) -> str:
    """A conflict copy's id: a hash of the losing node's id and the (device, counter) of
    the losing version, the same on every peer that makes it (DESIGN, "Nodes")."""
    return blake3.blake3(f"{node}|{device}|{counter}".encode()).hexdigest()[:32] + ":0"


def copy_name(loser: dict, name: str,
              taken: Callable[[str], bool] = lambda _: False) -> str:
    """The name a loser takes beside `name`: a conflict name by its content version (its
    mtime and device); a directory has no content time (its mtime is local), so its name
    carries the device of its placement alone."""
    if loser["kind"] == "dir":
        return conflict_name(name, loser["place"]["device"], taken=taken)
    c = loser["content"]
    return conflict_name(name, c["device"], c["mtime_ns"], taken)
