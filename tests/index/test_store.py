"""The content store's install of chunks that come from peers (DESIGN rule 2)."""

from __future__ import annotations

import os

from syncd.index.chunklist import digest_of
from syncd.index.store import ChunkStore


def test_only_bytes_that_match_their_digest_are_installed(tmp_path):
    ChunkStore.create(tmp_path)
    store = ChunkStore(tmp_path)
    good, bad = b"the right bytes", b"the wrong bytes"
    digest = digest_of(good)
    assert not store.put_verified(digest, bad)
    assert not store.put_verified(digest, good, hashed=digest_of(bad))
    assert not store.has(digest)
    assert store.put_verified(digest, memoryview(good))
    assert store.put_verified(digest, good, hashed=digest)  # again: the same bytes
    assert store.verify(digest)
    chunk_dir = os.path.dirname(store.chunk_path(digest))
    assert os.listdir(chunk_dir) == [digest.hex()]  # no temporary left behind
