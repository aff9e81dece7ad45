"""Crash points for tests: a test arms one through the environment, SYNCD_FAULT=NAME, and
the process kills itself with SIGKILL on reaching it, as a power cut or `kill -9` would at
that instant. Crash safety is then proved at each step of an operation, not by chance
(tests/mount/test_crash_points.py). SYNCD_FAULT=NAME@INT sends SIGINT instead: Ctrl-C at
that instant. Unarmed, a point costs one string comparison."""

from __future__ import annotations

import os
import signal

ARMED, _, _signal = (os.environ.get("SYNCD_FAULT") or "").partition("@")
SIGNAL = signal.Signals[f"SIG{_signal or 'KILL'}"]


def crash_point(name: str) -> None:
    if name == ARMED:
        os.kill(os.getpid(), SIGNAL)
