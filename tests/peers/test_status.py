"""What `syncd status`, `syncd pending` and `syncd wait` say about peers, against real
mounted peers on 127.0.0.1 (issue 13, "Found wrong"): each says what is so."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time

from tests.helpers import assert_clean_error, force_cleanup, free_port, syncd, wait_for
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


def test_a_peer_that_does_not_answer_is_offline_at_once(cluster):
    """A failed fetch from a peer that has gone marks it offline there and then, and
    says why; one that answers with an HTTP error stays online."""
    a, b = cluster(2)
    b.expect_log(r"ERROR cannot fetch 'f': no peer served chunk")
    (a / "f").write_bytes(b"x" * BIG)
    wait_listed(b / "f", BIG)
    wait_for(lambda: b.peer("alpha")["state"] == "online", 20, "alpha online on beta")
    a.stop()
    done = syncd(b.home, "fetch", "f", check=False)
    assert done.returncode == 5, done.stderr
    alpha = b.peer("alpha")
    assert alpha["state"] == "offline"
    assert "does not answer" in alpha["last_error"]


def test_last_seen_moves_with_every_answer(cluster):
    a, b = cluster(2)
    (a / "f").write_bytes(b"x" * BIG)
    wait_listed(b / "f", BIG)
    wait_for(lambda: b.peer("alpha")["last_seen"], 20, "alpha seen")
    before = b.peer("alpha")["last_seen"]
    time.sleep(1.1)  # LAST SEEN is in whole seconds
    syncd(b.home, "fetch", "f")  # alpha answers; nothing changes its state
    assert b.peer("alpha")["last_seen"] > before
    listed = json.loads(syncd(b.home, "peer", "list", "--json").stdout)["peers"]
    assert listed[0]["last_seen"] == b.peer("alpha")["last_seen"]


def test_the_text_status_says_why_a_peer_is_not_online(cluster):
    (a,) = cluster(1)
    syncd(a.home, "peer", "add", "gamma", f"127.0.0.1:{free_port()}")  # nobody there
    syncd(a.home, "peer", "add", "delta", f"127.0.0.1:{free_port()}")
    a.set_peer("delta", "outofuse")
    wait_for(lambda: a.peer("gamma")["state"] == "offline", 20, "gamma offline")
    lines = syncd(a.home, "status").stdout.splitlines()
    gamma = a.peer("gamma")
    assert f"gamma: {gamma['last_error']}" in lines and "does not answer" in gamma["last_error"]
    assert "delta: out of use: not contacted ('syncd peer set delta auto' to use it again)" in lines


def test_a_peer_of_another_cluster_is_named_as_such(cluster, tmp_path):
    """A wrong key is no network fault: status says that the two machines do not share a
    cluster key, and what to run."""
    (a,) = cluster(1)
    g = Peer(tmp_path, "gamma", None)  # a cluster of its own: another key
    syncd(a.home, "peer", "add", "gamma", g.url)
    syncd(g.home, "peer", "add", "alpha", a.url)
    for p in (a, g):
        p.expect_log(r"WARNING refused POST /v1/hello: bad signature")
    try:
        g.start()
        wait_for(lambda: "does not answer" not in (a.peer("gamma")["last_error"] or
                                                   "does not answer"),
                 20, "gamma answering alpha")
        gamma = a.peer("gamma")
        assert gamma["state"] == "offline"
        assert "do not share a cluster key" in gamma["last_error"]
        assert "syncd cluster-key" in gamma["last_error"]
        assert f"gamma: {gamma['last_error']}" in syncd(a.home, "status").stdout.splitlines()
    finally:
        with contextlib.suppress(Exception):
            g.stop()
        force_cleanup(g.home, g.path)
def test_wait_says_at_once_what_it_cannot_do(cluster):
    a, b = cluster(2)
    (a / "f").write_bytes(b"data")
    started = time.monotonic()
    done = syncd(a.home, "wait", "--copies", "2", "--timeout", "60", check=False)
    assert_clean_error(done, 4, "only 1 peer is in use: 2 copies cannot be held")
    assert time.monotonic() - started < 10 and done.stdout == ""
    a.set_peer("beta", "outofuse")
    done = syncd(a.home, "wait", "--timeout", "1", check=False)
    assert_clean_error(done, 4, "every peer is out of use")
    a.set_peer("beta", "auto")
    wait_for(lambda: a.peer("beta")["state"] == "online", 20, "beta back in use")
    syncd(a.home, "wait", "--timeout", "20")
    a.stop()
    done = syncd(a.home, "wait", "--timeout", "1", check=False)
    assert_clean_error(done, 4, "is not mounted or served")
    assert done.stdout == ""




def test_pending_lists_what_waits_for_a_peer(cluster):
    a, b = cluster(2)
    os.mkdir(a / "d")
    (a / "d" / "old").write_bytes(b"old")
    (a / "kept").write_bytes(b"kept")
    wait_listed(b / "kept", 4)
    wait_for(lambda: settled(a, b), 20, "nothing pending")
    b.stop()
    (a / "d" / "new").write_bytes(b"n" * BIG)
    os.unlink(a / "d" / "old")
    (a / "kept").write_bytes(b"changed")
    wait_for(lambda: a.peer("beta")["state"] == "offline", 20, "beta offline")
    listed = json.loads(syncd(a.home, "pending", "beta", "--json").stdout)
    assert listed["schema_version"] == 1 and listed["peer"] == "beta"
    assert listed["state"] == "offline"
    files = {f["path"]: f for f in listed["pending"]}
    assert {p: (f["kind"], f["change"], f["size"]) for p, f in files.items()} == {
        "d/new": ("file", "create", BIG), "d/old": ("file", "delete", 0),
        "kept": ("file", "change", 7)}
    assert all(f["since"].endswith("Z") for f in files.values())
    status = a.peer("beta")
    assert (listed["changes"], listed["bytes"]) == (3, BIG + 7)
    assert (status["pending_changes"], status["pending_bytes"]) == (3, BIG + 7)
    assert min(f["since"] for f in files.values()) == status["oldest_pending"]
    text = syncd(a.home, "pending", "beta").stdout.splitlines()
    assert text[0].startswith("beta (offline): 3 change(s), ")
    assert text[1].split() == ["CHANGE", "KIND", "SIZE", "SINCE", "PATH"]
    rows = [line.split() for line in text[2:]]  # oldest first
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        ("create", "file", "d/new"), ("delete", "file", "d/old"), ("change", "file", "kept")]
    assert_clean_error(syncd(a.home, "pending", "nobody", check=False), 1,
                       "no peer named 'nobody'")
    b.start()
    wait_for(lambda: not json.loads(syncd(a.home, "pending", "beta", "--json").stdout
                                    )["pending"], 20, "nothing waits for beta")
    assert syncd(a.home, "pending", "beta").stdout.strip() == "nothing waits for beta"


def test_a_peer_whose_home_was_made_again_is_refused_until_added_again(cluster):
    """Beta's home is made again under the same name and address: a new device, which
    holds nothing of what alpha's cursor for beta counts. Alpha says so, with what to run,
    and sends it nothing; once beta is added again, beta receives everything."""
    a, b = cluster(2)
    (a / "f").write_bytes(b"before")
    wait_for(lambda: (b / "f").exists(), 20, "f on beta")
    wait_for(lambda: settled(a, b), 20, "nothing pending")
    old = a.peer("beta")["device"]
    b.stop()
    shutil.rmtree(b.home)
    syncd(b.home, "init", "--name", "beta", "--listen", f"127.0.0.1:{b.port}",
          "--cluster-key", a.key)
    syncd(b.home, "peer", "add", "alpha", a.url)
    b.start()
    wait_for(lambda: "not the one pinned here" in (a.peer("beta")["last_error"] or ""), 30,
             "alpha refusing the new beta")  # its new certificate
    beta = a.peer("beta")
    assert beta["state"] == "offline" and beta["device"] == old
    assert f"syncd peer remove beta' and 'syncd peer add beta {b.url}'" in beta["last_error"]
    assert not (b / "f").exists()
    syncd(a.home, "peer", "remove", "beta")
    syncd(a.home, "peer", "add", "beta", b.url)
    wait_for(lambda: (b / "f").exists() and (b / "f").read_bytes() == b"before", 30,
             "f on the new beta")
