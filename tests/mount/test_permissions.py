"""Permissions are enforced by the kernel (default_permissions), for other users too
(--allow-other). Runs commands as an unprivileged user with setpriv."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import needs_fuse
from tests.helpers import Mount, force_cleanup

pytestmark = [
    needs_fuse,
    pytest.mark.skipif(os.getuid() != 0 or shutil.which("setpriv") is None,
                       reason="needs root and setpriv to act as another user"),
]

USER = 65534  # nobody


def as_user(*cmd: str, uid: int = USER, umask: str = "022") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sh", "-c",
         f"umask {umask}; " + " ".join(cmd)],
        capture_output=True, text=True, cwd="/")


@pytest.fixture
def shared(home):
    # pytest's tmp_path is private to root: the other user needs a path it can traverse
    outer = Path(tempfile.mkdtemp(prefix="syncd-perm-"))
    outer.chmod(0o755)
    m = Mount(home, outer / "mnt")
    try:
        m.start("--allow-other")
        yield m
        m.stop()
    finally:
        force_cleanup(home, m.path)
        shutil.rmtree(outer)


def test_other_user_is_held_to_modes(shared):
    m = shared.path
    (m / "private").write_text("secret")
    os.chmod(m / "private", 0o600)
    (m / "public").write_text("hello")
    os.chmod(m / "public", 0o644)
    assert as_user("cat", str(m / "public")).stdout == "hello"
    assert as_user("cat", str(m / "private")).returncode != 0
    assert "Permission denied" in as_user("sh", "-c", f"'echo x >> {m}/public'").stderr
    assert as_user("touch", str(m / "new")).returncode != 0  # root's 0755 directory
    assert as_user("chmod", "777", str(m / "public")).returncode != 0
    assert (m / "public").read_text() == "hello"


def test_other_user_owns_what_it_creates(shared):
    m = shared.path
    (m / "box").mkdir()
    os.chmod(m / "box", 0o1777)  # sticky, like /tmp
    done = as_user(f"echo mine > {m}/box/f && mkdir {m}/box/d", umask="027")
    assert done.returncode == 0, done.stderr
    st = (m / "box" / "f").stat()
    assert (st.st_uid, st.st_gid) == (USER, USER)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert stat.S_IMODE((m / "box" / "d").stat().st_mode) == 0o750
    (m / "box" / "roots").write_text("root's")
    # the sticky bit: others may not remove what they do not own
    assert as_user("rm", "-f", str(m / "box" / "roots")).returncode != 0
    assert (m / "box" / "roots").exists()
    assert as_user("rm", str(m / "box" / "f")).returncode == 0


def test_only_a_user_with_cap_mknod_makes_device_nodes(shared):
    # The kernel checks CAP_MKNOD before the request reaches the mount, as for any file
    # system; FIFOs and sockets need no privilege.
    m = shared.path
    (m / "box").mkdir()
    os.chmod(m / "box", 0o1777)
    for kind in ("c", "b"):
        done = as_user("mknod", f"{m}/box/dev", kind, "1", "3")
        assert done.returncode != 0 and "Operation not permitted" in done.stderr
    assert not os.path.lexists(m / "box" / "dev")
    bind = f"import socket; socket.socket(socket.AF_UNIX).bind('{m}/box/sock')"
    done = as_user(f"mkfifo {m}/box/fifo && python3 -c \"{bind}\"", umask="077")
    assert done.returncode == 0, done.stderr
    for name, is_kind, mode in (("fifo", stat.S_ISFIFO, 0o600), ("sock", stat.S_ISSOCK, 0o700)):
        st = os.lstat(m / "box" / name)
        assert is_kind(st.st_mode) and (st.st_uid, st.st_gid) == (USER, USER)
        assert stat.S_IMODE(st.st_mode) == mode  # minus the umask (077)
