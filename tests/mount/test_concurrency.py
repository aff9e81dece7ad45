"""Concurrent writers: the mount serves requests as concurrent trio tasks, so handlers
interleave at every await. Several threads work at once, each against a model of its own
directory, and all append records to one shared file; then everything is compared, before
and after a remount."""

from __future__ import annotations

import os
import random
import threading

from tests.conftest import needs_fuse
from tests.helpers import status

pytestmark = needs_fuse

WORKERS = 4
STEPS = int(os.environ.get("SYNCD_STRESS_STEPS", "300"))  # raise for a longer hunt
RECORD = 64  # bytes per appended record; one write() each, so each lands whole


def worker(root, wid: int, seed: int, model: dict, errors: list) -> None:
    rng = random.Random(seed)
    d = root / f"w{wid}"
    d.mkdir()
    names = [f"f{i}" for i in range(6)]
    log = os.open(root / "shared.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for step in range(STEPS):
            name = rng.choice(names)
            op = rng.random()
            if op < 0.3:
                data = rng.randbytes(rng.choice([10, 5000, 300_000, 1_200_000]))
                (d / name).write_bytes(data)
                model[name] = bytearray(data)
            elif op < 0.5 and name in model:
                off = rng.randrange(0, len(model[name]) + 1000)
                data = rng.randbytes(rng.randrange(1, 200_000))
                with open(d / name, "r+b") as f:
                    f.seek(off)
                    f.write(data)
                cur = model[name]
                if off > len(cur):
                    cur.extend(bytes(off - len(cur)))
                cur[off : off + len(data)] = data
            elif op < 0.6 and name in model:
                size = rng.randrange(0, len(model[name]) + 10_000)
                os.truncate(d / name, size)
                cur = model[name]
                del cur[size:]
                cur.extend(bytes(size - len(cur)))
            elif op < 0.75 and name in model:
                other = rng.choice(names)
                os.rename(d / name, d / other)
                if other != name:
                    model[other] = model.pop(name)
            elif op < 0.85 and name in model:
                os.unlink(d / name)
                del model[name]
            else:
                record = f"{wid:02d}:{step:06d}:".encode().ljust(RECORD - 1, b".") + b"\n"
                os.write(log, record)
    except BaseException as e:  # reported by the test, not lost in the thread
        errors.append(f"worker {wid}: {e!r}")
    finally:
        os.close(log)


def check(root, models) -> None:
    for wid, model in enumerate(models):
        d = root / f"w{wid}"
        assert sorted(os.listdir(d)) == sorted(model), f"names in {d}"
        for name, data in model.items():
            assert (d / name).read_bytes() == bytes(data), f"content of {d / name}"
    records = (root / "shared.log").read_bytes().splitlines(keepends=True)
    assert all(len(r) == RECORD and r.endswith(b"\n") for r in records)
    for wid in range(WORKERS):  # each worker's records, whole and in its order
        mine = [r for r in records if r.startswith(f"{wid:02d}:".encode())]
        steps = [int(r.split(b":")[1]) for r in mine]
        assert steps == sorted(steps)


def test_concurrent_writers_keep_everything(mount):
    models: list[dict] = [{} for _ in range(WORKERS)]
    errors: list[str] = []
    threads = [threading.Thread(target=worker, args=(mount.path, w, 1000 + w, models[w],
                                                     errors)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    check(mount.path, models)
    mount.stop()
    mount.start()
    check(mount.path, models)
    assert status(mount.home)["dirty"] == 0
