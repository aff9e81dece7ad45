"""Peers that exchange through a relay: a directory that runs no syncd (docs/protocol.md,
"Relays"), with real mounts, a real relay directory and, where said, a real direct link."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.helpers import alive, assert_clean_error, force_cleanup, syncd, wait_for
from tests.peers.conftest import Peer, read, wait_content, wait_gone
from tests.relay.conftest import PASSWORD, USER
from tests.relay.webdav_server import webdav_server
from tests.soak.proxy import Proxy

BIG = os.urandom(2_500_000)  # three chunks, stored on the relay as chunk objects


@pytest.fixture
def relayed(request, tmp_path):
    """make(names, link=False): peers of one share, each with the relay `usb` at
    tmp_path/relay, not peers of each other (unless `link`), not mounted; every one
    unmounted after the test, even when it fails. The relay is that directory, or
    (parametrized indirectly with "webdav") a WebDAV collection Apache serves over it, or
    ("webdav-proxy") that collection through a TCP proxy that can cut (make.proxy)."""
    root = tmp_path / "relay"
    root.mkdir()
    made: list[Peer] = []
    servers = contextlib.ExitStack()
    url, extra = root.as_uri(), []
    kind, proxy = getattr(request, "param", "directory"), None
    if kind.startswith("webdav"):
        server = servers.enter_context(webdav_server(root, USER, PASSWORD))
        url = server.url.rstrip("/")
        if kind == "webdav-proxy":
            proxy = Proxy(server.port, "relay", cut_bytes=256 * 1024)
            servers.callback(proxy.close)
            url = url.replace(f":{server.port}/", f":{proxy.port}/")
        credentials = tmp_path / "relay-credentials"
        credentials.write_text(f"{USER}:{PASSWORD}\n")
        credentials.chmod(0o600)
        extra = ["--credentials", str(credentials)]

    def make(*names: str, link: bool = False) -> list[Peer]:
        key = made[0].key if made else None
        peers = []
        for name in names:
            peer = Peer(tmp_path, name, key)
            key = peer.key
            syncd(peer.home, "relay", "add", "usb", url, *extra)
            peers.append(peer)
        made.extend(peers)
        if link:
            for p in peers:
                for q in peers:
                    if q is not p:
                        syncd(p.home, "peer", "add", q.name, q.url)
        return peers

    make.root, make.proxy = root, proxy
    try:
        yield make
        os.chdir("/")
        for p in made:
            if p.mount.pid:
                p.stop()
    finally:
        for p in made:
            with contextlib.suppress(Exception):
                force_cleanup(p.home, p.path)
        servers.close()


def relay_of(peer: Peer) -> dict:
    (relay,) = peer.status()["relays"]
    return relay


def batches_each(peer: Peer, prefix: str, count: int) -> dict[str, bytes]:
    """`count` files written on a mounted peer, each stored on its relay before the next
    (so each is a batch of its own): {name: bytes}."""
    written = {}
    for i in range(count):
        written[f"{prefix}{i}"] = b"%d" % i
        (peer / f"{prefix}{i}").write_bytes(b"%d" % i)
        wait_for(lambda: relay_of(peer)["pending_changes"] == 0, 10, "the batch")
    return written


def covered(root: Path, tag: str, snapshot: Path) -> list[int]:
    """The batches of the member TAG that the snapshot covers, but its newest."""
    batches = sorted(int(p.name) for p in root.glob(f"b/{tag}/[0-9]*"))
    return [n for n in batches[:-1] if n <= int(snapshot.name)]


def tree(peer: Peer) -> dict[str, bytes | None]:
    out = {}
    for folder, _, files in os.walk(peer.path):
        for name in files:
            path = Path(folder, name)
            out[str(path.relative_to(peer.path))] = read(path)
    return out


@pytest.mark.parametrize("relayed", ["directory", "webdav"], indirect=True)
def test_two_peers_never_up_together_exchange_and_a_third_joins_from_the_relay(relayed):
    alpha, beta = relayed("alpha", "beta")
    alpha.start()
    (alpha / "notes.txt").write_bytes(b"one")
    (alpha / "d").mkdir()
    (alpha / "d" / "big.bin").write_bytes(BIG)
    (alpha / "gone.txt").write_bytes(b"bye")
    done = syncd(alpha.home, "wait", "--timeout", "30")  # a reachable relay counts
    assert "confirmed by every online peer" in done.stdout
    assert "stored on 1 relay(s)" in done.stdout
    alpha.stop()
    assert relay_of(alpha)["pending_changes"] == 0  # the last upload at umount
    assert relay_of(alpha)["stored_bytes"] > len(BIG)

    beta.start()
    wait_content(beta / "notes.txt", b"one")
    wait_content(beta / "gone.txt", b"bye")
    wait_content(beta / "d" / "big.bin", BIG)  # its chunks from the relay, on open
    (beta / "notes.txt").write_bytes(b"two")
    os.rename(beta / "d" / "big.bin", beta / "d" / "moved.bin")
    os.unlink(beta / "gone.txt")
    beta.stop()

    alpha.start()
    wait_content(alpha / "notes.txt", b"two")
    wait_content(alpha / "d" / "moved.bin", BIG)
    wait_gone(alpha / "d" / "big.bin")
    wait_gone(alpha / "gone.txt")
    alpha.stop()

    (gamma,) = relayed("gamma")
    gamma.start()
    wait_content(gamma / "d" / "moved.bin", BIG)
    wait_for(lambda: tree(gamma) == {"notes.txt": b"two", "d/moved.bin": BIG}, 20,
             "gamma to hold the tree alpha and beta made")
    gamma.stop()

    # the relay holds no name, path or content in the clear
    for path in relayed.root.rglob("*"):
        assert not any(word in path.name for word in ("notes", "moved", "big", "alpha"))
        if path.is_file() and path.name != ".syncd-relay":
            data = path.read_bytes()
            assert b"notes.txt" not in data and BIG[:64] not in data


def test_a_concurrent_edit_and_a_relay_that_goes_away_and_comes_back(relayed):
    alpha, beta = relayed("alpha", "beta")
    alpha.start()
    (alpha / "c.txt").write_bytes(b"base")
    alpha.stop()
    beta.start()
    wait_content(beta / "c.txt", b"base")
    away = relayed.root.with_name("unplugged")
    shutil.move(relayed.root, away)  # the disk is unplugged
    beta.expect_log(r"WARNING relay usb: .*relay",  # the backend's words for a missing root
                    r"WARNING relay usb: \d+ change\(s\) made here are not stored there")
    wait_for(lambda: relay_of(beta)["state"] == "unreachable", 10, "the relay to be missed")
    assert not relayed.root.exists()  # never made again beneath a disk not there
    (beta / "c.txt").write_bytes(b"beta's edit")
    done = syncd(beta.home, "umount")
    assert "relay usb: " in done.stderr and "not stored there yet" in done.stderr
    shutil.move(away, relayed.root)

    alpha.start()
    (alpha / "c.txt").write_bytes(b"alpha's edit, later")
    alpha.stop()
    beta.start()
    wait_for(lambda: relay_of(beta)["pending_changes"] == 0
             and len(tree(beta)) == 2, 20, "beta to store its edit and take alpha's")
    on_beta = tree(beta)
    beta.stop()
    alpha.start()
    wait_for(lambda: len(tree(alpha)) == 2, 20, "alpha to take beta's edit")
    on_alpha = tree(alpha)
    alpha.stop()
    assert on_alpha == on_beta
    (copy,) = [name for name in on_alpha if ".sync-conflict-" in name]
    assert on_alpha["c.txt"] == b"alpha's edit, later" and on_alpha[copy] == b"beta's edit"


def test_a_relay_and_a_direct_link_together_lose_and_duplicate_nothing(relayed):
    alpha, beta = relayed("alpha", "beta", link=True)
    alpha.start()
    beta.start()
    for i in range(20):
        (alpha / f"a{i}").write_bytes(b"a" * i)
        (beta / f"b{i}").write_bytes(b"b" * i)
    (alpha / "shared").write_bytes(b"first")
    wait_content(beta / "shared", b"first")
    (beta / "shared").write_bytes(b"second")
    expected = {**{f"a{i}": b"a" * i for i in range(20)},
                **{f"b{i}": b"b" * i for i in range(20)}, "shared": b"second"}
    for peer in (alpha, beta):
        wait_for(lambda p=peer: tree(p) == expected, 30, f"{peer.name} to converge")
        wait_for(lambda p=peer: relay_of(p)["pending_changes"] == 0, 20, "the relay")
    assert alpha.status()["files"]["conflicts"] == beta.status()["files"]["conflicts"] == 0


def test_a_tampered_or_foreign_batch_is_skipped_and_nothing_of_it_applied(relayed):
    alpha, beta = relayed("alpha", "beta")
    alpha.start()
    (alpha / "first.txt").write_bytes(b"1")
    alpha.stop()
    alpha.start()
    (alpha / "second.txt").write_bytes(b"2")
    alpha.stop()
    batches = sorted(relayed.root.glob("b/*/*"))
    assert len(batches) >= 2
    first = batches[0]
    data = first.read_bytes()
    first.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped
    beta.expect_log(r"WARNING relay usb: skipped b/\w+/\d+, nothing of it applied: .*"
                    r"does not open with the cluster key")
    beta.start()
    wait_for(lambda: "does not open" in (relay_of(beta)["last_error"] or ""), 10,
             "status to say why")
    assert tree(beta) == {}  # nor anything after it: order matters
    first.write_bytes(data)  # the fault is gone
    wait_content(beta / "second.txt", b"2")
    wait_content(beta / "first.txt", b"1")
    wait_for(lambda: relay_of(beta)["last_error"] is None, 10, "status to clear")
    beta.stop()


def test_a_snapshot_replaces_the_batches_every_member_read(relayed):
    """A device writes a snapshot once it has SNAPSHOT_BATCHES batches past its last one,
    removes its batches only once every member read them, and a newcomer starts from the
    snapshot alone."""
    from syncd.relay.sealing import Keys
    from syncd.relaylink import SNAPSHOT_BATCHES

    alpha, beta = relayed("alpha", "beta")
    beta.start()
    wait_for(lambda: relay_of(beta)["state"] == "online", 10, "beta to join the relay")
    beta.stop()
    tag = Keys([bytes.fromhex(alpha.key)]).tag(alpha.status()["device"]["id"])
    root = relayed.root
    alpha.start()
    expected = batches_each(alpha, "f", SNAPSHOT_BATCHES + 2)
    (snapshot,) = wait_for(lambda: list(root.glob(f"s/{tag}/[0-9]*")), 30, "a snapshot")
    # beta, a member, read none of them: they stay
    assert len(list(root.glob(f"b/{tag}/*"))) >= SNAPSHOT_BATCHES
    alpha.stop()
    beta.start()
    wait_for(lambda: tree(beta) == expected, 30, "beta to read alpha's batches")
    beta.stop()
    assert not list(root.glob("b/*/*")) or all(
        tag in str(p) for p in root.glob("b/*/*"))  # beta stored nothing alpha made again
    alpha.start()
    # (on a loaded machine the snapshot can come before the last batches: those stay,
    # and so does the newest batch, whatever it is)
    wait_for(lambda: not covered(root, tag, snapshot), 30,
             "alpha to remove the batches every member read that the snapshot covers")
    alpha.stop()
    ours = sum(p.stat().st_size for kind in "bcs" for p in (root / kind / tag).glob("*"))
    assert ours > 0  # its snapshot at least
    assert relay_of(alpha)["stored_bytes"] <= ours + 1024  # its certificate not counted
    (gamma,) = relayed("gamma")
    gamma.start()
    wait_for(lambda: tree(gamma) == expected, 30, "gamma to start from the snapshot")
    gamma.stop()


def test_a_batch_forged_by_a_non_member_or_of_another_share_is_skipped(relayed, tmp_path):
    """A device that holds the cluster key but writes into another member's folder, and an
    object sealed by another share, are refused; the member's real batch still applies."""
    from syncd import identity
    from syncd.relay import sealing

    alpha, beta = relayed("alpha", "beta")
    alpha.start()
    (alpha / "real.txt").write_bytes(b"real")
    alpha.stop()
    last, real = max((int(p.name), p) for p in relayed.root.glob("b/*/*"))
    keys = sealing.Keys([bytes.fromhex(alpha.key)])
    intruder = identity.ensure(tmp_path / "intruder.pem", "ee" * 16)
    forged = f"b/{real.parent.name}/{last + 1:016d}"
    (relayed.root / forged).write_bytes(keys.seal(forged, sealing.sign(
        sealing.signing_key(intruder), forged, b"anything")))
    foreign = f"b/{real.parent.name}/{last + 2:016d}"
    (relayed.root / foreign).write_bytes(sealing.Keys([b"x" * 32]).seal(foreign, b"x"))
    beta.expect_log(r"WARNING relay usb: skipped b/\w+/\d+, nothing of it applied: .*"
                    r"not signed by device")
    beta.start()
    wait_content(beta / "real.txt", b"real")
    wait_for(lambda: "not signed by device" in (relay_of(beta)["last_error"] or ""), 10,
             "status to say why")
    assert tree(beta) == {"real.txt": b"real"}
    (relayed.root / forged).unlink()  # gone: the next object is the other share's
    beta.expect_log(r"WARNING relay usb: skipped b/\w+/\d+, nothing of it applied: .*"
                    r"sealed with a key this share never had")
    wait_for(lambda: "never had" in (relay_of(beta)["last_error"] or ""), 10,
             "status to say why")
    beta.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs as the relay")
def test_a_full_relay_is_said_and_the_exchange_completes_once_there_is_room(relayed):
    import subprocess

    root = relayed.root
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)], check=True)
    try:
        (alpha,) = relayed("alpha")
        alpha.expect_log(r"WARNING relay usb: .*(No space left|full)")
        alpha.start()
        (alpha / "big.bin").write_bytes(BIG)
        wait_for(lambda: relay_of(alpha)["state"] == "failing", 20, "the relay to be full")
        assert relay_of(alpha)["pending_changes"] == 1
        assert not [p for p in root.rglob("*") if p.name.startswith(".tmp-")]  # no debris
        subprocess.run(["mount", "-o", "remount,size=8m", str(root)], check=True)
        wait_for(lambda: relay_of(alpha)["pending_changes"] == 0
                 and relay_of(alpha)["state"] == "online", 20, "the upload once there is room")
        alpha.stop()
    finally:  # the fixture unmounts alpha (a lazy unmount lets it finish with the relay)
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_a_lost_member_is_not_waited_for_and_catches_up_from_the_snapshot(relayed):
    """relay_member_days: a member that has not read for that long no longer holds back
    the removal of batches; status says so; back, it starts from the snapshots."""
    from syncd.relay.sealing import Keys
    from syncd.relaylink import SNAPSHOT_BATCHES

    alpha, beta = relayed("alpha", "beta")
    beta.start()
    wait_for(lambda: relay_of(beta)["state"] == "online", 10, "beta to join the relay")
    beta.stop()
    syncd(alpha.home, "config", "set", "relay_member_days", "0.0001")  # 8.64 s
    alpha.expect_log(r"WARNING relay usb: member \w+ has not read this relay for over")
    alpha.start()
    expected = batches_each(alpha, "f", SNAPSHOT_BATCHES + 1)
    wait_for(lambda: "has not read this relay" in (relay_of(alpha)["last_error"] or ""), 40,
             "beta to be lost")
    tag = Keys([bytes.fromhex(alpha.key)]).tag(alpha.status()["device"]["id"])
    (snapshot,) = wait_for(lambda: list(relayed.root.glob(f"s/{tag}/[0-9]*")), 30, "a snapshot")
    # (on a loaded machine the snapshot can come before the last batches: those stay,
    # and so does the newest batch, whatever it is)
    wait_for(lambda: not covered(relayed.root, tag, snapshot), 30,
             "the batches the snapshot covers to be removed, beta unread")
    alpha.stop()
    beta.expect_log(r"WARNING relay usb: batches of \w+ in \(\d+, \d+\] were removed")
    beta.start()
    wait_for(lambda: tree(beta) == expected, 30, "beta to catch up from the snapshot")
    beta.stop()


def entries(peer: Peer) -> dict[str, bytes | None]:
    """Every entry of a mounted peer: a file's bytes, a directory as None."""
    out = tree(peer)
    for folder, dirs, _ in os.walk(peer.path):
        out.update((str(Path(folder, d).relative_to(peer.path)), None) for d in dirs)
    return out


def test_a_reader_that_missed_removed_batches_converges_from_the_snapshot(relayed):
    """A reader whose next batch of a member names a PREV beyond what it read (the
    batches between were removed unread) takes the snapshots, and ends with the same
    tree and contents: what was deleted in the missed batches (a file, a directory and
    its files, a rename's old name) stays gone, what was made or changed there is
    there."""
    from syncd.relay.sealing import Keys
    from syncd.relaylink import SNAPSHOT_BATCHES

    alpha, beta = relayed("alpha", "beta")
    alpha.start()
    beta.start()
    (alpha / "d").mkdir()
    for name in ("keep", "gone", "edit", "move", "d/x", "d/y"):
        (alpha / name).write_bytes(name.encode() * 100)
    wait_for(lambda: entries(beta) == entries(alpha), 30, "beta to read the first files")
    beta.stop()
    syncd(alpha.home, "config", "set", "relay_member_days", "0.0001")  # 8.64 s
    alpha.expect_log(r"WARNING relay usb: member \w+ has not read this relay for over")
    (alpha / "gone").unlink()
    shutil.rmtree(alpha / "d")
    (alpha / "edit").write_bytes(b"edited")
    (alpha / "move").rename(alpha / "moved")
    (alpha / "new").write_bytes(b"made while beta was away")
    batches_each(alpha, "f", SNAPSHOT_BATCHES + 1)
    tag = Keys([bytes.fromhex(alpha.key)]).tag(alpha.status()["device"]["id"])
    (snapshot,) = wait_for(lambda: list(relayed.root.glob(f"s/{tag}/[0-9]*")), 30, "a snapshot")
    wait_for(lambda: not covered(relayed.root, tag, snapshot), 40,
             "the batches the snapshot covers to be removed, beta unread")
    expected = entries(alpha)
    assert {"keep", "edit", "moved", "new"} <= expected.keys()
    assert not {"gone", "move", "d", "d/x"} & expected.keys()
    alpha.stop()
    beta.expect_log(r"WARNING relay usb: batches of \w+ in \(\d+, \d+\] were removed")
    beta.start()
    wait_for(lambda: entries(beta) == expected, 30, "beta to converge from the snapshot")
    time.sleep(1)  # a round more: nothing comes back
    assert entries(beta) == expected
    beta.stop()
    assert "were removed before they were read here: taking the snapshots" in beta.mount.log()


def test_a_member_whose_certificate_does_not_open_is_still_waited_for(relayed):
    """A member's certificate damaged on the relay (soak bug, relay_damage): the writer
    cannot read that member's cursor, and must keep its batches, not take the member for
    gone; once the certificate is mended the member reads them all, with no gap to fill
    from the snapshots (the soak's divergence began there)."""
    from syncd.relay.sealing import Keys
    from syncd.relaylink import SNAPSHOT_BATCHES

    alpha, beta = relayed("alpha", "beta")
    beta.start()
    wait_for(lambda: relay_of(beta)["state"] == "online", 10, "beta to join the relay")
    beta.stop()
    keys = Keys([bytes.fromhex(alpha.key)])
    tag = keys.tag(alpha.status()["device"]["id"])
    certificate = relayed.root / "m" / keys.tag(beta.status()["device"]["id"])
    good = certificate.read_bytes()
    certificate.write_bytes(good[:len(good) // 2])
    alpha.expect_log(r"WARNING relay usb: skipped m/\w+, nothing of it applied: member "
                     r"certificate m/\w+: m/\w+: does not open with the cluster key")
    alpha.start()
    expected = batches_each(alpha, "f", SNAPSHOT_BATCHES + 1)
    wait_for(lambda: list(relayed.root.glob(f"s/{tag}/[0-9]*")), 30, "a snapshot")
    error = relay_of(alpha)["last_error"]
    alpha.stop()
    assert len(list(relayed.root.glob(f"b/{tag}/*"))) >= SNAPSHOT_BATCHES  # kept for beta
    assert "does not open with the cluster key" in error  # status says why
    certificate.write_bytes(good)
    beta.start()
    wait_for(lambda: tree(beta) == expected, 30, "beta to read alpha's batches")
    beta.stop()
    assert "were removed before they were read here" not in beta.mount.log()


def test_a_member_whose_certificate_does_not_open_is_named_and_can_be_forgotten(relayed):
    """Status names the relay and the member (its tag, and its device as read there
    before) that batches are kept for; `syncd relay forget` refuses a member whose
    certificate opens and, given one that does not, lets removal proceed; that machine,
    back after all, publishes its certificate again and catches up from the snapshot."""
    from syncd.relay.sealing import Keys
    from syncd.relaylink import SNAPSHOT_BATCHES

    alpha, beta = relayed("alpha", "beta")
    beta.start()
    wait_for(lambda: relay_of(beta)["state"] == "online", 10, "beta to join the relay")
    beta.stop()
    keys = Keys([bytes.fromhex(alpha.key)])
    ours, device = alpha.status()["device"]["id"], beta.status()["device"]["id"]
    tag, member = keys.tag(ours), keys.tag(device)
    alpha.start()
    wait_for(lambda: relay_of(alpha)["state"] == "online", 10, "alpha to read beta there")
    certificate = relayed.root / "m" / member
    good = certificate.read_bytes()
    certificate.write_bytes(good[:len(good) // 2])
    alpha.expect_log(r"WARNING relay usb: skipped m/\w+, nothing of it applied: member "
                     r"certificate m/\w+: m/\w+: does not open with the cluster key")
    expected = batches_each(alpha, "f", SNAPSHOT_BATCHES + 1)
    (snapshot,) = wait_for(lambda: list(relayed.root.glob(f"s/{tag}/[0-9]*")), 30, "a snapshot")
    (kept,) = wait_for(lambda: relay_of(alpha)["kept_for"], 10, "status to say why")
    assert kept["member"] == member
    assert f"member {member} (device {device})" in kept["error"]
    assert f"'syncd relay forget usb {member}'" in kept["error"]
    text = syncd(alpha.home, "status").stdout
    assert f"usb: member certificate m/{member}" in text and "syncd relay forget" in text
    assert len(covered(relayed.root, tag, snapshot)) >= SNAPSHOT_BATCHES - 1  # kept
    assert_clean_error(syncd(alpha.home, "relay", "forget", "usb", tag, check=False), 4,
                       "opens: it is read and waited for as usual")
    assert_clean_error(syncd(alpha.home, "relay", "forget", "usb", "nobody", check=False),
                       1, "relay usb has no member nobody")
    assert_clean_error(syncd(alpha.home, "relay", "forget", "disk", member, check=False),
                       1, "no relay named 'disk'")
    assert certificate.exists()
    done = syncd(alpha.home, "relay", "forget", "usb", device)  # its device id does too
    assert f"forgot member {member} of relay usb" in done.stdout
    assert not certificate.exists()
    again = syncd(alpha.home, "relay", "forget", "usb", member)  # gone there; read here
    assert "nothing is kept for it any more here" in again.stdout
    wait_for(lambda: not covered(relayed.root, tag, snapshot), 30,
             "the batches the snapshot covers to be removed once beta is forgotten")
    wait_for(lambda: relay_of(alpha)["kept_for"] == [], 10, "status to name no one")
    alpha.stop()
    beta.expect_log(r"WARNING relay usb: batches of \w+ in \(\d+, \d+\] were removed")
    beta.start()
    wait_for(lambda: tree(beta) == expected, 30, "beta to catch up from the snapshot")
    wait_for(certificate.exists, 10, "beta to publish its certificate again")
    beta.stop()


def test_a_writer_killed_after_a_snapshot_ahead_of_its_batches_makes_no_gap(relayed):
    """A snapshot holds states received since the last upload, so it can be ahead of the
    writer's newest batch. Killed then, the writer restarted and named the snapshot as the
    PREV of its next batch: every reader took that for batches removed unread and fell
    back to the snapshots (the relay soak, seed 9: beta killed 0.3 s after a snapshot,
    and both others "taking the snapshots"). PREV is the newest batch, kept for this."""
    from syncd.relay.sealing import Keys
    from syncd.relaylink import SNAPSHOT_BATCHES

    alpha, beta = relayed("alpha", "beta")
    beta.start()
    wait_for(lambda: relay_of(beta)["state"] == "online", 10, "beta to join the relay")
    beta.stop()
    tag = Keys([bytes.fromhex(alpha.key)]).tag(alpha.status()["device"]["id"])
    root = relayed.root

    def stamps(kind: str) -> list[int]:
        # Only finished objects: the relay writes each under a temporary name first.
        return sorted(int(p.name) for p in root.glob(f"{kind}/{tag}/*") if p.name.isdigit())

    def unsnapshotted() -> int:
        newest = (stamps("s") or [0])[-1]
        return sum(n > newest for n in stamps("b"))

    expected = {}
    alpha.start()
    for i in range(5 * SNAPSHOT_BATCHES):  # stopped with enough batches for a snapshot
        if unsnapshotted() >= SNAPSHOT_BATCHES:
            alpha.stop()
            if unsnapshotted() >= SNAPSHOT_BATCHES:
                break
            alpha.start()  # (a compaction came first: more batches)
        (alpha / f"f{i}").write_bytes(b"%d" % i)
        expected[f"f{i}"] = b"%d" % i
        wait_for(lambda: relay_of(alpha)["pending_changes"] == 0, 10, "the batch")
    assert unsnapshotted() >= SNAPSHOT_BATCHES
    before, newest_batch = stamps("s"), stamps("b")[-1]
    beta.start()  # reads alpha's batches, and makes a change alpha reads, stamped there
    (beta / "from-beta").write_bytes(b"b")
    expected["from-beta"] = b"b"
    wait_for(lambda: tree(beta) == expected, 30, "beta to read alpha's batches")
    beta.stop()
    alpha.start()  # its first round: beta's state, then a snapshot up to its stamp
    wait_content(alpha / "from-beta", b"b")
    wait_for(lambda: stamps("s") != before, 30, "a snapshot")
    assert stamps("s")[-1] > newest_batch  # ahead of alpha's newest batch
    pid = alpha.mount.pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 10, "alpha's mount process to die")
    alpha.start()  # the mount clears the dead one
    (alpha / "after").write_bytes(b"after the kill")
    expected["after"] = b"after the kill"
    wait_for(lambda: relay_of(alpha)["pending_changes"] == 0, 10, "the batch")
    alpha.stop()
    beta.start()
    wait_for(lambda: tree(beta) == expected, 30, "beta to read alpha's batch")
    beta.stop()
    assert "were removed before they were read here" not in beta.mount.log()


def test_a_state_of_ours_readers_would_refuse_is_left_out_and_the_rest_goes_up(relayed):
    """A state here that fails the validation readers make (a recovered file of 0 bytes
    with one slot, before e7f48ee) is not stored, with a log line, as a peer refuses it;
    the rest goes up. Reading its chunks for the upload used to end the serving process.
    The bad state is made while the relay is away, so its first upload is the refused one
    (a relay's cursor never goes back, so no batch is ever written twice)."""
    alpha, beta = relayed("alpha", "beta")
    alpha.start()
    (alpha / "good").write_bytes(b"good")
    wait_for(lambda: relay_of(alpha)["pending_changes"] == 0, 10, "the first batch")
    away = relayed.root.with_name("unplugged")
    shutil.move(relayed.root, away)
    alpha.expect_log(r"WARNING relay usb: .*relay",  # the backend's words for a missing root
                     r"WARNING relay usb: \d+ change\(s\) made here are not stored there")
    wait_for(lambda: relay_of(alpha)["state"] == "unreachable", 10, "the relay to be missed")
    (alpha / "bad").write_bytes(b"four")
    syncd(alpha.home, "umount")
    shutil.move(away, relayed.root)
    db = sqlite3.connect(alpha.home / "index.db")
    with db:
        db.execute("UPDATE inodes SET size = 0 WHERE ino = (SELECT ino FROM nodes WHERE "
                   "name = 'bad')")
    db.close()
    alpha.expect_log(r"ERROR relay usb: node \w+:\d+ \('bad'\) is not stored there, which "
                     r"skips it: .*a file of 0 bytes has 0 slot\(s\), not 1")
    alpha.start()
    (alpha / "after").write_bytes(b"after")
    wait_for(lambda: relay_of(alpha)["pending_changes"] == 0, 10, "the batch")
    alpha.stop()
    beta.start()
    wait_content(beta / "after", b"after")
    wait_content(beta / "good", b"good")
    assert not (beta / "bad").exists()  # never stored: beta would refuse it
    beta.stop()


def test_chunks_no_remaining_object_names_are_removed_and_the_current_ones_stay(relayed):
    """A file replaced and one deleted: their old chunks stay while a member has not read
    the batches past them, go once it has and a snapshot covers them; the chunks of the
    current files stay, so a newcomer reads every file from the relay alone. The relay
    then holds at most 1.1x the share's content (random bytes: compressed is as large)."""
    from syncd.relay.sealing import Keys
    from syncd.relaylink import COMPACT_EVERY, SNAPSHOT_BATCHES

    alpha, beta = relayed("alpha", "beta")
    beta.start()
    wait_for(lambda: relay_of(beta)["state"] == "online", 10, "beta to join the relay")
    beta.stop()
    tag = Keys([bytes.fromhex(alpha.key)]).tag(alpha.status()["device"]["id"])
    root = relayed.root

    def chunk_bytes() -> int:
        return sum(p.stat().st_size for p in root.glob(f"c/{tag}/*"))

    keep, old, gone, new = (os.urandom(2_500_000) for _ in range(4))
    alpha.start()
    for name, data in (("keep.bin", keep), ("old.bin", old), ("gone.bin", gone)):
        (alpha / name).write_bytes(data)
        wait_for(lambda: relay_of(alpha)["pending_changes"] == 0, 20, "the batch")
    (alpha / "old.bin").write_bytes(new)
    (alpha / "gone.bin").unlink()
    expected = {"keep.bin": keep, "old.bin": new}
    for i in range(SNAPSHOT_BATCHES + 1):  # batches enough for a snapshot
        wait_for(lambda: relay_of(alpha)["pending_changes"] == 0, 20, "the batch")
        (alpha / f"f{i}").write_bytes(b"%d" % i)
        expected[f"f{i}"] = b"%d" % i
    wait_for(lambda: relay_of(alpha)["pending_changes"] == 0, 20, "the batch")
    wait_for(lambda: len(list(root.glob(f"s/{tag}/[0-9]*"))) == 1, 30, "a snapshot")
    time.sleep(COMPACT_EVERY + 2)  # a compaction after the snapshot: beta read nothing yet
    assert chunk_bytes() >= len(keep) + len(old) + len(gone) + len(new)
    alpha.stop()
    beta.start()
    wait_for(lambda: tree(beta) == expected, 60, "beta to read alpha's batches")
    beta.stop()
    alpha.start()
    share = sum(map(len, expected.values()))
    wait_for(lambda: chunk_bytes() <= 1.1 * (len(keep) + len(new)), 40,
             "alpha to remove the chunks no remaining object names")
    alpha.stop()
    assert len(keep) + len(new) <= chunk_bytes() <= 1.1 * (len(keep) + len(new))
    stored = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"relay stores {stored} B for a share of {share} B: {stored / share:.3f}x")
    assert stored <= 1.1 * share
    assert relay_of(alpha)["stored_bytes"] <= stored
    (gamma,) = relayed("gamma")
    gamma.start()
    wait_for(lambda: tree(gamma) == expected, 60, "gamma to read every file from the relay")
    gamma.stop()


@pytest.mark.parametrize("relayed", ["webdav-proxy"], indirect=True)
def test_an_upload_cut_midway_is_said_and_completes_once_traffic_passes(relayed):
    """A mounted peer whose chunk uploads to a WebDAV relay are cut: status says the relay
    is unreachable and why, no batch names content that is not there, and the upload
    completes once the proxy passes traffic again; the other member then reads it all."""
    alpha, beta = relayed("alpha", "beta")
    proxy = relayed.proxy
    alpha.expect_log(r"WARNING relay usb: .*cannot reach the server")
    alpha.start()
    wait_for(lambda: relay_of(alpha)["state"] == "online", 20, "alpha to join the relay")
    proxy.set_mode("reset")  # the kept-alive connection goes; new ones are cut:
    proxy.set_mode("cut_request")  # requests past 256 KiB, the chunks, not the listings
    (alpha / "big.bin").write_bytes(BIG)
    wait_for(lambda: proxy.stats["cut"] >= 1 and relay_of(alpha)["state"] == "unreachable",
             30, "the upload to be cut")
    assert "cannot reach the server" in relay_of(alpha)["last_error"]
    assert relay_of(alpha)["pending_changes"] == 1
    assert not list(relayed.root.glob("b/*/*"))  # no batch before its chunks are there
    proxy.set_mode("pass")
    wait_for(lambda: relay_of(alpha)["pending_changes"] == 0
             and relay_of(alpha)["state"] == "online", 30, "the upload to complete")
    assert relay_of(alpha)["last_error"] is None
    alpha.stop()
    beta.start()
    wait_content(beta / "big.bin", BIG, 60)
    beta.stop()


@pytest.mark.parametrize("relayed", ["webdav-proxy"], indirect=True)
def test_a_download_cut_midway_applies_nothing_and_completes_once_traffic_passes(relayed):
    """A batch of 100 small files (their bytes inside it, 800 KiB) whose download is cut:
    status says so, nothing of the batch is applied, and all of it arrives once the proxy
    passes traffic again."""
    alpha, beta = relayed("alpha", "beta")
    proxy = relayed.proxy
    beta.start()
    wait_for(lambda: relay_of(beta)["state"] == "online", 20, "beta to join the relay")
    beta.stop()
    proxy.set_mode("reset")  # alpha's changes pile up, then go up as one batch
    alpha.expect_log(r"WARNING relay usb: .*cannot reach the server")
    alpha.start()
    expected = {f"f{i:03d}": os.urandom(8192) for i in range(100)}
    for name, data in expected.items():
        (alpha / name).write_bytes(data)
    proxy.set_mode("pass")
    wait_for(lambda: relay_of(alpha)["pending_changes"] == 0, 30, "alpha's upload")
    alpha.stop()
    (batch,) = relayed.root.glob("b/*/*")
    assert batch.stat().st_size > proxy.cut_bytes  # so that its download is cut
    proxy.set_mode("cut_answer")
    beta.expect_log(r"WARNING relay usb: .*cannot reach the server")
    beta.start()
    wait_for(lambda: relay_of(beta)["state"] == "unreachable", 30, "the download to be cut")
    assert "cannot reach the server" in relay_of(beta)["last_error"]
    assert proxy.stats["cut"] >= 1
    assert tree(beta) == {}  # nothing of the batch applied
    proxy.set_mode("pass")
    wait_for(lambda: tree(beta) == expected, 30, "the batch once traffic passes")
    wait_for(lambda: relay_of(beta)["state"] == "online", 10, "status to clear")
    assert relay_of(beta)["last_error"] is None
    beta.stop()


@pytest.mark.parametrize("relayed", ["webdav"], indirect=True)
def test_a_wrong_password_is_said_and_nothing_else_breaks(relayed, tmp_path):
    """Credentials that the server refuses: status says the relay refused them (without
    the password), nothing is written there, and the mount and a direct peer work."""
    alpha, beta = relayed("alpha", "beta", link=True)
    (tmp_path / "relay-credentials").write_text(f"{USER}:wrong-pass\n")
    for p in (alpha, beta):  # the credentials file is both's
        p.expect_log(r"WARNING relay usb: .*refused the user name or password")
    alpha.start()
    beta.start()
    wait_for(lambda: relay_of(alpha)["state"] == "failing", 20, "the relay to refuse alpha")
    error = relay_of(alpha)["last_error"]
    assert "refused the user name or password (HTTP 401" in error
    assert "wrong-pass" not in error and PASSWORD not in error
    (alpha / "a.txt").write_bytes(b"through the link")
    wait_content(beta / "a.txt", b"through the link")
    assert read(alpha / "a.txt") == b"through the link"
    assert not [p for p in relayed.root.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(relayed.root).parts)]  # nothing there
    beta.stop()
    alpha.stop()


def test_a_delete_is_forgotten_once_a_relay_member_and_its_snapshot_have_it(relayed):
    """Tombstone collection through a relay (docs/protocol.md, "Tombstones"): alpha keeps
    its tombstone while beta, a relay-only member, has read it but has no snapshot with it
    (a newcomer would start from an older one); once beta's snapshot has it, alpha drops
    it, and a newcomer starting from the relay does not bring the file back."""
    from syncd.relaylink import SNAPSHOT_BATCHES

    alpha, beta = relayed("alpha", "beta")
    for key in ("tombstone_keep_days", "log_keep_days"):
        syncd(alpha.home, "config", "set", key, "0.00002")  # 1.7 s: a test's value
    alpha.start()
    beta.start()
    (alpha / "f").write_bytes(b"to be deleted")
    wait_content(beta / "f", b"to be deleted")
    (alpha / "f").unlink()
    wait_gone(beta / "f")
    beta_id = beta.status()["device"]["id"]
    wait_for(lambda: alpha.status()["tombstones"]["held_by"] == [
        f"relay usb member {beta_id}"], 30, "beta's snapshot to be what holds it")
    time.sleep(12)  # alpha's compaction has read beta's cursor again: still held
    assert alpha.status()["tombstones"] == {"kept": 1,
                                            "held_by": [f"relay usb member {beta_id}"]}
    expected = batches_each(beta, "b", SNAPSHOT_BATCHES + 1)  # then its snapshot
    wait_for(lambda: alpha.status()["tombstones"]["kept"] == 0, 60,
             "alpha to drop its tombstone")
    wait_for(lambda: tree(alpha) == expected, 30, "alpha to have beta's files")
    (gamma,) = relayed("gamma")
    gamma.start()
    wait_for(lambda: tree(gamma) == expected, 30, "gamma to start from the relay")
    gamma.stop()
