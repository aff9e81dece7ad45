"""The rows each operation produces, on a real SQLite file, without a mount."""

from __future__ import annotations

import errno
import json
import os

import pytest
from syncd.index import schema
from syncd.index.catalog import Catalog
from syncd.index.chunklist import CHUNK, ChunkList, digest_of, file_hash
from syncd.index.draft import Draft
from syncd.index.inline import INLINE_MAX
from syncd.index.merge import Merger
from syncd.index.recovery import recover
from syncd.index.store import ChunkStore
from syncd.mount.content import Content

ROOT = schema.ROOT_INO
DEVICE = "ab" * 16
FILE_SIZED = INLINE_MAX // 2 + 1  # times two bytes: content whose chunk is a file


def journal(c: Catalog) -> list[tuple[str, str]]:
    return [tuple(r) for r in c.conn.execute("SELECT node, op FROM journal ORDER BY seq")]


def node(c: Catalog, node_id: str) -> dict:
    cur = c.conn.execute("SELECT * FROM nodes WHERE id = ?", (node_id,))
    return dict(zip([d[0] for d in cur.description], cur.fetchone(), strict=True))


def test_create_stamps_one_change_with_fresh_versions(cat):
    e = cat.create(ROOT, "a.txt", "file", 0o644, 1000, 1000)
    assert e.node == f"{DEVICE}:1"
    assert journal(cat) == [(e.node, "create")]
    row = node(cat, e.node)
    assert row["seq"] == 1 and row["parent"] == "root" and row["name"] == "a.txt"
    for aspect in ("content", "mode", "place"):
        assert json.loads(row[f"{aspect}_vv"]) == {DEVICE: 1}
        assert row[f"{aspect}_device"] == DEVICE
    assert e.inode.hash == file_hash(b"")


def test_names_are_checked(cat):
    for bad, code in [("a/b", errno.EINVAL), ("", errno.EINVAL), ("..", errno.EINVAL),
                      ("x" * 256, errno.ENAMETOOLONG), (b"\xff", errno.EILSEQ)]:
        with pytest.raises(OSError) as e:
            cat.create(ROOT, bad, "file", 0o644, 0, 0)
        assert e.value.errno == code
    assert journal(cat) == []


def test_failed_change_leaves_nothing(cat):
    cat.create(ROOT, "a", "file", 0o644, 0, 0)
    with pytest.raises(OSError) as e:
        cat.create(ROOT, "a", "file", 0o644, 0, 0)
    assert e.value.errno == errno.EEXIST
    assert len(journal(cat)) == 1 and cat.seq == 1


def test_rename_is_one_placement_change(cat):
    d = cat.create(ROOT, "d", "dir", 0o755, 0, 0)
    f = cat.create(ROOT, "f", "file", 0o644, 0, 0)
    before = node(cat, f.node)
    assert cat.rename(ROOT, "f", d.inode.ino, "g") is None
    after = node(cat, f.node)
    assert journal(cat)[-1] == (f.node, "rename")
    assert (after["parent"], after["name"]) == (d.node, "g")
    assert after["content_vv"] == before["content_vv"]
    assert json.loads(after["place_vv"]) == {DEVICE: 3}
    assert after["place_clock"] > before["place_clock"]


def test_rename_over_a_file_keeps_the_target_node(cat):
    target = cat.create(ROOT, "doc", "file", 0o644, 0, 0)
    tmp = cat.create(ROOT, "doc.tmp", "file", 0o600, 0, 0)
    displaced = cat.rename(ROOT, "doc.tmp", ROOT, "doc")
    assert displaced == target.inode.ino
    now = cat.lookup(ROOT, "doc")
    assert now.node == target.node and now.inode.ino == tmp.inode.ino
    assert journal(cat)[-2:] == [(target.node, "content"), (tmp.node, "delete")]
    assert node(cat, tmp.node)["deleted"] == 1
    assert json.loads(node(cat, target.node)["mode_vv"]) == {DEVICE: 3}


def test_delete_is_a_tombstone_with_versions(cat):
    f = cat.create(ROOT, "f", "file", 0o644, 0, 0)
    ino = cat.unlink(ROOT, "f")
    row = node(cat, f.node)
    assert row["deleted"] == 1 and row["ino"] is None and row["seq"] == 2
    assert json.loads(row["content_vv"]) == {DEVICE: 2}
    assert journal(cat)[-1] == (f.node, "delete")
    assert cat.orphan_inodes() == [ino]
    cat.purge_inodes([ino])
    assert cat.orphan_inodes() == []


def test_only_the_last_name_leaves_an_inode_to_purge(cat):
    f = cat.create(ROOT, "f", "file", 0o644, 0, 0)
    cat.link(f.inode.ino, ROOT, "h")
    assert cat.unlink(ROOT, "f") is None  # h still names it
    g = cat.create(ROOT, "g", "file", 0o644, 0, 0)
    assert cat.rename(ROOT, "g", ROOT, "h") == f.inode.ino  # h's node takes g's inode
    assert cat.orphan_inodes() == [f.inode.ino]
    assert cat.purge_inodes([f.inode.ino, g.inode.ino]) == []  # g's inode has a name
    assert cat.orphan_inodes() == [] and cat.lookup(ROOT, "h").inode.ino == g.inode.ino


def test_rmdir_and_rename_errors(cat):
    d = cat.create(ROOT, "d", "dir", 0o755, 0, 0)
    cat.create(d.inode.ino, "x", "file", 0o644, 0, 0)
    sub = cat.create(d.inode.ino, "sub", "dir", 0o755, 0, 0)
    cases = [
        (lambda: cat.rmdir(ROOT, "d"), errno.ENOTEMPTY),
        (lambda: cat.unlink(ROOT, "d"), errno.EISDIR),
        (lambda: cat.rmdir(d.inode.ino, "x"), errno.ENOTDIR),
        (lambda: cat.rename(ROOT, "d", sub.inode.ino, "in"), errno.EINVAL),
        (lambda: cat.rename(d.inode.ino, "x", ROOT, "d"), errno.EISDIR),
        (lambda: cat.rename(d.inode.ino, "sub", d.inode.ino, "x"), errno.ENOTDIR),
    ]
    n = len(journal(cat))
    for fn, code in cases:
        with pytest.raises(OSError) as e:
            fn()
        assert e.value.errno == code
    assert len(journal(cat)) == n


def test_chmod_stamps_each_link_and_owner_stamps_nothing(cat):
    f = cat.create(ROOT, "f", "file", 0o644, 0, 0)
    h = cat.link(f.inode.ino, ROOT, "h")
    cat.set_attributes(f.inode.ino, mode=0o600)
    assert journal(cat)[-2:] == [(f.node, "mode"), (h.node, "mode")]
    n = cat.seq
    cat.set_attributes(f.inode.ino, uid=5, gid=6, atime_ns=7)
    assert cat.seq == n
    assert cat.inode(f.inode.ino).uid == 5


def test_chmod_and_utime_at_once_are_one_change(cat):
    """One setattr: one new version of content and mode per node, and what it returns is
    the inode as it is now."""
    f = cat.create(ROOT, "f", "file", 0o644, 0, 0)
    before = node(cat, f.node)
    after = cat.set_attributes(f.inode.ino, mode=0o4600, mtime_ns=123, uid=7)
    assert (after.mode, after.mtime_ns, after.uid) == (0o4600, 123, 7)
    assert after.ctime_ns > f.inode.ctime_ns and after == cat.inode(f.inode.ino)
    assert journal(cat)[-1] == (f.node, "content") and cat.seq == before["seq"] + 1
    row = node(cat, f.node)
    assert json.loads(row["content_vv"]) == json.loads(row["mode_vv"]) == {DEVICE: cat.seq}
    assert row["place_vv"] == before["place_vv"]


def test_attributes_of_a_purged_inode(cat):
    ino = cat.create(ROOT, "f", "file", 0o644, 0, 0).inode.ino
    cat.purge_inodes([cat.unlink(ROOT, "f")])
    with pytest.raises(OSError) as e:
        cat.set_attributes(ino, mode=0o600)
    assert e.value.errno == errno.ENOENT


def _commit(c: Catalog, ino: int, draft: Draft) -> None:
    """What the mount does at flush, without trio: seal, hash, commit_draft."""
    sealed = draft.seal()
    sealed.hash_pending(c.store)
    c.commit_draft(draft, sealed)


def new_file(c: Catalog, name: str) -> tuple[str, int, Draft]:
    """A new empty file: its node id, its inode, and an empty draft to write into."""
    e = c.create(ROOT, name, "file", 0o644, 0, 0)
    return e.node, e.inode.ino, Draft(c.store, e.inode.ino, ChunkList([]), 0)


def committed(c: Catalog, ino: int, n: int = 4 * CHUNK) -> bytes:
    """The committed content of an inode, read through a fresh draft."""
    return c.open_draft(ino).read(0, n)


def test_many_writes_commit_as_one_change_with_its_metadata(cat):
    file_node, ino, d = new_file(cat, "f")
    data = os.urandom(2 * CHUNK + 5)
    for off in range(0, len(data), 4096):
        d.write(off, data[off : off + 4096])
    d.mode = 0o600  # chmod while open for writing (cp -p, tar)
    d.mtime_ns = 123
    n = len(journal(cat))
    _commit(cat, ino, d)
    assert journal(cat)[n:] == [(file_node, "content")]  # one change, not one per write
    row = node(cat, file_node)
    assert json.loads(row["content_vv"]) == json.loads(row["mode_vv"]) == {DEVICE: n + 1}
    inode = cat.inode(ino)
    assert (inode.size, inode.mode, inode.mtime_ns) == (len(data), 0o600, 123)
    chunks = [digest_of(data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]
    assert cat.chunks(ino) == ChunkList(chunks)
    assert inode.hash == file_hash(b"".join(chunks))


def test_identical_chunks_are_stored_once_and_collected(cat):
    a = cat.create(ROOT, "a", "file", 0o644, 0, 0)
    b = cat.create(ROOT, "b", "file", 0o644, 0, 0)
    block = os.urandom(CHUNK)
    for e in (a, b):
        d = Draft(cat.store, e.inode.ino, ChunkList([]), 0)
        d.write(0, block + block)
        _commit(cat, e.inode.ino, d)
    assert cat.conn.execute("SELECT refs FROM chunks WHERE refs > 0").fetchall() == [(4,)]
    cat.unlink(ROOT, "a")
    for digest in cat.purge_inodes([a.inode.ino]):
        cat.store.remove(digest)
    assert cat.conn.execute("SELECT refs FROM chunks WHERE refs > 0").fetchall() == [(2,)]
    d = cat.open_draft(b.inode.ino)
    d.truncate(0)
    _commit(cat, b.inode.ino, d)
    assert cat.conn.execute("SELECT count(*) FROM chunks WHERE refs > 0").fetchone() == (0,)
    assert not cat.store.has(digest_of(block))


def test_copy_on_write_leaves_committed_chunks_alone(cat):
    file_node, ino, d = new_file(cat, "f")
    d.write(0, b"a" * (CHUNK + 10))
    _commit(cat, ino, d)
    first = cat.chunks(ino)
    d.write(5, b"XY")  # a partial write to chunk 0
    assert d.read(0, 8) == b"aaaaaXYa"
    assert cat.store.read(first.at(0), 0, 8) == b"aaaaaaaa"  # committed bytes untouched
    _commit(cat, ino, d)
    assert cat.chunks(ino).at(1) == first.at(1)  # the untouched chunk is shared, not rewritten


def test_sparse_and_truncate_read_back(cat):
    file_node, ino, d = new_file(cat, "f")
    d.write(3 * CHUNK + 1, b"z")
    d.truncate(CHUNK + 3)
    d.truncate(2 * CHUNK)
    d.write(10, b"q")
    expect = bytearray(2 * CHUNK)
    expect[10:11] = b"q"
    assert d.read(0, 3 * CHUNK) == bytes(expect)
    _commit(cat, ino, d)
    assert committed(cat, ino) == bytes(expect)


def test_recovery_keeps_committed_version_and_adds_recovered_file(cat, expect_log):
    expect_log(r"WARNING recovered uncommitted writes to inode \d+ as notes.sync-recovered-")
    file_node, ino, d = new_file(cat, "notes.txt")
    d.write(0, b"committed")
    _commit(cat, ino, d)
    # then a writer that never closes: its draft is marked dirty, as the mount does
    d.write(0, b"UNSAVED")  # marks the file dirty
    recovered = recover(cat, cat.store)
    assert len(recovered) == 1 and recovered[0].startswith("notes.sync-recovered-")
    assert recovered[0].endswith(".txt")
    assert committed(cat, ino) == b"committed"
    r = cat.lookup(ROOT, recovered[0])
    assert committed(cat, r.inode.ino) == b"UNSAVEDed"
    assert cat.store.dirty_inodes() == []
    assert recover(cat, cat.store) == []  # recovered once


def test_recovery_after_truncate_takes_no_bytes_above_the_floor(cat, expect_log):
    expect_log(r"WARNING recovered uncommitted writes to inode \d+ as f.sync-recovered-")
    file_node, ino, d = new_file(cat, "f")
    d.write(0, b"x" * (CHUNK + 100))
    _commit(cat, ino, d)
    d.truncate(10)  # records the floor
    d.write(2 * CHUNK, b"end")  # a sparse write past a hole
    [name] = recover(cat, cat.store)
    r = cat.lookup(ROOT, name)
    assert committed(cat, r.inode.ino) == b"x" * 10 + bytes(2 * CHUNK - 10) + b"end"


def test_recovery_of_an_empty_working_chunk_makes_a_valid_empty_file(cat, expect_log):
    """Killed over a file truncated to 0 and written again, its working chunk still empty
    (the relay soak, seed 5): the recovered copy was a file of 0 bytes with one slot,
    which every peer refused and a relay upload died on."""
    expect_log(r"WARNING recovered uncommitted writes to inode \d+ as f.sync-recovered-")
    file_node, ino, d = new_file(cat, "f")
    d.write(0, b"committed")
    _commit(cat, ino, d)
    d.truncate(0)  # records the floor
    d.write(0, b"x")
    cat.store.adopt_slots()  # as recovery does first: the working chunk as a file
    for path in cat.store.work_chunks(ino).values():
        os.truncate(path, 0)  # none of its bytes written yet
    [name] = recover(cat, cat.store)
    r = cat.lookup(ROOT, name)
    assert committed(cat, r.inode.ino) == b""
    chunks = cat.chunks(r.inode.ino)
    assert ChunkList.from_hex(chunks.hex(), 0) == chunks  # what a peer checks


def test_seq_and_clock_survive_reopen(tmp_path, cat):
    cat.create(ROOT, "a", "file", 0o644, 0, 0)
    cat.create(ROOT, "b", "dir", 0o755, 0, 0)
    again = Catalog(schema.open_db(tmp_path / "index.db"), cat.store)
    assert (again.seq, again.clock) == (cat.seq, cat.clock) == (2, 2)


def test_content_commit_through_the_mount_layer(cat):
    """Content (mount/content.py) on a real index: write, fold chmod, commit once."""
    import trio

    f = cat.create(ROOT, "f", "file", 0o644, 0, 0)
    content = Content(cat, cat.store, Merger(cat), on_effects=lambda effects: None)

    async def run():
        await content.write(f.inode.ino, 0, b"x" * 100)
        await content.write(f.inode.ino, 100, b"y", append=False)
        content.draft(f.inode.ino).mode = 0o700
        assert cat.store.dirty_inodes() == [f.inode.ino]  # marked before the commit
        assert await content.commit(f.inode.ino)
        assert not await content.commit(f.inode.ino)  # nothing left

    n = len(journal(cat))
    trio.run(run)
    assert journal(cat)[n:] == [(f.node, "content")]
    assert content.read(f.inode.ino, 0, 200) == b"x" * 100 + b"y"
    assert cat.inode(f.inode.ino).mode == 0o700


def test_replaced_chunks_are_kept_for_peers_until_they_expire(cat):
    """With keep_replaced (a daemon with peers), a chunk no version refers to any more
    leaves the store's chunks but is still served; a version that needs it again takes it
    back; it goes once every peer has confirmed the change (after min_age) or at max_age.
    Without keep_replaced it is removed at once (the test above)."""
    cat.store.keep_replaced(cat.seq)
    _, ino, d = new_file(cat, "f")
    old, new = b"old" * FILE_SIZED, b"new" * FILE_SIZED
    d.write(0, old)
    _commit(cat, ino, d)
    old_chunk = cat.chunks(ino).at(0)
    d.truncate(0)
    d.write(0, new)
    _commit(cat, ino, d)  # retires the old chunk
    assert not os.path.exists(cat.store.chunk_path(old_chunk))
    assert cat.store.read_served(old_chunk) == old
    seq = cat.seq
    cat.store.expire_retired(seq - 1, 0, 60)  # a peer has not confirmed the change yet
    assert cat.store.read_served(old_chunk) == old
    cat.store.expire_retired(seq, 60, 60)  # all have, but it is too young
    assert cat.store.read_served(old_chunk) == old
    assert not cat.store.has(old_chunk) and cat.store.is_retired(old_chunk)
    # needed again: verified, back among the chunks
    assert cat.store.put_back(old_chunk, cat.store.retired_intact(old_chunk))
    assert cat.store.read(old_chunk, 0, 3) == b"old" and not cat.store.is_retired(old_chunk)
    cat.store.retire(old_chunk, seq)
    cat.store.expire_retired(seq, 0, 60)
    assert cat.store.read_served(old_chunk) is None and not cat.store.is_retired(old_chunk)


V1 = b"v1" * FILE_SIZED


def replaced_v1(cat: Catalog) -> bytes:
    """A file written as v1, then as v2, with replaced chunks kept: v1's chunk."""
    cat.store.keep_replaced(cat.seq)
    _, ino, d = new_file(cat, "f")
    d.write(0, V1)
    _commit(cat, ino, d)
    v1 = cat.chunks(ino).at(0)
    d.write(0, b"v2")
    _commit(cat, ino, d)
    return v1


def test_a_damaged_retired_chunk_is_not_taken_back(cat):
    v1 = replaced_v1(cat)
    retired = cat.store.root / "retired" / v1.hex()
    retired.write_bytes(b"v!")
    assert not cat.store.retired_intact(v1)
    assert not cat.store.put_back(v1, False)  # fetched from a peer instead, and verified
    assert not retired.exists() and not cat.store.has(v1) and not cat.store.is_retired(v1)


def test_replaced_chunks_survive_a_restart_and_give_way_to_a_full_disk(cat, tmp_path):
    v1 = replaced_v1(cat)
    again = ChunkStore(tmp_path / "store")
    again.keep_replaced(cat.seq)
    assert again.read_served(v1) == V1
    again.expire_retired(cat.seq - 1, 0, 3600)  # counted as retired at the restart's seq
    assert again.read_served(v1) == V1
    assert again.drop_retired() and not again.drop_retired()
    assert again.read_served(v1) is None
