"""`syncd mode [MODE]`, `syncd revert [PATH]` and `syncd override [PATH]` (docs/cli.md,
"Receive-only and send-only machines").

The mode is the setting `mode` (syncd/settings.py): `syncd mode MODE` is `syncd config set
mode MODE` under a friendlier name, applied at once to a running mount or server. A revert
and an override are made by the serving process: a revert asks the peers for the group's
state of what was changed here, and an override sends its result at once. With nothing
serving, there is nobody to ask or to send to, so they say so."""

from __future__ import annotations

from syncd import control
from syncd.commands.config import set_setting
from syncd.home import OK, STATE, UNREACHABLE, USAGE, Home, UserError, mounted_at
from syncd.index.catalog import MODES, RECEIVE_ONLY, SEND_ONLY, open_catalog
from syncd.paths import share_path


def add_parsers(sub, common) -> None:
    p = sub.add_parser("mode", parents=[common],
                       help="show or change whether this machine sends, receives or both")
    p.add_argument("mode", nargs="?", metavar="MODE", help=", ".join(MODES))
    p = sub.add_parser("revert", parents=[common],
                       help="receive-only: throw away what was made or changed here")
    p.add_argument("path", nargs="?", default="", metavar="PATH",
                   help="only here and below (default: the whole share)")
    p = sub.add_parser("override", parents=[common],
                       help="send-only: make this machine's versions win over the group's")
    p.add_argument("path", nargs="?", default="", metavar="PATH",
                   help="only here and below (default: the whole share)")


def cmd_mode(home: Home, args) -> int:
    home.require()
    if args.mode is None:
        print(home.config()["mode"])
        return OK
    return set_setting(home, "mode", args.mode)


def cmd_revert(home: Home, args) -> int:
    answer = _ask(home, args.path, "revert", RECEIVE_ONLY)
    print(f"/{answer['path']}: {answer['reverted']} local edit(s) and copies thrown away; "
          "it is the group's again")
    return OK


def cmd_override(home: Home, args) -> int:
    answer = _ask(home, args.path, "override", SEND_ONLY)
    print(f"/{answer['path']}: {answer['overridden']} held back version(s) overridden; "
          "this machine's go to every peer")
    return OK


def _ask(home: Home, arg: str, op: str, mode: str) -> dict:
    """Check what can be checked here, then have the serving process do `op`."""
    home.require()
    now = home.config()["mode"]
    if now != mode:
        raise UserError(f"this machine is {now}: {op} is for a {mode} one (syncd mode "
                        f"{mode})", USAGE)
    path = share_path(home, arg, mounted_at(home)[0])
    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        if cat.node_at(path) is None:
            raise UserError(f"/{path} is not in the share here", USAGE)
    if home.holder() is None:
        raise UserError(f"nothing serves {home.path}: {op} needs its mount or server "
                        "running (syncd mount, syncd serve)", UNREACHABLE)
    answer = control.request(home, op, timeout=600.0, path=path)
    if not answer.get("ok"):
        raise UserError(answer.get("error") or f"{op} failed",
                        UNREACHABLE if answer.get("unreachable") else STATE)
    return {**answer, "path": path}


COMMANDS = {"mode": cmd_mode, "revert": cmd_revert, "override": cmd_override}
