"""A transaction that fails half way leaves the catalog's memory as it leaves the index:
the directory nodes by inode and the ignore rules' decisions it made from rows that the
rollback took back are forgotten (index/catalog.py, Catalog.transaction). The failure is
real: SQLite aborts a statement of the transaction (a temporary trigger), as a full disk
or a constraint would."""

from __future__ import annotations

import contextlib

import pytest
from syncd.index.schema import ROOT_ID
from syncd.index.states import BATCH_DATA, changes_since

from tests.replicas import ROOT, T, apply, check_invariants


@contextlib.contextmanager
def failing(dev, table: str, when: str):
    """Every insert into `table` of a row where `when` holds aborts its transaction."""
    dev.cat.conn.execute(f"CREATE TEMP TRIGGER fail BEFORE INSERT ON {table} WHEN {when} "
                         "BEGIN SELECT RAISE(ABORT, 'forced failure'); END")
    try:
        yield
    finally:
        dev.cat.conn.execute("DROP TRIGGER temp.fail")


def test_a_directory_shared_in_a_rolled_back_rename_keeps_its_node(devs):
    """A rename out of an ignored place shares the directory under a new node id; when
    the rename fails after that, the directory is its old node again, and what is below
    it is found by that."""
    a, _, _ = devs
    a.write(".syncdignore", b"build/\n", T)
    a.mkdir("build")
    a.write("build/out.bin", b"out", T)  # looked up through build's node: remembered
    build = a.ino("build")
    (node,) = a.cat.nodes_of(build)
    with failing(a, "journal", "NEW.op = 'create'"), pytest.raises(Exception, match="forced"):
        a.cat.rename(ROOT, "build", ROOT, "dist")  # shared: a 'create' journalled
    assert a.cat.nodes_of(build) == [node]
    assert a.cat.dir_node(build) == node
    assert a.data("build/out.bin") == b"out"
    a.write("build/more.bin", b"more", T)  # a new entry under the node that exists
    assert a.cat.children(build, 0)[-1].name == "more.bin"
    check_invariants(a.cat)


def test_rules_a_rolled_back_push_brought_do_not_stay(devs):
    """A push whose first state is a .syncdignore and whose next one fails: the rules
    are not there, so nothing made here afterwards is ignored by them (it would never
    reach the peers)."""
    a, b, _ = devs
    a.write(".syncdignore", b"*.tmp\n", T)
    a.write("later.txt", b"decided by the new rules", T)
    states, _ = changes_since(a.cat.conn, 0, 100, b.id, BATCH_DATA)  # as a push: with data
    assert [s["name"] for s in states] == [".syncdignore", "later.txt"]
    assert not b.cat.ignores(ROOT_ID, "x.tmp", "file")  # decided before the push
    with failing(b, "nodes", "NEW.name = 'later.txt'"), pytest.raises(Exception, match="forced"):
        apply(a, b, states)
    assert "/.syncdignore" not in b.tree()
    assert not b.cat.ignores(ROOT_ID, "x.tmp", "file")
    b.write("x.tmp", b"shared", T)
    assert not b.cat.is_local_only(b.cat.nodes_of(b.ino("x.tmp"))[0])
    check_invariants(b.cat)
