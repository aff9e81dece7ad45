"""A mount's first moments between real peers: the mount answers before its daemon is built
(syncd/starting.py), and nothing done meanwhile is lost. Each test checks that its work did
come before the daemon ran (the log's "listening for peers" line), so that it proves that
case and not the usual one."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime

from tests.helpers import syncd, wait_for
from tests.peers.conftest import wait_content

LISTENING = re.compile(r"^(\S+ \S+) syncd\.daemon INFO .* listening for peers on ", re.M)


def daemon_started(peer) -> float:
    """When the daemon of the peer's latest mount ran (its log's last such line)."""
    mounts = peer.mount.log().count(" INFO serving ")
    wait_for(lambda: len(LISTENING.findall(peer.mount.log())) == mounts, 30,
             f"{peer.name}'s daemon to run")
    stamp = LISTENING.findall(peer.mount.log())[-1]
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def versions(peer, path: str) -> list[dict]:
    return json.loads(syncd(peer.home, "versions", path, "--json").stdout)["versions"]


def test_changes_made_before_the_daemon_runs_are_sent_and_keep_old_versions(cluster):
    a, b = cluster(2)
    (a / "f").write_bytes(b"first")
    wait_content(b / "f", b"first")
    a.stop()
    a.mount.start(peer_side=False)
    (a / "f").write_bytes(b"second")  # replaces a version as soon as the mount answers
    (a / "new").write_bytes(b"made at once")
    done = time.time()
    assert done < daemon_started(a)
    wait_content(b / "f", b"second")
    wait_content(b / "new", b"made at once")
    assert [v["size"] for v in versions(a, "f")] == [len(b"first")]


def test_a_file_opened_before_the_daemon_runs_is_fetched_once_it_does(cluster):
    a, b = cluster(2)
    data = os.urandom(3 << 20)  # above prefetch_below: fetched at its first open
    (a / "big").write_bytes(data)
    wait_for(lambda: (b / "big").exists(), 20, "beta to list big")
    b.stop()
    b.mount.start(peer_side=False)
    assert os.getxattr(b / "big", "user.syncd.state") == b"missing"
    opened = time.time()
    assert (b / "big").read_bytes() == data
    assert opened < daemon_started(b)
    assert os.getxattr(b / "big", "user.syncd.state") == b"local"

