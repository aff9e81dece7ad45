"""`syncd mode [MODE]` and `syncd override [PATH]` (docs/cli.md, "Send-only machines").

The mode is the setting `mode` (syncd/settings.py): `syncd mode MODE` is `syncd config set
mode MODE` under a friendlier name, applied at once to a running mount or server. An
override is made by the serving process, which holds the peers' states it stamps over
and sends the result at once; with nothing serving, there is nothing held back to
override and nobody to send to, so it says so."""

from __future__ import annotations

from syncd import settings
from syncd.commands.config import set_setting
from syncd.home import OK, STATE, UNREACHABLE, USAGE, Home, UserError, mounted_at
from syncd.index.catalog import open_catalog
from syncd.paths import share_path


def add_parsers(sub, common) -> None:
    p = sub.add_parser("mode", parents=[common],
                       help="show or change whether this machine sends, receives or both")
    p.add_argument("mode", nargs="?", metavar="MODE", help=", ".join(settings.MODES))
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


def cmd_override(home: Home, args) -> int:
    home.require()
    mode = home.config()["mode"]
    if mode != settings.SEND_ONLY:
        raise UserError(f"this machine is {mode}: override is for a send-only one "
                        "(syncd mode send-only)", USAGE)
    mountpoint, pid = mounted_at(home)
    path = share_path(home, args.path, mountpoint)
    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        if cat.node_at(path) is None:
            raise UserError(f"/{path} is not in the share here", USAGE)
    if home.holder() is None:
        raise UserError(f"nothing serves {home.path}: override needs its mount or server "
                        "running (syncd mount, syncd serve)", UNREACHABLE)
    from syncd import control  # trio loads only when something is served

    answer = control.request(home, "override", timeout=600.0, path=path)
    if not answer.get("ok"):
        raise UserError(answer.get("error") or "override failed", STATE)
    print(f"/{path}: {answer['overridden']} held back version(s) overridden; this "
          "machine's win on every peer")
    return OK


COMMANDS = {"mode": cmd_mode, "override": cmd_override}
