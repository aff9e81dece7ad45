"""Two and three real peers with real mounts: what a user does on one is there on the
others. Every wait polls for the state expected under a deadline."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3

import pytest
from syncd.index.chunklist import CHUNK, digest_of
from syncd.index.inline import INLINE_MAX
from syncd.index.names import conflict_name

from syncd import auth
from tests.helpers import alive, force_cleanup, lock_pid, syncd, tls_client, wait_for
from tests.peers.conftest import read, settled, wait_content, wait_gone


def test_every_kind_of_change_propagates(cluster):
    a, b = cluster(2)
    (a / "f.txt").write_bytes(b"hello")
    wait_content(b / "f.txt", b"hello")
    (a / "f.txt").write_bytes(b"modified")
    wait_content(b / "f.txt", b"modified")
    with open(a / "f.txt", "ab") as f:
        f.write(b" and appended")
    wait_content(b / "f.txt", b"modified and appended")
    os.truncate(a / "f.txt", 3)
    wait_content(b / "f.txt", b"mod")
    os.chmod(a / "f.txt", 0o600)
    wait_for(lambda: os.stat(b / "f.txt").st_mode & 0o777 == 0o600, 20, "chmod on beta")
    os.mkdir(b / "dir")
    (b / "dir" / "inner").write_bytes(b"in")
    wait_content(a / "dir" / "inner", b"in")
    os.rename(a / "dir", a / "moved")
    wait_content(b / "moved" / "inner", b"in")
    assert not os.path.exists(b / "dir")
    os.rename(b / "f.txt", b / "moved" / "g.txt")
    wait_content(a / "moved" / "g.txt", b"mod")
    os.symlink("g.txt", a / "moved" / "link")
    wait_for(lambda: os.path.islink(b / "moved" / "link"), 20, "symlink on beta")
    assert os.readlink(b / "moved" / "link") == "g.txt"
    assert read(b / "moved" / "link") == b"mod"
    os.unlink(b / "moved" / "link")
    wait_gone(a / "moved" / "link")
    shutil.rmtree(a / "moved")
    wait_gone(b / "moved")
    assert os.listdir(b.path) == []
    wait_for(lambda: settled(a, b), 20, "nothing pending")


def test_lazy_fetch_brings_verified_bytes_on_open(cluster):
    a, b = cluster(2)
    data = os.urandom(3 * (1 << 20) + 5)
    (a / "big").write_bytes(data)
    wait_for(lambda: os.path.exists(b / "big") and os.stat(b / "big").st_size == len(data),
             20, "big's size on beta")  # metadata is eager
    files = b.status()["files"]
    assert files["missing"] == 1 and files["bytes"] == len(data)  # content is lazy
    assert files["bytes_local"] == 0
    assert b.status()["transfers"] == {"fetching": [], "arriving": [], "prefetching": 0}
    assert (b / "big").read_bytes() == data
    assert b.status()["files"]["missing"] == 0


def test_a_small_file_arrives_with_its_change(cluster):
    """A small file's bytes travel in the push (docs/protocol.md, `data`): beta holds them
    as soon as it has the file's size, with nothing fetched ahead (prefetch is off there)
    and nobody left to fetch from; a file above INLINE_MAX still waits for its open."""
    a, b = cluster(2, mounted=False)
    config = json.loads(b.home.joinpath("config.json").read_text())
    b.home.joinpath("config.json").write_text(json.dumps({**config, "prefetch_below": 0}))
    a.start()
    b.start()
    small, bigger = b"small and whole", b"b" * (INLINE_MAX + 1)
    (a / "small").write_bytes(small)
    (a / "bigger").write_bytes(bigger)
    wait_for(lambda: [size(b / "small"), size(b / "bigger")] == [len(small), len(bigger)],
             20, "both sizes on beta")
    assert b.status()["files"]["missing"] == 1  # bigger
    a.stop()
    assert (b / "small").read_bytes() == small
    assert b.status()["files"]["missing"] == 1


def size(path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def test_a_peer_serving_wrong_bytes_is_caught(cluster):
    a, b, c = cluster(3)
    c.expect_log(r"WARNING peer alpha served wrong bytes for chunk \w+ of 'f'")
    data = b"the right bytes" * 20000  # above prefetch_below: fetched on open
    (a / "f").write_bytes(data)
    wait_content(b / "f", data)  # beta holds the chunk now too
    wait_for(lambda: os.path.exists(c / "f") and os.stat(c / "f").st_size == len(data), 20,
             "f on gamma")
    (chunk,) = [p for p in (a.home / "store" / "chunks").rglob("*") if p.is_file()]
    chunk.write_bytes(b"X" * len(data))  # alpha, asked first, now serves wrong bytes
    assert (c / "f").read_bytes() == data
    assert "peer alpha served wrong bytes for chunk" in c.mount.log()


def test_offline_peer_catches_up_and_its_queue_survives_a_restart(cluster):
    a, b = cluster(2)
    (a / "before").write_bytes(b"1")
    wait_content(b / "before", b"1")
    b.stop()
    (a / "while-away").write_bytes(b"22")
    os.unlink(a / "before")
    wait_for(lambda: a.peer("beta")["pending_changes"] == 2, 20, "two pending for beta")
    pending = a.peer("beta")
    assert pending["pending_bytes"] == 2 and pending["oldest_pending"] is not None
    a.stop()  # the sender restarts: the queue is in its index
    assert a.peer("beta")["pending_changes"] == 2
    a.start()
    b.start()
    wait_content(b / "while-away", b"22")
    wait_gone(b / "before")
    wait_for(lambda: a.peer("beta")["pending_changes"] == 0, 20, "nothing pending for beta")
    assert a.peer("beta")["state"] == "online"


def test_concurrent_edits_make_the_same_conflict_copy_everywhere(cluster):
    a, b, c = cluster(3)
    (a / "doc.txt").write_bytes(b"base")
    wait_content(b / "doc.txt", b"base")
    wait_content(c / "doc.txt", b"base")
    for p in (a, b, c):
        for q in ("alpha", "beta", "gamma"):
            if q != p.name:
                p.set_peer(q, "outofuse")
    alpha_mtime = 1_800_000_000 * 10**9
    (a / "doc.txt").write_bytes(b"alpha's edit")
    os.utime(a / "doc.txt", ns=(0, alpha_mtime))
    (b / "doc.txt").write_bytes(b"beta's edit")
    os.utime(b / "doc.txt", ns=(0, 1_800_000_100 * 10**9))  # later: beta's keeps the name
    for p in (a, b, c):
        for q in ("alpha", "beta", "gamma"):
            if q != p.name:
                p.set_peer(q, "auto")
    copy = conflict_name("doc.txt", a.status()["device"]["id"], alpha_mtime)
    for p in (a, b, c):
        wait_content(p / "doc.txt", b"beta's edit")
        wait_content(p / copy, b"alpha's edit")
    wait_for(lambda: settled(a, b, c), 30, "nothing pending")
    for p in (a, b, c):
        assert sorted(os.listdir(p.path)) == sorted(["doc.txt", copy])
        assert p.status()["files"]["conflicts"] == 1


def test_edit_against_delete_keeps_the_edit(cluster):
    a, b = cluster(2)
    (a / "keep").write_bytes(b"v1")
    wait_content(b / "keep", b"v1")
    a.set_peer("beta", "outofuse")
    b.set_peer("alpha", "outofuse")
    os.unlink(a / "keep")
    (b / "keep").write_bytes(b"v2")
    a.set_peer("beta", "auto")
    b.set_peer("alpha", "auto")
    wait_content(a / "keep", b"v2")
    wait_for(lambda: settled(a, b), 20, "nothing pending")
    assert read(b / "keep") == b"v2"


def test_a_request_with_a_wrong_key_changes_nothing(cluster):
    a, b = cluster(2)
    a.expect_log(r"WARNING refused POST /v1/changes: (bad signature|unsigned)")
    wait_for(lambda: a.peer("beta")["pinned"], 20, "alpha to pin beta")
    seq = a.status()["device"]["seq"]
    body = b'{"device": "' + b"0" * 32 + b'", "changes": []}'
    with tls_client(a.home, b.home) as client:  # a device admitted there: the key is wrong
        for key in (auth.new_key(), None):
            headers = auth.sign_request(key, "POST", "/v1/changes", body) if key else {}
            r = client.post(f"{a.url}/v1/changes", content=body, headers=headers)
            assert r.status_code == 401, r.text
    assert a.status()["device"]["seq"] == seq
    assert "refused POST /v1/changes" in a.mount.log()


def test_a_remote_change_leaves_open_handles_alone(cluster):
    a, b = cluster(2)
    (a / "f").write_bytes(b"old")
    wait_content(b / "f", b"old")
    with open(b / "f", "rb") as reader:
        (a / "f").write_bytes(b"new!")
        wait_content(b / "f", b"new!")
        assert reader.read() == b"old"  # DESIGN rule 6


def test_a_writer_that_closes_after_a_remote_change_makes_a_conflict_copy(cluster):
    a, b = cluster(2)
    (a / "f").write_bytes(b"old")
    wait_content(b / "f", b"old")
    with open(b / "f", "r+b") as writer:
        writer.write(b"beta")
        writer.flush()  # in the draft, not yet committed
        (a / "f").write_bytes(b"alpha's")
        wait_content(b / "f", b"alpha's")
    # closed later than alpha's edit: beta's version keeps the name
    for p in (a, b):
        wait_content(p / "f", b"beta")
        wait_for(lambda p=p: [n for n in os.listdir(p.path) if "sync-conflict" in n], 20,
                 f"the conflict copy on {p.name}")
        (copy,) = [n for n in os.listdir(p.path) if "sync-conflict" in n]
        assert read(p / copy) == b"alpha's"
    wait_for(lambda: settled(a, b), 20, "nothing pending")


def test_bodies_travel_compressed_when_it_pays(cluster):
    a, b = cluster(2)
    text = b"a line of a simulation input file\n" * 10000
    (a / "input.txt").write_bytes(text)
    wait_content(b / "input.txt", text)
    (digest,) = [p.name for p in (a.home / "store" / "chunks").rglob("*") if p.is_file()]
    key = bytes.fromhex(a.key)
    path = f"/v1/chunks/{digest}"
    headers = auth.sign_request(key, "GET", path, b"")
    with tls_client(a.home, b.home) as client:
        r = client.get(a.url + path, headers={**headers, "accept-encoding": "zstd"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "zstd"
    assert len(r.content) == len(text)  # (httpx decodes it)
    assert int(r.headers["content-length"]) < len(text) // 10
    noise = os.urandom(5000)
    (a / "noise").write_bytes(noise)
    wait_content(b / "noise", noise)  # incompressible: sent as it is, still verified


def test_many_chunks_arrive_whole_and_signed_though_sent_in_slices(cluster):
    """A batch answer goes out in slices (api.SEND_SLICE): what arrives is every chunk
    asked for, in order, one not held left out, under a signature over the whole body."""
    a, b = cluster(2)
    data = os.urandom(2 * CHUNK + CHUNK // 2 + 7)
    (a / "f").write_bytes(data)
    wait_content(b / "f", data)
    digests = [digest_of(data[i:i + CHUNK]) for i in range(0, len(data), CHUNK)]
    unknown = bytes(32)
    body = json.dumps({"chunks": [d.hex() for d in (*digests, unknown)]}).encode()
    key = bytes.fromhex(a.key)
    headers = auth.sign_request(key, "POST", "/v1/chunks", body)
    with tls_client(a.home, b.home) as client:
        r = client.post(a.url + "/v1/chunks", content=body,
                        headers={**headers, "content-type": "application/json"})
    assert r.status_code == 200
    assert r.headers["x-syncd-sizes"] == f"{CHUNK},{CHUNK},{CHUNK // 2 + 7},-1"
    assert r.content == data
    auth.check_response(key, 200, headers[auth.NONCE], r.headers, auth.body_hash(r.content))


def test_changes_reach_a_peer_through_another_one(cluster):
    a, b, c = cluster(3)
    for p, q in ((a, "gamma"), (c, "alpha")):
        p.set_peer(q, "outofuse")  # alpha and gamma never meet
    (a / "relayed.txt").write_bytes(b"via beta")
    wait_content(c / "relayed.txt", b"via beta")
    os.rename(c / "relayed.txt", c / "back.txt")
    wait_content(a / "back.txt", b"via beta")
    # One node renamed. The kernel forgets the old name when the mount's notifier thread
    # invalidates it, a moment after the new one can be looked up.
    wait_gone(a / "relayed.txt", 10)


def test_the_mount_ignores_set_user_id_bits_that_peers_can_send(cluster):
    (a,) = cluster(1)
    with open("/proc/mounts") as mounts:
        options = {line.split()[1]: line.split()[3] for line in mounts}
    assert {"nosuid", "nodev"} <= set(options[str(a.path)].split(","))


def test_a_state_the_peer_refuses_is_skipped_not_retried_for_ever(cluster):
    a, b = cluster(2)
    a.expect_log(r"ERROR peer beta refuses node \S+ \('a/b'\), which is skipped")
    b.expect_log(r"WARNING refused POST /v1/changes: 422 changes.0.name: .* bad name 'a/b'")
    a.stop()
    db = sqlite3.connect(a.home / "index.db")  # a node no peer may accept: "/" in its name
    seq = db.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()[0] + 1
    device = a.status()["device"]["id"]
    with db:
        db.execute("INSERT INTO nodes (id, kind, ino, parent, name, seq, deleted)"
                   " VALUES (?, 'dir', NULL, 'root', 'a/b', ?, 1)", (f"{device}:{seq}", seq))
        db.execute("INSERT INTO journal (seq, clock, node, op, device, at)"
                   " VALUES (?, ?, ?, 'delete', ?, 0)", (seq, seq, f"{device}:{seq}", device))
    db.close()
    a.start()
    (a / "after").write_bytes(b"still delivered")
    wait_content(b / "after", b"still delivered")
    wait_for(lambda: a.peer("beta")["pending_changes"] == 0, 20, "nothing pending")
    assert "which is skipped" in a.mount.log()


def test_a_sparse_file_crosses_as_its_bytes_and_equals_the_same_bytes_written(cluster):
    """Neither the wire nor the store carries a hole, and zeros never written hash like
    zeros written: the same bytes made both ways by two peers in one file at once are no
    conflict."""
    a, b = cluster(2)
    with open(a / "tib", "wb") as f:
        f.seek(1 << 40)
        f.write(b"x")
    wait_for(lambda: os.path.exists(b / "tib") and os.stat(b / "tib").st_size == (1 << 40) + 1,
             20, "tib on beta")
    with open(b / "tib", "rb") as f:
        f.seek((1 << 40) - 2)
        assert f.read() == b"\0\0x"
    for p in (a, b):  # "x", the one chunk, is held in the index (index/inline.py)
        assert [c for c in (p.home / "store" / "chunks").rglob("*") if c.is_file()] == []
        db = sqlite3.connect(f"file:{p.home / 'index.db'}?mode=ro", uri=True)
        try:
            assert db.execute("SELECT data FROM inline").fetchall() == [(b"x",)]
        finally:
            db.close()
    (a / "same").write_bytes(b"")
    wait_for(lambda: os.path.exists(b / "same"), 20, "same on beta")
    a.set_peer("beta", "outofuse")
    b.set_peer("alpha", "outofuse")
    mtime = 1_800_000_000 * 10**9
    data = bytearray(3 << 20)
    data[(1 << 20) + 5] = ord("y")
    (a / "same").write_bytes(data)  # written in full, zeros and all
    with open(b / "same", "wb") as f:  # the same bytes with holes
        f.truncate(3 << 20)
        f.seek((1 << 20) + 5)
        f.write(b"y")
    for p in (a, b):
        os.utime(p / "same", ns=(0, mtime))
    a.set_peer("beta", "auto")
    b.set_peer("alpha", "auto")
    wait_for(lambda: settled(a, b), 30, "nothing pending")
    for p in (a, b):
        assert sorted(os.listdir(p.path)) == ["same", "tib"]  # no conflict copy
        assert (p / "same").read_bytes() == data


def test_a_big_file_is_read_as_it_arrives_from_where_its_reader_is(cluster):
    """Reads wait only for the chunks they cover: with one chunk held by nobody, the
    open and every other read succeed (a jump ahead included), only that chunk's read
    fails, and once a holder has it again the same handle reads it."""
    a, b = cluster(2)
    mib = 1 << 20
    data = b"".join(bytes([i + 1]) * mib for i in range(24))
    (a / "big").write_bytes(data)
    wait_for(lambda: os.path.exists(b / "big") and os.stat(b / "big").st_size == len(data),
             20, "big listed on beta")
    lost = a.home / "store" / "chunks"
    (chunk,) = [c for c in lost.rglob("*") if c.is_file() and c.read_bytes()[:1] == b"\x06"]
    kept = chunk.read_bytes()
    chunk.unlink()  # slot 5: no peer holds it now
    b.expect_log(r"ERROR cannot read 'big' at 5242880: no peer served chunk")
    with open(b / "big", "rb", buffering=0) as f:
        assert f.read(mib) == data[:mib]
        f.seek(20 * mib)  # ahead of the stream
        assert f.read(mib) == data[20 * mib:21 * mib]
        f.seek(5 * mib)
        with pytest.raises(OSError) as e:
            f.read(mib)
        assert e.value.errno == errno.EIO
        f.seek(23 * mib)
        assert f.read(mib) == data[23 * mib:]
        back = chunk.with_name("back.tmp")  # whole, as the store installs: alpha may read
        back.write_bytes(kept)
        os.rename(back, chunk)
        # asked once: a request for it sent before the rename (the read of slot 23 started a
        # stream for what is missing) may answer after it, and the read asks again
        f.seek(5 * mib)
        assert f.read(mib) == data[5 * mib:6 * mib]
    assert (b / "big").read_bytes() == data
    wait_for(lambda: b.status()["files"]["missing"] == 0, 10, "big complete on beta")


def test_a_push_the_peer_applied_but_did_not_confirm_is_sent_again(cluster, tmp_path):
    """A fresh peer joining a share of three pushes dies after applying the first and
    before answering it (a crash point): the sender's cursor stays (rule 5), the push
    it prepared meanwhile is not sent, and once the peer is back every push goes again,
    in order, each confirmed before the next moves the cursor."""
    a, b = cluster(2, mounted=False)
    src = tmp_path / "src"
    for d in range(25):
        (src / f"d{d:02d}").mkdir(parents=True)
        for i in range(100):
            (src / f"d{d:02d}" / f"f{i:02d}").write_bytes(b"%d/%d\n" % (d, i))
    a.start()
    syncd(a.home, "import", str(src), "--into", "src")
    total = a.peer("beta")["pending_changes"]
    assert total == 2526  # the directory imported into, 25 below it, 2,500 files
    b.path.mkdir()
    b.mount.served_log.serving()
    syncd(b.home, "mount", str(b.path), env={**os.environ, "SYNCD_FAULT":
                                              "receive:after-index"})
    pid = lock_pid(b.home)
    wait_for(lambda: not alive(pid), 30, "beta to die applying the first push")
    force_cleanup(b.home, b.path)
    db = sqlite3.connect(f"file:{b.home / 'index.db'}?mode=ro", uri=True)
    try:  # it had applied the first push whole
        assert db.execute("SELECT count(*) FROM nodes WHERE origin IS NOT NULL").fetchone() \
            == (1000,)
    finally:
        db.close()
    wait_for(lambda: a.peer("beta")["state"] == "offline", 20, "alpha to see beta gone")
    assert a.peer("beta")["pending_changes"] == total
    b.start()
    wait_for(lambda: settled(a, b), 60, "beta to hold everything")
    for d in (0, 12, 24):
        for i in (0, 99):
            assert (b / f"src/d{d:02d}/f{i:02d}").read_bytes() == b"%d/%d\n" % (d, i)
    assert sum(len(files) for _, _, files in os.walk(b / "src")) == 2500
    db = sqlite3.connect(f"file:{a.home / 'index.db'}?mode=ro", uri=True)
    try:
        pushes = db.execute("SELECT after, upto FROM sent WHERE peer = 'beta' ORDER BY rowid"
                            ).fetchall()
        top = db.execute("SELECT max(seq) FROM nodes").fetchone()[0]
    finally:
        db.close()
    # confirmed pushes only, one after the other from the start: the first again
    assert pushes[0][0] == 0 and pushes[-1][1] == top and len(pushes) >= 3
    assert all(p[1] == q[0] for p, q in zip(pushes, pushes[1:], strict=False))
