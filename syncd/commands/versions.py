"""`syncd versions` and `syncd restore`: old versions of a file, kept a while
(index/versions.py). The list is read from the index directly (read-only); a restore is
made by the serving process when one owns the home (its mount shows it at once, and
peers receive it as a change), else here under the home's lock."""

from __future__ import annotations

import json
import os
import time

from syncd import control
from syncd.commands.history import parse_time
from syncd.commands.table import print_table
from syncd.home import OK, STATE, USAGE, Home, UserError, mounted_at, utc
from syncd.index.catalog import open_catalog
from syncd.index.peers import list_peers
from syncd.index.versions import (
    RestoreError,
    Version,
    check_restorable,
    choose,
    keep_versions,
    restore,
    versions_of,
)
from syncd.paths import share_path

VERSIONS_SCHEMA = 1


def add_parsers(sub, common) -> None:
    p = sub.add_parser("versions", parents=[common],
                       help="list the kept old versions of a file, replaced or deleted")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--json", action="store_true", help="one JSON object (docs/cli.md)")
    p = sub.add_parser("restore", parents=[common],
                       help="bring an old version of a file back as a new version")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--at", metavar="TIME",
                   help="the version current at TIME: 2h, 3d, 1w ago, or ISO 8601 (UTC "
                        "unless it says); default: the newest kept")
    p.add_argument("--to", metavar="NEWPATH",
                   help="restore to this new path (which must not exist) instead")


def _json(v: Version) -> dict:
    return {"time": utc(v.mtime_ns // 10**9), "size": v.size, "device": v.device,
            "hash": v.hash, "replaced": utc(v.replaced), "path": v.path}


def cmd_versions(home: Home, args) -> int:
    home.require()
    path = share_path(home, args.path, mounted_at(home)[0])
    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        found = versions_of(cat, path)
        names = {p.device: p.name for p in list_peers(cat.db) if p.device}
        names[cat.device] = "(this machine)"
    if args.json:
        print(json.dumps({"schema_version": VERSIONS_SCHEMA, "path": path,
                          "versions": [_json(v) for v in found]}, indent=2))
        return OK
    if not found:
        print(f"no kept version of /{path}")
        return OK
    rows = [("TIME", "SIZE", "DEVICE", "REPLACED", "WAS AT")]
    for v in found:
        rows.append((utc(v.mtime_ns // 10**9), str(v.size),
                     names.get(v.device) or (v.device or "?")[:7], utc(v.replaced),
                     f"/{v.path}"))
    print_table(rows)
    return OK


def cmd_restore(home: Home, args) -> int:
    home.require()
    mountpoint = mounted_at(home)[0]
    path = share_path(home, args.path, mountpoint)
    to = share_path(home, args.to, mountpoint) if args.to is not None else None
    at = parse_time(args.at, time.time()) if args.at is not None else None
    if not path or to == "":
        raise UserError("restore wants a file's path, not the share's root", USAGE)
    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        if to is not None and cat.node_at(to) is not None:
            raise UserError(f"/{to} exists: give --to a path that does not", STATE)
        try:
            choose(cat, path, at)
        except RestoreError as e:
            raise UserError(str(e)) from None
    if home.holder() is not None:
        answer = control.request(home, "restore", timeout=600.0, path=path, to=to, at=at,
                                 uid=os.getuid(), gid=os.getgid())
        if not answer.get("ok"):
            raise UserError(answer.get("error") or "restore failed")
        version = Version(**answer["version"])
    else:
        version = _restore_here(home, path, at, to)
    print(f"restored /{path} as of {utc(version.mtime_ns // 10**9)} ({version.size} bytes)"
          + (f" to /{to}" if to is not None else ""))
    return OK


def _restore_here(home: Home, path: str, at: int | None, to: str | None) -> Version:
    """Nothing serves the home: restore under its lock, with content held here only."""
    home.acquire(None)
    try:
        with open_catalog(home.db_path, home.store_path) as cat:
            cat.mode = home.config()["mode"]  # receive-only: the restore stays here
            keep_versions(cat)  # what it replaces is kept in turn
            try:
                version = choose(cat, path, at)
                if check_restorable(cat, version):
                    raise RestoreError(
                        "the content of that version is not here: mount or serve the home "
                        "so that it can be fetched from a peer")
                effects = restore(cat, version, to, os.getuid(), os.getgid())
            except (RestoreError, OSError) as e:
                raise UserError(str(e)) from None
            cat.retire(cat.purge_inodes(list(effects.orphans)))  # no kernel knows them
        return version
    finally:
        home.release()


COMMANDS = {"versions": cmd_versions, "restore": cmd_restore}
