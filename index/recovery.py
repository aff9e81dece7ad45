"""Crash recovery, run before a mount serves (DESIGN rule 1).

A file that was being written when its process died is marked dirty: its uncommitted
writes sit in its working chunks, store/work/<ino>.<index>. Two cases:

- Its commit had reached the index (Catalog.commit_draft: the index decides, then the
  store follows): the committed chunk list names every working chunk's digest. The
  install is finished (a working chunk whose bytes the index holds, index/inline.py, is
  just dropped), and the file is its new version.
- Otherwise it keeps its last committed version, and what was written since becomes
  NAME.sync-recovered-YYYYMMDD-HHMMSS.EXT beside it, an ordinary new file, so nothing is
  published as if closed and nothing is lost.
- A new file whose create had not reached the index (it commits with the file's first
  close, Catalog.create with `later`) is gone, as an unsynced create on ext4 may be; what
  was written to it becomes inode-N.sync-recovered-... at the share's root, the name the
  recovery gives bytes whose names are gone. Its inode number is never handed out again.

Recovery is crash-safe itself: the recovered copy's transaction records which inode it
made (Catalog.set_recovery_target), so a recovery cut short after it finishes the install
instead of making a second copy; chunks a cut-short commit or purge left without a
reference are collected first.
"""

from __future__ import annotations

import logging
import os
import time

from syncd.index.catalog import Catalog
from syncd.index.chunklist import (
    CHUNK,
    Builder,
    ChunkList,
    digest_of,
    slot_count,
    slot_length,
    zero_digest,
)
from syncd.index.faults import crash_point
from syncd.index.inline import inline_size
from syncd.index.names import free_tagged_name, utc_stamp
from syncd.index.schema import ROOT_INO
from syncd.index.store import ChunkStore, hash_file

log = logging.getLogger(__name__)


def recover(catalog: Catalog, store: ChunkStore) -> list[str]:
    """Recover every dirty file; drop inodes left without names. Returns the new names."""
    if collected := catalog.collect_unreferenced():
        log.info("removed %d chunk(s) that an interrupted commit had left unreferenced",
                 collected)
    if staged := set(store.staged()):  # an import's chunks: its batch committed or not
        kept = catalog.referenced(staged)
        store.unstage(sorted(kept))
        store.drop_staged(staged - kept)
    store.adopt_slots()
    recovered = []
    catalog.reserve_inodes(max(store.work_inodes(), default=0))
    for ino in store.work_inodes():
        size = catalog.size_of(ino)  # None: the inode is gone
        work = store.work_chunks(ino)
        digests = {i: hash_file(path) for i, path in work.items()}
        interrupted = catalog.recovery_target(ino)
        target = interrupted
        if target is None and size is not None and _committed(catalog.chunks(ino), work,
                                                               digests):
            target = ino
        if target is not None:  # the index has the version: finish the install
            _install(catalog, store, target, work, digests)
        elif work:
            lowest = store.floor(ino)  # 0 after O_TRUNC: the committed bytes are gone
            committed = size or 0  # None: a new file whose create never reached the index
            floor = committed if lowest is None else min(committed, lowest)
            recovered.append(_recover_file(catalog, store, ino, floor, work))
        store.clear_work(ino)
        if interrupted is not None:
            catalog.set_recovery_target(ino, None)
    catalog.retire(catalog.purge_inodes(catalog.orphan_inodes()))
    return recovered


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _committed(chunks: ChunkList, work: dict[int, str], digests: dict[int, bytes]) -> bool:
    """Does the committed chunk list hold every working chunk where the draft had it (one
    of zeros as a hole)? Then the commit reached the index (or the draft changed nothing)."""
    return all(i < chunks.slots and chunks.at(i) == _as_slot(work[i], d)
               for i, d in digests.items())


def _as_slot(path: str, digest: bytes) -> bytes | None:
    """How a committed list names a working chunk: its digest, or None (a hole)."""
    return None if digest == zero_digest(os.path.getsize(path)) else digest


def _install(catalog: Catalog, store: ChunkStore, ino: int, work: dict[int, str],
             digests: dict[int, bytes]) -> None:
    chunks = catalog.chunks(ino)
    for i, path in work.items():
        if _as_slot(path, digests[i]) is not None and chunks.at(i) == digests[i] \
                and not catalog.inline.has(digests[i]):
            store.install(("w", ino, i), path, digests[i])


def _recover_file(catalog: Catalog, store: ChunkStore, ino: int, floor: int,
                  work: dict[int, str]) -> str:
    """The draft as it stood: working chunks, over committed bytes below `floor`, over
    zeros. Its size: the larger of `floor` and the end of the last working chunk."""
    base = catalog.chunks(ino)
    size = max([floor] + [i * CHUNK + os.path.getsize(p) for i, p in work.items()])
    # an empty working chunk at the end (none of its bytes written yet) is no slot
    work = {i: p for i, p in work.items() if i < slot_count(size)}
    work_digests, made = {}, {}
    kept = base.truncated(floor // CHUNK)  # the committed slots wholly below the floor
    cut = {floor // CHUNK} if floor % CHUNK else set()  # the slot the floor cuts
    b = Builder()
    for i in sorted(work.keys() | cut):
        b.copy(kept, b.slots, i)
        length = slot_length(i, size)
        if i in work:
            os.truncate(work[i], length)
            digest = work_digests[i] = hash_file(work[i])
        elif (committed := base.at(i)) is not None:  # its bytes below the floor, then zeros
            data = catalog.read_chunk(committed, floor % CHUNK)
            data += bytes(length - len(data))
            digest = digest_of(data)
            if digest != zero_digest(length):
                made[digest] = data
        else:
            digest = zero_digest(length)
        b.add(digest, length)
    chunks = b.copy(kept, b.slots, slot_count(size)).done()
    catalog.store_new_chunks(made)

    # A new file's create that never reached the index: the root's owner, mode 0600.
    inode = catalog.inode(ino if catalog.size_of(ino) is not None else ROOT_INO)
    mode = inode.mode if inode.kind == "file" else 0o600
    nodes = catalog.nodes_of(ino)
    if nodes:
        parent_node, name = catalog.placement(nodes[0])
        parent_ino = catalog.ino_of(parent_node)
    else:  # its names were removed while it was open: keep the bytes at the root
        parent_ino, name = ROOT_INO, f"inode-{ino}"
    tag = f"sync-recovered-{utc_stamp()}"
    new_name = free_tagged_name(
        name, tag, lambda n: catalog.lookup(parent_ino, n) is not None
    )
    inline = {work_digests[i]: _read(work[i]) for i in work
              if _as_slot(work[i], work_digests[i]) is not None
              and inline_size(os.path.getsize(work[i])) and not store.has(work_digests[i])}
    with catalog.db.atomic():
        entry = catalog.create(parent_ino, new_name, "file", mode, inode.uid, inode.gid,
                               op="recover")
        catalog.commit_content(entry.inode.ino, chunks, size, time.time_ns(), None, True,
                               inline=inline)
        catalog.set_recovery_target(ino, entry.inode.ino)
    crash_point("recover:after-index")
    for i, path in work.items():
        if _as_slot(path, work_digests[i]) is not None and work_digests[i] not in inline:
            store.install(("w", ino, i), path, work_digests[i])
    log.warning("recovered uncommitted writes to inode %d as %s", ino, new_name)
    return new_name
