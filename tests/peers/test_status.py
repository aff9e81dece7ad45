"""What `syncd status`, `syncd pending` and `syncd wait` say about peers, against real
mounted peers on 127.0.0.1 (issue 13, "Found wrong"): each says what is so."""

from __future__ import annotations

import os

from tests.helpers import wait_for
from tests.peers.conftest import Peer, settled

BIG = 300_000  # above prefetch_below: content waits for an open, a pin or a fetch


def wait_listed(path, size: int) -> None:
    wait_for(lambda: os.path.exists(path) and os.stat(path).st_size == size, 20,
             f"{path} listed with its size")


def knows_devices(peer: Peer) -> bool:
    return all(p["device"] and p["state"] == "online" for p in peer.status()["peers"])


def test_pending_leaves_out_what_a_peer_made_that_came_through_another(cluster):
    """Alpha's files reach beta through gamma: alpha made them, so nothing waits for
    alpha on beta; what beta makes does."""
    a, b, c = cluster(3)
    wait_for(lambda: knows_devices(a) and knows_devices(b), 20, "every peer greeted")
    a.set_peer("beta", "outofuse")
    b.set_peer("alpha", "outofuse")
    (a / "one").write_bytes(b"1" * BIG)
    (a / "two").write_bytes(b"2" * 2 * BIG)
    wait_listed(b / "one", BIG)
    wait_listed(b / "two", 2 * BIG)
    for name in ("alpha", "gamma"):
        assert b.peer(name)["pending_changes"] == 0, name
    (b / "mine").write_bytes(b"beta's")
    wait_for(lambda: b.peer("gamma")["pending_changes"] == 0, 20, "gamma has beta's file")
    alpha = b.peer("alpha")
    assert (alpha["pending_changes"], alpha["pending_bytes"]) == (1, 6)
    a.set_peer("beta", "auto")
    b.set_peer("alpha", "auto")
    wait_for(lambda: settled(a, b, c), 30, "nothing pending")
