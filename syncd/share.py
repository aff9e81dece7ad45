"""Commands about the share's content and its peers: serve, pin, unpin, fetch, conflicts,
wait (docs/cli.md). Those that act ask the serving process over the control socket; those
that only look read the index directly, read-only."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

from syncd.home import FAILURE, OK, STATE, UNREACHABLE, Home, UserError, mounted_at
from syncd.index.catalog import open_catalog
from syncd.index.peers import list_peers, pending_for
from syncd.paths import share_path

log = logging.getLogger("syncd")

FETCH_TIMEOUT = 7 * 24 * 3600.0  # a fetch that keeps moving may take long; stalls are bounded


def add_parsers(sub, common) -> None:
    p = sub.add_parser("serve", parents=[common],
                       help="run the daemon without a mount (an always-on machine)")
    p.add_argument("--mirror", action="store_true",
                   help="keep every file's content here, so peers always find a holder")
    for name, text in (("pin", "keep a subtree's content here, fetched ahead of time"),
                       ("unpin", "let a subtree's content be fetched on open again")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("path", metavar="PATH")
    p = sub.add_parser("fetch", parents=[common],
                       help="fetch and verify a subtree now; exit 0 only when all is here")
    p.add_argument("path", metavar="PATH", nargs="?", default=".")
    p = sub.add_parser("conflicts", parents=[common], help="list the conflict copies")
    p.add_argument("--json", action="store_true", help="one JSON object (docs/cli.md)")
    p = sub.add_parser("wait", parents=[common],
                       help="wait until peers have confirmed every change made here")
    p.add_argument("--peer", metavar="NAME", help="only this peer (default: every online one)")
    p.add_argument("--copies", type=int, default=1, metavar="N",
                   help="and the content of each change is held by N other machines "
                        "(default 1; 0: do not check content)")
    p.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds")


def cmd_serve(home: Home, args) -> int:
    home.require()
    from syncd.mount.run import serve_only  # trio and the daemon load only here

    holder = home.holder()
    if holder is not None:
        raise UserError(f"{home.path} is already served (pid {holder.pid})", STATE)
    log.info("serving %s without a mount%s", home.path, " (mirror)" if args.mirror else "")
    serve_only(home, args.mirror)
    return OK


def _ask(home: Home, op: str, timeout: float = 30.0, **request) -> dict:
    if home.holder() is None:
        raise UserError(f"{home.path} is not mounted or served: 'syncd mount' or "
                        "'syncd serve' first", STATE)
    from syncd import control

    answer = control.request(home, op, timeout=timeout, **request)
    if not answer.get("ok") and "files" not in answer:
        raise UserError(answer.get("error") or f"{op} failed")
    return answer


def _share_path(home: Home, arg: str) -> str:
    return share_path(home, arg, mounted_at(home)[0])


def cmd_pin(home: Home, args) -> int:
    """Ask the serving process; with none, write the index under the home's lock (the
    content is then fetched at the next mount or serve)."""
    home.require()
    path = _share_path(home, args.path)
    pin = args.command == "pin"
    if home.holder() is not None:
        _ask(home, "pin", path=path, pin=pin)
    else:
        home.acquire(None)
        try:
            with open_catalog(home.db_path, home.store_path) as cat:
                node = cat.node_at(path)
                if node is None:
                    raise UserError(f"no {path!r} in the share")
                cat.set_pin(node, pin)
        finally:
            home.release()
    print(f"{args.command}ned /{path}")
    return OK



def cmd_fetch(home: Home, args) -> int:
    home.require()
    path = _share_path(home, args.path)
    started = time.monotonic()
    answer = _with_progress(home, path, lambda: _ask(home, "fetch", timeout=FETCH_TIMEOUT,
                                                      path=path))
    took = time.monotonic() - started
    print(f"/{path}: {answer['files']} file(s), {answer['bytes']} bytes, here and verified"
          if answer["ok"] else f"/{path}: {len(answer['failed'])} of {answer['files']} "
          f"file(s) could not be fetched", f"({took:.1f} s; {answer['damaged']} damaged "
          "chunk(s) fetched again)")
    if not answer["ok"]:
        for name in answer["failed"]:
            print(f"  missing: {name}", file=sys.stderr)
        raise UserError(answer["error"], UNREACHABLE)
    return OK


def _with_progress(home: Home, path: str, work):
    """Run `work` on a thread and show, on a terminal, how much of the subtree's content is
    here, read from the index (the serving process does the fetching)."""
    from tqdm import tqdm

    outcome: dict = {}

    def run() -> None:
        try:
            outcome["answer"] = work()
        except BaseException as e:  # re-raised on the calling thread
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    total, here = _bytes_under(home, path)
    with tqdm(total=total, initial=here, unit="B", unit_scale=True, desc=f"/{path}",
              disable=not sys.stderr.isatty(), leave=False) as bar:
        while thread.is_alive():
            thread.join(0.25)
            bar.update(_bytes_under(home, path)[1] - bar.n)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["answer"]


def _bytes_under(home: Home, path: str) -> tuple[int, int]:
    """(content bytes, bytes held here) of the files under a share path."""
    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        node = cat.node_at(path)
        return (0, 0) if node is None else cat.bytes_under(node)


def cmd_conflicts(home: Home, args) -> int:
    home.require()
    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        rows = cat.conflicts()
    if args.json:
        print(json.dumps({"schema_version": 1, "conflicts": [
            {"path": p, "size": size, "mtime": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime // 10**9))}
            for p, size, mtime in rows]}, indent=2))
    elif rows:
        for path, _, _ in rows:
            print(path)
    else:
        print("no conflicts")
    return OK


def cmd_wait(home: Home, args) -> int:
    """Poll the index (read-only) until the peers' cursors cover every change made here
    up to now."""
    home.require()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    target = None
    while True:
        with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
            if target is None:
                target = cat.seq
            behind = _behind(cat.db, target, args.peer)
        if behind is None:
            raise UserError("no peer is reachable: nothing could confirm the changes",
                            UNREACHABLE)
        if not behind:
            print("every change made here has been confirmed"
                  + (f" by {args.peer}" if args.peer else " by every online peer"))
            return _wait_copies(home, args, target, deadline)
        if deadline is not None and time.monotonic() > deadline:
            report = ", ".join(f"{name} ({n} change(s), {size} bytes)"
                               for name, n, size in behind)
            raise UserError(f"timed out after {args.timeout:g} s; behind: {report}",
                            UNREACHABLE)
        time.sleep(0.1)


def _wait_copies(home: Home, args, target: int, deadline: float | None) -> int:
    if args.copies <= 0:
        return OK
    left = None if deadline is None else max(deadline - time.monotonic(), 0.1)
    if home.holder() is None:
        raise UserError(f"{home.path} is not mounted or served: nothing can ask peers to "
                        "hold copies", STATE)
    from syncd import control

    answer = control.request(home, "copies", timeout=(left or FETCH_TIMEOUT) + 10,
                             copies=args.copies, upto=target, seconds=left)
    if not answer.get("ok"):
        raise UserError(answer.get("error") or "copies failed", UNREACHABLE)
    print(f"the content is held by {answer['holders']} other machine(s)")
    return OK


def _behind(db, target: int, only: str | None) -> list[tuple] | None:
    """Peers yet to confirm changes up to `target`: [(name, changes, bytes)]; None when no
    peer that counts is online."""
    peers = list_peers(db)
    if only is not None:
        peers = [p for p in peers if p.name == only]
        if not peers:
            raise UserError(f"no peer named {only!r}", FAILURE)
    online = [p for p in peers if p.state == "online"]
    if not online:
        return None
    behind = []
    for peer in online:
        changes, size, _ = pending_for(db, peer, upto=target)
        if changes:
            behind.append((peer.name, changes, size))
    return behind


COMMANDS = {"serve": cmd_serve, "pin": cmd_pin, "unpin": cmd_pin, "fetch": cmd_fetch,
            "conflicts": cmd_conflicts, "wait": cmd_wait}
