"""Bugs the convergence soak found, each shrunk to its smallest reproduction.

Each stays `xfail(strict=True)` until it is fixed: then it passes, strict turns that into
a failure, and the marker comes off so the test guards against a relapse.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading

from syncd.index.chunklist import ChunkList, digest_of
from syncd.index.names import conflict_name
from syncd.index.states import changes_since
from syncd.index.unheld import drop_unheld, unheld_copies, unheld_file

from tests.conftest import needs_fuse
from tests.helpers import Mount, alive, force_cleanup, syncd, wait_for
from tests.peers.conftest import Peer, settled
from tests.replicas import ROOT, T, converge, send, send_some
from tests.soak.proxy import Proxy


def assert_every_file_held(*devices) -> None:
    """Each file's content is whole on at least one of `devices`."""
    for d in devices:
        for path, (kind, _, _) in d.tree().items():
            if kind == "file":
                chunks = d.cat.chunks(d.ino(path)).digests()
                assert any(all(x.cat.has_chunk(h) for h in chunks) for x in devices), \
                    f"{path} (on {d.id[:4]}) is held by nobody"


def test_edit_revives_a_deleted_file_whose_name_was_taken(devs):
    """Soak bug 1 (IntegrityError in Replica._write, now Merger._write, the peer answering
    500 for ever); fixed in 851a758."""
    a, b, _ = devs
    a.write("/f", b"v1", T)
    converge(a, b)
    a.cat.unlink(ROOT, "f")  # apart: alpha deletes f and makes a new f ...
    a.write("/f", b"new file", T + 2)
    b.write("/f", b"beta's edit", T + 1)  # ... while beta edits the old one
    send(b, a)  # the edit beats the delete (rule 3): the old node comes back beside the new
    converge(a, b)
    names = sorted(a.tree())
    assert names[0] == "/f" and len(names) == 2 and "sync-conflict" in names[1]


def test_a_merged_directory_is_sent_with_a_parent(devs):
    """Soak bug 3: a directory merged into another of the same name was stamped with
    parent NULL; peers refused its state (422) and the sender's link was stuck on it."""
    a, b, _ = devs
    a.mkdir("/data")
    b.mkdir("/data")  # apart: the same new name on both
    converge(a, b)
    for d in (a, b):
        states, _ = changes_since(d.cat.conn, 0, 1000)
        orphans = [s for s in states if s["parent"] is None and s["id"] != "root"]
        assert not orphans, f"{d.id[:4]} would send states the API refuses: {orphans}"


@needs_fuse
def test_a_mount_killed_with_sigkill_mounts_again(home, tmp_path):
    """Soak bug 2: after kill -9, 'syncd mount' said the mount point was busy instead of
    clearing the dead mount: stat() of it answered from the kernel's attribute cache."""
    m = Mount(home, tmp_path / "mnt")
    try:
        m.start()
        os.stat(m.path)  # what any user of the mount does; the kernel caches the answer
        pid = m.pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid), 10, "the mount process to die")
        m.start()
        m.stop()
    finally:
        force_cleanup(home, m.path)


def lazy_send(src, dst) -> set[str]:
    """A peer loop's push without any fetch: node states only, as a peer that has not
    opened the files holds them (content comes on open). Returns the nodes applying named
    for the daemon's check of files nobody holds (Effects.unheld)."""
    unheld: set[str] = set()
    while True:
        since = src.sent.get(dst.id, 0)
        states, last = changes_since(src.cat.conn, since, 100, dst.id)
        if last == since:
            return unheld
        unheld |= dst.merger.apply(states, src.id).unheld
        src.sent[dst.id] = last


def overwrite(d, path: str, data: bytes, mtime_ns: int) -> None:
    """A write whose superseded chunks are collected, as the mount does after a commit."""
    ino = d.ino(path)
    digest = digest_of(data)
    d.cat.store_new_chunks({digest: data})
    d.cat.retire(d.cat.commit_content(ino, ChunkList([digest]), len(data), mtime_ns, None,
                                      True))


def test_every_conflict_copy_can_be_read_somewhere(devs):
    """Soak bug 4: gamma made a conflict copy of alpha's L from its metadata alone, and
    alpha had already replaced L (its chunks collected): a copy nobody could ever read. The
    daemon now drops a copy whose content no peer holds, its maker included (the mounted
    test below); here one peer drops it as the daemon would."""
    a, b, c = devs
    a.write("/f", b"base", T)
    converge(a, b, c)
    overwrite(a, "/f", b"L: alpha's first edit", T + 1)
    lazy_send(a, c)  # gamma learns of L, does not open it
    overwrite(a, "/f", b"alpha's second edit", T + 3)  # alpha's L chunk is collected
    overwrite(b, "/f", b"W: beta's edit, concurrent with L", T + 2)
    flagged = lazy_send(b, c)  # gamma: L against W, W is later: L becomes a conflict copy
    assert flagged == set(unheld_copies(c.cat)) != set()  # named for the check
    for x, y in [(a, b), (b, a), (a, c), (c, a), (b, c), (c, b)] * 2:
        lazy_send(x, y)
    dropped = []
    for copy in unheld_copies(c.cat):  # what the daemon does: ask every peer
        _, chunk = unheld_file(c.cat, copy)
        if not any(d.cat.has_chunk(chunk) for d in (a, b)):
            assert drop_unheld(c.cat, copy) is not None
            dropped.append(copy)
    assert len(dropped) == 1  # L's copy; W's is held by beta
    for x, y in [(c, a), (c, b), (a, b), (b, a)]:
        lazy_send(x, y)
    assert_every_file_held(a, b, c)
    assert a.tree() == b.tree() == c.tree()
    assert len(a.tree()) == 2  # f (alpha's second edit) and W's conflict copy


@needs_fuse
def test_a_conflict_copy_nobody_holds_is_dropped(cluster):
    """Soak bug 4 through real daemons: gamma makes a copy of L, which alpha replaced
    before anyone fetched it; once gamma learns of the replacement it asks every peer,
    finds no holder, and drops the copy everywhere. Every file left is readable."""
    a, b, c = cluster(3)
    big = 300_000  # above prefetch_below: fetched on open only
    (a / "f").write_bytes(b"0" * big)
    wait_for(lambda: all(os.path.exists(p / "f") and os.path.getsize(p / "f") == big
                         for p in (b, c)), 20, "f everywhere")  # not the empty create
    a.set_peer("beta", "outofuse")  # beta must not learn of L before it edits f
    c.set_peer("beta", "outofuse")
    (a / "f").write_bytes(b"L" * (big + 1))
    wait_for(lambda: os.path.getsize(c / "f") == big + 1, 20, "L's metadata on gamma")
    a.set_peer("gamma", "outofuse")  # gamma must not learn of alpha's next edit yet
    syncd(a.home, "config", "set", "versions_max", "0")  # kept as an old version otherwise
    (a / "f").write_bytes(b"2" * (big + 2))  # replaces L: its chunk is retired
    # Kept for peers a while (bug 16), not for peers out of use once that is over.
    wait_for(lambda: not os.listdir(a.home / "store" / "retired"), 20,
             "alpha's replaced chunk of L to expire")
    (b / "f").write_bytes(b"W" * (big + 3))  # concurrent with both, the latest
    wait_for(lambda: len(os.listdir(c.path)) == 2, 20, "the copy of L on gamma")
    for p, q in ((c, "beta"), (a, "beta"), (a, "gamma")):
        p.set_peer(q, "auto")
    wait_for(lambda: settled(a, b, c) and all(
        sorted(os.listdir(p.path)) == sorted(os.listdir(a.path)) for p in (b, c)) and
        len(os.listdir(a.path)) == 2, 60, "the copy of L dropped everywhere")
    for p in (a, b, c):
        assert (p / "f").read_bytes() == b"W" * (big + 3)
        (copy,) = [n for n in os.listdir(p.path) if n != "f"]
        assert (p / copy).read_bytes() == b"2" * (big + 2)


def test_two_new_files_on_one_name_end_the_same_everywhere(devs):
    """Soak bug 5: which node keeps a contested name was decided from the content each
    peer had when the clash reached it, and the loser's rename made no placement version,
    so peers kept different files on one name for ever. Now the rename is a version."""
    a, b, _ = devs
    a.write("/n", b"alpha's n", T)
    b.write("/n", b"beta's n", T + 1)  # apart: the same new name on both
    send(a, b)  # beta: alpha's n is older, it becomes the conflict copy
    a.write("/n", b"alpha's n, edited", T + 2)  # alpha edits its n before hearing of beta's
    converge(a, b)  # alpha: beta's n is older than alpha's edit: beta's is the copy


def test_a_directory_merge_ends_the_same_everywhere(devs):
    """Soak bug 5 (directories): a merge of two directories on one name (the alias and the
    children it adopts) made no versions; a peer that never saw the clash kept both."""
    a, b, c = devs
    c.mkdir("/d0")
    c.mkdir("/d1")
    c.mkdir("/d0/s")  # S1, gamma's
    converge(a, b, c)
    b.cat.rename(b.ino("/d0"), "s", b.ino("/d1"), "s")  # apart: beta moves S1 to d1 ...
    a.mkdir("/d1/s")  # ... while alpha makes another d1/s, S2, with a file in it
    a.write("/d1/s/f", b"alpha's f", T)
    send(a, b)  # beta: S1 and S2 clash on d1/s; S2 merges into S1, which takes f in
    b.cat.rename(b.ino("/d1"), "s", b.ino("/d0"), "s")  # beta moves S1, and f, back
    converge(a, b, c)


def test_a_conflict_copy_has_one_mode_everywhere(devs):
    """Soak bug 6: a conflict copy took the mode the loser had on the peer that made it,
    with no mode version; now it carries the loser's mode version and merges."""
    a, b, c = devs
    a.write("/f", b"base", T)
    converge(a, b, c)
    c.write("/f", b"gamma's edit", T + 1)  # apart: gamma and alpha edit f
    a.write("/f", b"alpha's edit", T + 2)
    send(c, b)
    b.cat.set_attributes(b.ino("/f"), mode=0o600)  # beta chmods f, gamma's version
    send(a, b)  # beta: gamma's edit loses, its copy is 0600 here ...
    send(c, a)  # ... and 0644 on alpha, which never saw the chmod before the clash
    converge(a, b, c)


@needs_fuse
def test_opening_a_file_replaced_on_its_holder_is_not_an_io_error(cluster):
    """Soak bug 7: open() failed with EIO while every peer was up, when the version known
    here had been replaced on its holder (its chunks collected) before the newer version
    arrived. Now the opener asks for the node's current state and opens that."""
    a, b = cluster(2)
    v1, v2 = b"1" * 300_000, b"2" * 300_000  # above prefetch_below: fetched on open
    (a / "f").write_bytes(v1)
    wait_for(lambda: os.path.exists(b / "f") and os.path.getsize(b / "f") == len(v1), 20,
             "f on beta")  # metadata only, and not the empty create
    a.set_peer("beta", "outofuse")  # alpha's next change is late to reach beta
    syncd(a.home, "config", "set", "versions_max", "0")  # kept as an old version otherwise
    (a / "f").write_bytes(v2)  # alpha retires version 1's chunk
    try:
        # Kept a while for peers (bug 16), and not for one out of use once that is over.
        wait_for(lambda: not os.listdir(a.home / "store" / "retired"), 20,
                 "alpha's replaced chunk to expire")
        data = (b / "f").read_bytes()  # beta asks alpha, which is up and answers
    finally:
        a.set_peer("beta", "auto")
    assert data == v2  # version 1 is held by nobody


@needs_fuse
def test_a_file_its_holder_just_deleted_and_a_peer_moved_can_be_read(cluster):
    """Soak bug 16: beta moved a file that alpha, its only holder, had just deleted; the
    move wins (rule 3, delete vs change), but alpha had removed the content at the
    delete, so beta's open failed with EIO or ESTALE, and the file was then dropped as
    held by nobody. Likewise any open of a version its holder had just replaced. Now a
    holder keeps replaced chunks until every peer has confirmed what replaced them (or
    ten minutes): beta reads the version it knows, and the file lives on everywhere."""
    a, b = cluster(2, mounted=False)
    to_beta = Proxy(b.port, "alpha->beta")  # alpha's pushes go through it
    try:
        syncd(a.home, "peer", "remove", "beta")
        syncd(a.home, "peer", "add", "beta", to_beta.url)
        a.start()
        b.start()
        v1 = b"1" * 300_000  # above prefetch_below: fetched on open only
        (a / "f").write_bytes(v1)
        wait_for(lambda: os.path.exists(b / "f") and os.path.getsize(b / "f") == len(v1),
                 20, "f's content listed on beta")  # metadata only; not the empty create
        to_beta.set_mode("reset")  # alpha's delete does not reach beta
        syncd(a.home, "config", "set", "versions_max", "0")  # else kept as an old version
        os.unlink(a / "f")
        wait_for(lambda: a.status()["replaced"] == {"chunks": 1, "bytes": len(v1)}, 10,
                 "f's chunk kept on alpha for beta")  # once the kernel forgot the inode
        os.rename(b / "f", b / "g")  # reaches alpha: the move beats the delete
        assert (b / "g").read_bytes() == v1
        to_beta.set_mode("pass")
        wait_for(lambda: settled(a, b), 30, "nothing pending")
        assert (a / "g").read_bytes() == v1 == (b / "g").read_bytes()
        assert not os.path.exists(a / "f") and not os.path.exists(b / "f")
    finally:
        to_beta.close()


def rewrite(path, tag: bytes, observed: set, versions: list, lock) -> None:
    """Replace f through the descriptor that read it: what it read is superseded, what it
    wrote is a version closed here."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return
    try:
        old = os.pread(fd, 1 << 20, 0)
        new = tag + b" after " + hashlib.sha1(old).hexdigest().encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, new, 0)
    except OSError:
        return
    finally:
        os.close(fd)
    with lock:
        observed.add(old)
        versions.append(new)


@needs_fuse
def test_a_version_closed_with_success_is_never_lost(cluster):
    """Soak bug 8: a file opened for writing just as a peer's change took its inode from
    its node (LOOKUP answered before the change, OPEN after it) was written and closed
    with success, and its version belonged to no node: silently lost. A race: before the
    fix this lost versions in most runs."""
    a, b = cluster(2)
    (a / "f").write_bytes(b"start")
    wait_for(lambda: os.path.exists(b / "f"), 20, "f on beta")
    observed, versions, lock = set(), [], threading.Lock()

    def loop(p, name: bytes) -> None:
        for i in range(300):
            rewrite(p / "f", b"%s %d" % (name, i), observed, versions, lock)

    threads = [threading.Thread(target=loop, args=x) for x in ((a, b"alpha"), (b, b"beta"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: settled(a, b), 60, "nothing pending")
    final = set()
    for name in os.listdir(a.path):
        with contextlib.suppress(OSError):  # bug 4: a copy of a version nobody holds
            final.add((a / name).read_bytes())
    lost = [v for v in versions if v not in observed and v not in final]
    assert not lost, f"{len(lost)} of {len(versions)} versions closed with success are gone"


def test_a_file_renamed_over_another_can_be_read_somewhere(devs):
    """Soak bug 4 (rename): a peer that knew only the metadata of a version renamed that
    file over another, and the target took it as an edit of its own; the version's holder
    had replaced it meanwhile, so the target was held by nobody, unreadable for ever. A
    file not fetched yet now moves as itself, and its holder's newer version follows it."""
    a, b, c = devs
    a.write("/s", b"base", T)
    a.write("/t", b"target", T)
    converge(a, b, c)
    overwrite(a, "/s", b"alpha's first edit of s", T + 1)
    lazy_send(a, c)  # gamma learns of it, does not open it
    overwrite(a, "/s", b"alpha's second edit of s", T + 2)  # alpha collects the first
    c.cat.rename(ROOT, "s", ROOT, "t")  # gamma saves s over t, as editors do
    for x, y in [(a, b), (b, a), (a, c), (c, a), (b, c), (c, b)] * 2:
        lazy_send(x, y)
    for d in (a, b, c):
        chunks = d.cat.chunks(d.ino("/t")).digests()
        assert any(all(x.cat.has_chunk(h) for h in chunks) for x in (a, b, c)), \
            f"/t on {d.id[:4]} is held by nobody"
    assert a.data("/t") == b"alpha's second edit of s"
    assert a.tree() == b.tree() == c.tree()


def test_two_conflict_copies_in_one_second_are_numbered(devs):
    a, b, _ = devs
    a.write("/f.txt", b"base", T)
    converge(a, b)
    for i in (1, 3):  # twice, within the same second: alpha's edit loses to beta's
        a.write("/f.txt", b"alpha %d" % i, T + i)
        b.write("/f.txt", b"beta %d" % i, T + i + 1)
        converge(a, b)
    first = conflict_name("f.txt", a.id, T + 1)
    second = conflict_name("f.txt", a.id, T + 3, taken={first}.__contains__)
    names = set(a.tree())
    assert names == {"/f.txt", f"/{first}", f"/{second}"}, names


def test_a_directory_conflict_name_has_a_real_time(devs):
    a, b, _ = devs
    a.mkdir("/x")  # apart: a directory on alpha, a file on beta, one name
    b.write("/x", b"beta's file", T)
    converge(a, b)
    assert not [n for n in a.tree() if "19700101" in n], sorted(a.tree())


@needs_fuse
def test_a_request_crossing_a_keep_alive_close_is_retried(tmp_path):
    alpha = Peer(tmp_path, "alpha", None)
    beta = Peer(tmp_path, "beta", alpha.key)
    proxy = Proxy(alpha.port, "beta->alpha")  # the server closes each connection once used
    proxy.set_mode("close_reused")
    # a push the proxy cut short, sent again on a new connection
    alpha.expect_log("the client left before sending its whole body")
    try:
        syncd(alpha.home, "peer", "add", "beta", beta.url)
        syncd(beta.home, "peer", "add", "alpha", proxy.url)
        alpha.start()
        beta.start()
        data = b"a" * 300_000  # above prefetch_below: fetched on open
        (alpha / "f").write_bytes(data)
        wait_for(lambda: os.path.exists(beta / "f") and os.path.getsize(beta / "f") ==
                 len(data), 20, "f's content listed on beta")  # not the empty create
        assert (beta / "f").read_bytes() == data  # a GET after beta's hello
        (beta / "g").write_bytes(b"a change of beta's")
        wait_for(lambda: os.path.exists(alpha / "g"), 10, "g on alpha")  # hello, then push
    finally:
        proxy.close()
        for p in (alpha, beta):
            with contextlib.suppress(Exception):
                p.stop()
            force_cleanup(p.home, p.path)


def test_a_move_concurrent_with_a_delete_wins_where_the_node_came_back(devs):
    """Bug 12, found by tests/index/test_convergence.py after about 4,000 random histories:
    where an edit brought a deleted file back, the node kept the deleter's placement
    version as an ordinary one, which beat a concurrent rename by its clock; where the
    tombstone met the rename itself, the rename won. Same vector, different names."""
    a, b, c = devs
    a.write("/a", b"version 0", T)
    send_some(a, b, 1, 1)
    a.cat.rename(ROOT, "a", ROOT, "b")
    a.write("/b", b"version 4", T + 10**9 + 4)
    b.write("/a", b"version 5", T + 5)
    send_some(b, a, 1, 1)
    send_some(b, c, 1, 1)
    a.write("/b", b"version 8", T + 8)
    a.mkdir("/a")
    b.write("/a", b"version 10", T + 10)
    c.cat.unlink(ROOT, "a")
    send_some(c, b, 1, 1)
    converge(a, b, c)


def test_an_edit_kept_against_a_delete_does_not_beat_its_makers_next_edit(devs):
    """Bug 13, found by tests/index/test_convergence.py: an edit kept against a concurrent
    delete took the deleter's counters into its vector, so its maker's next edit looked
    concurrent with it and lost by mtime on a peer that met the merged version first,
    while the maker kept its edit. Versions now carry the vector their data was made at."""
    a, b, c = devs
    a.write("/a", b"version 0", T)
    a.write("/b", b"version 1", T + 1)
    send(a, b)
    a.write("/b", b"version 6", T + 10**9 + 6)
    b.cat.unlink(ROOT, "b")
    send(b, c)
    send(a, b)  # beta: alpha's edit beats beta's delete
    a.write("/b", b"version 10", T + 10)  # alpha's next edit, with an earlier mtime
    converge(a, b, c)
    assert a.data("/b") == b"version 10"


def test_three_way_conflicts_on_one_name_end_the_same_everywhere(devs):
    """Bug 14, found by tests/index/test_convergence.py after about 3,000 random
    histories: gamma settled beta's v14 against its own v22 (v22 won, v14 became a copy);
    alpha's v27, made knowing v22 but not v14, then replaced v22 on gamma, while beta,
    which never saw v22, settled v14 against v27 and kept v14. Same vector, different
    content. A copy's version now stays a candidate (a sibling) against later versions."""
    a, b, c = devs
    b.mkdir("/b")
    c.write("/a", b"version 8", T + 8)
    c.write("/a", b"version 9", T + 9)
    a.mkdir("/a")
    b.write("/a", b"version 11", T + 11)
    send_some(b, c, 2, 1)
    b.write("/a", b"version 14", T + 10**9 + 14)
    send_some(a, b, 1, 1)
    a.write("/a/a", b"version 20", T + 20)
    c.write("/a", b"version 22", T + 10**9 + 22)
    send_some(a, b, 1, 1)
    send_some(c, a, 3, 1)
    send_some(b, c, 1, 1)
    a.write("/a", b"version 27", T + 27)
    converge(a, b, c)
    assert a.data("/a") == b"version 14"  # v14 and v27 are the siblings: the later mtime


def test_a_conflict_copy_lands_in_one_place_everywhere(devs):
    """Bug 15, the CI soak of 2026-11-23: a conflict copy went next to whichever side won
    the content, at that side's place. Alpha met beta's winning edit after gamma's rename
    and put the copy at the old name; gamma, which had renamed first, put it at the new
    one. The copy's placement had no version, so neither ever moved."""
    a, b, c = devs
    a.mkdir("/d0")
    a.mkdir("/d1")
    a.write("/d0/f1", b"version 0", T)
    converge(a, b, c)
    a.write("/d0/f1", b"alpha's edit", T + 1)
    b.write("/d0/f1", b"beta's edit", T + 2)  # the later mtime: beta's edit wins
    c.cat.rename(c.ino("/d0"), "f1", c.ino("/d1"), "f0")
    send(c, a)  # alpha takes the rename
    send(b, c)  # gamma: beta's edit, then alpha's (both at the new place): alpha's loses
    send(a, c)
    send(b, a)  # alpha: beta's edit, sent from the old place, beats its own
    converge(a, b, c)
    copies = [p for p in a.tree() if "sync-conflict" in p]
    assert len(copies) == 1 and copies[0].startswith("/d1/f0.sync-conflict"), copies


def test_a_file_back_from_a_delete_that_nobody_holds_is_dropped(devs):
    """Soak bug 4 (delete): gamma deleted its new file before anyone fetched it, while
    beta changed its mode; the chmod beats the delete (rule 3), and the file came back
    everywhere with content nobody held, unreadable for ever. Applying such a return now
    names the file for the daemon's check, which drops it once no peer holds it."""
    a, b, c = devs
    c.write("/f", b"gamma's file", T)
    lazy_send(c, a)
    lazy_send(c, b)
    ino = c.ino("/f")
    c.cat.unlink(ROOT, "f")
    c.cat.retire(c.cat.purge_inodes([ino]))  # what the mount does once it is closed
    b.cat.set_attributes(b.ino("/f"), mode=0o600)
    node = c.db.conn.execute("SELECT id FROM nodes WHERE name = 'f'").fetchone()[0]
    assert lazy_send(b, c) == {node}  # back from gamma's delete: named for the check
    for x, y in [(a, b), (b, a), (a, c), (c, a), (b, c), (c, b)] * 2:
        lazy_send(x, y)
    maker, chunk = unheld_file(c.cat, node)  # back on gamma too, held by nobody
    assert maker == c.id and not any(d.cat.has_chunk(chunk) for d in (a, b, c))
    assert drop_unheld(c.cat, node) is not None
    for x, y in [(c, a), (c, b)]:
        lazy_send(x, y)
    assert a.tree() == b.tree() == c.tree() == {}


def test_a_version_its_maker_replaced_is_no_conflict_copy(devs):
    """The soak of 2026-12-05 (seed 1338181324): gamma knew alpha's version X of f from
    its metadata alone (it was killed before fetching it). Alpha replaced X with Y; Y lost
    to beta's concurrent W, and beta kept Y as a conflict copy. Gamma met that copy before
    f's own state: taking Y back into f (Merger._reconsider), it made a conflict copy of X
    too, though X was no conflict loser but a version its maker had replaced (rule 3: a
    dominated version is ignored). Nobody held X any more: a copy readable nowhere, on
    every peer."""
    a, b, c = devs
    a.write("/f", b"base", T)
    converge(a, b, c)
    overwrite(a, "/f", b"X: alpha's first edit", T + 1)
    lazy_send(a, c)  # gamma learns of X, does not open it
    overwrite(a, "/f", b"Y: alpha's second edit", T + 2)  # X's chunk is collected
    overwrite(b, "/f", b"W: beta's edit, concurrent with X and Y", T + 3)
    send(a, b)  # beta: Y against W, W is later: Y becomes a conflict copy
    send_some(b, c, 1, 1)  # gamma: beta's copy of Y first (stamped before f itself)
    for x, y in [(a, b), (b, a), (a, c), (c, a), (b, c), (c, b)] * 2:
        lazy_send(x, y)
    assert_every_file_held(a, b, c)
    assert a.tree() == b.tree() == c.tree()
    copy = conflict_name("f", a.id, T + 2)
    assert sorted(a.tree()) == ["/f", f"/{copy}"]  # W, and Y's copy: no copy of X
    assert b.data("/f") == b"W: beta's edit, concurrent with X and Y"


def test_a_replaced_chunk_a_version_refers_to_again_is_kept(devs):
    """The same soak run, on alpha: a version arrived (a conflict copy gamma made from
    metadata) whose chunk alpha had replaced and kept for peers (store/retired). Such a
    chunk counts as here (the fetcher takes it back), but it expired like any replaced
    chunk once every peer had confirmed the replacement: the only copy of its bytes was
    gone, and the file could be read nowhere."""
    a, b, c = devs
    a.cat.keep_replaced()  # as the daemon does
    a.write("/f", b"base", T)
    converge(a, b, c)
    big = b"L" * (1 << 17)  # a chunk file, not inline
    overwrite(a, "/f", big, T + 1)
    lazy_send(a, c)  # gamma learns of L, does not open it
    overwrite(a, "/f", b"alpha's second edit", T + 3)  # L's chunk is retired on alpha
    overwrite(b, "/f", b"W: beta's edit, concurrent with L", T + 2)
    lazy_send(b, c)  # gamma: L against W, W is later: L becomes a conflict copy
    for x, y in [(a, b), (b, a), (a, c), (c, a), (b, c), (c, b)] * 2:
        lazy_send(x, y)  # the copy of L reaches alpha: L's chunk is referred to again
    digest = digest_of(big)
    assert a.cat.referenced({digest}) and a.cat.store.is_retired(digest)
    a.cat.expire_replaced(a.cat.seq, 0.0, 0.0)  # every peer confirmed, long ago
    assert a.cat.store.read_served(digest) == big  # still served to peers
    a.cat.store.make_room()  # a full disk gives up replaced chunks, not this one
    assert a.cat.store.read_served(digest) == big
    # L's copy counts as held here (W's is beta's), so it is never dropped as unheld.
    assert sorted(filter(None, (unheld_file(a.cat, n) for n in unheld_copies(a.cat)))) == [
        (b.id, digest_of(b"W: beta's edit, concurrent with L"))]
