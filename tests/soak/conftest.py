"""Fixtures the soak's reproductions borrow: three indexes without a network
(tests/index/test_sync.py) and clusters of real mounted peers (tests/peers/conftest.py)."""

from tests.index.test_sync import devs  # noqa: F401
from tests.peers.conftest import cluster  # noqa: F401
