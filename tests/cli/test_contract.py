"""The command line contract (docs/cli.md): exit codes, one-line errors, status, and the
lifecycle of a mount (background, foreground, crash, fusermount3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import needs_fuse
from tests.helpers import (
    SYNCD,
    Mount,
    alive,
    assert_clean_error,
    force_cleanup,
    free_port,
    fuse_mounts,
    lock_pid,
    served_log,
    status,
    syncd,
    wait_for,
)


def test_no_home(tmp_path):
    done = syncd(tmp_path / "nowhere", "status", check=False)
    assert_clean_error(done, 3, "syncd init")
    assert not (tmp_path / "nowhere").exists()


def test_home_from_environment(tmp_path):
    env = dict(os.environ, SYNCD_HOME=str(tmp_path / "h"))
    subprocess.run([*SYNCD, "init", "--name", "envy"], env=env, check=True,
                   capture_output=True)
    out = subprocess.run([*SYNCD, "status", "--json"], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert json.loads(out)["device"]["name"] == "envy"


def test_version(tmp_path):
    from importlib.metadata import version

    done = subprocess.run([*SYNCD, "--version"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"syncd {version('syncd')}\n"


def test_a_reader_that_leaves_early_is_no_error(home):
    """`syncd status | head -1`: the pipe closes under the printing, which is no error."""
    syncd(home, "peer", "add", "beta", f"127.0.0.1:{free_port()}")
    r, w = os.pipe()
    os.close(r)  # nobody reads: the first write breaks the pipe
    done = subprocess.run([*SYNCD, "--home", str(home), "status"], stdout=w,
                          stderr=subprocess.PIPE, text=True)
    os.close(w)
    assert (done.returncode, done.stderr) == (0, "")


def test_init_refuses_an_existing_home(home):
    before = (home / "index.db").stat().st_mtime_ns
    assert_clean_error(syncd(home, "init", check=False), 4, "already")
    assert (home / "index.db").stat().st_mtime_ns == before


def test_usage_errors_exit_2(home, tmp_path):
    assert syncd(home, "frobnicate", check=False).returncode == 2
    assert syncd(home, "init", "--listen", "nonsense", check=False).returncode == 2


def test_status_json_shape(home):
    s = status(home)
    assert s["schema_version"] == 1 and isinstance(s["schema_version"], int)
    assert len(s["device"]["id"]) == 32 and s["device"]["name"] == "test"
    assert s["device"]["seq"] == 0 and s["mounted_at"] is None and s["peers"] == []
    assert set(s["files"]) >= {"total", "local", "missing", "pinned", "conflicts", "bytes",
                               "bytes_local"}
    human = syncd(home, "status").stdout
    assert "test" in human and "mounted" in human


@needs_fuse
def test_status_counts_files_while_mounted_and_after(mount):
    m = mount.path
    (m / "d").mkdir()
    (m / "d" / "a").write_bytes(b"x" * 1000)
    (m / "b").write_bytes(b"y" * 24)
    os.symlink("b", m / "link")
    s = status(mount.home)
    assert s["mounted_at"] == str(m) and s["pid"] == mount.pid
    assert s["files"]["total"] == 2 and s["files"]["local"] == 2
    assert s["files"]["bytes"] == s["files"]["bytes_local"] == 1024
    assert s["device"]["seq"] == 4  # mkdir, 2 × a create committed with its content, symlink
    mount.stop()
    s = status(mount.home)
    assert s["mounted_at"] is None and s["files"]["total"] == 2
    mount.start()  # the fixture unmounts


@needs_fuse
def test_mount_errors(home, tmp_path):
    assert_clean_error(syncd(home, "mount", str(tmp_path / "missing"), check=False), 2,
                       "does not exist")
    (tmp_path / "file").write_text("")
    assert_clean_error(syncd(home, "mount", str(tmp_path / "file"), check=False), 2,
                       "not a directory")
    assert_clean_error(syncd(home, "umount", check=False), 4, "not mounted")


@needs_fuse
def test_second_mount_of_a_home_and_busy_mount_point(mount, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    assert_clean_error(syncd(mount.home, "mount", str(other), check=False), 4,
                       "already mounted")
    second = tmp_path / "home2"
    syncd(second, "init", "--listen", f"127.0.0.1:{free_port()}")
    assert_clean_error(syncd(second, "mount", str(mount.path), check=False), 1, "busy")


@needs_fuse
def test_umount_of_a_busy_mount_fails_cleanly(mount):
    keep = subprocess.Popen(["sleep", "60"], cwd=mount.path)
    try:
        assert_clean_error(syncd(mount.home, "umount", check=False), 1, "busy")
        assert str(mount.path) in fuse_mounts()
    finally:
        keep.kill()
        keep.wait()


@needs_fuse
def test_missing_fuse_tools_are_named(home, tmp_path):
    (tmp_path / "mnt").mkdir()
    done = subprocess.run([*SYNCD, "--home", str(home), "mount", str(tmp_path / "mnt")],
                          env=dict(os.environ, PATH="/nonexistent"), capture_output=True,
                          text=True)
    assert_clean_error(done, 1, "fuse3")
    # /dev/fuse hidden in a private mount namespace
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c",
         f"mount -t tmpfs none /dev && exec {sys.executable} -m syncd --home {home} "
         f"mount {tmp_path / 'mnt'}"], capture_output=True, text=True)
    assert_clean_error(done, 1, "/dev/fuse")


@needs_fuse
def test_fusermount_unmount_is_clean(mount):
    (mount.path / "f").write_bytes(b"kept")
    pid = mount.pid
    subprocess.run(["fusermount3", "-u", str(mount.path)], check=True)
    wait_for(lambda: not alive(pid), 30, "the mount process to exit")
    assert status(mount.home)["mounted_at"] is None
    mount.start()
    assert (mount.path / "f").read_bytes() == b"kept"


@needs_fuse
def test_foreground_unmounts_on_sigterm_and_sigint(home, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = served_log(tmp_path / "foreground.log")  # its stderr, checked at the end
    for sig in (signal.SIGTERM, signal.SIGINT):
        with open(log.path, "ab") as stderr:
            proc = subprocess.Popen([*SYNCD, "--home", str(home), "mount", str(mnt),
                                     "--foreground"], stderr=stderr)
        log.serving()
        try:
            wait_for(lambda: fuse_mounts().get(str(mnt)) == "fuse.syncd", 30, "the mount")
            (mnt / f"f{sig}").write_bytes(b"x")
            proc.send_signal(sig)
            assert proc.wait(30) == 0, log.text()
            assert str(mnt) not in fuse_mounts()
        finally:
            proc.kill()
            force_cleanup(home, mnt)
    m = Mount(home, mnt).start()
    try:
        assert sorted(os.listdir(mnt)) == sorted(f"f{s}" for s in (15, 2))
        m.stop()
    finally:
        m.kill()


@needs_fuse
def test_dead_mount_after_a_crash_is_reported_and_cleared(mount):
    (mount.path / "f").write_bytes(b"before the crash")
    pid = mount.pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 10, "the mount process to die")
    with pytest.raises(OSError):
        os.stat(mount.path)  # ENOTCONN: the dead mount is still in the table
    assert status(mount.home)["mounted_at"] is None  # from the lock, not a stale flag
    mount.start()  # clears the dead mount first
    assert (mount.path / "f").read_bytes() == b"before the crash"
    assert lock_pid(mount.home) != pid


@needs_fuse
def test_a_serving_process_that_dies_is_reported(home, tmp_path):
    import sqlite3

    served_log(home / "mount.log").expect_log(r"^syncd: error: .* upgrade syncd$")
    conn = sqlite3.connect(home / "index.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    (tmp_path / "mnt").mkdir()
    done = syncd(home, "mount", str(tmp_path / "mnt"), check=False, timeout=30)
    assert_clean_error(done, 1, "upgrade syncd")
    assert str(tmp_path / "mnt") not in fuse_mounts()
    assert lock_pid(home) is None or not alive(lock_pid(home))
