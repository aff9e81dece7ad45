"""Running the real `syncd` command and real mounts from tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SYNCD = [sys.executable, "-m", "syncd"]


def syncd(home: Path, *args: str, check: bool = True, timeout: float = 90,
          **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([*SYNCD, "--home", str(home), *args], capture_output=True,
                          text=True, timeout=timeout, **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"syncd {' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout}{done.stderr}")
    return done


def assert_clean_error(done: subprocess.CompletedProcess, code: int, words: str) -> None:
    """The command failed with `code` and one line `syncd: error: ...` containing `words`."""
    assert done.returncode == code, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("syncd: error: "), done.stderr
    assert words in lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(home: Path) -> dict:
    return json.loads(syncd(home, "status", "--json").stdout)


def fuse_mounts() -> dict[str, str]:
    """Mount point -> type for FUSE mounts of this namespace."""
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype.startswith("fuse"):
                out[fields[4]] = fstype
    return out


def lock_pid(home: Path) -> int | None:
    try:
        return json.loads((home / "lock").read_text() or "{}").get("pid")
    except FileNotFoundError:
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(predicate, timeout: float = 30, what: str = "condition"):
    """Poll until predicate() is truthy; fail clearly on timeout (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def force_cleanup(home: Path, mountpoint: Path) -> None:
    """Teardown that works whatever state the mount is in: kill its process (blocked
    callers get ENOTCONN), then detach the mount."""
    pid = lock_pid(home)
    if pid and alive(pid):
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid), 10, f"pid {pid} to die")
    if str(mountpoint) in fuse_mounts():
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


class Mount:
    """A home mounted with the real CLI (background mode, as a user would)."""

    def __init__(self, home: Path, path: Path):
        self.home = home
        self.path = path

    def start(self, *extra: str, env: dict[str, str] | None = None) -> Mount:
        """Mount; `env` adds to the serving process's environment (fault points)."""
        # mkdir, not exists(): a dead mount there answers stat with ENOTCONN
        with contextlib.suppress(FileExistsError):
            self.path.mkdir()
        syncd(self.home, "mount", str(self.path), *extra,
              env={**os.environ, **env} if env else None)
        assert fuse_mounts().get(str(self.path)) == "fuse.syncd"
        return self

    @property
    def pid(self) -> int | None:
        return lock_pid(self.home)

    def stop(self) -> None:
        """Unmount cleanly and check the serving process committed and exited."""
        pid = self.pid
        syncd(self.home, "umount")
        assert str(self.path) not in fuse_mounts()
        if pid:  # the lock is released just before the process exits
            wait_for(lambda: not alive(pid), 10, f"mount process {pid} to exit")

    def kill(self) -> None:
        force_cleanup(self.home, self.path)

    def log(self) -> str:
        try:
            return (self.home / "mount.log").read_text()
        except FileNotFoundError:
            return ""
