"""Extended attributes between real indexes, without a network: stored per inode, a
version of their own per node (index/schema.py, XATTRS), merged name by name by the later
(Lamport clock, device) (index/rules.py, merge_xattrs), and what the wire carries."""

from __future__ import annotations

import errno

import pytest
from syncd.index.catalog import XATTR_TOTAL_MAX
from syncd.index.states import changes_since, state_of

from tests.replicas import ROOT, T, apply, check_invariants, converge, send


def node_of(dev, path: str) -> str:
    return dev.cat.nodes_of(dev.ino(path))[0]


def test_set_stamps_a_version_of_its_own(devs):
    a, _, _ = devs
    a.write("/f", b"data", T)
    node = node_of(a, "/f")
    before = state_of(a.cat.conn, node)
    a.cat.set_xattr(a.ino("/f"), "user.tag", b"blue")
    after = state_of(a.cat.conn, node)
    for aspect in ("content", "mode", "place"):
        assert after[aspect] == before[aspect]  # a chmod or an edit elsewhere: no conflict
    assert after["xattr"]["vv"] == {a.id: a.cat.seq}
    attrs = after["xattr"]["attrs"]
    assert list(attrs) == ["user.tag"] and attrs["user.tag"]["value"] == "Ymx1ZQ=="
    assert attrs["user.tag"]["device"] == a.id
    assert a.cat.conn.execute("SELECT op FROM journal WHERE seq = ?",
                              (a.cat.seq,)).fetchone() == ("xattr",)
    check_invariants(a.cat)


def test_remove_keeps_a_row_without_a_value(devs):
    a, _, _ = devs
    a.write("/f", b"data", T)
    ino = a.ino("/f")
    a.cat.set_xattr(ino, "user.tag", b"blue")
    a.cat.set_xattr(ino, "user.tag", None)
    assert a.cat.xattr(ino, "user.tag") is None and a.cat.xattr_names(ino) == []
    attrs = state_of(a.cat.conn, node_of(a, "/f"))["xattr"]["attrs"]
    assert attrs["user.tag"]["value"] is None  # peers learn of the removal
    with pytest.raises(OSError) as e:
        a.cat.set_xattr(ino, "user.tag", None)
    assert e.value.errno == errno.ENODATA


def test_too_much_on_one_file_is_e2big_and_changes_nothing(devs):
    a, _, _ = devs
    a.write("/f", b"data", T)
    ino = a.ino("/f")
    a.cat.set_xattr(ino, "user.a", b"x" * (64 << 10))
    seq = a.cat.seq
    with pytest.raises(OSError) as e:
        a.cat.set_xattr(ino, "user.b", b"y" * (XATTR_TOTAL_MAX - (64 << 10)))
    assert e.value.errno == errno.E2BIG
    assert a.cat.seq == seq and a.cat.xattr_names(ino) == ["user.a"]
    a.cat.set_xattr(ino, "user.a", b"x")  # replacing one counts its new size only
    a.cat.set_xattr(ino, "user.b", b"y" * (XATTR_TOTAL_MAX - (64 << 10)))


def test_concurrent_sets_may_merge_past_one_machines_limit(devs):
    # Each machine keeps to XATTR_TOTAL_MAX; their merge keeps both sets (nothing anyone
    # wrote is lost), which peers must take (syncd/api.py, XATTR_STATE_MAX).
    a, b, _ = devs
    a.write("/f", b"data", T)
    converge(a, b)
    a.cat.set_xattr(a.ino("/f"), "user.a", b"a" * (60 << 10))
    a.cat.set_xattr(a.ino("/f"), "user.a2", b"a" * (60 << 10))
    b.cat.set_xattr(b.ino("/f"), "user.b", b"b" * (60 << 10))
    converge(a, b)
    for dev in (a, b):
        assert dev.cat.xattr_names(dev.ino("/f")) == ["user.a", "user.a2", "user.b"]
        attrs = state_of(dev.cat.conn, node_of(dev, "/f"))["xattr"]["attrs"]
        assert sum(len(n) + len(e["value"]) * 3 // 4 for n, e in attrs.items()) > \
            XATTR_TOTAL_MAX
    with pytest.raises(OSError) as e:  # a machine adds nothing more to it
        a.cat.set_xattr(a.ino("/f"), "user.c", b"c")
    assert e.value.errno == errno.E2BIG


def test_a_hard_link_group_shares_them_and_each_node_is_stamped(devs):
    a, b, _ = devs
    a.write("/f", b"data", T)
    a.cat.link(a.ino("/f"), ROOT, "g")
    a.cat.set_xattr(a.ino("/g"), "user.tag", b"both")
    assert a.cat.xattr(a.ino("/f"), "user.tag") == b"both"
    converge(a, b)
    assert b.cat.xattr(b.ino("/f"), "user.tag") == b"both"  # separate files there
    assert b.cat.xattr(b.ino("/g"), "user.tag") == b"both"


def test_they_travel_and_go_with_their_inode(devs):
    a, b, c = devs
    a.mkdir("/d")
    a.write("/d/f", b"data", T)
    a.cat.set_xattr(a.ino("/d"), "user.dir", b"")
    a.cat.set_xattr(a.ino("/d/f"), "user.tag", b"\x00\xffbinary")
    converge(a, b, c)
    assert c.cat.xattr(c.ino("/d/f"), "user.tag") == b"\x00\xffbinary"
    assert c.cat.xattr(c.ino("/d"), "user.dir") == b""
    a.write("/d/f", b"new content", T + 1)  # a new inode on b: the attributes follow
    converge(a, b, c)
    assert b.cat.xattr(b.ino("/d/f"), "user.tag") == b"\x00\xffbinary"
    a.cat.unlink(a.ino("/d"), "f")
    converge(a, b, c)
    b.cat.retire(b.cat.purge_inodes(b.cat.orphan_inodes()))
    check_invariants(b.cat)  # no attribute left without its inode


def test_concurrent_changes_to_different_attributes_both_stay(devs):
    a, b, c = devs
    a.write("/f", b"data", T)
    a.cat.set_xattr(a.ino("/f"), "user.gone", b"old")
    converge(a, b, c)
    a.cat.set_xattr(a.ino("/f"), "user.a", b"from a")
    a.cat.set_attributes(a.ino("/f"), mode=0o600)
    b.cat.set_xattr(b.ino("/f"), "user.b", b"from b")
    b.cat.set_xattr(b.ino("/f"), "user.gone", None)
    converge(a, b, c)
    for dev in devs:
        ino = dev.ino("/f")
        assert dev.cat.xattr_names(ino) == ["user.a", "user.b"]
        assert dev.cat.inode(ino).mode == 0o600  # a chmod beside them: no conflict
        assert [p for p in dev.tree() if "sync-conflict" in p] == []


def test_concurrent_sets_of_one_attribute_the_later_clock_wins_everywhere(devs):
    a, b, c = devs
    a.write("/f", b"data", T)
    converge(a, b, c)
    a.cat.set_xattr(a.ino("/f"), "user.tag", b"a1")
    b.cat.set_xattr(b.ino("/f"), "user.tag", b"b1")
    b.cat.set_xattr(b.ino("/f"), "user.tag", b"b2")  # b's clock is ahead
    # c meets a's first, then b's; a and b meet each other's directly
    send(a, c)
    send(b, c)
    converge(a, b, c)
    for dev in devs:
        assert dev.cat.xattr(dev.ino("/f"), "user.tag") == b"b2"


def test_the_merge_does_not_depend_on_the_order(devs):
    """Three concurrent histories met in different orders: a removal made knowing a value
    wins over it wherever the two meet, also through a third device's merge."""
    a, b, c = devs
    a.write("/f", b"data", T)
    a.cat.set_xattr(a.ino("/f"), "user.x", b"1")
    converge(a, b, c)
    b.cat.set_xattr(b.ino("/f"), "user.y", b"from b")
    send(a, c)
    c.cat.set_xattr(c.ino("/f"), "user.x", None)  # c removes x, knowing it
    a.cat.set_xattr(a.ino("/f"), "user.z", b"from a")
    send(a, b)  # b merges a's z with its y
    send(b, a)
    send(c, b)
    converge(a, b, c)
    for dev in devs:
        assert dev.cat.xattr_names(dev.ino("/f")) == ["user.y", "user.z"]


def test_rename_over_takes_the_sources_attributes(devs):
    """rsync -X: a temporary file with the new attributes renamed over the target."""
    a, b, _ = devs
    a.write("/f", b"old", T)
    a.cat.set_xattr(a.ino("/f"), "user.old", b"1")
    a.cat.set_xattr(a.ino("/f"), "user.kept", b"1")
    converge(a, b)
    a.write("/.f.tmp", b"new", T + 1)
    a.cat.set_xattr(a.ino("/.f.tmp"), "user.kept", b"2")
    a.cat.set_xattr(a.ino("/.f.tmp"), "user.new", b"3")
    a.cat.rename(ROOT, ".f.tmp", ROOT, "f")
    converge(a, b)
    for dev in (a, b):
        ino = dev.ino("/f")
        assert {n: dev.cat.xattr(ino, n) for n in dev.cat.xattr_names(ino)} == {
            "user.kept": b"2", "user.new": b"3"}


def test_a_peer_without_them_wipes_nothing(devs):
    """States from a peer of an older version carry no `xattr`: what is here stays, and
    states for such a peer leave them out."""
    a, b, _ = devs
    a.write("/f", b"data", T)
    converge(a, b)
    b.cat.set_xattr(b.ino("/f"), "user.tag", b"kept")
    a.cat.set_attributes(a.ino("/f"), mode=0o600)
    states, _ = changes_since(a.cat.conn, 0, 100, xattrs=False)
    assert all("xattr" not in s for s in states)
    apply(a, b, states)
    assert b.cat.xattr(b.ino("/f"), "user.tag") == b"kept"
    assert b.cat.inode(b.ino("/f")).mode == 0o600


def test_a_conflict_copy_keeps_the_losers_attributes(devs):
    a, b, _ = devs
    a.write("/f.txt", b"base", T)
    converge(a, b)
    a.write("/f.txt", b"from a", T + 10)
    a.cat.set_xattr(a.ino("/f.txt"), "user.who", b"a")
    b.write("/f.txt", b"from b", T + 20)  # later: b's keeps the name
    b.cat.set_xattr(b.ino("/f.txt"), "user.who", b"b")
    converge(a, b)
    (copy,) = [p for p in a.tree() if "sync-conflict" in p]
    assert a.data(copy) == b"from a"
    for dev in (a, b):
        assert dev.cat.xattr(dev.ino(copy), "user.who") == b"a"


# Orders in which a (the deleter), b (the editor) and c (which had a's attribute change
# before the delete) exchange, before they converge: (from, to) by index in devs.
ORDERS = [
    [(0, 1), (1, 0), (0, 2), (1, 2)],  # the tombstone meets the edit first on a and b
    [(1, 2), (0, 2), (0, 1), (1, 0)],  # c meets the edit before the tombstone
    [(0, 2), (1, 2), (2, 0), (2, 1)],  # c, deleted, takes the edit, and passes it on
    [(1, 0), (0, 1), (1, 2), (0, 2)],
]


@pytest.mark.parametrize("order", range(len(ORDERS)))
@pytest.mark.parametrize("removed", [False, True], ids=["set", "removed"])
@pytest.mark.parametrize("b_sets", [False, True], ids=["edit", "edit+setxattr"])
def test_an_attribute_changed_before_a_delete_survives_the_node_coming_back(
        devs, order, removed, b_sets):
    """a sets (or removes) user.x on f and deletes f; b, not knowing either, edits f (and
    sets user.y), so f comes back (delete vs change: the change wins). Like a chmod made
    before a delete (bug 18), a's attribute change comes back with f, on every device and
    whatever the order of the exchanges: the tombstone keeps its node's attributes
    (schema.TOMBSTONE_XATTRS)."""
    a, b, c = devs
    a.write("/f", b"base", T)
    if removed:
        a.cat.set_xattr(a.ino("/f"), "user.x", b"old")
    converge(a, b, c)
    a.cat.set_xattr(a.ino("/f"), "user.x", None if removed else b"1")
    send(a, c)
    a.cat.unlink(ROOT, "f")
    b.write("/f", b"edited", T + 1)
    if b_sets:
        b.cat.set_xattr(b.ino("/f"), "user.y", b"2")
    for src, dst in ORDERS[order]:
        send(devs[src], devs[dst])
    converge(a, b, c)
    want = {} if removed else {"user.x": b"1"}
    if b_sets:
        want["user.y"] = b"2"
    for dev in devs:
        assert dev.data("/f") == b"edited"
        assert dev.xattrs() == {"/f": want}, dev.id[:4]


def test_a_directory_a_child_brings_back_keeps_the_attributes_it_had(devs):
    """a sets user.x on d and removes d; b makes a file in d meanwhile, which brings d
    back (index/placement.py): with the attribute its tombstone kept, everywhere."""
    a, b, c = devs
    a.mkdir("/d")
    converge(a, b, c)
    a.cat.set_xattr(a.ino("/d"), "user.x", b"1")
    send(a, c)
    a.cat.rmdir(ROOT, "d")
    b.write("/d/new", b"n", T)
    send(a, b)
    converge(a, b, c)
    for dev in devs:
        assert dev.xattrs()["/d"] == {"user.x": b"1"}, dev.id[:4]
        assert dev.data("/d/new") == b"n"


def test_a_tombstone_carries_the_attributes_its_node_had(devs):
    """On the wire, a tombstone's `attrs` are its node's when it was deleted, the removed
    ones included (docs/protocol.md, "Node states")."""
    a, _, _ = devs
    a.write("/f", b"data", T)
    node = node_of(a, "/f")
    a.cat.set_xattr(a.ino("/f"), "user.x", b"1")
    a.cat.set_xattr(a.ino("/f"), "user.y", b"2")
    a.cat.set_xattr(a.ino("/f"), "user.y", None)
    alive = state_of(a.cat.conn, node)["xattr"]["attrs"]
    a.cat.unlink(ROOT, "f")
    tombstone = state_of(a.cat.conn, node)
    assert tombstone["deleted"] and tombstone["xattr"]["attrs"] == alive


def test_a_tombstone_that_kept_no_attributes_leaves_those_of_the_change(devs):
    """A tombstone from a home of before schema 20 (or from an older peer) kept no
    extended attributes: the file an edit brings back has the edit's, as before."""
    a, b, _ = devs
    a.write("/f", b"base", T)
    a.cat.set_xattr(a.ino("/f"), "user.x", b"old")
    converge(a, b)
    a.cat.set_xattr(a.ino("/f"), "user.x", b"new")
    a.cat.unlink(ROOT, "f")
    a.db.conn.execute("UPDATE nodes SET deleted_xattrs = NULL WHERE deleted = 1")
    b.write("/f", b"edited", T + 1)
    converge(a, b)
    assert [d.xattrs() for d in (a, b)] == [{"/f": {"user.x": b"old"}}] * 2
