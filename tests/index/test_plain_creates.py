"""A fresh peer receiving a share's states (index/plain_creates.py): the plain creates among
them are written in bulk, and the index ends exactly as the one-at-a-time path leaves it,
row for row, with the states that path alone decides (a name taken here, a rules file and
what it ignores, extended attributes, a tombstone, a child before its parent) mixed in."""

from __future__ import annotations

import random

from syncd.index.merge import Merger
from syncd.index.schema import ROOT_INO
from syncd.index.states import BATCH_DATA, changes_since

from tests.replicas import Device, T, check_invariants

ALPHA, BETA = "aa" * 16, "bb" * 16
BIG = random.Random(1).randbytes(100_000)  # a chunk file, which the states do not carry

INSERT_ONE = "INSERT INTO nodes (id, kind, ino, parent, name, seq, conflict_of)"
# Every table a peer's state writes, each row as compared; times of the moment of writing
# are left out (ctime, atime, a directory's mtime, a journal row's time).
TABLES = {
    "nodes": "SELECT * FROM nodes ORDER BY entry",
    "inodes": "SELECT ino, kind, mode, uid, gid, size, CASE kind WHEN 'dir' THEN 0"
              " ELSE mtime_ns END, hash, chunks, target, local, rdev FROM inodes ORDER BY ino",
    "journal": "SELECT seq, clock, node, op, device, detail FROM journal ORDER BY seq",
    "chunks": "SELECT * FROM chunks ORDER BY hash",
    "inline": "SELECT * FROM inline ORDER BY hash",
    "totals": "SELECT * FROM totals",
    "limbo": "SELECT * FROM limbo ORDER BY id",
    "held": "SELECT * FROM held ORDER BY id",
    "orphans": "SELECT * FROM orphans ORDER BY ino",
    "xattrs": "SELECT * FROM xattrs ORDER BY ino, name",
}


def share(alpha: Device) -> None:
    """Directories three deep, 600 small files (inline), bigger ones (a chunk file the
    receiver lacks), equal contents, an empty file, symlinks, modes, a renamed file, a
    deleted one, extended attributes and a rules file with a file it ignores."""
    cat = alpha.cat
    for d in range(6):
        alpha.mkdir(f"d{d}")
        alpha.mkdir(f"d{d}/sub")
        alpha.mkdir(f"d{d}/sub/deeper")
        for i in range(100):
            where = ("", "/sub", "/sub/deeper")[i % 3]
            alpha.write(f"d{d}{where}/f{i:03d}", b"small %d\n" % (i % 40), T + i)
    alpha.write("d0/big", BIG, T)
    alpha.write("d1/empty", b"", T)
    cat.create(ROOT_INO, "link", "symlink", 0o777, 1000, 1000, b"d0/f000")
    cat.set_attributes(alpha.ino("d2/f012"), mode=0o600)
    cat.rename(alpha.ino("d3"), "f003", alpha.ino("d4"), "moved")
    cat.unlink(alpha.ino("d5"), "f009")
    cat.set_xattr(alpha.ino("d1/f006"), "user.tag", b"blue")
    alpha.write("d2/.syncdignore", b"*.tmp\n", T)
    alpha.write("d2/x.tmp", b"ignored, here too: never sent\n", T)
    alpha.write("clash", b"alpha's\n", T + 5)


def receive(tmp_path, name: str, batches: list[list[dict]], bulk: bool, fetched: bytes):
    """A fresh beta, with a file of its own on a name alpha uses, applying the batches:
    its index's rows, what the applying reported, how many nodes the one-at-a-time path
    inserted (Merger._insert's statement) and its tree. `fetched`: the content it lacks,
    put in its store once the rows are read (the invariants' check reads every chunk)."""
    beta = Device(tmp_path / name, BETA, T)
    beta.write("clash", b"beta's\n", T)
    merger = Merger(beta.cat, bulk=bulk)
    one_at_a_time = set()  # the statements as run, values and all (its triggers repeat it)
    beta.cat.conn.set_trace_callback(
        lambda sql: one_at_a_time.add(sql) if sql.startswith(INSERT_ONE) else None)
    reported = []
    for batch in batches:
        e = merger.apply([dict(s) for s in batch], ALPHA)
        reported.append((e.entries, e.inodes, e.missing, e.orphans, e.unheld))
    beta.cat.conn.set_trace_callback(None)
    rows = {t: beta.cat.conn.execute(q).fetchall() for t, q in TABLES.items()}
    beta.cat.store.put(fetched)
    check_invariants(beta.cat)
    tree = beta.tree()
    beta.db.close()
    return rows, reported, len(one_at_a_time), tree


def test_bulk_creates_leave_the_rows_one_at_a_time_leaves(tmp_path):
    alpha = Device(tmp_path / "alpha", ALPHA, T)
    share(alpha)
    states, _ = changes_since(alpha.cat.conn, 0, 10_000, None, BATCH_DATA)
    assert len(states) > 600 and any(s["content"].get("data") for s in states)
    batches = [states[i:i + 250] for i in range(0, len(states), 250)]
    batches[1].reverse()  # children before their parents: they wait for them
    bulk = receive(tmp_path, "bulk", batches, bulk=True, fetched=BIG)
    each = receive(tmp_path, "each", batches, bulk=False, fetched=BIG)
    for table in TABLES:
        assert bulk[0][table] == each[0][table], table
    assert bulk[1] == each[1]  # what the mount and the fetcher are told
    assert bulk[3] == each[3]
    # the plain creates went the bulk path, the others one at a time
    assert each[2] == len(states) - 1  # all but the tombstone
    assert bulk[2] == 3  # the rules file, the file with extended attributes, the clash
    # and it is the share: alpha's tree, beta's clashing file renamed, the big file's
    # chunk missing
    tree = bulk[3]
    assert {p: v for p, v in tree.items() if "clash" not in p} == \
        {p: v for p, v in alpha.tree().items() if p != "/d2/x.tmp" and "clash" not in p}
    assert len([p for p in tree if "clash" in p]) == 2
    missing = set().union(*(r[2] for r in bulk[1]))
    assert len(missing) == 1
    alpha.db.close()
