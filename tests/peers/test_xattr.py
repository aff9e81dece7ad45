"""Extended attributes between real peers (docs/cli.md, "What is shared"): they travel
with the node, merge name by name when changed on both sides at once, and the virtual
user.syncd.* attributes show each machine's own view."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import syncd, wait_for
from tests.peers.conftest import settled, wait_content


def attrs(path: Path) -> dict[str, bytes] | None:
    try:
        return {n: os.getxattr(path, n) for n in sorted(os.listxattr(path))}
    except OSError:
        return None


def size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def wait_attrs(path: Path, want: dict[str, bytes], timeout: float = 20) -> None:
    wait_for(lambda: attrs(path) == want, timeout, f"{path}'s attributes to be {want}")


def test_an_attribute_set_on_alpha_appears_on_beta(cluster):
    a, b = cluster(2)
    (a / "f").write_bytes(b"data")
    os.mkdir(a / "d")
    wait_content(b / "f", b"data")
    os.setxattr(a / "f", "user.tag", b"from alpha")
    os.setxattr(a / "d", "user.dir", b"\x00binary\xff")
    wait_attrs(b / "f", {"user.tag": b"from alpha"})
    wait_attrs(b / "d", {"user.dir": b"\x00binary\xff"})
    os.removexattr(a / "f", "user.tag")
    os.setxattr(b / "d", "user.back", b"from beta")
    wait_attrs(b / "f", {})
    wait_attrs(a / "d", {"user.back": b"from beta", "user.dir": b"\x00binary\xff"})
    # an edit on beta keeps them, and so does the new inode it makes on alpha
    (b / "f").write_bytes(b"edited")
    os.setxattr(b / "f", "user.after", b"edit")
    wait_content(a / "f", b"edited")
    wait_attrs(a / "f", {"user.after": b"edit"})
    wait_for(lambda: settled(a, b), 20, "nothing pending")


def test_concurrent_changes_merge_by_name_and_lose_nothing(cluster):
    a, b = cluster(2)
    (a / "f").write_bytes(b"data")
    os.setxattr(a / "f", "user.both", b"base")
    os.setxattr(a / "f", "user.removed", b"base")
    wait_attrs(b / "f", {"user.both": b"base", "user.removed": b"base"})
    a.set_peer("beta", "outofuse")
    b.set_peer("alpha", "outofuse")
    os.setxattr(a / "f", "user.alpha", b"only on alpha")
    os.chmod(a / "f", 0o600)
    os.setxattr(a / "f", "user.both", b"alpha's")
    os.setxattr(b / "f", "user.beta", b"only on beta")
    os.removexattr(b / "f", "user.removed")
    for _ in range(3):  # beta's clock runs ahead: its value of user.both is the later
        os.setxattr(b / "f", "user.both", b"beta's")
    a.set_peer("beta", "auto")
    b.set_peer("alpha", "auto")
    want = {"user.alpha": b"only on alpha", "user.beta": b"only on beta",
            "user.both": b"beta's"}
    wait_attrs(a / "f", want)
    wait_attrs(b / "f", want)
    wait_for(lambda: settled(a, b), 20, "nothing pending")
    for p in (a, b):
        assert os.listdir(p.path) == ["f"]  # no conflict copy: only metadata changed
        assert os.stat(p / "f").st_mode & 0o777 == 0o600
        assert (p / "f").read_bytes() == b"data"


def test_sync_state_and_holders(cluster):
    a, b = cluster(2, mounted=False)
    syncd(b.home, "config", "set", "prefetch_below", "0")
    a.start()
    b.start()
    big = b"b" * 300_000  # above what a state carries: fetched at its first open
    (a / "big").write_bytes(big)
    wait_for(lambda: size(b / "big") == len(big), 20, "big's size on beta")
    assert os.getxattr(b / "big", "user.syncd.state") == b"missing"
    assert os.getxattr(b / "big", "user.syncd.holders") == b"alpha"
    assert os.getxattr(a / "big", "user.syncd.holders") == b"alpha"
    assert (b / "big").read_bytes() == big
    assert os.getxattr(b / "big", "user.syncd.state") == b"local"
    assert os.getxattr(b / "big", "user.syncd.holders") == b"beta,alpha"
    assert os.listxattr(b / "big") == []


def test_a_file_arriving_shows_fetching(cluster):
    a, b = cluster(2)
    data = os.urandom(96 << 20)  # 96 distinct chunks: their fetch outlasts the open
    (a / "huge").write_bytes(data)
    wait_for(lambda: size(b / "huge") == len(data), 30, "huge's size on beta")
    with open(b / "huge", "rb") as f:  # returns once the first chunk is here
        state = os.getxattr(b / "huge", "user.syncd.state")
        assert f.read(10) == data[:10]
    assert state == b"fetching"
    wait_for(lambda: os.getxattr(b / "huge", "user.syncd.state") == b"local", 60,
             "huge here")
