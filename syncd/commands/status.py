"""`syncd status`: read the index directly (read-only), whether or not the mount runs."""

from __future__ import annotations

import json
import os

from syncd import control
from syncd.commands.table import print_table
from syncd.home import OK, Home, UserError, mounted_at, utc
from syncd.index import tombstones, versions
from syncd.index.cache import chunk_bytes
from syncd.index.catalog import Catalog, open_catalog
from syncd.index.merge import Merger
from syncd.index.peers import list_peers, pending_for
from syncd.index.relays import list_relays, pending_to
from syncd.settings import by_disk

STATUS_SCHEMA = 1


def collect(home: Home) -> dict:
    where, pid = mounted_at(home)
    live = live_peers(home) if pid is not None else None
    relays = (_ask(home, "relays") or {}).get("relays") if live is not None else None
    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        found = gather(home, cat, where, pid, live, live_relays=relays)
    found["transfers"] = _transfers(home) if live is not None else None
    rounds = _ask(home, "cache") if live is not None else None
    if rounds is not None:
        found["cache"] |= {"rounds": rounds["rounds"], "in_round": rounds["in_round"]}
    return found


def gather(home: Home, cat: Catalog, where: str | None, pid: int | None,
           live: dict[str, dict] | None, transfers: dict | None = None,
           cache: dict | None = None, live_relays: dict[str, dict] | None = None) -> dict:
    """The status from an open catalog: this command's (read-only) or the serving
    process's own (its status page). `live` is each peer's state as the serving process
    sees it, by name (the control op "peers"); `transfers` what it is fetching; `cache`
    the cache's use as its evictor last measured it (else measured here, on the disk);
    `live_relays` each relay as the serving process sees it (the control op "relays")."""
    files = cat.file_counts()
    local_only = cat.local_only_files()
    refused = cat.refused_rules()
    dirty = len(cat.store.dirty_inodes())
    replaced_chunks, replaced_bytes = map(
        sum, zip(cat.store.retired_usage(), cat.inline.usage(), strict=True))
    kept, kept_bytes = versions.usage(cat)
    peers = []
    for p in list_peers(cat.db):
        changes, waiting, oldest = pending_for(cat.db, p)
        now = (live or {}).get(p.name, {})
        peers.append({"name": p.name, "url": now.get("url", p.url),
                      "addresses": now.get("addresses", p.addresses),
                      "discovered": now.get("discovered", []), "device": p.device,
                      "fingerprint": p.fingerprint, "pinned": p.cert is not None,
                      "state": now.get("state", p.state),
                      "last_seen": utc(now.get("last_seen", p.last_seen)),
                      "pending_changes": changes, "pending_bytes": waiting,
                      "oldest_pending": utc(oldest),
                      "last_error": now.get("last_error", p.last_error)})
    relays = []
    for r in list_relays(cat.db):
        now = (live_relays or {}).get(r.name, {})
        r.cursor = max(r.cursor, now.get("cursor", 0))
        changes, waiting, oldest = pending_to(cat.db, r)
        relays.append({"name": r.name, "url": r.url, "state": now.get("state", r.state),
                       "last_seen": utc(now.get("last_seen", r.last_seen)),
                       "pending_changes": changes, "pending_bytes": waiting,
                       "oldest_pending": utc(oldest),
                       "stored_bytes": now.get("stored_bytes", r.stored_bytes),
                       "last_error": now.get("last_error", r.last_error),
                       "kept_for": now.get("kept_for")})
    return {
        "schema_version": STATUS_SCHEMA,
        "device": {"id": cat.device, "name": home.config()["name"], "seq": cat.seq},
        "mounted_at": where,
        "pid": pid,
        "files": {"total": files.total, "local": files.local,
                  "missing": files.total - files.local, "pinned": files.pinned,
                  "conflicts": files.conflicts, "bytes": files.bytes,
                  "bytes_local": files.bytes_local, "local_only": local_only},
        "mode": home.config()["mode"],
        "behind": Merger(cat).behind(),
        "local_edits": len(cat.edits_here()),
        "ignore_refused": refused,
        "dirty": dirty,
        "replaced": {"chunks": replaced_chunks, "bytes": replaced_bytes},
        "versions": {"count": kept, "bytes": kept_bytes},
        "tombstones": {"kept": tombstones.kept(cat.conn),
                       "held_by": tombstones.held_by(cat.conn, cat.device)},
        "peers": peers,
        "relays": relays,
        "transfers": transfers,
        "cache": cache if cache is not None else _cache(home, cat),
    }


def _cache(home: Home, cat: Catalog) -> dict:
    """The bytes of content in the store against cache_limit (docs/cli.md, "The cache").
    Measuring them is a stat per chunk: done only when there is a limit to measure them
    against, so that status costs nothing that grows with the share by default."""
    config = home.config()
    used = limit = None
    if config["cache_limit"] != "none":
        used = chunk_bytes(cat.store.root)
        st = os.statvfs(cat.store.root)
        limit = by_disk(config["cache_limit"], st.f_blocks * st.f_frsize)
    return {"bytes": used, "limit": limit, "setting": config["cache_limit"],
            "min_copies": config["min_copies"], "over": limit is not None and used > limit,
            "rounds": None, "in_round": False}  # nothing runs rounds


def _cache_line(c: dict) -> str:
    used = "-" if c["bytes"] is None else human_size(c["bytes"])
    if c["limit"] is None:
        return "no limit (cache_limit)"
    line = f"{used} of {human_size(c['limit'])} (cache_limit {c['setting']})"
    if c["over"]:
        line += (": over the limit; the rest is open, pinned, uncommitted or held by fewer"
                 f" than {c['min_copies']} other machine(s)")
    return line


def _ask(home: Home, op: str) -> dict | None:
    """The serving process's answer to `op`; None when it does not answer."""
    try:
        answer = control.request(home, op, timeout=2.0)
    except UserError:
        return None
    return answer if answer.get("ok") else None


def live_peers(home: Home) -> dict[str, dict] | None:
    """Each peer's state, last answer and last error as the serving process sees them
    now, by name; None when nothing serving the home answers. The index has the state
    as of its last change, and the last answer as of the last push or keep-alive."""
    answer = _ask(home, "peers") if home.holder() is not None else None
    return None if answer is None else answer.get("peers", {})


def _transfers(home: Home) -> dict | None:
    """Fetches in flight, asked of the serving process (null when it does not answer)."""
    answer = _ask(home, "transfers")
    if answer is None:
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
        ("files", f"{f['total']} ({human_size(f['bytes'])}): {f['local']} local, "
                  f"{f['missing']} missing, {f['pinned']} pinned, {f['conflicts']} conflicts, "
                  f"{f['local_only']} local-only"),
        ("mode", s["mode"] + (f", behind the group by {s['behind']} change(s) held back"
                              " ('syncd override' or 'syncd mode send-receive')"
                              if s["behind"] else "")
         + (f", {s['local_edits']} local edit(s) and copies ('syncd conflicts', "
            "'syncd revert')" if s["local_edits"] else "")),
        *[("ignore rules", f"refused: {why}") for why in s["ignore_refused"]],
        ("uncommitted", f"{s['dirty']} file(s) open for writing or awaiting recovery"),
        ("replaced", f"{s['replaced']['chunks']} chunk(s) ({human_size(s['replaced']['bytes'])})"
                     " of replaced versions kept for peers"),
        ("versions", f"{s['versions']['count']} old version(s) of files kept "
                     f"({human_size(s['versions']['bytes'])}): 'syncd versions PATH'"),
        ("tombstones", f"{s['tombstones']['kept']} delete(s) remembered for peers"
                       + (f", held back by {', '.join(s['tombstones']['held_by'])}"
                          if s["tombstones"]["held_by"] else "")),
        ("transfers", "-" if s["transfers"] is None else
         f"{len(s['transfers']['fetching'])} file(s) being fetched on open"
         f"{_arriving(s['transfers']['arriving'])}, "
         f"{s['transfers']['prefetching']} small file(s) ahead of time"),
        ("cache", _cache_line(s["cache"])),
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
                          str(p["pending_changes"]), human_size(p["pending_bytes"]),
                          p["oldest_pending"] or "-"))
        print_table(table)
        reasons = [f"{p['name']}: {why_not_online(p)}" for p in s["peers"]
                   if p["state"] != "online"]
        if reasons:
            print()
            print("\n".join(reasons))
    if s["relays"]:
        print()
        table = [("RELAY", "STATE", "LAST EXCHANGE", "PENDING", "BYTES", "OLDEST PENDING",
                  "STORED")]
        for r in s["relays"]:
            table.append((r["name"], r["state"], r["last_seen"] or "never",
                          str(r["pending_changes"]), human_size(r["pending_bytes"]),
                          r["oldest_pending"] or "-", human_size(r["stored_bytes"])))
        print_table(table)
        reasons = [f"{r['name']}: {r['last_error']}" for r in s["relays"] if r["last_error"]]
        reasons += [f"{r['name']}: {k['error']}" for r in s["relays"]
                    for k in r["kept_for"] or () if k["error"] != r["last_error"]]
        if reasons:
            print()
            print("\n".join(reasons))


def why_not_online(peer: dict) -> str:
    """What the text status says under its table of a peer that is not online: for one
    offline, its last_error."""
    if peer["state"] == "outofuse":
        return (f"out of use: not contacted ('syncd peer set {peer['name']} auto' to use it"
                " again)")
    if peer["state"] == "offline":
        return peer["last_error"] or "did not answer"
    return "not contacted yet"


def human_size(n: int) -> str:
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
