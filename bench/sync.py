"""Propagation between two syncd peers on loopback, against an rsync daemon, in one run.

    python bench/sync.py --quick                  # smoke: 5 trials, 100 files, 16 MiB, < 1 min
    python bench/sync.py --json /tmp/sync.json    # full: 20 trials, 1,000 files, 256 MiB
    python bench/sync.py --only big --repeat 3    # the big file alone, with the wire beside

Run it as root with the python whose bin/ holds `syncd` (or --syncd). One fresh base dir (in
/var/tmp or --dir), removed at the end, holds two syncd homes made with the real CLI (init,
cluster-key, peer add, mount; free 127.0.0.1 ports), mounted as alpha (sender) and beta
(receiver), and an rsync daemon's module (127.0.0.1, free port, uid/gid root, no chroot,
TCP_NODELAY on daemon and client) with a plain source dir beside it on the same disk.

Every timer starts before the first write on the sender and stops when the last byte is
verified readable, same bytes, on the receiver, alike for both systems. syncd: write into
alpha's mount, nothing else. rsync: write into the source dir, then one
`rsync -a --sockopts=TCP_NODELAY SRC/sub/ rsync://127.0.0.1:PORT/mod/sub/`. No fsync on
either side. The receiver is polled (1 ms sleep after a miss) with stat until each file
has its size ("listed": metadata arrived), then by reading each file and comparing bytes.

  latency  one 4 KiB file, --trials times (a new file each time, same dir): median, p90
  many     --files files of 4 KiB into a fresh dir, until all are readable
  big      one --big-mib MiB file of distinct random 1 MiB blocks: MB/s, and the time from
           the last close on the sender to its first MiB readable on the receiver
  lazy     only the first open + read on beta of a 1 MiB file already listed there but
           not fetched (checked with `syncd status --json` files.missing). rsync has no
           equivalent: its column is the same read of the file rsync delivered (local).

With --relay, the same workloads also run through a directory relay on the same disk, and
through a WebDAV relay (Apache's mod_dav_fs on loopback over a directory on that disk)
(docs/protocol.md, "Relays"): for each, two more homes, not peers of each other, both
mounted, whose only link is the relay (`syncd relay add usb URL`); beside them, `rsync -a`
of the same files into a plain directory there and `rsync -a` out of it into the receiver's (local
rsync, no daemon, one after the other), the figure the issue's target compares with.

many and big run --repeat times; figures are medians. Each workload prints its phases
(written, pushed, listed, readable: seconds since the start) to show what dominates, and
for syncd the CPU seconds both peers used from the last close on (cpu), which the
machine's other load disturbs less than the times; the wire's server and client print
theirs beside.
Syncthing (../shared/docs/running-anchors.md) is not implemented: only reported as skipped.
The small files, and the big file once, are also written through pyfuse3's own
examples/passthroughfs.py (as in bench/fs.py): what writing them through any mount on this
stack costs. The big file's bytes are also moved by bench/wire.py in the same run (a bare
hypercorn server and httpx client, TLS, no disk). Since a file commits at its close, the
passthrough example's write plus the wire's time is the stack's own floor for the big row:
the report says whether 0.8x rsync is within it.
"""
import argparse
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import alive, cpu_seconds, free_port, mounted
from examples import mount_example, passthrough_example, unmount_example
from wire import measure as wire_ceiling

KIB, MIB = 1 << 10, 1 << 20
notes = []


def note(msg):
    print("note:", msg, flush=True)
    notes.append(msg)


def run(cmd, timeout=120, check=True):
    """Run cmd and return its output (exit code too unless check), through a file: a
    detached child (the syncd serving process) may keep a pipe open forever."""
    with tempfile.TemporaryFile("w+") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
        out.seek(0)
        text = out.read().strip()
    if check and code:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({code}): {text[-1500:]}")
    return text if check else (code, text)


def wait_until(what, check, *args, timeout=600):
    """Poll check(*args) until it is true, sleeping 1 ms after each miss."""
    deadline = time.monotonic() + timeout
    while not check(*args):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not there after {timeout} s")
        time.sleep(0.001)


def size_is(path, size):
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False


class Content:
    """size bytes of random blocks (1 MiB, or the whole file if smaller), each made distinct
    by a stamp: a large file costs 1 MiB of memory and nothing dedups."""

    def __init__(self, size):
        self.size, self.nonce = size, random.getrandbits(63)
        self.block = bytearray(os.urandom(min(size, MIB)))

    def at(self, n):
        struct.pack_into("<QQ", self.block, 0, self.nonce, n)
        return self.block

    def write(self, path):
        with open(path, "wb") as f:
            for n in range(self.size // len(self.block)):
                f.write(self.at(n))

    def starts(self, path):
        """Does the file at path begin with this content's first block?"""
        try:
            with open(path, "rb") as f:
                return f.read(len(self.block)) == self.at(0)
        except OSError:
            return False

    def matches(self, path):
        try:
            with open(path, "rb") as f:
                for n in range(self.size // len(self.block)):
                    if f.read(len(self.block)) != self.at(n):
                        return False
                return f.read(1) == b""
        except OSError:
            return False


class Syncd:
    name = "syncd"

    def __init__(self, exe, base):
        self.exe, self.homes, self.pids = exe, {"alpha": base / "alpha", "beta": base / "beta"}, {}
        self.mnts = {k: base / f"mnt-{k}" for k in self.homes}
        self.send, self.recv = self.mnts["alpha"], self.mnts["beta"]

    def cli(self, peer, *args, **kw):
        return run([self.exe, "--home", self.homes[peer], *args], **kw)

    def start(self):
        port = {k: free_port() for k in self.homes}
        self.cli("alpha", "init", "--name", "alpha", "--listen", f"127.0.0.1:{port['alpha']}")
        key = self.cli("alpha", "cluster-key").split()[-1]
        self.cli("beta", "init", "--name", "beta", "--listen", f"127.0.0.1:{port['beta']}",
                 "--cluster-key", key)
        self.cli("alpha", "peer", "add", "beta", f"https://127.0.0.1:{port['beta']}")
        self.cli("beta", "peer", "add", "alpha", f"https://127.0.0.1:{port['alpha']}")
        for peer, mnt in self.mnts.items():
            mnt.mkdir()
            print(out := self.cli(peer, "mount", mnt), flush=True)
            self.pids[peer] = int(re.search(r"\(pid (\d+)\)", out).group(1))
        warm = Content(4 * KIB)  # the peers have met and everything is loaded
        warm.write(self.send / "warmup")
        wait_until("syncd warm-up file", warm.matches, self.recv / "warmup", timeout=60)

    def prepare(self, sub):
        (self.send / sub).mkdir()
        wait_until(f"syncd dir {sub} on beta", (self.recv / sub).is_dir, timeout=60)
        return sub

    def push(self, sub):
        pass  # the mount pushes by itself

    def missing(self):
        return json.loads(self.cli("beta", "status", "--json"))["files"]["missing"]

    def cpu(self):
        """CPU seconds both peers' processes have used so far."""
        return sum(cpu_seconds(pid) for pid in self.pids.values())

    def stop(self):
        for peer, home in self.homes.items():
            mnt, pid = self.mnts[peer], self.pids.get(peer)
            if not (pid or (home / "lock").exists() or mounted(mnt)):
                continue
            if not pid and (home / "lock").exists():  # interrupted while mounting
                m = re.search(r'"pid":\s*(\d+)', (home / "lock").read_text(errors="replace"))
                pid = m and int(m.group(1))
            try:
                code, out = self.cli(peer, "umount", timeout=300, check=False)
                print(f"syncd umount {peer}: exit {code} {out}", flush=True)
            except subprocess.TimeoutExpired:
                note(f"syncd umount {peer} did not return within 300 s")
            if mounted(mnt):
                note(f"{mnt} still mounted after syncd umount: fusermount3 -u -z")
                run(["fusermount3", "-u", "-z", mnt], check=False)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for _ in range(50):
                    if not (pid and alive(pid)):
                        break
                    time.sleep(0.2)
                else:
                    note(f"syncd process {pid} ({peer}) still running: {sig.name}")
                    os.kill(pid, sig)



class SyncdRelay(Syncd):
    """Two homes whose only link is a directory relay: both mounted, never peers."""
    name = "relay"

    def __init__(self, exe, base):
        super().__init__(exe, base)
        self.homes = {"alpha": base / f"{self.name}-alpha", "beta": base / f"{self.name}-beta"}
        self.mnts = {k: base / f"{self.name}-mnt-{k}" for k in self.homes}
        self.send, self.recv = self.mnts["alpha"], self.mnts["beta"]
        self.dir = base / self.name

    def relay(self):
        """The relay's URL and `relay add`'s other arguments."""
        return self.dir.as_uri(), []

    def start(self):
        self.dir.mkdir()
        url, extra = self.relay()
        port = {k: free_port() for k in self.homes}
        self.cli("alpha", "init", "--name", "alpha", "--listen", f"127.0.0.1:{port['alpha']}")
        key = self.cli("alpha", "cluster-key").split()[-1]
        self.cli("beta", "init", "--name", "beta", "--listen", f"127.0.0.1:{port['beta']}",
                 "--cluster-key", key)
        for peer in self.homes:
            self.cli(peer, "relay", "add", "usb", url, *extra)
        for peer, mnt in self.mnts.items():
            mnt.mkdir()
            print(out := self.cli(peer, "mount", mnt), flush=True)
            self.pids[peer] = int(re.search(r"\(pid (\d+)\)", out).group(1))
        warm = Content(4 * KIB)
        warm.write(self.send / "warmup")
        wait_until("relay warm-up file", warm.matches, self.recv / "warmup", timeout=60)

    def stored(self):
        return sum(p.stat().st_size for p in self.dir.rglob("*") if p.is_file())


class SyncdWebDAVRelay(SyncdRelay):
    """The same through a WebDAV collection: Debian's Apache (mod_dav_fs) on loopback over
    a directory on the same disk, started as the relay tests start it."""
    name = "relay-dav"

    def __init__(self, exe, base):
        super().__init__(exe, base)
        self.server = contextlib.ExitStack()

    def relay(self):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.relay.webdav_server import webdav_server
        user, password = "bench", "bench-" + os.urandom(6).hex()
        server = self.server.enter_context(webdav_server(self.dir, user, password))
        login = self.dir.parent / "relay-dav-login"
        login.write_text(f"{user}:{password}\n")
        login.chmod(0o600)
        return server.url.rstrip("/"), ["--credentials", str(login)]

    def stop(self):
        try:
            super().stop()
        finally:
            self.server.close()


class PassthroughWrite:
    """Not a sync: the files written through pyfuse3's own examples/passthroughfs.py over a
    plain directory, and read back from that directory. The standards' reference for what
    a mount on this stack costs, so the `many` and `big` rows show how much of their time
    no pyfuse3 mount could save (the writing a syncd sender does through its mount). The
    big file is written once: the floor needs its order of magnitude, not a median."""
    name = "pt"
    workloads = ("many", "big")
    big_runs = 1

    def __init__(self, base, cache):
        self.base, self.cache, self.proc = base, cache, None
        self.send, self.recv = base / "pt-mnt", base / "pt-src"

    def start(self):
        script = passthrough_example(self.cache, note)
        for d in (self.send, self.recv):
            d.mkdir()
        if script is None or not (proc := mount_example(
                [script, self.recv, self.send], self.send, self.base / "pt.log", note)):
            raise RuntimeError("the passthrough example did not mount")
        self.proc = proc

    def prepare(self, sub):
        (self.send / sub).mkdir()
        return sub

    def push(self, sub):
        pass

    def missing(self):
        return None

    def stop(self):
        if self.proc:
            unmount_example(self.proc, self.send, note)


class Rsync:
    name = "rsync"

    def __init__(self, base):
        self.send, self.recv, self.conf = base / "rsync-src", base / "rsync-dst", base / "rsyncd"
        self.port, self.proc = free_port(), None

    def start(self):
        self.send.mkdir()
        self.recv.mkdir()
        self.conf.write_text(
            f"log file = {self.conf.parent / 'rsyncd.log'}\nsocket options = TCP_NODELAY\n"
            f"[mod]\npath = {self.recv}\nread only = no\nuid = root\ngid = root\n"
            "use chroot = no\n")
        self.proc = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={self.conf}",
                                      "--address=127.0.0.1", f"--port={self.port}"])
        wait_until("rsync daemon", lambda: self.proc.poll() is not None or self.listening(),
                   timeout=10)
        if self.proc.poll() is not None:
            raise RuntimeError(f"the rsync daemon exited ({self.proc.returncode})")

    def listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def prepare(self, sub):
        (self.send / sub).mkdir()
        self.push(sub)
        return sub

    def push(self, sub):
        run(["rsync", "-a", "--sockopts=TCP_NODELAY", f"{self.send / sub}/",
             f"rsync://127.0.0.1:{self.port}/mod/{sub}/"])

    def missing(self):
        return None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RsyncDir(Rsync):
    """rsync -a into a plain directory on the same disk, then rsync -a out of it."""
    name = "rsync-dir"

    def __init__(self, base):
        super().__init__(base)
        self.send, self.recv = base / "rsync-dir-src", base / "rsync-dir-dst"
        self.mid = base / "rsync-dir-mid"

    def start(self):
        for d in (self.send, self.recv, self.mid):
            d.mkdir()

    def push(self, sub):
        run(["rsync", "-a", f"{self.send / sub}/", f"{self.mid / sub}/"])
        run(["rsync", "-a", f"{self.mid / sub}/", f"{self.recv / sub}/"])

    def stop(self):
        pass


def transfer(s, sub, files, first=False):
    """One timed run: files ({name: Content}) written into sub on the sender, until all are
    readable on the receiver. Returns {phase: seconds since the start}: written (last close
    on the sender), pushed (the rsync run done), listed (stat on the receiver shows every
    file's size: metadata arrived), with `first` first (the first file's first block
    readable, same bytes, on the receiver), readable (the total); cpu: the CPU seconds the
    syncd peers' processes used from the last close on (not the bench's reading), which
    other load on the machine disturbs less than the times."""
    cpu = getattr(s, "cpu", None)
    t = time.perf_counter()
    for name, c in files.items():
        c.write(s.send / sub / name)
    m = {"written": time.perf_counter() - t}
    before = cpu() if cpu else None
    s.push(sub)
    m["pushed"] = time.perf_counter() - t
    for name, c in files.items():  # in order: one failing lookup per poll, not one per file
        wait_until(f"{s.name} {sub}/{name} listed", size_is, s.recv / sub / name, c.size)
    m["listed"] = time.perf_counter() - t
    if first:
        name, c = next(iter(files.items()))
        wait_until(f"{s.name} {sub}/{name} first block", c.starts, s.recv / sub / name)
        m["first"] = time.perf_counter() - t
    for name, c in files.items():
        wait_until(f"{s.name} {sub}/{name}", c.matches, s.recv / sub / name)
    m["readable"] = time.perf_counter() - t
    if cpu:
        m["cpu"] = cpu() - before
    return m


def latency(s, args):
    s.prepare("lat")
    out = []
    for i in range(args.trials):
        out.append(transfer(s, "lat", {f"f{i}": Content(4 * KIB)}))
        time.sleep(0.1)  # let the last one settle
    return out


def many(s, args):
    return [transfer(s, s.prepare(f"many{r}"),
                     {f"f{k:05d}": Content(4 * KIB) for k in range(args.files)})
            for r in range(args.repeat)]


def big(s, args):
    return [transfer(s, s.prepare(f"big{r}"), {"big": Content(args.big_mib * MIB)}, first=True)
            for r in range(getattr(s, "big_runs", args.repeat))]


def lazy(s, args):
    """Untimed: files written, pushed and listed on the receiver, never opened there; then
    each first open + read is timed."""
    files = {f"f{i}": Content(MIB) for i in range(max(3, args.trials // 4))}
    d = s.prepare("lazy")
    for name, c in files.items():
        c.write(s.send / d / name)
        s.push(d)
        wait_until(f"{s.name} {d}/{name} listed", size_is, s.recv / d / name, MIB)
    if (missing := s.missing()) is not None and missing < len(files):
        note(f"lazy: only {missing} of {len(files)} files missing on beta before their first "
             "open (content fetched ahead): those opens are not lazy")
    out = []
    for name, c in files.items():
        t = time.perf_counter()
        if not c.matches(s.recv / d / name):
            raise RuntimeError(f"{s.name} {d}/{name}: first open did not read the same bytes")
        out.append({"readable": time.perf_counter() - t})
    return out


WORKLOADS = {"latency": latency, "many": many, "big": big, "lazy": lazy}


def median(ms, phase="readable"):
    return statistics.median(m[phase] for m in ms)


def first_after_close(ms):
    """From the sender's last close to the first block readable on the receiver."""
    return statistics.median(m["first"] - m["written"] for m in ms)


def p90(ms):
    xs = [m["readable"] for m in ms]
    return statistics.quantiles(xs, n=10, method="inclusive")[8] if len(xs) > 1 else xs[0]


def report(res, args):
    def mbs(ms):
        return args.big_mib * MIB / 1e6 / median(ms)
    rows = []
    relay_rows = []
    for w, unit, wl, f, scale, target, ok in (
            ("4 KiB propagation, median", "ms", "latency", median, 1e3, "< 2000 ms",
             lambda sv, rv: sv < 2000),
            (f"{args.files:,} x 4 KiB files", "s", "many", median, 1, "<= 2x rsync in+out",
             lambda sv, rv: sv <= 2 * rv),
            (f"{args.big_mib} MiB file", "s", "big", median, 1, "<= 2x rsync in+out",
             lambda sv, rv: sv <= 2 * rv)):
        sv, dv, rv = (f(ms) * scale if isinstance(ms := res.get(side, {}).get(wl), list)
                      else None for side in ("relay", "relay-dav", "rsync-dir"))
        if sv is None and rv is None:
            continue
        both = sv is not None and rv is not None
        relay_rows.append({"workload": w, "unit": unit, "relay": sv, "relay-dav": dv,
                           "rsync-dir": rv, "ratio": sv / rv if both else None,
                           "dav-ratio": dv / rv if dv is not None and rv else None,
                           "target": target, "met": ok(sv, rv) if both else None})
    for w, unit, wl, f, scale, target, ok in (
            ("4 KiB propagation, median", "ms", "latency", median, 1e3, "<= 20 ms",
             lambda sv, rv: sv <= 20),
            ("4 KiB propagation, p90", "ms", "latency", p90, 1e3, "", None),
            (f"{args.files:,} x 4 KiB files", "s", "many", median, 1, "<= 2x rsync time",
             lambda sv, rv: sv <= 2 * rv),
            (f"{args.big_mib} MiB file", "MB/s", "big", mbs, 1, ">= 0.8x rsync MB/s",
             lambda sv, rv: sv >= 0.8 * rv),
            (f"{args.big_mib} MiB, first MiB", "ms", "big", first_after_close, 1e3,
             "< 50 ms", lambda sv, rv: sv < 50),
            ("lazy first open, 1 MiB", "ms", "lazy", median, 1e3, "< 30 ms",
             lambda sv, rv: sv < 30)):
        sv, rv = (f(ms) * scale if isinstance(ms := res.get(side, {}).get(wl), list) else None
                  for side in ("syncd", "rsync"))
        both = sv is not None and rv is not None
        rows.append({"workload": w, "unit": unit, "syncd": sv, "rsync": rv,
                     "ratio": sv / rv if both and wl != "lazy" else None, "target": target,
                     "met": ok(sv, rv) if ok and both else None})

    def fmt(x):
        return "-" if x is None else f"{x:.3g}" if x < 100 else f"{x:.0f}"
    print(f"\n{'workload':26} {'unit':5} {'syncd':>8} {'rsync':>8} {'ratio':>6}  "
          f"{'target':19} met")
    for r in rows:
        met = {None: "-", True: "met", False: "NOT MET"}[r["met"]] if r["target"] else ""
        print(f"{r['workload']:26} {r['unit']:5} {fmt(r['syncd']):>8} {fmt(r['rsync']):>8} "
              f"{fmt(r['ratio']):>6}  {r['target']:19} {met}")
    print("ratio = syncd / rsync of the figure shown (time, or MB/s); medians; lazy: rsync's "
          "figure is a plain read of the file it delivered, for scale")
    if relay_rows:
        print(f"\n{'through a relay':26} {'unit':5} {'dir':>8} {'webdav':>8} {'rsync2':>8} "
              f"{'ratio':>6} {'dav/r2':>6}  {'target (dir)':19} met")
        for r in relay_rows:
            met = {None: "-", True: "met", False: "NOT MET"}[r["met"]]
            print(f"{r['workload']:26} {r['unit']:5} {fmt(r['relay']):>8} "
                  f"{fmt(r['relay-dav']):>8} {fmt(r['rsync-dir']):>8} {fmt(r['ratio']):>6} "
                  f"{fmt(r['dav-ratio']):>6}  {r['target']:19} {met}")
        print("dir = a directory relay, webdav = a WebDAV relay (Apache on loopback); rsync2 = "
              "rsync -a into a directory on the same disk, then rsync -a out of it; ratio = "
              "dir / rsync2, dav/r2 = webdav / rsync2")
        for key in ("relay", "relay-dav"):
            if f"{key}_stored" in res:
                print(f"{key} stored {res[f'{key}_stored'] / MIB:.1f} MiB at the end")
        rows += relay_rows
    if "wire" in res and isinstance(sb := res.get("rsync", {}).get("big"), list):
        wire, goal = statistics.median(res["wire"]), 0.8 * mbs(sb)
        print(f"\nthe wire alone (bench/wire.py: hypercorn + httpx, TLS, as the fetcher asks): "
              f"{wire:.0f} MB/s; 0.8x rsync is {goal:.0f} MB/s: "
              + ("within the stack's reach" if wire >= goal else "beyond the stack's reach"))
        if isinstance(sv := res.get("syncd", {}).get("big"), list):
            print(f"CPU seconds a run: syncd's two peers {median(sv, 'cpu'):.2f}, the wire's "
                  f"server and client {statistics.median(res['wire_cpu']):.2f}")
        rows.append({"workload": f"{args.big_mib} MiB, wire alone", "unit": "MB/s",
                     "syncd": wire, "rsync": mbs(sb), "ratio": wire / mbs(sb),
                     "target": "", "met": None})
        if isinstance(pt := res.get("pt", {}).get("big"), list):
            write, move = median(pt, "written"), args.big_mib * MIB / 1e6 / wire
            floor = args.big_mib * MIB / 1e6 / (write + move)
            print(f"the stack's floor (a file commits at its close): writing it through "
                  f"pyfuse3's passthrough example {write:.2f} s + the wire {move:.2f} s = "
                  f"{floor:.0f} MB/s; 0.8x rsync ({goal:.0f} MB/s) is "
                  + ("within it" if floor >= goal else "beyond it"))
            if isinstance(sv := res.get("syncd", {}).get("big"), list):
                print(f"syncd: writing into alpha's mount {median(sv, 'written'):.2f} s, from "
                      f"its close to all readable on beta "
                      f"{statistics.median(m['readable'] - m['written'] for m in sv):.2f} s")
            rows.append({"workload": f"{args.big_mib} MiB, floor (passthrough write + wire)",
                         "unit": "MB/s", "syncd": floor, "rsync": mbs(sb),
                         "ratio": floor / mbs(sb), "target": ">= 0.8x rsync MB/s",
                         "met": floor >= goal})
    if isinstance(pt := res.get("pt", {}).get("many"), list):
        print(f"\nwriting the {args.files:,} files through pyfuse3's passthrough example "
              f"(the stack's reference): {median(pt, 'written'):.3g} s")
        rows.append({"workload": f"{args.files:,} x 4 KiB files written, passthrough",
                     "unit": "s", "syncd": median(pt, "written"), "rsync": None,
                     "ratio": None, "target": "", "met": None})
    for n in notes:
        print("note:", n)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", help="where to make the fresh base dir (default /var/tmp)")
    p.add_argument("--quick", action="store_true", help="smoke run: 5 trials, 100 files, 16 MiB")
    p.add_argument("--trials", type=int, help="latency trials (default 20, quick 5)")
    p.add_argument("--files", type=int, help="small files (default 1000, quick 100)")
    p.add_argument("--big-mib", type=int, help="big file size (default 256, quick 16)")
    p.add_argument("--repeat", type=int, default=1, help="runs of many and big (median)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--only", action="append", choices=list(WORKLOADS),
                   help="run only this workload (repeatable; default all)")
    p.add_argument("--relay", action="store_true",
                   help="also through a directory relay, against rsync in and out of a "
                        "directory")
    p.add_argument("--only-relay", action="store_true",
                   help="only the relay and its rsync comparison")
    p.add_argument("--syncd", help="syncd executable (default: next to python, else PATH)")
    p.add_argument("--cache", default="/var/tmp/syncd-bench-cache",
                   help="where pyfuse3's passthrough example is kept (as bench/fs.py)")
    args = p.parse_args()
    for k, full, quick in (("trials", 20, 5), ("files", 1000, 100), ("big_mib", 256, 16)):
        if getattr(args, k) is None:
            setattr(args, k, quick if args.quick else full)
    here = Path(sys.executable).parent / "syncd"
    exe = args.syncd or (str(here) if here.exists() else shutil.which("syncd"))
    if not exe or not shutil.which("rsync"):
        p.error("needs syncd (next to python, on PATH, or --syncd) and rsync")
    print("syncthing: " + ("installed, but not implemented in this script, skipped"
                           if shutil.which("syncthing") else "not installed, skipped"))

    def interrupted(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    base = Path(tempfile.mkdtemp(prefix="syncd-sync-bench-", dir=args.dir or "/var/tmp"))
    print(f"sync bench in {base}: nproc {os.cpu_count()}, kernel {platform.release()}, "
          f"{run(['rsync', '--version']).splitlines()[0]}", flush=True)
    systems, res = [] if args.only_relay else [Syncd(exe, base), Rsync(base)], {}
    workloads = args.only or list(WORKLOADS)
    if "many" in workloads or "big" in workloads:
        systems.append(PassthroughWrite(base, Path(args.cache)))
    if args.relay or args.only_relay:
        systems += [SyncdRelay(exe, base), RsyncDir(base)]
        if os.path.exists("/usr/sbin/apache2"):
            systems.insert(-1, SyncdWebDAVRelay(exe, base))
        else:
            note("no /usr/sbin/apache2 (Debian's apache2-bin): the WebDAV relay is skipped")
    try:
        for s in systems:
            s.start()
        for w in workloads:
            for s in systems:
                if w not in getattr(s, "workloads", WORKLOADS):
                    continue
                try:
                    ms = res.setdefault(s.name, {})[w] = WORKLOADS[w](s, args)
                    print(f"  {s.name:5} {w:7} median of {len(ms)}: " + ", ".join(
                        f"{k} {median(ms, k):.3f}s" for k in ms[0]), flush=True)
                except Exception as e:  # keep going: the failure shows in the table
                    res.setdefault(s.name, {})[w] = f"error: {e}"
                    note(f"{s.name} {w} failed: {type(e).__name__}: {e}")
        if not args.only_relay and "big" in workloads:
            res["wire"], res["wire_cpu"] = wire_ceiling(args.big_mib, args.repeat)
        for s in systems:
            if isinstance(s, SyncdRelay):
                res[f"{s.name}_stored"] = s.stored()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # let the cleanup finish
        for s in systems:
            try:
                s.stop()
            except Exception as e:
                note(f"stopping {s.name}: {type(e).__name__}: {e}")
        shutil.rmtree(base, ignore_errors=True)
    rows = report(res, args)
    if args.json:
        params = {k: getattr(args, k) for k in ("trials", "files", "big_mib", "repeat")}
        Path(args.json).write_text(json.dumps(
            {"schema_version": 1, "params": params, "syncd": exe, "nproc": os.cpu_count(),
             "kernel": platform.release(), "results": rows, "runs": res, "notes": notes},
            indent=1))


if __name__ == "__main__":
    main()
