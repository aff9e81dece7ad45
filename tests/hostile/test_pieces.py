"""A batch answer's chunks are verified with the piece digests its signature check
computed (docs/protocol.md, "Authentication"), but only where a chunk is exactly one piece:
a peer that splits the body otherwise gets its chunks hashed on their own."""

from __future__ import annotations

import httpx
from syncd.index.chunklist import CHUNK, digest_of

from syncd import auth
from syncd.peerlink import Reply


def reply(body: bytes) -> Reply:
    return Reply(200, httpx.Headers(), body, auth.pieces(body))


def test_a_whole_piece_or_the_last_reuses_its_digest():
    a, b, tail = b"a" * CHUNK, b"b" * CHUNK, b"t" * 100
    r = reply(a + b + tail)
    assert r.digest_at(0, CHUNK) == digest_of(a)
    assert r.digest_at(CHUNK, CHUNK) == digest_of(b)
    assert r.digest_at(2 * CHUNK, 100) == digest_of(tail)
    assert reply(tail).digest_at(0, 100) == digest_of(tail)


def test_a_slice_that_is_not_one_piece_has_no_digest():
    body = b"x" * (3 * CHUNK)
    r = reply(body)
    assert r.digest_at(0, CHUNK + 1) is None  # more than a piece: its first MiB's digest
    assert r.digest_at(0, CHUNK - 1) is None  # less than its piece, not the body's end
    assert r.digest_at(1, CHUNK) is None  # not where a piece starts
    assert r.digest_at(CHUNK, 0) is None
    assert Reply(200, httpx.Headers(), body, None).digest_at(0, CHUNK) is None  # unpacked
