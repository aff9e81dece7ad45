"""A setting changed with `syncd config set` on a running peer applies at once (docs/cli.md,
"syncd config")."""

from __future__ import annotations

import os

from tests.helpers import syncd, wait_for

BIG = 100_000  # above the 16 KiB a state carries, below the default prefetch_below


def size(path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def test_prefetch_below_applies_to_a_running_peer(cluster):
    a, b = cluster(2)
    done = syncd(b.home, "config", "set", "prefetch_below", "0")
    assert "applied to the running mount" in done.stdout
    (a / "lazy").write_bytes(b"l" * BIG)
    wait_for(lambda: size(b / "lazy") == BIG, 20, "lazy's size on beta")
    # Nothing fetches it ahead now: it waits for its first open.
    assert b.status()["files"]["missing"] == 1
    syncd(b.home, "config", "set", "prefetch_below", "1MiB")
    (a / "eager").write_bytes(b"e" * BIG)
    wait_for(lambda: b.status()["files"]["missing"] == 1
             and b.status()["files"]["total"] == 2, 20, "eager fetched ahead on beta")
    assert b.status()["files"]["bytes_local"] == BIG  # eager's, and lazy still waits
