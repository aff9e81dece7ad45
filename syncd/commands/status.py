"""`syncd status`: read the index directly (read-only), whether or not the mount runs."""

from __future__ import annotations

import json

from syncd.home import OK, Home, UserError, mounted_at, utc
from syncd.index.catalog import open_catalog
from syncd.index.peers import list_peers, pending_for

STATUS_SCHEMA = 1


def collect(home: Home) -> dict:
    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        device, seq = cat.device, cat.seq
        files = cat.file_counts()
        dirty = len(cat.store.dirty_inodes())
        replaced_chunks, replaced_bytes = map(
            sum, zip(cat.store.retired_usage(), cat.inline.usage(), strict=True))
        peers = []
        for p in list_peers(cat.db):
            changes, waiting, oldest = pending_for(cat.db, p)
            peers.append({"name": p.name, "url": p.url, "device": p.device, "state": p.state,
                          "last_seen": utc(p.last_seen), "pending_changes": changes,
                          "pending_bytes": waiting, "oldest_pending": utc(oldest),
                          "last_error": p.last_error})
    where, pid = mounted_at(home)
    transfers = _transfers(home) if pid is not None else None
    return {
        "schema_version": STATUS_SCHEMA,
        "device": {"id": device, "name": home.config()["name"], "seq": seq},
        "mounted_at": where,
        "pid": pid,
        "files": {"total": files.total, "local": files.local,
                  "missing": files.total - files.local, "pinned": files.pinned,
                  "conflicts": files.conflicts, "bytes": files.bytes,
                  "bytes_local": files.bytes_local},
        "dirty": dirty,
        "replaced": {"chunks": replaced_chunks, "bytes": replaced_bytes},
        "peers": peers,
        "transfers": transfers,
    }


def _transfers(home: Home) -> dict | None:
    """Fetches in flight, asked of the serving process (null when it does not answer)."""
    from syncd import control

    try:
        answer = control.request(home, "transfers", timeout=2.0)
    except UserError:
        return None
    if not answer.get("ok"):
        return None
    return {"fetching": answer.get("fetching", []), "arriving": answer.get("arriving", []),
            "prefetching": answer.get("prefetching", 0)}


def _arriving(streams: list[dict]) -> str:
    if not streams:
        return ""
    return (f" ({sum(s['chunks_here'] for s in streams)} of "
            f"{sum(s['chunks'] for s in streams)} chunk(s) here)")


def print_status(home: Home, as_json: bool) -> None:
    s = collect(home)
    if as_json:
        print(json.dumps(s, indent=2))
        return
    f = s["files"]
    rows = [
        ("home", str(home.path)),
        ("device", f"{s['device']['name']} ({s['device']['id']}), seq {s['device']['seq']}"),
        ("mounted", f"{s['mounted_at']} (pid {s['pid']})" if s["mounted_at"] else
         (f"no (served by pid {s['pid']})" if s["pid"] else "no")),
        ("files", f"{f['total']} ({_size(f['bytes'])}): {f['local']} local, "
                  f"{f['missing']} missing, {f['pinned']} pinned, {f['conflicts']} conflicts"),
        ("uncommitted", f"{s['dirty']} file(s) open for writing or awaiting recovery"),
        ("replaced", f"{s['replaced']['chunks']} chunk(s) ({_size(s['replaced']['bytes'])})"
                     " of replaced versions kept for peers"),
        ("transfers", "-" if s["transfers"] is None else
         f"{len(s['transfers']['fetching'])} file(s) being fetched on open"
         f"{_arriving(s['transfers']['arriving'])}, "
         f"{s['transfers']['prefetching']} small file(s) ahead of time"),
        ("peers", "none" if not s["peers"] else f"{len(s['peers'])}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if s["peers"]:
        print()
        table = [("PEER", "STATE", "LAST SEEN", "PENDING", "BYTES", "OLDEST PENDING")]
        for p in s["peers"]:
            table.append((p["name"], p["state"], p["last_seen"] or "never",
                          str(p["pending_changes"]), _size(p["pending_bytes"]),
                          p["oldest_pending"] or "-"))
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        for r in table:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def add_parsers(sub, common) -> None:
    p = sub.add_parser("status", parents=[common], help="show this machine's state")
    p.add_argument("--json", action="store_true", help="one JSON object (docs/cli.md)")


def cmd_status(home: Home, args) -> int:
    home.require()
    print_status(home, as_json=args.json)
    return OK


COMMANDS = {"status": cmd_status}
