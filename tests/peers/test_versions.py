"""Old versions between real peers: a version a peer's change replaced is kept and can be
restored; a restore is a change made here, sent like any other, and wins over older
edits (docs/cli.md, "Old versions and deleted files")."""

from __future__ import annotations

import json
import os
import time

from syncd.index.chunklist import digest_of

from tests.helpers import syncd, wait_for
from tests.peers.conftest import settled, wait_content, wait_gone


def listed(peer, path: str) -> list[dict]:
    return json.loads(syncd(peer.home, "versions", path, "--json").stdout)["versions"]


def test_versions_a_peer_replaced_or_deleted_are_kept_and_restored(cluster):
    a, b = cluster(2)
    alpha = a.status()["device"]["id"]
    (a / "f").write_bytes(b"alpha's first")
    (a / "g").write_bytes(b"to be deleted by alpha")
    wait_content(b / "f", b"alpha's first")  # small: fetched at once
    wait_content(b / "g", b"to be deleted by alpha")
    (a / "f").write_bytes(b"alpha's second")
    os.unlink(a / "g")
    wait_content(b / "f", b"alpha's second")
    wait_gone(b / "g")
    (kept,) = listed(b, "f")
    assert (kept["device"], kept["size"]) == (alpha, len(b"alpha's first"))
    assert "alpha" in syncd(b.home, "versions", "f").stdout  # named as the peer
    syncd(b.home, "restore", "f")
    syncd(b.home, "restore", "g")
    assert (b / "f").read_bytes() == b"alpha's first"
    wait_content(a / "f", b"alpha's first")  # sent like any change
    wait_content(a / "g", b"to be deleted by alpha")
    assert [v["size"] for v in listed(a, "f")] == [len(b"alpha's first"),
                                                    len(b"alpha's second")]


def test_a_restore_wins_over_an_older_concurrent_edit(cluster):
    a, b = cluster(2)
    (a / "f").write_bytes(b"first")
    wait_content(b / "f", b"first")
    (a / "f").write_bytes(b"second")
    wait_content(b / "f", b"second")
    wait_for(lambda: settled(a, b), 30, "nothing pending")
    a.set_peer("beta", "outofuse")
    b.set_peer("alpha", "outofuse")
    (a / "f").write_bytes(b"alpha's edit, an hour old")
    hour_ago = time.time() - 3600
    os.utime(a / "f", (hour_ago, hour_ago))
    syncd(b.home, "restore", "f")  # "first", made now
    a.set_peer("beta", "auto")
    b.set_peer("alpha", "auto")
    wait_for(lambda: settled(a, b), 30, "nothing pending")
    for p in (a, b):
        wait_content(p / "f", b"first")
        names = sorted(os.listdir(p.path))
        assert len(names) == 2 and names[1].startswith("f.sync-conflict-"), names
        assert (p / names[1]).read_bytes() == b"alpha's edit, an hour old"


def test_a_version_no_longer_here_is_fetched_from_a_peer_that_keeps_it(cluster):
    a, b = cluster(2)
    old = os.urandom(100_000)  # a chunk file (not inline), fetched at once (prefetch)
    (a / "f").write_bytes(old)
    wait_content(b / "f", old)
    (a / "f").write_bytes(b"new")
    wait_content(b / "f", b"new")
    digest = digest_of(old).hex()
    (b.home / "store" / "chunks" / digest[:2] / digest).unlink()  # lost on beta
    syncd(b.home, "restore", "f")  # alpha keeps it too, as an old version
    assert (b / "f").read_bytes() == old
    wait_content(a / "f", old)
