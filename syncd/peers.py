"""`syncd peer ...`: the operator's view of the peers table (docs/cli.md).

The commands write index.db themselves, each change in one transaction; WAL mode lets them
do so while the serving process runs, and they then ask it to reload its peers.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Iterator

from syncd.home import STATE, USAGE, Home, UserError, utc
from syncd.index import schema

PEERS_SCHEMA = 1

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_URL = re.compile(r"http://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})/?")


def check_name(home: Home, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UserError(f"bad peer name {name!r}: 1 to 64 of A-Z a-z 0-9 . _ -", USAGE)
    if name == home.config()["name"]:
        raise UserError(f"{name!r} is this machine's own name", USAGE)
    return name


def check_url(url: str) -> str:
    """The URL as stored, without a trailing slash: http://HOST:PORT."""
    match = _URL.fullmatch(url)
    if not match or not 0 < int(match["port"]) < 65536:
        raise UserError(f"bad peer URL {url!r}: want http://HOST:PORT", USAGE)
    return url.rstrip("/")


def add(home: Home, name: str, url: str) -> None:
    try:
        with _db(home) as db:
            db.execute("INSERT INTO peers (name, url) VALUES (?, ?)", (name, url))
    except sqlite3.IntegrityError:
        raise UserError(f"there is already a peer named {name!r}; "
                        "'syncd peer remove' it first", STATE) from None


def remove(home: Home, name: str) -> None:
    with _db(home) as db:
        if not db.execute("DELETE FROM peers WHERE name = ?", (name,)).rowcount:
            raise UserError(f"no peer named {name!r}")


def set_use(home: Home, name: str, use: str) -> None:
    """use: "outofuse" (never contacted, catch-up kept) or "auto" (probed afresh)."""
    state = "outofuse" if use == "outofuse" else "unknown"
    with _db(home) as db:
        if not db.execute("UPDATE peers SET state = ? WHERE name = ?", (state, name)).rowcount:
            raise UserError(f"no peer named {name!r}")


def collect(home: Home) -> dict:
    db = schema.open_db(home.db_path, readonly=True)
    try:
        rows = db.conn.execute(
            "SELECT name, url, device, state, last_seen FROM peers ORDER BY name").fetchall()
    finally:
        db.close()
    return {"schema_version": PEERS_SCHEMA,
            "peers": [{"name": name, "url": url, "device": device, "state": state,
                       "last_seen": utc(seen)} for name, url, device, state, seen in rows]}


def print_peers(home: Home, as_json: bool) -> None:
    peers = collect(home)
    if as_json:
        print(json.dumps(peers, indent=2))
        return
    if not peers["peers"]:
        print("no peers: add one with 'syncd peer add NAME URL'")
        return
    rows = [("NAME", "URL", "STATE", "LAST SEEN", "DEVICE")]
    rows += [(p["name"], p["url"], p["state"], p["last_seen"] or "never", p["device"] or "-")
             for p in peers["peers"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)).rstrip())


@contextlib.contextmanager
def _db(home: Home) -> Iterator[sqlite3.Connection]:
    """The index, in one transaction: committed when the block ends, else rolled back."""
    db = schema.open_db(home.db_path)
    try:
        with db.conn:
            yield db.conn
    finally:
        db.close()
