"""Old versions (index/versions.py): kept when content is replaced or deleted, here or by a
peer, holding their chunks; expired by age, by size and under a full disk; restored."""

from __future__ import annotations

import os
import time

import pytest
from syncd.index.chunklist import CHUNK
from syncd.index.versions import (
    RestoreError,
    check_restorable,
    expire,
    give_up,
    keep_versions,
    pick,
    restore,
    usage,
    versions_of,
)

from tests.replicas import ROOT, Device, T, check_invariants, send

A, B = "aa" * 16, "bb" * 16


def purge(d: Device, ino: int) -> None:
    """What the mount does once the kernel forgets an inode without names."""
    d.cat.retire(d.cat.purge_inodes([ino]))


def stored_chunks(d: Device) -> set[str]:
    root = d.cat.store.root / "chunks"
    return {name for sub in os.listdir(root) for name in os.listdir(root / sub)}


def test_each_overwrite_keeps_the_version_it_replaced(dev):
    for i, data in enumerate((b"one", b"two" * 10, b"three" * 100)):
        dev.write("f", data, T + i * 10**9)
    got = versions_of(dev.cat, "f")
    assert [(v.size, v.mtime_ns, v.device, v.path) for v in got] == [
        (3, T, A, "f"), (30, T + 10**9, A, "f")]
    assert dev.data("f") == b"three" * 100
    assert pick(got, None) == got[-1] and pick(got, T // 10**9) == got[0]
    assert pick(got, T // 10**9 - 1) is None


def test_a_kept_version_holds_its_chunks_until_it_expires(dev):
    big = os.urandom(CHUNK + 10)
    dev.write("f", big[:CHUNK], T)  # one chunk in the store
    dev.write("f", b"small now", T + 10**9)
    assert len(stored_chunks(dev)) == 1  # the replaced chunk stays: a version holds it
    (v,) = versions_of(dev.cat, "f")
    assert check_restorable(dev.cat, v) == []
    assert expire(dev.cat, 86400, 1 << 40) == 0  # young and small: kept
    assert expire(dev.cat, 86400, 1 << 40, now=time.time() + 2 * 86400) == 1
    assert versions_of(dev.cat, "f") == [] and stored_chunks(dev) == set()


def test_delete_keeps_the_file_and_restore_brings_it_back_at_its_path(dev):
    dev.mkdir("d")
    dev.mkdir("d/e")
    dev.write("d/e/f", b"precious", T)
    ino = dev.ino("d/e/f")
    dev.cat.unlink(dev.ino("d/e"), "f")
    purge(dev, ino)
    dev.cat.rmdir(dev.ino("d"), "e")
    dev.cat.rmdir(ROOT, "d")
    (v,) = versions_of(dev.cat, "d/e/f")
    assert (v.path, v.size, v.mtime_ns) == ("d/e/f", 8, T)
    before = time.time_ns()
    effects = restore(dev.cat, v, None, 1000, 1000)
    assert dev.data("d/e/f") == b"precious"  # its directories made again
    assert dev.cat.inode(dev.ino("d/e/f")).mtime_ns >= before  # a new version: now
    assert (ROOT, "d") in effects.entries


def test_restore_replaces_the_current_content_which_is_kept_in_turn(dev):
    dev.write("f", b"old", T)
    dev.write("f", b"new", T + 10**9)
    node = dev.cat.node_at("f")
    seq = dev.cat.seq
    old_ino = dev.ino("f")
    effects = restore(dev.cat, versions_of(dev.cat, "f")[0], None, 1000, 1000)
    assert dev.data("f") == b"old" and dev.cat.node_at("f") == node
    assert dev.cat.seq == seq + 1  # one local content change, sent like any other
    assert effects.orphans == {old_ino}  # open handles keep the bytes they had
    purge(dev, old_ino)
    assert [v.size for v in versions_of(dev.cat, "f")] == [3, 3]
    assert {pick(versions_of(dev.cat, "f"), None).mtime_ns} == {T + 10**9}


def test_restore_to_a_new_path_and_refusals_change_nothing(dev):
    dev.write("f", b"old", T)
    dev.write("f", b"new", T + 10**9)
    dev.mkdir("d")
    (v,) = versions_of(dev.cat, "f")
    seq = dev.cat.seq
    for to, words in (("f", "exists"), ("d", "exists"), ("f/x", "not a directory")):
        with pytest.raises(RestoreError, match=words):
            restore(dev.cat, v, to, 1000, 1000)
    assert dev.cat.seq == seq and dev.data("f") == b"new"
    restore(dev.cat, v, "copy", 1000, 1000)
    assert dev.data("copy") == b"old" and dev.data("f") == b"new"


def test_restore_over_a_directory_is_refused(dev):
    dev.write("x", b"was a file", T)
    ino = dev.ino("x")
    dev.cat.unlink(ROOT, "x")
    purge(dev, ino)
    dev.mkdir("x")
    with pytest.raises(RestoreError, match="directory"):
        restore(dev.cat, versions_of(dev.cat, "x")[0], None, 1000, 1000)


def test_versions_beyond_the_size_limit_go_oldest_first(dev):
    for i, n in enumerate((1000, 2000, 3000, 10)):
        dev.write("f", os.urandom(n), T + i * 10**9)
    assert usage(dev.cat) == (3, 6000)
    assert expire(dev.cat, 86400, 5000) == 1
    assert [v.size for v in versions_of(dev.cat, "f")] == [2000, 3000]
    assert expire(dev.cat, 86400, 2999) == 2
    assert usage(dev.cat) == (0, 0)


def test_a_full_disk_gives_up_versions_first_oldest_first(dev):
    for i in range(3):
        dev.write("f", bytes([i + 1]) * CHUNK, T + i * 10**9)
    assert len(stored_chunks(dev)) == 3
    assert give_up(dev.cat, at_least=1)  # the oldest only
    assert [v.mtime_ns for v in versions_of(dev.cat, "f")] == [T + 10**9]
    assert len(stored_chunks(dev)) == 2
    assert dev.cat.store.make_room()  # what ENOSPC does: the rest go
    assert versions_of(dev.cat, "f") == [] and len(stored_chunks(dev)) == 1
    assert not dev.cat.store.make_room()  # nothing left to give up
    assert dev.data("f") == bytes([3]) * CHUNK


def test_a_version_a_peer_replaced_or_deleted_is_kept_here(tmp_path):
    a, b = Device(tmp_path / "a", A, T), Device(tmp_path / "b", B, T)
    keep_versions(b.cat)
    a.write("f", b"from a, first", T)
    a.write("g", b"to be deleted", T)
    send(a, b)
    a.write("f", b"from a, second", T + 10**9)
    a.cat.unlink(ROOT, "g")
    send(a, b)
    for ino in b.cat.orphan_inodes():  # f's first version and g
        purge(b, ino)
    (v,) = versions_of(b.cat, "f")
    assert (v.device, v.mtime_ns, v.size) == (A, T, 13)
    (g,) = versions_of(b.cat, "g")
    restore(b.cat, v, None, 1000, 1000)
    restore(b.cat, g, None, 1000, 1000)
    assert b.data("f") == b"from a, first" and b.data("g") == b"to be deleted"
    send(b, a)  # the restores travel as changes made on b, and win there
    assert a.data("f") == b"from a, first" and a.data("g") == b"to be deleted"
    for d in (a, b):
        check_invariants(d.cat)
        d.db.close()


def test_content_never_here_is_not_kept(dev):
    dev.write("f", b"here", T)
    dev.cat.conn.execute("UPDATE inodes SET local = 0 WHERE ino = ?", (dev.ino("f"),))
    dev.write("f", b"replaced", T + 10**9)
    assert versions_of(dev.cat, "f") == []


def test_without_a_serving_process_nothing_is_kept(tmp_path):
    d = Device(tmp_path, A, T)
    d.write("f", b"one", T)
    d.write("f", b"two", T + 10**9)
    assert versions_of(d.cat, "f") == [] and usage(d.cat) == (0, 0)
    check_invariants(d.cat)
    d.db.close()


def test_a_renamed_file_lists_the_versions_it_had_elsewhere(dev):
    dev.write("f", b"one", T)
    dev.write("f", b"two", T + 10**9)
    dev.cat.rename(ROOT, "f", ROOT, "g")
    assert [v.path for v in versions_of(dev.cat, "g")] == ["f"]
