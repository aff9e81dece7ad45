"""POSIX behaviour on a real mount, through the kernel."""

from __future__ import annotations

import errno
import os
import random
import stat
import subprocess
import threading

import pytest
from syncd.index.chunklist import MAX_FILE_SIZE

from tests.conftest import needs_fuse
from tests.helpers import Mount

pytestmark = needs_fuse


def err(fn, *args) -> int:
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


def test_create_write_read_and_attributes(mount):
    p = mount.path / "f.txt"
    p.write_bytes(b"hello")
    st = p.stat()
    assert st.st_size == 5 and stat.S_ISREG(st.st_mode) and st.st_nlink == 1
    assert p.read_bytes() == b"hello"
    assert st.st_blksize == 128 * 1024
    assert sorted(os.listdir(mount.path)) == ["f.txt"]


def test_new_entries_take_umask_and_caller(mount):
    old = os.umask(0o027)
    try:
        fd = os.open(mount.path / "f", os.O_CREAT | os.O_WRONLY, 0o666)
        os.close(fd)
        os.mkdir(mount.path / "d", 0o777)
    finally:
        os.umask(old)
    assert stat.S_IMODE((mount.path / "f").stat().st_mode) == 0o640
    assert stat.S_IMODE((mount.path / "d").stat().st_mode) == 0o750
    assert (mount.path / "f").stat().st_uid == os.getuid()


def test_chmod_chown_utime(mount):
    p = mount.path / "f"
    p.write_bytes(b"x")
    os.chmod(p, 0o600)
    os.chown(p, 1234, 5678)
    os.utime(p, ns=(1_000_000_000, 2_000_000_123))
    st = p.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert st.st_mtime_ns == 2_000_000_123


def test_truncate_grow_and_shrink(mount):
    p = mount.path / "f"
    data = os.urandom(3 * 1024 * 1024 + 17)
    p.write_bytes(data)
    os.truncate(p, 1024 * 1024 + 5)
    assert p.read_bytes() == data[: 1024 * 1024 + 5]
    os.truncate(p, 2 * 1024 * 1024 + 3)
    assert p.read_bytes() == data[: 1024 * 1024 + 5] + bytes(1024 * 1024 - 2)
    os.truncate(p, 0)
    assert p.read_bytes() == b""


def test_random_writes_match_a_model(mount):
    """Writes at random offsets (across chunk boundaries, past the end) through several
    reopenings give exactly the bytes a bytearray model gives."""
    rng = random.Random(7)
    p = mount.path / "f"
    model = bytearray()
    p.write_bytes(b"")
    for _round in range(4):
        with open(p, "r+b") as f:
            for _ in range(30):
                off = rng.randrange(0, 3 * 1024 * 1024)
                data = rng.randbytes(rng.choice([1, 100, 4096, 200_000, 1_100_000]))
                f.seek(off)
                f.write(data)
                if off > len(model):
                    model.extend(bytes(off - len(model)))
                model[off : off + len(data)] = data
                if rng.random() < 0.2:
                    cut = rng.randrange(0, len(model) + 1)
                    f.truncate(cut)
                    del model[cut:]
            f.flush()
            f.seek(0)
            assert f.read() == bytes(model)  # read back through the draft
        assert p.read_bytes() == bytes(model)  # and committed


def test_sparse_write_past_end(mount):
    p = mount.path / "sparse"
    with open(p, "wb") as f:
        f.seek(5 * 1024 * 1024 + 7)
        f.write(b"x")
    data = p.read_bytes()
    assert len(data) == 5 * 1024 * 1024 + 8
    assert data[:-1] == bytes(len(data) - 1) and data[-1:] == b"x"


def test_holes_cost_nothing_and_past_the_largest_size_is_efbig(mount):
    """A truncate to the largest size and a byte written a tebibyte in are as quick as on
    a small file (a hole is one entry, not a chunk per MiB: a commit walking them would
    hang the mount for hours); one byte more is EFBIG. Only written bytes reach the store."""
    p = mount.path / "huge"
    p.write_bytes(b"head")
    os.truncate(p, MAX_FILE_SIZE)
    assert os.stat(p).st_size == MAX_FILE_SIZE
    assert err(os.truncate, p, MAX_FILE_SIZE + 1) == errno.EFBIG
    fd = os.open(p, os.O_WRONLY)
    try:
        assert err(os.pwrite, fd, b"x", MAX_FILE_SIZE) == errno.EFBIG
    finally:
        os.close(fd)
    with open(p, "rb") as f:
        f.seek(MAX_FILE_SIZE - 2)
        assert f.read() == b"\0\0"
    t = mount.path / "tib"
    with open(t, "wb") as f:
        f.seek(1 << 40)
        f.write(b"x")
    with open(t, "rb") as f:
        f.seek((1 << 40) - 3)
        assert f.read() == b"\0\0\0x"
        f.seek(0)
        assert f.read(8) == bytes(8)
    assert os.stat(t).st_size == (1 << 40) + 1
    chunks = [c for c in (mount.home / "store" / "chunks").rglob("*") if c.is_file()]
    # "head" + zeros; "x", a short chunk, is held in the index (index/inline.py)
    assert [c.stat().st_size for c in chunks] == [1 << 20]


def test_append_trunc_excl(mount):
    p = mount.path / "f"
    p.write_bytes(b"abc")
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"def")
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b"ghi")  # O_APPEND ignores the offset
    os.close(fd)
    assert p.read_bytes() == b"abcdefghi"
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert p.read_bytes() == b""
    assert err(os.open, p, os.O_CREAT | os.O_EXCL | os.O_WRONLY) == errno.EEXIST
    p.write_bytes(b"again")
    os.close(os.open(p, os.O_RDONLY | os.O_TRUNC))  # Linux truncates here too
    assert p.read_bytes() == b""


def test_several_handles_see_each_others_writes(mount):
    p = mount.path / "f"
    a = os.open(p, os.O_CREAT | os.O_RDWR)
    b = os.open(p, os.O_RDWR)
    try:
        os.pwrite(a, b"from a", 0)
        assert os.pread(b, 6, 0) == b"from a"
        os.pwrite(b, b"B", 0)
        os.fsync(b)
        assert os.pread(a, 6, 0) == b"Brom a"
    finally:
        os.close(a)
        os.close(b)
    assert p.read_bytes() == b"Brom a"


def test_unlink_open_file_stays_readable(mount):
    p = mount.path / "f"
    data = os.urandom(2 * 1024 * 1024)
    p.write_bytes(data)
    with open(p, "rb") as f:
        os.unlink(p)
        assert not p.exists()
        assert f.read() == data
        assert os.fstat(f.fileno()).st_nlink == 0


def test_unlink_open_file_being_written(mount):
    p = mount.path / "f"
    with open(p, "w+b") as f:
        f.write(b"draft")
        os.unlink(p)
        f.write(b" more")
        f.seek(0)
        assert f.read() == b"draft more"
    assert os.listdir(mount.path) == []


def test_mkdir_rmdir(mount):
    d = mount.path / "d"
    d.mkdir()
    (d / "f").write_bytes(b"")
    assert err(os.rmdir, d) == errno.ENOTEMPTY
    assert err(os.mkdir, d) == errno.EEXIST
    assert err(os.rmdir, d / "f") == errno.ENOTDIR
    assert err(os.unlink, d) == errno.EISDIR
    os.unlink(d / "f")
    os.rmdir(d)
    assert not d.exists()


def test_rename_files_and_directories(mount):
    m = mount.path
    (m / "a").mkdir()
    (m / "b").mkdir()
    (m / "a" / "f").write_bytes(b"one")
    os.rename(m / "a" / "f", m / "b" / "g")
    assert (m / "b" / "g").read_bytes() == b"one" and not (m / "a" / "f").exists()
    (m / "b" / "h").write_bytes(b"two")
    ino = (m / "b" / "h").stat().st_ino
    os.rename(m / "b" / "h", m / "b" / "g")  # over an existing file
    assert (m / "b" / "g").read_bytes() == b"two"
    assert (m / "b" / "g").stat().st_ino == ino
    assert sorted(os.listdir(m / "b")) == ["g"]
    os.rename(m / "b", m / "a" / "b2")  # a directory, with its content
    assert (m / "a" / "b2" / "g").read_bytes() == b"two"
    (m / "e").mkdir()
    os.rename(m / "e", m / "a" / "b3")  # over nothing
    (m / "a" / "empty").mkdir()
    os.rename(m / "a" / "b3", m / "a" / "empty")  # over an empty directory
    assert not (m / "a" / "b3").exists()


def test_rename_errors(mount):
    m = mount.path
    (m / "d").mkdir()
    (m / "d" / "sub").mkdir()
    (m / "full").mkdir()
    (m / "full" / "x").write_bytes(b"")
    (m / "f").write_bytes(b"")
    assert err(os.rename, m / "d", m / "d" / "sub" / "inside") == errno.EINVAL
    assert err(os.rename, m / "f", m / "d") == errno.EISDIR
    assert err(os.rename, m / "d", m / "f") == errno.ENOTDIR
    assert err(os.rename, m / "d", m / "full") == errno.ENOTEMPTY
    assert err(os.rename, m / "missing", m / "x") == errno.ENOENT


def test_rename_noreplace(mount):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    m = mount.path
    (m / "a").write_bytes(b"a")
    (m / "b").write_bytes(b"b")
    at_fdcwd, noreplace = -100, 1
    rc = libc.renameat2(at_fdcwd, bytes(m / "a"), at_fdcwd, bytes(m / "b"), noreplace)
    assert rc == -1 and ctypes.get_errno() == errno.EEXIST
    assert (m / "b").read_bytes() == b"b"


def test_symlink_and_hard_link(mount):
    m = mount.path
    (m / "f").write_bytes(b"data")
    os.symlink("f", m / "s")
    assert os.readlink(m / "s") == "f"
    assert (m / "s").read_bytes() == b"data"
    assert stat.S_ISLNK(os.lstat(m / "s").st_mode)
    os.link(m / "f", m / "h")
    assert (m / "f").stat().st_nlink == 2
    assert (m / "h").stat().st_ino == (m / "f").stat().st_ino
    with open(m / "h", "ab") as f:
        f.write(b"+")
    assert (m / "f").read_bytes() == b"data+"
    os.chmod(m / "h", 0o600)
    assert stat.S_IMODE((m / "f").stat().st_mode) == 0o600
    os.unlink(m / "f")
    assert (m / "h").stat().st_nlink == 1
    assert (m / "h").read_bytes() == b"data+"


def test_name_length(mount):
    ok = "n" * 255
    (mount.path / ok).write_bytes(b"")
    assert os.listdir(mount.path) == [ok]
    assert err(open, mount.path / ("n" * 256), "w") == errno.ENAMETOOLONG


def test_statfs(mount):
    st = os.statvfs(mount.path)
    assert st.f_namemax == 255 and st.f_blocks > 0


def test_readdir_many_entries(home, tmp_path):
    """100,000 entries in one directory, listed through the kernel. They are made through
    the index (one transaction) because 100,000 creates through FUSE take minutes here;
    creating through the mount is tested everywhere else."""
    from syncd.index import schema
    from syncd.index.catalog import Catalog
    from syncd.index.store import ChunkStore

    n = 100_000
    db = schema.open_db(home / "index.db")
    catalog = Catalog(db, ChunkStore(home / "store"))
    with db.atomic():
        d = catalog.create(1, "many", "dir", 0o755, 0, 0)
        for i in range(n):
            catalog.create(d.inode.ino, f"f{i}", "file", 0o644, 0, 0)
    db.close()
    m = Mount(home, tmp_path / "mnt").start()
    try:
        names = os.listdir(m.path / "many")
        assert len(names) == n and set(names) == {f"f{i}" for i in range(n)}
        assert (m.path / "many" / "f99999").stat().st_size == 0
        m.stop()
    finally:
        m.kill()


def test_readdir_returns_each_entry_once_while_changing(mount):
    d = mount.path / "d"
    d.mkdir()
    keep = {f"keep{i}" for i in range(3000)}
    for name in keep:
        (d / name).write_bytes(b"")
    stop = threading.Event()

    def churn():
        i = 0
        while not stop.is_set():
            (d / f"tmp{i}").write_bytes(b"")
            if i >= 5:
                os.unlink(d / f"tmp{i - 5}")
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(5):
            seen = [e.name for e in os.scandir(d)]
            kept = [n for n in seen if n.startswith("keep")]
            assert len(kept) == len(set(kept)) == len(keep)
            assert len(seen) == len(set(seen))
    finally:
        stop.set()
        t.join()


def test_sqlite_database_on_the_mount(mount):
    import sqlite3

    db = sqlite3.connect(mount.path / "app.db")
    db.execute("CREATE TABLE t (x)")
    with db:
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5000)])
    db.close()
    db = sqlite3.connect(mount.path / "app.db")
    assert db.execute("SELECT count(*), sum(x) FROM t").fetchone() == (5000, sum(range(5000)))
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


def test_tar_and_git_roundtrip(mount, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(50):
        (src / f"file{i}.txt").write_text(f"content {i}\n" * i)
    os.symlink("file1.txt", src / "link")
    os.utime(src / "file3.txt", (1_600_000_000, 1_600_000_000))
    os.chmod(src / "file4.txt", 0o751)
    subprocess.run(["tar", "-cf", tmp_path / "a.tar", "-C", src, "."], check=True)
    subprocess.run(["tar", "-xpf", tmp_path / "a.tar", "-C", mount.path], check=True)
    diff = subprocess.run(["diff", "-r", "--no-dereference", src, mount.path],
                          capture_output=True, text=True)
    assert diff.returncode == 0, diff.stdout
    assert (mount.path / "file3.txt").stat().st_mtime == 1_600_000_000
    assert stat.S_IMODE((mount.path / "file4.txt").stat().st_mode) == 0o751
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(mount.path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    fsck = subprocess.run([*git, "fsck", "--strict"], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr


def test_rsync_into_the_mount(mount, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(20):
        (src / "sub" / f"f{i}").write_bytes(os.urandom(1000 * i))
    subprocess.run(["rsync", "-a", f"{src}/", f"{mount.path}/"], check=True)
    # again, after an edit: rsync writes a temporary file and renames it over the target
    (src / "sub" / "f3").write_bytes(b"changed")
    subprocess.run(["rsync", "-a", f"{src}/", f"{mount.path}/"], check=True)
    diff = subprocess.run(["diff", "-r", src, mount.path], capture_output=True, text=True)
    assert diff.returncode == 0, diff.stdout
