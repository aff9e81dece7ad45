"""Crash recovery, run before a mount serves (DESIGN rule 1).

A file that was being written when its process died is marked dirty: its uncommitted
writes sit in its working chunks, store/work/<ino>.<index>. It keeps its last committed version;
what was written since becomes NAME.sync-recovered-YYYYMMDD-HHMMSS.EXT beside it, an
ordinary new file, so nothing is published as if closed and nothing is lost.
"""

from __future__ import annotations

import logging
import os
import time

from syncd.index.catalog import Catalog
from syncd.index.names import free_tagged_name, utc_stamp
from syncd.index.schema import ROOT_INO
from syncd.index.store import CHUNK, ChunkStore, hash_file

log = logging.getLogger(__name__)


def recover(catalog: Catalog, store: ChunkStore) -> list[str]:
    """Recover every dirty file; drop inodes left without names. Returns the new names."""
    recovered = []
    known = {r[0]: r[1] for r in catalog.conn.execute("SELECT ino, size FROM inodes")}
    for ino in store.dirty_inodes():
        work = store.work_chunks(ino)
        if work and ino in known:
            floor = min(known[ino], store.floor(ino) or known[ino])
            recovered.append(_recover_file(catalog, store, ino, floor, work))
        store.clear_work(ino)
    for ino in catalog.orphan_inodes():
        for digest in catalog.purge_inode(ino):
            store.remove(digest)
    return recovered


def _recover_file(catalog: Catalog, store: ChunkStore, ino: int, floor: int,
                  work: dict[int, str]) -> str:
    """The draft as it stood: working chunks, over committed bytes below `floor`, over
    zeros. Its size: the larger of `floor` and the end of the last working chunk."""
    base = catalog.chunks(ino)
    size = max([floor] + [i * CHUNK + os.path.getsize(p) for i, p in work.items()])
    chunks = []
    for i in range(-(-size // CHUNK)):
        length = min(CHUNK, size - i * CHUNK)
        if i in work:
            os.truncate(work[i], length)
            digest = hash_file(work[i])
            store.install(("w", ino, i), work[i], digest)
        elif i < len(base) and i * CHUNK < floor:
            kept = min(length, floor - i * CHUNK)
            data = store.read(base[i], 0, kept)
            digest = base[i] if kept == length == CHUNK else store.put(
                data + bytes(length - len(data)))
        else:
            digest = store.ensure_zero(length)
        chunks.append(digest)

    inode = catalog.inode(ino)
    nodes = catalog.nodes_of(ino)
    if nodes:
        parent_node, name = catalog.placement(nodes[0])
        parent_ino = catalog.conn.execute(
            "SELECT ino FROM nodes WHERE id = ?", (parent_node,)
        ).fetchone()[0]
    else:  # its names were removed while it was open: keep the bytes at the root
        parent_ino, name = ROOT_INO, f"inode-{ino}"
    tag = f"sync-recovered-{utc_stamp()}"
    new_name = free_tagged_name(
        name, tag, lambda n: catalog.lookup(parent_ino, n) is not None
    )
    with catalog.db.atomic():
        entry = catalog.create(parent_ino, new_name, "file", inode.mode, inode.uid, inode.gid)
        catalog.commit_content(entry.inode.ino, chunks, size, time.time_ns(), None, True)
    log.warning("recovered uncommitted writes to inode %d as %s", ino, new_name)
    return new_name
