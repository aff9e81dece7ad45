"""The convergence soak's machinery: three mounted peers behind fault-injecting proxies,
one worker thread per peer doing random operations on a small shared set of paths, a fault
thread, a record of everything done, and the checks (see test_soak.py for what is
asserted)."""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import os
import posixpath
import random
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from syncd.index.chunklist import CHUNK

from syncd.home import Home
from tests.helpers import alive, force_cleanup, fuse_mounts, lock_pid, status, syncd
from tests.peers.conftest import Peer
from tests.soak.model import DIR, FILE, Model
from tests.soak.proxy import Proxy

NAMES = ["alpha", "beta", "gamma"]
FILES = ["f0", "f1", "x", "d0/f0", "d0/f1", "d1/f0", "d1/f1", "d0/s/f0", "d1/s/f0"]
DIRS = ["d0", "d1", "d0/s", "d1/s", "x"]  # "x" is a file on one peer, a directory on another
DIR_RENAMES = [("d0", "d1"), ("d1", "d0"), ("d0/s", "d1/s"), ("d1/s", "d0/s")]
FILE_MODES = [0o644, 0o600, 0o640, 0o444, 0o755]
DIR_MODES = [0o755, 0o700, 0o750, 0o555]

# Errors a peer's operation may meet because its view differs from another's.
FETCH_ERRORS = (errno.EIO, errno.ESTALE)  # what a lazy fetch that fails answers an open
EXPECTED = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR,
            errno.EINVAL}
# Errors of a mount whose serving process was just killed.
DOWN = {errno.ENOTCONN, errno.ECONNABORTED, errno.ENODEV}

WEIGHTS = {"write": 20, "blind": 6, "big": 1, "append": 12, "truncate": 5, "read": 10,
           "rename": 8, "rename_dir": 3, "mkdir": 8, "rmdir": 4, "unlink": 7, "chmod": 5}
READING_OPS = {"write", "big", "append", "truncate", "read"}  # read what is in the file
REPLACING_READERS = READING_OPS - {"read"}  # read the bytes they replace, through one fd
NAME_OPS = {"unlink", "blind", "rename"}  # replace what a name holds without reading it
# The tail of a round: operations that replace only what they read, so every version
# closed in it is required unless a later operation read it (test_soak.py, point 2).
TAIL_WEIGHTS = {"write": 20, "append": 12, "truncate": 5, "read": 10, "chmod": 5}
FAULTS = ["kill", "partition", "flaky", "corrupt", "xfer_kill", "xfer_corrupt", "island",
          "unplug", "relay_damage"]
RELAY = "shared"  # the directory relay every peer has, each through a symlink of its own
RELAY_KINDS = ["m", "b", "s", "r", "c"]  # the kinds of object relay_damage picks from

# What the faults make the peers log on purpose. Each peer's log (and what the commands run
# on its home print) may hold these for the fault kinds of the run; any other warning or
# error, and any traceback, fails the soak.
# No holder in reach (or intact): at an open, or at a read of a file still arriving.
UNREACHABLE = r"ERROR cannot (fetch|read) .*: no peer served chunk "
AHEAD = r"WARNING could not fetch ahead inode \d+: "  # the same, for a small file
CUT = r"WARNING \w+ \S+: the client left before sending its whole body$"
KILLED = [
    r"WARNING recovered uncommitted writes to inode \d+ as ",  # files open at the kill
    r"WARNING aborted the FUSE connection of .*: its process \d+ had been killed",  # stuck
]
DAMAGED = r"WARNING chunk \w+ in the store is damaged: fetching it again$"  # `syncd fetch`
WRONG = r"WARNING peer \w+ served wrong bytes for chunk \w+ of .*: not installed$"
# The relay's directory gone (unplugged; an island's link to it cut), also as seen half way
# through a round.
RELAY_GONE = (r"WARNING relay shared: \S+: (the relay's directory does not exist|no "
              r"\.syncd-relay in the directory: |[\w/]+ went away while it was listed)")
RELAY_DAMAGED = [  # an object on the relay that does not open, logged once per object
    r"WARNING relay shared: skipped [mbrs]/\w+(/\d+)?, nothing of it applied: ",
    r"WARNING relay \S+: skipped chunk c/\w+/\w+: ",
    r"WARNING relay shared: no chunk removed: ",  # one of our own batches damaged
]
FAULT_LOGS = {
    "kill": [UNREACHABLE, AHEAD, CUT, *KILLED],
    "xfer_kill": [UNREACHABLE, AHEAD, CUT, *KILLED],
    "partition": [UNREACHABLE, AHEAD, CUT],
    "flaky": [UNREACHABLE, AHEAD, CUT],
    "island": [UNREACHABLE, AHEAD, CUT, RELAY_GONE],
    "corrupt": [UNREACHABLE, AHEAD, DAMAGED, WRONG],
    "xfer_corrupt": [UNREACHABLE, AHEAD, WRONG],
    "unplug": [UNREACHABLE, AHEAD, RELAY_GONE],
    "relay_damage": [UNREACHABLE, AHEAD, *RELAY_DAMAGED],
}


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def index_hash(data: bytes) -> str:
    """The content hash syncd gives these bytes (BLAKE3 of the chunk digests), as its
    journal and nodes show it: to find an operation's version in a peer's index."""
    import blake3

    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    return "blake3:" + blake3.blake3(b"".join(blake3.blake3(c).digest()
                                              for c in chunks)).hexdigest()


EMPTY = digest(b"")


def read_all(fd: int) -> bytes:
    out, off = [], 0
    while True:
        data = os.pread(fd, 1 << 20, off)
        if not data:
            return b"".join(out)
        out.append(data)
        off += len(data)


@dataclass
class Op:
    round: int
    peer: str
    kind: str
    path: str
    path2: str | None = None
    t0: float = 0.0
    t1: float = 0.0
    error: str | None = None  # errno name, or None on success
    observed: str | None = None  # digest of the bytes the op read before replacing them
    new: str | None = None  # digest of the version the op closed (or meant to)
    size: int | None = None
    note: str | None = None
    island: bool = False
    wall: float = 0.0  # time.time() at t0, to find the op's lines in mount.log
    hash: str | None = None  # the new version as the index names it (journal, nodes)


@dataclass
class Fault:
    kind: str
    peers: tuple[str, ...]
    t0: float
    t1: float | None = None
    note: str = ""


@dataclass
class Version:
    round: int
    peer: str
    path: str
    digest: str
    size: int
    t0: float  # before the op that made it began
    t1: float  # after close returned
    island: bool
    wall: float = 0.0  # time.time() when its operation began


class Failure(Exception):
    pass


class SoakPeer:
    def __init__(self, peer: Peer):
        self.peer = peer
        self.name = peer.name
        # Held by the worker for each operation, by faults that must not race one
        # (remounting, island snapshots, directed transfers).
        self.lock = threading.Lock()
        self.up = True
        self.corrupt = False  # some chunks in its store hold wrong bytes: read nothing
        self.model: Model | None = None  # set while it is an island
        self.island_written: set[str] = set()
        self.busy = False  # a fault is acting on it (claimed under Soak.fault_lock)

    @property
    def path(self) -> Path:
        return self.peer.path

    @property
    def home(self) -> Path:
        return self.peer.home


class ProxyBoard:
    """One proxy per direction; each fault claims modes, the strongest claim wins."""

    RANK = {"pass": 0, "flaky": 1, "blackhole": 2, "reset": 3}

    def __init__(self, peers: list[SoakPeer], seed: int):
        self.proxies: dict[tuple[str, str], Proxy] = {}
        for i, a in enumerate(peers):
            for j, b in enumerate(peers):
                if a is not b:
                    self.proxies[a.name, b.name] = Proxy(
                        b.peer.port, f"{a.name}->{b.name}", seed=seed * 31 + i * 3 + j)
        self.claims: dict[tuple[str, str], list[str]] = {k: [] for k in self.proxies}
        self.lock = threading.Lock()

    def url(self, a: str, b: str) -> str:
        return self.proxies[a, b].url

    def claim(self, pairs: list[tuple[str, str]], mode: str) -> None:
        with self.lock:
            for a, b in pairs:
                for key in ((a, b), (b, a)):
                    self.claims[key].append(mode)
                    self._apply(key)

    def release(self, pairs: list[tuple[str, str]], mode: str) -> None:
        with self.lock:
            for a, b in pairs:
                for key in ((a, b), (b, a)):
                    self.claims[key].remove(mode)
                    self._apply(key)

    def _apply(self, key) -> None:
        mode = max(["pass", *self.claims[key]], key=self.RANK.__getitem__)
        if self.proxies[key].mode != mode:
            self.proxies[key].set_mode(mode)

    def heal(self) -> None:
        with self.lock:
            for key in self.claims:
                self.claims[key].clear()
                self._apply(key)

    def close(self) -> None:
        for p in self.proxies.values():
            p.close()


class Soak:
    def __init__(self, root: Path, seed: int, seconds: float, round_seconds: float,
                 steps: int, faults: bool = True, log=print):
        self.root = root
        self.seed = seed
        self.seconds = seconds
        self.round_seconds = round_seconds
        self.steps = steps
        self.with_faults = faults
        self.weights = dict(WEIGHTS)
        self.fault_menu = list(FAULTS)
        self.say = log
        self.peers: list[SoakPeer] = []
        self.board: ProxyBoard | None = None
        self.lock = threading.Lock()  # guards the records below
        self.ops: list[Op] = []
        self.versions: list[Version] = []
        self.faults: list[Fault] = []
        self.known: set[str] = {EMPTY}  # every content any op meant to close
        self.hashes: dict[str, str] = {EMPTY: index_hash(b"")}  # digest -> index hash
        self.failures: list[str] = []
        self.eio: list[Op] = []  # opens that could not fetch content
        self.unstamped: set[str] = set()  # versions closed on an inode without a node
        self.round = 0
        self.step_count = 0
        self.counter = 0
        self.stop = threading.Event()
        self.tail = False  # the round's last seconds: only operations that read first
        self.fault_lock = threading.Lock()  # picking peers for a fault and marking them busy
        self.log_path = root / "soak-ops.jsonl"
        self.relay = root / "relay"  # the relay's directory (moved away while unplugged)
        self.relay_links = root / "relay-links"  # peer name -> a symlink to it
        self.relay_lock = threading.Lock()  # one relay fault at a time
        self.stats: dict[str, int] = {}
        self.round_times: list[dict] = []

    # -- set up and tear down

    def start(self) -> None:
        first = Peer(self.root, NAMES[0], None)
        peers = [first] + [Peer(self.root, n, first.key) for n in NAMES[1:]]
        self.peers = [SoakPeer(p) for p in peers]
        for p in peers:
            for kind in self.fault_menu if self.with_faults else []:
                p.expect_log(*FAULT_LOGS[kind])
        self.board = ProxyBoard(self.peers, self.seed)
        self.relay.mkdir()
        self.relay_links.mkdir()
        for p in self.peers:
            self.link_relay(p, True)
            syncd(p.home, "relay", "add", RELAY, (self.relay_links / p.name).as_uri())
        for a in self.peers:
            for b in self.peers:
                if a is not b:
                    syncd(a.home, "peer", "add", b.name, self.board.url(a.name, b.name))
        for p in self.peers:
            p.peer.start()
        for d in DIRS[:-1]:  # the shared directories exist at the start (not "x") ...
            os.mkdir(self.peers[0].path / d)
        for f in FILES:  # ... and so do the files, made by alpha
            data = f"<start {f}>\n".encode()
            self.know(data)
            (self.peers[0].path / f).write_bytes(data)
        self.converge()

    def cleanup(self) -> None:
        """Stop everything this soak started, whatever state it is in."""
        self.stop.set()
        if self.board is not None:
            self.board.close()
        for p in self.peers:
            with contextlib.suppress(Exception):
                force_cleanup(p.home, p.path)

    def unmount_all(self) -> None:
        """The clean way out: every peer unmounts and its process exits."""
        os.chdir("/")
        for p in self.peers:
            if lock_pid(p.home):
                p.peer.stop()
        if self.board is not None:
            self.board.close()
        mounted = [m for m in fuse_mounts() if m.startswith(str(self.root))]
        assert not mounted, f"mounts left: {mounted}"
        for p in self.peers:  # nothing was written to the bare mount point
            stray = os.listdir(p.path)
            assert not stray, f"{p.name}: written beside the mount: {stray}"

    def logs(self) -> dict[str, str]:
        return {p.name: p.peer.mount.log() for p in self.peers}

    # -- records

    def record(self, op: Op) -> None:
        with self.lock:
            if op.new:
                op.hash = self.hashes.get(op.new)
            self.ops.append(op)
            self.stats[op.kind] = self.stats.get(op.kind, 0) + 1
            self.log_line(asdict(op))

    def log_line(self, record: dict) -> None:
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(f"[t={time.monotonic() - self.t_start:.2f}] {what}")
        self.say(f"FAILURE: {what}")

    def next_id(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter

    def content(self, peer: str, path: str, rng: random.Random, big: bool = False) -> bytes:
        n = self.next_id()
        size = (rng.randrange(1 << 20, 5 << 19) if big
                else rng.choice([0, 1, 17, 300, 4000, 70_000]))
        data = f"<{peer}#{n} {path}>\n".encode() + rng.randbytes(size)
        with self.lock:
            self.known.add(digest(data))
            self.hashes[digest(data)] = index_hash(data)
        return data

    def know(self, data: bytes) -> None:
        with self.lock:
            self.known.add(digest(data))
            self.hashes[digest(data)] = index_hash(data)

    def check_read(self, peer: SoakPeer, path: str, data: bytes, what: str) -> None:
        """Every read returns some version an operation closed (or meant to): never
        bytes nobody wrote (a damaged chunk served as good, a torn install)."""
        if peer.corrupt:
            return
        with self.lock:
            ok = digest(data) in self.known
        if not ok:
            self.fail(f"{peer.name}: {what} of {path} returned {len(data)} bytes nobody "
                      f"wrote: {data[:60]!r}")

    # -- the run

    def run(self) -> None:
        self.t_start = time.monotonic()
        deadline = self.t_start + self.seconds
        while True:
            self.round += 1
            left = deadline - time.monotonic()
            length = min(self.round_seconds, max(left, 3.0))
            self.run_round(length)
            if self.failures:
                raise Failure("\n".join(self.failures[:20]))
            if time.monotonic() >= deadline or self.out_of_steps():
                return

    def out_of_steps(self) -> bool:
        return bool(self.steps) and self.step_count >= self.steps

    def run_round(self, length: float) -> None:
        r = self.round
        rng = random.Random(f"{self.seed}/round/{r}")
        self.say(f"round {r}: {length:.0f} s of activity")
        t0 = time.monotonic()
        self.stop.clear()
        workers = [threading.Thread(target=self.worker, args=(p, r), name=f"worker {p.name}",
                                    daemon=True) for p in self.peers]
        faults = threading.Thread(target=self.fault_loop, args=(rng, length), daemon=True,
                                  name="faults")
        for w in workers:
            w.start()
        if self.with_faults:
            faults.start()
        end = time.monotonic() + length
        tail = max(2.0, 0.2 * length)
        while time.monotonic() < end and not self.out_of_steps() and not self.failures:
            self.tail = time.monotonic() > end - tail
            time.sleep(0.05)
        self.stop.set()
        self.tail = False
        for w in workers:
            w.join(60)
            if w.is_alive():
                raise Failure(f"{w.name} is stuck:\n{stack(w)}\n{self.stacks()}")
        if self.with_faults:
            faults.join(120)
            if faults.is_alive():
                raise Failure(f"the fault thread is stuck:\n{self.stacks()}")
        t_active = time.monotonic()
        islands = [p for p in self.peers if p.model is not None]
        required_island = {}
        for p in islands:
            required_island[p.name] = {
                (path, d) for path, (kind, d) in p.model.entries.items()
                if kind == FILE and d in p.island_written}
        self.heal()
        for p in islands:
            p.model = None
            p.island_written = set()
        converged_in = self.converge()
        t_conv = time.monotonic()
        trees = self.check_trees()
        for _ in range(3):
            if trees is not None:
                break
            # Reading found files nobody holds, and a peer dropped them (bug 4's fix):
            # the drop travels like any change.
            converged_in += self.converge()
            trees = self.check_trees()
        else:
            raise Failure("files nobody holds were still being dropped after 3 checks")
        self.check_versions(trees, required_island)
        self.check_eio()
        self.round_times.append({"round": r, "activity": t_active - t0,
                                 "heal+converge": converged_in,
                                 "check": time.monotonic() - t_conv})
        self.say(f"round {r}: converged in {converged_in:.1f} s; "
                 f"{sum(1 for o in self.ops if o.round == r)} ops")

    # -- workers

    def worker(self, peer: SoakPeer, r: int) -> None:
        rng = random.Random(f"{self.seed}/{peer.name}/{r}")
        kinds = list(self.weights)
        weights = [self.weights[k] for k in kinds]
        tail_kinds = list(TAIL_WEIGHTS)
        tail_weights = [TAIL_WEIGHTS[k] for k in tail_kinds]
        while not self.stop.is_set():
            if self.out_of_steps():
                return
            if self.tail:
                kind = rng.choices(tail_kinds, tail_weights)[0]
            else:
                kind = rng.choices(kinds, weights)[0]
            with peer.lock:
                if peer.up and not self.stop.is_set():
                    with self.lock:
                        self.step_count += 1
                    try:
                        self.do(peer, kind, rng, r)
                    except Exception as e:  # a bug in the soak itself: say so, go on
                        self.fail(f"{peer.name}: soak error in {kind}: {e!r}")
            time.sleep(rng.uniform(0, 0.01))

    def do(self, peer: SoakPeer, kind: str, rng: random.Random, r: int) -> None:
        if peer.corrupt and kind in READING_OPS:
            kind = "blind"  # it would read damaged bytes as if they were good
        island = peer.model is not None
        op = Op(r, peer.name, kind, "", island=island)
        if kind == "rename_dir":
            op.path, op.path2 = rng.choice(DIR_RENAMES)
        elif kind in ("mkdir", "rmdir"):
            op.path = rng.choice(DIRS)
        elif kind == "rename":
            op.path, op.path2 = rng.choice(FILES), rng.choice(FILES)
        elif kind == "chmod":
            op.path = rng.choice(FILES + DIRS)
        else:
            op.path = rng.choice(FILES)
        full = str(peer.path / op.path)
        op.wall = time.time()
        op.t0 = time.monotonic()
        err = None
        # An EIO before the file is open is the lazy fetch's; so is one of a read after
        # a read-only open, which waits for the first chunk only (the rest arrive as
        # they are read: syncd/fetcher.py).
        opened = False
        try:
            if kind in ("write", "big"):
                try:
                    fd = os.open(full, os.O_RDWR)
                except FileNotFoundError:
                    data = self.content(peer.name, op.path, rng, big=kind == "big")
                    op.new, op.size, op.note = digest(data), len(data), "create"
                    fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    opened = True
                    try:
                        os.write(fd, data)
                    finally:
                        os.close(fd)
                else:
                    opened = True
                    try:
                        old = read_all(fd)
                        op.observed = digest(old)
                        self.check_read(peer, op.path, old, "a write's read")
                        data = self.content(peer.name, op.path, rng, big=kind == "big")
                        op.new, op.size = digest(data), len(data)
                        os.ftruncate(fd, 0)
                        os.pwrite(fd, data, 0)
                    finally:
                        os.close(fd)
            elif kind == "blind":
                data = self.content(peer.name, op.path, rng)
                op.new, op.size = digest(data), len(data)
                fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                opened = True
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
            elif kind in ("append", "truncate"):
                fd = os.open(full, os.O_RDWR | (os.O_APPEND if kind == "append" else 0))
                opened = True
                try:
                    old = read_all(fd)
                    op.observed = digest(old)
                    self.check_read(peer, op.path, old, f"an {kind}'s read")
                    if kind == "append":
                        extra = f"[+{peer.name}#{self.next_id()}]".encode() + \
                            rng.randbytes(rng.choice([1, 100, 5000]))
                        data = old + extra
                        self.know(data)
                        op.new, op.size = digest(data), len(data)
                        os.write(fd, extra)
                    else:
                        n = rng.choice([0, len(old) // 2, len(old) + 100,
                                        rng.randrange(0, len(old) + 2)])
                        data = (old + bytes(max(0, n - len(old))))[:n]
                        self.know(data)
                        op.new, op.size = digest(data), n
                        os.ftruncate(fd, n)
                finally:
                    os.close(fd)
            elif kind == "read":
                fd = os.open(full, os.O_RDONLY)
                opened = True
                try:
                    data = read_all(fd)
                finally:
                    os.close(fd)
                op.observed = digest(data)
                self.check_read(peer, op.path, data, "a read")
            elif kind in ("rename", "rename_dir"):
                os.rename(full, str(peer.path / op.path2))
            elif kind == "mkdir":
                os.mkdir(full)
            elif kind == "rmdir":
                os.rmdir(full)
            elif kind == "unlink":
                os.unlink(full)
            elif kind == "chmod":
                mode = rng.choice(DIR_MODES if op.path in DIRS else FILE_MODES)
                op.note = oct(mode)
                os.chmod(full, mode)
        except OSError as e:
            err = e.errno
            op.error = errno.errorcode.get(e.errno, str(e.errno))
        op.t1 = time.monotonic()
        if err is None and op.new is not None and not self.stamped(peer, op.new):
            op.note = (op.note or "") + " on no node right after its close"
            with self.lock:
                self.unstamped.add(op.new)
        if err is None and op.new is not None:
            with self.lock:
                self.versions.append(Version(r, peer.name, op.path, op.new, op.size or 0,
                                             op.t0, op.t1, island, op.wall))
        self.record(op)
        if island:
            self.check_island(peer, op, err)
        if err is None or err in EXPECTED:
            return
        if err in DOWN and self.killed_during(peer.name, op.t0, op.t1):
            return
        if err == errno.ESTALE and kind in ("rename", "rename_dir") and not island:
            # The kernel's, and nothing renamed: the rename's lookup met a directory a
            # peer just moved, whose old entry the kernel still caches (its invalidation
            # is asynchronous, mount/notify.py), and it cannot move that entry while the
            # rename holds the file system's rename lock (d_splice_alias, __d_unalias).
            # docs/cli.md says so. An island has no peers' moves: there it fails.
            return
        # ESTALE: the fetch found a newer version and the kernel's one retry of the open
        # met a newer one again; checked as an EIO is.
        if err in FETCH_ERRORS and (not opened or kind == "read") and kind not in (
                "rename", "rename_dir", "mkdir", "rmdir", "unlink", "chmod"):
            with self.lock:
                self.eio.append(op)
            return
        self.fail(f"{peer.name}: {kind} {op.path} {op.path2 or ''} failed: "
                  f"{errno.errorcode.get(err, err)}")

    def check_island(self, peer: SoakPeer, op: Op, err: int | None) -> None:
        """An island's mount behaves as a local file system, and the model follows it."""
        m = peer.model
        kind, path = op.kind, op.path
        if kind in ("write", "big"):
            if op.note == "create":  # open(O_RDWR) said ENOENT, then O_CREAT | O_EXCL
                first = m.open_existing(path, True)
                if first != errno.ENOENT:
                    self.fail(f"island {peer.name}: open {path} gave ENOENT, a local file "
                              f"system gives {errno.errorcode.get(first, 'success')}")
                    return
                want = m.create(path)
            else:
                want = m.open_existing(path, True)
                if want is None and err == errno.EIO and m.content(path) is None:
                    return  # content from before the island that it cannot fetch
            if err is None and want is None:
                m.set_content(path, op.new)
                peer.island_written.add(op.new)
                return
        elif kind == "blind":
            want = m.parent_error(path) or (errno.EISDIR if m.kind(path) == DIR else None)
            if err is None and want is None:
                m.set_content(path, op.new)
                peer.island_written.add(op.new)
                return
        elif kind in ("append", "truncate", "read"):
            want = m.open_existing(path, kind != "read")
            if want is None and m.kind(path) == DIR:
                want = errno.EISDIR  # read(2) of a directory
            if want is None and err == errno.EIO and m.content(path) is None:
                return  # content from before the island that it cannot fetch
            if err is None and want is None:
                known = m.content(path)
                if known is not None and known != op.observed:
                    self.fail(f"island {peer.name}: {kind} of {path} read {op.observed}, "
                              f"the model says {known}")
                if kind != "read":
                    m.set_content(path, op.new)
                    peer.island_written.add(op.new)
                else:
                    m.set_content(path, op.observed)
                return
        elif kind in ("rename", "rename_dir"):
            want = m.rename(path, op.path2)
        elif kind == "mkdir":
            want = m.mkdir(path)
        elif kind == "rmdir":
            want = m.rmdir(path)
        elif kind == "unlink":
            want = m.unlink(path)
        elif kind == "chmod":
            want = m.chmod(path)
        else:
            raise AssertionError(kind)
        if (err is None) != (want is None) or (err != want and kind not in ("rename",
                                                                            "rename_dir")):
            self.fail(f"island {peer.name}: {kind} {path} {op.path2 or ''} gave "
                      f"{errno.errorcode.get(err, err) if err else 'success'}, a local file "
                      f"system gives {errno.errorcode.get(want, want) if want else 'success'}")

    # -- faults

    def fault_loop(self, rng: random.Random, length: float) -> None:
        """Start random faults until the round's activity ends; each undoes itself."""
        end = time.monotonic() + length
        running: list[threading.Thread] = []
        if "island" in self.fault_menu and rng.random() < 0.5 and length >= 6:
            island = rng.choice(self.peers)
            delay = rng.uniform(0, length / 3)
            running.append(self._spawn(self.island, island, delay))
        menu = [f for f in self.fault_menu if f != "island"]
        while menu and not self.stop.wait(rng.uniform(0.5, 2.5)):
            if time.monotonic() > end - 1:
                break
            kind = rng.choice(menu)
            duration = rng.uniform(0.5, 4.0)
            running = [t for t in running if t.is_alive()]
            running.append(self._spawn(getattr(self, f"fault_{kind}"), rng.random(),
                                       duration))
        for t in running:
            t.join(120)

    def _spawn(self, fn, *args) -> threading.Thread:
        def run():
            try:
                fn(*args)
            except Exception as e:
                self.fail(f"fault {fn.__name__} failed: {e!r}")

        t = threading.Thread(target=run, daemon=True, name=fn.__name__)
        t.start()
        return t

    def begin(self, kind: str, peers: tuple[str, ...], note: str = "") -> Fault:
        f = Fault(kind, peers, time.monotonic(), note=note)
        with self.lock:
            self.faults.append(f)
            self.log_line({"fault": kind, "peers": peers, "note": note, "t0": f.t0,
                           "wall": time.time()})
        self.say(f"  fault {kind} {' '.join(peers)} {note}".rstrip())
        return f

    def end(self, f: Fault) -> None:
        f.t1 = time.monotonic()
        with self.lock:
            self.log_line({"fault end": f.kind, "peers": f.peers, "t1": f.t1})

    def stacks(self) -> str:
        """Every thread of the soak and where it is (for a stuck one)."""
        return "\n".join(f"-- {t.name}\n{stack(t)}" for t in threading.enumerate()
                         if t is not threading.current_thread())

    def usable(self, exclude=()) -> list[SoakPeer]:
        """Peers a fault may act on: not an island, not busy with another fault."""
        return [p for p in self.peers
                if p.model is None and p.up and not p.corrupt and p.name not in exclude
                and not p.busy]

    def island(self, peer: SoakPeer, delay: float) -> None:
        """Cut one peer off from both others until the round's activity ends."""
        if self.stop.wait(delay):
            return
        with self.fault_lock:
            if peer.busy or not peer.up or peer.corrupt:
                return
            peer.busy = True
        with peer.lock:
            f = self.begin("island", (peer.name,))
            others = [(peer.name, q.name) for q in self.peers if q is not peer]
            self.board.claim(others, "reset")
            self.link_relay(peer, False)  # and off the relay
            time.sleep(0.5)  # what was in flight lands and its invalidations reach the kernel
            peer.model = Model(self.snapshot(peer))
            peer.island_written = set()
        self.stop.wait()
        self.board.release(others, "reset")
        self.link_relay(peer, True)
        self.end(f)
        peer.busy = False

    def link_relay(self, peer: SoakPeer, on: bool) -> None:
        """Point the peer's way to the relay at it, or at nothing (an island)."""
        link = self.relay_links / peer.name
        tmp = link.with_name(f".{peer.name}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.relay if on else self.root / "no-relay-here")
        os.replace(tmp, link)

    def fault_unplug(self, u: float, duration: float) -> None:
        """The relay's directory goes away (a disk unplugged), then comes back."""
        if not self.relay_lock.acquire(blocking=False):
            return
        try:
            f = self.begin("unplug", ())
            away = self.relay.with_name("relay-unplugged")
            os.rename(self.relay, away)
            self.stop.wait(duration)
            os.rename(away, self.relay)
            self.end(f)
        finally:
            self.relay_lock.release()

    def fault_relay_damage(self, u: float, duration: float) -> None:
        """Objects on the relay are truncated or altered in place for a while, then put
        back (unless their writer replaced or removed them meanwhile)."""
        if not self.relay_lock.acquire(blocking=False):
            return
        try:
            rng = random.Random(u)
            kinds = [k for k in RELAY_KINDS if (self.relay / k).is_dir()]
            names = [str(path.relative_to(self.relay))
                     for k in rng.sample(kinds, min(len(kinds), rng.randint(1, 2)))
                     for path in (self.relay / k).rglob("*")
                     if path.is_file() and not path.name.startswith(".")]
            if not names:
                return
            chosen = sorted(rng.sample(names, min(len(names), rng.randint(1, 4))))
            how = rng.choice(["truncated", "altered"])
            f = self.begin("relay_damage", (), f"{how} {' '.join(chosen)}")
            saved = [self.damage_object(name, how, rng) for name in chosen]
            self.stop.wait(duration)
            for entry in filter(None, saved):
                self.restore_object(*entry)
            self.end(f)
        finally:
            self.relay_lock.release()

    def damage_object(self, name: str, how: str, rng: random.Random):
        """Damage the object in place (through the file its name had when opened, so a
        writer's rename over it is never undone); (name, inode, right bytes)."""
        try:
            with open(self.relay / name, "r+b") as f:
                data = f.read()
                if how == "truncated":
                    f.truncate(rng.randrange(len(data)) if data else 0)
                elif data:
                    at = rng.randrange(len(data))
                    f.seek(at)
                    f.write(bytes([data[at] ^ 0xFF]))
                return name, os.fstat(f.fileno()).st_ino, data
        except FileNotFoundError:
            return None

    def restore_object(self, name: str, ino: int, data: bytes) -> None:
        try:
            with open(self.relay / name, "r+b") as f:
                if os.fstat(f.fileno()).st_ino == ino:  # not replaced by its writer since
                    f.write(data)
                    f.truncate(len(data))
        except FileNotFoundError:
            pass

    def snapshot(self, peer: SoakPeer) -> dict[str, tuple[str, str | None]]:
        out = {}
        for dirpath, dirnames, filenames in os.walk(peer.path):
            rel = os.path.relpath(dirpath, peer.path)
            for d in dirnames:
                out[posixpath.normpath(posixpath.join(rel, d))] = (DIR, None)
            for n in filenames:
                out[posixpath.normpath(posixpath.join(rel, n))] = (FILE, None)
        return out

    def pick(self, u: float, n: int, exclude=()) -> list[SoakPeer] | None:
        """n peers for a fault, marked busy (the fault unmarks them)."""
        with self.fault_lock:
            cands = self.usable(exclude)
            if len(cands) < n:
                return None
            chosen = random.Random(u).sample(cands, n)
            for p in chosen:
                p.busy = True
            return chosen

    def killed_during(self, name: str, t0: float, t1: float) -> bool:
        with self.lock:
            return any(f.kind in ("kill", "xfer_kill") and name in f.peers and f.t0 <= t1
                       and (f.t1 is None or f.t1 >= t0) for f in self.faults)

    def fault_kill(self, u: float, duration: float) -> None:
        """kill -9 a peer's serving process (mid-operation, mid-transfer), then mount it
        again."""
        chosen = self.pick(u, 1)
        if not chosen:
            return
        (p,) = chosen
        try:
            self.kill_and_remount(p, duration * 0.3)
        finally:
            p.busy = False

    def kill_and_remount(self, p: SoakPeer, down_for: float) -> None:
        f = self.begin("kill", (p.name,))
        self.kill(p)
        with p.lock:  # the worker's current operation has failed; hold it off the mount
            p.up = False
            time.sleep(down_for)
            self.remount(p)
            p.up = True
        self.end(f)

    def kill(self, p: SoakPeer) -> None:
        """kill -9 the process serving p; it must be gone within 10 s."""
        pid = lock_pid(p.home)
        if not pid:
            return
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if alive(pid):
            raise Failure(f"{p.name}'s mount process {pid} is still there 10 s after "
                          f"SIGKILL:\n{threads_of(pid)}")
        time.sleep(0.2)
        if Home(p.home).holder() is not None:
            # Killed while its notifier waited on a directory that a request in flight
            # held: a thread is left, and the mount hangs. What a user runs ends it.
            self.say(f"  {p.name}'s killed mount could not exit:\n{threads_of(pid)}")
            syncd(p.home, "umount", check=False)
            with self.lock:
                self.stats["stuck_after_kill"] = self.stats.get("stuck_after_kill", 0) + 1
            if Home(p.home).holder() is not None:
                raise Failure(f"{p.name}: 'syncd umount' did not end the killed mount "
                              f"{pid}:\n{threads_of(pid)}")

    def remount(self, p: SoakPeer) -> None:
        """`syncd mount` again after a kill -9: it clears the dead mount itself (soak bug
        2, fixed in 4f430b8: it used to say the mount point was busy)."""
        p.peer.start()

    def fault_partition(self, u: float, duration: float) -> None:
        """Cut one pair of peers apart; the third still talks to both."""
        chosen = self.pick(u, 2)
        if not chosen:
            return
        a, b = chosen
        mode = "blackhole" if random.Random(u).random() < 0.3 else "reset"
        f = self.begin("partition", (a.name, b.name), mode)
        self.board.claim([(a.name, b.name)], mode)
        self.stop.wait(duration)
        self.board.release([(a.name, b.name)], mode)
        self.end(f)

    def fault_flaky(self, u: float, duration: float) -> None:
        """Connections between a pair are cut after a random number of bytes."""
        chosen = self.pick(u, 2)
        if not chosen:
            return
        a, b = chosen
        f = self.begin("flaky", (a.name, b.name))
        self.board.claim([(a.name, b.name)], "flaky")
        self.stop.wait(duration)
        self.board.release([(a.name, b.name)], "flaky")
        self.end(f)

    def chunk_holders(self, chunk: str) -> list[SoakPeer]:
        out = []
        for p in self.peers:
            path = p.home / "store" / "chunks" / chunk[:2] / chunk
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if hashlib_blake3(data) == chunk:
                out.append(p)
        return out

    def corrupt(self, p: SoakPeer, chunks: list[str]) -> dict[str, bytes]:
        """Overwrite chunk files in place with wrong bytes of the same length; returns
        the right bytes to put back."""
        saved = {}
        for c in chunks:
            path = p.home / "store" / "chunks" / c[:2] / c
            try:
                data = path.read_bytes()
                with open(path, "r+b") as f:
                    f.write(bytes(b ^ 0x5A for b in data[:4096]) + data[4096:])
            except OSError:
                continue
            saved[c] = data
        return saved

    def repair(self, p: SoakPeer, saved: dict[str, bytes]) -> None:
        """The damaged peer mends itself (`syncd fetch` re-hashes and refetches damaged
        chunks); what it could not mend is put back."""
        try:
            syncd(p.home, "fetch", check=False, timeout=60)
        except subprocess.TimeoutExpired:
            self.say(f"  {p.name}: syncd fetch did not finish in 60 s")
        for c, data in saved.items():
            path = p.home / "store" / "chunks" / c[:2] / c
            try:
                now = path.read_bytes()
            except FileNotFoundError:
                continue  # dropped and not needed any more
            if hashlib_blake3(now) != c:
                self.say(f"  {p.name}: chunk {c[:12]} not mended by syncd fetch; put back")
                path.write_bytes(data)

    def fault_corrupt(self, u: float, duration: float) -> None:
        """A peer serves wrong bytes for a while: chunk files in its store that another
        peer also holds are overwritten."""
        chosen = self.pick(u, 1)
        if not chosen:
            return
        (p,) = chosen
        rng = random.Random(u)
        try:
            with p.lock:
                mine = sorted(x.name for x in (p.home / "store" / "chunks").glob("*/*")
                              if len(x.name) == 64)
                rng.shuffle(mine)
                chunks = [c for c in mine[:40] if len(self.chunk_holders(c)) >= 2][:5]
                if not chunks:
                    return
                p.corrupt = True
                f = self.begin("corrupt", (p.name,), f"{len(chunks)} chunk(s)")
                saved = self.corrupt(p, chunks)
            try:
                self.stop.wait(duration)
            finally:
                with p.lock:
                    self.repair(p, saved)
                    p.corrupt = False
                self.end(f)
        finally:
            p.busy = False

    def write_big(self, p: SoakPeer, rng: random.Random) -> tuple[str, bytes]:
        """A multi-chunk file only `p` holds (workers never touch xfer* names)."""
        name = f"xfer{self.next_id()}"
        data = self.content(p.name, name, rng, big=True) + rng.randbytes(rng.randrange(
            1 << 20, 4 << 20))
        self.know(data)
        wall, t0 = time.time(), time.monotonic()
        (p.path / name).write_bytes(data)
        with self.lock:
            self.versions.append(Version(self.round, p.name, name, digest(data), len(data),
                                         t0, time.monotonic(), False, wall))
        self.record(Op(self.round, p.name, "xfer_write", name, t0=t0, t1=time.monotonic(),
                       new=digest(data), size=len(data)))
        return name, data

    def wait_visible(self, p: SoakPeer, name: str, size: int, timeout: float = 15) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                if os.stat(p.path / name).st_size == size:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def fetch_read(self, p: SoakPeer, name: str) -> tuple[bytes | None, int | None]:
        try:
            return (p.path / name).read_bytes(), None
        except OSError as e:
            return None, e.errno

    def fault_xfer_kill(self, u: float, duration: float) -> None:
        """kill -9 the only holder of a big file while another peer fetches it, or the
        fetching peer itself; the read gets the right bytes or an error, never wrong
        bytes, and the fetch completes later."""
        chosen = self.pick(u, 2)
        if not chosen:
            return
        rng = random.Random(u)
        src, dst = chosen
        victim = src if rng.random() < 0.6 else dst
        try:
            with src.lock:
                name, data = self.write_big(src, rng)
            if not self.wait_visible(dst, name, len(data)):
                return
            f = self.begin("xfer_kill", (src.name, dst.name), f"{name}, kill {victim.name}")
            result: list = []
            with dst.lock:
                t0 = time.monotonic()
                reader = threading.Thread(target=lambda: result.append(
                    self.fetch_read(dst, name)), daemon=True)
                reader.start()
                time.sleep(rng.uniform(0.0, 0.3))
                if victim is src:
                    self.kill_and_remount(src, duration * 0.3)
                else:
                    self.kill(dst)
                reader.join(60)
                got, err = result[0] if result else (None, -1)
                op = Op(self.round, dst.name, "xfer_read", name, t0=t0, t1=time.monotonic(),
                        error=errno.errorcode.get(err, str(err)) if err else None,
                        observed=digest(got) if got is not None else None)
                self.record(op)
                if got is not None and got != data:
                    self.fail(f"{dst.name}: reading {name} while {victim.name} was killed "
                              f"gave {len(got)} wrong bytes")
                if victim is dst:
                    dst.up = False
                    self.remount(dst)
                    dst.up = True
                elif err not in (None, *FETCH_ERRORS):
                    self.fail(f"{dst.name}: reading {name} while its holder was killed "
                              f"failed with {errno.errorcode.get(err, err)}")
            self.end(f)
        finally:
            src.busy = dst.busy = False

    def fault_xfer_corrupt(self, u: float, duration: float) -> None:
        """A holder serves wrong bytes for a big file: a third peer fetching it notices,
        gets the chunk from the other holder, and never installs the wrong bytes."""
        chosen = self.pick(u, 3)
        if not chosen:
            return
        rng = random.Random(u)
        dst = chosen[0]
        # A peer asks its peers in the order they were added (by name here), online first:
        # damage the one dst asks first.
        bad, src = sorted(chosen[1:], key=lambda p: p.name)
        try:
            with src.lock:
                name, data = self.write_big(src, rng)
            if not self.wait_visible(bad, name, len(data)):
                return
            with bad.lock:
                got, err = self.fetch_read(bad, name)
            if got != data:
                return  # could not fetch it (a fault elsewhere): nothing to corrupt
            if not self.wait_visible(dst, name, len(data)):
                return
            chunks = [c for c in self.chunks_of(bad, name)]
            with bad.lock:
                bad.corrupt = True
                f = self.begin("xfer_corrupt", (src.name, bad.name, dst.name),
                               f"{name}: {len(chunks)} chunk(s) damaged on {bad.name}")
                saved = self.corrupt(bad, chunks)
            try:
                with dst.lock:
                    t0 = time.monotonic()
                    got, err = self.fetch_read(dst, name)
                    self.record(Op(self.round, dst.name, "xfer_read", name, t0=t0,
                                   t1=time.monotonic(),
                                   error=errno.errorcode.get(err, str(err)) if err else None,
                                   observed=digest(got) if got is not None else None))
                if got is not None and got != data:
                    self.fail(f"{dst.name}: read {name} while {bad.name} served damaged "
                              f"chunks and got {len(got)} wrong bytes")
                if err is not None and err not in FETCH_ERRORS:
                    self.fail(f"{dst.name}: reading {name} failed with "
                              f"{errno.errorcode.get(err, err)}")
                self.stop.wait(duration)
            finally:
                with bad.lock:
                    self.repair(bad, saved)
                    bad.corrupt = False
                self.end(f)
        finally:
            for p in chosen:
                p.busy = False

    def chunks_of(self, p: SoakPeer, name: str) -> list[str]:
        """The chunk digests of a file in p's index (read-only)."""
        conn = sqlite3.connect(f"file:{p.home / 'index.db'}?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT i.chunks FROM nodes n JOIN inodes i ON i.ino = n.ino WHERE "
                "n.parent = 'root' AND n.name = ? AND n.deleted = 0", (name,)).fetchone()
        finally:
            conn.close()
        blob = row[0] if row else b""
        return [blob[i:i + 32].hex() for i in range(0, len(blob), 32)]

    # -- healing and convergence

    def heal(self) -> None:
        self.board.heal()
        for p in self.peers:
            if not lock_pid(p.home):
                self.remount(p)
            p.up, p.corrupt = True, False

    def statuses(self) -> dict[str, dict]:
        return {p.name: status(p.home) for p in self.peers}

    def quiet(self, statuses: dict[str, dict]) -> bool:
        """Every peer and relay online with nothing pending to it."""
        return all(q["pending_changes"] == 0 and q["state"] == "online"
                   for s in statuses.values() for q in [*s["peers"], *s["relays"]])

    def listing(self, p: SoakPeer) -> dict[str, tuple]:
        """Paths, kinds, modes and sizes through the mount (no content)."""
        out = {}
        for dirpath, dirnames, filenames in os.walk(p.path):
            for n in dirnames + filenames:
                full = os.path.join(dirpath, n)
                st = os.lstat(full)
                kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
                out[os.path.relpath(full, p.path)] = (
                    kind, stat.S_IMODE(st.st_mode), st.st_size if kind == "file" else None)
        return out

    def converge(self, timeout: float = 150) -> float:
        """Poll until nothing is pending anywhere, every peer sees every other online,
        and the three listings are equal and stable."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        last = None
        quiet_since = None
        while True:
            st = self.statuses()
            if self.quiet(st):
                quiet_since = quiet_since or time.monotonic()
                listings = [self.listing(p) for p in self.peers]
                same = all(x == listings[0] for x in listings)
                if same and listings[0] == last:
                    return time.monotonic() - t0
                last = listings[0] if same else None
            else:
                quiet_since = None
            # Nothing pending and every link up for this long: nothing more will move.
            stuck = quiet_since is not None and time.monotonic() - quiet_since > 20
            if time.monotonic() > deadline or stuck:
                text = (f"no convergence after {time.monotonic() - t0:.0f} s:\n"
                        + self.describe_status(st)
                        + "\n" + self.describe_differences())
                raise Failure(text)
            time.sleep(0.5)

    def index_tree(self, p: SoakPeer) -> dict[str, tuple]:
        """The live tree as p's index has it (read-only), for telling a stale kernel
        cache from a real divergence."""
        conn = sqlite3.connect(f"file:{p.home / 'index.db'}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "SELECT n.id, n.parent, n.name, n.kind, i.mode, i.hash FROM nodes n "
                "JOIN inodes i ON i.ino = n.ino WHERE n.deleted = 0 AND n.id != 'root'"
            ).fetchall()
        finally:
            conn.close()
        by_id = {r[0]: r for r in rows}

        def path(node: str) -> str:
            parts, seen = [], set()
            while node != "root" and node in by_id and node not in seen:
                seen.add(node)
                parts.append(by_id[node][2])
                node = by_id[node][1]
            return "/".join(reversed(parts)) if node == "root" else "?/" + "/".join(
                reversed(parts))

        return {path(r[0]): (r[3], oct(r[4]), (r[5] or "")[7:19]) for r in rows}

    def describe_differences(self) -> str:
        lines = []
        for label, fn in (("mounts", self.listing), ("indexes", self.index_tree)):
            try:
                trees = {p.name: fn(p) for p in self.peers}
            except Exception as e:
                lines.append(f"  {label}: cannot list: {e!r}")
                continue
            first = trees[NAMES[0]]
            for name, t in list(trees.items())[1:]:
                for rel in sorted(set(t) | set(first)):
                    if t.get(rel) != first.get(rel):
                        lines.append(f"  {label}: {rel}: {NAMES[0]} {first.get(rel)}, "
                                     f"{name} {t.get(rel)}")
        return "\n".join(lines[:60]) or "  the mounts and indexes agree"

    def describe_status(self, st: dict[str, dict]) -> str:
        lines = []
        for name, s in st.items():
            for q in [*s["peers"], *s["relays"]]:
                lines.append(f"  {name} -> {q['name']}: {q['state']}, "
                             f"{q['pending_changes']} pending, error {q['last_error']}")
        return "\n".join(lines)

    # -- checks

    def tree(self, p: SoakPeer) -> dict[str, tuple]:
        """Paths, kinds, modes and content hashes, content read through the mount."""
        out = {}
        for rel, (kind, mode, _) in self.listing(p).items():
            if kind == "file":
                try:
                    data = (p.path / rel).read_bytes()
                    out[rel] = (kind, mode, digest(data), len(data))
                except OSError as e:
                    if e.errno in (errno.ENOENT, errno.ESTALE):
                        self.vanished.add((p.name, rel))
                    out[rel] = (kind, mode, f"error {errno.errorcode.get(e.errno)}", None)
            else:
                out[rel] = (kind, mode)
        return out

    def check_trees(self) -> dict[str, tuple] | None:
        """The converged tree, or None when reading made a peer drop files nobody holds
        (the read found no file), so the peers must converge again first."""
        self.vanished: set[tuple[str, str]] = set()
        trees = {p.name: self.tree(p) for p in self.peers}
        if self.vanished:
            self.say(f"  dropped while reading, nobody held them: {sorted(self.vanished)[:5]}")
            return None
        first = trees[NAMES[0]]
        problems = []
        for name, t in trees.items():
            for rel in sorted(set(t) | set(first)):
                if t.get(rel) != first.get(rel):
                    problems.append(f"  {rel}: {NAMES[0]} {first.get(rel)}, {name} {t.get(rel)}")
            for rel, v in t.items():
                if v[0] == "file" and str(v[2]).startswith("error"):
                    problems.append(f"  {name}: {rel} cannot be read: {v[2]}")
        if problems:
            raise Failure("the trees differ after convergence:\n" + "\n".join(problems[:40])
                          + "\n" + self.describe_differences())
        st = self.statuses()
        if not self.quiet(st):
            raise Failure("pending changes after reading every file:\n"
                          + self.describe_status(st))
        for name, s in st.items():
            if s["files"]["missing"] or s["dirty"]:
                raise Failure(f"{name}: after reading everything, status says "
                              f"{s['files']['missing']} missing, {s['dirty']} dirty")
        return first

    def node_at(self, p: SoakPeer, rel: str) -> str | None:
        conn = sqlite3.connect(f"file:{p.home / 'index.db'}?mode=ro", uri=True)
        try:
            node = "root"
            for part in rel.split("/"):
                row = conn.execute("SELECT id FROM nodes WHERE parent = ? AND name = ? AND "
                                   "deleted = 0", (node, part)).fetchone()
                if row is None:
                    return None
                node = row[0]
            return node
        finally:
            conn.close()

    def chunks_at(self, p: SoakPeer, rel: str) -> list[str] | None:
        node = self.node_at(p, rel)
        if node is None:
            return None
        conn = sqlite3.connect(f"file:{p.home / 'index.db'}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT i.chunks FROM nodes n JOIN inodes i ON i.ino = n.ino "
                               "WHERE n.id = ?", (node,)).fetchone()
        finally:
            conn.close()
        blob = row[0] if row else b""
        return [blob[i:i + 32].hex() for i in range(0, len(blob), 32)]

    def check_versions(self, tree: dict[str, tuple], required_island: dict) -> None:
        """No version lost (see test_soak.py for exactly which versions are required)."""
        r = self.round
        present: dict[str, list[str]] = {}
        for rel, v in tree.items():
            if v[0] == "file":
                present.setdefault(v[2], []).append(rel)
        lost = []
        for peer, wanted in required_island.items():
            for path, d in sorted(wanted):
                if d not in present:
                    lost.append(f"  island {peer}: the version {d} it left at {path}")
        ops = [o for o in self.ops if o.round == r]
        observed = {o.observed for o in ops if o.kind in REPLACING_READERS and o.observed}
        renames = [(o.path, o.path2) for o in ops if o.kind in ("rename", "rename_dir")]
        destroyers = [o for o in ops if o.kind in NAME_OPS]
        required = 0
        for v in self.versions:
            if v.round != r or v.island:
                continue
            if v.digest in observed:
                continue  # a later operation read it and replaced it
            paths = closure(v.path, renames)
            hit = [o for o in destroyers if o.t1 > v.t0
                   and (o.path2 if o.kind == "rename" else o.path) in paths]
            if hit:
                continue
            required += 1
            if v.digest not in present:
                never = (" Right after its close no node had it (as soak bug 8, fixed in "
                         "4f430b8)." if v.digest in self.unstamped else "")
                lost.append(f"  {v.peer} closed {v.digest} ({v.size} bytes) at {v.path} "
                            f"(t={v.t0 - self.t_start:.2f}..{v.t1 - self.t_start:.2f}); "
                            f"nothing later replaced or removed it.{never}")
        n_island = sum(len(w) for w in required_island.values())
        self.say(f"round {r}: {required} connected + {n_island} island versions required")
        self.stats["required_versions"] = self.stats.get("required_versions", 0) + required
        self.stats["required_island"] = self.stats.get("required_island", 0) + n_island
        if lost:
            raise Failure("versions lost:\n" + "\n".join(lost[:40]))

    def stamped(self, peer: SoakPeer, data_digest: str) -> bool:
        """Right after a close returned: is the version it committed in the peer's index,
        as the content of a live node (its own, or a conflict copy when it was merged as
        concurrent, DESIGN rule 6), or journalled as a content change (a peer's change may
        already have replaced it)? Soak bug 8 committed it to an inode no node had."""
        h = self.hashes[data_digest]
        conn = sqlite3.connect(f"file:{peer.home / 'index.db'}?mode=ro", uri=True)
        try:
            if conn.execute("SELECT 1 FROM nodes n JOIN inodes i ON i.ino = n.ino WHERE "
                            "n.deleted = 0 AND i.hash = ?", (h,)).fetchone():
                return True
            return conn.execute(
                "SELECT 1 FROM journal WHERE seq > (SELECT max(seq) - 5000 FROM journal) AND"
                " op = 'content' AND instr(detail, ?) > 0", (h,)).fetchone() is not None
        finally:
            conn.close()

    def check_eio(self) -> None:
        """An open that cannot fetch content fails with EIO (or ESTALE, when the version
        it found newer was gone too), and so does a read of a file opened read-only while
        it arrives; that is right only while some fault keeps every holder out of reach.
        The fetcher's log line for the file says why each peer failed. Every peer
        answering that it does not hold the chunk was bug 7 (the holder had replaced that
        version), then bug 16 (the same race, and a file a move brought back from its
        holder's delete): holders now keep replaced chunks until every peer has seen the
        replacement. A connection closed as the request went out was bug 9, fixed in
        4d297d5."""
        r = self.round
        logs = {}
        for op in [o for o in self.eio if o.round == r]:
            faults = [f for f in self.faults
                      if f.t0 <= op.t1 and (f.t1 is None or f.t1 >= op.t0 - 2.0)]
            if faults:
                continue
            if op.peer not in logs:
                logs[op.peer] = self.logs()[op.peer].splitlines()
            name = repr(posixpath.basename(op.path))
            # the fetcher logs before the open returns: within the operation's own time
            why = fetch_failures(logs[op.peer], op.wall - 0.05,
                                 op.wall + op.t1 - op.t0 + 0.05, name)
            self.fail(f"{op.peer}: {op.kind} of {op.path} got {op.error} at "
                      f"t={op.t0 - self.t_start:.2f} with no fault active; the fetcher "
                      f"said: {why}")


def fetch_failures(lines: list[str], since: float, until: float,
                   what: str) -> list[list[str]]:
    """The fetcher's 'cannot fetch WHAT: ...; tried: A (why); B (why)' lines logged
    between two times, each as its list of tries."""
    out = []
    for line in lines:
        # the fetcher names the file, or its inode once a peer's change took it away;
        # a read of a file still arriving says where
        if not re.search(rf"cannot (fetch|read) ({re.escape(what)}|inode \d+)( at \d+)?:",
                         line) or \
                "tried:" not in line:
            continue
        try:
            at = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if since <= at <= until:
            out.append(line.split("tried:", 1)[1].split("; "))
    return out


def threads_of(pid: int) -> str:
    """Each thread of a process: its state, where it waits, its kernel stack."""
    out = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        def read(name: str, task=task) -> str:
            try:
                return (task / name).read_text().strip()
            except OSError as e:
                return f"({e.strerror})"
        state = read("stat").split(")")[-1].split()[:1]
        out.append(f"  thread {task.name} {read('comm')} state {state} wchan {read('wchan')}"
                   f"\n    " + read("stack").replace("\n", "\n    "))
    return "\n".join(out)


def stack(t: threading.Thread) -> str:
    frame = sys._current_frames().get(t.ident)
    return "".join(traceback.format_stack(frame)) if frame else "(gone)"


def closure(path: str, renames: list[tuple[str, str]], cap: int = 400) -> set[str]:
    """Every path a node at `path` may have been at during the round: renames are applied
    both ways (a peer may not have seen one yet), a directory's to everything under it."""
    seen = {path}
    frontier = [path]
    while frontier:
        p = frontier.pop()
        for a, b in renames:
            for x, y in ((a, b), (b, a)):
                if p == x or p.startswith(x + "/"):
                    q = y + p[len(x):]
                    if q not in seen:
                        seen.add(q)
                        frontier.append(q)
                        if len(seen) > cap:
                            return ALL
    return seen


class _All(set):
    def __contains__(self, item) -> bool:
        return True


ALL = _All()


def hashlib_blake3(data: bytes) -> str:
    import blake3

    return blake3.blake3(data).hexdigest()


