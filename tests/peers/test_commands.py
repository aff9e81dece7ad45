"""fetch, pin, serve --mirror, conflicts and wait, through the real `syncd` command
against real mounted peers on 127.0.0.1."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess

import pytest

from tests.helpers import SYNCD, served_log, syncd, wait_for
from tests.peers.conftest import Peer, read, wait_content

BIG = 300_000  # above prefetch_below: content waits for an open, a pin or a fetch


def wait_listed(path, size: int) -> None:
    wait_for(lambda: os.path.exists(path) and os.stat(path).st_size == size, 20,
             f"{path} listed with its size")


def test_fetch_verifies_everything_and_repairs_damage(cluster):
    a, b = cluster(2)
    b.expect_log(r"WARNING chunk \w+ in the store is damaged: fetching it again")
    os.mkdir(a / "inputs")
    for i in range(3):
        (a / "inputs" / f"{i}.dat").write_bytes(bytes([i + 1]) * BIG)  # not zeros: a hole is here
    wait_listed(b / "inputs" / "2.dat", BIG)
    assert b.status()["files"]["missing"] == 3
    cmd = " ".join([*SYNCD, "--home", str(b.home), "fetch", str(b / "inputs")])
    done = subprocess.run(["script", "-qec", f"stty cols 100 rows 30; {cmd}", "/dev/null"],
                          capture_output=True,
                          text=True, timeout=60)  # on a terminal: with a progress bar
    assert done.returncode == 0, done.stdout
    assert "/inputs:" in done.stdout and "%|" in done.stdout  # tqdm's bar
    assert f"3 file(s), {3 * BIG} bytes, here and verified" in done.stdout
    assert b.status()["files"]["missing"] == 0
    (chunk,) = [p for p in (b.home / "store" / "chunks").rglob("*")
                if p.is_file() and p.read_bytes() == bytes([1]) * BIG]
    chunk.write_bytes(b"rot" * 10)
    done = syncd(b.home, "fetch", "inputs")  # relative to the share's root
    assert "1 damaged chunk(s) fetched again" in done.stdout
    assert chunk.read_bytes() == bytes([1]) * BIG


def test_without_a_reachable_holder_fetch_fails_and_open_gives_eio(cluster):
    a, b = cluster(2)
    b.expect_log(r"ERROR cannot fetch 'only-on-alpha': no peer served chunk")
    (a / "only-on-alpha").write_bytes(b"x" * BIG)
    wait_listed(b / "only-on-alpha", BIG)
    a.stop()
    done = syncd(b.home, "fetch", ".", check=False)
    assert done.returncode == 5, done.stderr
    assert "missing: 'only-on-alpha'" in done.stderr
    with pytest.raises(OSError) as e:
        (b / "only-on-alpha").read_bytes()
    assert e.value.errno == errno.EIO
    assert "cannot fetch 'only-on-alpha'" in b.mount.log()
    assert "tried: alpha" in b.mount.log()


def test_a_pinned_subtree_is_fetched_ahead_of_time(cluster):
    a, b = cluster(2)
    os.mkdir(a / "keep")
    (a / "keep" / "one").write_bytes(b"1" * BIG)
    wait_listed(b / "keep" / "one", BIG)
    syncd(b.home, "pin", str(b / "keep"))
    wait_for(lambda: b.status()["files"]["missing"] == 0, 20, "the pinned file fetched")
    (a / "keep" / "two").write_bytes(b"2" * BIG)
    wait_listed(b / "keep" / "two", BIG)
    wait_for(lambda: b.status()["files"]["missing"] == 0, 20, "a new pinned file fetched")
    assert b.status()["files"]["pinned"] == 2
    a.stop()
    assert read(b / "keep" / "two") == b"2" * BIG  # held here: no peer needed
    b.stop()
    syncd(b.home, "unpin", "keep")  # nothing serves beta: written under its lock
    assert b.status()["files"]["pinned"] == 0


def test_a_mirror_holds_everything_for_peers_that_come_and_go(cluster, tmp_path):
    a, b = cluster(2)
    m = Peer(tmp_path, "mirror", a.key)
    for p in (a, b):
        syncd(p.home, "peer", "add", "mirror", m.url)
        syncd(m.home, "peer", "add", p.name, p.url)
    served_log(tmp_path / "m.log")  # checked when the test ends
    with open(tmp_path / "m.log", "wb") as log:
        proc = subprocess.Popen([*SYNCD, "--home", str(m.home), "serve", "--mirror"],
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        (a / "report").write_bytes(b"final numbers" * BIG)
        wait_for(lambda: m.status()["files"]["local"] == 1, 20, "the mirror to hold it")
        assert m.status()["mounted_at"] is None and m.status()["pid"] == proc.pid
        wait_listed(b / "report", 13 * BIG)
        assert b.status()["files"]["missing"] == 1
        a.stop()
        assert read(b / "report") == b"final numbers" * BIG  # from the mirror
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_small_files_arrive_without_being_opened(cluster):
    a, b = cluster(2)
    for i in range(50):
        (a / f"small-{i}").write_bytes(b"%d" % i * 100)
    wait_listed(b / "small-49", 200)
    wait_for(lambda: b.status()["files"]["missing"] == 0, 20, "small files fetched ahead")
    a.stop()
    assert read(b / "small-7") == b"7" * 100


def test_conflicts_are_listed(cluster):
    a, b = cluster(2)
    for p, q in ((a, "beta"), (b, "alpha")):
        p.set_peer(q, "outofuse")
    (a / "n.txt").write_bytes(b"a")
    (b / "n.txt").write_bytes(b"b")
    for p, q in ((a, "beta"), (b, "alpha")):
        p.set_peer(q, "auto")
    wait_for(lambda: len(os.listdir(a.path)) == 2 and len(os.listdir(b.path)) == 2, 20,
             "both names on both")
    listed = json.loads(syncd(a.home, "conflicts", "--json").stdout)["conflicts"]
    assert [c["path"] for c in listed] == [n for n in os.listdir(a.path) if n != "n.txt"]
    assert syncd(b.home, "conflicts").stdout.strip() == listed[0]["path"]


def test_wait_returns_once_peers_confirmed_and_fails_when_none_answers(cluster):
    a, b = cluster(2)
    (a / "f").write_bytes(b"data" * BIG)
    done = syncd(a.home, "wait", "--timeout", "20")
    assert "confirmed" in done.stdout and "held by 1 other machine" in done.stdout
    assert b.status()["files"]["missing"] == 0  # beta was asked to hold a copy
    assert b.status()["transfers"] == {"fetching": [], "arriving": [], "prefetching": 0}
    (a / "f2").write_bytes(b"x")
    done = syncd(a.home, "wait", "--copies", "2", "--timeout", "2", check=False)
    assert done.returncode == 4 and "only 1 peer is in use" in done.stderr
    wait_content(b / "f", b"data" * BIG)
    b.stop()
    (a / "g").write_bytes(b"more")
    wait_for(lambda: a.peer("beta")["state"] == "offline", 20, "beta seen offline")
    done = syncd(a.home, "wait", "--peer", "beta", "--timeout", "1", check=False)
    assert done.returncode == 5 and "no peer is reachable" in done.stderr


def test_fetch_follows_a_newer_version_when_nobody_holds_the_known_one(cluster):
    """Beta knows version 1 of f; alpha, its only holder, has replaced it before version 2
    reached beta. `syncd fetch` asks alpha for f's state and fetches version 2."""
    a, b = cluster(2)
    v1, v2 = b"1" * BIG, b"2" * BIG
    (a / "f").write_bytes(v1)
    wait_listed(b / "f", BIG)
    a.set_peer("beta", "outofuse")  # alpha's next change is late to reach beta
    (a / "f").write_bytes(v2)  # alpha drops version 1's chunk
    try:
        done = syncd(b.home, "fetch", "f")
    finally:
        a.set_peer("beta", "auto")
    assert f"1 file(s), {BIG} bytes, here and verified" in done.stdout
    assert read(b / "f") == v2
    assert b.peer("alpha")["state"] == "online"  # its 404 for version 1 was an answer


def test_peers_receive_an_import_as_ordinary_changes(cluster, tmp_path):
    a, b = cluster(2)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(300):
        (src / "d" / f"f{i}").write_bytes(b"file %d\n" % i)
    (src / "big").write_bytes(os.urandom(BIG))
    os.symlink("d/f1", src / "link")
    syncd(a.home, "import", str(src), "--into", "imported")
    wait_content(b / "imported" / "big", (src / "big").read_bytes())
    for i in range(300):
        wait_content(b / "imported" / "d" / f"f{i}", b"file %d\n" % i)
    assert os.readlink(b / "imported" / "link") == "d/f1"
