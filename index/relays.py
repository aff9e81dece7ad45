"""Relay records: the relays table and what was read from each (docs/protocol.md,
"Relays"). The operator's commands add and remove relays; the serving process records
what it learns of each (state, cursor, last exchange, last error, bytes stored) and, per
member writing there, the certificate it published and up to which stamp its batches
were applied here."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from syncd.index.peers import Peer, Pending, pending_for

if TYPE_CHECKING:  # annotations only (schema.ReadOnly says why)
    import sqlite_utils

SAVED_COLUMNS = frozenset({"state", "cursor", "last_seen", "last_error", "stored_bytes"})


class RelayExists(Exception):
    """A relay of that name is already in the table."""


class NoSuchRelay(LookupError):
    """No relay of that name is in the table."""


@dataclass
class Relay:
    name: str
    url: str
    credentials: str | None  # the file of `relay add --credentials`
    state: str  # unknown, online, unreachable or failing
    cursor: int  # our sequence number up to which our states are stored there (rule 5)
    last_seen: int | None  # unix seconds of the last complete exchange
    last_error: str | None
    stored_bytes: int  # this device's objects there, as last counted


def add_relay(db: sqlite_utils.Database, name: str, url: str,
              credentials: str | None = None) -> None:
    """RelayExists when the name is taken."""
    try:
        with db.atomic():
            db.conn.execute("INSERT INTO relays (name, url, credentials) VALUES (?, ?, ?)",
                            (name, url, credentials))
    except sqlite3.IntegrityError:
        raise RelayExists(name) from None


def remove_relay(db: sqlite_utils.Database, name: str) -> None:
    """Forget a relay and what was read from it; NoSuchRelay when there is none."""
    with db.atomic():
        if not db.conn.execute("DELETE FROM relays WHERE name = ?", (name,)).rowcount:
            raise NoSuchRelay(name)
        db.conn.execute("DELETE FROM relay_reads WHERE relay = ?", (name,))


def list_relays(db: sqlite_utils.Database) -> list[Relay]:
    """Every relay, by name."""
    return [Relay(*row) for row in db.conn.execute(
        "SELECT name, url, credentials, state, cursor, last_seen, last_error, stored_bytes"
        " FROM relays ORDER BY name")]


def save_relay(db: sqlite_utils.Database, name: str, **columns) -> None:
    """Record what the serving process learnt of a relay (SAVED_COLUMNS only)."""
    if not columns or not set(columns) <= SAVED_COLUMNS:
        raise ValueError(f"cannot save {sorted(columns)} of a relay")
    with db.atomic():
        db.conn.execute(
            f"UPDATE relays SET {', '.join(f'{c} = ?' for c in columns)} WHERE name = ?",
            (*columns.values(), name))


def pending_to(db: sqlite_utils.Database, relay: Relay, upto: int | None = None) -> Pending:
    """What is not on the relay yet: the nodes stamped here after its cursor."""
    return pending_for(db, Peer(relay.name, relay.url, None, relay.state, relay.cursor,
                                relay.last_seen, relay.last_error), upto)


def members(db: sqlite_utils.Database, relay: str) -> dict[str, tuple[str, int]]:
    """device -> (pinned certificate fingerprint, stamp up to which its batches were
    applied here) of each member read on the relay."""
    return {device: (fingerprint, upto) for device, fingerprint, upto in db.conn.execute(
        "SELECT device, fingerprint, upto FROM relay_reads WHERE relay = ?", (relay,))}


def pin_member(db: sqlite_utils.Database, relay: str, device: str, fingerprint: str) -> None:
    """The certificate a member published, as first read there (later ones must match)."""
    with db.atomic():
        db.conn.execute("INSERT OR IGNORE INTO relay_reads (relay, device, fingerprint)"
                        " VALUES (?, ?, ?)", (relay, device, fingerprint))


def consumed(db: sqlite_utils.Database, relay: str, device: str, upto: int) -> None:
    """A member's batches up to its stamp `upto` are applied here."""
    with db.atomic():
        db.conn.execute("UPDATE relay_reads SET upto = ? WHERE relay = ? AND device = ?",
                        (upto, relay, device))


def member_read(db: sqlite_utils.Database, relay: str, device: str, ours: int, wrote: int,
                snapshot: int, lost: bool) -> None:
    """What a member's cursor object said: up to which of our stamps it read our batches
    (`ours`) and its newest snapshot did (`snapshot`), with the stamp of its newest batch
    listed after that (`wrote`), and whether it is lost (relay_member_days). Tombstone
    collection reads them (index/tombstones.py)."""
    with db.atomic():
        db.conn.execute("UPDATE relay_reads SET ours = ?, wrote = ?, snapshot = ?, lost = ?"
                        " WHERE relay = ? AND device = ?",
                        (ours, wrote, snapshot, int(lost), relay, device))


def forget_member(db: sqlite_utils.Database, relay: str, tag_of,
                  tags: set[str]) -> str | None:
    """The member of `relay` whose tag (`tag_of(device)`) is among `tags` is no longer
    waited for here (`syncd relay forget`): lost, as after relay_member_days, until it
    reads the relay again. Its tag; None when no member read here has one of them."""
    with db.atomic():
        for (device,) in db.conn.execute("SELECT device FROM relay_reads WHERE relay = ?",
                                         (relay,)).fetchall():
            if tag_of(device) in tags:
                db.conn.execute("UPDATE relay_reads SET lost = 1 WHERE relay = ? AND "
                                "device = ?", (relay, device))
                return tag_of(device)
    return None
