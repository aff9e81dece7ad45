"""Extended attributes through the kernel (docs/cli.md, "What is shared"): user.* stored
and kept across a remount, the size limits, the virtual user.syncd.* attributes, other
namespaces, and the copy tools that carry them (rsync -X, cp --preserve=xattr)."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import needs_fuse

pytestmark = needs_fuse


def err(fn, *args) -> int:
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


def attrs(path: Path) -> dict[str, bytes]:
    return {n: os.getxattr(path, n) for n in sorted(os.listxattr(path))}


def test_set_get_list_remove_and_remount(mount):
    f = mount.path / "f"
    f.write_bytes(b"data")
    os.mkdir(mount.path / "d")
    assert os.listxattr(f) == []
    os.setxattr(f, "user.tag", b"blue")
    os.setxattr(f, "user.empty", b"")
    os.setxattr(f, "user.bin", bytes(range(256)))
    os.setxattr(mount.path / "d", "user.dir", "é".encode())
    os.setxattr(f, "user.tag", b"green")  # replaced
    assert attrs(f) == {"user.bin": bytes(range(256)), "user.empty": b"",
                        "user.tag": b"green"}
    os.removexattr(f, "user.empty")
    assert err(os.removexattr, f, "user.empty") == errno.ENODATA
    assert err(os.getxattr, f, "user.nothing") == errno.ENODATA
    assert err(os.setxattr, f, "user.new", b"x", os.XATTR_REPLACE) == errno.ENODATA
    assert err(os.setxattr, f, "user.tag", b"x", os.XATTR_CREATE) == errno.EEXIST
    os.chmod(f, 0o600)  # a mode of its own
    (mount.path / "f").write_bytes(b"new content")  # the same inode: they stay
    mount.stop()
    mount.start()
    assert attrs(f) == {"user.bin": bytes(range(256)), "user.tag": b"green"}
    assert attrs(mount.path / "d") == {"user.dir": "é".encode()}
    assert f.stat().st_mode & 0o777 == 0o600


def test_size_limits_are_e2big_and_change_nothing(mount):
    f = mount.path / "f"
    f.write_bytes(b"data")
    # over Linux's XATTR_SIZE_MAX (64 KiB): the kernel refuses before we see it
    assert err(os.setxattr, f, "user.big", b"x" * (64 * 1024 + 1)) == errno.E2BIG
    os.setxattr(f, "user.one", b"x" * (64 * 1024))
    os.setxattr(f, "user.two", b"y" * (60 * 1024))
    # over 128 KiB of names and values on one file: ours
    assert err(os.setxattr, f, "user.three", b"z" * (5 * 1024)) == errno.E2BIG
    assert sorted(os.listxattr(f)) == ["user.one", "user.two"]
    assert os.getxattr(f, "user.two") == b"y" * (60 * 1024)
    os.setxattr(f, "user.two", b"smaller")
    os.setxattr(f, "user.three", b"z" * (5 * 1024))


def test_virtual_attributes_are_read_only_and_never_listed(mount):
    f = mount.path / "f"
    f.write_bytes(b"data")
    os.mkfifo(mount.path / "pipe")
    assert os.getxattr(f, "user.syncd.state") == b"local"
    assert os.getxattr(f, "user.syncd.holders") == b"test"  # the home's name
    assert os.getxattr(mount.path, "user.syncd.state") == b"local"
    # Linux keeps user.* off special files (and symlinks) before asking us: what
    # user.syncd.state would say of them, local-only, tests/handlers shows.
    assert err(os.getxattr, mount.path / "pipe", "user.syncd.state") == errno.ENODATA
    assert err(os.getxattr, mount.path, "user.syncd.holders") == errno.ENODATA  # no content
    assert err(os.getxattr, f, "user.syncd.other") == errno.ENODATA
    assert os.listxattr(f) == []
    for name in ("user.syncd.state", "user.syncd.holders", "user.syncd.new"):
        assert err(os.setxattr, f, name, b"local") == errno.EPERM
        assert err(os.removexattr, f, name) == errno.EPERM
    assert os.getxattr(f, "user.syncd.state") == b"local"


def test_other_namespaces_are_not_supported(mount):
    f = mount.path / "f"
    f.write_bytes(b"data")
    for name in ("security.syncd-test", "trusted.syncd-test"):
        assert err(os.setxattr, f, name, b"x") == errno.EOPNOTSUPP
        assert err(os.getxattr, f, name) == errno.ENODATA
    assert err(os.setxattr, f, b"user.\xff", b"x") == errno.EILSEQ  # names are UTF-8
    assert os.listxattr(f) == []


def _tree_with_attrs(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"a" * 100)
    (root / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    os.setxattr(root / "a.txt", "user.tag", b"first")
    os.setxattr(root / "a.txt", "user.gone", b"soon")
    os.setxattr(root / "sub" / "b.bin", "user.checksum", b"\x00\x01" * 100)
    os.setxattr(root / "sub", "user.dir", b"yes")


def _all_attrs(root: Path) -> dict[str, dict[str, bytes]]:
    return {str(p.relative_to(root)): attrs(p) for p in sorted(root.rglob("*"))}


def test_rsync_x_round_trip(mount, tmp_path):
    src, back = tmp_path / "src", tmp_path / "back"
    _tree_with_attrs(src)
    into = mount.path / "copy"
    subprocess.run(["rsync", "-aX", f"{src}/", f"{into}/"], check=True)
    assert _all_attrs(into) == _all_attrs(src)
    # an update: rsync writes a temporary file with the new attributes and renames it
    # over the old one, which keeps no attribute of its own
    (src / "a.txt").write_bytes(b"changed")
    os.setxattr(src / "a.txt", "user.tag", b"second")
    os.removexattr(src / "a.txt", "user.gone")
    subprocess.run(["rsync", "-aX", f"{src}/", f"{into}/"], check=True)
    assert attrs(into / "a.txt") == {"user.tag": b"second"}
    subprocess.run(["rsync", "-aX", f"{into}/", f"{back}/"], check=True)
    assert _all_attrs(back) == _all_attrs(src)  # no user.syncd.* came along
    assert (back / "a.txt").read_bytes() == b"changed"


def test_cp_preserve_xattr(mount, tmp_path):
    src = tmp_path / "src"
    _tree_with_attrs(src)
    subprocess.run(["cp", "-r", "--preserve=xattr", str(src), str(mount.path / "cp")],
                   check=True)
    assert _all_attrs(mount.path / "cp") == _all_attrs(src)
    subprocess.run(["cp", "-a", str(mount.path / "cp"), str(tmp_path / "out")], check=True)
    assert _all_attrs(tmp_path / "out") == _all_attrs(src)
