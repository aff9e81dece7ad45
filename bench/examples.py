"""pyfuse3 file systems other than syncd, mounted for comparison: pyfuse3's own
examples/passthroughfs.py (the standards' reference for what the mount adds to the stack)
and bench/floorfs.py. Each function reports what went wrong through `note`."""

import importlib.metadata
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from common import mounted


def _run(cmd, timeout=None):
    """(exit code, output); output via a file, as a detached child may keep a pipe open."""
    with tempfile.TemporaryFile("w+") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
        out.seek(0)
        return code, out.read().strip()


def passthrough_example(cache, note):
    """pyfuse3's examples/passthroughfs.py, of the installed pyfuse3's version, from its
    source distribution (downloaded into `cache` once); None when it cannot be had."""
    try:
        version = importlib.metadata.version("pyfuse3")
    except importlib.metadata.PackageNotFoundError:
        note(f"pyfuse3 is not installed for {sys.executable}: no passthrough column")
        return None
    script = cache / f"passthroughfs-{version}.py"
    if script.exists():
        return script
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / f"pyfuse3-{version}.tar.gz"
    if not sdist.exists():
        code, out = _run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:",
                         "--no-deps", f"pyfuse3=={version}", "-d", cache], timeout=600)
        if code or not sdist.exists():
            note(f"pip download of pyfuse3 {version}'s source failed ({code}): no passthrough"
                 f" column. {out[-300:]}")
            return None
    with tarfile.open(sdist) as tf:
        script.write_bytes(tf.extractfile(f"pyfuse3-{version}/examples/passthroughfs.py").read())
    return script


def mount_example(argv, mnt, log, note):
    """A pyfuse3 file system run in the foreground as `python argv...`, mounted at `mnt`:
    its process, or None when it did not mount."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, *map(str, argv)],
                                stdout=out, stderr=subprocess.STDOUT)
    for _ in range(300):
        if mounted(mnt):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    note(f"{Path(argv[0]).name} did not mount: {Path(log).read_text()[-500:]}")
    unmount_example(proc, mnt, note)
    return None


def unmount_example(proc, mnt, note):
    if mounted(mnt):
        _run(["fusermount3", "-u", str(mnt)])
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        note(f"the file system at {mnt} did not exit after its unmount: killed")
        proc.kill()
        proc.wait()
    if mounted(mnt):
        _run(["fusermount3", "-u", "-z", str(mnt)])
