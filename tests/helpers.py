"""Running the real `syncd` command and real mounts from tests, and checking what they
logged."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from syncd import control
from syncd.home import Home

SYNCD = [sys.executable, "-m", "syncd"]


def syncd(home: Path, *args: str, check: bool = True, timeout: float = 90,
          netns: str | None = None, **kw) -> subprocess.CompletedProcess:
    """The command on `home`; in the network namespace `netns` when given."""
    where = ["ip", "netns", "exec", netns] if netns else []
    done = subprocess.run([*where, *SYNCD, "--home", str(home), *args], capture_output=True,
                          text=True, timeout=timeout, **kw)
    served_log(home / "mount.log").add_output(f"syncd {' '.join(args)}", done.stderr)
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


_PORTS_GIVEN: set[int] = set()
_PORTS_LOCK = threading.Lock()  # clusters start their peers on threads


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range (32768 and up here): ports the
    kernel hands out meanwhile (a status page's port 0, a connection's own end) never take
    it before the server that is told to listen there binds it. Never one given before in
    this process, and under pytest-xdist from this worker's own slice of the range, so
    that two servers told to listen are never told the same port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    width = (32768 - 10000) // workers
    low = 10000 + int(worker) * width
    while True:
        port = random.randrange(low, low + width)
        with _PORTS_LOCK, socket.socket() as s:
            if port in _PORTS_GIVEN:
                continue
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _PORTS_GIVEN.add(port)
            return port


def tls_context(server: Path, client: Path | None = None) -> ssl.SSLContext:
    """TLS to a home's peer port as a peer talks it: trust exactly the certificate of the
    home `server`, present that of the home `client` (none when None)."""
    from syncd import identity

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=identity.load(server / "device.pem").cert.pem)
    if client is not None:
        ctx.load_cert_chain(client / "device.pem")
    return ctx


def tls_client(server: Path, client: Path | None = None, **kw) -> httpx.Client:
    """An httpx client for a home's peer port (tls_context)."""
    return httpx.Client(verify=tls_context(server, client), trust_env=False, **kw)


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
        self.served_log = served_log(home / "mount.log")

    def expect_log(self, *patterns: str) -> None:
        """Records matching these may appear in HOME/mount.log (see ServedLog)."""
        self.served_log.expect_log(*patterns)

    def start(self, *extra: str, env: dict[str, str] | None = None,
              peer_side: bool = True) -> Mount:
        """Mount; `env` adds to the serving process's environment (fault points). With
        `peer_side`, return once the serving process's daemon runs too (listening for peers,
        its peer loops started), which it builds after the mount answers
        (syncd/starting.py): as a mount was ready before, for the tests that rely on it."""
        # mkdir, not exists(): a dead mount there answers stat with ENOTCONN
        with contextlib.suppress(FileExistsError):
            self.path.mkdir()
        self.served_log.serving()
        syncd(self.home, "mount", str(self.path), *extra,
              env={**os.environ, **env} if env else None)
        assert fuse_mounts().get(str(self.path)) == "fuse.syncd"
        if peer_side and (self.home / "cluster.key").exists():
            control.request(Home(self.home), "peers", timeout=60)  # answered once it runs
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


# -- logs of serving processes

# A record of the logging format syncd.cli sets up: "DATE TIME,MS LOGGER LEVEL message".
RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \S+ ([A-Z]+) ")
COMPLAINTS = ("WARNING", "ERROR", "CRITICAL")


def log_records(text: str) -> list[str]:
    """Split a log into records: a line that starts with a timestamp begins one, the lines
    after it (a traceback) belong to it; lines before the first record form one of their
    own. A command's own error line (`syncd: error: ...`) is a record too."""
    records: list[str] = []
    for line in text.splitlines():
        if RECORD.match(line) or line.startswith("syncd: error: ") or not records:
            records.append(line)
        else:
            records[-1] += "\n" + line
    return records


def complaint(record: str) -> bool:
    """A record at WARNING or above, an error line, or anything carrying a traceback."""
    first = record.partition("\n")[0]
    m = RECORD.match(first)
    return ((m is not None and m.group(1) in COMPLAINTS) or first.startswith("syncd: error: ")
            or "Traceback" in record)


class ServedLog:
    """What a serving process (a mount, `syncd serve`) logged to a file, plus the stderr of
    the commands run on its home, checked when the test ends (tests/conftest.py): every
    record at WARNING or above, and every traceback, must match a pattern the test
    declared with expect_log(pattern, ...) (re.search on the record's first line, for
    example r"WARNING write: no space left in "). Tests reach it as Mount.expect_log,
    Peer.expect_log and Server.expect_log; served_log(path) gives the one of any other
    log file."""

    def __init__(self, path: Path):
        self.path = path
        self.expected: list[str] = []
        self.start = 0  # of the file: what check() already looked at
        self.outputs: list[str] = []  # commands' stderr, not yet checked
        self.pending = False  # a process wrote to it since the last check

    def serving(self) -> None:
        """A process starts writing to it: a log that is gone when the test ends (on a
        tmpfs unmounted, in a directory removed) fails the test."""
        self.pending = True

    def expect_log(self, *patterns: str) -> None:
        self.expected.extend(patterns)

    def text(self) -> str:
        try:
            return self.path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def add_output(self, command: str, stderr: str) -> None:
        records = [r for r in log_records(stderr) if RECORD.match(r)]
        if records:
            self.outputs.append("\n".join(f"({command}) {r}" for r in records))

    def mark(self) -> None:
        """Forget what was logged so far and what was expected (a server shared by the
        tests of a module: each test answers for its own part)."""
        self.start = len(self.text())
        self.outputs.clear()
        self.expected.clear()

    def unexpected(self) -> list[str]:
        """Complaints not yet checked that no expected pattern matches; what was looked at
        is not looked at again."""
        text = self.text()
        if not text and self.pending and not self.path.exists():
            return [f"(the log is gone before it was checked: {self.path})"]
        records = log_records(text[self.start:]) + self.outputs
        self.start = len(text)
        self.outputs = []
        self.pending = False
        return [r for r in records if complaint(r)
                and not any(re.search(p, r.partition("\n")[0]) for p in self.expected)]

    def check(self) -> None:
        if bad := self.unexpected():
            raise AssertionError(
                f"{self.path}: {len(bad)} unexpected log record(s); a test that provokes "
                f"them declares them with expect_log(pattern):\n" + "\n".join(bad))


# The serving processes' logs of the running test, by path; tests/conftest.py checks and
# empties it when the test ends.
SERVED_LOGS: dict[Path, ServedLog] = {}


def served_log(path: Path) -> ServedLog:
    """The check of this log file for the running test (made on first use)."""
    path = Path(path).absolute()
    if path not in SERVED_LOGS:
        SERVED_LOGS[path] = ServedLog(path)
    return SERVED_LOGS[path]
