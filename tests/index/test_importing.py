"""syncd import's batches on a real index (index/importing.py): the bulk writes make exactly
the rows a create per entry makes, and what a create alone decides (ignored entries, rule
files, a receive-only machine) is decided as it would be, within the batch."""

from __future__ import annotations

import base64
import json
import os

import pytest
from syncd.index.catalog import ASPECTS, RECEIVE_ONLY, Catalog, local_only, to_json
from syncd.index.importing import Entry, Importer, read_file, scan
from syncd.index.inline import inline_slot
from syncd.index.schema import ROOT_INO

from tests.index.conftest import DEVICE

MIB = 1 << 20
VERSIONS = ", ".join(f"{a}_{c}" for a in ASPECTS for c in ("vv", "made", "clock", "device"))


def make_tree(root) -> None:
    """Directories in directories, small files (inline), a big one (staged chunks, a short
    last one inline, a hole), an empty one, modes, mtimes and symlinks."""
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    for i in range(30):
        (root / "a" / f"f{i:02d}").write_bytes(b"small %d\n" % i)
        (root / "c" / f"g{i:02d}").write_bytes(b"small %d\n" % i)  # the same bytes again
    with open(root / "a" / "b" / "big", "wb") as f:
        f.write(os.urandom(MIB))
        f.seek(2 * MIB)
        f.write(os.urandom(100))
    (root / "a" / "empty").write_bytes(b"")
    os.chmod(root / "a" / "f01", 0o600)
    os.chmod(root / "c", 0o700)
    os.utime(root / "a" / "f02", ns=(0, 1_500_000_000 * 10**9))
    os.symlink("a/f03", root / "link")
    os.symlink("../nowhere", root / "c" / "dangling")


def read_tree(cat: Catalog, src) -> list[Entry]:
    """The source's entries, read and staged as the command reads them."""
    entries = list(scan(src, []))
    for e in entries:
        if e.kind == "file":
            chunks, e.size, e.data, _ = read_file(cat.store, src / e.rel)
            e.chunks = chunks
    return entries


def create_each(cat: Catalog, into: str, entries: list[Entry]) -> None:
    """What the import did before its bulk writes: a create per entry."""
    top = cat.create(ROOT_INO, into, "dir", 0o755, 1000, 1000).inode.ino
    inos = {"": top}

    def run() -> None:
        for e in entries:
            head, _, name = e.rel.rpartition("/")
            content = None
            if e.kind == "file":
                chunks = e.chunks
                content = (chunks, e.size)
                if e.data is not None:
                    cat.inline.add({inline_slot(chunks, e.size): e.data})
            made = cat.create(inos[head], name, e.kind, e.mode, 1000, 1000,
                              os.fsencode(e.target) if e.target else None,
                              mtime_ns=None if e.kind == "dir" else e.mtime_ns,
                              content=content)
            inos[e.rel] = made.inode.ino

    cat.transaction(run)


def tree_rows(cat: Catalog, top: str) -> dict[str, tuple]:
    """Every entry below the directory `top`, by path: its inode's columns but times
    (a directory's mtime, ctimes, atimes), after checking that its node, versions and
    journal row are those of a node created here at its stamp."""
    rows: dict[str, tuple] = {}

    def walk(node: str, path: str) -> None:
        for id_, kind, name, seq, ino, ignored, *versions in cat.conn.execute(
                f"SELECT id, kind, name, seq, ino, ignored, {VERSIONS} FROM nodes"
                " WHERE parent = ? AND deleted = 0", (node,)).fetchall():
            here = f"{path}/{name}"
            assert (id_, ignored) == (f"{DEVICE}:{seq}", 0), here
            vv = to_json({DEVICE: seq})
            clock, op, device, detail = cat.conn.execute(
                "SELECT clock, op, device, detail FROM journal WHERE seq = ? AND node = ?",
                (seq, id_)).fetchone()
            assert (op, device, json.loads(detail)) == ("create", DEVICE, {"kind": kind})
            assert versions == [vv, vv, clock, DEVICE] * len(ASPECTS), here
            inode = cat.conn.execute(
                "SELECT kind, mode, uid, gid, size, mtime_ns, hash, chunks, target, local,"
                " rdev FROM inodes WHERE ino = ?", (ino,)).fetchone()
            rows[here] = inode if kind != "dir" else inode[:5] + inode[6:]
            if kind == "dir":
                walk(id_, here)

    walk(cat.node_at(top), "")
    return rows


def test_a_batch_makes_the_rows_a_create_per_entry_makes(cat, tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    entries = read_tree(cat, src)
    before = cat.conn.execute("SELECT mtime_ns FROM inodes WHERE ino = ?",
                              (ROOT_INO,)).fetchone()[0]
    outcome, effects = Importer(cat, "bulk", 1000, 1000).apply(entries)
    assert (outcome.created, outcome.skipped, outcome.differing) == (len(entries), 0, [])
    assert not cat.store.staged()  # every staged chunk is in the store now
    create_each(cat, "each", read_tree(cat, src))
    bulk, each = tree_rows(cat, "bulk"), tree_rows(cat, "each")
    assert bulk == each
    assert sorted(bulk) == sorted(f"/{e.rel}" for e in entries)
    # a chunk held by both trees counts two references per file; the small files'
    # bytes are held once, inline
    assert cat.conn.execute("SELECT refs FROM chunks WHERE hash = ?", (
        entries[[e.rel for e in entries].index("a/f00")].chunks.at(0),)).fetchone() == (4,)
    assert cat.conn.execute("SELECT count(*) FROM inline").fetchone() == (31,)
    # the directories' own mtimes moved with their new entries, each once
    top = cat.ino_of(cat.node_at("bulk"))
    assert cat.inode(top).mtime_ns > before
    assert (top, "a") in effects.entries and top in effects.inodes
    # inode numbers stay unique and increasing after the bulk writes
    later = cat.create(ROOT_INO, "later", "file", 0o644, 1000, 1000).inode.ino
    assert later > max(r[0] for r in cat.conn.execute("SELECT ino FROM nodes WHERE ino != ?",
                                                       (later,)))


def test_a_batch_run_again_skips_what_is_there_and_reports_what_differs(cat, tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    Importer(cat, "in", 1000, 1000).apply(read_tree(cat, src))
    (src / "a" / "f04").write_bytes(b"changed since")
    (src / "new").write_bytes(b"new")
    seq = cat.seq
    entries = read_tree(cat, src)  # all read: what was staged for nothing is dropped
    outcome, _ = Importer(cat, "in", 1000, 1000).apply(entries)
    assert (outcome.created, outcome.differing) == (1, ["a/f04"])
    assert outcome.skipped == len(entries) - 2
    assert cat.seq == seq + 1  # the new file alone
    assert not cat.store.staged()


def test_ignore_rules_in_the_source_apply_to_the_entries_after_them(cat, tmp_path):
    src = tmp_path / "src"
    (src / "a" / "sub").mkdir(parents=True)
    (src / "b").mkdir()
    (src / "a" / ".syncdignore").write_bytes(b"*.log\nsub/\n")
    for rel in ("a/x.log", "a/y.txt", "a/sub/z.txt", "b/x.log", "b/.DS_Store"):
        (src / rel).write_bytes(b"-")
    outcome, _ = Importer(cat, "in", 1000, 1000).apply(read_tree(cat, src))
    assert outcome.created == 9
    local = {rel for rel in ("a/x.log", "a/y.txt", "a/sub", "a/sub/z.txt", "b/x.log",
                             "b/.DS_Store", "a/.syncdignore")
             if local_only(cat.node_at(f"in/{rel}")) or cat.is_local_only(
                 cat.node_at(f"in/{rel}"))}
    assert local == {"a/x.log", "a/sub", "a/sub/z.txt", "b/.DS_Store"}


def test_a_receive_only_machine_keeps_an_import_to_itself(cat, tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    cat.create(ROOT_INO, "in", "dir", 0o755, 1000, 1000)
    seq = cat.seq
    cat.mode = RECEIVE_ONLY
    entries = read_tree(cat, src)
    outcome, _ = Importer(cat, "in", 1000, 1000).apply(entries)
    assert outcome.created == len(entries)
    assert cat.seq == seq  # nothing stamped, so nothing sent
    assert all(cat.edited_here(cat.node_at(f"in/{e.rel}")) for e in entries)


def test_inline_bytes_from_another_process_must_be_the_last_chunk(cat, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"the bytes")
    e = read_tree(cat, src)[0]
    sent = {**e.as_dict(), "data": base64.b64encode(b"other bytes").decode()}
    with pytest.raises(ValueError, match="its inline bytes are not its last chunk"):
        Entry.from_dict(sent)
    assert Entry.from_dict(e.as_dict()).data == b"the bytes"
