"""Large shares: an import against `cp -a`, then what a big share costs, in one run.

    python bench/scale.py                       # 100,000-file import, a 1,000,000-file share
    python bench/scale.py --files 10000 --share-files 50000 --dir-files 10000  # smoke

Run it as root with the python whose bin/ holds `syncd` (or --syncd). One fresh base dir
(in /var/tmp or --dir), removed at the end. Workloads:

  import   a tree of --files files of 4 KiB (100 per directory) put into an idle home with
           `syncd import`, against `cp -a` of the same tree into a plain directory on the
           same disk (caches dropped before each): files/s and the ratio, medians of
           --repeat rounds; --before SYNCD times another syncd's import in the same rounds.
  share    the home grown to --share-files files by more imports (one directory holding
           --dir-files of them), then: `syncd status --json` (median of 5), the mount
           until it answers (`syncd mount`, median of 3), both also on an empty home in
           the same run (what they cost whatever the share holds: Python and imports),
           `ls -f` of the big directory through a fresh mount (entries/s, cold kernel
           caches) once its start is over and right after it answers, and `find` over
           the whole mount against `find` over the source trees (warm).
  join     a fresh peer joining the --files share (alpha mounted with it, beta new and
           mounted): until every file is listed on beta and all of them read the same,
           against `rsync -a` of the same tree into an empty directory.
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import alive, free_port, mounted

KIB = 1 << 10
# Seconds after a mount answers until its start is over: the peer side is imported and
# built, and the ignore rules' first walk done, meanwhile (syncd/serving.py).
SETTLED = 5
notes = []


def note(msg):
    print("note:", msg, flush=True)
    notes.append(msg)


def run(cmd, check=True, timeout=3600, **kw):
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, **kw)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {done.returncode}\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def drop_caches():
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        note(f"could not drop caches ({e})")


def make_tree(root, files, per_dir=100):
    """`files` files of 4 KiB, distinct, `per_dir` to a directory."""
    block = bytearray(os.urandom(4 * KIB))
    for i in range(files):
        d = root / f"d{i // per_dir:05d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        block[:8] = i.to_bytes(8, "little")
        (d / f"f{i:07d}").write_bytes(block)


class Home:
    def __init__(self, exe, path, name):
        self.exe, self.path, self.name = exe, path, name
        self.port, self.mnt, self.pid = free_port(), None, None

    def cli(self, *args, **kw):
        return run([self.exe, "--home", self.path, *args], **kw)

    def init(self, key=None):
        self.cli("init", "--name", self.name, "--listen", f"127.0.0.1:{self.port}",
                 *(["--cluster-key", key] if key else []))
        return self.cli("cluster-key").split()[-1]

    def mount(self, mnt):
        self.mnt = mnt
        mnt.mkdir(exist_ok=True)
        out = self.cli("mount", mnt)
        self.pid = int(re.search(r"\(pid (\d+)\)", out).group(1))

    def umount(self):
        if self.mnt is None or not (mounted(self.mnt) or (self.pid and alive(self.pid))):
            return
        self.cli("umount", check=False, timeout=600)
        if mounted(self.mnt):
            run(["fusermount3", "-u", "-z", self.mnt], check=False)
        for _ in range(100):
            if not (self.pid and alive(self.pid)):
                break
            time.sleep(0.1)
        else:
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None


def bench_import(base, exe, args, res):
    """`cp -a` and `syncd import` of one tree, --repeat times (and the --before syncd's
    import in the same rounds, alternating which goes first); medians. The first home
    the import made goes on to the share workload; the others are removed at once (a
    100,000-file home is about 450 MB)."""
    src = base / "src0"
    make_tree(src, args.files)
    sides = [("import", exe)] + ([("before", args.before)] if args.before else [])
    times = {"cp": [], **{name: [] for name, _ in sides}}
    kept = None
    for r in range(args.repeat):
        plain = base / "plain"
        drop_caches()
        times["cp"].append(timed(lambda plain=plain: run(["cp", "-a", src, plain])))
        shutil.rmtree(plain)
        for name, syncd in sides[::-1] if r % 2 else sides:
            home = Home(syncd, base / f"{name}-{r}", "alpha")
            home.init()
            drop_caches()
            times[name].append(timed(lambda h=home: h.cli("import", src, "--into", "src0")))
            if kept is None and name == "import" and "share" in args.only:
                kept = home
            else:
                shutil.rmtree(home.path)
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
              flush=True)
    cp, imp = statistics.median(times["cp"]), statistics.median(times["import"])
    res["import"] = {"files": args.files, "cp_s": cp, "import_s": imp,
                     "cp_files_s": args.files / cp, "import_files_s": args.files / imp,
                     "ratio": cp / imp, "rounds": times}
    line = (f"import {args.files:,} files (median of {args.repeat}): syncd import {imp:.2f} s, "
            f"cp -a {cp:.2f} s, ratio {cp / imp:.2f}")
    if args.before:
        before = statistics.median(times["before"])
        res["import"] |= {"before_s": before, "before_ratio": cp / before}
        line += f"; before ({args.before}) {before:.2f} s, ratio {cp / before:.2f}"
    print(line, flush=True)
    return kept


def status_and_mount(home, mnt):
    """`syncd status --json` (median of 5) and `syncd mount` until it answers (median of
    3), in seconds."""
    status = statistics.median(timed(lambda: home.cli("status", "--json")) for _ in range(5))
    ready = []
    for _ in range(3):
        try:
            ready.append(timed(lambda: home.mount(mnt)))
        finally:
            home.umount()
    return status, statistics.median(ready)


def bench_share(base, home, args, res):
    empty = Home(home.exe, base / "empty", "empty")
    empty.init()
    empty_status, empty_ready = status_and_mount(empty, base / "mnt-empty")
    big = base / "bigdir"
    big.mkdir()
    block = os.urandom(64)
    for i in range(args.dir_files):
        (big / f"e{i:07d}").write_bytes(block + i.to_bytes(8, "little"))
    home.cli("import", big, "--into", "bigdir")
    have, k = args.files + args.dir_files, 1
    while have < args.share_files:
        n = min(args.files, args.share_files - have)
        src = base / f"src{k}"
        make_tree(src, n)
        t = timed(lambda src=src: home.cli("import", src, "--into", src.name))
        print(f"  share: {have + n:,} files ({n / t:.0f} files/s)", flush=True)
        have, k = have + n, k + 1
    mnt = base / "mnt-alpha"
    status, ready = status_and_mount(home, mnt)
    home.mount(mnt)
    ls_first = timed(lambda: run(["ls", "-f", mnt / "bigdir"]))
    home.umount()
    home.mount(mnt)
    time.sleep(SETTLED)
    ls = timed(lambda: run(["ls", "-f", mnt / "bigdir"]))
    srcs = [p for p in base.iterdir() if p.name.startswith("src")] + [big]
    run(["find", *srcs])  # warm
    native = statistics.median(timed(lambda: run(["find", *srcs])) for _ in range(3))
    run(["find", mnt])
    find = statistics.median(timed(lambda: run(["find", mnt])) for _ in range(3))
    res["share"] = {"files": have, "status_ms": status * 1e3,
                    "status_empty_ms": empty_status * 1e3, "mount_ready_s": ready,
                    "mount_ready_empty_s": empty_ready,
                    "ls_entries_s": args.dir_files / ls,
                    "ls_first_entries_s": args.dir_files / ls_first, "find_s": find,
                    "find_native_s": native, "find_ratio": native / find}
    print(f"share of {have:,} files: status {status * 1e3:.0f} ms (an empty home: "
          f"{empty_status * 1e3:.0f} ms), mount ready {ready:.2f} s (an empty home: "
          f"{empty_ready:.2f} s), ls -f {args.dir_files / ls:,.0f} entries/s (right after the "
          f"mount answers: {args.dir_files / ls_first:,.0f}), "
          f"find {find:.2f} s (native {native:.2f} s)", flush=True)
    home.umount()


def bench_join(base, exe, args, res):
    src = base / "src0"
    a = Home(exe, base / "j-alpha", "alpha")
    key = a.init()
    a.cli("import", src, "--into", "src0")
    b = Home(exe, base / "j-beta", "beta")
    b.init(key)
    a.cli("peer", "add", "beta", f"127.0.0.1:{b.port}")
    b.cli("peer", "add", "alpha", f"127.0.0.1:{a.port}")
    try:
        a.mount(base / "mnt-ja")
        t = time.perf_counter()
        b.mount(base / "mnt-jb")
        names = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
        there = b.mnt / "src0"
        # Watched through beta's status (running totals), not its mount: looking the names
        # up, or walking the tree, through FUSE while beta applies took its trio thread
        # from the applying (100,000 lookups took most of a minute), then walked once.
        while json.loads(b.cli("status", "--json"))["files"]["total"] < len(names):
            time.sleep(0.2)
        if sum(len(files) for _, _, files in os.walk(there)) != len(names):
            raise RuntimeError("beta counts every file but does not list them all")
        listed = time.perf_counter() - t
        for name in names:
            if (there / name).read_bytes() != (src / name).read_bytes():
                raise RuntimeError(f"{name} differs on beta")
        readable = time.perf_counter() - t
    finally:
        b.umount()
        a.umount()
    dest = base / "rsync-dest"
    rs = timed(lambda: run(["rsync", "-a", f"{src}/", dest]))
    res["join"] = {"files": args.files, "listed_s": listed, "readable_s": readable,
                   "rsync_s": rs, "ratio": rs / readable}
    print(f"a fresh peer joining {args.files:,} files: listed {listed:.2f} s, all readable "
          f"{readable:.2f} s; rsync -a {rs:.2f} s (ratio {rs / readable:.2f})", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--share-files", type=int, default=1_000_000)
    p.add_argument("--dir-files", type=int, default=100_000)
    p.add_argument("--only", default="import,share,join")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--json", type=Path)
    p.add_argument("--syncd", default=str(Path(sys.executable).with_name("syncd")))
    p.add_argument("--repeat", type=int, default=1, help="rounds of the import workload")
    p.add_argument("--before", metavar="SYNCD",
                   help="another syncd (say, a checkout of the code before a change) whose "
                        "import is timed in the same rounds")
    args = p.parse_args()
    only = set(args.only.split(","))
    base = Path(tempfile.mkdtemp(prefix="syncd-scale-", dir=args.dir))
    res = {}
    homes = []
    try:
        home = bench_import(base, args.syncd, args, res)
        if home:
            homes.append(home)
        if "share" in only:
            bench_share(base, home, args, res)
        if "join" in only:
            bench_join(base, args.syncd, args, res)
    finally:
        for h in homes:
            h.umount()
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"results": res, "notes": notes}, indent=2))
    for n in notes:
        print("note:", n)


if __name__ == "__main__":
    main()
