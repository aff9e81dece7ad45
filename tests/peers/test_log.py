"""`syncd log` against real mounted peers on 127.0.0.1 (issue 13, "History"): what arrived
from whom, what was sent to whom and confirmed, conflict copies, filters, and pruning after
log_keep_days that leaves sync whole."""

from __future__ import annotations

import json
import os
import re
import time

from tests.helpers import assert_clean_error, free_port, syncd, wait_for
from tests.peers.conftest import Peer, settled, wait_content


def log(peer: Peer, *args: str) -> dict:
    out = json.loads(syncd(peer.home, "log", "--json", *args).stdout)
    assert out["schema_version"] == 1
    return out


def events(peer: Peer, *args: str, event: str | None = None) -> list[tuple]:
    """(event, peer, path, change) of each event, oldest first."""
    return [(e["event"], e["peer"], e["path"], e["change"]) for e in log(peer, *args)["events"]
            if event is None or e["event"] == event]


def test_the_log_shows_what_arrived_and_what_was_sent_and_confirmed(cluster):
    a, b = cluster(2)
    os.mkdir(a / "d")
    (a / "d" / "f").write_bytes(b"first")
    wait_content(b / "d" / "f", b"first")
    wait_for(lambda: settled(a, b), 20, "nothing pending")
    arrived = events(b, event="arrived")
    assert ("arrived", "alpha", "d/f", "create") in arrived
    assert ("arrived", "alpha", "d", "create") in arrived
    wait_for(lambda: ("sent", "beta", "d/f", "create") in events(a, event="sent"), 20,
             "alpha's log to show d/f sent to beta")
    entry = next(e for e in log(b)["events"] if e["path"] == "d/f")
    assert entry["device"] == a.status()["device"]["id"] and entry["kind"] == "file"
    assert entry["time"].endswith("Z")
    # what came from beta is not sent back to it, and what beta sent shows as arrived
    (b / "back").write_bytes(b"from beta")
    wait_content(a / "back", b"from beta")
    wait_for(lambda: settled(a, b), 20, "nothing pending")
    assert ("arrived", "beta", "back", "create") in events(a)
    assert not [e for e in events(a, event="sent") if e[2] == "back"]
    wait_for(lambda: ("sent", "alpha", "back", "create") in events(b), 20, "back sent")
    # newest last
    times = [e["time"] for e in log(a)["events"]]
    assert times == sorted(times)
    text = syncd(a.home, "log").stdout.splitlines()
    assert text[0].split() == ["TIME", "EVENT", "PEER", "CHANGE", "PATH"]
    assert any(r.split()[1:] == ["sent", "to", "beta,", "confirmed", "create", "d/f"]
               for r in text[1:])
    assert any(r.split()[1:] == ["arrived", "from", "beta", "create", "back"] for r in text)


def test_the_log_filters_by_peer_and_time(cluster):
    a, b = cluster(2)
    syncd(a.home, "peer", "add", "gamma", f"127.0.0.1:{free_port()}")  # nobody there
    (a / "early").write_bytes(b"early")
    wait_content(b / "early", b"early")
    wait_for(lambda: ("sent", "beta", "early", "create") in events(a), 20, "early sent")
    time.sleep(1.1)  # times are in whole seconds
    middle = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    time.sleep(1.1)
    (a / "late").write_bytes(b"late")
    wait_for(lambda: ("sent", "beta", "late", "create") in events(a), 20, "late sent")
    assert {e[2] for e in events(a, "--peer", "beta")} == {"early", "late"}
    assert events(a, "--peer", "gamma") == []
    assert {e[2] for e in events(a, "--since", middle)} == {"late"}
    assert {e[2] for e in events(b, "--since", middle, "--peer", "alpha")} == {"late"}
    assert {e[2] for e in events(a, "--since", "1h")} == {"early", "late"}
    assert events(a, "--since", "2099-01-01") == []
    text = syncd(a.home, "log", "--peer", "gamma").stdout.strip()  # since 30 days ago
    assert re.fullmatch(r"nothing in the log since \S+Z with gamma", text), text
    for bad in ("yesterday", "2h ago", "-3d", "2026-13-01"):
        assert_clean_error(syncd(a.home, "log", f"--since={bad}", check=False), 2,
                           f"bad time {bad!r}: want an age such as 30m")
    assert_clean_error(syncd(a.home, "log", "--peer", "nobody", check=False), 1,
                       "no peer named 'nobody'")


def test_the_log_shows_conflict_copies(cluster):
    """One file edited on both machines while they do not meet: each keeps the later
    edit, makes a conflict copy of the other, and logs the other's edit as arrived."""
    a, b = cluster(2)
    (a / "f.txt").write_bytes(b"shared")
    wait_content(b / "f.txt", b"shared")
    wait_for(lambda: settled(a, b), 20, "nothing pending")
    a.set_peer("beta", "outofuse")
    b.set_peer("alpha", "outofuse")
    (a / "f.txt").write_bytes(b"alpha's")
    time.sleep(0.05)
    (b / "f.txt").write_bytes(b"beta's, later")  # the later mtime keeps the name
    a.set_peer("beta", "auto")
    b.set_peer("alpha", "auto")
    wait_content(a / "f.txt", b"beta's, later")
    wait_for(lambda: settled(a, b), 30, "nothing pending")
    for peer, other in ((b, "alpha"), (a, "beta")):
        copies = [e for e in log(peer)["events"] if e["event"] == "conflict"]
        assert len(copies) == 1, copies
        (copy,) = copies
        assert copy["path"].startswith("f.sync-conflict-") and copy["path"].endswith(".txt")
        assert copy["of"] == "f.txt" and copy["peer"] == other
        assert copy["path"] in os.listdir(peer.path)
        assert copy in log(peer, "--peer", other)["events"]
        # the other's edit arrived with the conflict (merged with the one here, or as
        # the other merged it): after the copy, in the log's order
        after = events(peer)
        after = after[after.index(("conflict", other, copy["path"], None)):]
        assert ("arrived", other, "f.txt", "change") in after


def test_two_files_made_on_one_name_show_as_a_conflict(cluster):
    """Two machines make a file of the same name: two nodes, one name; the later keeps
    it, the other is renamed as a conflict copy on both."""
    a, b = cluster(2)
    wait_for(lambda: a.peer("beta")["device"] and b.peer("alpha")["device"], 20, "greeted")
    a.set_peer("beta", "outofuse")
    b.set_peer("alpha", "outofuse")
    (a / "f.txt").write_bytes(b"alpha's")
    time.sleep(0.05)
    (b / "f.txt").write_bytes(b"beta's, later")
    a.set_peer("beta", "auto")
    b.set_peer("alpha", "auto")
    wait_content(a / "f.txt", b"beta's, later")
    wait_for(lambda: settled(a, b), 30, "nothing pending")
    for peer, other in ((a, "beta"), (b, "alpha")):
        copies = [e for e in log(peer)["events"] if e["event"] == "conflict"]
        assert len(copies) == 1, copies
        assert copies[0]["path"].startswith("f.sync-conflict-")
        assert copies[0]["of"] == "f.txt" and copies[0]["peer"] == other


def test_old_history_is_pruned_and_sync_goes_on(cluster):
    """log_keep_days in days: a tiny one makes everything old at the next start. The
    journal keeps what sync and pending read, so the sequence number carries on and what
    waits for a peer is listed as before."""
    a, b = cluster(2)
    (a / "one").write_bytes(b"one")
    (a / "two").write_bytes(b"two")
    (a / "two").write_bytes(b"two, again")
    wait_content(b / "two", b"two, again")
    wait_for(lambda: settled(a, b), 20, "nothing pending")
    wait_for(lambda: len(events(a, event="sent")) >= 2, 20, "pushes confirmed")
    b.stop()
    (a / "three").write_bytes(b"three")  # waits for beta through the pruning
    pending = json.loads(syncd(a.home, "pending", "beta", "--json").stdout)["pending"]
    assert [p["path"] for p in pending] == ["three"]
    seq = a.status()["device"]["seq"]
    a.stop()
    config = json.loads((a.home / "config.json").read_text())
    (a.home / "config.json").write_text(json.dumps({**config, "log_keep_days": 1 / 86400}))
    time.sleep(2.1)
    a.start()
    wait_for(lambda: "pruned" in a.mount.log(), 20, "alpha to prune its history")
    assert events(a) == []
    (a.home / "config.json").write_text(json.dumps(config))  # 30 days again, for the log
    assert json.loads(syncd(a.home, "pending", "beta", "--json").stdout)["pending"] == pending
    assert a.status()["device"]["seq"] == seq
    (a / "four").write_bytes(b"four")
    assert a.status()["device"]["seq"] > seq
    b.start()
    wait_content(b / "three", b"three")
    wait_content(b / "four", b"four")
    wait_for(lambda: ("sent", "beta", "four", "create") in events(a), 20, "four sent")
    assert ("arrived", "alpha", "four", "create") in events(b)


def test_a_bad_log_keep_days_is_a_clear_error(home):
    config = json.loads((home / "config.json").read_text())
    assert config["log_keep_days"] == 30
    for bad in (0, -1, "thirty", True):
        (home / "config.json").write_text(json.dumps({**config, "log_keep_days": bad}))
        assert_clean_error(syncd(home, "log", check=False), 1,
                           f"bad value {bad!r} for 'log_keep_days': want")
