"""Send-only machines among three real mounted peers (docs/cli.md, "syncd mode"): a
send-only machine sends its changes and applies none of the group's, shows them as
behind, and `syncd override` makes its own versions win on the others; back to
send-receive, what was held back applies and the group converges."""

from __future__ import annotations

import json
import os

from tests.helpers import assert_clean_error, syncd, wait_for
from tests.peers.conftest import read, settled, wait_content, wait_gone


def listing(peer) -> dict[str, bytes | None]:
    return {name: read(peer / name) for name in sorted(os.listdir(peer.path))}


def test_a_send_only_machine_applies_nothing_and_its_override_wins(cluster):
    a, b, c = cluster(3)
    (b / "shared").write_bytes(b"the group's first")
    (c / "doomed").write_bytes(b"to be deleted by gamma")
    wait_content(a / "shared", b"the group's first")
    wait_content(a / "doomed", b"to be deleted by gamma")
    done = syncd(a.home, "mode", "send-only")
    assert "applied to the running mount" in done.stdout
    assert syncd(a.home, "mode").stdout.strip() == "send-only"
    assert syncd(a.home, "config", "get", "mode").stdout.strip() == "send-only"

    (b / "shared").write_bytes(b"beta's edit")
    (b / "new-from-beta").write_bytes(b"beta made it")
    os.unlink(c / "doomed")
    wait_content(c / "new-from-beta", b"beta made it")
    wait_content(b / "shared", b"beta's edit")
    wait_gone(b / "doomed")
    wait_for(lambda: a.status()["behind"] == 3, 20, "alpha to hold back three changes")
    # alpha applied none of them, and still sends its own
    assert listing(a) == {"doomed": b"to be deleted by gamma",
                          "shared": b"the group's first"}
    (a / "alphas").write_bytes(b"alpha sends")
    wait_content(b / "alphas", b"alpha sends")
    wait_content(c / "alphas", b"alpha sends")
    wait_for(lambda: settled(a, b, c), 20, "nothing pending")
    assert read(a / "shared") == b"the group's first"
    assert "behind the group by 3 change(s)" in syncd(a.home, "status").stdout

    done = syncd(a.home, "override")
    assert "3 held back version(s) overridden" in done.stdout
    want = {"alphas": b"alpha sends", "doomed": b"to be deleted by gamma",
            "shared": b"the group's first"}
    for peer in (b, c):
        wait_for(lambda peer=peer: listing(peer) == want, 20, f"alpha's tree on {peer.name}")
    wait_for(lambda: settled(a, b, c), 20, "nothing pending")
    assert listing(a) == want and a.status()["behind"] == 0
    # beta's edit that lost is kept among its old versions there, the newest
    syncd(b.home, "restore", "shared", "--to", "betas-edit")
    assert read(b / "betas-edit") == b"beta's edit"


def test_back_to_send_receive_the_group_converges(cluster):
    a, b, c = cluster(3)
    (a / "both").write_bytes(b"first")
    for peer in (b, c):
        wait_content(peer / "both", b"first")
    syncd(a.home, "mode", "send-only")
    (b / "both").write_bytes(b"beta's edit")
    (c / "from-gamma").write_bytes(b"gamma's")
    wait_for(lambda: a.status()["behind"] == 2, 20, "alpha to hold back two changes")
    (a / "both").write_bytes(b"alpha's later edit")  # concurrent with beta's, and later
    wait_for(lambda: settled(a, b, c), 20, "nothing pending")
    assert not (a / "from-gamma").exists()
    done = syncd(a.home, "mode", "send-receive")
    assert "applied to the running mount" in done.stdout
    wait_content(a / "from-gamma", b"gamma's")
    wait_for(lambda: settled(a, b, c) and listing(a) == listing(b) == listing(c), 20,
             "the three trees to agree")
    tree = listing(a)
    # rule 3: the later edit keeps the name, the other is a conflict copy; nothing lost
    assert tree["both"] == b"alpha's later edit"
    assert sorted(v for k, v in tree.items() if ".sync-conflict-" in k) == [b"beta's edit"]
    assert a.status()["behind"] == 0 and a.status()["mode"] == "send-receive"


def test_bad_mode_inputs_are_clear_errors_that_change_nothing(cluster, tmp_path):
    (a,) = cluster(1, mounted=False)
    assert_clean_error(syncd(a.home, "mode", "receive-everything", check=False), 2,
                       "bad value 'receive-everything' for 'mode'")
    assert syncd(a.home, "mode").stdout.strip() == "send-receive"
    assert_clean_error(syncd(a.home, "override", check=False), 2,
                       "override is for a send-only one")
    syncd(a.home, "mode", "send-only")
    assert_clean_error(syncd(a.home, "override", check=False), 5, "nothing serves")
    a.start()
    assert_clean_error(syncd(a.home, "override", str(tmp_path), check=False), 2,
                       "is outside the mount point")
    assert_clean_error(syncd(a.home, "override", "no/such", check=False), 2,
                       "/no/such is not in the share here")
    assert a.status()["mode"] == "send-only"


def test_a_receive_only_machine_sends_nothing_the_group_wins_and_revert_restores(cluster):
    a, b, c = cluster(3)
    (b / "input").write_bytes(b"v1")
    os.mkdir(c / "d")
    (c / "d" / "data").write_bytes(b"gamma's data")
    wait_content(a / "input", b"v1")
    wait_content(a / "d" / "data", b"gamma's data")
    assert "applied to the running mount" in syncd(a.home, "mode", "receive-only").stdout

    (a / "input").write_bytes(b"alpha's local edit")
    (a / "a-new").write_bytes(b"alpha made it")
    os.unlink(a / "d" / "data")
    (a / "d" / "scratch").write_bytes(b"alpha's scratch")
    (b / "marker").write_bytes(b"after alpha's edits")
    wait_content(a / "marker", b"after alpha's edits")
    wait_content(c / "marker", b"after alpha's edits")
    wait_for(lambda: settled(a, b, c), 20, "nothing pending")
    group = {"d": None, "input": b"v1", "marker": b"after alpha's edits"}
    assert listing(b) == listing(c) == group  # nothing of alpha's went out
    assert sorted(os.listdir(b / "d")) == ["data"]
    assert a.status()["local_edits"] == 4
    local = json.loads(syncd(a.home, "conflicts", "--json").stdout)["local"]
    assert local == [{"path": "a-new", "what": "made"}, {"path": "d/data", "what": "deleted"},
                     {"path": "d/scratch", "what": "made"},
                     {"path": "input", "what": "changed"}]

    with open(a / "input", "rb") as handle:
        (b / "input").write_bytes(b"v2")  # the group's newer version wins here
        wait_content(a / "input", b"v2")
        assert handle.read() == b"alpha's local edit"  # rule 6
    # a file open for writing when the group's version replaces it keeps the writer's
    # bytes aside too, once closed
    with open(a / "input", "r+b", buffering=0) as writer:
        (b / "input").write_bytes(b"v3")
        wait_content(a / "input", b"v3")
        writer.write(b"WRITTEN")
    wait_for(lambda: len([n for n in os.listdir(a.path) if ".sync-local-" in n]) == 2, 10,
             "the writer's copy")
    assert read(a / "input") == b"v3"
    copies = sorted(n for n in os.listdir(a.path) if n.startswith("input.sync-local-"))
    assert sorted(read(a / n) for n in copies) == [b"WRITTEN", b"alpha's local edit"]
    (copy,) = [n for n in copies if read(a / n) == b"alpha's local edit"]
    assert read(a / copy) == b"alpha's local edit"
    assert {"path": copy, "what": "copy"} in \
        json.loads(syncd(a.home, "conflicts", "--json").stdout)["local"]
    assert f"{copy}  (local: copy)" in syncd(a.home, "conflicts").stdout
    assert "5 local edit(s) and copies" in syncd(a.home, "status").stdout
    (b / "marker").write_bytes(b"after the copy")
    wait_content(c / "marker", b"after the copy")
    wait_for(lambda: settled(a, b, c), 20, "nothing pending")
    assert not any(".sync-local-" in n for n in os.listdir(b.path) + os.listdir(c.path))

    assert "5 local edit(s) and copies thrown away" in syncd(a.home, "revert").stdout
    wait_for(lambda: listing(a) == listing(b) == listing(c), 20, "alpha's tree the group's")
    assert sorted(os.listdir(a / "d")) == ["data"]
    assert read(a / "d" / "data") == b"gamma's data"
    assert a.status()["local_edits"] == 0
    # what was thrown away is among the old versions
    kept = json.loads(syncd(a.home, "versions", copy, "--json").stdout)["versions"]
    assert len(kept) == 1 and kept[0]["size"] == len(b"alpha's local edit")


def test_a_receive_only_machine_that_sends_again_sends_its_edits(cluster):
    a, b, c = cluster(3)
    (b / "f").write_bytes(b"the group's")
    (b / "gone").write_bytes(b"to be deleted on alpha")
    wait_content(a / "f", b"the group's")
    wait_content(a / "gone", b"to be deleted on alpha")
    syncd(a.home, "mode", "receive-only")
    (a / "f").write_bytes(b"alpha's edit")
    os.mkdir(a / "newdir")
    (a / "newdir" / "inside").write_bytes(b"alpha's new file")
    os.unlink(a / "gone")
    (c / "from-gamma").write_bytes(b"gamma's")
    wait_content(a / "from-gamma", b"gamma's")
    assert read(b / "f") == b"the group's" and not (b / "newdir").exists()
    syncd(a.home, "mode", "send-receive")
    want = {"f": b"alpha's edit", "from-gamma": b"gamma's", "newdir": None}
    for peer in (a, b, c):
        wait_for(lambda peer=peer: listing(peer) == want, 20, f"alpha's edits on {peer.name}")
        wait_content(peer / "newdir" / "inside", b"alpha's new file")
    wait_for(lambda: settled(a, b, c), 20, "nothing pending")
    assert a.status()["local_edits"] == 0 and a.status()["files"]["local_only"] == 0


def test_revert_and_override_in_the_wrong_mode_or_place_are_clear_errors(cluster, tmp_path):
    (a,) = cluster(1, mounted=False)
    assert_clean_error(syncd(a.home, "revert", check=False), 2,
                       "revert is for a receive-only one")
    syncd(a.home, "mode", "receive-only")
    assert_clean_error(syncd(a.home, "revert", check=False), 5, "nothing serves")
    assert_clean_error(syncd(a.home, "override", check=False), 2,
                       "override is for a send-only one")
    a.start()
    assert_clean_error(syncd(a.home, "revert", str(tmp_path), check=False), 2,
                       "is outside the mount point")
    assert_clean_error(syncd(a.home, "revert", "no/such", check=False), 2,
                       "/no/such is not in the share here")
    assert a.status()["mode"] == "receive-only"


def test_local_edits_and_copies_go_with_a_directory_a_peer_deletes(cluster):
    a, b, c = cluster(3)
    os.mkdir(c / "d")
    (c / "d" / "x").write_bytes(b"gamma's x")
    wait_content(a / "d" / "x", b"gamma's x")
    syncd(a.home, "mode", "receive-only")
    (a / "d" / "x").write_bytes(b"alpha's x")
    (a / "d" / "new").write_bytes(b"alpha's new")
    (b / "d" / "x").write_bytes(b"beta's x")
    wait_content(a / "d" / "x", b"beta's x")
    (copy,) = [n for n in os.listdir(a / "d") if n.startswith("x.sync-local-")]
    wait_content(c / "d" / "x", b"beta's x")
    os.unlink(c / "d" / "x")
    os.rmdir(c / "d")
    wait_gone(a / "d")  # the local entries do not keep it alive here
    wait_for(lambda: settled(a, b, c), 20, "nothing pending")
    assert not (b / "d").exists() and a.status()["local_edits"] == 0
    for name, data in ((copy, b"alpha's x"), ("new", b"alpha's new")):
        kept = json.loads(syncd(a.home, "versions", f"d/{name}", "--json").stdout)["versions"]
        assert [v["size"] for v in kept] == [len(data)], name
        syncd(a.home, "restore", f"d/{name}", "--to", f"restored-{name}")
        assert read(a / f"restored-{name}") == data


def test_revert_with_the_group_out_of_reach_says_so_and_changes_nothing(cluster):
    a, b = cluster(2)
    (b / "f").write_bytes(b"the group's")
    wait_content(a / "f", b"the group's")
    syncd(a.home, "mode", "receive-only")
    (a / "f").write_bytes(b"alpha's edit")
    b.stop()
    failed = syncd(a.home, "revert", check=False)
    assert_clean_error(failed, 5, "the group's version of /f is not known here")
    assert "nothing reverted" in failed.stderr
    assert "did not answer" in failed.stderr or "no peer is online" in failed.stderr
    assert read(a / "f") == b"alpha's edit" and a.status()["local_edits"] == 1
