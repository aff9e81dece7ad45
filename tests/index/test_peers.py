"""Peer records and what each peer has yet to receive, on real index files."""

from __future__ import annotations

import sqlite3

import pytest
from syncd.index.catalog import open_catalog
from syncd.index.peers import (
    NoSuchPeer,
    Peer,
    PeerExists,
    add_peer,
    list_peers,
    pending_for,
    remove_peer,
    save_peer,
    set_peer_addresses,
    set_peer_use,
    waiting_for,
)

from tests.replicas import Device, T, send

A, B, C = "a" * 32, "b" * 32, "c" * 32


@pytest.fixture
def dev(tmp_path) -> Device:
    d = Device(tmp_path, A, T)
    yield d
    d.db.close()


def test_a_new_peer_is_unknown_with_nothing_confirmed(dev):
    add_peer(dev.db, "beta", "http://b:7700")
    add_peer(dev.db, "alpha", "http://a:7700")
    assert list_peers(dev.db) == [
        Peer("alpha", "http://a:7700", None, "unknown", 0, None, None, ["http://a:7700"]),
        Peer("beta", "http://b:7700", None, "unknown", 0, None, None, ["http://b:7700"])]


def test_a_taken_name_is_refused_and_changes_nothing(dev):
    add_peer(dev.db, "beta", "http://b:7700")
    with pytest.raises(PeerExists):
        add_peer(dev.db, "beta", "http://other:7700")
    assert [p.url for p in list_peers(dev.db)] == ["http://b:7700"]


def test_remove_and_set_use_want_an_existing_peer(dev):
    for change in (lambda: remove_peer(dev.db, "nobody"),
                   lambda: set_peer_use(dev.db, "nobody", "auto")):
        with pytest.raises(NoSuchPeer):
            change()
    add_peer(dev.db, "beta", "http://b:7700")
    remove_peer(dev.db, "beta")
    assert list_peers(dev.db) == []


def test_out_of_use_keeps_the_cursor_and_auto_starts_over_as_unknown(dev):
    add_peer(dev.db, "beta", "http://b:7700")
    save_peer(dev.db, "beta", device=B, state="online", cursor=7, last_seen=100)
    set_peer_use(dev.db, "beta", "outofuse")
    (p,) = list_peers(dev.db)
    assert (p.state, p.cursor, p.device, p.last_seen) == ("outofuse", 7, B, 100)
    set_peer_use(dev.db, "beta", "auto")
    assert list_peers(dev.db)[0].state == "unknown"


def test_save_takes_only_what_the_daemon_learns(dev):
    add_peer(dev.db, "beta", "http://b:7700")
    save_peer(dev.db, "beta", state="offline", last_error="connection refused")
    assert list_peers(dev.db)[0].last_error == "connection refused"
    with pytest.raises(ValueError):
        save_peer(dev.db, "beta", addresses="[]")
    with pytest.raises(ValueError):
        save_peer(dev.db, "beta")
    # the address in use is one of its addresses, which only the operator sets
    set_peer_addresses(dev.db, "beta", ["http://b:7700", "http://b.vpn:7700"])
    save_peer(dev.db, "beta", url="http://b.vpn:7700")
    save_peer(dev.db, "beta", url="http://elsewhere:1", state="online")
    (beta,) = list_peers(dev.db)
    assert (beta.url, beta.state) == ("http://b.vpn:7700", "online")


def test_pending_counts_each_node_once_less_what_the_peer_sent(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = Device(tmp_path / "a", A, T), Device(tmp_path / "b", B, T)
    try:
        add_peer(a.db, "beta", "http://b:7700")
        add_peer(a.db, "gamma", "http://c:7700")
        save_peer(a.db, "beta", device=B)
        save_peer(a.db, "gamma", device=C)
        a.mkdir("/d")
        a.write("/d/f", b"hello", T)
        a.write("/d/f", b"hello, world", T + 1)  # superseded: still one node
        b.write("/g", b"from b", T)
        send(b, a)  # /g came from beta: beta holds it, gamma does not
        beta, gamma = list_peers(a.db)
        first = a.cat.conn.execute("SELECT at FROM journal WHERE seq = 1").fetchone()[0]
        assert pending_for(a.db, beta) == (2, 12, first)
        assert pending_for(a.db, gamma) == (3, 18, first)
        assert pending_for(a.db, gamma, upto=1) == (1, 0, first)  # the directory
        save_peer(a.db, "gamma", cursor=a.cat.seq)
        assert pending_for(a.db, list_peers(a.db)[1]) == (0, 0, None)
    finally:
        a.db.close()
        b.db.close()


def test_a_read_only_index_shows_peers_and_refuses_changes(dev, tmp_path):
    add_peer(dev.db, "beta", "http://b:7700")
    dev.write("/f", b"abc", T)
    with open_catalog(tmp_path / "index.db", tmp_path / "store", readonly=True) as cat:
        (beta,) = list_peers(cat.db)
        assert pending_for(cat.db, beta).changes == 1
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            add_peer(cat.db, "gamma", "http://c:7700")
    assert [p.name for p in list_peers(dev.db)] == ["beta"]


def test_pending_leaves_out_what_the_peer_made_when_it_came_through_another(tmp_path):
    """Alpha's files reach gamma through beta: gamma counts them for beta (it sent them)
    and for alpha (it made them) as held. A node whose versions alpha made but another
    merged into, or that another changed since, is still alpha's to receive."""
    devices = {}
    for d in (A, B, C):
        (tmp_path / d[:1]).mkdir()
        devices[d] = Device(tmp_path / d[:1], d, T)
    a, b, c = devices.values()
    try:
        add_peer(c.db, "alpha", "http://a:7700")
        add_peer(c.db, "beta", "http://b:7700")
        save_peer(c.db, "alpha", device=A)
        save_peer(c.db, "beta", device=B)
        a.mkdir("/d")
        a.write("/d/one", b"1" * 100, T)
        a.write("/d/two", b"2" * 200, T)
        send(a, b)
        send(b, c)
        alpha, beta = list_peers(c.db)
        assert pending_for(c.db, alpha) == (0, 0, None)
        assert pending_for(c.db, beta) == (0, 0, None)
        b.write("/d/two", b"beta's", T + 1)  # alpha's node, beta's content now
        send(b, c)
        assert pending_for(c.db, alpha)[:2] == (1, 6)
        assert pending_for(c.db, beta) == (0, 0, None)
        c.write("/d/one", b"gamma's", T + 2)  # made here: both lack it
        assert pending_for(c.db, alpha)[:2] == (2, 13)
        assert pending_for(c.db, beta)[:2] == (1, 7)
    finally:
        for d in devices.values():
            d.db.close()


def test_waiting_lists_what_pending_counts(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = Device(tmp_path / "a", A, T), Device(tmp_path / "b", B, T)
    try:
        add_peer(a.db, "beta", "http://b:7700")
        save_peer(a.db, "beta", device=B)
        b.write("/theirs", b"beta's", T)
        send(b, a)
        a.mkdir("/d")
        a.write("/d/old", b"old", T)
        save_peer(a.db, "beta", cursor=a.cat.seq)  # beta has all of that
        a.write("/d/new", b"new!", T)
        a.cat.unlink(a.ino("/d"), "old")
        a.write("/theirs", b"edited here", T + 1)  # beta's node: a change, not new to it
        (beta,) = list_peers(a.db)
        listed = waiting_for(a.db, beta)
        assert [(w.path, w.kind, w.change, w.size) for w in listed] == [
            ("d/new", "file", "create", 4), ("d/old", "file", "delete", 0),
            ("theirs", "file", "change", 11)]
        assert pending_for(a.db, beta) == (3, 15, min(w.since for w in listed))
    finally:
        a.db.close()
        b.db.close()
