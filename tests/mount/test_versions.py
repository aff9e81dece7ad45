"""Old versions on a real mount: `syncd versions` lists what was replaced or deleted, and
`syncd restore` brings it back, whether the home is mounted or not (docs/cli.md)."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

from syncd.index.chunklist import Builder, digest_of

from tests.conftest import needs_fuse
from tests.helpers import Mount, assert_clean_error, force_cleanup, status, syncd

pytestmark = needs_fuse

JAN = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
FEB = int(datetime(2026, 2, 1, tzinfo=UTC).timestamp())


def listed(home, path: str) -> dict:
    return json.loads(syncd(home, "versions", path, "--json").stdout)


def content_hash(data: bytes) -> str:
    return Builder().add(digest_of(data), len(data)).done().hash


def write(path, data: bytes, mtime: int | None = None) -> None:
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def test_overwrites_are_listed_and_restored(mount):
    home, m = mount.home, mount.path
    device = status(home)["device"]["id"]
    write(m / "f", b"one", JAN)
    write(m / "f", b"two, longer", FEB)
    write(m / "f", b"three")
    got = listed(home, "f")
    assert got["schema_version"] == 1 and got["path"] == "f"
    assert [(v["time"], v["size"], v["device"], v["hash"]) for v in got["versions"]] == [
        ("2026-01-01T00:00:00Z", 3, device, content_hash(b"one")),
        ("2026-02-01T00:00:00Z", 11, device, content_hash(b"two, longer"))]
    table = syncd(home, "versions", str(m / "f")).stdout  # a path inside the mount
    assert "2026-01-01T00:00:00Z" in table and "(this machine)" in table

    before = time.time()
    done = syncd(home, "restore", "f", "--at", "2026-01-15")
    assert done.stdout == "restored /f as of 2026-01-01T00:00:00Z (3 bytes)\n"
    assert (m / "f").read_bytes() == b"one"
    assert os.stat(m / "f").st_mtime >= before - 1  # a new version, made now
    assert [v["size"] for v in listed(home, "f")["versions"]] == [3, 11, 5]  # three kept

    syncd(home, "restore", "f")  # the newest: "three"
    assert (m / "f").read_bytes() == b"three"
    assert status(home)["versions"]["count"] == 4


def test_delete_and_restore_with_the_directories_above(mount):
    home, m = mount.home, mount.path
    (m / "d" / "e").mkdir(parents=True)
    write(m / "d" / "e" / "f", b"precious")
    os.unlink(m / "d" / "e" / "f")
    os.rmdir(m / "d" / "e")
    os.rmdir(m / "d")
    assert [v["path"] for v in listed(home, "d/e/f")["versions"]] == ["d/e/f"]
    syncd(home, "restore", "d/e/f")
    assert (m / "d" / "e" / "f").read_bytes() == b"precious"


def test_restore_to_a_new_path_and_what_is_refused(mount):
    home, m = mount.home, mount.path
    write(m / "f", b"old", JAN)
    write(m / "f", b"new")
    write(m / "other", b"in the way")
    seq = status(home)["device"]["seq"]
    for args, code, words in (
            (("f", "--to", "other"), 4, "/other exists: give --to a path that does not"),
            (("f", "--to", str(m / "other")), 4, "/other exists"),
            (("f", "--at", "2025-12-31"), 1, "/f has no kept version from 2025-12-31T00:00:00Z"
                                             " or before"),
            (("f", "--at", "yesterday"), 2, "bad time 'yesterday'"),
            (("nothing",), 1, "/nothing has no kept version"),
            (("/elsewhere/f",), 2, "is outside the mount point"),
            (("f", "--to", "other/x"), 1, "/other is not a directory"),
            (("f", "--to", "x" * 256), 1, "File name too long")):
        assert_clean_error(syncd(home, "restore", *args, check=False), code, words)
    assert status(home)["device"]["seq"] == seq  # nothing changed
    assert (m / "other").read_bytes() == b"in the way" and (m / "f").read_bytes() == b"new"
    done = syncd(home, "restore", "f", "--to", "sub/copy")
    assert done.stdout.endswith(" to /sub/copy\n")
    assert (m / "sub" / "copy").read_bytes() == b"old" and (m / "f").read_bytes() == b"new"


def test_a_file_open_while_restored_keeps_its_bytes(mount):
    home, m = mount.home, mount.path
    write(m / "f", b"old")
    write(m / "f", b"new")
    with open(m / "f", "rb") as f:
        syncd(home, "restore", "f")
        assert f.read() == b"new"  # DESIGN rule 6
    assert (m / "f").read_bytes() == b"old"


def test_commands_work_with_nothing_serving_the_home(mount):
    home, m = mount.home, mount.path
    write(m / "f", b"old", JAN)
    write(m / "f", b"new")
    mount.stop()
    assert [v["size"] for v in listed(home, "f")["versions"]] == [3]
    syncd(home, "restore", "f", "--to", "g")
    syncd(home, "restore", "f")  # over the file: "new" is kept in turn
    assert [v["size"] for v in listed(home, "f")["versions"]] == [3, 3]
    mount.start()
    assert (m / "g").read_bytes() == b"old" == (m / "f").read_bytes()


def test_the_limits_apply_at_once_when_changed(mount):
    home, m = mount.home, mount.path
    for i in range(4):
        write(m / "f", bytes([65 + i]) * 1000, JAN + i)
    assert status(home)["versions"] == {"count": 3, "bytes": 3000}
    done = syncd(home, "config", "set", "versions_max", "2500")
    assert "applied to the running mount" in done.stdout
    assert [v["time"][-3:] for v in listed(home, "f")["versions"]] == ["01Z", "02Z"]
    syncd(home, "config", "set", "versions_keep_days", "0.00001")  # < 1 s
    time.sleep(2.2)  # replaced times are whole seconds
    syncd(home, "config", "set", "versions_max", "10%")  # applying it expires again
    assert listed(home, "f")["versions"] == []
    assert (m / "f").read_bytes() == b"D" * 1000


def test_commands_work_with_the_home_served_without_a_mount(tmp_path):
    from tests.hostile.conftest import Server

    server = Server(tmp_path)
    m = Mount(server.home, tmp_path / "mnt")
    try:
        m.start()
        write(m.path / "f", b"old", JAN)
        write(m.path / "f", b"new")
        m.stop()
        server.start()
        syncd(server.home, "restore", "f", "--to", "g")  # by the serving process
        syncd(server.home, "restore", "f")
        assert [v["size"] for v in listed(server.home, "f")["versions"]] == [3, 3]
        assert_clean_error(syncd(server.home, "restore", "f", "--to", "g", check=False), 4,
                           "/g exists")
        server.stop()
        m.start()
        assert (m.path / "g").read_bytes() == b"old" == (m.path / "f").read_bytes()
        m.stop()
    finally:
        server.stop()
        force_cleanup(server.home, m.path)


def drop_version_chunks(home, data: bytes) -> None:
    """Lose the stored chunk of a version (as if it was found damaged and dropped)."""
    chunk = home / "store" / "chunks" / digest_of(data).hex()[:2] / digest_of(data).hex()
    chunk.unlink()


def test_content_no_longer_here_and_held_by_nobody_is_a_clear_error(mount):
    home, m = mount.home, mount.path
    old = os.urandom(100_000)  # a chunk file, not inline
    write(m / "f", old)
    write(m / "f", b"new")
    drop_version_chunks(home, old)
    seq = status(home)["device"]["seq"]
    assert_clean_error(syncd(home, "restore", "f", check=False), 1,
                       "the content of that version is not here, and no peer holds it")
    mount.stop()
    assert_clean_error(syncd(home, "restore", "f", check=False), 1,
                       "the content of that version is not here: mount or serve the home")
    mount.start()
    assert status(home)["device"]["seq"] == seq and (m / "f").read_bytes() == b"new"
