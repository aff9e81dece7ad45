"""Opening databases of every schema we have shipped (tests/data/schema-v*.db)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils
from syncd.index import schema
from syncd.index.catalog import Catalog
from syncd.index.store import ChunkStore

DATA = Path(__file__).parent.parent / "data"


def opened(tmp_path, name: str) -> tuple[sqlite_utils.Database, Catalog]:
    """A copy of a shipped database, opened (and so migrated) like a home's index."""
    shutil.copy(DATA / name, tmp_path / "index.db")
    db = schema.open_db(tmp_path / "index.db")
    assert db.conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    return db, Catalog(db, ChunkStore(tmp_path / "store"))


def test_first_schema_opens_with_its_tree_intact(tmp_path):
    db, cat = opened(tmp_path, "schema-v1.db")
    docs = cat.lookup(schema.ROOT_INO, "docs")
    assert docs.inode.kind == "dir"
    a = cat.lookup(docs.inode.ino, "a.txt")
    assert a.inode.size == 6 and a.inode.nlink == 2  # with its hard link
    assert cat.lookup(docs.inode.ino, "older").inode.kind == "dir"
    assert cat.lookup(schema.ROOT_INO, "tmp") is None  # a tombstone
    assert cat.seq == 13
    assert db.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # version 2: peers, limbo and the origin of each node's state
    assert db.conn.execute("SELECT count(*) FROM peers").fetchone() == (0,)
    db.conn.execute("INSERT INTO peers (name, url) VALUES ('beta', 'http://127.0.0.1:1')")
    assert db.conn.execute("SELECT count(*) FROM nodes WHERE origin IS NULL").fetchone()[0] > 0


def test_newer_or_foreign_databases_are_refused(tmp_path):
    newer = tmp_path / "newer.db"
    shutil.copy(DATA / "schema-v1.db", newer)
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(schema.SchemaError, match="upgrade syncd"):
        schema.open_db(newer)
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(schema.SchemaError, match="not a syncd index"):
        schema.open_db(foreign)


@pytest.mark.parametrize("old", ["schema-v1.db", "schema-v2.db", "schema-v3.db"])
def test_migrated_schema_equals_a_fresh_one(tmp_path, old):
    shutil.copy(DATA / old, tmp_path / "old.db")
    migrated = schema.open_db(tmp_path / "old.db")
    fresh = schema.create(tmp_path / "new.db", "cd" * 16, 0, 0, 0)

    def columns(db):
        tables = [r[0] for r in db.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: [r[1:] for r in db.conn.execute(f"PRAGMA table_info({t})")]
                for t in tables}

    def indexes(db, kind="index"):
        return db.conn.execute("SELECT name, tbl_name, sql FROM sqlite_master"
                               " WHERE type = ? ORDER BY name", (kind,)).fetchall()

    assert columns(migrated) == columns(fresh)
    assert [i[:2] for i in indexes(migrated)] == [i[:2] for i in indexes(fresh)]
    # the bookkeeping (schema 7) and the extended attributes' (12)
    assert [t[:2] for t in indexes(migrated, "trigger")] == \
        [t[:2] for t in indexes(fresh, "trigger")]


def test_second_schema_opens_with_its_tree_and_peers_intact(tmp_path):
    """Version 2 (made by 87923ab): two devices' tree with a conflict copy, and a peer."""
    db, cat = opened(tmp_path, "schema-v2.db")
    docs = cat.lookup(schema.ROOT_INO, "docs")
    assert cat.lookup(docs.inode.ino, "report.txt").inode.mode & 0o777 == 0o600
    names = {e.name for e in cat.children(schema.ROOT_INO, 0)}
    assert names == {"docs", "notes.txt", "notes.sync-conflict-20270115-080000-bbbbbbb.txt"}
    assert db.conn.execute("SELECT name, state, cursor FROM peers").fetchall() == [
        ("alpha", "offline", 3)]
    # version 3: each version's data was made at the vector it had then, as far as we know
    for aspect in ("content", "mode", "place"):
        assert db.conn.execute(
            f"SELECT count(*) FROM nodes WHERE {aspect}_made != {aspect}_vv").fetchone() == (0,)
    assert db.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_third_schema_opens_with_its_conflict_copy_and_peer_intact(tmp_path):
    """Version 3 (made by the commit before schema 4): a conflict on /docs/plan.txt, and a
    peer. Version 4 adds an index of each node's conflict copies."""
    db, cat = opened(tmp_path, "schema-v3.db")
    docs = cat.lookup(schema.ROOT_INO, "docs")
    assert {e.name for e in cat.children(docs.inode.ino, 0)} == {
        "plan.txt", "plan.sync-conflict-20270115-080000-aaaaaaa.txt"}
    plan = db.conn.execute("SELECT id FROM nodes WHERE name = 'plan.txt'").fetchone()[0]
    assert db.conn.execute(
        "SELECT count(*) FROM nodes INDEXED BY nodes_copies WHERE conflict_of = ?",
        (plan,)).fetchone() == (1,)
    assert db.conn.execute("SELECT name, state FROM peers").fetchall() == [("beta", "online")]
    # version 10: each peer's one address is its list of addresses
    assert db.conn.execute("SELECT json_array(url) = addresses FROM peers").fetchall() == [
        (1,)]
    assert db.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_fifth_schema_takes_special_files_and_never_reuses_an_inode_number(tmp_path):
    """Version 5 rebuilds inodes and nodes for four more kinds (a CHECK changes only that
    way) and adds the device number; the rebuild keeps the AUTOINCREMENT high-water mark:
    schema-v1.db's last inode (7) was purged, so the next is 8, not 7."""
    db, cat = opened(tmp_path, "schema-v1.db")
    assert db.conn.execute("SELECT max(ino) FROM inodes").fetchone() == (6,)
    fifo = cat.create(schema.ROOT_INO, "fifo", "fifo", 0o644, 0, 0)
    dev = cat.create(schema.ROOT_INO, "null", "chardev", 0o666, 0, 0, rdev=os.makedev(1, 3))
    assert (fifo.inode.ino, dev.inode.ino) == (8, 9)
    assert cat.inode(dev.inode.ino).rdev == os.makedev(1, 3)
    assert cat.lookup(cat.lookup(schema.ROOT_INO, "docs").inode.ino, "a.txt").inode.rdev == 0
    with pytest.raises(sqlite3.IntegrityError):
        db.conn.execute("UPDATE inodes SET kind = 'door' WHERE ino = ?", (fifo.inode.ino,))
    assert db.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.conn.execute("PRAGMA foreign_key_check").fetchall() == []
