"""`syncd peer ...`: the operator's view of the peers table (docs/cli.md).

The commands write index.db themselves, each change in one transaction; WAL mode lets them
do so while the serving process runs, and they then ask it to reload its peers.
"""

from __future__ import annotations

import json
import re

from syncd.home import STATE, USAGE, Home, UserError, utc
from syncd.index.catalog import open_catalog
from syncd.index.peers import (
    NoSuchPeer,
    PeerExists,
    add_peer,
    list_peers,
    remove_peer,
    set_peer_use,
)

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
        with open_catalog(home.db_path, home.store_path) as cat:
            add_peer(cat.db, name, url)
    except PeerExists:
        raise UserError(f"there is already a peer named {name!r}; "
                        "'syncd peer remove' it first", STATE) from None


def remove(home: Home, name: str) -> None:
    try:
        with open_catalog(home.db_path, home.store_path) as cat:
            remove_peer(cat.db, name)
    except NoSuchPeer:
        raise UserError(f"no peer named {name!r}") from None


def set_use(home: Home, name: str, use: str) -> None:
    """use: "outofuse" (never contacted, catch-up kept) or "auto" (probed afresh)."""
    try:
        with open_catalog(home.db_path, home.store_path) as cat:
            set_peer_use(cat.db, name, use)
    except NoSuchPeer:
        raise UserError(f"no peer named {name!r}") from None


def collect(home: Home) -> dict:
    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        peers = list_peers(cat.db)
    return {"schema_version": PEERS_SCHEMA,
            "peers": [{"name": p.name, "url": p.url, "device": p.device, "state": p.state,
                       "last_seen": utc(p.last_seen)} for p in peers]}


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
