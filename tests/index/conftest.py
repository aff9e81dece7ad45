import pytest
from syncd.index import schema
from syncd.index.catalog import Catalog
from syncd.index.store import ChunkStore

from tests.replicas import check_invariants

DEVICE = "ab" * 16


@pytest.fixture
def cat(tmp_path) -> Catalog:
    ChunkStore.create(tmp_path / "store")
    db = schema.create(tmp_path / "index.db", DEVICE, 1000, 1000, 1_700_000_000 * 10**9)
    c = Catalog(db, ChunkStore(tmp_path / "store"))
    yield c
    check_invariants(c)
    db.close()
