"""Benchmark a syncd mount against a plain directory and pyfuse3's passthrough example,
all three on the same disk, in one run.

    python bench/fs.py                     # full: 1 GiB file, 10k small files, 20k-file tar
    python bench/fs.py --size-mib 64 --files 500 --tar-files 1000 --git-files 500 --repeat 1
    python bench/fs.py --only write,read --json out.json --profile

Run it as root (to drop page caches) with the python whose bin/ holds `syncd` (or --syncd)
and pyfuse3. Three sides: `native` (a plain directory), `mount` (syncd, via the real CLI:
syncd init, mount, umount) and `passthrough` (pyfuse3's own examples/passthroughfs.py, of the
installed pyfuse3's version, taken from its source distribution with `pip download` into
--cache once, mounted over a plain directory): the same Python, trio and FUSE stack as
syncd with no work of its own, so mount/passthrough shows what syncd adds to the stack.
Everything lives under one fresh base dir (in /var/tmp or --dir), removed at the end;
nothing is deleted before then, so it needs about 3 x repeat x (size + tar + clone) of free
space. Workloads, each --repeat times per side, the sides taking turns per workload: write
(1 MiB blocks, fsync at the end), read (after dropping caches), small (create + stat +
unlink of --files files, one timing), tar (`tar -xf` of --tar-files small files into an
empty dir), find (over the extracted tree, warm caches), git (`git clone --no-local` of a
local repository of --git-files files, made in the run). A fourth side, `floor`
(bench/floorfs.py --xattrs: a file system in memory on the same stack whose handlers do
nothing of note, answering getxattr as a mount with extended attributes must), runs every
workload but write and read: the request path alone, what no such mount on pyfuse3 can
beat. The table shows medians and SPEED ratios, mount speed / native speed,
mount speed / passthrough speed, mount speed / floor speed and floor speed / passthrough
speed: 1.0 = as fast, 0.5 = half as fast (for timed workloads: other seconds / mount
seconds). --profile records a py-spy speedscope profile (with idle stacks) of the mount
process during each mount workload, next to --json (else in cwd). --compare SYNCD mounts a
second syncd (another checkout's executable) beside the first, as the side `compare`, so
two versions are measured in the same run (mount/compare: 1.2 = this one 1.2x as fast);
each syncd side also prints its serving process's CPU seconds per workload
(/proc/PID/stat), which the machine's other load disturbs less than wall time.
"""
import argparse
import io
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from common import alive, cpu_seconds, free_port, mounted
from examples import mount_example, passthrough_example, unmount_example

MIB = 1 << 20
# name: (unit, higher_is_better)
WORKLOADS = {"write": ("MB/s", True), "read": ("MB/s", True), "small": ("files/s", True),
             "tar": ("s", False), "find": ("s", False), "git": ("s", False)}
SIDES = ("native", "mount", "compare", "passthrough", "floor")
# ratio key: (side, other side), each a speed ratio side / other
RATIOS = {"ratio": ("mount", "native"), "ratio_passthrough": ("mount", "passthrough"),
          "ratio_floor": ("mount", "floor"), "ratio_floor_passthrough": ("floor", "passthrough"),
          "ratio_compare": ("mount", "compare")}
FLOOR = Path(__file__).with_name("floorfs.py")
notes = []


def note(msg):
    print("note:", msg, flush=True)
    if msg not in notes:
        notes.append(msg)


def drop_caches():
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        note(f"could not drop caches ({e}): read figures are with warm caches")


def timed(reps, setup, body):
    """Run setup(i) untimed, then body(i) timed, reps times; return the seconds."""
    out = []
    for i in range(reps):
        setup(i)
        os.sync()  # earlier dirty data must not be flushed inside the timing
        t = time.perf_counter()
        body(i)
        out.append(time.perf_counter() - t)
    return out


def run(cmd, timeout=None):
    """Run cmd, return (exit code, output). Output goes via a file, not a pipe: a detached
    child that keeps the pipe open would make us wait forever."""
    with tempfile.TemporaryFile("w+") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
        out.seek(0)
        return code, out.read().strip()


class Bench:
    """The workloads on one side. Nothing is deleted between repetitions (each writes a new
    file or directory): on a file system with online discard, mass deletion slows the
    creates that follow it for a minute or more, which would skew whichever side ran next."""

    def __init__(self, root, args, tarball, repo):
        self.root, self.args, self.tarball, self.repo = Path(root), args, tarball, repo
        self.big = self.tree = self.nonce = None

    def write(self):
        block = bytearray(os.urandom(MIB))  # random, and each block distinct: no dedup

        def setup(i):
            self.big, self.nonce = self.root / f"big{i}", random.getrandbits(63)

        def body(i):
            with open(self.big, "xb", buffering=0) as f:
                for n in range(self.args.size_mib):
                    struct.pack_into("<QQ", block, 0, self.nonce, n)
                    view = memoryview(block)
                    while view:
                        view = view[f.write(view):]
                os.fsync(f.fileno())
        return timed(self.args.repeat, setup, body)

    def read(self):
        if self.nonce is None:
            self.write()
        buf = bytearray(MIB)

        def body(i):
            n = 0
            with open(self.big, "rb", buffering=0) as f:
                while got := f.readinto(buf):
                    if n % MIB == 0 and got >= 16 and struct.unpack_from("<QQ", buf) != (
                            self.nonce, n // MIB):
                        raise RuntimeError(f"read: wrong data in block {n // MIB}")
                    n += got
            if n != self.args.size_mib * MIB:
                raise RuntimeError(f"read: got {n} bytes, wrote {self.args.size_mib * MIB}")
        return timed(self.args.repeat, lambda i: drop_caches(), body)

    def small(self):
        def body(i):
            d = self.root / f"small{i}"
            names = [str(d / f"f{k:05d}") for k in range(self.args.files)]
            for k, p in enumerate(names):
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, b"file %d\n" % k)
                os.close(fd)
            for k, p in enumerate(names):
                if os.stat(p).st_size != len(b"file %d\n" % k):
                    raise RuntimeError(f"small: wrong size of {p}")
            for p in names:
                os.unlink(p)
        return timed(self.args.repeat, lambda i: (self.root / f"small{i}").mkdir(), body)

    def tar(self):
        def setup(i):
            self.tree = self.root / f"untar{i}"
            self.tree.mkdir()

        def body(i):
            code, out = run(["tar", "-xf", self.tarball, "-C", self.tree])
            if code:
                raise RuntimeError(f"tar -xf failed ({code}): {out[:300]}")
        return timed(self.args.repeat, setup, body)

    def find(self):
        if self.tree is None:
            self.tar()
        want = self.args.tar_files + -(-self.args.tar_files // 100) + 1

        def body(i):
            r = subprocess.run(["find", self.tree], stdout=subprocess.PIPE, check=True)
            if (got := r.stdout.count(b"\n")) != want:
                raise RuntimeError(f"find: {got} entries, want {want}")
        body(-1)  # warm the caches
        return timed(self.args.repeat, lambda i: None, body)

    def git(self):
        def body(i):
            # --no-local: a pack is made, sent, indexed and checked out, as over a network;
            # a local clone would hard-link the objects on one side and copy on the others.
            dest = self.root / f"clone{i}"
            code, out = run(["git", "clone", "-q", "--no-local", self.repo, dest])
            if code or not (dest / REPO_LAST).exists():
                raise RuntimeError(f"git clone failed ({code}): {out[:300]}")
        return timed(self.args.repeat, lambda i: None, body)


def make_tarball(path, nfiles, seed=1234):
    """Deterministic tar of nfiles files of 100-2000 bytes, 100 files per directory."""
    rng = random.Random(seed)
    with tarfile.open(path, "w") as tf:
        for k in range(nfiles):
            if k % 100 == 0:
                ti = tarfile.TarInfo(f"d{k // 100:03d}")
                ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
                tf.addfile(ti)
            data = rng.randbytes(rng.randint(100, 2000))
            ti = tarfile.TarInfo(f"d{k // 100:03d}/f{k % 100:03d}")
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1_700_000_000
            tf.addfile(ti, io.BytesIO(data))


REPO_LAST = "README"  # the last file make_repo writes


def make_repo(path, nfiles, seed=4321):
    """A git repository of nfiles text files of 200-8000 bytes, 100 per directory in two
    levels (as source trees go), in one commit."""
    rng = random.Random(seed)
    for k in range(nfiles):
        f = path / f"m{k // 1000:02d}" / f"p{k // 100 % 10}" / f"f{k % 100:03d}.c"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(rng.randbytes(rng.randint(100, 4000)).hex())
    (path / REPO_LAST).write_text("bench repository\n")
    git = ["git", "-C", str(path), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "tree"]):
        code, out = run(git + cmd)
        if code:
            sys.exit(f"making the git repository failed: git {cmd[0]}: {out}")


def machine_facts(base):
    fs = run(["df", "--output=fstype,source,target", base])[1].splitlines()[-1].split()
    opts = [ln.split()[3] for ln in Path("/proc/mounts").read_text().splitlines()
            if ln.split()[1] == fs[2]]
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    return {"nproc": os.cpu_count(), "kernel": platform.release(),
            "base_fs": f"{fs[0]} ({fs[1]} on {fs[2]}, {opts[-1] if opts else '?'})",
            "cpu": cpu.group(1) if cpu else "?", "mem_gib": round(int(mem.group(1)) / MIB, 1),
            "python": platform.python_version()}



def tool(name):
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def mount(syncd, home, mnt):
    # A free port: another syncd on this machine may serve on the default one.
    init = ["init", "--name", "bench", "--listen", f"127.0.0.1:{free_port()}"]
    for cmd in (init, ["mount", str(mnt)]):
        code, out = run([syncd, "--home", str(home), *cmd], timeout=120)
        if code:
            log = (home / "mount.log").read_text()[-2000:] if (home / "mount.log").exists() else ""
            sys.exit(f"syncd {cmd[0]} failed ({code}): {out}\n{log}")
    print(out, flush=True)
    m = re.search(r"\(pid (\d+)\)", out)
    return int(m.group(1)) if m else lock_pid(home)


def lock_pid(home):
    try:
        text = (home / "lock").read_text()
    except FileNotFoundError:
        return None
    m = re.search(r'"pid":\s*(\d+)', text) or re.search(r"(\d+)", text)
    return int(m.group(1)) if m else None


def unmount(syncd, home, mnt, pid):
    t = time.perf_counter()
    try:
        code, out = run([syncd, "--home", str(home), "umount"], timeout=600)
        print(f"syncd umount: exit {code} after {time.perf_counter() - t:.1f}s {out}")
    except subprocess.TimeoutExpired:
        note("syncd umount did not return within 600s")
    if mounted(mnt):
        note("the mount was still there after syncd umount: fusermount3 -u -z")
        run(["fusermount3", "-u", "-z", str(mnt)])
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for _ in range(50):
            if not (pid and alive(pid)):
                return
            time.sleep(0.2)
        note(f"the serving process {pid} was still running: {sig.name}")
        os.kill(pid, sig)


def run_workload(w, side, bench, results, pyspy=None, pid=None, prof_dir=None):
    prof = None
    cpu = cpu_seconds(pid) if pid else None
    if pyspy and pid:
        out = prof_dir / f"syncd-profile-{w}.speedscope.json"
        prof = subprocess.Popen([pyspy, "record", "--pid", str(pid), "--format", "speedscope",
                                 "--idle", "--output", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)  # let py-spy attach
    try:
        secs = results.setdefault(w, {})[side] = getattr(bench, w)()
        used = "" if cpu is None else \
            f" (serving process: {cpu_seconds(pid) - cpu:.2f} s CPU in all)"
        print(f"  {side:11} {w:5} " + " ".join(f"{s:.3f}s" for s in secs) + used, flush=True)
    except Exception as e:  # keep going: the failure shows in the table and notes
        results.setdefault(w, {})[side] = f"error: {e}"
        note(f"{side} {w} failed: {type(e).__name__}: {e}")
    finally:
        if prof:
            prof.send_signal(signal.SIGINT)
            if prof.wait(timeout=120) or not out.exists():
                note(f"py-spy failed during mount {w} (exit {prof.returncode})")
            else:
                print(f"  profile of the mount during {w}: {out}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", help="where to make the fresh base dir (default /var/tmp)")
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--files", type=int, default=10000)
    p.add_argument("--tar-files", type=int, default=20000)
    p.add_argument("--git-files", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", default=",".join(WORKLOADS), help="comma list, default: all")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--syncd", help="syncd executable (default: next to python, else PATH)")
    p.add_argument("--profile", action="store_true", help="py-spy the mount during each workload")
    p.add_argument("--compare", metavar="SYNCD",
                   help="another syncd executable, mounted beside as the side `compare`")
    p.add_argument("--cache", default="/var/tmp/syncd-bench-cache",
                   help="where pyfuse3's source distribution is kept between runs")
    args = p.parse_args()
    only = [w for w in args.only.split(",") if w]
    if bad := set(only) - set(WORKLOADS):
        p.error(f"unknown workload(s): {', '.join(sorted(bad))}")
    if not (syncd := args.syncd or tool("syncd")):
        p.error("syncd not found next to python nor on PATH; use --syncd")
    if (pyspy := args.profile and tool("py-spy")) is None:
        note("--profile: py-spy is not installed, no profiles are recorded")
    prof_dir = Path(args.json).resolve().parent if args.json else Path.cwd()
    prof_dir.mkdir(parents=True, exist_ok=True)
    script = passthrough_example(Path(args.cache), note)

    base = Path(tempfile.mkdtemp(prefix="syncd-bench-", dir=args.dir or "/var/tmp"))
    home, tarball, repo = base / "home", base / "tree.tar", base / "repo"
    roots = {side: base / side for side in SIDES if side != "compare" or args.compare}
    for d in (*roots.values(), base / "passthrough-src"):
        d.mkdir()
    facts = machine_facts(base)
    print(f"syncd bench in {base}: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    print("ratio = mount speed / other speed (1.0 = as fast, 0.5 = half as fast;"
          " for timed workloads other s / mount s); find runs with warm caches", flush=True)
    results, pid, examples, compared = {}, None, {}, None
    try:
        if {"tar", "find"} & set(only):
            make_tarball(tarball, args.tar_files)
        if "git" in only:
            make_repo(repo, args.git_files)
        pid = mount(syncd, home, roots["mount"])
        if args.compare:
            compared = mount(args.compare, base / "home-compare", roots["compare"])
        argvs = {"floor": [FLOOR, roots["floor"], "--xattrs"]}
        if script:
            argvs["passthrough"] = [script, base / "passthrough-src", roots["passthrough"]]
        for side in ("passthrough", "floor"):
            if side in argvs:
                examples[side] = mount_example(argvs[side], roots[side], base / f"{side}.log",
                                               note)
            if not examples.get(side):
                del roots[side]
        benches = {side: Bench(root, args, tarball, repo) for side, root in roots.items()}
        for w in only:  # the sides take turns, so a slow spell of the machine hits all alike
            for side, bench in benches.items():
                if side == "floor" and w in ("write", "read"):
                    continue  # in memory: its bytes would only measure copying in Python
                if side == "mount":
                    run_workload(w, side, bench, results, pyspy, pid, prof_dir)
                elif side == "compare":
                    run_workload(w, side, bench, results, pid=compared)
                else:
                    run_workload(w, side, bench, results)
        status = run([syncd, "--home", str(home), "status", "--json"])[1]
        print("syncd status --json:", " ".join(status.split()))
    finally:
        for side, proc in examples.items():
            if proc:
                unmount_example(proc, roots[side], note)
        if (home / "lock").exists() or mounted(roots["mount"]):
            unmount(syncd, home, roots["mount"], pid or lock_pid(home))
        other = base / "home-compare"
        if args.compare and ((other / "lock").exists() or mounted(roots["compare"])):
            unmount(args.compare, other, roots["compare"], compared or lock_pid(other))
        shutil.rmtree(base, ignore_errors=True)
    report(results, only, args, facts, syncd)


def report(results, only, args, facts, syncd):
    rows = []
    for w in only:
        unit, higher = WORKLOADS[w]
        amount = {"write": args.size_mib * MIB / 1e6, "read": args.size_mib * MIB / 1e6,
                  "small": args.files}.get(w)
        row = {"workload": w, "unit": unit}
        for side in SIDES:
            secs = row[side + "_runs_s"] = results.get(w, {}).get(side, "not run")
            med = statistics.median(secs) if isinstance(secs, list) else None
            row[side] = amount / med if amount and med else med
        for key, (a, b) in RATIOS.items():
            x, y = row[a], row[b]
            row[key] = (x / y if higher else y / x) if x and y else None
        rows.append(row)
    heads = {**{side: side for side in SIDES}, **{k: "/".join(v) for k, v in RATIOS.items()}}
    if not args.compare:
        heads = {k: h for k, h in heads.items() if "compare" not in h}
    print(f"\n{'workload':10} {'unit':8} " + " ".join(f"{h:>12}" for h in heads.values()))
    for r in rows:
        f = [("-" if r[k] is None else f"{r[k]:.2f}" if r[k] >= 1 else f"{r[k]:.3g}")
             for k in heads]
        print(f"{r['workload']:10} {r['unit']:8} " + " ".join(f"{x:>12}" for x in f))
    print(f"medians of {args.repeat}; ratios = mount speed / other speed; "
          f"nproc {facts['nproc']}, kernel {facts['kernel']}, base fs {facts['base_fs']}")
    for n in notes:
        print("note:", n)
    if args.json:
        params = {k: getattr(args, k)
                  for k in ("size_mib", "files", "tar_files", "git_files", "repeat")}
        Path(args.json).write_text(json.dumps(
            {"schema_version": 3, "machine": facts, "params": params, "syncd": syncd,
             "ratio": "mount speed / native speed",
             "ratio_passthrough": "mount speed / passthrough example speed",
             "ratio_floor": "mount speed / floor speed",
             "ratio_floor_passthrough": "floor speed / passthrough example speed",
             "ratio_compare": "mount speed / the --compare syncd's speed",
             "results": rows, "notes": notes}, indent=1))


if __name__ == "__main__":
    main()
