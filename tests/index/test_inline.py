"""Small content inside the index (index/inline.py): a chunk of at most INLINE_MAX bytes
lives in the `inline` table, never as a file, through commit, read, replace, retirement
for peers, restart, recovery and the wire; chunks stored as files before stay files."""

from __future__ import annotations

import base64
import os
import time

import pytest
from syncd.index import schema
from syncd.index.catalog import Catalog
from syncd.index.chunklist import CHUNK, Builder, ChunkList, digest_of
from syncd.index.draft import Draft
from syncd.index.inline import INLINE_MAX, encode
from syncd.index.recovery import recover
from syncd.index.states import changes_since, state_of
from syncd.index.store import ChunkStore

from tests.index.test_catalog import _commit, new_file
from tests.replicas import Device, T, check_invariants

ROOT = schema.ROOT_INO
SMALL = b"hello, inline"


@pytest.fixture
def cat(tmp_path) -> Catalog:
    ChunkStore.create(tmp_path / "store")
    db = schema.create(tmp_path / "index.db", "ab" * 16, 1000, 1000, T)
    c = Catalog(db, ChunkStore(tmp_path / "store"))
    yield c
    check_invariants(c)
    db.close()


def chunk_files(store: ChunkStore) -> list[str]:
    """Every chunk in the store: chunks, retired, working (files, and slots in use)."""
    files = [os.path.relpath(os.path.join(d, f), store.root)
             for d, _, files in os.walk(store.root) for f in files
             if f not in ("reserve", "slots")]
    return sorted(files + [f"work/slot of {ino}.{i}" for _, ino, i, _ in store.slots.in_use()])


def small_file(cat: Catalog, name: str, data: bytes) -> tuple[int, Draft]:
    _, ino, d = new_file(cat, name)
    d.write(0, data)
    _commit(cat, ino, d)
    return ino, d


def refs(cat: Catalog, digest: bytes) -> int | None:
    row = cat.conn.execute("SELECT refs FROM chunks WHERE hash = ?", (digest,)).fetchone()
    return row and row[0]


def test_a_small_file_commits_into_the_index_and_no_chunk_file(cat):
    ino, d = small_file(cat, "f", SMALL)
    digest = digest_of(SMALL)
    assert cat.chunks(ino) == ChunkList([digest])  # the chunk list is that of any file
    assert cat.inline.get([digest]) == {digest: SMALL} and refs(cat, digest) == 1
    assert chunk_files(cat.store) == []  # no chunk file, and no working chunk left
    assert d.read(0, 100) == SMALL  # the committed draft reads its new base from memory
    assert cat.open_draft(ino).read(0, 100) == SMALL
    assert cat.missing_chunks(ino) == [] and cat.not_held([digest]) == []
    d.write(5, b"!")  # copy-on-write from the inline chunk
    assert d.read(0, 100) == b"hello!" + SMALL[6:]
    _commit(cat, ino, d)
    assert cat.open_draft(ino).read(0, 100) == b"hello!" + SMALL[6:]
    assert chunk_files(cat.store) == []


def test_the_size_rule_holds_for_every_chunk_a_big_file_s_short_tail_too(cat):
    at_limit, _ = small_file(cat, "limit", b"l" * INLINE_MAX)
    above, _ = small_file(cat, "above", b"a" * (INLINE_MAX + 1))
    big = os.urandom(2 * CHUNK) + b"tail"
    tailed, d = small_file(cat, "big", big)
    assert cat.inline.get([digest_of(b"l" * INLINE_MAX)])
    assert cat.store.has(digest_of(b"a" * (INLINE_MAX + 1)))
    tail = cat.chunks(tailed).at(2)
    assert tail == digest_of(b"tail") and cat.inline.has(tail) and not cat.store.has(tail)
    assert len(chunk_files(cat.store)) == 3  # "above" and the big file's two full chunks
    assert cat.open_draft(tailed).read(2 * CHUNK - 2, 10) == big[-6:]
    d.write(len(big), b"+more")  # grows the inline tail: copy-on-write from the index
    _commit(cat, tailed, d)
    assert cat.open_draft(tailed).read(2 * CHUNK, 100) == b"tail+more"
    assert cat.missing_chunks(at_limit) == cat.missing_chunks(above) == []


def test_equal_small_files_share_one_row(cat):
    a, _ = small_file(cat, "a", SMALL)
    small_file(cat, "b", SMALL)
    assert refs(cat, digest_of(SMALL)) == 2
    assert cat.conn.execute("SELECT count(*) FROM inline").fetchone() == (1,)
    cat.unlink(ROOT, "a")
    cat.retire(cat.purge_inodes([a]))
    assert refs(cat, digest_of(SMALL)) == 1 and cat.inline.has(digest_of(SMALL))


def test_replaced_small_content_without_peers_goes_at_the_next_transaction(cat):
    ino, d = small_file(cat, "f", b"v1")
    d.write(0, b"v2")
    _commit(cat, ino, d)
    cat.create(ROOT, "next", "dir", 0o755, 0, 0)  # the transaction that collects v1
    assert not cat.inline.has(digest_of(b"v1")) and refs(cat, digest_of(b"v1")) is None


def test_replaced_small_content_is_kept_for_peers_until_it_expires(cat):
    """As a retired chunk file (test_catalog): served, taken by a version that needs it
    again, gone once every peer confirmed the change (after min_age) or at max_age. Never
    a file."""
    cat.keep_replaced()
    ino, d = small_file(cat, "f", b"v1")
    v1 = digest_of(b"v1")
    d.write(0, b"v2")
    _commit(cat, ino, d)
    seq = cat.seq
    cat.create(ROOT, "next", "dir", 0o755, 0, 0)
    assert refs(cat, v1) == 0 and cat.inline.get([v1]) == {v1: b"v1"}  # served
    assert cat.inline.usage() == (1, 2) and chunk_files(cat.store) == []
    cat.expire_replaced(seq - 1, 0, 60)  # a peer has not confirmed the change yet
    cat.expire_replaced(seq, 60, 60)  # all have, but it is too young
    assert cat.inline.has(v1)
    again, _ = small_file(cat, "again", b"v1")  # needed again: it is here
    assert refs(cat, v1) == 1 and cat.missing_chunks(again) == []
    cat.expire_replaced(seq, 0, 60)
    assert cat.inline.get([v1]) == {v1: b"v1"}  # its version keeps it
    cat.unlink(ROOT, "again")
    cat.retire(cat.purge_inodes([again]))
    assert refs(cat, v1) == 0
    cat.expire_replaced(cat.seq, 0, 60)
    assert not cat.inline.has(v1) and refs(cat, v1) is None and cat.inline.usage() == (0, 0)


def test_kept_small_content_survives_a_restart_and_expires_at_max_age(cat, tmp_path):
    cat.keep_replaced()
    ino, d = small_file(cat, "f", b"v1")
    d.write(0, b"v2")
    _commit(cat, ino, d)
    assert cat.collect_unreferenced() == 0  # a restart's recovery keeps it, as retired files
    again = Catalog(schema.open_db(tmp_path / "index.db"), cat.store)
    again.keep_replaced()
    assert again.inline.retired.keys() == {digest_of(b"v1")}
    again.expire_replaced(cat.seq - 1, 0, 3600)  # counted as replaced at the restart's seq
    assert again.inline.has(digest_of(b"v1"))
    again.inline.retired[digest_of(b"v1")] = (again.seq, time.monotonic() - 3600)
    again.expire_replaced(0, 0, 3600)
    assert not again.inline.has(digest_of(b"v1"))
    again.db.close()


def test_deleting_many_small_files_makes_no_file(cat):
    """rm -rf of small files kept for peers: rows stay, no file is made for any."""
    cat.keep_replaced()
    inos = [small_file(cat, f"f{i}", b"%d" % i)[0] for i in range(200)]
    for i, ino in enumerate(inos):
        cat.unlink(ROOT, f"f{i}")
        cat.retire(cat.purge_inodes([ino]))
    assert chunk_files(cat.store) == []
    assert cat.inline.usage()[0] == 200


def test_a_crash_after_the_index_decided_drops_the_working_chunk(cat):
    """Catalog.commit_draft cut short after its transaction: the index holds the new
    bytes; recovery only drops the working chunk (crash points through a real mount:
    tests/mount/test_crash_points.py)."""
    ino, d = small_file(cat, "f", b"old")
    d.write(0, b"new")
    sealed = d.seal()
    sealed.hash_pending(cat.store)
    cat.commit_content(ino, sealed.chunk_list(), sealed.size, None, None, True,
                       inline={digest_of(b"new"): b"new"})
    assert cat.store.dirty_inodes() == [ino]  # the working chunk is still there
    assert recover(cat, cat.store) == []
    assert cat.open_draft(ino).read(0, 10) == b"new"
    assert chunk_files(cat.store) == []


def test_a_crash_before_the_index_decided_recovers_a_small_copy_inline(cat, expect_log):
    expect_log(r"WARNING recovered uncommitted writes to inode \d+ as f.sync-recovered-")
    ino, d = small_file(cat, "f", b"committed")
    d.write(0, b"UNSAVED")  # then the process dies
    [name] = recover(cat, cat.store)
    copy = cat.lookup(ROOT, name).inode.ino
    assert cat.open_draft(copy).read(0, 100) == b"UNSAVEDed"
    assert cat.open_draft(ino).read(0, 100) == b"committed"
    assert cat.inline.has(digest_of(b"UNSAVEDed")) and chunk_files(cat.store) == []


def test_a_damaged_inline_chunk_is_dropped_and_fetched_again(cat):
    ino, _ = small_file(cat, "f", SMALL)
    digest = digest_of(SMALL)
    assert not cat.damaged_inline(digest)
    with cat.db.atomic():
        cat.conn.execute("UPDATE inline SET data = ? WHERE hash = ?", (b"damaged", digest))
    assert cat.damaged_inline(digest)
    cat.drop_damaged_chunk(digest)
    assert cat.missing_chunks(ino) == [digest] and not cat.is_local(ino)
    cat.install_inline({digest: SMALL})  # as the fetcher does, once verified
    cat.mark_local([ino])
    assert cat.open_draft(ino).read(0, 100) == SMALL


def test_small_files_stored_as_files_before_stay_files(tmp_path):
    """A home from before inline chunks (schema 7): its small chunk files are read,
    served and counted as here; a commit of the same bytes keeps the file; new content
    goes inline."""
    old = Device(tmp_path, "ab" * 16, T)
    ino = old.cat.create(ROOT, "f", "file", 0o644, 0, 0).inode.ino
    digest = old.cat.store.put(SMALL)  # as schema 5 stored every chunk
    old.cat.commit_content(ino, Builder().add(digest, len(SMALL)).done(), len(SMALL), T,
                           None, True)
    old.db.conn.execute("DROP TABLE inline")
    old.db.conn.execute("DROP INDEX chunks_unreferenced")  # schema 9
    old.db.conn.execute("DROP INDEX inodes_lru")  # schema 16
    old.db.conn.execute("ALTER TABLE nodes DROP COLUMN deleted_xattrs")  # schema 20
    old.db.conn.execute("ALTER TABLE nodes DROP COLUMN deleted_mode")  # schema 19
    for trigger in ("in", "out", "change"):  # schema 18
        old.db.conn.execute(f"DROP TRIGGER totals_tombstone_{trigger}")
    old.db.conn.execute("DROP INDEX nodes_tombstones")
    old.db.conn.execute("DROP TABLE horizons")
    old.db.conn.execute("ALTER TABLE totals DROP COLUMN tombstones")
    old.db.conn.execute("DROP TABLE relays")  # schema 17
    old.db.conn.execute("DROP TABLE relay_reads")
    old.db.conn.execute("DROP INDEX nodes_local_only")  # schema 14
    old.db.conn.execute("ALTER TABLE nodes DROP COLUMN ignored")
    old.db.conn.execute("DROP TABLE held")
    old.db.conn.execute("DROP TRIGGER xattrs_inode_gone")  # schema 12
    old.db.conn.execute("DROP TABLE xattrs")
    for trigger in ("versions_left", "versions_rewritten"):  # schema 13
        old.db.conn.execute(f"DROP TRIGGER {trigger}")
    old.db.conn.execute("DROP TABLE versions")
    for column in ("xattr_vv", "xattr_clock", "xattr_device", "xattr_made"):
        old.db.conn.execute(f"ALTER TABLE nodes DROP COLUMN {column}")
    old.db.conn.execute("PRAGMA user_version = 7")  # the step before inline chunks
    old.db.conn.commit()
    old.db.close()

    cat = Catalog(schema.open_db(tmp_path / "index.db"), old.cat.store)
    assert cat.open_draft(ino).read(0, 100) == SMALL
    assert cat.missing_chunks(ino) == [] and cat.has_chunk(digest)
    again, _ = small_file(cat, "same", SMALL)
    assert not cat.inline.has(digest) and cat.store.has(digest)  # still one file
    small_file(cat, "new", b"new bytes")
    assert cat.inline.has(digest_of(b"new bytes"))
    check_invariants(cat)
    cat.db.close()


def test_states_carry_inline_bytes_within_a_budget(cat):
    small_file(cat, "a", b"a" * 100)
    small_file(cat, "b", b"b" * 100)
    big, _ = small_file(cat, "big", b"c" * (CHUNK + 10))
    states, last = changes_since(cat.conn, 0, 1000, data_budget=150)
    assert [s["name"] for s in states] == ["a"]  # b's bytes would pass the budget
    assert states[0]["content"]["data"] == encode(b"a" * 100)
    rest, last = changes_since(cat.conn, last, 1000, data_budget=150)
    assert [s["name"] for s in rest] == ["b", "big"]
    assert "data" not in rest[1]["content"]  # a file of more than one chunk: fetched
    plain, _ = changes_since(cat.conn, 0, 1000)  # no budget, no bytes
    assert all("data" not in s["content"] for s in plain)
    node = cat.nodes_of(cat.lookup(ROOT, "a").inode.ino)[0]
    assert state_of(cat.conn, node, with_data=True)["content"]["data"] == encode(b"a" * 100)
    assert "data" not in state_of(cat.conn, node)["content"]


def test_a_state_with_its_bytes_is_here_at_once(devs):
    a, b, _ = devs
    a.write("/f", SMALL, T)
    states, _ = changes_since(a.cat.conn, 0, 1000, data_budget=1 << 20)
    effects = b.merger.apply(states, a.id)  # no chunk copied: only the states
    f = b.ino("/f")
    assert effects.missing == set() and b.cat.is_local(f)
    assert b.data("/f") == SMALL and b.cat.store.work_inodes() == []
    check_invariants(b.cat)


def test_bytes_as_the_api_decodes_them_wait_in_limbo_and_are_installed(devs):
    """The API hands the index a state's `data` decoded (bytes): one whose directory has
    not come yet waits in limbo (stored as JSON, the bytes as base64) and is here at
    once with its bytes when the directory comes."""
    a, b, _ = devs
    a.mkdir("/d")
    a.write("/d/f", SMALL, T)
    states, _ = changes_since(a.cat.conn, 0, 1000, data_budget=1 << 20)
    for s in states:
        if "data" in s["content"]:
            s["content"]["data"] = base64.b64decode(s["content"]["data"])
    (d,) = [s for s in states if s["name"] == "d"]
    (f,) = [s for s in states if s["name"] == "f"]
    b.merger.apply([f], a.id)
    assert b.merger.behind() == 1  # in limbo
    effects = b.merger.apply([d], a.id)
    assert effects.missing == set() and b.data("/d/f") == SMALL
    check_invariants(b.cat)


def test_bytes_that_do_not_match_are_not_installed(devs):
    """The API refuses such a state (tests/hostile); the index checks too (rule 2)."""
    a, b, _ = devs
    a.write("/f", SMALL, T)
    states, _ = changes_since(a.cat.conn, 0, 1000, data_budget=1 << 20)
    (state,) = [s for s in states if s["id"] != "root"]
    state["content"]["data"] = encode(b"HELLO, INLINE")
    effects = b.merger.apply([state], a.id)
    f = b.ino("/f")
    assert effects.missing == {f} and not b.cat.is_local(f)
    assert not b.cat.inline.has(digest_of(SMALL))


def test_unreferenced_chunks_are_found_without_reading_every_chunk(tmp_path):
    """The mount's start (recovery, the kept inline chunks) and `syncd status` look for the
    chunks at 0 references: their cost must not grow with the chunks that are in use."""
    ChunkStore.create(tmp_path / "store")
    db = schema.create(tmp_path / "index.db", "ab" * 16, 1000, 1000, T)
    cat = Catalog(db, ChunkStore(tmp_path / "store"))
    steps = [0]

    def cost(fn) -> int:
        steps[0] = 0
        db.conn.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 10)
        try:
            fn()
        finally:
            db.conn.set_progress_handler(None, 10)
        return steps[0]

    def in_use(n: int) -> None:  # rows of chunks that versions refer to
        with db.conn:
            db.conn.executemany("INSERT INTO chunks (hash, size, refs) VALUES (?, 5, 1)",
                                ((os.urandom(32),) for _ in range(n)))

    def lookups() -> None:
        cat.inline.usage()
        cat.collect_unreferenced()
        cat.inline.keep_replaced(0)

    in_use(100)
    few = cost(lookups)
    in_use(20_000)
    assert cost(lookups) <= few + 20
    db.close()
