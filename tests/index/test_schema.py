"""Opening databases of every schema we have shipped (tests/data/schema-v*.db)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from index import schema
from index.catalog import Catalog
from index.store import ChunkStore

DATA = Path(__file__).parent.parent / "data"


def test_first_schema_opens_with_its_tree_intact(tmp_path):
    shutil.copy(DATA / "schema-v1.db", tmp_path / "index.db")
    db = schema.open_db(tmp_path / "index.db")
    assert db.conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    cat = Catalog(db, ChunkStore(tmp_path / "store"))
    docs = cat.lookup(schema.ROOT_INO, "docs")
    assert docs.inode.kind == "dir"
    a = cat.lookup(docs.inode.ino, "a.txt")
    assert a.inode.size == 6 and a.inode.nlink == 2  # with its hard link
    assert cat.lookup(docs.inode.ino, "older").inode.kind == "dir"
    assert cat.lookup(schema.ROOT_INO, "tmp") is None  # a tombstone
    assert cat.seq == 13
    assert db.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


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
