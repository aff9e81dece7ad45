"""A home: one machine's membership in one share (docs/cli.md, "The home").

Who serves a home is known from a POSIX record lock on HOME/lock, held for the life of the
serving process, never from a stored flag: a crash releases the lock, and F_GETLK tells the
holder's pid without taking the lock (so `status` never races a starting mount).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from syncd import auth, settings
from syncd.index import schema
from syncd.index.store import ChunkStore

if TYPE_CHECKING:
    from syncd import identity

# Exit codes (docs/cli.md)
OK, FAILURE, USAGE, NO_HOME, STATE, UNREACHABLE = 0, 1, 2, 3, 4, 5

DEFAULT_CONFIG = settings.DEFAULTS  # and "name", the host name unless given
_FLOCK = "hhqqi"  # struct flock on Linux: type, whence, start, len, pid


class UserError(Exception):
    """An error a user can act on: one line, an exit code, no traceback."""

    def __init__(self, message: str, code: int = FAILURE):
        super().__init__(message)
        self.code = code


def default_home() -> Path:
    env = os.environ.get("SYNCD_HOME")
    if env:
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "syncd"


FUSE_CONNECTIONS = "/sys/fs/fuse/connections"  # fusectl: one directory per FUSE mount


@dataclass
class Holder:
    pid: int
    mountpoint: str | None


class Home:
    def __init__(self, path: Path):
        self.path = Path(os.path.abspath(path))
        self.db_path = self.path / "index.db"
        self.store_path = self.path / "store"
        self.lock_path = self.path / "lock"
        self.config_path = self.path / "config.json"
        self.log_path = self.path / "mount.log"
        self.key_path = self.path / "cluster.key"
        self.old_keys_path = self.path / "cluster.key.old"  # replaced keys, newest first
        self.identity_path = self.path / "device.pem"  # key pair and certificate
        self.control_path = self.path / "control.sock"
        self.ui_token_path = self.path / "ui.token"
        self._lock_fd: int | None = None

    def exists(self) -> bool:
        return self.db_path.exists()

    def require(self) -> Home:
        if not self.exists():
            raise UserError(
                f"no syncd home at {self.path}: run 'syncd init' first "
                "(or pass --home / set SYNCD_HOME)", NO_HOME)
        return self

    @classmethod
    def init(cls, path: Path, name: str | None, listen: str | None,
             key: bytes | None = None) -> Home:
        """Create a home; with key None, it starts a new cluster with a new key."""
        home = cls(path)
        if home.exists() or home.config_path.exists():
            raise UserError(f"{home.path} is already a syncd home; not touching it", STATE)
        home.path.mkdir(parents=True, exist_ok=True)
        config = dict(DEFAULT_CONFIG, name=name or socket.gethostname())
        if listen:
            config["listen"] = listen
        ChunkStore.create(home.store_path)
        tmp = home.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=2) + "\n")
        os.rename(tmp, home.config_path)
        _write_private(home.key_path, (auth.new_key() if key is None else key).hex() + "\n")
        device = secrets.token_hex(16)
        home.device_identity(device)
        # The index last: its existence is what makes this a home.
        db = schema.create(home.db_path.with_suffix(".new"), device,
                           os.getuid(), os.getgid(), time.time_ns())
        db.close()
        os.rename(home.db_path.with_suffix(".new"), home.db_path)
        return home

    def config(self) -> dict:
        """Every setting (syncd/settings.py), from config.json or its default; a bad value
        in the file is an error that names the file and the key."""
        try:
            return settings.resolve(self._stored_config())
        except settings.SettingError as e:
            raise UserError(f"{self.config_path}: {e}") from None

    def _stored_config(self) -> dict:
        try:
            stored = json.loads(self.config_path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise UserError(f"{self.config_path} is not valid JSON: {e}") from None
        if not isinstance(stored, dict):
            raise UserError(f"{self.config_path} is not a JSON object")
        return stored

    def set_config(self, key: str, value: object) -> object:
        """Check a setting's new value and write it to config.json (atomically: a
        temporary file renamed over it, under a lock on the home, so two commands at once
        both count); returns the value as stored. SettingError changes nothing."""
        value = settings.check(key, value)
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            stored = self._stored_config()
            stored[key] = value
            tmp = self.config_path.with_name(f".{self.config_path.name}.tmp")
            tmp.write_text(json.dumps(stored, indent=2) + "\n")
            os.rename(tmp, self.config_path)
        finally:
            os.close(fd)  # releases the lock
        return value

    def log_keep_days(self) -> float:
        """How many days `syncd log` keeps (config key log_keep_days)."""
        return float(self.config()["log_keep_days"])

    def ui_token(self) -> str:
        """The status page's access token (HOME/ui.token, mode 0600), made at the first
        start that serves the page and kept, so its URL stays the same across restarts."""
        try:
            token = self.ui_token_path.read_text().strip()
        except FileNotFoundError:
            token = ""
        if not token:
            token = secrets.token_urlsafe(32)
            _write_private(self.ui_token_path, token + "\n")
        return token

    def cluster_key(self) -> bytes:
        try:
            return auth.parse_key(self.key_path.read_text())
        except FileNotFoundError:
            raise UserError(f"{self.key_path} is missing: write the cluster's key there (64 hex "
                            "digits, mode 0600; 'syncd cluster-key' prints it on a peer)"
                            ) from None
        except OSError as e:
            raise UserError(f"cannot read {self.key_path}: {e.strerror}") from None
        except ValueError as e:
            raise UserError(f"{self.key_path} is malformed: {e}") from None

    def device_identity(self, device: str) -> identity.Identity:
        """This home's key pair and certificate, made when it has none (a home made
        before identities: its first start after the upgrade). cryptography loads here,
        not with the home: most commands never need it."""
        from syncd import identity

        try:
            return identity.ensure(self.identity_path, device)
        except identity.IdentityError as e:
            raise UserError(f"{e} (move it away and start again to make a new one; "
                            "its peers then pin the new one only after 'syncd peer remove' "
                            "and 'syncd peer add' there)") from None

    def set_cluster_key(self, key: bytes) -> None:
        """Take a new key; the one it replaces goes first in HOME/cluster.key.old, where
        relays still read what it sealed (syncd/relay/sealing.py)."""
        try:
            earlier = [self.cluster_key(), *self.old_cluster_keys()]
        except UserError:
            earlier = []
        earlier = [k for k in dict.fromkeys(earlier) if k != key]
        _write_private(self.old_keys_path, "".join(k.hex() + "\n" for k in earlier))
        _write_private(self.key_path, key.hex() + "\n")

    def old_cluster_keys(self) -> list[bytes]:
        """The keys the cluster key replaced, newest first (relays read with them)."""
        try:
            lines = self.old_keys_path.read_text().split()
        except FileNotFoundError:
            return []
        return [auth.parse_key(line) for line in lines]

    # -- the lock

    def acquire(self, mountpoint: str | None) -> None:
        """Become the process that serves this home, or fail with exit code 4."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = self.holder()
            where = f", mounted at {holder.mountpoint}" if holder and holder.mountpoint else ""
            pid = f" (pid {holder.pid}{where})" if holder else ""
            raise UserError(f"{self.path} is already served by another process{pid}",
                            STATE) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "mountpoint": mountpoint}).encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)
            self._lock_fd = None

    def holder(self) -> Holder | None:
        """The live process serving this home, if any (F_GETLK: takes no lock)."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
            kind, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
            if kind == fcntl.F_UNLCK:
                return None
            try:
                recorded = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                recorded = {}
            return Holder(pid, recorded.get("mountpoint"))
        finally:
            os.close(fd)

    def end_stuck_holder(self, timeout: float = 10.0) -> bool:
        """A serving process that was killed (kill -9, the OOM killer) while a thread of
        its was invalidating a kernel cache entry cannot exit: that thread waits for a
        directory that a request in flight to this very process holds, and the request
        waits for an answer that will never come. Its main thread is a zombie; the home
        stays locked and a shell on the mount hangs. Aborting the mount's FUSE connection
        ends that request, so the process can exit. True when it did."""
        holder = self.holder()
        if holder is None or holder.mountpoint is None or not _is_zombie(holder.pid):
            return False
        device = mount_table("device").get(holder.mountpoint, "")
        abort = f"{FUSE_CONNECTIONS}/{device.partition(':')[2]}/abort"
        if not os.path.exists(abort) and os.getuid() == 0:
            subprocess.run(["mount", "-t", "fusectl", "fusectl", FUSE_CONNECTIONS],
                           capture_output=True, check=False)
        try:
            with open(abort, "w") as f:
                f.write("1")
        except OSError:
            return False
        deadline = time.monotonic() + timeout
        while self.holder() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.holder() is None

    def last_mountpoint(self) -> str | None:
        """Where the lock file says this home was last mounted (even by a dead process)."""
        try:
            return json.loads(self.lock_path.read_text() or "{}").get("mountpoint")
        except (FileNotFoundError, ValueError):
            return None


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a crash, perhaps with another mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with open(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(fd)
    os.rename(tmp, path)


def utc(seconds: int | None) -> str | None:
    """A time as every JSON output gives it (docs/cli.md, "JSON")."""
    return None if seconds is None else time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                       time.gmtime(seconds))


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return False


def mount_table(field: str = "type") -> dict[str, str]:
    """Mount point -> file system type (or "device", major:minor), from the kernel's table
    of this mount namespace."""
    table = {}
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            value = fields[2] if field == "device" else fields[fields.index(b"-") + 1]
            table[_unescape(fields[4])] = _unescape(value)
    return table


def _unescape(field: bytes) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), field)
    return raw.decode("utf-8", "surrogateescape")


def mounted_at(home: Home) -> tuple[str | None, int | None]:
    """(mount point, pid) of the home's live mount, or (None, pid-or-None)."""
    holder = home.holder()
    if holder is None:
        return None, None
    if holder.mountpoint and mount_table().get(holder.mountpoint) == "fuse.syncd":
        return holder.mountpoint, holder.pid
    return None, holder.pid
