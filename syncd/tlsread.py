"""The peers' HTTP client reading TLS several records at a time.

OpenSSL decrypts one TLS record, at most 16 KiB, per read: httpcore asks its stream for
64 KiB and trio's TLS stream hands it one record. So every 16 KiB of a big answer made a
trip through httpx, httpcore, h11 and trio on the trio thread, 16,384 trips for 256 MiB,
which was most of what a fetch cost the receiver's trio thread (py-spy). Here a read,
after the record trio hands it, also decrypts the records already received whole, up to
what was asked for; a record not yet all here stays for trio's next read, which also
sends whatever TLS itself has to answer.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

import httpcore
import httpx


class _Stream(httpcore.AsyncNetworkStream):
    """httpcore's trio stream, whose reads take the whole records already here too."""

    def __init__(self, inner: httpcore.AsyncNetworkStream):
        self.inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = await self.inner.read(max_bytes, timeout)
        tls = self.inner.get_extra_info("ssl_object")
        if tls is None or not data:
            return data
        parts, size = [data], len(data)
        while size < max_bytes:
            try:
                more = tls.read(max_bytes - size)
            except ssl.SSLError:  # the next record is not all here (or an error: trio's)
                break
            if not more:
                break
            parts.append(more)
            size += len(more)
        return data if len(parts) == 1 else b"".join(parts)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self.inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> _Stream:
        return _Stream(await self.inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str):
        return self.inner.get_extra_info(info)


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self):
        self.inner = httpcore.TrioBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable | None = None) -> _Stream:
        return _Stream(await self.inner.connect_tcp(host, port, timeout, local_address,
                                                    socket_options))

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class Transport(httpx.AsyncHTTPTransport):
    """httpx's transport (HTTP/1.1, no proxy) over the streams above."""

    def __init__(self, verify: ssl.SSLContext, limits: httpx.Limits | None = None,
                 retries: int = 0, socket_options: Iterable | None = None):
        limits = limits or httpx.Limits()
        super().__init__(verify=verify, limits=limits, retries=retries,
                         socket_options=socket_options)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=verify, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, retries=retries,
            socket_options=socket_options, network_backend=_Backend())
