"""Relay storage faults, real: a connection cut mid-upload and mid-download by a TCP proxy,
a full disk (ENOSPC on a small tmpfs; Apache's 507 over one), a wrong password. Each is
the error it means, leaves nothing a reader could take for an object, and the same
operation succeeds once the fault is gone."""

from __future__ import annotations

import contextlib
import re

import httpx
import pytest
import trio

from syncd.relay.storage import Denied, Full, Missing, RelayError, Unreachable
from syncd.relay.webdav import WebDAV
from tests.relay.conftest import PASSWORD, USER, make_relay, tmpfs
from tests.soak.proxy import Proxy

BIG = b"0123456789abcdef" * (128 * 1024)  # 2 MiB


@pytest.fixture
def dav(tmp_path):
    yield from make_relay("webdav", tmp_path / "served")


@pytest.fixture
def proxy(dav):
    p = Proxy(dav.server.port, "webdav", cut_bytes=256 * 1024)
    yield p
    p.close()


@contextlib.asynccontextmanager
async def via(proxy: Proxy):
    """The relay through the proxy, on new connections: the proxy's mode applies to those."""
    s = WebDAV(f"http://127.0.0.1:{proxy.port}/dav/relay/", USER, PASSWORD)
    try:
        yield s
    finally:
        await s.aclose()


def every_op(s):
    return (s.check, lambda: s.list("batches"), lambda: s.get("batches/x"),
            lambda: s.put("batches/x", b"x"), lambda: s.delete("batches/x"))


def test_upload_cut_midway(dav, proxy):
    async def go(direct):
        await direct.put("batches/small", b"small")
        proxy.set_mode("cut_request")
        async with via(proxy) as s:
            with pytest.raises(Unreachable, match="cannot reach"):
                await s.put("batches/big", BIG)
        assert proxy.stats["cut"] >= 1
        proxy.set_mode("pass")
        async with via(proxy) as s:
            assert await s.list("batches") == ["batches/small"]
            with pytest.raises(Missing):
                await s.get("batches/big")
            await s.put("batches/big", BIG)  # the fault gone, the same put succeeds
            assert await s.get("batches/big") == BIG
    dav.run(go)
    assert dav.files() == ["relay/batches/big", "relay/batches/small"]


def test_download_cut_midway(dav, proxy):
    async def go(direct):
        await direct.put("chunks/big", BIG)
        proxy.set_mode("cut_answer")
        async with via(proxy) as s:
            with pytest.raises(Unreachable, match="cannot reach"):
                await s.get("chunks/big")
        assert proxy.stats["cut"] >= 1
        proxy.set_mode("pass")
        async with via(proxy) as s:
            assert await s.get("chunks/big") == BIG
    dav.run(go)


def test_server_gone(dav, proxy):
    async def go(_direct):
        async with via(proxy) as s:
            await s.check()
            proxy.set_mode("reset")  # open connections too
            for op in every_op(s):
                with pytest.raises(Unreachable,
                                   match=f"http://127.0.0.1:{proxy.port}/dav/relay/"):
                    await op()
            proxy.set_mode("pass")
            await s.check()
    dav.run(go)
    assert dav.files() == []


@pytest.mark.parametrize("kind", ["directory", "webdav"])
def test_full_relay(tmp_path, kind):
    """A relay on a 1 MiB tmpfs: the directory backend meets ENOSPC, Apache answers 507."""
    with tmpfs(tmp_path / "small", "1m") as disk:
        for relay in make_relay(kind, disk):
            async def go(s):
                await s.put("batches/small", b"fits")
                with pytest.raises(Full, match="batches/big"):
                    await s.put("batches/big", BIG)
                assert await s.list("batches") == ["batches/small"]
                with pytest.raises(Missing):
                    await s.get("batches/big")
                await s.put("batches/after", b"still fits")  # the relay goes on
                return await s.list("batches")
            assert relay.run(go) == ["batches/after", "batches/small"]
            assert relay.files() == ["relay/batches/after", "relay/batches/small"]


def test_wrong_password(dav):
    async def go(s):
        for op in every_op(s):
            with pytest.raises(Denied) as e:
                await op()
            message = str(e.value)
            assert "refused the user name or password (HTTP 401" in message
            assert "wrong-pass" not in message and PASSWORD not in message
    dav.run(go, password="wrong-pass")
    assert dav.files() == []


def test_no_answer_in_bounded_time(dav, proxy):
    """A silent partition: the connection is accepted and never answered."""
    async def go(_direct):
        proxy.set_mode("blackhole")
        s = WebDAV(f"http://127.0.0.1:{proxy.port}/dav/relay/", USER, PASSWORD,
                   timeout=httpx.Timeout(0.5))
        try:
            started = trio.current_time()
            with pytest.raises(Unreachable, match="no answer in time"):
                await s.check()
            assert trio.current_time() - started < 5
        finally:
            await s.aclose()
    dav.run(go)


def test_not_a_webdav_collection(dav):
    """A URL the server does not serve with WebDAV: an error that says what it got."""
    async def go(s):
        with pytest.raises(RelayError) as e:
            await s.put("batches/x", b"x")
        assert type(e.value) is RelayError
        assert str(e.value).endswith(
            "unexpected HTTP 405 for PUT /batches/x (is it a WebDAV collection?)")
        assert PASSWORD not in str(e.value)
    dav.run(lambda _direct: with_client(
        WebDAV(f"http://127.0.0.1:{dav.server.port}/", USER, PASSWORD), go))
    assert dav.files() == []


async def with_client(s: WebDAV, test):
    try:
        return await test(s)
    finally:
        await s.aclose()


@pytest.mark.parametrize("url, words", [
    ("ftp://127.0.0.1/dav/", "not an http(s) URL"),
    ("https:///dav/", "not an http(s) URL"),
    ("https://relay:pass-7Qx!@127.0.0.1/dav/", "must not carry a user or password"),
    ("ftp://relay:pass-7Qx!@127.0.0.1/dav/", "must not carry a user or password"),
])
def test_bad_url_refused(url, words):
    with pytest.raises(ValueError, match=re.escape(words)) as e:
        WebDAV(url, USER, PASSWORD)
    assert PASSWORD not in str(e.value)


def test_kept_alive_connection_closed_by_the_server(dav, proxy):
    """A server that closes a kept-alive connection as the next request goes out (the
    proxy closes each connection at its third request): every operation still succeeds."""
    async def go(_direct):
        proxy.set_mode("close_reused")
        async with via(proxy) as s:
            for i in range(4):
                await s.put(f"batches/{i}", b"x" * i)
                assert await s.get(f"batches/{i}") == b"x" * i
            assert await s.list("batches") == [f"batches/{i}" for i in range(4)]
            await s.delete("batches/0")
        assert proxy.stats["cut"] >= 3
    dav.run(go)
