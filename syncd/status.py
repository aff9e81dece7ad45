"""`syncd status`: read the index directly (read-only), whether or not the mount runs."""

from __future__ import annotations

import json

from syncd.home import Home, UserError, mounted_at, utc
from syncd.index import schema
from syncd.index.store import ChunkStore
from syncd.index.sync import pending

STATUS_SCHEMA = 1

FILE_COUNTS = """
WITH RECURSIVE pinned (id) AS (
    SELECT id FROM nodes WHERE pinned = 1 AND deleted = 0
    UNION SELECT n.id FROM nodes n JOIN pinned p ON n.parent = p.id WHERE n.deleted = 0
)
SELECT
    count(*),
    coalesce(sum(i.local), 0),
    coalesce(sum(n.id IN (SELECT id FROM pinned)), 0),
    coalesce(sum(n.conflict_of IS NOT NULL), 0),
    coalesce(sum(i.size), 0),
    coalesce(sum(i.size * i.local), 0)
FROM nodes n JOIN inodes i ON i.ino = n.ino
WHERE n.kind = 'file' AND n.deleted = 0
"""


def collect(home: Home) -> dict:
    db = schema.open_db(home.db_path, readonly=True)
    try:
        meta = dict(db.conn.execute("SELECT key, value FROM meta"))
        meta["seq"] = db.conn.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()[0]
        total, local, pinned, conflicts, size, size_local = db.conn.execute(
            FILE_COUNTS).fetchone()
        store = ChunkStore(home.store_path)
        dirty = len(store.dirty_inodes())
        replaced_chunks, replaced_bytes = store.retired_usage()
        peers = []
        for name, url, device, state, cursor, last_seen, error in db.conn.execute(
                "SELECT name, url, device, state, cursor, last_seen, last_error FROM peers "
                "ORDER BY name"):
            changes, waiting, oldest = pending(db.conn, cursor, device)
            peers.append({"name": name, "url": url, "device": device, "state": state,
                          "last_seen": utc(last_seen), "pending_changes": changes,
                          "pending_bytes": waiting, "oldest_pending": utc(oldest),
                          "last_error": error})
    finally:
        db.close()
    where, pid = mounted_at(home)
    transfers = _transfers(home) if pid is not None else None
    return {
        "schema_version": STATUS_SCHEMA,
        "device": {"id": meta["device_id"], "name": home.config()["name"],
                   "seq": int(meta["seq"])},
        "mounted_at": where,
        "pid": pid,
        "files": {"total": total, "local": local, "missing": total - local,
                  "pinned": pinned, "conflicts": conflicts, "bytes": size,
                  "bytes_local": size_local},
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
    return {"fetching": answer.get("fetching", []), "prefetching": answer.get("prefetching", 0)}


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
         f"{len(s['transfers']['fetching'])} file(s) being fetched on open, "
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
