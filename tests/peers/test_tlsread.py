"""The peers' client reads an answer several TLS records at a time (syncd/tlsread.py):
a real TLS server on 127.0.0.1 (trio, syncd's server context), the real httpx client."""

from __future__ import annotations

import os

import httpx
import trio

from syncd import identity, tlsread

MIB = 1 << 20
RECORD = 16 * 1024  # the most a TLS record carries


async def serve_once(listener: trio.SocketListener, context, body: bytes, sent: int) -> None:
    """Answer one GET with `body`'s length, sending its first `sent` bytes, then close."""
    tls = trio.SSLStream(await listener.accept(), context, server_side=True)
    request = b""
    while b"\r\n\r\n" not in request:
        request += await tls.receive_some()
    await tls.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
    for at in range(0, sent, MIB):
        await tls.send_all(body[at:min(at + MIB, sent)])
    await tls.aclose()


async def fetch(tmp_path, body: bytes, sent: int) -> list[bytes] | httpx.HTTPError:
    """The parts `aiter_raw` gives of an answer of `body`, `sent` bytes of it served, or
    the error that reading it raised."""
    server = identity.ensure(tmp_path / "server.pem", "a" * 32)
    context = identity.TrustStore(server).listening
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    client = httpx.AsyncClient(transport=tlsread.Transport(
        verify=identity.client_context(server, None)))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_once, listener, context, body, sent)
            try:
                async with client.stream("GET", f"https://127.0.0.1:{port}/") as r:
                    return [part async for part in r.aiter_raw()]
            except httpx.HTTPError as e:
                return e
    finally:
        await client.aclose()
        await listener.aclose()


def test_a_big_answer_arrives_whole_in_reads_of_many_records(tmp_path):
    body = os.urandom(4 * MIB)
    parts = trio.run(fetch, tmp_path, body, len(body))
    assert b"".join(parts) == body
    # one TLS record a read gives at least 256 parts of at most 16 KiB
    assert len(parts) < len(body) // RECORD // 2
    assert max(map(len, parts)) > RECORD


def test_an_answer_cut_short_is_an_error_not_a_short_body(tmp_path):
    body = os.urandom(4 * MIB)
    error = trio.run(fetch, tmp_path, body, len(body) // 2 + 100)
    assert isinstance(error, (httpx.RemoteProtocolError, httpx.ReadError))
