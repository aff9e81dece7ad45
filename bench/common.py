"""Helpers the benchmark scripts share (each is run as `python bench/NAME.py`, so this
module is found beside them)."""

import os
import random
import socket
from pathlib import Path


def mounted(mnt) -> bool:
    return any(ln.split()[1] == str(mnt) for ln in Path("/proc/mounts").read_text().splitlines())


def cpu_seconds(pid) -> float:
    """User and system CPU seconds of process `pid` so far, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid) -> bool:
    """Is `pid` a live syncd process (not a reused pid)?"""
    try:
        return b"syncd" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range (32768 and up here): ports the
    kernel hands out meanwhile (a status page's port 0, a connection's own end) never take
    it before the server that is told to listen there binds it."""
    while True:
        port = random.randrange(10000, 32768)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
