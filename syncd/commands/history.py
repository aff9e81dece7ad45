"""`syncd log`: what arrived from whom, what was sent to whom and confirmed, conflict copies,
files dropped, recovered or restored, read from the index directly (read-only) whether or
not the home is served (docs/cli.md; index/history.py)."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

from syncd.commands.table import print_table
from syncd.home import OK, USAGE, Home, UserError, utc
from syncd.index.catalog import open_catalog
from syncd.index.history import Event, history
from syncd.index.peers import list_peers

LOG_SCHEMA = 1
_AGE = re.compile(r"(?P<n>[0-9]+)(?P<unit>[smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: float) -> int:
    """A TIME as `--since` takes it (docs/cli.md): an age (`30m`, `2h`, `3d`) before now,
    or an ISO 8601 date or time, UTC unless it says otherwise. Unix seconds."""
    if age := _AGE.fullmatch(text.strip()):
        return int(now) - int(age["n"]) * _UNITS[age["unit"]]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserError(f"bad time {text!r}: want an age such as 30m, 2h, 3d or 1w, or an "
                        "ISO 8601 time such as 2026-12-05T07:00:00Z or 2026-12-05", USAGE
                        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def collect(home: Home, peer: str | None, since: str | None) -> dict:
    now = time.time()
    kept = int(now - home.log_keep_days() * 86400)
    start = max(kept, parse_time(since, now)) if since else kept
    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        peers = list_peers(cat.db)
        wanted = next((p for p in peers if p.name == peer), None)
        if peer is not None and wanted is None:
            raise UserError(f"no peer named {peer!r}: 'syncd peer list' shows them")
        events = history(cat.db, start, peers)
    if wanted is not None:
        events = [e for e in events if e.peer == wanted.name
                  or (wanted.device is not None and e.device == wanted.device)]
    return {"schema_version": LOG_SCHEMA, "since": utc(start), "peer": peer,
            "events": [event_json(e) for e in events]}


def event_json(e: Event) -> dict:
    return {"time": utc(e.at), "event": e.event, "peer": e.peer, "device": e.device,
            "path": e.path, "kind": e.kind, "change": e.change, "of": e.of}


def _line(e: dict) -> tuple[str, ...]:
    who = e["peer"] or (e["device"][:7] if e["device"] else "-")
    what = {"arrived": f"from {who}", "sent": f"to {who}, confirmed"}.get(
        e["event"], "" if e["peer"] is None and e["device"] is None else f"with {who}")
    path = e["path"] or "?"
    if e["of"]:
        path += f" (copy of {e['of']})"
    return e["time"], e["event"], what or "-", e["change"] or "-", path


def print_log(home: Home, peer: str | None, since: str | None, as_json: bool) -> None:
    s = collect(home, peer, since)
    if as_json:
        print(json.dumps(s, indent=2))
        return
    if not s["events"]:
        print(f"nothing in the log since {s['since']}" + (f" with {peer}" if peer else ""))
        return
    table = [("TIME", "EVENT", "PEER", "CHANGE", "PATH")] + [_line(e) for e in s["events"]]
    print_table(table)


def add_parsers(sub, common) -> None:
    p = sub.add_parser("log", parents=[common],
                       help="what arrived, what was sent, conflicts, with times")
    p.add_argument("--peer", metavar="NAME", help="only what concerns this peer")
    p.add_argument("--since", metavar="TIME",
                   help="from this time: 2h, 3d, 1w ago, or ISO 8601 (UTC unless it says)")
    p.add_argument("--json", action="store_true", help="one JSON object (docs/cli.md)")


def cmd_log(home: Home, args) -> int:
    home.require()
    print_log(home, args.peer, args.since, as_json=args.json)
    return OK


COMMANDS = {"log": cmd_log}
