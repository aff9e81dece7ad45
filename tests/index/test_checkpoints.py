"""The serving connection's WAL stays bounded under steady commits (schema.Checkpointer):
SQLite starts a WAL again only at a commit that finds it all copied back, which a
checkpoint on a worker thread, with commits landing meanwhile, never leaves it."""

from __future__ import annotations

import threading
import time

import pytest
from syncd.index import schema
from syncd.index.catalog import Catalog
from syncd.index.store import ChunkStore

ROUNDS, PER_ROUND = 30, 20


def wal_after_steady_commits(tmp_path, finish: bool) -> int:
    """Commits go on while a worker thread checkpoints, round after round, as in the
    serving process; the WAL's size in bytes at the end."""
    ChunkStore.create(tmp_path / "store")
    schema.create(tmp_path / "index.db", "ab" * 16, 0, 0, time.time_ns()).close()
    db = schema.open_db(tmp_path / "index.db", autocheckpoint=False)
    cat = Catalog(db, ChunkStore(tmp_path / "store"))
    checkpoint = schema.Checkpointer(tmp_path / "index.db")
    try:
        for r in range(ROUNDS):
            asked: list[bool] = []
            worker = threading.Thread(target=lambda out=asked: out.append(checkpoint()))
            worker.start()
            n = 0
            while worker.is_alive() or n < PER_ROUND:  # commits land while it copies
                cat.create(schema.ROOT_INO, f"f{r}-{n}", "file", 0o644, 0, 0)
                n += 1
            worker.join()
            if finish and asked[0]:
                checkpoint.finish(db.conn)
        return (tmp_path / "index.db-wal").stat().st_size
    finally:
        checkpoint.close()
        db.close()


def test_the_wal_starts_again_once_over_its_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(schema.Checkpointer, "RESTART_BYTES", 256 << 10)
    bounded = wal_after_steady_commits(tmp_path / "finish", finish=True)
    grown = wal_after_steady_commits(tmp_path / "worker-only", finish=False)
    assert bounded < grown / 2, (bounded, grown)


@pytest.fixture(autouse=True)
def dirs(tmp_path):
    for d in ("finish", "worker-only"):
        (tmp_path / d).mkdir()
