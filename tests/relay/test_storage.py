"""The Storage interface (syncd/relay/storage.py) as every backend must keep it, run against
each real backend: a directory, and WebDAV served by Apache on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import trio

from syncd.relay.storage import MARKER, Missing, RelayError, Unreachable
from tests.relay.conftest import PASSWORD, USER


def test_put_get_list_delete(relay):
    async def go(s):
        await s.check()
        assert await s.list("batches") == []
        await s.put("batches/one", b"first")
        assert await s.get("batches/one") == b"first"
        await s.put("batches/one", b"second, longer")  # replaced whole
        assert await s.get("batches/one") == b"second, longer"
        await s.put("batches/two", b"")
        assert await s.list("batches") == ["batches/one", "batches/two"]
        assert await s.get("batches/two") == b""
        await s.delete("batches/one")
        assert await s.list("batches") == ["batches/two"]
        with pytest.raises(Missing):
            await s.get("batches/one")
    relay.run(go)
    assert relay.files() == ["relay/batches/two"]


def test_nested_names_list_by_prefix(relay):
    names = ["batches/dev1/000001", "batches/dev1/000002", "batches/dev2/000001",
             "chunks/ab/abcdef", "batches-old/x", "certs.d/dev_1"]

    async def go(s):
        for i, name in enumerate(names):
            await s.put(name, f"object {i}".encode())
        for name in names:
            assert await s.get(name) == f"object {names.index(name)}".encode()
        assert await s.list("batches") == names[:3]  # not batches-old: prefix + "/"
        assert await s.list("batches/dev1") == names[:2]
        assert await s.list("chunks") == ["chunks/ab/abcdef"]
        assert await s.list("chunks/ab/abcdef") == []  # an object is not a prefix
        assert await s.list("nothing") == []
    relay.run(go)
    assert relay.files() == sorted(f"relay/{n}" for n in names)


def test_absent_object(relay):
    async def go(s):
        with pytest.raises(Missing, match="never/written"):
            await s.get("never/written")
        await s.delete("never/written")  # no error
        await s.put("here", b"x")
        await s.delete("here")
        await s.delete("here")
    relay.run(go)
    assert relay.files() == []


BAD_NAMES = ["", "/abs", "trailing/", "a//b", "..", "../up", "a/../b", ".", "a/./b",
             "sp ace", "caf\u00e9", "back\\slash", "a/b?c", "%2e%2e"]


@pytest.mark.parametrize("op", ["list", "get", "put", "delete"])
def test_invalid_names_refused(relay, op):
    async def go(s):
        for name in BAD_NAMES:
            args = (name, b"data") if op == "put" else (name,)
            with pytest.raises(ValueError, match="invalid relay object name"):
                await getattr(s, op)(*args)
    before = sorted(p for p in relay.served.rglob("*"))
    relay.run(go)
    assert sorted(p for p in relay.served.rglob("*")) == before


@pytest.mark.parametrize("where", ["missing", "no-marker"])
@pytest.mark.parametrize("op", ["check", "list", "get", "put", "delete"])
def test_missing_root_or_marker_is_unreachable(relay, where, op):
    """An unplugged disk: the root is gone, or it is a bare mount point without the marker.
    Every operation says so, and nothing is created there."""
    root = relay.served / where
    if where == "no-marker":
        root.mkdir()
        if relay.server:
            os.chown(root, relay.root.stat().st_uid, relay.root.stat().st_gid)
    args = {"check": (), "list": ("batches",), "get": ("batches/one",),
            "put": ("batches/one", b"data"), "delete": ("batches/one",)}[op]

    async def go(s):
        with pytest.raises(Unreachable) as e:
            await getattr(s, op)(*args)
        return str(e.value)
    message = relay.run(go, root)
    assert f"/{where}" in message  # says which relay: its path or URL
    if where == "missing":
        assert not root.exists()
    else:
        assert list(root.iterdir()) == []


def test_the_marker_makes_a_relay(relay):
    """`syncd relay add`: a directory or collection that exists but has no marker gets one
    (get says Missing, put writes it); a missing one stays missing."""
    bare, missing = relay.served / "bare", relay.served / "missing"
    bare.mkdir()
    if relay.server:
        os.chown(bare, relay.root.stat().st_uid, relay.root.stat().st_gid)

    async def mark(s):
        with pytest.raises(Missing):
            await s.get(MARKER)
        await s.put(MARKER, b"marker")
        await s.check()
        assert await s.get(MARKER) == b"marker"
        assert await s.list("batches") == []

    async def refused(s):
        for op in (lambda: s.get(MARKER), lambda: s.put(MARKER, b"marker")):
            with pytest.raises(Unreachable):
                await op()
    relay.run(mark, bare)
    relay.run(refused, missing)
    assert [p.name for p in bare.iterdir()] == [MARKER]
    assert not missing.exists()


def test_a_reader_sees_whole_objects_only(relay):
    """While one object is replaced again and again by objects of 4 MiB, a reader gets the
    old one or the new one, whole, never a mix or a part."""
    size = 4 * 1024 * 1024
    versions = {bytes([c]) * size for c in b"ab"}

    async def go(s):
        await s.put("batches/x", b"a" * size)
        seen = set()
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                async def write():
                    writes = 0
                    while writes < 6 or len(seen) < 2:  # until the reads overlapped both
                        await s.put("batches/x", b"ab"[writes % 2:writes % 2 + 1] * size)
                        writes += 1
                    nursery.cancel_scope.cancel()
                nursery.start_soon(write)
                while True:
                    assert await s.list("batches") == ["batches/x"]
                    data = await s.get("batches/x")
                    assert data in versions, f"a part: {len(data)} bytes"
                    seen.add(data[:1])
                    await trio.sleep(0)
    relay.run(go)


KILLED_PUT = """
import sys, trio
from syncd.relay.directory import Directory
from syncd.relay.webdav import WebDAV
kind, root, url, user, password = sys.argv[1:]
s = Directory(root) if kind == "directory" else WebDAV(url, user, password)
trio.run(s.put, "batches/big", b"z" * (256 * 1024 * 1024))
"""


def test_a_killed_put_leaves_nothing_listed(relay, tmp_path):
    """The writing process is killed half way through a put of 256 MiB: no reader sees the
    object, and a later put of the same name gives the whole new object."""
    url = relay.at(relay.root).url
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PUT, relay.kind, str(relay.root),
                             url, USER, PASSWORD])
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size > 1024 * 1024 for p in relay.served.rglob("*")
                      if p.is_file()):  # until some of it is on disk
            assert proc.poll() is None, "the put ended before it could be killed"
            assert time.monotonic() < deadline, "the put wrote nothing in 60 s"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()

    async def go(s):
        assert await s.list("batches") == []
        with pytest.raises(Missing):
            await s.get("batches/big")
        await s.put("batches/big", b"whole")
        assert await s.list("batches") == ["batches/big"]
        assert await s.get("batches/big") == b"whole"
    # Apache removes the temporary file of a cut PUT once it notices the connection gone
    relay.run(go)


def test_put_below_an_object_fails_clearly(relay):
    async def go(s):
        await s.put("batches", b"an object, not a prefix")
        with pytest.raises(RelayError) as e:
            await s.put("batches/one", b"x")
        assert "batches" in str(e.value)
        assert await s.get("batches") == b"an object, not a prefix"
    relay.run(go)
