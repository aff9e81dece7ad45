"""Relay records in a real index, the directory backend on a real directory, and the
sealing of relay objects (docs/protocol.md, "Relays")."""

from __future__ import annotations

import os
import shutil

import pytest
import trio
from syncd.index import relays

from syncd import identity
from syncd.relay import sealing
from syncd.relay.backends import BadRelay, check_url, credentials, open_storage
from syncd.relay.directory import Directory
from syncd.relay.objects import Objects
from syncd.relay.storage import MARKER, Full, Missing, Unreachable

KEY, OTHER = b"k" * 32, b"o" * 32


def test_relays_are_recorded_and_forgotten(cat):
    relays.add_relay(cat.db, "usb", "file:///media/usb")
    with pytest.raises(relays.RelayExists):
        relays.add_relay(cat.db, "usb", "file:///elsewhere")
    relays.save_relay(cat.db, "usb", state="online", cursor=7, last_seen=100,
                      stored_bytes=4096)
    (r,) = relays.list_relays(cat.db)
    assert (r.name, r.url, r.state, r.cursor, r.last_seen, r.stored_bytes) == \
        ("usb", "file:///media/usb", "online", 7, 100, 4096)
    with pytest.raises(ValueError):
        relays.save_relay(cat.db, "usb", url="file:///x")
    relays.pin_member(cat.db, "usb", "cd" * 16, "f" * 64)
    relays.pin_member(cat.db, "usb", "cd" * 16, "0" * 64)  # the first one stays
    relays.consumed(cat.db, "usb", "cd" * 16, 12)
    assert relays.members(cat.db, "usb") == {"cd" * 16: ("f" * 64, 12)}
    relays.remove_relay(cat.db, "usb")
    assert relays.list_relays(cat.db) == [] and relays.members(cat.db, "usb") == {}
    with pytest.raises(relays.NoSuchRelay):
        relays.remove_relay(cat.db, "usb")


def test_a_forgotten_member_no_longer_holds_tombstones_until_it_reads_again(cat):
    """`syncd relay forget`: the member read here with that tag is lost; what its
    cursor says once it reads again makes it a holder again."""
    from syncd.index import tombstones

    keys = sealing.Keys([KEY])
    relays.add_relay(cat.db, "usb", "file:///media/usb")
    relays.pin_member(cat.db, "usb", "cd" * 16, "f" * 64)
    member = f"relay usb member {'cd' * 16}"
    assert member in dict(tombstones.holders(cat.conn, cat.device))
    assert relays.forget_member(cat.db, "usb", keys.tag, {"ab" * 16, keys.tag("ab" * 16)}) \
        is None
    assert member in dict(tombstones.holders(cat.conn, cat.device))
    assert relays.forget_member(cat.db, "usb", keys.tag, {keys.tag("cd" * 16)}) == \
        keys.tag("cd" * 16)
    assert member not in dict(tombstones.holders(cat.conn, cat.device))
    relays.member_read(cat.db, "usb", "cd" * 16, 5, 0, 5, lost=False)
    assert dict(tombstones.holders(cat.conn, cat.device))[member] == 5


def test_pending_to_a_relay_is_what_was_stamped_after_its_cursor(cat):
    relays.add_relay(cat.db, "usb", "file:///media/usb")
    (r,) = relays.list_relays(cat.db)
    before = relays.pending_to(cat.db, r).changes
    cat.create(1, "f", "file", 0o644, 0, 0)
    cat.create(1, "g", "file", 0o644, 0, 0)
    (r,) = relays.list_relays(cat.db)
    assert relays.pending_to(cat.db, r).changes == before + 2
    relays.save_relay(cat.db, "usb", cursor=cat.seq)
    (r,) = relays.list_relays(cat.db)
    assert relays.pending_to(cat.db, r).changes == 0


@pytest.mark.parametrize("url, stored", [
    ("file:///media/usb/", "file:///media/usb"),
    ("file:///a%20b", "file:///a%20b"),
    ("https://nas.example/dav/share/", "https://nas.example/dav/share"),
])
def test_relay_urls_are_stored_plain(url, stored):
    assert check_url(url) == stored


@pytest.mark.parametrize("url, words", [
    ("ftp://host/x", "want file:///PATH"), ("file://host/x", "file:///ABSOLUTE/PATH"),
    ("https://me:secret@nas/dav", "never in the URL"), ("https:///dav", "no host"),
    ("media/usb", "want file:///PATH"),
])
def test_bad_relay_urls_say_why(url, words):
    with pytest.raises(BadRelay, match=words):
        check_url(url)


def test_credentials_come_from_the_environment_before_the_file(tmp_path, monkeypatch):
    file = tmp_path / "cred"
    file.write_text("alice:pa:ss\n")
    assert credentials("nas-1", str(file)) == ("alice", "pa:ss")
    monkeypatch.setenv("SYNCD_RELAY_NAS_1_USER", "bob")
    monkeypatch.setenv("SYNCD_RELAY_NAS_1_PASSWORD", "pw")
    assert credentials("nas-1", str(file)) == ("bob", "pw")
    monkeypatch.delenv("SYNCD_RELAY_NAS_1_USER")
    monkeypatch.delenv("SYNCD_RELAY_NAS_1_PASSWORD")
    file.write_text("no colon\n")
    with pytest.raises(BadRelay, match="USER:PASSWORD"):
        credentials("nas-1", str(file))
    with pytest.raises(BadRelay, match="cannot read"):
        credentials("nas-1", str(tmp_path / "absent"))


def run(fn, *args):
    return trio.run(fn, *args)


def test_directory_needs_its_root_and_marker_and_never_makes_them(tmp_path):
    root = tmp_path / "relay"
    d = open_storage("usb", root.as_uri())
    assert isinstance(d, Directory)
    with pytest.raises(Unreachable):
        run(d.check)
    with pytest.raises(Unreachable):
        run(d.put, "b/x", b"data")
    assert not root.exists()
    root.mkdir()
    with pytest.raises(Unreachable):
        run(d.put, "b/x", b"data")
    with pytest.raises(Missing):
        run(d.get, MARKER)
    run(d.put, MARKER, b"{}")
    run(d.check)
    run(d.put, "b/t/1", b"one")
    run(d.put, "b/t/2", b"two")
    run(d.put, "b/t/1", b"ONE")
    assert run(d.get, "b/t/1") == b"ONE"
    assert run(d.list, "b") == ["b/t/1", "b/t/2"] and run(d.list, "c") == []
    with pytest.raises(Missing):
        run(d.get, "b/t/3")
    run(d.delete, "b/t/2")
    run(d.delete, "b/t/2")
    assert run(d.list, "b") == ["b/t/1"]
    # a partial upload (a temporary file a crash left) is never listed
    (root / "b" / "t" / ".tmp-3.abc").write_bytes(b"par")
    assert run(d.list, "b") == ["b/t/1"]
    with pytest.raises(ValueError):
        run(d.get, "../escape")
    shutil.move(root, tmp_path / "away")  # the disk is unplugged
    with pytest.raises(Unreachable):
        run(d.get, "b/t/1")
    with pytest.raises(Unreachable):
        run(d.list, "b")


@pytest.mark.skipif(os.getuid() != 0, reason="mounts a tmpfs")
def test_directory_full_and_denied_are_told_apart(tmp_path):
    import subprocess

    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(root)], check=True)
    try:
        d = Directory(root)
        run(d.put, MARKER, b"{}")
        with pytest.raises(Full):
            run(d.put, "c/t/big", b"x" * (1 << 20))
        assert run(d.list, "c") == []  # nothing half there
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_sealed_objects_open_only_under_their_name_and_share():
    keys = sealing.Keys([KEY])
    sealed = keys.seal("b/t/1", b"states")
    assert keys.open("b/t/1", sealed) == b"states" and b"states" not in sealed
    with pytest.raises(sealing.Rejected, match="moved from another name"):
        keys.open("b/t/2", sealed)
    with pytest.raises(sealing.Rejected, match="altered"):
        keys.open("b/t/1", sealed[:-1] + bytes([sealed[-1] ^ 1]))
    with pytest.raises(sealing.Rejected, match="truncated"):
        keys.open("b/t/1", sealed[:10])
    with pytest.raises(sealing.Rejected, match="never had"):
        sealing.Keys([OTHER]).open("b/t/1", sealed)
    # after a rotation, what the old key sealed still opens; the marker of either key is ours
    rotated = sealing.Keys([OTHER, KEY])
    assert rotated.open("b/t/1", sealed) == b"states"
    rotated.check_marker(keys.marker())
    with pytest.raises(sealing.Rejected, match="another share"):
        sealing.Keys([OTHER]).check_marker(keys.marker())
    assert keys.tag("a" * 32) != sealing.Keys([OTHER]).tag("a" * 32)
    assert "a" * 32 not in keys.tag("a" * 32)


def test_signatures_tell_devices_apart(tmp_path):
    one = identity.ensure(tmp_path / "one.pem", "ab" * 16)
    two = identity.ensure(tmp_path / "two.pem", "cd" * 16)
    signed = sealing.sign(sealing.signing_key(one), "b/t/1", b"payload")
    assert sealing.verify(one.cert, "b/t/1", signed) == b"payload"
    with pytest.raises(sealing.Rejected, match="not signed by device"):
        sealing.verify(two.cert, "b/t/1", signed)
    with pytest.raises(sealing.Rejected, match="not signed by device"):
        sealing.verify(one.cert, "b/t/2", signed)
    with pytest.raises(sealing.Rejected, match="not signed by device"):
        sealing.verify(one.cert, "b/t/1", signed[:-1] + b"P")


def test_objects_round_trip_and_refuse_forgeries(tmp_path):
    """What one member writes another reads; a batch another member signed, or put
    under a name it does not name, is refused."""
    root = tmp_path / "relay"
    root.mkdir()
    keys = sealing.Keys([KEY])
    one = identity.ensure(tmp_path / "one.pem", "ab" * 16)
    two = identity.ensure(tmp_path / "two.pem", "cd" * 16)
    a = Objects(Directory(root), keys, one.cert, sealing.signing_key(one))
    b = Objects(Directory(root), keys, two.cert, sealing.signing_key(two))

    async def main():
        await Directory(root).put(MARKER, keys.marker())
        await a.check()
        await a.publish()
        await b.publish()
        await a.put_batch(0, 5, [{"id": "x"}])
        await a.put_chunk(b"d" * 32, b"chunk bytes")
        members, unreadable = await b.members()
        assert not unreadable
        assert [c.device for c in members.values()] == ["ab" * 16]
        (tag,) = members
        ((last, name),) = await b.batches(tag, 0)
        assert last == 5 and await b.batches(tag, 5) == []
        assert (await b.read_batch(members[tag], name))["states"] == [{"id": "x"}]
        assert await b.get_chunk(b"d" * 32, [tag]) == b"chunk bytes"
        assert await b.get_chunk(b"e" * 32, [tag]) is None
        # two writes a batch into one's folder, signed with its own key
        forged = f"b/{tag}/{6:016d}"
        await Directory(root).put(forged, keys.seal(forged, sealing.sign(
            sealing.signing_key(two), forged, b"x")))
        with pytest.raises(sealing.Rejected, match="not signed by device"):
            await b.read_batch(members[tag], forged)
        # one's batch copied to another name
        moved = f"b/{tag}/{7:016d}"
        await Directory(root).put(moved, await Directory(root).get(name))
        with pytest.raises(sealing.Rejected, match="another name"):
            await b.read_batch(members[tag], moved)
        # the marker of another share makes the relay unreachable for this one
        await Directory(root).put(MARKER, sealing.Keys([OTHER]).marker())
        with pytest.raises(Unreachable, match="another share"):
            await a.check()
    trio.run(main)


def test_a_rotated_cluster_key_is_kept_for_reading_relays(tmp_path):
    from syncd.home import Home

    home = Home.init(tmp_path / "home", "a", "127.0.0.1:7700", KEY)
    home.set_cluster_key(OTHER)
    home.set_cluster_key(b"n" * 32)
    assert home.cluster_key() == b"n" * 32
    assert home.old_cluster_keys() == [OTHER, KEY]
    assert oct((tmp_path / "home" / "cluster.key.old").stat().st_mode & 0o777) == "0o600"
    sealed = sealing.Keys([KEY]).seal("m/t", b"cert")
    assert sealing.Keys([home.cluster_key(), *home.old_cluster_keys()]).open("m/t", sealed)
