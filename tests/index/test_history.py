"""Pruning the history (index/history.py) on a real index: old rows go, and what sync,
`syncd status` and `syncd pending` read stays."""

from __future__ import annotations

from syncd.index.history import history, prune_step
from syncd.index.peers import add_peer, confirm_push, list_peers, pending_for, waiting_for

from tests.replicas import Device, T

A = "a" * 32


def test_pruning_keeps_what_sync_and_pending_read(tmp_path):
    d = Device(tmp_path, A, T)
    try:
        add_peer(d.db, "beta", "http://b:7700")
        d.mkdir("/d")
        for i in range(5):
            d.write("/d/f", b"version %d" % i, T + i)  # superseded rows: prunable
        d.write("/g", b"g", T)
        d.cat.unlink(d.ino("/"), "g")
        confirm_push(d.db, "beta", "b" * 32, 0, 3, 3, None)
        (beta,) = list_peers(d.db)
        rows = d.db.conn.execute("SELECT seq, node, op FROM journal").fetchall()
        d.db.conn.execute("UPDATE journal SET at = 1000")  # all of it old
        d.db.conn.execute("UPDATE sent SET at = 1000")
        d.db.conn.commit()
        before = (pending_for(d.db, beta), waiting_for(d.db, beta), d.cat.seq, d.cat.clock)
        deleted, after, total = 0, 0, 0
        while after is not None:
            deleted, after = prune_step(d.db, 2000, after, batch=3)
            total += deleted
        current = {s for (s,) in d.db.conn.execute("SELECT seq FROM nodes WHERE seq > 0")}
        made = {s for s, _, op in rows if op == "create"}
        kept = {s for (s,) in d.db.conn.execute("SELECT seq FROM journal")}
        assert kept == current | made | {max(s for s, _, _ in rows)}
        assert total == len(rows) - len(kept) > 0
        assert d.db.conn.execute("SELECT count(*) FROM sent").fetchone() == (0,)
        d.cat._load_counters()
        assert (pending_for(d.db, beta), waiting_for(d.db, beta), d.cat.seq,
                d.cat.clock) == before
        # nothing younger than the cutoff goes
        d.write("/h", b"h", T)
        assert prune_step(d.db, 1500) == (0, None)
    finally:
        d.db.close()


def test_history_of_the_journal_tail_reads_only_rows_after_it(tmp_path):
    """The status page's recent history (after=): the events of the last rows alone, a
    push's included, whatever came before."""
    d = Device(tmp_path, A, T)
    try:
        add_peer(d.db, "beta", "http://b:7700")
        for i in range(10):
            d.write(f"/f{i}", b"%d" % i, T + i)
        seq = d.cat.seq
        confirm_push(d.db, "beta", "b" * 32, 0, seq, seq, None)
        peers = list_peers(d.db)
        everything = history(d.db, 0, peers)
        sent = [e.path for e in everything if e.event == "sent"]
        assert sorted(sent) == [f"f{i}" for i in range(10)]
        tail = history(d.db, 0, peers, after=seq - 2)
        assert {e.path for e in tail} == {"f9"}  # its create and content rows
        assert [e.event for e in tail] == ["sent"]
        assert history(d.db, 0, peers, after=seq) == []
    finally:
        d.db.close()
