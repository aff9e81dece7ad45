"""The bounded cache's choices in the index (index/cache.py): which files may leave, in
which order, and which of their chunks leaving frees; last uses written in batches."""

from __future__ import annotations

import os

from syncd.index.cache import Usage, candidates, evict, evictable, flush_use, own_chunks
from syncd.index.chunklist import CHUNK, Builder, digest_of
from syncd.index.inline import INLINE_MAX

from tests.replicas import ROOT, Device, T


def write(d: Device, name: str, data: bytes, mtime_ns: int) -> None:
    """A file of as many chunks as its size wants (Device.write makes one)."""
    e = d.cat.lookup(ROOT, name)
    ino = e.inode.ino if e else d.cat.create(ROOT, name, "file", 0o644, 1000, 1000).inode.ino
    pieces = {digest_of(data[i:i + CHUNK]): data[i:i + CHUNK]
              for i in range(0, len(data), CHUNK)}
    d.cat.store_new_chunks(pieces)
    builder = Builder()
    for digest, piece in pieces.items():
        builder.add(digest, len(piece))
    d.cat.commit_content(ino, builder.done(), len(data), mtime_ns, None, True)


def lru(d: Device) -> list[str]:
    names = {d.ino(n): n for n in ("old", "new", "small", "shared")
             if d.cat.lookup(ROOT, n) is not None}
    return [names[c.ino] for c in candidates(d.cat, (-1, -1), 10)]


def test_least_recently_used_first_and_only_content_beyond_the_index(dev):
    write(dev, "old", os.urandom(2 * CHUNK), T)
    write(dev, "new", os.urandom(2 * CHUNK), T)
    write(dev, "small", os.urandom(INLINE_MAX), T)  # held in the index: never a candidate
    usage = Usage()
    usage.opened(dev.ino("new"))
    usage.released(dev.ino("new"))
    usage.opened(dev.ino("old"))
    usage.released(dev.ino("old"))
    assert usage.open == {}
    assert flush_use(dev.cat, usage, most=1) == 1 and flush_use(dev.cat, usage) == 1
    assert lru(dev) == ["new", "old"]
    assert flush_use(dev.cat, usage) == 0


def test_a_later_explicit_atime_is_kept(dev):
    write(dev, "old", os.urandom(CHUNK + 1), T)
    usage = Usage()
    usage.opened(dev.ino("old"))
    future = 2**62
    dev.cat.set_attributes(dev.ino("old"), atime_ns=future)
    flush_use(dev.cat, usage)
    assert dev.cat.inode(dev.ino("old")).atime_ns == future


def test_evicting_frees_only_chunks_nothing_else_refers_to(dev):
    shared = os.urandom(CHUNK)
    write(dev, "old", shared + os.urandom(CHUNK), T)
    write(dev, "shared", shared + os.urandom(CHUNK) + b"tail", T)  # first chunk shared
    write(dev, "new", os.urandom(2 * CHUNK), T)
    write(dev, "new", os.urandom(CHUNK) + dev.data("new")[CHUNK:], T + 1)  # a kept version
    usage, dirty = Usage(), set()
    c = {dev.cat.display_name(c.ino): c for c in candidates(dev.cat, (-1, -1), 10)}
    assert len(own_chunks(dev.cat, c["'old'"])) == 1  # not the shared one
    assert len(own_chunks(dev.cat, c["'shared'"])) == 1  # nor its tail, in the index
    assert len(own_chunks(dev.cat, c["'new'"])) == 1  # not the one a version holds
    usage.opened(dev.ino("new"))
    assert not evictable(dev.cat, usage, dirty, c["'new'"])
    assert not evictable(dev.cat, usage, {dev.ino("old")}, c["'old'"])
    assert evictable(dev.cat, usage, dirty, c["'old'"])
    before = dev.data("old")
    digests = own_chunks(dev.cat, c["'old'"])
    evict(dev.cat, c["'old'"], digests)
    assert dev.cat.missing_chunks(dev.ino("old")) == digests
    assert not evictable(dev.cat, usage, dirty, c["'old'"])  # not here any more
    assert dev.data("shared")[:CHUNK] == before[:CHUNK]
    dev.cat.store.put(before[CHUNK:])  # as a fetch installs it again
    dev.cat.mark_local([dev.ino("old")])
    assert dev.data("old") == before


def test_a_changed_file_is_not_the_candidate_chosen(dev):
    write(dev, "old", os.urandom(2 * CHUNK), T)
    (c,) = candidates(dev.cat, (-1, -1), 10)
    write(dev, "old", os.urandom(2 * CHUNK), T + 1)
    assert not evictable(dev.cat, Usage(), set(), c)


def test_a_pinned_file_is_not_evictable(dev):
    write(dev, "old", os.urandom(2 * CHUNK), T)
    (c,) = candidates(dev.cat, (-1, -1), 10)
    dev.cat.set_pin(dev.cat.lookup(ROOT, "old").node, True)
    assert not evictable(dev.cat, Usage(), set(), c)
