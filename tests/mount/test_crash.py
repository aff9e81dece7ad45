"""Safe across restarts and crashes (DESIGN rule 1), on real mounts."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap

from syncd.index.chunklist import CHUNK, digest_of, file_hash

from tests.conftest import needs_fuse
from tests.helpers import alive, force_cleanup, status, wait_for

pytestmark = needs_fuse


def snapshot(root) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    body = f.read()
            else:
                body = None
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns,
                                             st.st_nlink if not stat.S_ISDIR(st.st_mode)
                                             else None, body)
    return out


def index_hashes(home) -> dict:
    db = sqlite3.connect(f"file:{home / 'index.db'}?mode=ro", uri=True)
    try:
        return dict(db.execute(
            "SELECT n.id, i.hash FROM nodes n JOIN inodes i ON i.ino = n.ino "
            "WHERE n.deleted = 0"))
    finally:
        db.close()


def expected_hash(data: bytes) -> str:
    return file_hash(b"".join(digest_of(data[i : i + CHUNK])
                              for i in range(0, len(data), CHUNK)))


def test_unmount_and_mount_again_keeps_everything(mount):
    m = mount.path
    (m / "src" / "deep").mkdir(parents=True)
    (m / "src" / "a.bin").write_bytes(os.urandom(3 * CHUNK + 11))
    (m / "src" / "deep" / "b.txt").write_text("hello\n")
    os.chmod(m / "src" / "deep" / "b.txt", 0o751)
    os.utime(m / "src" / "a.bin", ns=(1_500_000_000_000_000_000, 1_600_000_000_123_456_789))
    os.symlink("deep/b.txt", m / "src" / "link")
    os.link(m / "src" / "a.bin", m / "src" / "hard")
    os.truncate(m / "src" / "deep" / "b.txt", 3)
    before, hashes = snapshot(m), index_hashes(mount.home)
    mount.stop()
    mount.start()
    assert snapshot(m) == before
    assert index_hashes(mount.home) == hashes


WRITER = textwrap.dedent("""
    import sys
    mnt, log = sys.argv[1], open(sys.argv[2], "a", buffering=1)
    def content(i):
        return b"file %d\\n" % i * (i * 37 % 5000 + 1)
    with open(mnt + "/open.dat", "wb") as f:
        f.write(b"v1" * 1000)
    log.write("committed\\n")
    w = open(mnt + "/open.dat", "r+b", buffering=0)
    i = 0
    while True:
        w.write(b"new bytes %08d\\n" % i)
        with open(mnt + "/f%d" % i, "wb") as f:
            f.write(content(i))
        log.write("closed %d\\n" % i)
        i += 1
""")


def writer_content(i: int) -> bytes:
    return b"file %d\n" % i * (i * 37 % 5000 + 1)


def test_kill_9_in_a_burst_of_writes(mount, tmp_path):
    mount.expect_log(r"WARNING recovered uncommitted writes to inode")  # the open file
    log = tmp_path / "writer.log"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(mount.path), str(log)],
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: log.exists() and log.read_text().count("closed") >= 200, 60,
                 "200 files written")
        pid = mount.pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid), 10, "the mount process to die")
        writer.wait(10)  # its next request fails with ENOTCONN
    finally:
        writer.kill()
        writer.wait()
        force_cleanup(mount.home, mount.path)
    closed = [int(line.split()[1]) for line in log.read_text().splitlines()
              if line.startswith("closed")]

    db = sqlite3.connect(mount.home / "index.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()

    mount.start()
    m = mount.path
    hashes = {}
    db = sqlite3.connect(f"file:{mount.home / 'index.db'}?mode=ro", uri=True)
    for name, h in db.execute("SELECT n.name, i.hash FROM nodes n JOIN inodes i "
                              "ON i.ino = n.ino WHERE n.deleted = 0"):
        hashes[name] = h
    db.close()
    for i in closed:
        data = (m / f"f{i}").read_bytes()
        assert data == writer_content(i), f"f{i} lost its content"
        assert hashes[f"f{i}"] == expected_hash(data)
    # the file open for writing keeps its last committed version ...
    assert (m / "open.dat").read_bytes() == b"v1" * 1000
    # ... and what was written since sits beside it
    recovered = [n for n in os.listdir(m) if n.startswith("open.sync-recovered-")]
    assert len(recovered) == 1 and recovered[0].endswith(".dat"), recovered
    data = (m / recovered[0]).read_bytes()
    assert data.startswith(b"new bytes 00000000\nnew bytes 00000001\n")
    assert status(mount.home)["dirty"] == 0


def test_kill_9_keeps_a_file_closed_unwritten_and_the_bytes_of_one_never_closed(mount):
    """A new file's create commits with its first close (Catalog.create, `later`): a
    file closed with nothing written is there after a crash; one written but never
    closed is gone, as an unsynced create on ext4 may be, and its bytes are kept."""
    mount.expect_log(r"WARNING recovered uncommitted writes to inode \d+ as inode-\d+")
    m = mount.path
    (m / "touched").touch()
    fd = os.open(m / "open.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"written, never closed")
        pid = mount.pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid), 10, "the mount process to die")
    finally:
        with contextlib.suppress(OSError):  # ENOTCONN: the mount is gone
            os.close(fd)
        force_cleanup(mount.home, mount.path)
    mount.start()
    assert (m / "touched").read_bytes() == b""
    assert not (m / "open.bin").exists()
    [recovered] = [n for n in os.listdir(m) if ".sync-recovered-" in n]
    assert recovered.startswith("inode-"), recovered
    assert (m / recovered).read_bytes() == b"written, never closed"
    assert status(mount.home)["dirty"] == 0
