"""Tombstone collection (index/tombstones.py) on real indexes: a tombstone goes only once
every peer and relay member had it, what holds it back says so, and a delete stays
decided by rule 3 once its tombstone is gone."""

from __future__ import annotations

import itertools
import shutil
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from syncd.index import relays, tombstones
from syncd.index.chunklist import Builder, digest_of
from syncd.index.history import history
from syncd.index.peers import add_peer, list_peers, remove_peer, save_peer
from syncd.index.versions import keep_versions, versions_of

from tests.index.test_convergence import step
from tests.replicas import (
    ROOT,
    Device,
    T,
    check_invariants,
    converge,
    send,
    send_some,
    three_devices,
)

NOW = 2_000_000_000  # unix seconds, after every journal row of these tests


@pytest.fixture
def devs(tmp_path):
    made = three_devices(tmp_path)
    yield made
    for d in made:
        check_invariants(d.cat)
        d.db.close()


def peer_up(src: Device, dst: Device) -> None:
    """src pushes to dst and records dst's cursor, as a peer loop does (rule 5)."""
    send(src, dst)
    save_peer(src.db, dst.id[:1], cursor=src.sent.get(dst.id, 0))


def collect(d: Device, keep: int = 0, log_before: int = NOW + 1) -> int:
    """What the serving process does: record the horizon now, then drop what it had
    passed `keep` seconds ago; how many tombstones went."""
    tombstones.observe(d.cat, NOW)
    upto = tombstones.passed(d.cat, NOW - keep)
    dropped, after = 0, 0
    while after is not None and upto:
        gone, after = tombstones.collect_step(d.cat, upto, log_before, after, limit=2)
        dropped += gone
    return dropped


def deleted_here(d: Device, path: str) -> str:
    """Delete `path` here (a file at the root); its node id."""
    node = d.cat.lookup(ROOT, path).node
    d.cat.unlink(ROOT, path)
    return node


def with_peers(a: Device, *others: Device) -> None:
    for o in others:
        add_peer(a.db, o.id[:1], f"https://{o.id[:1]}:7700")
        save_peer(a.db, o.id[:1], device=o.id)


def test_a_tombstone_goes_once_every_peer_has_it(devs):
    a, b, c = devs
    with_peers(a, b, c)
    a.write("/f", b"one", T)
    a.write("/g", b"two", T)
    converge(a, b, c)
    node = deleted_here(a, "f")
    peer_up(a, b)
    assert tombstones.kept(a.cat.conn) == 1
    assert collect(a) == 0  # c has not had it
    assert tombstones.held_by(a.cat.conn, a.id) == ["peer c"]
    peer_up(a, c)
    assert collect(a) == 1
    assert tombstones.kept(a.cat.conn) == 0 and tombstones.held_by(a.cat.conn, a.id) == []
    assert a.cat.conn.execute("SELECT 1 FROM nodes WHERE id = ?", (node,)).fetchone() is None
    assert b.cat.conn.execute("SELECT deleted FROM nodes WHERE id = ?", (node,)).fetchone() \
        == (1,)  # each machine collects its own
    converge(a, b, c)  # and nothing comes back
    assert set(a.tree()) == {"/g"}


def test_a_peer_never_reached_holds_it_and_a_removed_one_does_not(devs):
    a, b, _ = devs
    with_peers(a, b)
    add_peer(a.db, "newcomer", "https://n:7700")  # never answered: cursor 0
    a.write("/f", b"one", T)
    peer_up(a, b)
    deleted_here(a, "f")
    peer_up(a, b)
    assert collect(a) == 0
    assert tombstones.held_by(a.cat.conn, a.id) == ["peer newcomer"]
    remove_peer(a.db, "newcomer")
    assert collect(a) == 1


def test_an_outofuse_peer_holds_it(devs):
    a, b, _ = devs
    with_peers(a, b)
    a.write("/f", b"one", T)
    deleted_here(a, "f")
    save_peer(a.db, "b", state="outofuse")
    assert collect(a) == 0
    peer_up(a, b)  # its catch-up is kept: once it had it, it counts
    assert collect(a) == 1


def test_it_goes_only_tombstone_keep_days_after_every_peer_had_it(devs):
    a, b, _ = devs
    with_peers(a, b)
    a.write("/f", b"one", T)
    deleted_here(a, "f")
    peer_up(a, b)
    assert collect(a, keep=60) == 0  # had for less than a minute
    tombstones.observe(a.cat, NOW + 60)
    assert tombstones.passed(a.cat, NOW) == a.cat.seq
    # `syncd log` still shows the delete, made a moment ago, for another hour
    assert collect(a, log_before=int(time.time()) - 3600) == 0
    assert collect(a) == 1


def test_without_peers_or_relays_only_the_keep_time_holds_it(devs):
    a, _, _ = devs
    a.write("/f", b"one", T)
    deleted_here(a, "f")
    assert collect(a) == 1


def member(a: Device, relay: str, device: str, ours: int, snapshot: int, upto: int = 0,
           wrote: int = 0, lost: bool = False) -> None:
    relays.pin_member(a.db, relay, device, "f" * 64)
    relays.consumed(a.db, relay, device, upto)
    relays.member_read(a.db, relay, device, ours, wrote, snapshot, lost)


def test_relay_members_hold_it_until_they_and_their_snapshot_have_it(devs):
    a, _, _ = devs
    relays.add_relay(a.db, "usb", "file:///media/usb")
    a.write("/f", b"one", T)
    deleted_here(a, "f")
    seq = a.cat.seq
    assert collect(a) == 0  # not on the relay yet
    relays.save_relay(a.db, "usb", cursor=seq)
    m = "d" * 32
    member(a, "usb", m, ours=seq - 1, snapshot=seq)
    assert collect(a) == 0
    assert tombstones.held_by(a.cat.conn, a.id) == [f"relay usb member {m}"]
    member(a, "usb", m, ours=seq, snapshot=0)  # its snapshot (a newcomer's start) has not
    assert collect(a) == 0
    member(a, "usb", m, ours=seq, snapshot=seq, upto=5, wrote=9)  # its batches unread here
    assert collect(a) == 0
    member(a, "usb", m, ours=seq, snapshot=seq, upto=9, wrote=9)
    assert tombstones.held_by(a.cat.conn, a.id) == []
    assert collect(a) == 1


def test_a_lost_member_does_not_hold_it_nor_one_of_a_removed_relay(devs):
    a, _, _ = devs
    relays.add_relay(a.db, "usb", "file:///media/usb")
    relays.add_relay(a.db, "old", "file:///media/old")
    a.write("/f", b"one", T)
    deleted_here(a, "f")
    relays.save_relay(a.db, "usb", cursor=a.cat.seq)
    relays.save_relay(a.db, "old", cursor=a.cat.seq)
    member(a, "usb", "d" * 32, ours=0, snapshot=0, lost=True)
    member(a, "old", "e" * 32, ours=0, snapshot=0)
    assert collect(a) == 0
    relays.remove_relay(a.db, "old")
    assert collect(a) == 1


def test_what_other_states_name_is_kept(devs):
    """A directory that stands for a merged one, a tombstone a conflict copy or a waiting
    state names, and one that came from a relay member stay, whatever the cursors."""
    a, b, _ = devs
    a.mkdir("/d")
    b.mkdir("/d")  # two directories on one name merge: the lower id's stands for the other
    a.write("/x", b"base", T)
    converge(a, b)
    a.write("/x", b"from a", T + 1)
    b.write("/x", b"from b", T + 2)
    converge(a, b)  # a's edit is a conflict copy of x
    copy_of = a.cat.lookup(ROOT, "x").node
    a.cat.unlink(ROOT, "x")  # its original deleted: the copy still names it
    b.write("/y", b"y", T)
    converge(a, b)
    b.cat.unlink(ROOT, "y")
    send(b, a)
    relays.add_relay(a.db, "usb", "file:///media/usb")
    member(a, "usb", b.id, ours=1 << 40, snapshot=1 << 40)  # b is a member there
    relays.save_relay(a.db, "usb", cursor=1 << 40)
    assert collect(a) == 0
    kept = {r[0]: r[1:] for r in a.cat.conn.execute(
        "SELECT id, kind, conflict_of, origin FROM nodes WHERE deleted = 1")}
    assert len(kept) == 3 and kept[copy_of][0] == "file"
    assert any(k == "dir" and of is not None for k, of, _ in kept.values())
    assert any(origin == b.id for _, _, origin in kept.values())


def test_a_stale_concurrent_edit_still_wins_after_the_drop(devs):
    """Rule 3: an edit made without seeing the delete wins, wherever the tombstone is gone.
    c edits f while a deletes it; b has the delete; a drops the tombstone once b and c had
    it. c's edit, merged with the delete on c, comes back to a as a node a no longer knows,
    alive, and to b, where it beats the tombstone: the same tree everywhere, with c's bytes,
    as without the collection."""
    a, b, c = devs
    with_peers(a, b, c)
    a.write("/f", b"one", T)
    a.write("/g", b"gone too", T)
    converge(a, b, c)
    c.write("/f", b"c's edit", T + 5)  # offline: a and b do not see it
    deleted_here(a, "f")
    deleted_here(a, "g")  # c has only the version this delete saw
    peer_up(a, b)
    assert collect(a) == 0  # c holds it
    peer_up(a, c)  # c applies both deletes: f's loses to its edit, g's wins
    assert collect(a) == 2
    converge(a, b, c)
    for d in (a, b, c):
        assert set(d.tree()) == {"/f"} and d.data("/f") == b"c's edit"


def test_a_delete_learnt_through_a_third_peer_stays_deleted(devs):
    """a and c are peers of b only (a mirror between them). a deletes; b passes it on; a
    drops it once b had it. c, which had the version a deleted, takes the delete from b and
    sends nothing back: the file stays gone everywhere."""
    a, b, c = devs
    with_peers(a, b)
    a.write("/f", b"one", T)
    send(a, b)
    send(b, c)
    send(c, b)
    send(b, a)
    deleted_here(a, "f")
    peer_up(a, b)
    assert collect(a) == 1
    for _ in range(3):
        send(a, b), send(b, a), send(b, c), send(c, b)
    for d in (a, b, c):
        assert d.tree() == {}


def test_history_and_old_versions_of_a_collected_delete_still_read(tmp_path):
    a = Device(tmp_path, "a" * 32, T)
    keep_versions(a.cat)
    a.write("/f", b"kept as an old version", T)
    deleted_here(a, "f")
    before = [e.event for e in history(a.db, 0, list_peers(a.db))]
    assert collect(a) == 1
    assert [v.size for v in versions_of(a.cat, "f")] == [22]
    events = history(a.db, 0, list_peers(a.db))
    assert [e.event for e in events] == before
    check_invariants(a.cat)
    a.db.close()


def collect_now(d: Device, devices: list[Device]) -> None:
    """Drop the tombstones every other device had (the cursors of the replicas' pushes),
    at once: no keep time, which only adds safety."""
    upto = min(d.sent.get(o.id, 0) for o in devices if o is not d)
    after = 0
    while after is not None and upto:
        _, after = tombstones.collect_step(d.cat, upto, 1 << 62, after)


def same_step(one: Device, twin: Device, draw, n: int, log: list[str]) -> None:
    """The same random operation on two devices: the second replays what the first drew."""
    drawn: list = []

    def record(strategy, label=None):
        drawn.append(draw(strategy))
        return drawn[-1]

    step(one, record, n, log)
    again = iter(drawn)
    step(twin, lambda strategy, label=None: next(again), n, [])


def twin_histories(draw, kept: list[Device], collected: list[Device]) -> None:
    """The same random history on two sets of three devices, one of which collects its
    tombstones now and then; then each set exchanges until nothing moves."""
    log: list[str] = []
    for n in range(draw(st.integers(1, 30), label="steps")):
        what = draw(st.sampled_from(["exchange", "change", "collect"]), label="what")
        if what == "exchange":
            i, j = draw(st.permutations(range(3)), label="pair")[:2]
            batch, batches = draw(st.integers(1, 4)), draw(st.integers(1, 3))
            for devs in (kept, collected):
                send_some(devs[i], devs[j], batch, batches)
            log.append(f"send {i} -> {j}")
        elif what == "change":
            i = draw(st.integers(0, 2), label="device")
            same_step(kept[i], collected[i], draw, n, log)
        else:
            i = draw(st.integers(0, 2), label="device")
            collect_now(collected[i], collected)
            log.append(f"collect on {i}")
    for devs in (kept, collected):
        for _ in range(30):
            if not sum(send_some(x, y, 100, 1000) for x, y in itertools.permutations(devs, 2)):
                break
    trees = [d.shared_tree() for d in (*kept, *collected)]
    assert all(t == trees[0] for t in trees), "\n".join(
        ["the collecting devices' trees differ:", *log, "kept:", *map(str, trees[0].items()),
         "collected:", *map(str, trees[3].items())])
    for d in (*kept, *collected):
        check_invariants(d.cat)


# 100 histories on three real indexes: ~290-320 s on a loaded 2-core machine, past the
# suite's 300 s default.
@pytest.mark.timeout(900)
@settings(max_examples=100, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_random_histories_end_the_same_with_tombstones_collected(tmp_path_factory, data):
    """Rule 3 decides the same with a tombstone gone once every peer had it: random
    histories (tests/index/test_convergence.py's operations and partial exchanges) end in
    the same tree whether or not the devices collect their tombstones along the way."""
    root = tmp_path_factory.mktemp("twins")
    for half in ("kept", "collected"):
        (root / half).mkdir()
    kept, collected = three_devices(root / "kept"), three_devices(root / "collected")
    try:
        twin_histories(data.draw, kept, collected)
    finally:
        for d in (*kept, *collected):
            d.db.close()
        shutil.rmtree(root)  # 100 examples of six stores: not kept till the session ends


def test_a_file_still_open_for_writing_here_keeps_its_tombstone(devs):
    """A peer deletes a file a writer here has open: the writer's close makes a version
    concurrent with the delete (rule 6, Merger.commit_detached), which needs the
    tombstone however long the file stays open."""
    a, b, _ = devs
    with_peers(a, b)
    a.write("/f", b"one", T)
    send(a, b)
    deleted_here(b, "f")
    send(b, a)  # a's inode of f lives on while its handles are open
    (ino, (node, vv)), = a.cat.detached.items()
    peer_up(a, b)
    assert collect(a) == 0
    written = b"still writing"
    a.cat.store_new_chunks({digest_of(written): written})
    a.merger.commit_detached(node, vv, Builder().add(digest_of(written), len(written)).done(),
                             len(written), T + 10, ino)
    assert a.data("/f") == written  # the edit beat the delete, as rule 3 wants


def test_a_peer_added_later_holds_what_it_has_not_had(devs):
    """The horizon recorded before a peer was added no longer counts: that peer is at 0."""
    a, b, c = devs
    with_peers(a, b)
    a.write("/f", b"one", T)
    deleted_here(a, "f")
    peer_up(a, b)
    tombstones.observe(a.cat, NOW - 60)  # everyone had it a minute ago ...
    with_peers(a, c)  # ... then c was added
    assert collect(a, keep=30) == 0
    assert tombstones.held_by(a.cat.conn, a.id) == ["peer c"]
    peer_up(a, c)
    assert collect(a) == 1
