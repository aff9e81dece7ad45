"""The filesystem against the local disk: random sequences of file operations run on a real
syncd mount and on a plain directory must give the same results.

A hypothesis state machine drives both trees through one long-lived helper process (`serve`,
at the end of this file) that runs each operation on both and replies with the two outcomes
(a value or an errno), which must be equal. After every step both trees are walked and
compared entirely, and so are the open handles (fstat). The helper runs as root or, with
--allow-other, as an unprivileged user, so that permission checks are exercised too; the
walk always runs as root, which sees everything.

Special files (FIFOs, sockets, device nodes) are drawn too; the plain directory is a nodev
bind mount, as the mount is nodev, so that opening a device node fails alike (EACCES), and
a FIFO is opened O_NONBLOCK, as a lone open would wait for the other end for ever.

Not compared, because they legitimately differ: st_blocks, directory sizes and link counts,
atime, ctime, inode numbers and readdir order. Modification times are compared where the
model knows them: set by utime (must be exactly that), or renewed by a write or truncation
(must be no older than the operation).

SYNCD_MODEL_EXAMPLES=2000 runs that many examples, random instead of derandomized.
"""

from __future__ import annotations

import ctypes
import functools
import json
import operator
import os
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from syncd.index.chunklist import CHUNK

from tests.conftest import needs_fuse
from tests.helpers import Mount, force_cleanup, free_port, syncd

REPO = Path(__file__).resolve().parents[2]
USER = 65534  # nobody

LONG_RUN = int(os.environ.get("SYNCD_MODEL_EXAMPLES", "0"))
SETTINGS = settings(
    max_examples=LONG_RUN or 200,  # about 40 s per user here
    stateful_step_count=50,
    derandomize=not LONG_RUN,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)

# A small pool of names, so that operations collide often: rename over an existing target,
# rmdir of a full directory, unlink of a missing name. "c" and "ď" are often directories.
NAMES = ("a", "b", "c", "ď")
DIRS = ("c", "ď")
PATHS = NAMES + tuple(f"{d}/{n}" for d in DIRS for n in NAMES)
# Relative and never leaving the tree (both trees sit in one parent directory); "a" at "a"
# is a loop, "." a link to its own directory.
SYMLINK_TARGETS = ("a", "b", "c", "ď/a", "c/b", ".", "nowhere")
# Octal strings so that failing examples read well.
MODES = ("000", "400", "444", "500", "600", "644", "700", "755", "777", "1777", "2755",
         "4755", "6777")
OPEN_FLAGS = (
    "O_RDONLY", "O_WRONLY", "O_RDWR", "O_WRONLY|O_APPEND", "O_RDWR|O_APPEND", "O_RDWR|O_TRUNC",
    "O_RDONLY|O_TRUNC", "O_RDONLY|O_DIRECTORY", "O_RDONLY|O_NOFOLLOW",
)
CREATE_FLAGS = (
    "O_RDWR|O_CREAT", "O_WRONLY|O_CREAT", "O_RDWR|O_CREAT|O_EXCL", "O_WRONLY|O_CREAT|O_TRUNC",
    "O_RDWR|O_CREAT|O_APPEND", "O_WRONLY|O_CREAT|O_NOFOLLOW",
)
# utime values: the epoch, around and before it, nanoseconds that do not round, and all far
# from now, so that a time renewed by a write can never be mistaken for one of them; None is
# "now".
MTIMES = (0, 1, 999_999_999, -1_500_000_000, 1_000_000_000_123_456_789,
          1_600_000_000_000_000_000, None)
# Offsets and sizes mostly small, sometimes across the store's 1 MiB chunk boundaries, and
# sometimes a tebibyte in: a hole of a million chunk slots, which must cost nothing.
HUGE = (1 << 40) - 3
OFFSETS = st.integers(0, 24) | st.sampled_from((CHUNK - 2, CHUNK, 2 * CHUNK + 3, HUGE))
# A file this large is compared by its first and last bytes (every offset drawn is in one
# or the other); reading a tebibyte of hole would take hours.
WHOLE_UP_TO = 16 * CHUNK
CONTENT = st.binary(max_size=12)
QUERIES = ("stat", "lstat", "readlink", "listdir", "access F_OK", "access R_OK", "access W_OK",
           "access X_OK")
MAX_HANDLES = 4
REPLY_TIMEOUT = 60  # seconds; a hung mount fails the test instead of hanging it
CLOCK_SLACK_NS = 100_000_000  # the kernel stamps ext4 times from a coarse clock
# mknod's types; device numbers: /dev/null's, and one with a minor beyond 8 bits. Devices
# need CAP_MKNOD: EPERM for the unprivileged user on both trees.
NODE_TYPES = ("S_IFIFO", "S_IFSOCK", "S_IFCHR", "S_IFBLK", "S_IFREG")
DEVICES = (os.makedev(1, 3), os.makedev(259, 70000))
# Extended attributes: user.* only (the plain directory's own security.* ones are not the
# share's), small values (ext4 holds about 4 KiB per inode; the mount's limits are tested
# in tests/mount/test_xattr.py). A name without a value yet is common.
XATTR_NAMES = ("user.a", "user.b", "user.ď")
XATTR_VALUES = st.binary(max_size=12)
XATTR_FLAGS = (0, os.XATTR_CREATE, os.XATTR_REPLACE)


def flag_bits(names: str) -> int:
    return functools.reduce(operator.or_, (getattr(os, n) for n in names.split("|")))


def stat_fields(attrs: os.stat_result) -> dict:
    """What must agree between the trees for one stat: no times, and no size or link count
    for directories."""
    fields = {"mode": oct(attrs.st_mode), "uid": attrs.st_uid, "gid": attrs.st_gid,
              "rdev": attrs.st_rdev}
    if not stat.S_ISDIR(attrs.st_mode):
        fields.update(size=attrs.st_size, nlink=attrs.st_nlink)
    return fields


def user_xattrs(target: str | int, follow: bool = True) -> dict[str, str]:
    """The user.* extended attributes, values as text (one character per byte)."""
    return {n: os.getxattr(target, n, follow_symlinks=follow).decode("latin-1")
            for n in sorted(os.listxattr(target, follow_symlinks=follow))
            if n.startswith("user.")}


def snapshot(root: str) -> dict[str, tuple[dict, os.stat_result]]:
    """Every path below root -> (what must agree, its lstat)."""
    tree = {}

    def visit(rel: str) -> None:
        for name in os.listdir(os.path.join(root, rel)):
            path = os.path.join(rel, name)
            full = os.path.join(root, path)
            attrs = os.lstat(full)
            fields = stat_fields(attrs)
            if stat.S_ISREG(attrs.st_mode):
                with open(full, "rb") as f:
                    fields["content"] = f.read(WHOLE_UP_TO)
                    if attrs.st_size > WHOLE_UP_TO:
                        f.seek(attrs.st_size - 4 * CHUNK)
                        fields["end"] = f.read()
            elif stat.S_ISLNK(attrs.st_mode):
                fields["target"] = os.readlink(full)
            if not stat.S_ISLNK(attrs.st_mode):
                fields["xattrs"] = user_xattrs(full)
            tree[path] = (fields, attrs)
            if stat.S_ISDIR(attrs.st_mode):
                visit(path)

    visit("")
    return tree


class Helper:
    """The helper process (`serve`) that runs each operation on both trees, as `uid`."""

    def __init__(self, roots: list[Path], uid: int):
        cmd = [sys.executable, "-m", "tests.mount.test_model", *map(str, roots)]
        if uid != os.getuid():
            cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *cmd]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, op: str, *args) -> list[dict]:
        """[outcome on the mount, outcome on the plain directory]; each {"ok": value} or
        {"errno": code}."""
        self.proc.stdin.write(json.dumps([op, args]) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], REPLY_TIMEOUT)
        if not ready:
            raise AssertionError(f"no reply to {op}{args!r} in {REPLY_TIMEOUT} s: mount hung?")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the helper exited ({self.proc.wait()}) during {op}{args!r}")
        outcomes = json.loads(line)
        for outcome in outcomes:
            if "error" in outcome:
                raise AssertionError(f"{op}{args!r} raised {outcome['error']} in the helper")
        return outcomes

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Trees:
    mount: str
    plain: str
    helper: Helper
    uid: int  # of the helper

    def wipe(self) -> None:
        """Remove everything below both roots (as root: modes do not stand in the way)."""
        for root in (self.mount, self.plain):
            for name in os.listdir(root):
                path = os.path.join(root, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)


class Mtime(NamedTuple):
    """What the model knows of an inode's mtime: exactly `ns` (set by utime), or at least
    `ns` (renewed by a write or truncation that started then)."""

    exact: bool
    ns: int
    is_dir: bool


class Opened(NamedTuple):
    """An open handle (a descriptor on each tree): what it was opened on, by its plain
    inode."""

    ino: int
    is_file: bool
    is_dir: bool


def show(outcome: dict) -> str:
    if "errno" in outcome:
        return os.strerror(outcome["errno"]) + f" (errno {outcome['errno']})"
    return repr(outcome["ok"])


class FilesystemModel(RuleBasedStateMachine):
    def __init__(self, trees: Trees):
        super().__init__()
        self.trees = trees
        self.handles: dict[int, Opened] = {}
        self.next_handle = 0
        self.mtimes: dict[int, Mtime] = {}  # plain inode -> its known mtime

    # -- helpers

    def both(self, op: str, *args) -> dict:
        """Run op on both trees; the outcomes must be equal. Returns it."""
        mount, plain = self.trees.helper.run(op, *args)
        assert mount == plain, (
            f"{op}{args!r}: the mount gave {show(mount)}, the local disk {show(plain)}")
        return plain

    def plain_stat(self, path: str, follow: bool = True) -> os.stat_result | None:
        try:
            return os.stat(os.path.join(self.trees.plain, path), follow_symlinks=follow)
        except OSError:
            return None

    def renewed(self, ino: int, started: int, is_dir: bool = False) -> None:
        self.mtimes[ino] = Mtime(False, started, is_dir)

    def entries_changed(self) -> None:
        """A name was added somewhere: the directories' mtimes are unknown now."""
        self.mtimes = {ino: m for ino, m in self.mtimes.items() if not m.is_dir}

    def in_directories(self, op: str, *args, parents_of: tuple[str, ...]) -> None:
        """Run an operation on names (not through a last symlink): when it succeeds, the
        mtimes of the directories holding those names are renewed."""
        parents = [self.plain_stat(os.path.dirname(path)) for path in parents_of]
        started = time.time_ns()
        if "ok" in self.both(op, *args):
            for attrs in parents:
                self.renewed(attrs.st_ino, started, is_dir=True)

    def pick(self, data) -> int:
        return data.draw(st.sampled_from(sorted(self.handles)), label="handle")

    def pick_file(self, data) -> int:
        """A handle on a regular file: reading and writing a directory fail early in the
        kernel, the same way everywhere."""
        files = sorted(h for h, opened in self.handles.items() if opened.is_file)
        return data.draw(st.sampled_from(files), label="handle")

    def has_file_handles(self) -> bool:
        return any(opened.is_file for opened in self.handles.values())

    def utimed(self, ino: int, is_dir: bool, ns: int | None, started: int) -> None:
        if ns is None:
            self.renewed(ino, started, is_dir)
        else:
            self.mtimes[ino] = Mtime(True, ns, is_dir)

    # -- rules

    @initialize(dirs=st.sets(st.sampled_from(DIRS)),
                files=st.dictionaries(st.sampled_from(PATHS), CONTENT, max_size=6),
                fifos=st.sets(st.sampled_from(PATHS), max_size=2))
    def populate(self, dirs, files, fifos):
        """Start with some directories, files and FIFOs, so that the first steps collide."""
        for d in sorted(dirs):
            self.both("mkdir", d, 0o755)
        for path, content in sorted(files.items()):
            self.both("make_file", path, content.decode("latin-1"))
        for path in sorted(fifos):
            self.both("mknod", path, stat.S_IFIFO | 0o644, 0)

    # Opening and creating are separate rules so that files are created often.
    @precondition(lambda self: len(self.handles) < MAX_HANDLES)
    @rule(path=st.sampled_from(PATHS), flags=st.sampled_from(OPEN_FLAGS))
    def open_file(self, path, flags):
        self.open_handle(path, flags, "000")

    @precondition(lambda self: len(self.handles) < MAX_HANDLES)
    @rule(path=st.sampled_from(PATHS), flags=st.sampled_from(CREATE_FLAGS),
          mode=st.sampled_from(MODES))
    def create(self, path, flags, mode):
        self.open_handle(path, flags, mode)

    def open_handle(self, path: str, flags: str, mode: str) -> None:
        started = time.time_ns()
        handle = self.next_handle
        self.next_handle += 1
        bits = flag_bits(flags)
        target = self.plain_stat(path)
        if target is not None and stat.S_ISFIFO(target.st_mode):
            bits |= os.O_NONBLOCK  # no waiting for a writer or reader that never comes
        if "ok" in self.both("open", path, bits, int(mode, 8), handle):
            attrs = self.plain_stat(path)
            is_file = stat.S_ISREG(attrs.st_mode)
            self.handles[handle] = Opened(attrs.st_ino, is_file, stat.S_ISDIR(attrs.st_mode))
            if is_file and "O_TRUNC" in flags:
                self.renewed(attrs.st_ino, started)
            if "O_CREAT" in flags:  # perhaps created, perhaps through a symlink
                self.entries_changed()

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def close(self, data):
        handle = self.pick(data)
        self.both("close", handle)
        del self.handles[handle]

    @precondition(has_file_handles)
    @rule(data=st.data(), content=CONTENT, offset=st.none() | OFFSETS)
    def write(self, data, content, offset):
        handle = self.pick_file(data)
        started = time.time_ns()
        text = content.decode("latin-1")  # JSON carries text: one character per byte
        if offset is None:
            outcome = self.both("write", handle, text)
        else:
            outcome = self.both("pwrite", handle, text, offset)
        if outcome.get("ok"):
            self.renewed(self.handles[handle].ino, started)

    @precondition(has_file_handles)
    @rule(data=st.data(), size=st.integers(0, 40), offset=st.none() | OFFSETS)
    def read(self, data, size, offset):
        handle = self.pick_file(data)
        if offset is None:
            self.both("read", handle, size)
        else:
            self.both("pread", handle, size, offset)

    # Files only, also because directory offsets are each file system's own (ext4: hashes).
    @precondition(has_file_handles)
    @rule(data=st.data(), offset=OFFSETS,
          whence=st.sampled_from(("SEEK_SET", "SEEK_CUR", "SEEK_END")))
    def seek(self, data, offset, whence):
        self.both("lseek", self.pick_file(data), offset, getattr(os, whence))

    @precondition(has_file_handles)
    @rule(data=st.data(), size=OFFSETS)
    def ftruncate(self, data, size):
        handle = self.pick_file(data)
        started = time.time_ns()
        if "ok" in self.both("ftruncate", handle, size):
            self.renewed(self.handles[handle].ino, started)

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), datasync=st.booleans())
    def fsync(self, data, datasync):
        self.both("fsync", self.pick(data), datasync)

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), mode=st.sampled_from(MODES))
    def fchmod(self, data, mode):
        self.both("fchmod", self.pick(data), int(mode, 8))

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), ns=st.sampled_from(MTIMES))
    def futime(self, data, ns):
        handle = self.pick(data)
        started = time.time_ns()
        if "ok" in self.both("futime", handle, ns):
            opened = self.handles[handle]
            self.utimed(opened.ino, opened.is_dir, ns, started)

    @rule(path=st.sampled_from(PATHS), size=OFFSETS)
    def truncate(self, path, size):
        started = time.time_ns()
        if "ok" in self.both("truncate", path, size):
            # Linux renews the mtime even when the size stays (POSIX asks only if it changes)
            self.renewed(self.plain_stat(path).st_ino, started)

    @rule(path=st.sampled_from(PATHS))
    def unlink(self, path):
        self.in_directories("unlink", path, parents_of=(path,))

    @rule(path=st.sampled_from(PATHS))
    def rmdir(self, path):
        self.in_directories("rmdir", path, parents_of=(path,))

    @rule(path=st.sampled_from(PATHS), mode=st.sampled_from(MODES))
    def mkdir(self, path, mode):
        self.in_directories("mkdir", path, int(mode, 8), parents_of=(path,))

    @rule(path=st.sampled_from(PATHS), node_type=st.sampled_from(NODE_TYPES),
          mode=st.sampled_from(MODES), rdev=st.sampled_from(DEVICES))
    def mknod(self, path, node_type, mode, rdev):
        self.in_directories("mknod", path, getattr(stat, node_type) | int(mode, 8), rdev,
                            parents_of=(path,))

    @rule(points_to=st.sampled_from(SYMLINK_TARGETS), path=st.sampled_from(PATHS))
    def symlink(self, points_to, path):
        self.in_directories("symlink", points_to, path, parents_of=(path,))

    @rule(src=st.sampled_from(PATHS), dst=st.sampled_from(PATHS), follow=st.booleans())
    def link(self, src, dst, follow):
        self.in_directories("link", src, dst, follow, parents_of=(dst,))

    @rule(src=st.sampled_from(PATHS), dst=st.sampled_from(PATHS), noreplace=st.booleans())
    def rename(self, src, dst, noreplace):
        before = self.plain_stat(src, follow=False), self.plain_stat(dst, follow=False)
        if None not in before and before[0].st_ino == before[1].st_ino:
            self.both("rename", src, dst, noreplace)  # one inode: nothing happens
        else:
            self.in_directories("rename", src, dst, noreplace, parents_of=(src, dst))

    @rule(path=st.sampled_from(PATHS), mode=st.sampled_from(MODES))
    def chmod(self, path, mode):
        self.both("chmod", path, int(mode, 8))

    @rule(path=st.sampled_from(PATHS), ns=st.sampled_from(MTIMES), follow=st.booleans())
    def utime(self, path, ns, follow):
        started = time.time_ns()
        if "ok" in self.both("utime", path, ns, follow):
            attrs = self.plain_stat(path, follow)
            self.utimed(attrs.st_ino, stat.S_ISDIR(attrs.st_mode), ns, started)

    @rule(path=st.sampled_from(("", *PATHS)), name=st.sampled_from(XATTR_NAMES),
          value=XATTR_VALUES, flags=st.sampled_from(XATTR_FLAGS), follow=st.booleans())
    def setxattr(self, path, name, value, flags, follow):
        self.both("setxattr", path, name, value.decode("latin-1"), flags, follow)

    @rule(path=st.sampled_from(("", *PATHS)), name=st.sampled_from(XATTR_NAMES),
          follow=st.booleans())
    def removexattr(self, path, name, follow):
        self.both("removexattr", path, name, follow)

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), name=st.sampled_from(XATTR_NAMES), value=XATTR_VALUES)
    def fsetxattr(self, data, name, value):
        self.both("fsetxattr", self.pick(data), name, value.decode("latin-1"))

    @rule(path=st.sampled_from(("", *PATHS)), name=st.sampled_from(XATTR_NAMES),
          follow=st.booleans())
    def xattrs(self, path, name, follow):
        """What the walk cannot see: through symlinks and as the helper's user."""
        self.both("getxattr", path, name, follow)
        self.both("listxattr", path, follow)

    # One rule for the queries, so that they do not crowd out the changes; they matter for
    # what the walk (as root, not following symlinks) cannot see: permissions, symlinks.
    @rule(path=st.sampled_from(("", *PATHS)), query=st.sampled_from(QUERIES))
    def look(self, path, query):
        op, _, arg = query.partition(" ")
        if op == "access":
            self.both("access", path, flag_bits(arg))
        elif op in ("stat", "lstat"):
            self.both("stat", path, op == "stat")
        else:
            self.both(op, path)

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def listdir_handle(self, data):
        self.both("listdir_handle", self.pick(data))  # ENOTDIR for files

    # -- the whole state

    @invariant()
    def trees_agree(self):
        mount, plain = snapshot(self.trees.mount), snapshot(self.trees.plain)
        assert {p: f for p, (f, _) in mount.items()} == {p: f for p, (f, _) in plain.items()}
        for handle in self.handles:
            self.both("fstat", handle)
        # Forget inodes that are gone (their numbers may be reused on the local disk).
        alive = {attrs.st_ino for _, attrs in plain.values()}
        alive |= {opened.ino for opened in self.handles.values()}
        self.mtimes = {ino: m for ino, m in self.mtimes.items() if ino in alive}
        for path, (_, plain_attrs) in plain.items():
            known = self.mtimes.get(plain_attrs.st_ino)
            if known is None:
                continue
            for tree, attrs in (("local disk", plain_attrs), ("mount", mount[path][1])):
                if known.exact:
                    assert attrs.st_mtime_ns == known.ns, f"{path}: mtime on the {tree}"
                else:
                    assert attrs.st_mtime_ns >= known.ns - CLOCK_SLACK_NS, (
                        f"{path}: mtime on the {tree} not renewed")

    def teardown(self):
        try:
            self.trees.helper.run("close_all")
        finally:
            self.trees.wipe()


needs_other_user = pytest.mark.skipif(os.getuid() != 0 or shutil.which("setpriv") is None,
                                      reason="needs root and setpriv to act as another user")


@pytest.fixture(params=[pytest.param(0, id="root"),
                        pytest.param(USER, id="nobody", marks=needs_other_user)])
def trees(request):
    """A mount and a plain directory, both roots owned by the user the helper runs as, in
    a directory that user can traverse; one mount for the whole state machine run."""
    uid = request.param
    outer = Path(tempfile.mkdtemp(prefix="syncd-model-"))
    outer.chmod(0o755)
    home = outer / "home"
    syncd(home, "init", "--name", "model", "--listen", f"127.0.0.1:{free_port()}")
    m = Mount(home, outer / "mnt")
    plain = outer / "plain"
    plain.mkdir()
    helper = None
    bound = False
    try:
        if os.getuid() == 0:  # nodev, as the mount is (mount/session.py)
            subprocess.run(["mount", "--bind", plain, plain], check=True)
            bound = True
            subprocess.run(["mount", "-o", "remount,bind,nodev", plain], check=True)
        m.start(*(["--allow-other"] if uid else []))
        for root in (m.path, plain):
            os.chown(root, uid, uid)
            os.chmod(root, 0o755)
        helper = Helper([m.path, plain], uid)
        yield Trees(str(m.path), str(plain), helper, uid)
        helper.close()
        m.stop()
    finally:
        if helper is not None:
            helper.close()
        force_cleanup(home, m.path)
        if bound:
            subprocess.run(["umount", plain], check=True)
        try:
            m.served_log.check()  # now: the log goes with the directory
        finally:
            shutil.rmtree(outer)


@needs_fuse
@pytest.mark.timeout(0 if LONG_RUN else 900)  # room for shrinking a failure
def test_mount_behaves_like_the_local_disk(trees):
    run_state_machine_as_test(lambda: FilesystemModel(trees), settings=SETTINGS)


# -- discrepancies the model found, minimised and kept as regression tests


@needs_fuse
def test_o_trunc_of_an_empty_file_renews_mtime(mount):
    # POSIX: O_TRUNC on an existing file marks mtime and ctime for update, empty or not
    # (`: > stamp` in a Makefile relies on it).
    p = mount.path / "stamp"
    p.write_bytes(b"")
    os.utime(p, ns=(10**18, 10**18))
    os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))
    assert p.stat().st_mtime_ns > 10**18


@needs_fuse
@needs_other_user
@pytest.mark.parametrize("trees", [USER], indirect=True)
def test_o_trunc_by_the_owner_clears_setuid(trees):
    # Linux clears set-user-ID (and set-group-ID on a group-executable file) when someone
    # without CAP_FSETID truncates a file, as write() and truncate() do on the mount too.
    run = trees.helper.run
    run("make_file", "a", "xyz")
    run("chmod", "a", 0o4755)
    run("open", "a", os.O_WRONLY | os.O_TRUNC, 0, 0)
    mount, plain = run("fstat", 0)
    assert plain["ok"]["mode"] == oct(stat.S_IFREG | 0o755)
    assert mount == plain


@needs_fuse
def test_mtime_of_the_epoch_on_a_file_being_written(mount):
    # cp -p and tar set times through the open descriptor; reproducible archives use 0.
    # The commit stores 0, but the kernel caches the wrong answer for attr_timeout.
    p = mount.path / "f"
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x")
        os.utime(fd, ns=(0, 0))
        assert os.fstat(fd).st_mtime_ns == 0
    finally:
        os.close(fd)
    assert p.stat().st_mtime_ns == 0


# -- the helper process: runs each operation on both trees and reports the outcomes

AT_FDCWD = -100
RENAME_NOREPLACE = 1


def renameat2(src: str, dst: str, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def set_times(target: str | int, ns: int | None, follow: bool = True) -> None:
    """Set atime and mtime to ns, or to now for None."""
    if ns is None:
        os.utime(target, follow_symlinks=follow)
    else:
        os.utime(target, ns=(ns, ns), follow_symlinks=follow)


class Side:
    """One tree in the helper: paths are relative to its root, handles are the test's
    numbers for this tree's file descriptors."""

    def __init__(self, root: str):
        self.root = root
        self.fds: dict[int, int] = {}

    def at(self, path: str) -> str:
        return os.path.join(self.root, path)

    def call(self, op: str, args: list) -> dict:
        try:
            return {"ok": getattr(self, "op_" + op)(*args)}
        except OSError as e:
            return {"errno": e.errno}
        except Exception as e:  # a bug of the test: report it instead of dying silently
            return {"error": repr(e)}

    def op_open(self, path, flags, mode, handle):
        self.fds[handle] = os.open(self.at(path), flags, mode)

    def op_make_file(self, path, text):
        with open(self.at(path), "xb") as f:
            f.write(text.encode("latin-1"))

    def op_close(self, handle):
        os.close(self.fds.pop(handle))

    def op_close_all(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def op_write(self, handle, text):
        return os.write(self.fds[handle], text.encode("latin-1"))

    def op_pwrite(self, handle, text, offset):
        return os.pwrite(self.fds[handle], text.encode("latin-1"), offset)

    def op_read(self, handle, size):
        return os.read(self.fds[handle], size).decode("latin-1")

    def op_pread(self, handle, size, offset):
        return os.pread(self.fds[handle], size, offset).decode("latin-1")

    def op_lseek(self, handle, offset, whence):
        return os.lseek(self.fds[handle], offset, whence)

    def op_ftruncate(self, handle, size):
        os.ftruncate(self.fds[handle], size)

    def op_fsync(self, handle, datasync):
        (os.fdatasync if datasync else os.fsync)(self.fds[handle])

    def op_fchmod(self, handle, mode):
        os.fchmod(self.fds[handle], mode)

    def op_futime(self, handle, ns):
        set_times(self.fds[handle], ns)

    def op_fstat(self, handle):
        return stat_fields(os.fstat(self.fds[handle]))

    def op_truncate(self, path, size):
        os.truncate(self.at(path), size)

    def op_unlink(self, path):
        os.unlink(self.at(path))

    def op_rmdir(self, path):
        os.rmdir(self.at(path))

    def op_mkdir(self, path, mode):
        os.mkdir(self.at(path), mode)

    def op_mknod(self, path, mode, rdev):
        os.mknod(self.at(path), mode, rdev)

    def op_symlink(self, target, path):
        os.symlink(target, self.at(path))

    def op_link(self, src, dst, follow):
        os.link(self.at(src), self.at(dst), follow_symlinks=follow)

    def op_rename(self, src, dst, noreplace):
        renameat2(self.at(src), self.at(dst), RENAME_NOREPLACE if noreplace else 0)

    def op_chmod(self, path, mode):
        os.chmod(self.at(path), mode)

    def op_utime(self, path, ns, follow):
        set_times(self.at(path), ns, follow)

    def op_listdir(self, path):
        return sorted(os.listdir(self.at(path)))

    def op_listdir_handle(self, handle):
        return sorted(os.listdir(self.fds[handle]))

    def op_stat(self, path, follow):
        return stat_fields(os.stat(self.at(path), follow_symlinks=follow))

    def op_readlink(self, path):
        return os.readlink(self.at(path))

    def op_access(self, path, mode):
        return os.access(self.at(path), mode)

    def op_setxattr(self, path, name, text, flags, follow):
        os.setxattr(self.at(path), name, text.encode("latin-1"), flags,
                    follow_symlinks=follow)

    def op_fsetxattr(self, handle, name, text):
        os.setxattr(self.fds[handle], name, text.encode("latin-1"))

    def op_removexattr(self, path, name, follow):
        os.removexattr(self.at(path), name, follow_symlinks=follow)

    def op_getxattr(self, path, name, follow):
        return os.getxattr(self.at(path), name, follow_symlinks=follow).decode("latin-1")

    def op_listxattr(self, path, follow):
        return user_xattrs(self.at(path), follow)


def serve(roots: list[str]) -> None:
    """Read [op, args] lines; answer each with [outcome on roots[0], on roots[1]]."""
    os.umask(0o022)
    sides = [Side(root) for root in roots]
    for line in sys.stdin:
        op, args = json.loads(line)
        print(json.dumps([side.call(op, args) for side in sides]), flush=True)


if __name__ == "__main__":
    serve(sys.argv[1:])
