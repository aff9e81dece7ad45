"""Special files (FIFOs, sockets, device nodes) in the index: nodes like any other here,
local to the device that made them (never stamped, sent or counted as pending), and what
happens to them when peers' changes arrive: a synced node takes their name, and a
directory a peer deletes takes them with it."""

from __future__ import annotations

import os

from syncd.index.catalog import local_only
from syncd.index.names import conflict_name
from syncd.index.peers import add_peer, list_peers, pending_for, save_peer
from syncd.index.schema import LOCAL_ONLY_KINDS
from syncd.index.states import changes_since

from tests.replicas import ROOT, T, apply, check_invariants, converge, send

NULL = os.makedev(1, 3)


def mknod(dev, path: str, kind: str = "fifo", rdev: int = 0, mtime_ns: int = T):
    parent, _, name = path.rpartition("/")
    return dev.cat.create(dev.ino(parent), name, kind, 0o644, 1000, 1000, mtime_ns=mtime_ns,
                          rdev=rdev)


def kinds(dev) -> dict[str, str]:
    return {path: kind for path, (kind, _, _) in dev.tree().items()}


def sent_ids(dev) -> set[str]:
    return {s["id"] for s in changes_since(dev.cat.conn, 0, 10_000)[0]}


def test_special_files_are_nodes_that_are_never_stamped(devs):
    a, _, _ = devs
    a.mkdir("d")
    seq = a.cat.seq
    made = [mknod(a, f"d/{kind}", kind, NULL if kind.endswith("dev") else 0)
            for kind in LOCAL_ONLY_KINDS]
    assert a.cat.seq == seq  # no stamp, no journal row, no wake-up of the peer loops
    assert all(local_only(e.node) for e in made)
    assert not sent_ids(a) & {e.node for e in made}
    d = a.ino("d")
    assert {e.name: (e.inode.kind, e.inode.rdev) for e in a.cat.children(d, 0)} == {
        "fifo": ("fifo", 0), "socket": ("socket", 0), "chardev": ("chardev", NULL),
        "blockdev": ("blockdev", NULL)}
    check_invariants(a.cat)


def test_link_rename_chmod_utime_and_unlink_send_nothing(devs):
    a, _, _ = devs
    a.mkdir("d")
    fifo = mknod(a, "p")
    seq = a.cat.seq
    link = a.cat.link(fifo.inode.ino, a.ino("d"), "q")
    assert local_only(link.node) and link.node != fifo.node
    assert a.cat.inode(fifo.inode.ino).nlink == 2
    a.cat.rename(ROOT, "p", a.ino("d"), "p")
    a.cat.set_attributes(fifo.inode.ino, mode=0o600)
    a.cat.set_attributes(fifo.inode.ino, mtime_ns=T + 5)
    a.cat.set_attributes(fifo.inode.ino, uid=7, gid=8)
    assert a.cat.seq == seq
    assert (a.cat.inode(fifo.inode.ino).mode, a.cat.inode(fifo.inode.ino).uid) == (0o600, 7)
    a.cat.unlink(a.ino("d"), "p")
    ino = a.cat.unlink(a.ino("d"), "q")
    assert a.cat.seq == seq
    # no tombstone: no peer ever heard of it
    assert a.cat.conn.execute("SELECT count(*) FROM nodes WHERE id IN (?, ?)",
                              (fifo.node, link.node)).fetchone() == (0,)
    assert a.cat.purge_inodes([ino]) == []
    check_invariants(a.cat)


def test_pending_counts_and_the_wire_leave_special_files_out(devs):
    a, b, _ = devs
    add_peer(a.db, "beta", "http://127.0.0.1:1")
    save_peer(a.db, "beta", device=b.id, cursor=a.cat.seq)
    mknod(a, "p")
    mknod(a, "sock", "socket")
    a.write("f", b"synced", T)
    (beta,) = list_peers(a.db)
    assert pending_for(a.db, beta)[:2] == (1, 6)  # the file alone
    converge(a, b)
    assert kinds(b) == {"/f": "file"}
    assert kinds(a) == {"/f": "file", "/p": "fifo", "/sock": "socket"}


def test_a_special_file_that_replaces_a_file_sends_its_delete(devs):
    a, b, _ = devs
    a.write("f", b"old", T)
    converge(a, b)
    mknod(a, "p")
    a.cat.rename(ROOT, "p", ROOT, "f")
    converge(a, b)
    assert kinds(a) == {"/f": "fifo"}
    assert kinds(b) == {}


def test_a_peers_node_takes_the_name_of_a_special_file(devs):
    a, b, _ = devs
    b.mkdir("d")
    converge(a, b)
    fifo = mknod(a, "d/x")
    sock = mknod(a, "d/y", "socket")
    b.write("d/x", b"from beta", T + 1)
    b.mkdir("d/y")
    effects = apply(b, a, changes_since(b.cat.conn, 0, 100)[0])
    x_aside = conflict_name("x", a.id, T)
    assert kinds(a) == {"/d": "dir", "/d/x": "file", "/d/y": "dir",
                        f"/d/{x_aside}": "fifo", f"/d/{conflict_name('y', a.id, T)}": "socket"}
    assert a.data("d/x") == b"from beta"
    assert a.cat.lookup(a.ino("d"), x_aside).node == fifo.node  # the same node, moved aside
    assert {(a.ino("d"), "x"), (a.ino("d"), x_aside)} <= effects.entries  # for the kernel
    # Only here: nothing goes back to beta, whose names stay as they are.
    converge(a, b)
    assert kinds(b) == {"/d": "dir", "/d/x": "file", "/d/y": "dir"}
    assert a.cat.lookup(a.ino("d"), conflict_name("y", a.id, T)).node == sock.node


def test_a_rename_by_a_peer_onto_a_special_files_name(devs):
    a, b, _ = devs
    a.write("f", b"data", T)
    converge(a, b)
    first = conflict_name("g", a.id, T)
    mknod(a, "g")
    mknod(a, first)  # the first name aside is taken too
    b.cat.rename(ROOT, "f", ROOT, "g")
    converge(a, b)
    second = conflict_name("g", a.id, T, lambda n: n == first)
    assert kinds(a) == {"/g": "file", f"/{first}": "fifo", f"/{second}": "fifo"}
    assert a.data("g") == b"data"
    assert kinds(b) == {"/g": "file"}


def test_a_directory_a_peer_deletes_goes_with_the_special_files_here(devs):
    a, b, _ = devs
    a.mkdir("d")
    a.mkdir("d/sub")
    converge(a, b)
    fifo = mknod(a, "d/sub/p")
    dev = mknod(a, "d/null", "chardev", NULL)
    b.cat.rmdir(b.ino("d"), "sub")
    b.cat.rmdir(ROOT, "d")
    send(b, a)
    assert kinds(a) == {}
    for e in (fifo, dev):
        assert a.cat.nodes_of(e.inode.ino) == []
    # and the directory stays deleted: nothing brings it back on beta
    converge(a, b)
    assert kinds(b) == {}


def test_the_effects_of_a_peers_delete_name_the_special_files_it_took(devs):
    a, b, _ = devs
    a.mkdir("d")
    converge(a, b)
    fifo = mknod(a, "d/p")
    d = a.ino("d")
    b.cat.rmdir(ROOT, "d")
    effects = apply(b, a, changes_since(b.cat.conn, 0, 100)[0])
    assert fifo.inode.ino in effects.orphans
    assert (d, "p") in effects.entries
    check_invariants(a.cat)


def test_a_directory_kept_for_a_new_child_keeps_its_special_files(devs):
    a, b, _ = devs
    a.mkdir("d")
    converge(a, b)
    mknod(a, "d/p")
    a.write("d/new", b"unseen by the deleter", T)
    b.cat.rmdir(ROOT, "d")
    converge(a, b)
    assert kinds(a) == {"/d": "dir", "/d/new": "file", "/d/p": "fifo"}
    assert kinds(b) == {"/d": "dir", "/d/new": "file"}


def test_directories_that_merge_take_the_special_files_along(devs):
    a, b, _ = devs
    a.mkdir("d")
    mknod(a, "d/p")
    mknod(a, "d/q", "socket")
    b.mkdir("d")
    b.write("d/p", b"beta's", T)
    converge(a, b)
    assert kinds(a) == {"/d": "dir", "/d/p": "file", "/d/q": "socket",
                        f"/d/{conflict_name('p', a.id, T)}": "fifo"}
    assert kinds(b) == {"/d": "dir", "/d/p": "file"}
