"""Commands about the share's content: pin, unpin, fetch, conflicts (docs/cli.md). Those
that act ask the serving process over the control socket; those that only look read the
index directly, read-only."""

from __future__ import annotations

import json
import sys
import threading
import time

from syncd import control
from syncd.home import OK, STATE, UNREACHABLE, Home, UserError, mounted_at
from syncd.index.catalog import open_catalog
from syncd.paths import share_path

FETCH_TIMEOUT = 7 * 24 * 3600.0  # a fetch that keeps moving may take long; stalls are bounded


def add_parsers(sub, common) -> None:
    for name, text in (("pin", "keep a subtree's content here, fetched ahead of time"),
                       ("unpin", "let a subtree's content be fetched on open again")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("path", metavar="PATH")
    p = sub.add_parser("fetch", parents=[common],
                       help="fetch and verify a subtree now; exit 0 only when all is here")
    p.add_argument("path", metavar="PATH", nargs="?", default=".")
    p = sub.add_parser("conflicts", parents=[common],
                       help="list the conflict copies and a receive-only machine's local edits")
    p.add_argument("--json", action="store_true", help="one JSON object (docs/cli.md)")


def _ask(home: Home, op: str, timeout: float = 30.0, **request) -> dict:
    if home.holder() is None:
        raise UserError(f"{home.path} is not mounted or served: 'syncd mount' or "
                        "'syncd serve' first", STATE)
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
        local = cat.local_edits()
    if args.json:
        print(json.dumps({"schema_version": 1, "conflicts": [
            {"path": p, "size": size, "mtime": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime // 10**9))}
            for p, size, mtime in rows],
            "local": [{"path": p, "what": what} for p, what in local]}, indent=2))
        return OK
    for path, _, _ in rows:
        print(path)
    for path, what in local:
        print(f"{path}  (local: {what})")
    if not rows and not local:
        print("no conflicts")
    return OK


COMMANDS = {"pin": cmd_pin, "unpin": cmd_pin, "fetch": cmd_fetch, "conflicts": cmd_conflicts}
