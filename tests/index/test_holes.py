"""Holes cost nothing: chunk lists keep runs of holes as one entry, canonically, so a file
of zeros written in full and one never written have one list and one hash; a truncate or
write far past the end touches nothing per slot; a size past the limit is EFBIG."""

import errno
import json

import pytest
from syncd.index import schema
from syncd.index.catalog import Catalog
from syncd.index.chunklist import (
    CHUNK,
    MAX_FILE_SIZE,
    Builder,
    ChunkList,
    digest_of,
    hole_entry,
    zero_digest,
)
from syncd.index.draft import Draft
from syncd.index.states import changes_since
from syncd.index.store import ChunkStore

from tests.index.test_catalog import _commit, committed, new_file
from tests.replicas import three_devices

ROOT = schema.ROOT_INO
TIB = 1 << 40
A, B = digest_of(b"a"), digest_of(b"b")


def test_runs_of_holes_are_one_entry_and_equal_bytes_one_list():
    written = (Builder().add(A, CHUNK).add(zero_digest(CHUNK), CHUNK)
               .add(zero_digest(CHUNK), CHUNK).add(B, CHUNK).add(zero_digest(5), 5).done())
    never = Builder().add(A, CHUNK).holes(2).add(B, CHUNK).holes(1).done()
    assert written == never and written.entries == [A, hole_entry(2), B, hole_entry(1)]
    assert written.slots == 5 and written.digests() == [A, B]
    assert [written.at(i) for i in range(6)] == [A, None, None, B, None, None]
    assert written.truncated(2).entries == [A, hole_entry(1)]
    huge = Builder().holes(MAX_FILE_SIZE // CHUNK).done()
    assert len(huge.entries) == 1 and huge.at(MAX_FILE_SIZE // CHUNK - 1) is None
    assert ChunkList.from_blob(written.blob) == written


def test_a_list_from_a_peer_is_checked_and_made_canonical():
    old_style = [A.hex(), zero_digest(CHUNK).hex(), zero_digest(CHUNK).hex(), B.hex()]
    chunks = ChunkList.from_hex(old_style, 3 * CHUNK + 1)
    assert chunks.entries == [A, hole_entry(2), B]
    with pytest.raises(ValueError, match="4 slot"):
        ChunkList.from_hex([A.hex()], 3 * CHUNK + 1)
    with pytest.raises(ValueError, match="at least one slot"):
        ChunkList.from_hex([A.hex(), hole_entry(0).hex()], CHUNK + 1)
    assert ChunkList.from_hex([hole_entry(1 << 30).hex()], 1 << 50).slots == 1 << 30


def test_truncate_to_the_largest_size_touches_nothing_per_slot(cat):
    _, ino, d = new_file(cat, "f")
    d.write(0, b"head")
    d.truncate(MAX_FILE_SIZE)
    with pytest.raises(OSError) as e:
        d.truncate(MAX_FILE_SIZE + 1)
    assert e.value.errno == errno.EFBIG
    with pytest.raises(OSError) as e:
        d.write(MAX_FILE_SIZE, b"x")
    assert e.value.errno == errno.EFBIG
    assert d.size == MAX_FILE_SIZE
    _commit(cat, ino, d)
    chunks = cat.chunks(ino)
    assert chunks.slots == MAX_FILE_SIZE // CHUNK and len(chunks.entries) == 2
    assert cat.inode(ino).size == MAX_FILE_SIZE
    assert d.read(MAX_FILE_SIZE - 3, 10) == bytes(3)
    assert d.read(0, 6) == b"head\0\0"


def test_a_byte_at_a_tebibyte_is_one_chunk_and_one_hole(cat):
    _, ino, d = new_file(cat, "f")
    d.write(TIB, b"x")
    _commit(cat, ino, d)
    chunks = cat.chunks(ino)
    assert chunks.entries == [hole_entry(TIB // CHUNK), digest_of(b"x")]
    assert cat.conn.execute("SELECT hash, refs FROM chunks").fetchall() == [
        (digest_of(b"x"), 1)]
    assert cat.store.work_inodes() == []
    assert d.read(TIB - 2, 4) == b"\0\0x"
    fresh = cat.open_draft(ino)
    assert fresh.read(TIB - 2, 4) == b"\0\0x"


def test_zeros_written_are_a_hole_like_zeros_never_written(cat):
    _, sparse, d = new_file(cat, "sparse")
    d.truncate(3 * CHUNK)
    d.write(CHUNK + 5, b"y")
    _commit(cat, sparse, d)
    _, full, w = new_file(cat, "full")
    data = bytearray(3 * CHUNK)
    data[CHUNK + 5] = ord("y")
    w.write(0, bytes(data))
    _commit(cat, full, w)
    assert cat.chunks(full) == cat.chunks(sparse)
    assert cat.inode(full).hash == cat.inode(sparse).hash
    # Data overwritten with zeros becomes a hole; its chunk leaves the store.
    w.write(CHUNK, bytes(CHUNK))
    _commit(cat, full, w)
    assert cat.chunks(full).entries == [hole_entry(3)]
    assert cat.inode(full).hash == ChunkList([hole_entry(3)]).hash
    assert cat.conn.execute("SELECT count(*) FROM chunks WHERE refs > 0").fetchone() == (1,)
    assert committed(cat, full, 3 * CHUNK) == bytes(3 * CHUNK)


def test_truncating_into_a_hole_keeps_it_a_hole(cat):
    _, ino, d = new_file(cat, "f")
    d.write(0, b"a")
    d.truncate(5 * CHUNK)
    _commit(cat, ino, d)
    d.truncate(3 * CHUNK + 7)  # cuts the run of holes
    _commit(cat, ino, d)
    assert cat.chunks(ino).entries == [digest_of(b"a" + bytes(CHUNK - 1)), hole_entry(3)]
    assert committed(cat, ino, 4 * CHUNK) == b"a" + bytes(3 * CHUNK + 6)


def test_a_hole_crosses_to_a_peer_as_one_entry(tmp_path):
    a, b, _ = three_devices(tmp_path)
    ino = a.cat.create(a.ino(""), "f", "file", 0o644, 0, 0).inode.ino
    d = Draft(a.cat.store, ino, ChunkList([]), 0)
    d.write(TIB, b"x")
    _commit(a.cat, ino, d)
    states, _ = changes_since(a.cat.conn, 0)
    (state,) = [s for s in states if s["id"] != "root"]
    assert state["content"]["chunks"] == [hole_entry(TIB // CHUNK).hex(), digest_of(b"x").hex()]
    b.merger.apply([state], a.id)
    here = b.ino("/f")
    assert b.cat.inode(here).hash == a.cat.inode(ino).hash
    assert b.cat.missing_chunks(here) == [digest_of(b"x")]


def test_the_upgrade_makes_zero_chunks_holes_and_collects_them(tmp_path):
    """A version-4 index held zero chunks as chunks: they become holes, the same on every
    peer, and leave the store at the next start."""
    ChunkStore.create(tmp_path / "store")
    store = ChunkStore(tmp_path / "store")
    db = schema.create(tmp_path / "index.db", "ab" * 16, 0, 0, 1_700_000_000 * 10**9)
    v4 = Catalog(db, store)
    ino = v4.create(ROOT, "f", "file", 0o644, 0, 0).inode.ino
    data, zero = store.put(b"d" * CHUNK), store.put(bytes(CHUNK))
    tail = store.put(bytes(10))
    old = ChunkList([data, zero, zero, tail])  # as version 4 made them
    v4.commit_content(ino, old, 3 * CHUNK + 10, 1, None, True)
    state = {"id": "cd" * 16 + ":9", "kind": "file", "deleted": False,
             "content": {"chunks": old.hex(), "hash": old.hash, "size": 3 * CHUNK + 10}}
    db.conn.execute("INSERT INTO limbo VALUES (?, ?, ?)", (state["id"], json.dumps(state), "x"))
    with db.conn:
        schema.MIGRATIONS[5](db.conn)  # the step from version 4
    db.close()

    cat = Catalog(schema.open_db(tmp_path / "index.db"), store)
    assert cat.chunks(ino).entries == [data, hole_entry(3)]
    assert cat.inode(ino).hash == ChunkList([data, hole_entry(3)]).hash
    kept = json.loads(cat.conn.execute("SELECT state FROM limbo").fetchone()[0])
    assert kept["content"]["chunks"] == [data.hex(), hole_entry(3).hex()]
    assert cat.collect_unreferenced() == 2  # the zero chunks
    assert not store.has(zero) and not store.has(tail) and store.has(data)
    cat.conn.execute("DELETE FROM limbo")
    cat.conn.commit()
