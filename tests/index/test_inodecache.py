"""The inodes the catalog keeps in memory (index/inodecache.py) are always the rows in the
index: after its own writes, after any other write on the connection (a peer's change
applied, a raw UPDATE), and after a rolled back transaction."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest
from syncd.index.catalog import INODE_COLUMNS, Catalog, Inode
from syncd.index.chunklist import ChunkList
from syncd.index.inodecache import LIMIT
from syncd.index.schema import ROOT_INO

from tests.replicas import Device, T, converge


def stored(c: Catalog, ino: int) -> tuple[Inode, bytes]:
    """The inode and chunk list as SQLite has them, bypassing every cache."""
    row = c.conn.execute(f"SELECT {INODE_COLUMNS}, inodes.chunks FROM inodes WHERE ino = ?",
                         (ino,)).fetchone()
    return Inode(*row[:-1]), row[-1]


def same(c: Catalog, *inos: int) -> None:
    for ino in inos:
        inode, blob = stored(c, ino)
        assert c.inode(ino) == inode
        assert c.chunks(ino).blob == blob


def commit(c: Catalog, ino: int, data: bytes, mode: int | None = None) -> None:
    draft = c.open_draft(ino)
    draft.write(0, data)
    draft.mode = mode
    draft.owner["uid"] = 4242
    sealed = draft.seal()
    sealed.hash_pending(c.store)
    c.commit_draft(draft, sealed)


def test_what_create_commit_and_setattr_keep_is_what_they_wrote(cat):
    d = cat.create(ROOT_INO, "d", "dir", 0o755, 1000, 1000).inode.ino
    cat.inode(d)
    f = cat.create(d, "f", "file", 0o644, 1000, 1000).inode.ino
    same(cat, f, d, ROOT_INO)
    commit(cat, f, b"small", mode=0o600)
    same(cat, f, d)
    assert cat.inode(f).size == 5 and cat.inode(f).mode == 0o600
    commit(cat, f, os.urandom(300_000))  # a chunk file, and a version replaced
    same(cat, f)
    cat.set_attributes(f, mode=0o640, atime_ns=7)
    same(cat, f, d)
    cat.link(f, ROOT_INO, "hard")
    assert cat.inode(f).nlink == 2
    same(cat, f, d, ROOT_INO)


def test_any_write_on_the_connection_is_seen(cat):
    f = cat.create(ROOT_INO, "f", "file", 0o644, 1000, 1000).inode.ino
    assert cat.inode(f).mode == 0o644
    with cat.db.atomic():  # not through the catalog's methods
        cat.conn.execute("UPDATE inodes SET mode = 384, uid = 7 WHERE ino = ?", (f,))
    assert cat.inode(f).mode == 0o600 and cat.inode(f).uid == 7
    cat.unlink(ROOT_INO, "f")
    assert cat.inode(f).nlink == 0  # the link count follows the nodes table
    same(cat, f, ROOT_INO)


def test_a_commit_by_another_connection_is_seen(cat, tmp_path):
    """Nothing else writes while a home is served, but if something does (a tool, a
    test behind the kernel's back), the cache does not hide it."""
    f = cat.create(ROOT_INO, "f", "file", 0o644, 1000, 1000).inode.ino
    commit(cat, f, b"small")  # the rows the commit wrote are kept
    assert cat.inode(f).size == 5
    other = sqlite3.connect(tmp_path / "index.db")
    with other:
        other.execute("UPDATE inodes SET mtime_ns = 7, mode = 384 WHERE ino = ?", (f,))
    other.close()
    assert cat.inode(f).mtime_ns == 7 and cat.inode(f).mode == 0o600
    commit(cat, f, b"again")
    same(cat, f)


def test_a_rolled_back_change_is_not_kept(cat):
    f = cat.create(ROOT_INO, "f", "file", 0o644, 1000, 1000).inode.ino
    cat.inode(f)

    def chmod_then_fail():
        cat.conn.execute("UPDATE inodes SET mode = 384 WHERE ino = ?", (f,))
        assert cat.inode(f).mode == 0o600  # read inside the transaction
        raise RuntimeError("cut")

    with pytest.raises(RuntimeError):
        cat.transaction(chmod_then_fail)
    assert cat.inode(f).mode == 0o644
    same(cat, f)


def test_a_peers_changes_are_seen(tmp_path):
    a, b = Device(tmp_path / "a", "aa" * 16, T), Device(tmp_path / "b", "bb" * 16, T + 1)
    a.write("f", b"one", T)
    converge(a, b)
    ino = b.ino("f")
    assert b.cat.inode(ino).size == 3 and stat.S_IMODE(b.cat.inode(ino).mode) == 0o644
    a.cat.set_attributes(a.ino("f"), mode=0o600)
    a.write("f", b"longer", T + 5)
    converge(a, b)
    ino = b.ino("f")  # a new version may come as a fresh inode (rule 6)
    assert b.cat.inode(ino).size == 6 and b.cat.inode(ino).mode == 0o600
    same(b.cat, ino, ROOT_INO)


def test_the_cached_inode_cannot_be_changed_in_place(cat):
    f = cat.create(ROOT_INO, "f", "file", 0o644, 1000, 1000).inode.ino
    with pytest.raises(AttributeError):
        cat.inode(f).mode = 0o777  # type: ignore[misc]
    assert cat.chunks(f) == ChunkList([])


def test_reading_a_large_tree_keeps_a_bounded_number_of_inodes(cat):
    """A `find` over a large share reads every inode and writes nothing: memory must not
    grow with the share, and every inode read stays exact."""
    inos = [cat.create(ROOT_INO, f"f{i}", "file", 0o644, 1000, 1000).inode.ino
            for i in range(LIMIT + 100)]
    for ino in inos:
        cat.inode(ino)
        assert len(cat._inodes.rows) <= LIMIT
    same(cat, *inos[:10], *inos[-10:])
