"""`syncd import`: an existing tree into the share without the mount, idle or mounted; run
again, it skips what is there; killed or out of space, it leaves whole files or none."""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pytest

from tests.conftest import needs_fuse
from tests.helpers import (
    SYNCD,
    Mount,
    assert_clean_error,
    force_cleanup,
    free_port,
    status,
    syncd,
    wait_for,
)

pytestmark = needs_fuse

MIB = 1 << 20


def make_tree(root, files: int = 20):
    """A source tree: nested files of several sizes, modes and mtimes, a symlink, a hole."""
    (root / "a" / "b").mkdir(parents=True)
    for i in range(files):
        (root / "a" / f"f{i}").write_bytes(b"%d\n" % i)
    (root / "a" / "b" / "big").write_bytes(os.urandom(3 * MIB + 7))
    (root / "a" / "secret").write_bytes(b"s")
    os.chmod(root / "a" / "secret", 0o600)
    os.utime(root / "a" / "secret", ns=(0, 1_500_000_000 * 10**9))
    os.symlink("a/secret", root / "link")
    with open(root / "sparse", "wb") as f:
        f.truncate(5 * MIB)
        f.seek(2 * MIB)
        f.write(b"x")
    os.mkfifo(root / "fifo")  # cannot be imported: reported, skipped
    open(os.path.join(os.fsencode(root), b"latin-\xe9"), "wb").close()  # no UTF-8 name: same


def same_tree(src, dst) -> None:
    names = sorted(os.path.relpath(os.path.join(d, n), src)
                   for d, dirs, files in os.walk(src) for n in dirs + files)
    names = [n for n in names if n not in ("fifo", os.fsdecode(b"latin-\xe9"))]  # skipped
    assert sorted(os.path.relpath(os.path.join(d, n), dst)
                  for d, dirs, files in os.walk(dst) for n in dirs + files) == names
    for name in names:
        a, b = os.lstat(src / name), os.lstat(dst / name)
        assert a.st_mode == b.st_mode, name
        if os.path.islink(src / name):
            assert os.readlink(src / name) == os.readlink(dst / name)
        elif os.path.isfile(src / name):
            assert (a.st_mtime_ns, a.st_size) == (b.st_mtime_ns, b.st_size), name
            assert (src / name).read_bytes() == (dst / name).read_bytes(), name


@pytest.fixture
def share(tmp_path):
    home = tmp_path / "home"
    syncd(home, "init", "--listen", f"127.0.0.1:{free_port()}")
    m = Mount(home, tmp_path / "mnt")
    try:
        yield m
    finally:
        force_cleanup(home, m.path)


def test_an_idle_home_imports_a_tree_and_a_run_again_skips_it(share, tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    done = syncd(share.home, "import", str(src), check=False)
    assert done.returncode == 1  # the FIFO was skipped
    assert "/src: 26 entries imported" in done.stdout
    assert "skipped fifo: a special file" in done.stderr
    assert "a name that is not UTF-8" in done.stderr
    again = syncd(share.home, "import", str(src), check=False)
    assert "0 entries imported (0 bytes), 26 already there" in again.stdout
    share.start()
    same_tree(src, share.path / "src")
    assert status(share.home)["files"]["total"] == 23  # files: 20 small, big, secret, sparse
    store = share.home / "store"
    assert not list((store / "import").iterdir())
    # chunk files: big's three whole MiB and sparse's one; the short ones are inline
    assert sum(1 for p in (store / "chunks").rglob("*") if p.is_file()) == 4
    db = sqlite3.connect(f"file:{share.home / 'index.db'}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM inline").fetchone() == (22,)
    finally:
        db.close()
    share.stop()


def test_a_mounted_share_shows_an_import_at_once_and_refuses_a_source_inside_it(share,
                                                                              tmp_path):
    share.start()
    assert not (share.path / "in").exists()  # the kernel may remember that
    src = tmp_path / "src"
    make_tree(src, files=3000)  # more than one batch
    syncd(share.home, "import", str(src), "--into", "in/here", check=False)
    same_tree(src, share.path / "in" / "here")
    assert_clean_error(syncd(share.home, "import", str(share.path / "in"), check=False), 2,
                       "is inside the mount of this share")
    (share.path / "file").write_bytes(b"")
    assert_clean_error(syncd(share.home, "import", str(src), "--into", "file/x", check=False),
                       2, "'file' is not a directory")
    share.stop()


def test_an_import_killed_after_its_transaction_is_whole_at_the_next_mount(share, tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    killed = subprocess.run(
        [*SYNCD, "--home", str(share.home), "import", str(src)],
        env={**os.environ, "SYNCD_FAULT": "import:after-index"}, capture_output=True)
    assert killed.returncode == -9
    assert list((share.home / "store" / "import").iterdir())  # staged, not moved yet
    share.start()
    same_tree(src, share.path / "src")
    assert not list((share.home / "store" / "import").iterdir())
    share.stop()


def test_an_import_whose_serving_process_dies_after_a_commit_is_whole_at_the_next_mount(
        share, tmp_path):
    """The serving process commits a batch and dies before moving its staged chunks into
    the store: the command cannot know whether the batch committed, so it leaves them to
    the recovery at the next start, which moves those the index names."""
    src = tmp_path / "src"
    make_tree(src)
    share.start(env={"SYNCD_FAULT": "import:after-index"})
    pid = share.pid
    failed = syncd(share.home, "import", str(src), check=False)
    assert failed.returncode == 5, failed.stderr  # unreachable
    assert "hung up without answering 'import'" in failed.stderr
    assert "stays in the store for the next start of this home" in failed.stderr
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10, "the mount to die")
    force_cleanup(share.home, share.path)
    assert list((share.home / "store" / "import").iterdir())  # staged, not moved yet
    share.start()
    same_tree(src, share.path / "src")
    assert not list((share.home / "store" / "import").iterdir())
    share.stop()


def test_a_chunk_two_batches_share_is_whole_though_one_is_read_while_the_other_applies(
        share, tmp_path):
    """The next batch is read while one is applied; a chunk that both stage is staged for
    the second once the first's apply has moved it into the store."""
    src = tmp_path / "src"
    (src / "m").mkdir(parents=True)
    same = os.urandom(MIB)
    (src / "big").write_bytes(same + b"first batch")
    for i in range(2100):  # more than a batch
        (src / "m" / f"f{i:04d}").write_bytes(b"%d\n" % i)
    (src / "m" / "zz").write_bytes(same + b"second batch")
    done = syncd(share.home, "import", str(src))
    assert "/src: 2103 entries imported" in done.stdout
    assert not list((share.home / "store" / "import").iterdir())
    share.start()
    same_tree(src, share.path / "src")
    share.stop()


def test_an_interrupted_import_leaves_whole_files_and_a_run_again_imports_the_rest(
        share, tmp_path):
    """Ctrl-C while a batch is applied and the next one read (sent by the command itself
    once the first batch's transaction is in, so the test does not race a fast import):
    nothing staged stays, every file there is whole, and a run again skips those and
    imports the rest."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(4):
        (src / f"big{i}").write_bytes(os.urandom(MIB + i))
    files = 5000  # three batches, each with chunks to stage
    for i in range(files):
        (src / "d" / f"f{i:05d}").write_bytes(os.urandom(MIB) if i % 500 == 7 else b"%d\n" % i)
    proc = subprocess.run([*SYNCD, "--home", str(share.home), "import", str(src)],
                          env={**os.environ, "SYNCD_FAULT": "import:after-index@INT"},
                          capture_output=True, text=True, timeout=120)
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 1, out + err
    assert "interrupted: " in err and "run again to import the rest" in err
    assert not list((share.home / "store" / "import").iterdir())
    share.start()
    here = os.listdir(share.path / "src" / "d")
    assert 0 < len(here) < files
    for name in here:
        assert (share.path / "src" / "d" / name).read_bytes() == (src / "d" / name).read_bytes()
    share.stop()
    again = syncd(share.home, "import", str(src))
    assert f"{len(here) + 5} already there" in again.stdout  # and the four big files, d
    share.start()
    assert len(os.listdir(share.path / "src" / "d")) == files
    for name in [f"big{i}" for i in range(4)] + [f"d/f{i:05d}" for i in range(7, files, 50)]:
        assert (share.path / "src" / name).read_bytes() == (src / name).read_bytes(), name
    assert not list((share.home / "store" / "import").iterdir())
    share.stop()


@pytest.mark.skipif(os.getuid() != 0, reason="mounts a tmpfs")
def test_an_import_that_fills_the_disk_says_so_and_leaves_whole_files(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], check=True)
    home = disk / "home"
    m = Mount(home, tmp_path / "mnt")
    try:
        syncd(home, "init", "--listen", f"127.0.0.1:{free_port()}")
        src = tmp_path / "src"
        src.mkdir()
        for i in range(40):
            (src / f"f{i:02d}").write_bytes(os.urandom(MIB))
        done = syncd(home, "import", str(src), check=False)
        assert_clean_error(done, 1, "no space left on the home's disk")
        assert not list((home / "store" / "import").iterdir())
        m.start()  # what is there is whole (here: nothing, the files were one batch)
        here = sorted(os.listdir(m.path / "src")) if (m.path / "src").exists() else []
        assert len(here) < 40
        for name in here:
            assert (m.path / "src" / name).read_bytes() == (src / name).read_bytes()
        m.stop()
    finally:
        force_cleanup(home, m.path)
        try:
            m.served_log.check()  # now: the log is on the tmpfs
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=False)
