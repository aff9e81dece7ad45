"""Crash points for tests: a test arms one through the environment, SYNCD_FAULT=NAME, and
the process kills itself with SIGKILL on reaching it, as a power cut or `kill -9` would at
that instant. Crash safety is then proved at each step of an operation, not by chance
(tests/mount/test_crash_points.py). Unarmed, a point costs one string comparison."""

from __future__ import annotations

import os
import signal

ARMED = os.environ.get("SYNCD_FAULT") or None


def crash_point(name: str) -> None:
    if name == ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
