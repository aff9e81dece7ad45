"""A peer held offline is probed with a growing back-off (syncd/peerlink.py); a request
that arrives from it wakes its loop at once (docs/protocol.md, `POST /v1/hello`). Real
peers on 127.0.0.1, and a real TCP proxy that cuts one direction only."""

from __future__ import annotations

import time

from tests.helpers import syncd, wait_for
from tests.peers.conftest import wait_content
from tests.soak.proxy import Proxy

BIG = 300_000  # above prefetch_below: content waits for an open
CUT = 17.0  # seconds alpha cannot reach beta: its back-off grows to 16 s (0.5 + ... + 8 = 15.5)


def test_a_fetch_from_a_peer_held_offline_wakes_its_loop_at_once(cluster):
    """Alpha reaches beta only through a proxy, which is cut: alpha holds beta offline
    while beta, which reaches alpha directly, stays online and never needs to say hello
    again. Beta's fetch of a file's content, which changes nothing on alpha, is alpha's
    first news of it: what waits for beta goes at once, not when alpha's 8 s back-off runs
    out. (A push that changes something here wakes every loop anyway.)"""
    a, b = cluster(2, mounted=False)
    proxy = Proxy(b.port, "alpha to beta")
    try:
        syncd(a.home, "peer", "remove", "beta")
        syncd(a.home, "peer", "add", "beta", proxy.url)
        a.start()
        b.start()
        (a / "big").write_bytes(b"b" * BIG)
        wait_for(lambda: (b / "big").exists(), 20, "big listed on beta")
        wait_for(lambda: a.peer("beta")["state"] == "online" and not
                 a.peer("beta")["pending_changes"], 20, "alpha and beta in touch")
        proxy.set_mode("reset")
        (a / "waiting").write_bytes(b"for beta")
        wait_for(lambda: a.peer("beta")["state"] == "offline", 20, "beta offline on alpha")
        time.sleep(CUT)
        assert b.peer("alpha")["state"] == "online"
        proxy.set_mode("pass")
        start = time.monotonic()
        assert (b / "big").read_bytes() == b"b" * BIG  # fetched from alpha, directly
        wait_content(b / "waiting", b"for beta", 20)
        assert time.monotonic() - start < 2.5, "alpha waited out its back-off"
    finally:
        proxy.close()


def test_a_peer_added_after_commits_gets_them_and_the_next_ones_at_once(cluster):
    """With no peer and no relay a commit wakes nothing; a peer added later still gets
    what was committed before, and what is committed after goes at once (a commit wakes
    its loop again), not at the next keep-alive (30 s)."""
    a, b = cluster(2, mounted=False)
    for p, q in ((a, b), (b, a)):
        syncd(p.home, "peer", "remove", q.name)
    a.start()
    b.start()
    for i in range(20):
        (a / f"before{i}").write_bytes(b"%d" % i)
    for p, q in ((a, b), (b, a)):
        syncd(p.home, "peer", "add", q.name, q.url)
    for i in range(20):
        wait_content(b / f"before{i}", b"%d" % i, 30)
    wait_for(lambda: a.peer("beta")["state"] == "online" and not
             a.peer("beta")["pending_changes"], 20, "alpha and beta in touch")
    time.sleep(1)  # past the first exchanges
    (a / "after").write_bytes(b"at once")
    wait_content(b / "after", b"at once", 10)
