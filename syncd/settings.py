"""A home's settings, HOME/config.json (docs/cli.md, "Settings"): one table of keys, each
with how its value is checked, its default, what it means, and whether a running mount or
server takes a change at once ("live") or at its next start.

A value is checked the same way whether it comes from the command line (a string) or from
the file (JSON), and stored in its canonical JSON form, so `config.json` stays readable and
hand edits are checked too (a bad one fails the next start, naming the key).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass

from syncd.index.catalog import MODES, SEND_RECEIVE

_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
               "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40}
_SIZE = re.compile(r"\s*([0-9]+)\s*([A-Za-z]*)\s*")


def size(value: object) -> int:
    """Bytes: an integer, or a string such as `262144`, `256KiB`, `12MiB`, `1G`."""
    if isinstance(value, bool):
        raise ValueError("want a size in bytes, such as 262144 or 256KiB")
    if isinstance(value, int):
        number, unit = value, ""
    else:
        match = _SIZE.fullmatch(str(value))
        if not match or match[2].lower() not in _SIZE_UNITS:
            raise ValueError("want a size in bytes, such as 262144 or 256KiB "
                             "(units: KiB, MiB, GiB, TiB)")
        number, unit = int(match[1]), match[2].lower()
    if number < 0:
        raise ValueError("a size cannot be negative")
    return number * _SIZE_UNITS[unit]


def _number(value: object, unit: str, example: str) -> float:
    """An int, a float or a string of one (not a bool), as a float."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"want a number of {unit}, such as {example}") from None


def seconds(value: object) -> float:
    """Seconds, 0 to a day (a kernel cache longer than that only hides changes)."""
    number = _number(value, "seconds", "60 or 0.5")
    if not 0 <= number <= 86400:  # also refuses nan and inf
        raise ValueError("want seconds from 0 to 86400")
    return number


def address(value: object) -> str:
    """HOST:PORT, the port 1 to 65535 (IPv6 hosts in brackets)."""
    host, _, port = str(value).rpartition(":")
    if not isinstance(value, str) or not host or not port.isdigit() or \
            not 0 < int(port) < 65536:
        raise ValueError("want HOST:PORT, such as 127.0.0.1:7700")
    return value


def loopback_address(value: object) -> str:
    """HOST:PORT on a loopback address (the status page is plain HTTP with a token in its
    URL: it stays on this machine); port 0 takes a free one at each start."""
    host, _, port = str(value).rpartition(":")
    try:
        loopback = ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        loopback = False
    if not isinstance(value, str) or not loopback or not port.isdigit() or \
            not 0 <= int(port) < 65536 or (":" in host and not host.startswith("[")):
        raise ValueError("want LOOPBACK-IP:PORT, such as 127.0.0.1:0 (port 0: a free one) "
                         "or [::1]:8080")
    return value


def days(value: object) -> float:
    """Days, above 0 and below a million."""
    number = _number(value, "days", "30 or 0.5")
    if not 0 < number < 1e6:  # also refuses nan and inf
        raise ValueError("want days above 0 and below a million")
    return number


_SHARE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*%\s*")


def size_or_share(value: object) -> int | str:
    """Bytes as `size` takes them, or a share of the disk, such as `10%` (kept as that
    text: the disk's size is read where it applies, by_disk)."""
    match = _SHARE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        try:
            return size(value)
        except ValueError:
            raise ValueError("want a size such as 12MiB or 20GiB, or a share of the disk "
                             "such as 10%") from None
    share = float(match[1])
    if share > 100:
        raise ValueError("a share of the disk is at most 100%")
    return f"{share:g}%"


def cache_limit(value: object) -> int | str:
    """`none` (no limit), or a size_or_share value."""
    if isinstance(value, str) and value.strip().lower() == "none":
        return "none"
    try:
        return size_or_share(value)
    except ValueError:
        raise ValueError("want none, a size such as 12MiB or 20GiB, or a share of the disk "
                         "such as 20%") from None


def copies(value: object) -> int:
    """A number of other machines, 1 to 100 (0 would let a last copy go)."""
    try:
        if isinstance(value, bool) or float(value) != int(value):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("want a whole number of copies, such as 1 or 2") from None
    if not 1 <= number <= 100:
        raise ValueError("want 1 to 100 copies (a last copy is never evicted)")
    return number


def by_disk(value: int | str, total: int) -> int:
    """A size_or_share value in bytes, on a disk of `total` bytes."""
    return value if isinstance(value, int) else int(total * float(value[:-1]) / 100)


def on_disk_of(path: str | os.PathLike, value: int | str) -> int:
    """A size_or_share value in bytes, on the disk that holds `path`."""
    st = os.statvfs(path)
    return by_disk(value, st.f_blocks * st.f_frsize)


def sync_mode(value: object) -> str:
    """One of MODES."""
    if value not in MODES:
        raise ValueError(f"want one of {', '.join(MODES)}")
    return value


def boolean(value: object) -> bool:
    """true or false (as JSON has them, or as text)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError("want true or false")


_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def device_name(value: object) -> str:
    """This machine's name in every hello: what the peer API accepts there (syncd/api.py,
    Hello), 1 to 64 of A-Z a-z 0-9 . _ -."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError("want 1 to 64 of A-Z a-z 0-9 . _ - (what peers accept in a hello)")
    return value


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[object], object]  # a string or JSON value -> its canonical value;
                                       # ValueError saying what is wanted
    default: object                    # None: computed (default_of)
    meaning: str
    live: bool                         # a running mount or server applies it at once


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("name", device_name, None,
            "this machine's name, sent to peers in every hello (default: the host name)",
            live=False),
    Setting("listen", address, "127.0.0.1:7700",
            "HOST:PORT where the serving process listens for peers", live=False),
    Setting("attr_timeout", seconds, 60.0,
            "seconds the kernel may cache names and attributes (a safety net: peers' "
            "changes are invalidated explicitly); applies to replies from then on",
            live=True),
    Setting("prefetch_below", size, 256 * 1024,
            "files smaller than this are fetched as soon as a peer announces them, not at "
            "their first open (0: none)", live=True),
    Setting("log_keep_days", days, 30,
            "days of history `syncd log` shows; older journal rows are pruned hourly, but "
            "for what sync needs", live=True),
    Setting("ui_listen", loopback_address, "127.0.0.1:0",
            "HOST:PORT on loopback where the status page and /metrics are served (port 0: "
            "a free one at each start; `syncd ui` prints the URL)", live=False),
    Setting("versions_keep_days", days, 30,
            "days an old version of a file (replaced or deleted, here or by a peer) is kept "
            "for `syncd restore`", live=True),
    Setting("versions_max", size_or_share, "10%",
            "the most the old versions may take, oldest dropped first: a size such as 20GiB "
            "or a share of the home's disk such as 10%", live=True),
    Setting("cache_limit", cache_limit, "none",
            "the most the content fetched or written here may take in the store: a size such "
            "as 20GiB or a share of the home's disk such as 20%; beyond it the least recently "
            "used files that enough peers hold are evicted, and fetched again on open "
            "(none: no limit)", live=True),
    Setting("min_copies", copies, 1,
            "how many other machines must hold a chunk before the cache evicts it here, and "
            "`syncd wait --copies`'s default", live=True),
    Setting("discovery", boolean, True,
            "announce this home on the LAN (mDNS, when it listens beyond loopback) and look "
            "for its peers there; `syncd peer discover` lists the homes heard", live=False),
    Setting("mode", sync_mode, SEND_RECEIVE,
            "send-receive; receive-only: changes made here stay here and the group's "
            "always win (`syncd revert`); send-only: the group's are held back "
            "(`syncd override`)", live=True),
    Setting("relay_member_days", days, 30,
            "days after which a relay member that has not read a relay is lost: its "
            "batches are no longer kept for it (it starts from the snapshots when back)",
            live=True),
    Setting("tombstone_keep_days", days, 30,
            "days a delete is remembered after every peer and relay member has it (and "
            "while `syncd log` shows it); then its record goes. Under 10 minutes a push "
            "built before a peer had the delete could bring the file back", live=True),
)}

DEFAULTS = {s.name: s.default for s in SETTINGS.values() if s.default is not None}


def default_of(name: str) -> object:
    if name == "name":
        return socket.gethostname()
    return SETTINGS[name].default


class SettingError(ValueError):
    """An unknown key or a bad value; the message names the key."""


def check(name: str, value: object) -> object:
    """The canonical value of setting `name`, or SettingError naming it."""
    setting = SETTINGS.get(name)
    if setting is None:
        raise SettingError(f"unknown setting {name!r} (known: {', '.join(SETTINGS)})")
    try:
        return setting.parse(value)
    except ValueError as e:
        raise SettingError(f"bad value {value!r} for {name!r}: {e}") from None


def resolve(stored: dict) -> dict:
    """Every setting's value: what `stored` (config.json) holds, checked, or its default.
    Keys the table does not know are kept as they are (a newer syncd may have written
    them)."""
    values = {name: default_of(name) for name in SETTINGS}
    for name, value in stored.items():
        values[name] = check(name, value) if name in SETTINGS else value
    return values


class Live:
    """How a running process applies a changed setting: each part that can registers a
    function for the keys it uses (serving.py, daemon.py)."""

    def __init__(self) -> None:
        self._appliers: dict[str, list[Callable[[object], None]]] = {}

    def on(self, name: str, apply: Callable[[object], None]) -> None:
        assert SETTINGS[name].live, f"{name} is not a live setting"
        self._appliers.setdefault(name, []).append(apply)

    def apply(self, name: str, value: object) -> bool:
        """Apply a checked value; True when some part of this process took it."""
        value = check(name, value)
        for apply in self._appliers.get(name, []):
            apply(value)
        return bool(self._appliers.get(name))
