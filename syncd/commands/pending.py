"""`syncd pending NAME`: the files waiting for one peer, read from the index directly
(read-only), offline peers included (docs/cli.md)."""

from __future__ import annotations

import json

from syncd.commands.status import human_size, live_peers
from syncd.commands.table import print_table
from syncd.home import OK, Home, UserError, utc
from syncd.index.catalog import open_catalog
from syncd.index.peers import list_peers, waiting_for

PENDING_SCHEMA = 1


def collect(home: Home, name: str) -> dict:
    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        peer = next((p for p in list_peers(cat.db) if p.name == name), None)
        if peer is None:
            raise UserError(f"no peer named {name!r}: 'syncd peer list' shows them")
        waiting = waiting_for(cat.db, peer)
    state = (live_peers(home) or {}).get(name, {}).get("state", peer.state)
    return {"schema_version": PENDING_SCHEMA, "peer": name, "state": state,
            "changes": len(waiting), "bytes": sum(w.size for w in waiting),
            "pending": [{"path": w.path, "kind": w.kind, "change": w.change, "size": w.size,
                         "since": utc(w.since)} for w in waiting]}


def print_pending(home: Home, name: str, as_json: bool) -> None:
    s = collect(home, name)
    if as_json:
        print(json.dumps(s, indent=2))
        return
    if not s["pending"]:
        print(f"nothing waits for {name}")
        return
    print(f"{name} ({s['state']}): {s['changes']} change(s), {human_size(s['bytes'])}")
    table = [("CHANGE", "KIND", "SIZE", "SINCE", "PATH")]
    table += [(w["change"], w["kind"], human_size(w["size"]), w["since"], w["path"])
              for w in s["pending"]]
    print_table(table)


def add_parsers(sub, common) -> None:
    p = sub.add_parser("pending", parents=[common],
                       help="list the files waiting for a peer")
    p.add_argument("name", metavar="NAME", help="the peer")
    p.add_argument("--json", action="store_true", help="one JSON object (docs/cli.md)")


def cmd_pending(home: Home, args) -> int:
    home.require()
    print_pending(home, args.name, as_json=args.json)
    return OK


COMMANDS = {"pending": cmd_pending}
