"""What is here, pins, and what the commands that look report: the Catalog's content-state
methods on real indexes (a second device makes the content that is not here yet)."""

from __future__ import annotations

import sqlite3

import pytest
from syncd.index.catalog import Conflict, FileCounts, open_catalog
from syncd.index.chunklist import CHUNK, ChunkList
from syncd.index.states import changes_since

from tests.replicas import Device, T, check_invariants, converge

ROOT = 1


@pytest.fixture
def devs(tmp_path):
    made = []
    for dev in ("a" * 32, "b" * 32):
        (tmp_path / dev[:1]).mkdir()
        made.append(Device(tmp_path / dev[:1], dev, T))
    yield made
    for d in made:
        if not d.cat.not_local():  # the invariants want every chunk here
            check_invariants(d.cat)
        d.db.close()


def announce(src: Device, dst: Device) -> None:
    """Send src's changes to dst without their chunks, as a push does: dst's new inodes
    are not local until fetched."""
    states, _ = changes_since(src.cat.conn, 0, 1000, dst.id)
    dst.merger.apply(states, src.id)


def test_paths_and_names(devs):
    a, _ = devs
    a.mkdir("/d")
    a.write("/d/f", b"x", T)
    f = a.cat.lookup(a.ino("/d"), "f")
    assert a.cat.node_at("") == "root"
    assert a.cat.node_at("d/f") == a.cat.node_at("/d//f/") == f.node
    assert a.cat.node_at("d/g") is None and a.cat.node_at("d/f/x") is None
    assert a.cat.display_name(f.inode.ino) == "'f'"
    a.cat.unlink(a.ino("/d"), "f")
    assert a.cat.node_at("d/f") is None
    assert a.cat.display_name(f.inode.ino) == f"inode {f.inode.ino}"


def test_missing_chunks_until_fetched_then_local(devs):
    a, b = devs
    first, second = b"1" * CHUNK, b"2" * 10
    ino = a.cat.create(ROOT, "big", "file", 0o644, 0, 0).inode.ino
    digests = [a.cat.store.put(first), a.cat.store.put(second), a.cat.store.put(first)]
    a.cat.commit_content(ino, ChunkList(digests), 2 * CHUNK + 10, T, None, True)
    announce(a, b)
    here = b.ino("/big")
    assert not b.cat.is_local(here) and b.cat.not_local() == [here]
    assert b.cat.missing_chunks(here) == digests[:2]  # each once
    assert b.cat.store.put_verified(digests[1], second)
    assert b.cat.missing_chunks(here) == digests[:1]
    assert b.cat.store.put_verified(digests[0], first)
    assert b.cat.missing_chunks(here) == [] and not b.cat.is_local(here)
    b.cat.mark_local([here])
    assert b.cat.is_local(here) and b.cat.not_local() == []
    assert b.cat.missing_chunks(here) == []
    assert b.cat.is_local(10_000)  # gone: nothing to fetch


def test_a_damaged_chunk_leaves_the_store_and_every_file_that_uses_it_is_fetched_again(devs):
    a, _ = devs
    a.write("/f", b"same", T)
    a.write("/g", b"same", T)
    a.write("/h", b"other", T)
    digest = a.cat.chunks(a.ino("/f")).at(0)
    a.cat.drop_damaged_chunk(digest)
    assert not a.cat.store.has(digest)
    assert sorted(a.cat.not_local()) == sorted([a.ino("/f"), a.ino("/g")])
    assert a.cat.missing_chunks(a.ino("/g")) == [digest]
    a.cat.store.put(b"same")  # fetched again, so the invariants hold


def test_sizes(devs):
    a, _ = devs
    a.write("/small", b"x" * 10, T)
    a.write("/large", b"x" * 1000, T)
    small, large = a.ino("/small"), a.ino("/large")
    assert a.cat.smaller_than([small, large], 100) == [small]
    assert a.cat.smaller_than([large], 1000) == [] and a.cat.smaller_than([], 100) == []
    assert a.cat.total_size([small, large]) == 1010 and a.cat.total_size([]) == 0
    # More inodes than SQLite takes as parameters of one statement.
    assert a.cat.total_size([small, large, *range(100, 40_000)]) == 1010


def test_pins_reach_down_a_subtree(devs):
    a, _ = devs
    a.mkdir("/d")
    a.mkdir("/d/e")
    a.write("/d/e/f", b"12345", T)
    a.write("/g", b"1", T)
    f = a.ino("/d/e/f")
    assert not a.cat.pinned(f)
    a.cat.set_pin(a.cat.node_at("d"), True)
    assert a.cat.pinned(f) and a.cat.pinned(a.ino("/d")) and not a.cat.pinned(a.ino("/g"))
    assert a.cat.file_counts().pinned == 1
    a.cat.set_pin(a.cat.node_at("d"), False)
    assert not a.cat.pinned(f)


def test_files_and_bytes_under_a_node(devs):
    a, b = devs
    a.mkdir("/d")
    a.write("/d/f", b"12345", T)
    a.write("/d/g", b"123", T)
    a.write("/h", b"1", T)
    announce(a, b)
    d = b.cat.node_at("d")
    assert sorted(b.cat.files_under(d)) == sorted([b.ino("/d/f"), b.ino("/d/g")])
    assert b.cat.bytes_under(d) == (8, 0)
    b.cat.mark_local([b.ino("/d/f")])
    assert b.cat.bytes_under(d) == (8, 5)
    assert b.cat.bytes_under("root") == (9, 5)
    assert sorted(b.cat.files_under("root")) == sorted(
        [b.ino("/d/f"), b.ino("/d/g"), b.ino("/h")])


def test_nodes_that_left_their_inode_and_conflict_copies(devs):
    a, b = devs
    a.write("/f.txt", b"base", T)
    a.write("/keep", b"k", T)
    converge(a, b)
    old = a.ino("/f.txt")
    nodes = a.cat.nodes_of(old)
    assert not a.cat.left_inode(nodes, old)
    assert a.cat.live_files_of(nodes + a.cat.nodes_of(a.ino("/keep"))) == [
        old, a.ino("/keep")]
    a.write("/f.txt", b"from a", T + 10)
    b.write("/f.txt", b"from b", T + 20)  # later: b's keeps the name, a's is the copy
    converge(a, b)
    assert a.cat.left_inode(nodes, old)  # the name has a fresh inode: b's version
    assert a.cat.live_files_of(nodes) == [a.ino("/f.txt")]
    (copy,) = a.cat.conflicts()
    assert copy == Conflict("f.sync-conflict-20270115-080000-aaaaaaa.txt", 6, T + 10)
    copy_node = a.cat.node_at(copy.path)
    assert a.cat.originals_of([copy_node, *nodes]) == nodes
    assert not a.cat.left_inode(nodes, a.ino("/f.txt"))
    keep = a.cat.node_at("keep")
    a.cat.unlink(ROOT, "keep")
    assert a.cat.left_inode(nodes + [keep], a.ino("/f.txt"))  # deleted: no inode


def test_conflict_paths_start_at_the_root(devs):
    a, b = devs
    a.mkdir("/d")
    a.write("/d/x", b"base", T)
    converge(a, b)
    a.write("/d/x", b"aa", T + 10)
    b.write("/d/x", b"b", T + 20)
    converge(a, b)
    assert [c.path for c in b.cat.conflicts()] == ["d/x.sync-conflict-20270115-080000-aaaaaaa"]


def test_chunks_made_here_up_to_a_sequence_number(devs):
    a, b = devs
    a.write("/one", b"1", T)
    upto = a.cat.seq
    a.write("/two", b"2", T)
    b.write("/theirs", b"3", T)
    converge(a, b)
    assert a.cat.chunks_made_here(upto) == a.cat.chunks(a.ino("/one")).digests()
    assert a.cat.chunks_made_here(a.cat.seq) == (
        a.cat.chunks(a.ino("/one")).digests() + a.cat.chunks(a.ino("/two")).digests())


def test_file_counts(devs):
    a, b = devs
    a.write("/f", b"12345", T)
    a.write("/g", b"123", T)
    a.mkdir("/d")
    announce(a, b)
    b.cat.mark_local([b.ino("/f")])
    assert b.cat.file_counts() == FileCounts(total=2, local=1, pinned=0, conflicts=0,
                                             bytes=8, bytes_local=5)


def test_a_read_only_catalog_reads_and_refuses_changes(devs, tmp_path):
    a, _ = devs
    a.write("/f", b"12345", T)
    with open_catalog(tmp_path / "a" / "index.db", tmp_path / "a" / "store",
                      readonly=True) as cat:
        assert cat.device == a.id and cat.seq == a.cat.seq
        assert cat.file_counts().total == 1 and cat.bytes_under("root") == (5, 5)
        a.write("/g", b"1", T)  # the writer goes on: the reader sees it
        assert cat.file_counts().total == 2
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            cat.set_pin("root", True)
    with open_catalog(tmp_path / "a" / "index.db", tmp_path / "a" / "store") as cat:
        cat.set_pin("root", True)
    assert a.cat.pinned(a.ino("/g"))


def test_a_chunk_that_arrives_for_a_deleted_file_leaves_the_store(devs):
    """A fetch that installs chunks after their file was deleted here (they travelled
    meanwhile) must not leave them in the store, where nothing would ever collect them."""
    a, b = devs
    data = b"3" * CHUNK
    a.write("/f", data, T)
    announce(a, b)
    digest = b.cat.missing_chunks(b.ino("/f"))[0]
    b.cat.unlink(b.ino(""), "f")
    b.cat.retire(b.cat.purge_inodes(b.cat.orphan_inodes()))
    assert b.cat.store.put_verified(digest, data)
    assert b.cat.keep_referenced({digest}) == set()
    assert not b.cat.store.has(digest)
