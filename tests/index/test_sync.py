"""Replication between real indexes, without a network: DESIGN rule 3, case by case.

Each test makes two or three devices, changes them apart, exchanges node states both ways
(as the daemon does) and checks that every device ends with the same tree.
"""

from __future__ import annotations

from syncd.index.chunklist import ChunkList
from syncd.index.names import conflict_name
from syncd.index.rules import CC, EQ, GT, LT, compare
from syncd.index.states import changes_since

from tests.replicas import ROOT, T, apply, converge, send


def test_compare_version_vectors():
    assert compare({"a": 1}, {"a": 1}) == EQ
    assert compare({"a": 2}, {"a": 1}) == GT
    assert compare({}, {"a": 1}) == LT
    assert compare({"a": 1}, {"b": 1}) == CC


def test_every_kind_of_change_propagates(devs):
    a, b, _ = devs
    a.mkdir("/docs")
    a.write("/docs/x.txt", b"hello", T)
    a.cat.create(a.ino("/docs"), "link", "symlink", 0o777, 0, 0, target=b"x.txt")
    converge(a, b)
    assert b.data("/docs/x.txt") == b"hello"
    assert b.cat.inode(b.ino("/docs/link")).target == b"x.txt"
    a.write("/docs/x.txt", b"hello world", T + 1)
    a.cat.set_attributes(a.ino("/docs/x.txt"), mode=0o600)
    a.cat.rename(a.ino("/docs"), "x.txt", ROOT, "y.txt")
    a.cat.unlink(a.ino("/docs"), "link")
    converge(a, b)
    assert b.data("/y.txt") == b"hello world"
    assert b.cat.inode(b.ino("/y.txt")).mode == 0o600
    a.cat.rmdir(ROOT, "docs")
    converge(a, b)
    assert set(b.tree()) == {"/y.txt"}


def test_changes_reach_a_third_device_through_a_second(devs):
    a, b, c = devs
    a.write("/f", b"1", T)
    send(a, b)
    send(b, c)
    assert c.data("/f") == b"1"
    assert send(b, a) == 0  # a made it: never sent back


def test_concurrent_edits_make_one_conflict_copy_everywhere(devs):
    a, b, c = devs
    a.write("/f.txt", b"base", T)
    converge(a, b, c)
    a.write("/f.txt", b"from a", T + 10)
    b.write("/f.txt", b"from b", T + 20)  # later: b's keeps the name
    converge(a, b, c)
    assert a.data("/f.txt") == b"from b"
    copies = [p for p in a.tree() if "sync-conflict" in p]
    assert copies == ["/" + conflict_name("f.txt", a.id, T + 10)]
    assert a.data(copies[0]) == b"from a"


def test_equal_content_is_no_conflict(devs):
    a, b, _ = devs
    a.write("/f", b"base", T)
    converge(a, b)
    a.write("/f", b"same", T + 5)
    b.write("/f", b"same", T + 5)
    converge(a, b)
    assert set(a.tree()) == {"/f"}


def test_edit_against_delete_keeps_the_edit(devs):
    a, b, _ = devs
    a.mkdir("/d")
    a.write("/d/f", b"v1", T)
    converge(a, b)
    a.cat.unlink(a.ino("/d"), "f")
    a.cat.rmdir(ROOT, "d")
    b.write("/d/f", b"v2", T + 1)
    converge(a, b)
    assert a.data("/d/f") == b"v2"


def test_a_delete_of_the_winning_edit_gives_the_name_to_the_losing_one(devs):
    """Concurrent edits, and the winner's maker deletes the file (knowing only its own
    edit) while a chmod, concurrent with the delete, keeps the node. The loser is the edit
    the delete did not see: it holds the name everywhere, whether a device met the
    winner first (it is a conflict copy there, taken back) or only the delete (bug 19)."""
    a, b, c = devs
    a.write("/f", b"base", T)
    converge(a, b, c)
    a.write("/f", b"from a", T + 20)  # the later mtime: wins
    b.write("/f", b"from b", T + 10)
    b.cat.set_attributes(b.ino("/f"), mode=0o600)
    send(b, c)  # c has b's edit, and never sees a's
    send(a, b)  # a's edit wins on b, b's becomes a copy
    a.cat.unlink(ROOT, "f")
    send(a, c)  # c: the delete against b's edit, which it did not see
    send(a, b)  # b: the delete against a's edit, which it saw
    converge(a, b, c)
    assert a.data("/f") == b"from b"
    assert a.cat.inode(a.ino("/f")).mode == 0o600


def test_child_created_in_a_deleted_directory_brings_it_back(devs):
    a, b, _ = devs
    a.mkdir("/d")
    converge(a, b)
    a.cat.rmdir(ROOT, "d")
    b.write("/d/new", b"n", T)
    converge(a, b)
    assert a.data("/d/new") == b"n"


def test_a_chmod_before_a_delete_comes_back_with_what_the_delete_lost_to(devs):
    """A tombstone keeps the mode its node had (schema.TOMBSTONE_MODE): a directory that a
    child made meanwhile brings back, and a file edited meanwhile, come back with the
    chmod their deleter made before the delete, on every device (bug 18)."""
    a, b, _ = devs
    a.mkdir("/d")
    a.write("/f", b"base", T)
    converge(a, b)
    a.cat.set_attributes(a.ino("/d"), mode=0o700)
    a.cat.set_attributes(a.ino("/f"), mode=0o600)
    a.cat.rmdir(ROOT, "d")
    a.cat.unlink(ROOT, "f")
    b.mkdir("/d/new")
    b.write("/f", b"edited", T + 1)
    converge(a, b)
    for dev in (a, b):
        assert dev.cat.inode(dev.ino("/d")).mode == 0o700
        assert dev.cat.inode(dev.ino("/f")).mode == 0o600
        assert dev.data("/f") == b"edited"


def test_a_tombstone_that_kept_no_mode_leaves_the_mode_of_the_change(devs):
    """A tombstone from a home of before schema 19 (or from an older peer) kept no mode:
    the file an edit brings back keeps the edit's mode, as before."""
    a, b, _ = devs
    a.write("/f", b"base", T)
    converge(a, b)
    a.cat.set_attributes(a.ino("/f"), mode=0o600)
    a.cat.unlink(ROOT, "f")
    a.db.conn.execute("UPDATE nodes SET deleted_mode = NULL WHERE deleted = 1")
    b.write("/f", b"edited", T + 1)
    converge(a, b)
    assert [d.cat.inode(d.ino("/f")).mode for d in (a, b)] == [0o644, 0o644]


def test_delete_seen_everywhere_stays_deleted(devs):
    a, b, c = devs
    a.write("/f", b"x", T)
    converge(a, b, c)
    b.cat.unlink(ROOT, "f")
    converge(a, b, c)
    assert a.tree() == {}


def test_same_new_name_on_two_devices(devs):
    a, b, _ = devs
    a.write("/n.txt", b"a's", T)
    b.write("/n.txt", b"b's", T + 1)
    converge(a, b)
    assert a.data("/n.txt") == b"b's"
    (copy,) = [p for p in a.tree() if "sync-conflict" in p]
    assert a.data(copy) == b"a's"


def test_two_new_directories_on_one_name_merge(devs):
    a, b, _ = devs
    a.mkdir("/data")
    a.write("/data/from-a", b"1", T)
    b.mkdir("/data")
    b.write("/data/from-b", b"2", T)
    converge(a, b)
    assert set(a.tree()) == {"/data", "/data/from-a", "/data/from-b"}


def test_concurrent_renames_and_chmod_merge(devs):
    a, b, c = devs
    a.write("/f", b"x", T)
    converge(a, b, c)
    a.cat.rename(ROOT, "f", ROOT, "by-a")
    b.cat.set_attributes(b.ino("/f"), mode=0o600)
    c.write("/f", b"edited", T + 1)
    converge(a, b, c)
    assert a.tree() == {"/by-a": ("file", a.cat.inode(a.ino("/by-a")).hash, 0o600)}
    assert a.data("/by-a") == b"edited"


def test_states_whose_parent_comes_later_wait(devs):
    a, b, _ = devs
    a.mkdir("/d")
    a.write("/d/f", b"x", T)
    a.cat.rename(ROOT, "d", ROOT, "e")  # d now has a later seq than its child
    states, _ = changes_since(a.cat.conn, 0)
    child = [s for s in states if s["name"] == "f"]
    b.merger.apply(child, a.id)
    assert b.tree() == {}
    b.merger.apply([s for s in states if s["name"] != "f"], a.id)
    assert set(b.tree()) == {"/e", "/e/f"}


def test_a_file_written_while_a_peer_replaced_it_is_a_concurrent_version(devs):
    a, b, _ = devs
    a.write("/f", b"base", T)
    converge(a, b)
    b.write("/f", b"b's version", T + 1)
    effects = apply(b, a, changes_since(b.cat.conn, 0)[0])  # /f is open for writing on a
    ((ino, (node, vv)),) = effects.detached.items()
    digest = a.cat.store.put(b"a's later write")
    a.merger.commit_detached(node, vv, ChunkList([digest]), 15, T + 2)
    converge(a, b)
    assert a.data("/f") == b"a's later write"
    (copy,) = [p for p in a.tree() if "sync-conflict" in p]
    assert a.data(copy) == b"b's version"


def test_a_file_written_while_a_peer_deleted_it_comes_back(devs):
    a, b, _ = devs
    a.write("/f", b"base", T)
    converge(a, b)
    b.cat.unlink(ROOT, "f")
    effects = apply(b, a, changes_since(b.cat.conn, 0)[0])
    ((ino, (node, vv)),) = effects.detached.items()
    digest = a.cat.store.put(b"kept")
    a.merger.commit_detached(node, vv, ChunkList([digest]), 4, T + 2)
    converge(a, b)
    assert b.data("/f") == b"kept"


def test_moves_that_would_make_a_cycle_leave_one_directory_at_the_root(devs):
    a, b, c = devs
    a.mkdir("/x")
    a.mkdir("/y")
    a.write("/x/in-x", b"1", T)
    a.write("/y/in-y", b"2", T)
    converge(a, b, c)
    a.cat.rename(ROOT, "y", a.ino("/x"), "y")  # y into x
    b.cat.rename(ROOT, "x", b.ino("/y"), "x")  # x into y, concurrently
    converge(a, b, c)
    files = sorted(p for p in a.tree() if p.endswith(("in-x", "in-y")))
    assert len(files) == 2  # both still reachable from the root
    assert any("sync-conflict" in p for p in a.tree())
