"""Helpers the benchmark scripts share (each is run as `python bench/NAME.py`, so this
module is found beside them)."""

import socket
from pathlib import Path


def mounted(mnt) -> bool:
    return any(ln.split()[1] == str(mnt) for ln in Path("/proc/mounts").read_text().splitlines())


def alive(pid) -> bool:
    """Is `pid` a live syncd process (not a reused pid)?"""
    try:
        return b"syncd" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
