"""A home made by an earlier syncd opens with this one, its files intact
(tests/data/home-v4.tar.gz: a home made and filled through a mount by the landed version
of 2026-12-01, 916a72d, schema 4)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import tarfile
from pathlib import Path

import pytest
from syncd.index.chunklist import CHUNK, digest_of
from syncd.index.schema import SCHEMA_VERSION

from tests.conftest import needs_fuse
from tests.helpers import Mount, force_cleanup, status, syncd

pytestmark = needs_fuse

DATA = Path(__file__).parent.parent / "data"
BIG = b"".join(b"line %d of the landed version\n" % i for i in range(80000))


@pytest.fixture
def old_home(tmp_path: Path):
    with tarfile.open(DATA / "home-v4.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    m = Mount(tmp_path / "home", tmp_path / "mnt")
    try:
        yield m
    finally:
        force_cleanup(m.home, m.path)


def test_a_home_of_the_landed_version_mounts_with_its_files(old_home):
    db = sqlite3.connect(old_home.home / "index.db")
    try:
        (device,) = db.execute("SELECT value FROM meta WHERE key = 'device_id'").fetchone()
    finally:
        db.close()
    assert not (old_home.home / "device.pem").exists()  # made before identities
    old_home.start()
    # its first start made its key pair and certificate, for the device it was
    shown = json.loads(syncd(old_home.home, "id", "--json").stdout)
    assert shown["device"] == device == status(old_home.home)["device"]["id"]
    assert stat.S_IMODE(os.stat(old_home.home / "device.pem").st_mode) == 0o600
    (beta,) = status(old_home.home)["peers"]  # its address is https now, not pinned yet
    assert beta["url"].startswith("https://") and beta["addresses"] == [beta["url"]]
    assert (beta["fingerprint"], beta["pinned"]) == (None, False)
    m = old_home.path
    assert sorted(os.listdir(m)) == ["docs", "link", "sparse.bin"]
    assert (m / "docs" / "small.txt").read_bytes() == b"hello from the landed version\n"
    assert os.stat(m / "docs" / "small.txt").st_nlink == 2  # with docs/hard.txt
    assert (m / "docs" / "deep" / "big.bin").read_bytes() == BIG
    assert os.stat(m / "docs" / "deep" / "big.bin").st_mode & 0o777 == 0o600
    assert (m / "sparse.bin").read_bytes() == b"head" + bytes(3 * 2**20 - 4) + b"tail"
    assert os.readlink(m / "link") == "docs/small.txt"
    zero = digest_of(bytes(CHUNK)).hex()  # sparse.bin's middle: a hole since schema 5
    assert not (old_home.home / "store" / "chunks" / zero[:2] / zero).exists()
    # what this version writes commits as usual on it, and stays across a remount
    (m / "docs" / "new.txt").write_text("written by this version\n")
    os.mkfifo(m / "docs" / "pipe")  # a kind schema 4 did not have
    os.setxattr(m / "docs" / "small.txt", "user.tag", b"schema 12")  # nor these
    old_home.stop()
    old_home.start()
    assert json.loads(syncd(old_home.home, "id", "--json").stdout) == shown  # made once
    assert os.getxattr(m / "docs" / "hard.txt", "user.tag") == b"schema 12"
    assert (m / "docs" / "new.txt").read_text() == "written by this version\n"
    assert stat.S_ISFIFO(os.lstat(m / "docs" / "pipe").st_mode)
    assert status(old_home.home)["files"]["total"] == 5
    assert "beta" in syncd(old_home.home, "peer", "list").stdout
    old_home.stop()
    db = sqlite3.connect(old_home.home / "index.db")
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        # new.txt's bytes are in the index; the landed version's small files stay files
        assert db.execute("SELECT count(*) FROM inline").fetchone() == (1,)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
