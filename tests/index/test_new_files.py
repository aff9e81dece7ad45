"""A new file's create kept in memory until the next transaction (Catalog.create with
`later`, as the mount's CREATE does), on real SQLite files."""

from __future__ import annotations

import errno
import sqlite3

import pytest
from syncd.index import schema
from syncd.index.catalog import INODE_BLOCK, Catalog
from syncd.index.chunklist import ChunkList
from syncd.index.draft import Draft
from syncd.index.recovery import recover
from syncd.index.store import ChunkStore

from tests.index.conftest import DEVICE
from tests.index.test_catalog import _commit, committed, journal

ROOT = schema.ROOT_INO


def new_file(c: Catalog, name: str) -> tuple[str, int, Draft]:
    e = c.create(ROOT, name, "file", 0o644, 1000, 1000, later=True)
    return e.node, e.inode.ino, Draft(c.store, e.inode.ino, ChunkList([]), 0)


def other_reader(tmp_path) -> sqlite3.Connection:
    """Another process's view of the index (as `syncd status` reads it)."""
    return sqlite3.connect(f"file:{tmp_path / 'index.db'}?mode=ro", uri=True)


def names(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM nodes WHERE deleted = 0")}


def traced(c: Catalog, fn) -> list[str]:
    statements: list[str] = []
    c.conn.set_trace_callback(statements.append)
    try:
        fn()
    finally:
        c.conn.set_trace_callback(None)
    return statements


def test_a_new_file_and_its_first_commit_are_one_transaction(cat, tmp_path):
    reader = other_reader(tmp_path)
    made: list = []
    assert "COMMIT" not in traced(cat, lambda: made.extend(new_file(cat, "a.txt")))
    assert "a.txt" not in names(reader)
    first = made[0]
    file_node, ino, d = new_file(cat, "b.txt")  # the first is written before it looks
    assert "a.txt" in names(reader) and "b.txt" not in names(reader)
    assert cat.inode(ino).size == 0 and cat.inode(ROOT).mtime_ns == cat.inode(ino).ctime_ns
    d.write(0, b"hello")
    ran = traced(cat, lambda: _commit(cat, ino, d))
    assert ran.count("COMMIT") == 1
    assert "b.txt" in names(reader)
    # one change: the file made with its content, as syncd import makes one
    assert journal(cat)[-2:] == [(first, "create"), (file_node, "create")]
    assert committed(cat, ino) == b"hello" and cat.inode(ino).size == 5
    assert cat.lookup(ROOT, "b.txt").inode == cat.inode(ino)
    reader.close()


def test_every_statement_sees_a_new_file(cat):
    file_node, ino, _ = new_file(cat, "a")
    assert cat.lookup(ROOT, "a").inode.ino == ino  # SQL, after the create was written
    assert cat.nodes_of(ino) == [file_node]
    with pytest.raises(OSError) as e:
        new_file(cat, "a")
    assert e.value.errno == errno.EEXIST


def test_a_new_file_closed_unwritten_is_written_by_settle(cat, tmp_path):
    reader = other_reader(tmp_path)
    new_file(cat, "empty")
    cat.settle()  # what the mount's flush does when there is nothing to commit
    assert "empty" in names(reader)
    reader.close()


def test_a_failed_transaction_keeps_the_new_file_for_the_next(cat):
    first, ino, _ = new_file(cat, "a")
    with pytest.raises(OSError) as e:
        cat.unlink(ROOT, "not-there")  # wrote the new file, then rolled back
    assert e.value.errno == errno.ENOENT
    assert cat.inode(ino).kind == "file"
    second = cat.create(ROOT, "b", "file", 0o644, 0, 0).node
    assert journal(cat)[-2:] == [(first, "create"), (second, "create")]
    assert int(second.split(":")[1]) == int(first.split(":")[1]) + 1
    assert cat.lookup(ROOT, "a").inode.ino == ino


def test_recovery_keeps_the_bytes_of_a_new_file_the_index_never_got(tmp_path, expect_log):
    expect_log(r"WARNING recovered uncommitted writes to inode \d+ as inode-\d+\.sync-recovered-")
    ChunkStore.create(tmp_path / "store")
    schema.create(tmp_path / "index.db", DEVICE, 1000, 1000, 1_700_000_000 * 10**9).close()
    db = schema.open_db(tmp_path / "index.db")
    c = Catalog(db, ChunkStore(tmp_path / "store"))
    _, ino, d = new_file(c, "never-closed.txt")
    d.write(0, b"written, never closed")  # its dirty mark names an inode the index lacks
    c.store.close()
    db.close()  # a crash: nothing writes the new file

    db = schema.open_db(tmp_path / "index.db")
    c = Catalog(db, ChunkStore(tmp_path / "store"))
    try:
        assert c.size_of(ino) is None
        [name] = recover(c, c.store)
        assert name.startswith(f"inode-{ino}.sync-recovered-")
        copy = c.lookup(ROOT, name).inode
        assert committed(c, copy.ino) == b"written, never closed"
        assert copy.ino != ino
        assert c.create(ROOT, "next", "file", 0o644, 0, 0).inode.ino > ino  # never reused
        assert c.store.dirty_inodes() == []
    finally:
        c.store.close()
        db.close()


def sequence(db: sqlite3.Connection) -> int:
    return db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'inodes'").fetchone()[0]


def test_new_files_take_inode_numbers_from_a_block_reserved_with_the_first(cat, tmp_path):
    reader = other_reader(tmp_path)
    _, first, _ = new_file(cat, "a")
    assert "UPDATE sqlite_sequence" in " ".join(traced(cat, cat.settle))
    assert sequence(reader) == first + INODE_BLOCK - 1
    _, second, _ = new_file(cat, "b")
    # its transaction leaves the counter's page alone: one WAL page less per new file
    assert not any("sqlite_sequence" in s for s in traced(cat, cat.settle))
    assert second == first + 1
    # what takes its number from SQLite gets one past the block, and the block goes on
    directory = cat.create(ROOT, "d", "dir", 0o755, 0, 0).inode.ino
    assert directory == first + INODE_BLOCK
    _, third, _ = new_file(cat, "c")
    assert third == first + 2
    cat.settle()
    assert sorted(r[0] for r in reader.execute("SELECT ino FROM inodes")) == \
        [ROOT, first, second, third, directory]
    reader.close()


def test_a_block_used_up_reserves_the_next(cat):
    inos = [new_file(cat, f"f{k}")[1] for k in range(INODE_BLOCK + 1)]
    cat.settle()
    assert inos == list(range(inos[0], inos[0] + INODE_BLOCK + 1))
    assert sequence(cat.conn) == inos[-1] + INODE_BLOCK - 1


def test_no_inode_number_comes_back_after_a_restart(tmp_path):
    """The last number handed out was purged: neither the index's largest inode nor its
    counter's past one (the rest of the block) comes back in the next process."""
    ChunkStore.create(tmp_path / "store")
    schema.create(tmp_path / "index.db", DEVICE, 1000, 1000, 1_700_000_000 * 10**9).close()
    used = []
    for _ in range(2):
        db = schema.open_db(tmp_path / "index.db")
        c = Catalog(db, ChunkStore(tmp_path / "store"))
        try:
            used += [new_file(c, name)[1] for name in ("kept", "gone")]
            c.settle()
            c.purge_inodes([c.unlink(ROOT, "gone")])
            c.unlink(ROOT, "kept")
        finally:
            c.store.close()
            db.close()
    assert len(set(used)) == 4 and used[2] > used[1] + INODE_BLOCK - 2


def test_a_reservation_rolled_back_with_its_transaction_is_taken_again(cat):
    """New files written inside a caller's transaction take their reservation into it: if
    that rolls back, numbers SQLite hands out again must not meet the block's."""
    new_file(cat, "a")
    cat.conn.unsettled("BEGIN")  # a transaction begun outside Catalog.transaction
    cat.conn.execute("SELECT 1")  # writes the new file, and the reservation, first
    cat.conn.unsettled("ROLLBACK")
    dirs = [cat.create(ROOT, f"d{k}", "dir", 0o755, 0, 0).inode.ino for k in range(3)]
    _, ino, _ = new_file(cat, "b")
    cat.settle()
    assert ino not in dirs and cat.lookup(ROOT, "b").inode.ino == ino


@pytest.mark.parametrize("looked_up", [True, False])
def test_a_new_file_in_a_directory_kept_here_is_kept_here_too(cat, looked_up):
    """The create that follows a lookup's miss takes the directory's `ignored` from that
    lookup (Catalog._create_later): it must decide as one that reads it again."""
    d = cat.create(ROOT, "kept", "dir", 0o755, 1000, 1000)
    cat.transaction(cat.make_local, d.node, True)  # as a rule added later makes it
    if looked_up:
        assert cat.lookup(d.inode.ino, "x") is None
    e = cat.create(d.inode.ino, "x", "file", 0o644, 1000, 1000, later=True)
    assert cat.is_local_only(e.node)
    assert e.node not in {r[0] for r in cat.conn.execute("SELECT node FROM journal")}
