"""FUSE handlers called directly on a real index (no kernel): lookup counts, purging,
and the boundary's error translation."""

from __future__ import annotations

import errno
import os
import stat
from types import SimpleNamespace

import pyfuse3
import pytest
import trio
import trio.testing
from syncd.index import schema
from syncd.index.merge import Merger
from syncd.index.states import changes_since
from syncd.index.store import ChunkStore
from syncd.mount.operations import PURGE_DELAY, Filesystem

from tests.replicas import Device, T, check_invariants

ROOT = pyfuse3.ROOT_INODE


class Ctx:
    """pyfuse3.RequestContext is read-only; handlers only read these."""

    uid, gid, pid, umask = 1000, 1000, 1, 0o022


@pytest.fixture
def fs(tmp_path):
    ChunkStore.create(tmp_path / "store")
    db = schema.create(tmp_path / "index.db", "cd" * 16, 1000, 1000, 10**18)
    from syncd.index.catalog import Catalog

    store = ChunkStore(tmp_path / "store")
    f = Filesystem(Catalog(db, store), store)
    yield f
    check_invariants(f.catalog)
    db.close()


def run(fn, *args):
    return trio.run(fn, *args)


def fuse_errno(fn, *args) -> int:
    with pytest.raises(pyfuse3.FUSEError) as e:
        run(fn, *args)
    return e.value.errno


def test_unlinked_inode_lives_until_forget_and_release(fs):
    info, attrs = run(fs.create, ROOT, b"f", 0o644, 0o2, Ctx())  # O_RDWR
    ino = attrs.st_ino
    run(fs.write, info.fh, 0, b"data" * 300_000)
    run(fs.flush, info.fh)
    chunks = fs.catalog.chunks(ino).digests()
    assert chunks and all(fs.store.has(c) for c in chunks)
    run(fs.unlink, ROOT, b"f", Ctx())
    assert run(fs.read, info.fh, 0, 4) == b"data"  # the handle still reads
    run(fs.release, info.fh)
    assert fs.catalog.inode(ino).nlink == 0  # the kernel still has a lookup on it
    run(fs.forget, [(ino, 1)])
    assert fuse_errno(fs.getattr, ino, Ctx()) == errno.ENOENT
    assert not any(fs.store.has(c) for c in chunks)  # its content is collected


def test_a_small_file_lives_in_the_index_from_write_to_forget(fs):
    """No chunk file and no working chunk left at any point after the close: the bytes
    are in the index (index/inline.py), read back on a new open, gone with the inode."""
    info, attrs = run(fs.create, ROOT, b"s", 0o644, 0o2, Ctx())  # O_RDWR
    ino = attrs.st_ino
    run(fs.write, info.fh, 0, b"small, ")
    run(fs.write, info.fh, 7, b"in the index")
    run(fs.release, info.fh)
    (chunk,) = fs.catalog.chunks(ino).digests()
    assert fs.catalog.has_chunk(chunk) and not fs.store.has(chunk)
    assert [p for p in fs.store.root.rglob("*")
            if p.is_file() and p.name not in ("reserve", "slots")] == []
    assert fs.store.work_inodes() == []  # no working chunk left in a slot either
    info = run(fs.open, ino, os.O_RDONLY, Ctx())
    assert run(fs.read, info.fh, 0, 100) == b"small, in the index"
    assert fs.content.drafts[ino].inline == {chunk: b"small, in the index"}  # in memory
    run(fs.release, info.fh)
    run(fs.unlink, ROOT, b"s", Ctx())
    run(fs.forget, [(ino, 1)])
    fs.purge()  # small inodes are purged in batches
    run(fs.mkdir, ROOT, b"d", 0o755, Ctx())  # the next transaction takes the row away
    assert not fs.catalog.has_chunk(chunk)


def test_lookup_counts_include_dot_entries(fs):
    d = run(fs.mkdir, ROOT, b"d", 0o755, Ctx())
    run(fs.lookup, d.st_ino, b".", Ctx())
    run(fs.lookup, d.st_ino, b"..", Ctx())
    assert fs.lookups[d.st_ino] == 2 and fs.lookups[ROOT] == 1
    run(fs.rmdir, ROOT, b"d", Ctx())
    run(fs.forget, [(d.st_ino, 2)])
    fs.purge()  # small inodes are purged in batches
    assert fuse_errno(fs.getattr, d.st_ino, Ctx()) == errno.ENOENT


def test_mode_minus_umask_and_caller_owns(fs):
    attrs = run(fs.mkdir, ROOT, b"d", 0o777, Ctx())
    assert attrs.st_mode & 0o7777 == 0o755
    assert (attrs.st_uid, attrs.st_gid) == (1000, 1000)


def test_setgid_directory_passes_its_group(fs):
    d = run(fs.mkdir, ROOT, b"d", 0o2775, Ctx())
    fs.catalog.set_attributes(d.st_ino, gid=4242)
    sub = run(fs.mkdir, d.st_ino, b"sub", 0o755, Ctx())
    assert sub.st_gid == 4242 and sub.st_mode & 0o2000


def test_errors_become_errno_and_unexpected_ones_eio(fs, caplog, expect_log):
    expect_log(r"syncd.mount.operations ERROR read\(999, 0\) failed")
    assert fuse_errno(fs.lookup, ROOT, b"missing", Ctx()) == errno.ENOENT
    assert fuse_errno(fs.lookup, ROOT, b"x" * 256, Ctx()) == errno.ENAMETOOLONG
    assert fuse_errno(fs.mkdir, ROOT, b"\xff", 0o755, Ctx()) == errno.EILSEQ
    assert fuse_errno(fs.rename, ROOT, b"a", ROOT, b"b", pyfuse3.RENAME_EXCHANGE,
                      Ctx()) == errno.EINVAL
    assert fuse_errno(fs.read, 999, 0, 10) == errno.EIO  # an unknown handle: a bug, logged
    assert "read" in caplog.text and "KeyError" in caplog.text


def test_truncate_of_a_closed_file_commits_at_once(fs):
    info, attrs = run(fs.create, ROOT, b"f", 0o644, 0o1, Ctx())
    run(fs.write, info.fh, 0, b"0123456789")
    run(fs.release, info.fh)
    seq = fs.catalog.seq
    a = pyfuse3.EntryAttributes()
    a.st_size = 4
    fields = SimpleNamespace(update_size=True, update_mode=False, update_uid=False,
                             update_gid=False, update_atime=False, update_mtime=False,
                             update_ctime=False)  # pyfuse3's SetattrFields is read-only
    out = run(fs.setattr, attrs.st_ino, a, fields, None, Ctx())
    assert out.st_size == 4 and fs.catalog.inode(attrs.st_ino).size == 4
    assert fs.catalog.seq == seq + 1 and attrs.st_ino not in fs.content.drafts


def test_unlink_during_the_final_commit_of_a_release(fs):
    """release() commits on a worker thread when much is pending; an unlink landing
    meanwhile must not discard the draft under it."""
    info, attrs = run(fs.create, ROOT, b"f", 0o644, 0o1, Ctx())
    half = 1 << 19
    for chunk in range(3):  # each chunk's halves out of order: hashed at commit, on a thread
        run(fs.write, info.fh, chunk * 2 * half + half, os.urandom(half))
        run(fs.write, info.fh, chunk * 2 * half, os.urandom(half))

    async def race():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fs.release, info.fh)
            await trio.testing.wait_all_tasks_blocked()  # release is in its thread hop
            await fs.unlink(ROOT, b"f", Ctx())

    run(race)
    run(fs.forget, [(attrs.st_ino, 1)])
    assert fuse_errno(fs.getattr, attrs.st_ino, Ctx()) == errno.ENOENT
    assert fs.store.dirty_inodes() == []


def test_utime_of_a_directory_is_local(fs):
    d = run(fs.mkdir, ROOT, b"d", 0o755, Ctx())
    seq = fs.catalog.seq
    a = pyfuse3.EntryAttributes()
    a.st_mtime_ns = 123
    fields = SimpleNamespace(update_size=False, update_mode=False, update_uid=False,
                             update_gid=False, update_atime=False, update_mtime=True,
                             update_ctime=False)
    assert run(fs.setattr, d.st_ino, a, fields, None, Ctx()).st_mtime_ns == 123
    assert fs.catalog.seq == seq  # no change to sync: directories have no content version


@pytest.mark.parametrize("kind, bits, rdev", [
    ("fifo", stat.S_IFIFO, 0), ("socket", stat.S_IFSOCK, 0),
    ("chardev", stat.S_IFCHR, os.makedev(1, 3)), ("blockdev", stat.S_IFBLK, os.makedev(259, 70000)),
])
def test_mknod_makes_a_local_special_file(fs, kind, bits, rdev):
    seq = fs.catalog.seq
    attrs = run(fs.mknod, ROOT, b"s", bits | 0o666, rdev, Ctx())
    assert attrs.st_mode == bits | 0o644  # minus the umask
    assert (attrs.st_rdev, attrs.st_size, attrs.st_nlink) == (rdev, 0, 1)
    assert fs.lookups[attrs.st_ino] == 1
    assert fs.catalog.seq == seq  # local: nothing to send
    assert run(fs.getattr, attrs.st_ino, Ctx()).st_rdev == rdev
    assert fuse_errno(fs.mknod, ROOT, b"s", bits | 0o666, rdev, Ctx()) == errno.EEXIST
    run(fs.unlink, ROOT, b"s", Ctx())
    run(fs.forget, [(attrs.st_ino, 1)])
    fs.purge()  # small inodes are purged in batches
    assert fuse_errno(fs.getattr, attrs.st_ino, Ctx()) == errno.ENOENT
    assert fs.catalog.seq == seq


def test_mknod_of_a_regular_file_is_a_synced_file_and_other_types_are_refused(fs):
    seq = fs.catalog.seq
    attrs = run(fs.mknod, ROOT, b"f", stat.S_IFREG | 0o600, 0, Ctx())
    assert attrs.st_mode == stat.S_IFREG | 0o600 and fs.catalog.seq == seq + 1
    # a FIFO ignores the device number it is given, as local file systems do
    assert run(fs.mknod, ROOT, b"p", stat.S_IFIFO | 0o600, 77, Ctx()).st_rdev == 0
    assert fuse_errno(fs.mknod, ROOT, b"d", stat.S_IFDIR | 0o755, 0, Ctx()) == errno.EINVAL


def test_setattr_of_a_file_open_for_writing_folds_into_its_commit(fs):
    """tar and cp -p set times, owner and mode before close: no change of their own."""
    info, attrs = run(fs.create, ROOT, b"f", 0o644, os.O_WRONLY, Ctx())
    run(fs.write, info.fh, 0, b"data")
    seq = fs.catalog.seq
    a = pyfuse3.EntryAttributes()
    a.st_mode, a.st_mtime_ns, a.st_uid, a.st_gid = 0o600, 123, 5, 6
    fields = SimpleNamespace(update_size=False, update_mode=True, update_uid=True,
                             update_gid=True, update_atime=False, update_mtime=True,
                             update_ctime=False)
    out = run(fs.setattr, attrs.st_ino, a, fields, info.fh, Ctx())
    assert (out.st_mode & 0o7777, out.st_mtime_ns, out.st_uid, out.st_gid) == (0o600, 123, 5, 6)
    assert fs.catalog.seq == seq
    run(fs.flush, info.fh)
    run(fs.release, info.fh)
    inode = fs.catalog.inode(attrs.st_ino)
    assert (inode.mode, inode.mtime_ns, inode.uid, inode.gid, inode.size) == (0o600, 123, 5, 6, 4)
    # A new file's first commit is its create's one change (Catalog.create, `later`)
    assert fs.catalog.seq == seq
    assert fs.catalog.conn.execute("SELECT count(*) FROM journal WHERE node = ?",
                                   (fs.catalog.nodes_of(attrs.st_ino)[0],)).fetchone() == (1,)


def test_small_inodes_are_purged_together(fs):
    """Unlinked and forgotten, small files wait for a batch; purge_gathered runs one
    PURGE_DELAY after the first, and purges what is left when it is cancelled."""
    inos = []
    for name in (b"a", b"b", b"c"):
        info, attrs = run(fs.create, ROOT, name, 0o644, os.O_WRONLY, Ctx())
        run(fs.write, info.fh, 0, b"small")
        run(fs.release, info.fh)
        inos.append(attrs.st_ino)

    async def delete(name, ino):
        await fs.unlink(ROOT, name, Ctx())
        await fs.forget([(ino, 1)])

    async def scenario():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fs.purge_gathered)
            await delete(b"a", inos[0])
            await delete(b"b", inos[1])
            assert fs.purgeable == inos[:2]  # not purged yet
            assert fs.catalog.orphan_inodes() == inos[:2]
            await trio.sleep(PURGE_DELAY * 4)
            assert fs.purgeable == [] and fs.catalog.orphan_inodes() == []
            await delete(b"c", inos[2])
            nursery.cancel_scope.cancel()

    chunks = fs.catalog.chunks(inos[0]).digests()
    run(scenario)
    assert fs.purgeable == [] and fs.catalog.orphan_inodes() == []
    assert chunks and not any(fs.store.has(d) for d in chunks)


# -- extended attributes (mount/operations.py; docs/cli.md, "What is shared")


def test_xattr_handlers_store_and_stamp(fs):
    info, attrs = run(fs.create, ROOT, b"f", 0o644, os.O_RDWR, Ctx())
    run(fs.release, info.fh)
    ino = attrs.st_ino
    seq = fs.catalog.seq
    run(fs.setxattr, ino, b"user.tag", b"blue", Ctx())
    run(fs.setxattr, ino, b"user.other", b"", Ctx())
    assert fs.catalog.seq == seq + 2  # one xattr version each, and a journal row
    assert run(fs.getxattr, ino, b"user.tag", Ctx()) == b"blue"
    assert sorted(run(fs.listxattr, ino, Ctx())) == [b"user.other", b"user.tag"]
    run(fs.removexattr, ino, b"user.other", Ctx())
    assert run(fs.listxattr, ino, Ctx()) == [b"user.tag"]
    assert fuse_errno(fs.removexattr, ino, b"user.other", Ctx()) == pyfuse3.ENOATTR
    assert fuse_errno(fs.getxattr, ino, b"user.other", Ctx()) == pyfuse3.ENOATTR
    # a value over Linux's limit (the kernel refuses it first), or too much on one file
    assert fuse_errno(fs.setxattr, ino, b"user.big", b"x" * (64 * 1024 + 1),
                      Ctx()) == errno.E2BIG
    run(fs.setxattr, ino, b"user.a", b"x" * (64 * 1024), Ctx())
    assert fuse_errno(fs.setxattr, ino, b"user.b", b"x" * (64 * 1024), Ctx()) == errno.E2BIG
    assert fuse_errno(fs.setxattr, ino, b"security.selinux", b"x", Ctx()) == errno.EOPNOTSUPP
    assert fuse_errno(fs.getxattr, ino, b"security.capability", Ctx()) == pyfuse3.ENOATTR
    assert fuse_errno(fs.setxattr, ino, b"user.\xff", b"x", Ctx()) == errno.EILSEQ
    for name in (b"user.syncd.state", b"user.syncd.holders"):
        assert fuse_errno(fs.setxattr, ino, name, b"x", Ctx()) == errno.EPERM
        assert fuse_errno(fs.removexattr, ino, name, Ctx()) == errno.EPERM
    assert b"user.syncd.state" not in run(fs.listxattr, ino, Ctx())
    assert fuse_errno(fs.setxattr, 999, b"user.tag", b"x", Ctx()) == errno.ENOENT


def test_sync_state_of_each_kind_of_inode(fs, tmp_path):
    """user.syncd.state and user.syncd.holders from the index: a file made here, a
    special file, a file a peer announced whose content is not here yet, and a conflict
    copy (made by merging a real peer index's states)."""
    fs.name = "here"
    info, attrs = run(fs.create, ROOT, b"mine", 0o644, os.O_RDWR, Ctx())
    run(fs.write, info.fh, 0, b"mine")
    run(fs.release, info.fh)
    mine = attrs.st_ino
    fifo = run(fs.mknod, ROOT, b"pipe", stat.S_IFIFO | 0o644, 0, Ctx()).st_ino

    def state(ino: int) -> bytes:
        return run(fs.getxattr, ino, b"user.syncd.state", Ctx())

    def holders(ino: int) -> bytes:
        return run(fs.getxattr, ino, b"user.syncd.holders", Ctx())

    assert (state(mine), holders(mine)) == (b"local", b"here")
    assert state(fifo) == b"local-only"
    assert fuse_errno(fs.getxattr, fifo, b"user.syncd.holders", Ctx()) == pyfuse3.ENOATTR
    assert state(ROOT) == b"local"
    peer = Device(tmp_path / "peer", "ab" * 16, T)
    fs.catalog.conn.execute("INSERT INTO peers (name, url, device) VALUES (?, ?, ?)",
                            ("peer", "http://127.0.0.1:1", peer.id))
    peer.write("/theirs", b"t" * 100_000, T)  # more than a state carries
    peer.write("/doc", b"base", T)
    states, _ = changes_since(peer.cat.conn, 0, 100, data_budget=1 << 20)
    Merger(fs.catalog).apply(states, peer.id)
    theirs = fs.catalog.lookup(ROOT, "theirs").inode.ino
    assert (state(theirs), holders(theirs)) == (b"missing", b"peer")
    (digest,) = fs.catalog.missing_chunks(theirs)  # as a fetch installs it
    fs.catalog.store_new_chunks({digest: b"t" * 100_000})
    fs.catalog.mark_local([theirs])
    assert (state(theirs), holders(theirs)) == (b"local", b"here,peer")
    # concurrent edits of doc: the peer's later one keeps the name, ours is a copy
    doc = fs.catalog.lookup(ROOT, "doc").inode.ino
    info = run(fs.open, doc, os.O_WRONLY | os.O_TRUNC, Ctx())
    run(fs.write, info.fh, 0, b"ours")
    run(fs.release, info.fh)
    peer.write("/doc", b"theirs", T + 10**18)
    states, _ = changes_since(peer.cat.conn, 0, 100, data_budget=1 << 20)
    Merger(fs.catalog).apply(states, peer.id)
    (copy,) = [e for e in fs.catalog.children(ROOT, 0) if "sync-conflict" in e.name]
    assert (state(copy.inode.ino), holders(copy.inode.ino)) == (b"conflict", b"here")
    doc = fs.catalog.lookup(ROOT, "doc").inode.ino
    assert (state(doc), holders(doc)) == (b"local", b"here,peer")
    peer.db.close()
