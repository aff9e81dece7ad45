"""Short working chunks in slots (index/workslots.py), through the store's working-chunk
calls: what a draft sees must be what a file of its own would hold."""

from __future__ import annotations

import os

from syncd.index.store import ChunkStore
from syncd.index.workslots import SLOT


def store_at(tmp_path) -> ChunkStore:
    ChunkStore.create(tmp_path / "store")
    return ChunkStore(tmp_path / "store")


def test_a_reused_slot_shows_nothing_of_its_former_chunk(tmp_path):
    store = store_at(tmp_path)
    store.start_work(1, 0, small=True)
    store.work_write(1, 0, b"\xff" * 4000, 0)
    store.drop_work(1, 0)
    store.start_work(2, 0, small=True)  # the same slot, free again
    assert store.slots.taken[(2, 0)][0] == 0
    store.work_write(2, 0, b"head", 0)
    store.work_write(2, 0, b"tail", 100)  # past the end: the gap is zeros
    assert store.read_work(2, 0, 104) == b"head" + bytes(96) + b"tail"
    store.work_truncate(2, 0, 2)
    store.work_truncate(2, 0, 50)  # cut, then grown again: zeros
    assert store.read_work(2, 0, 200) == b"he" + bytes(48)
    store.close()


def test_a_chunk_that_outgrows_its_slot_moves_to_a_file_whole(tmp_path):
    store = store_at(tmp_path)
    store.start_work(7, 0, small=True)
    store.work_write(7, 0, b"a" * 1000, 0)
    assert store.work_write(7, 0, b"b" * SLOT, 1000) == SLOT
    assert (7, 0) not in store.slots
    assert os.path.getsize(store.work_path(7, 0)) == 1000 + SLOT
    assert store.read_work(7, 0, 2 * SLOT) == b"a" * 1000 + b"b" * SLOT
    assert store.slots.in_use() == []
    store.close()


def test_slots_in_use_at_a_start_become_working_chunk_files(tmp_path):
    """A crash leaves slots in use: the next start's recovery sees them as the working
    chunk files they stand for, and the slots are free again."""
    store = store_at(tmp_path)
    store.start_work(3, 0, small=True)
    store.work_write(3, 0, b"unsaved", 0)
    store.start_work(4, 0, small=True)
    store.work_write(4, 0, b"x" * 10, 0)
    store.work_truncate(4, 0, 3)
    assert store.dirty_inodes() == [3, 4]
    store.fds.close()  # the process dies: nothing more is written
    again = ChunkStore(tmp_path / "store")
    assert again.dirty_inodes() == [3, 4]
    again.adopt_slots()
    assert again.work_chunks(3) == {0: again.work_path(3, 0)}
    with open(again.work_path(3, 0), "rb") as f:
        assert f.read() == b"unsaved"
    with open(again.work_path(4, 0), "rb") as f:
        assert f.read() == b"xxx"
    assert again.slots.in_use() == []
    again.start_work(5, 0, small=True)  # a freed slot is taken again, not a new one
    assert again.slots.taken[(5, 0)][0] in (0, 1)
    again.close()
    store.close()
