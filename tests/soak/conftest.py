"""Fixtures the soak's reproductions borrow: clusters of real mounted peers
(tests/peers/conftest.py). Three indexes without a network (`devs`) come from
tests/conftest.py."""

from tests.peers.conftest import cluster  # noqa: F401
