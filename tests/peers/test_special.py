"""Special files between real mounted peers: they stay on the machine that made them, a
peer's node that arrives on one's name takes it (the special file moves aside, here alone),
and a directory a peer deletes goes with the special files it holds here."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterator

from syncd.index.names import conflict_name

from tests.helpers import wait_for
from tests.peers.conftest import settled, wait_content, wait_gone

NULL = os.makedev(1, 3)


@contextlib.contextmanager
def short(path) -> Iterator[str]:
    """A name for `path` that fits in a socket address (108 bytes) however long the test's
    directory and the conflict name: through its directory's fd."""
    fd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


def bind(path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    with short(path) as name:
        s.bind(name)
    s.listen()
    return s


def greet_through(server: socket.socket, path) -> bytes:
    """Connect to `server` by `path`; what it sends back."""
    with socket.socket(socket.AF_UNIX) as c, short(path) as name:
        c.settimeout(10)
        c.connect(name)
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"still here")
        return c.recv(16)


def aside(peer, name: str, path) -> str:
    """The name a special file that yields `name` takes on `peer`: a conflict name by its
    mtime and the peer's device."""
    return conflict_name(name, peer.status()["device"]["id"], os.lstat(path).st_mtime_ns)


def test_special_files_stay_on_the_machine_that_made_them(cluster):
    a, b = cluster(2)
    os.mkdir(a / "d")
    wait_for(lambda: os.path.isdir(b / "d"), 20, "d on beta")
    seq = a.status()["device"]["seq"]
    os.mkfifo(a / "d" / "fifo")
    server = bind(a / "d" / "sock")
    try:
        if os.getuid() == 0:
            os.mknod(a / "d" / "null", 0o666 | stat.S_IFCHR, NULL)
        os.link(a / "d" / "fifo", a / "fifo-link")
        os.rename(a / "fifo-link", a / "d" / "fifo-moved")
        os.chmod(a / "d" / "fifo", 0o600)
        (a / "d" / "f").write_bytes(b"a file")
        wait_content(b / "d" / "f", b"a file")
        wait_for(lambda: settled(a, b), 20, "nothing pending")
        assert sorted(os.listdir(b / "d")) == ["f"]
        assert a.status()["device"]["seq"] == seq + 1  # the file: its create with its content
        assert a.status()["files"]["total"] == 1
        assert greet_through(server, a / "d" / "sock") == b"still here"
    finally:
        server.close()


def test_a_peers_file_takes_the_name_of_a_special_file_here(cluster):
    a, b = cluster(2)
    os.mkfifo(b / "pipe")
    server = bind(b / "sock")
    try:
        pipe_aside = aside(b, "pipe", b / "pipe")
        sock_aside = aside(b, "sock", b / "sock")
        (a / "sock").write_bytes(b"alpha's file")
        os.mkdir(a / "pipe")
        (a / "pipe" / "inner").write_bytes(b"inside")
        wait_content(b / "sock", b"alpha's file")
        wait_content(b / "pipe" / "inner", b"inside")
        assert sorted(os.listdir(b.path)) == sorted(["pipe", "sock", pipe_aside, sock_aside])
        assert stat.S_ISFIFO(os.lstat(b / pipe_aside).st_mode)
        # The same socket under its new name: its server still answers there.
        assert stat.S_ISSOCK(os.lstat(b / sock_aside).st_mode)
        assert greet_through(server, b / sock_aside) == b"still here"
        wait_for(lambda: settled(a, b), 20, "nothing pending")
        assert sorted(os.listdir(a.path)) == ["pipe", "sock"]  # nothing of it on alpha
        # beta's mount carries on: its own changes still reach alpha
        (b / "sock").write_bytes(b"beta's edit")
        wait_content(a / "sock", b"beta's edit")
    finally:
        server.close()


def test_a_directory_a_peer_deletes_goes_with_the_special_files_here(cluster):
    a, b = cluster(2)
    os.makedirs(a / "d" / "sub")
    (a / "d" / "f").write_bytes(b"seen by both")
    wait_content(b / "d" / "f", b"seen by both")
    os.mkfifo(b / "d" / "sub" / "fifo")
    server = bind(b / "d" / "sock")
    try:
        wait_for(lambda: settled(a, b), 20, "nothing pending")
        os.unlink(a / "d" / "f")
        os.rmdir(a / "d" / "sub")
        os.rmdir(a / "d")
        wait_gone(b / "d")
        wait_for(lambda: settled(a, b), 20, "nothing pending")
        assert os.listdir(a.path) == [] and os.listdir(b.path) == []  # nothing came back
        os.mkdir(b / "d")  # and the name is free again on beta
        wait_for(lambda: os.path.isdir(a / "d"), 20, "the new d on alpha")
    finally:
        server.close()
