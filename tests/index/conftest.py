import pytest
from syncd.index import schema
from syncd.index.catalog import Catalog
from syncd.index.store import ChunkStore
from syncd.index.versions import keep_versions

from tests.replicas import Device, T, check_invariants

DEVICE = "ab" * 16


@pytest.fixture
def cat(tmp_path) -> Catalog:
    ChunkStore.create(tmp_path / "store")
    db = schema.create(tmp_path / "index.db", DEVICE, 1000, 1000, 1_700_000_000 * 10**9)
    c = Catalog(db, ChunkStore(tmp_path / "store"))
    yield c
    check_invariants(c)
    db.close()


@pytest.fixture
def dev(tmp_path) -> Device:
    """A device ("aa" * 16) that keeps old versions, as a serving process does."""
    d = Device(tmp_path, "aa" * 16, T)
    keep_versions(d.cat)
    yield d
    check_invariants(d.cat)
    d.db.close()
