import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import Mount, force_cleanup, free_port, syncd
from tests.replicas import three_devices

needs_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3 (Debian package fuse3)",
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    syncd(h, "init", "--name", "test", "--listen", f"127.0.0.1:{free_port()}")
    return h


@pytest.fixture
def mount(home: Path, tmp_path: Path):
    """A mounted share; unmounted (and its process gone) after the test, even on failure.
    A clean unmount is part of every test that uses it."""
    m = Mount(home, tmp_path / "mnt")
    try:
        m.start()
        yield m
        os.chdir("/")
        m.stop()
    finally:
        force_cleanup(home, m.path)
        log = m.log()
        assert "Traceback" not in log, f"the mount logged an exception:\n{log}"


@pytest.fixture
def devs(tmp_path: Path):
    """Three devices of real indexes, without mounts or network (tests/replicas.py)."""
    made = three_devices(tmp_path)
    yield made
    for d in made:
        d.db.close()
