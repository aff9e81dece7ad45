"""A real WebDAV server for the tests: Debian's Apache (package apache2-bin) with mod_dav_fs,
on 127.0.0.1, over a given directory, with basic auth.

Apache rather than wsgidav: mod_dav_fs writes a PUT to a temporary file and renames it
(wsgidav 4.4 writes in place, so a reader or a cut upload sees part of an object), answers
507 when the disk is full (wsgidav has no mapping of ENOSPC to 507), and listens 0.03 s
after it is started (wsgidav's command: 0.4 s).

As root, Apache serves as www-data: the directory is given to www-data and its parents
made traversable."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port

APACHE = "/usr/sbin/apache2"
MODULES = "/usr/lib/apache2/modules"
_MODULES = ("mpm_event", "authn_core", "authn_file", "authz_core", "authz_user",
            "auth_basic", "alias", "dav", "dav_fs")


@dataclass
class WebDAVServer:
    url: str  # of the collection over the directory, without credentials
    port: int
    directory: Path
    error_log: Path

    def log(self) -> str:
        return self.error_log.read_text(errors="replace")


def _serve_as_www_data(directory: Path, state: Path) -> list[str]:
    """Config lines and ownership so that Apache, started as root, can serve `directory`."""
    if os.geteuid() != 0:
        return []  # Apache serves as the user who started it
    shutil.chown(state, "www-data", "www-data")
    for dirpath, _dirs, files in os.walk(directory):
        for name in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
            shutil.chown(name, "www-data", "www-data")
    for parent in directory.resolve().parents:
        os.chmod(parent, os.stat(parent).st_mode | 0o001)  # o+x: traverse, not list
    return ["User www-data", "Group www-data"]


@contextlib.contextmanager
def webdav_server(directory: Path, user: str = "relay", password: str = "secret"
                  ) -> Iterator[WebDAVServer]:
    """Serve `directory` at http://127.0.0.1:PORT/dav/ to `user`:`password` until the block
    ends (the server is stopped even when it fails)."""
    if not os.path.exists(APACHE):
        raise RuntimeError(f"{APACHE} not found: install Debian's apache2-bin "
                           "(packaging/bootstrap.sh does)")
    port = free_port()
    run = Path(tempfile.mkdtemp(prefix="syncd-webdav-"))
    try:
        os.chmod(run, 0o755)
        state = run / "state"  # the lock database, written by the serving user
        state.mkdir()
        sha = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
        (run / "htpasswd").write_text(f"{user}:{{SHA}}{sha}\n")
        conf = [
            f"ServerRoot {run}", "ServerName 127.0.0.1", f"Listen 127.0.0.1:{port}",
            f"PidFile {run}/httpd.pid", f"ErrorLog {run}/error.log", f"Mutex file:{run}",
            *(f"LoadModule {m}_module {MODULES}/mod_{m}.so" for m in _MODULES),
            *_serve_as_www_data(directory, state),
            f"DavLockDB {state}/lock", f"Alias /dav {directory}",
            f"<Directory {directory}>", "Dav On", "AuthType Basic", "AuthName relay",
            f"AuthUserFile {run}/htpasswd", "Require valid-user", "</Directory>",
        ]
        (run / "httpd.conf").write_text("\n".join(conf) + "\n")
        server = WebDAVServer(f"http://127.0.0.1:{port}/dav/", port, directory,
                              run / "error.log")
        proc = subprocess.Popen([APACHE, "-f", str(run / "httpd.conf"), "-DFOREGROUND"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_listening(port, proc, run)
            yield server
        finally:
            proc.send_signal(signal.SIGTERM)  # the parent stops its children
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stderr.close()
    finally:
        shutil.rmtree(run, ignore_errors=True)


def _wait_listening(port: int, proc: subprocess.Popen, run: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (run / "error.log").read_text() if (run / "error.log").exists() else ""
            raise RuntimeError(f"apache2 exited {proc.returncode}: "
                               f"{proc.stderr.read().decode()}{log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"apache2 did not listen on port {port} within 10 s")
