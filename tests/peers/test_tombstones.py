"""Tombstone collection between real peers (docs/protocol.md, "Tombstones"): a delete's
tombstone goes once every peer had it, and an edit made without seeing the delete still
wins when it arrives after that (rule 3)."""

from __future__ import annotations

import time

from tests.helpers import syncd, wait_for
from tests.peers.conftest import read, settled, wait_content, wait_gone

KEEP_DAYS = "0.00002"  # 1.7 s: a test's value (docs/cli.md says why not below 10 minutes)


def tombstones(peer) -> dict:
    return peer.status()["tombstones"]


def test_a_delete_is_forgotten_once_every_peer_has_it_and_a_late_edit_still_wins(cluster):
    a, b, c = cluster(3, mounted=False)
    for key, value in (("tombstone_keep_days", KEEP_DAYS), ("log_keep_days", KEEP_DAYS)):
        syncd(a.home, "config", "set", key, value)
    for p in (a, b, c):
        p.start()
    (a / "f").write_bytes(b"one")
    (a / "g").write_bytes(b"two")
    for p in (b, c):
        wait_content(p / "f", b"one")
        wait_content(p / "g", b"two")
    wait_for(lambda: settled(a, b, c), 20, "nothing pending")
    # gamma goes away, and edits f there
    for p, others in ((a, ["gamma"]), (b, ["gamma"]), (c, ["alpha", "beta"])):
        for q in others:
            p.set_peer(q, "outofuse")
    (c / "f").write_bytes(b"gamma's edit")
    (a / "f").unlink()
    (a / "g").unlink()
    wait_gone(b / "f")
    wait_gone(b / "g")
    wait_for(lambda: a.peer("beta")["pending_changes"] == 0, 20, "beta to have the deletes")
    time.sleep(3)  # collections went by: gamma, which has not had them, holds them
    assert tombstones(a) == {"kept": 2, "held_by": ["peer gamma"]}
    # alpha pushes the deletes to gamma, which sends nothing back yet: both collected
    a.set_peer("gamma", "auto")
    wait_for(lambda: tombstones(a)["kept"] == 0, 30, "alpha to drop its tombstones")
    assert tombstones(a)["held_by"] == []
    wait_gone(c / "g")
    assert read(c / "f") == b"gamma's edit"  # the delete lost to the edit there
    assert read(a / "f") is None
    # gamma comes back: its edit, merged with the delete it saw, is a change alpha no
    # longer knows the node of; rule 3 wants it alive everywhere, as beta (which still
    # has the tombstone) decides too
    for q in ("alpha", "beta"):
        c.set_peer(q, "auto")
    b.set_peer("gamma", "auto")
    for p in (a, b, c):
        wait_content(p / "f", b"gamma's edit")
    wait_for(lambda: settled(a, b, c), 30, "nothing pending")
    for p in (a, b, c):
        assert sorted(p.path.iterdir()) == [p / "f"]
        assert p.status()["files"]["conflicts"] == 0
    syncd(a.home, "log")  # reads with the nodes of its history gone (exit 0)
