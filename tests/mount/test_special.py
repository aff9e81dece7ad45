"""Special files through the kernel: FIFOs, UNIX sockets and device nodes are made, listed,
stated, renamed, linked, chmodded, chowned and removed like any inode, are served by the
kernel once made (two processes talk through a FIFO, clients reach a socket), survive a
remount, and stay local: the sequence number never moves for them."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess

import pytest

from tests.conftest import needs_fuse
from tests.helpers import status

pytestmark = needs_fuse

root_only = pytest.mark.skipif(os.getuid() != 0, reason="device nodes need CAP_MKNOD")
NULL = os.makedev(1, 3)
WIDE = os.makedev(259, 70000)  # a minor beyond 8 bits: the kernel's split encoding


def kind_of(path) -> str:
    mode = os.lstat(path).st_mode
    for name in ("FIFO", "SOCK", "CHR", "BLK", "REG"):
        if getattr(stat, f"S_IS{name}")(mode):
            return name
    return "other"


def bind(path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen()
    return s


def serve_once(server: socket.socket, greeting: bytes) -> None:
    conn, _ = server.accept()
    with conn:
        conn.sendall(greeting)


@root_only
def test_each_kind_is_made_with_its_type_and_device_number_and_survives_a_remount(mount):
    m = mount.path
    seq = status(mount.home)["device"]["seq"]
    (m / "d").mkdir()
    os.mkfifo(m / "d" / "fifo", 0o640)
    os.mknod(m / "d" / "null", 0o666 | stat.S_IFCHR, NULL)
    os.mknod(m / "d" / "wide", 0o660 | stat.S_IFBLK, WIDE)
    bind(m / "d" / "sock").close()
    os.mknod(m / "d" / "reg", 0o600 | stat.S_IFREG)  # mknod(2) makes regular files too
    expected = {"fifo": ("FIFO", 0o640, 0), "null": ("CHR", 0o644, NULL),
                "wide": ("BLK", 0o640, WIDE), "sock": ("SOCK", 0o755, 0),
                "reg": ("REG", 0o600, 0)}  # modes minus the umask (022)

    def seen() -> dict:
        return {name: (kind_of(m / "d" / name), stat.S_IMODE(os.lstat(m / "d" / name).st_mode),
                       os.lstat(m / "d" / name).st_rdev)
                for name in os.listdir(m / "d")}

    assert seen() == expected
    mount.stop()
    mount.start()
    assert seen() == expected
    after = status(mount.home)
    # the directory and the regular file are changes to send; the special files are not
    assert after["device"]["seq"] == seq + 2
    assert after["files"]["total"] == 1


def test_special_files_are_renamed_linked_chmodded_chowned_and_removed(mount):
    m = mount.path
    os.mkfifo(m / "p")
    bind(m / "s").close()
    os.link(m / "p", m / "q")
    assert os.lstat(m / "p").st_nlink == 2 and os.lstat(m / "p").st_ino == os.lstat(m / "q").st_ino
    (m / "d").mkdir()
    os.rename(m / "q", m / "d" / "q")
    os.rename(m / "s", m / "d" / "s")
    os.chmod(m / "d" / "q", 0o600)
    os.chown(m / "d" / "s", 1234, 5678)
    os.utime(m / "d" / "q", ns=(10**18, 10**18))
    assert stat.S_IMODE(os.lstat(m / "p").st_mode) == 0o600
    assert os.lstat(m / "p").st_mtime_ns == 10**18
    assert (os.lstat(m / "d" / "s").st_uid, os.lstat(m / "d" / "s").st_gid) == (1234, 5678)
    (m / "f").write_bytes(b"a file")
    os.rename(m / "f", m / "d" / "s")  # over a socket
    assert (m / "d" / "s").read_bytes() == b"a file"
    os.rename(m / "p", m / "d" / "s")  # a FIFO over a file
    assert kind_of(m / "d" / "s") == "FIFO"
    with pytest.raises(OSError) as e:
        os.rmdir(m / "d")
    assert e.value.errno == errno.ENOTEMPTY
    os.unlink(m / "d" / "s")
    os.unlink(m / "d" / "q")
    os.rmdir(m / "d")
    assert os.listdir(m) == []


def test_two_processes_talk_through_a_fifo(mount, tmp_path):
    fifo = mount.path / "pipe"
    os.mkfifo(fifo)
    data = os.urandom(1 << 20)  # more than a pipe holds: the two take turns
    (tmp_path / "in").write_bytes(data)
    reader = subprocess.Popen(["sh", "-c", f"cat {fifo} > {tmp_path / 'out'}"])
    writer = subprocess.Popen(["sh", "-c", f"cat {tmp_path / 'in'} > {fifo}"])
    try:
        assert (writer.wait(30), reader.wait(30)) == (0, 0)
    finally:
        for p in (reader, writer):
            p.kill()
            p.wait()
    assert (tmp_path / "out").read_bytes() == data
    assert kind_of(fifo) == "FIFO" and os.lstat(fifo).st_size == 0


def test_a_unix_socket_in_the_mount_serves_clients_under_any_of_its_names(mount):
    m = mount.path
    server = bind(m / "sock")
    try:
        client = subprocess.Popen(
            ["python3", "-c", "import socket, sys; c = socket.socket(socket.AF_UNIX);"
             f" c.connect({str(m / 'sock')!r}); sys.stdout.buffer.write(c.recv(16))"],
            stdout=subprocess.PIPE)
        serve_once(server, b"hello")
        assert client.communicate(timeout=30)[0] == b"hello"
        os.rename(m / "sock", m / "moved")
        os.link(m / "moved", m / "second")
        for name in ("moved", "second"):
            assert ping_while_serving(server, m / name) == b"hello"
        os.unlink(m / "moved")
        os.unlink(m / "second")
    finally:
        server.close()
    assert os.listdir(m) == []


def ping_while_serving(server: socket.socket, path) -> bytes:
    """A client and the server in one process: the connect completes in the backlog."""
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(10)
        c.connect(str(path))
        serve_once(server, b"hello")
        return c.recv(16)


@root_only
def test_a_device_node_cannot_be_opened_on_the_nodev_mount(mount):
    os.mknod(mount.path / "null", 0o666 | stat.S_IFCHR, NULL)
    with pytest.raises(PermissionError):
        os.open(mount.path / "null", os.O_RDONLY)
