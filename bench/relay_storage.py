"""The relay storage backends alone (syncd/relay/storage.py), no exchange above them: a
directory on the disk of --dir, and WebDAV on loopback through Apache's mod_dav_fs serving
a directory on that same disk (tests/relay/webdav_server.py; as root it serves as
www-data). Times, per backend: --files puts of 4 KiB one after another, one list of them,
their gets, then one put and one get of --size-mib.

    python bench/relay_storage.py --files 1000 --size-mib 256 [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syncd.relay.directory import Directory  # noqa: E402
from syncd.relay.storage import MARKER  # noqa: E402
from syncd.relay.webdav import WebDAV  # noqa: E402
from tests.relay.webdav_server import webdav_server  # noqa: E402


async def workload(storage, files: int, size_mib: int) -> dict[str, float]:
    small = os.urandom(4096)
    big = os.urandom(size_mib * 1024 * 1024)
    out = {}
    started = time.perf_counter()
    for i in range(files):
        await storage.put(f"batches/{i:06d}", small)
    out["small puts /s"] = files / (time.perf_counter() - started)
    started = time.perf_counter()
    assert len(await storage.list("batches")) == files
    out["list ms"] = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    for i in range(files):
        await storage.get(f"batches/{i:06d}")
    out["small gets /s"] = files / (time.perf_counter() - started)
    started = time.perf_counter()
    await storage.put("chunks/big", big)
    out["big put MB/s"] = len(big) / 1e6 / (time.perf_counter() - started)
    started = time.perf_counter()
    assert await storage.get("chunks/big") == big
    out["big get MB/s"] = len(big) / 1e6 / (time.perf_counter() - started)
    return out


def run(kind: str, served: Path, files: int, size_mib: int) -> dict[str, float]:
    root = served / "relay"
    root.mkdir(parents=True)
    (root / MARKER).write_text("bench\n")
    if kind == "directory":
        return trio.run(workload, Directory(str(root)), files, size_mib)
    with webdav_server(served, "bench", "bench") as server:
        async def main():
            storage = WebDAV(server.url + "relay/", "bench", "bench")
            try:
                return await workload(storage, files, size_mib)
            finally:
                await storage.aclose()
        return trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--dir", default="/var/tmp", help="where the relays are made")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    results = {}
    for kind in ("directory", "webdav"):
        served = Path(tempfile.mkdtemp(prefix=f"syncd-bench-{kind}-", dir=args.dir))
        try:
            results[kind] = run(kind, served, args.files, args.size_mib)
        finally:
            shutil.rmtree(served)
    columns = list(results["directory"])
    print(f"{'':10}" + "".join(f"{c:>15}" for c in columns))
    for kind, row in results.items():
        print(f"{kind:10}" + "".join(f"{row[c]:15.1f}" for c in columns))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
