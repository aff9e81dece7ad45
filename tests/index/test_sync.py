"""Replication between real indexes, without a network: DESIGN rule 3, case by case.

Each test makes two or three devices, changes them apart, exchanges node states both ways
(as the daemon does) and checks that every device ends with the same tree.
"""

from __future__ import annotations

import itertools

import pytest
from syncd.index import schema
from syncd.index.catalog import Catalog
from syncd.index.merge import Merger
from syncd.index.names import conflict_name
from syncd.index.rules import CC, EQ, GT, LT, compare
from syncd.index.states import changes_since
from syncd.index.store import ChunkStore

from tests.index.test_catalog import check_invariants

ROOT = schema.ROOT_INO


class Device:
    def __init__(self, path, device_id: str, t0: int):
        ChunkStore.create(path / "store")
        self.db = schema.create(path / "index.db", device_id, 1000, 1000, t0)
        self.cat = Catalog(self.db, ChunkStore(path / "store"))
        self.merger = Merger(self.cat)
        self.id = device_id
        self.sent: dict[str, int] = {}  # peer device -> our seq it has applied

    def ino(self, path: str) -> int:
        ino = ROOT
        for part in filter(None, path.split("/")):
            e = self.cat.lookup(ino, part)
            assert e is not None, f"{path} missing on {self.id[:4]}"
            ino = e.inode.ino
        return ino

    def write(self, path: str, data: bytes, mtime_ns: int) -> None:
        parent, _, name = path.rpartition("/")
        e = self.cat.lookup(self.ino(parent), name)
        ino = e.inode.ino if e else self.cat.create(
            self.ino(parent), name, "file", 0o644, 1000, 1000).inode.ino
        digest = self.cat.store.put(data)
        self.cat.commit_content(ino, [digest] if data else [], len(data), mtime_ns, None, True)

    def mkdir(self, path: str) -> None:
        parent, _, name = path.rpartition("/")
        self.cat.create(self.ino(parent), name, "dir", 0o755, 1000, 1000)

    def tree(self) -> dict[str, tuple]:
        out = {}

        def walk(ino: int, prefix: str) -> None:
            for e in self.cat.children(ino, 0):
                path = f"{prefix}/{e.name}"
                out[path] = (e.inode.kind, e.inode.hash, e.inode.mode)
                if e.inode.kind == "dir":
                    walk(e.inode.ino, path)

        walk(ROOT, "")
        return out

    def data(self, path: str) -> bytes:
        ino = self.ino(path)
        return b"".join(self.cat.store.read(d, 0, 1 << 20) for d in self.cat.chunks(ino))


def send(src: Device, dst: Device) -> int:
    """What a peer loop does: push src's changes since dst's cursor, chunks included (as
    a fetch would bring them), and move the cursor once applied."""
    applied = 0
    while True:
        states, last = changes_since(src.cat.conn, src.sent.get(dst.id, 0), 100, dst.id)
        if last == src.sent.get(dst.id, 0):
            return applied
        apply(src, dst, states)
        applied += len(states)
        src.sent[dst.id] = last


def apply(src: Device, dst: Device, states: list[dict]):
    for s in states:
        for h in s["content"]["chunks"]:
            digest = bytes.fromhex(h)
            if not dst.cat.store.has(digest) and src.cat.store.has(digest):
                dst.cat.store.put(src.cat.store.read(digest, 0, 1 << 20))
    return dst.merger.apply(states, src.id)


def converge(*devices: Device) -> None:
    for _ in range(6):
        moved = sum(send(a, b) for a, b in itertools.permutations(devices, 2))
        if not moved:
            break
    trees = [d.tree() for d in devices]
    for d, t in zip(devices[1:], trees[1:], strict=True):
        assert t == trees[0], f"{d.id[:4]} differs"
    for d in devices:
        check_invariants(d.cat)


@pytest.fixture
def devs(tmp_path):
    made = []
    for i, dev in enumerate(("a" * 32, "b" * 32, "c" * 32)):
        (tmp_path / dev[:1]).mkdir()
        made.append(Device(tmp_path / dev[:1], dev, 1_700_000_000 * 10**9 + i))
    yield made
    for d in made:
        d.db.close()


T = 1_800_000_000 * 10**9


def test_compare_version_vectors():
    assert compare({"a": 1}, {"a": 1}) == EQ
    assert compare({"a": 2}, {"a": 1}) == GT
    assert compare({}, {"a": 1}) == LT
    assert compare({"a": 1}, {"b": 1}) == CC


def test_every_kind_of_change_propagates(devs):
    a, b, _ = devs
    a.mkdir("/docs")
    a.write("/docs/x.txt", b"hello", T)
    a.cat.create(a.ino("/docs"), "link", "symlink", 0o777, 0, 0, target=b"x.txt")
    converge(a, b)
    assert b.data("/docs/x.txt") == b"hello"
    assert b.cat.inode(b.ino("/docs/link")).target == b"x.txt"
    a.write("/docs/x.txt", b"hello world", T + 1)
    a.cat.set_mode(a.ino("/docs/x.txt"), 0o600)
    a.cat.rename(a.ino("/docs"), "x.txt", ROOT, "y.txt")
    a.cat.unlink(a.ino("/docs"), "link")
    converge(a, b)
    assert b.data("/y.txt") == b"hello world"
    assert b.cat.inode(b.ino("/y.txt")).mode == 0o600
    a.cat.rmdir(ROOT, "docs")
    converge(a, b)
    assert set(b.tree()) == {"/y.txt"}


def test_changes_reach_a_third_device_through_a_second(devs):
    a, b, c = devs
    a.write("/f", b"1", T)
    send(a, b)
    send(b, c)
    assert c.data("/f") == b"1"
    assert send(b, a) == 0  # a made it: never sent back


def test_concurrent_edits_make_one_conflict_copy_everywhere(devs):
    a, b, c = devs
    a.write("/f.txt", b"base", T)
    converge(a, b, c)
    a.write("/f.txt", b"from a", T + 10)
    b.write("/f.txt", b"from b", T + 20)  # later: b's keeps the name
    converge(a, b, c)
    assert a.data("/f.txt") == b"from b"
    copies = [p for p in a.tree() if "sync-conflict" in p]
    assert copies == ["/" + conflict_name("f.txt", a.id, T + 10)]
    assert a.data(copies[0]) == b"from a"


def test_equal_content_is_no_conflict(devs):
    a, b, _ = devs
    a.write("/f", b"base", T)
    converge(a, b)
    a.write("/f", b"same", T + 5)
    b.write("/f", b"same", T + 5)
    converge(a, b)
    assert set(a.tree()) == {"/f"}


def test_edit_against_delete_keeps_the_edit(devs):
    a, b, _ = devs
    a.mkdir("/d")
    a.write("/d/f", b"v1", T)
    converge(a, b)
    a.cat.unlink(a.ino("/d"), "f")
    a.cat.rmdir(ROOT, "d")
    b.write("/d/f", b"v2", T + 1)
    converge(a, b)
    assert a.data("/d/f") == b"v2"


def test_child_created_in_a_deleted_directory_brings_it_back(devs):
    a, b, _ = devs
    a.mkdir("/d")
    converge(a, b)
    a.cat.rmdir(ROOT, "d")
    b.write("/d/new", b"n", T)
    converge(a, b)
    assert a.data("/d/new") == b"n"


def test_delete_seen_everywhere_stays_deleted(devs):
    a, b, c = devs
    a.write("/f", b"x", T)
    converge(a, b, c)
    b.cat.unlink(ROOT, "f")
    converge(a, b, c)
    assert a.tree() == {}


def test_same_new_name_on_two_devices(devs):
    a, b, _ = devs
    a.write("/n.txt", b"a's", T)
    b.write("/n.txt", b"b's", T + 1)
    converge(a, b)
    assert a.data("/n.txt") == b"b's"
    (copy,) = [p for p in a.tree() if "sync-conflict" in p]
    assert a.data(copy) == b"a's"


def test_two_new_directories_on_one_name_merge(devs):
    a, b, _ = devs
    a.mkdir("/data")
    a.write("/data/from-a", b"1", T)
    b.mkdir("/data")
    b.write("/data/from-b", b"2", T)
    converge(a, b)
    assert set(a.tree()) == {"/data", "/data/from-a", "/data/from-b"}


def test_concurrent_renames_and_chmod_merge(devs):
    a, b, c = devs
    a.write("/f", b"x", T)
    converge(a, b, c)
    a.cat.rename(ROOT, "f", ROOT, "by-a")
    b.cat.set_mode(b.ino("/f"), 0o600)
    c.write("/f", b"edited", T + 1)
    converge(a, b, c)
    assert a.tree() == {"/by-a": ("file", a.cat.inode(a.ino("/by-a")).hash, 0o600)}
    assert a.data("/by-a") == b"edited"


def test_states_whose_parent_comes_later_wait(devs):
    a, b, _ = devs
    a.mkdir("/d")
    a.write("/d/f", b"x", T)
    a.cat.rename(ROOT, "d", ROOT, "e")  # d now has a later seq than its child
    states, _ = changes_since(a.cat.conn, 0)
    child = [s for s in states if s["name"] == "f"]
    b.merger.apply(child, a.id)
    assert b.tree() == {}
    b.merger.apply([s for s in states if s["name"] != "f"], a.id)
    assert set(b.tree()) == {"/e", "/e/f"}


def test_a_file_written_while_a_peer_replaced_it_is_a_concurrent_version(devs):
    a, b, _ = devs
    a.write("/f", b"base", T)
    converge(a, b)
    b.write("/f", b"b's version", T + 1)
    effects = apply(b, a, changes_since(b.cat.conn, 0)[0])  # /f is open for writing on a
    ((ino, (node, vv)),) = effects.detached.items()
    digest = a.cat.store.put(b"a's later write")
    a.merger.commit_detached(node, vv, [digest], 15, T + 2)
    converge(a, b)
    assert a.data("/f") == b"a's later write"
    (copy,) = [p for p in a.tree() if "sync-conflict" in p]
    assert a.data(copy) == b"b's version"


def test_a_file_written_while_a_peer_deleted_it_comes_back(devs):
    a, b, _ = devs
    a.write("/f", b"base", T)
    converge(a, b)
    b.cat.unlink(ROOT, "f")
    effects = apply(b, a, changes_since(b.cat.conn, 0)[0])
    ((ino, (node, vv)),) = effects.detached.items()
    digest = a.cat.store.put(b"kept")
    a.merger.commit_detached(node, vv, [digest], 4, T + 2)
    converge(a, b)
    assert b.data("/f") == b"kept"


def test_moves_that_would_make_a_cycle_leave_one_directory_at_the_root(devs):
    a, b, c = devs
    a.mkdir("/x")
    a.mkdir("/y")
    a.write("/x/in-x", b"1", T)
    a.write("/y/in-y", b"2", T)
    converge(a, b, c)
    a.cat.rename(ROOT, "y", a.ino("/x"), "y")  # y into x
    b.cat.rename(ROOT, "x", b.ino("/y"), "x")  # x into y, concurrently
    converge(a, b, c)
    files = sorted(p for p in a.tree() if p.endswith(("in-x", "in-y")))
    assert len(files) == 2  # both still reachable from the root
    assert any("sync-conflict" in p for p in a.tree())
