"""Hostile Content-Encoding on the peer API (docs/protocol.md, "Compression"): a zstd
body is verified before it is inflated, and never inflated beyond 64 MiB; any other
encoding gets 415. Refusals are signed (the request was), logged once, change nothing."""

from __future__ import annotations

import zstandard

from syncd.api import MAX_BODY
from tests.hostile.conftest import refused

ZSTD = {"content-encoding": "zstd"}


def test_a_zstd_body_that_inflates_over_64_mib_is_refused(server, unchanged):
    bomb = zstandard.ZstdCompressor().compress(b" " * (MAX_BODY + 1))
    assert len(bomb) < 1 << 20
    refused(server, server.request("POST", "/v1/changes", bomb, headers=ZSTD), 400, "limit")


def test_a_zstd_bomb_that_hides_its_size_is_refused(server, unchanged):
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(
        b" " * (MAX_BODY + 1))
    refused(server, server.request("POST", "/v1/changes", bomb, headers=ZSTD), 400, "limit")


def test_a_corrupt_zstd_body_is_refused(server, unchanged):
    good = zstandard.ZstdCompressor().compress(b'{"device": "' + b"0" * 600 + b'"}')
    for body in (b"not zstd at all", good[:-3], good[:4] + b"\xff" * 20 + good[24:]):
        server.mark()
        refused(server, server.request("POST", "/v1/changes", body, headers=ZSTD), 400,
                "zstd")


def test_a_zstd_body_that_inflates_to_bad_json_is_refused(server, unchanged):
    body = zstandard.ZstdCompressor().compress(b"{" * 1000)
    refused(server, server.request("POST", "/v1/changes", body, headers=ZSTD), 400, "JSON")


def test_an_unknown_content_encoding_is_refused(server, unchanged):
    for encoding in ("gzip", "br", "zstd, gzip", "identity, zstd"):
        server.mark()
        r = server.request("POST", "/v1/changes", b"{}",
                           headers={"content-encoding": encoding})
        refused(server, r, 415, "zstd")
