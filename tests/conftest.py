import logging
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import SERVED_LOGS, Mount, force_cleanup, free_port, syncd
from tests.replicas import three_devices

needs_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3 (Debian package fuse3)",
)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def expect_log():
    """Fails the test on any record at WARNING or above logged in this process that the
    test did not declare: `expect_log(pattern, ...)` (re.search on "LOGGER LEVEL message",
    e.g. r"syncd.control ERROR control op 'fail' failed"). Serving processes' logs are
    checked by served_logs below."""
    expected: list[str] = []
    catch = _Records()
    root = logging.getLogger()
    root.addHandler(catch)
    try:
        yield lambda *patterns: expected.extend(patterns)
    finally:
        root.removeHandler(catch)
    bad = []
    for r in catch.records:
        line = f"{r.name} {r.levelname} {r.getMessage()}"
        if not any(re.search(p, line) for p in expected):
            bad.append(line + (f" ({r.exc_info[0].__name__}: {r.exc_info[1]})"
                               if r.exc_info and r.exc_info[0] else ""))
    if bad:
        pytest.fail(f"{len(bad)} unexpected log record(s); a test that provokes them "
                    "declares them with expect_log(pattern):\n" + "\n".join(bad),
                    pytrace=False)


@pytest.fixture(autouse=True)
def served_logs():
    """After the test (its fixtures have stopped their processes by then: this one was set
    up first), fails it on any complaint in a serving process's log that it did not
    declare (tests.helpers.ServedLog)."""
    SERVED_LOGS.clear()
    yield
    logs = list(SERVED_LOGS.values())
    SERVED_LOGS.clear()
    bad = []
    for log in logs:
        try:
            log.check()
        except AssertionError as e:
            bad.append(str(e))
    if bad:
        pytest.fail("\n\n".join(bad), pytrace=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    syncd(h, "init", "--name", "test", "--listen", f"127.0.0.1:{free_port()}")
    return h


@pytest.fixture
def mount(home: Path, tmp_path: Path):
    """A mounted share; unmounted (and its process gone) after the test, even on failure.
    A clean unmount is part of every test that uses it; its log is checked (served_logs)."""
    m = Mount(home, tmp_path / "mnt")
    try:
        m.start()
        yield m
        os.chdir("/")
        m.stop()
    finally:
        force_cleanup(home, m.path)


@pytest.fixture
def devs(tmp_path: Path):
    """Three devices of real indexes, without mounts or network (tests/replicas.py)."""
    made = three_devices(tmp_path)
    yield made
    for d in made:
        d.db.close()
