"""What `syncd status` and `syncd mount` cost to start, for one or more builds of syncd on
the same homes in one run (README, "Large shares").

    python bench/startup.py                                 # this checkout's syncd
    python bench/startup.py --syncd ../before/.venv/bin/syncd --syncd .venv/bin/syncd

Two homes in a fresh base dir (in /var/tmp or --dir, removed at the end), made with the
first --syncd: an empty one, and one of --files empty files put in by `syncd import` (a
node and an inode each in the index, as any file has, and no content: a big share in
little disk). Then, the builds taking turns, on each home: `syncd status --json` and
`syncd mount` until it returns (the mount answers), --runs times each; printed are the
medians of the wall time and of the CPU time (user and system) of the command and, for the
mount, of the serving process until then: what the start costs, whatever else runs.

Each build's modules are byte-compiled first, as a wheel's are when installed: with
PYTHONDONTWRITEBYTECODE set and an editable install, Python would compile them at every
start (50-60 ms of `syncd status` here), a cost no user of an installed syncd pays.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import alive, free_port, mounted


def compile_build(exe: str) -> None:
    python = Path(exe).with_name("python")
    dirs = subprocess.run([python, "-c", "import syncd, syncd.index, syncd.mount as m; "
                           "print(*(p.__path__[0] for p in (syncd, syncd.index, m)))"],
                          capture_output=True, text=True, check=True).stdout.split()
    subprocess.run([python, "-m", "compileall", "-q", *dirs], check=True,
                   stdout=subprocess.DEVNULL)


def run_timed(cmd: list) -> tuple[float, str]:
    """Wall seconds of a command, and its output."""
    t = time.perf_counter()
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {done.returncode}\n"
                           f"{done.stdout}{done.stderr}")
    return wall, done.stdout


def cpu_of(pid: int) -> float:
    """CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of the children this process has waited for."""
    usage = os.times()
    return usage.children_user + usage.children_system


def status_once(exe: str, home: Path) -> tuple[float, float]:
    before = children_cpu()
    wall, _ = run_timed([exe, "--home", home, "status", "--json"])
    return wall, children_cpu() - before


def mount_once(exe: str, home: Path, mnt: Path) -> tuple[float, float]:
    before = children_cpu()
    wall, out = run_timed([exe, "--home", home, "mount", mnt])
    pid = int(re.search(r"\(pid (\d+)\)", out).group(1))
    cpu = children_cpu() - before + cpu_of(pid)
    os.listdir(mnt)
    subprocess.run([exe, "--home", home, "umount"], check=True, capture_output=True,
                   timeout=600)
    for _ in range(100):
        if not alive(pid):
            break
        time.sleep(0.1)
    return wall, cpu


def make_home(exe: str, base: Path, name: str, files: int) -> Path:
    home = base / name
    subprocess.run([exe, "--home", home, "init", "--name", name, "--listen",
                    f"127.0.0.1:{free_port()}"], check=True, capture_output=True)
    if files:
        src = base / "src"
        for i in range(files):
            d = src / f"d{i // 100:05d}"
            if i % 100 == 0:
                d.mkdir(parents=True)
            (d / f"f{i:07d}").touch()
        subprocess.run([exe, "--home", home, "import", src, "--into", "src"], check=True,
                       capture_output=True, timeout=7200)
        shutil.rmtree(src)
    return home


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--syncd", action="append",
                   help="a syncd executable; give several to compare them (default: the "
                        "one beside this python)")
    p.add_argument("--files", type=int, default=200_000)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = p.parse_args()
    builds = [os.path.abspath(b) for b in args.syncd or [Path(sys.executable).with_name("syncd")]]
    for exe in builds:
        compile_build(exe)
    base = Path(tempfile.mkdtemp(prefix="syncd-startup-", dir=args.dir)).absolute()
    # Not in a checkout: the serving process, `python -m syncd`, would import the syncd
    # package of the current directory rather than the build's.
    os.chdir(base)
    mnt = base / "mnt"
    mnt.mkdir()
    try:
        homes = {"empty": make_home(builds[0], base, "empty", 0),
                 f"{args.files:,} files": make_home(builds[0], base, "big", args.files)}
        for what, home in homes.items():
            times = {(exe, k): [] for exe in builds for k in ("status", "mount")}
            for _ in range(args.runs):
                for exe in builds:
                    times[exe, "status"].append(status_once(exe, home))
                    times[exe, "mount"].append(mount_once(exe, home, mnt))
            for (exe, k), got in times.items():
                wall = statistics.median(w for w, _ in got)
                cpu = statistics.median(c for _, c in got)
                print(f"{what:>16}  {k:<6}  wall {wall * 1e3:5.0f} ms  cpu {cpu * 1e3:5.0f} ms"
                      f"  {exe}", flush=True)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        os.chdir("/")
        if mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt], check=False)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
