"""Ignore rules between real mounted peers (docs/cli.md, "Ignore rules"): what they ignore
stays on the machine that has it, a `.syncdignore` syncs so the group ignores alike,
HOME/ignore stays local, rule changes apply without a remount and delete nothing, a
refused rule file ignores nothing, and a directory a peer deletes takes the ignored
entries here with it."""

from __future__ import annotations

import os

from syncd.index.ignore import DEFAULTS

from tests.helpers import syncd, wait_for
from tests.peers.conftest import read, settled, wait_content, wait_gone


def test_ignored_entries_stay_here_and_the_group_ignores_alike(cluster):
    a, b = cluster(2)
    (a / ".syncdignore").write_bytes(b"build/\n*.o\n")
    wait_content(b / ".syncdignore", b"build/\n*.o\n")
    os.mkdir(a / "build")
    (a / "build" / "out.bin").write_bytes(b"output")
    (a / "x.o").write_bytes(b"object")
    (a / ".notes.txt.swp").write_bytes(b"swap")  # a default rule
    (a / "db.sqlite-wal").write_bytes(b"journal")  # not a default: travels with its db
    (a / "marker").write_bytes(b"after them")
    wait_content(b / "marker", b"after them")
    wait_content(b / "db.sqlite-wal", b"journal")
    wait_for(lambda: settled(a, b), 20, "nothing pending")
    assert sorted(os.listdir(b.path)) == [".syncdignore", "db.sqlite-wal", "marker"]
    assert a.status()["files"]["local_only"] == 3 and b.status()["files"]["local_only"] == 0
    assert "3 local-only" in syncd(a.home, "status").stdout
    assert os.getxattr(a / "x.o", "user.syncd.state") == b"local-only"
    # beta ignores alike: its build output stays there, beside alpha's
    os.mkdir(b / "build")
    (b / "build" / "b.bin").write_bytes(b"beta's")
    (b / "y.o").write_bytes(b"beta's")
    (b / "marker2").write_bytes(b"after them")
    wait_content(a / "marker2", b"after them")
    assert sorted(os.listdir(a / "build")) == ["out.bin"] and not (a / "y.o").exists()
    assert b.status()["files"]["local_only"] == 2
    # a move into an ignored path stops syncing (beta keeps it); out of one sends it
    os.rename(a / "marker", a / "build" / "marker")
    os.rename(a / "build" / "out.bin", a / "out.bin")
    wait_content(b / "out.bin", b"output")
    wait_for(lambda: settled(a, b), 20, "nothing pending")
    assert read(b / "marker") == b"after them" and not (b / "build" / "marker").exists()


def test_rules_change_without_a_remount(cluster):
    a, b = cluster(2)
    os.mkdir(a / "logs")
    (a / "logs" / "app.log").write_bytes(b"first")
    wait_content(b / "logs" / "app.log", b"first")
    # this machine's own rules: they do not sync
    (a / "probe").write_bytes(b"")
    (a.home / "ignore").write_text("private/\nprobe\n")
    wait_for(lambda: os.getxattr(a / "probe", "user.syncd.state") == b"local-only", 10,
             "HOME/ignore read")
    os.mkdir(a / "private")
    assert os.getxattr(a / "private", "user.syncd.state") == b"local-only"
    (a / "private" / "secret").write_bytes(b"mine")
    # a shared rule ignores what was synced: it stays everywhere, and stops syncing
    (a / ".syncdignore").write_bytes(b"logs/\n")
    wait_content(b / ".syncdignore", b"logs/\n")
    wait_for(lambda: os.getxattr(a / "logs", "user.syncd.state") == b"local-only", 10,
             "logs/ ignored on alpha")
    wait_for(lambda: os.getxattr(b / "logs", "user.syncd.state") == b"local-only", 10,
             "logs/ ignored on beta")
    (a / "logs" / "app.log").write_bytes(b"second")
    (b / "logs" / "app.log").write_bytes(b"beta's")
    (a / "marker").write_bytes(b"1")
    wait_content(b / "marker", b"1")
    wait_for(lambda: settled(a, b), 20, "nothing pending")
    assert read(a / "logs" / "app.log") == b"second"
    assert read(b / "logs" / "app.log") == b"beta's"
    assert not (b / "private").exists() and not (b / "ignore").exists()
    # no longer ignored: sent
    (a.home / "ignore").write_text("")
    wait_content(b / "private" / "secret", b"mine")
    os.unlink(a / ".syncdignore")
    wait_gone(b / ".syncdignore")
    wait_for(lambda: read(a / "logs" / "app.log") == read(b / "logs" / "app.log"), 20,
             "app.log the same on both")
    assert read(a / "logs" / "app.log") in (b"second", b"beta's")
    wait_for(lambda: settled(a, b), 20, "nothing pending")
    copies = [n for n in os.listdir(a / "logs") if ".sync-conflict-" in n]
    assert len(copies) == 1 and sorted(os.listdir(b / "logs")) == sorted(os.listdir(a / "logs"))


def test_a_refused_rule_file_ignores_nothing(cluster):
    a, b = cluster(2)
    for p in (a, b):
        p.expect_log(r"ignore rules refused, none of this file applies: "
                     r"\.syncdignore, line 2: '\*' would ignore everything in the share")
    (a / ".syncdignore").write_bytes(b"*.o\n*\n")
    (a / "x.o").write_bytes(b"object")
    wait_content(b / "x.o", b"object")
    (b / "y.o").write_bytes(b"beta's")
    wait_content(a / "y.o", b"beta's")
    assert a.status()["files"]["local_only"] == 0 == b.status()["files"]["local_only"]
    why = ".syncdignore, line 2: '*' would ignore everything in the share"
    assert a.status()["ignore_refused"] == [why] == b.status()["ignore_refused"]
    assert f"ignore rules  refused: {why}" in syncd(a.home, "status").stdout
    (a / ".syncdignore").write_bytes(b"*.o\n")  # fixed: it applies, and says nothing
    wait_for(lambda: b.status()["ignore_refused"] == [], 20, "the fixed file accepted")
    (b / "z.o").write_bytes(b"ignored now")
    (b / "marker").write_bytes(b"after it")
    wait_content(a / "marker", b"after it")
    assert not (a / "z.o").exists() and a.status()["ignore_refused"] == []


def test_a_directory_a_peer_deletes_takes_ignored_entries_with_it(cluster):
    a, b = cluster(2)
    (a / ".syncdignore").write_bytes(b"*.tmp\ncache/\n")
    os.makedirs(a / "d")
    (a / "d" / "keep").write_bytes(b"k")
    wait_content(b / "d" / "keep", b"k")
    (b / "d" / "x.tmp").write_bytes(b"beta only")
    os.makedirs(b / "d" / "cache" / "deep")
    (b / "d" / "cache" / "deep" / "c").write_bytes(b"c")
    wait_for(lambda: b.status()["files"]["local_only"] == 2, 10, "two local-only files")
    os.unlink(a / "d" / "keep")
    os.rmdir(a / "d")
    wait_gone(b / "d")
    wait_for(lambda: settled(a, b), 20, "nothing pending")
    assert not (a / "d").exists() and b.status()["files"]["local_only"] == 0


def test_the_defaults_are_documented():
    cli = (os.path.dirname(__file__) + "/../../docs/cli.md")
    with open(cli) as f:
        text = f.read()
    for rule in DEFAULTS:
        assert f"`{rule}`" in text, rule
