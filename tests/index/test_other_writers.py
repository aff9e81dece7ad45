"""A command (`syncd peer set`, `syncd config set`...) writes the index from a process of
its own while the serving process writes it too. A write transaction that read first must
then wait for the other writer, as busy_timeout says, not fail at once with "database is
locked": SQLite never waits to turn a read into a write (CI once lost a mount so, in
tombstones.observe)."""

import threading
import time

from syncd.index import peers, schema, tombstones
from syncd.index.catalog import Catalog
from syncd.index.store import ChunkStore

from tests.index.conftest import DEVICE

HOLD = 0.3  # seconds the other writer keeps its transaction open


def other_writer(path, started: threading.Event) -> threading.Thread:
    """A command's process: it adds a peer in one transaction it keeps open for HOLD s."""
    def run():
        db = schema.open_db(path)
        try:
            with db.atomic():
                peers.add_peer(db, "gamma", "127.0.0.1:9")
                started.set()
                time.sleep(HOLD)
        finally:
            db.close()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_writes_that_read_first_wait_for_another_writer(tmp_path):
    ChunkStore.create(tmp_path / "store")
    schema.create(tmp_path / "index.db", DEVICE, 1000, 1000, 1_700_000_000 * 10**9).close()
    cat = Catalog(schema.open_db(tmp_path / "index.db"), ChunkStore(tmp_path / "store"))
    try:
        for write in (lambda: tombstones.observe(cat, 1_700_000_000),
                      lambda: cat.create(1, "d", "dir", 0o755, 1000, 1000)):
            started = threading.Event()
            thread = other_writer(tmp_path / "index.db", started)
            assert started.wait(5)
            write()
            thread.join()
            peers.remove_peer(cat.db, "gamma")
        assert cat.conn.execute("SELECT count(*) FROM horizons").fetchone()[0] == 1
        assert cat.lookup(1, "d") is not None
    finally:
        cat.db.close()
