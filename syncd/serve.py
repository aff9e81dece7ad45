"""`syncd serve`: run the daemon without a mount, on a machine that is always on
(docs/cli.md)."""

from __future__ import annotations

import logging

from syncd.home import OK, STATE, Home, UserError

log = logging.getLogger("syncd")


def add_parsers(sub, common) -> None:
    p = sub.add_parser("serve", parents=[common],
                       help="run the daemon without a mount (an always-on machine)")
    p.add_argument("--mirror", action="store_true",
                   help="keep every file's content here, so peers always find a holder")


def cmd_serve(home: Home, args) -> int:
    home.require()
    from syncd.serving import serve_only  # trio and the daemon load only here

    holder = home.holder()
    if holder is not None:
        raise UserError(f"{home.path} is already served (pid {holder.pid})", STATE)
    log.info("serving %s without a mount%s", home.path, " (mirror)" if args.mirror else "")
    serve_only(home, args.mirror)
    return OK


COMMANDS = {"serve": cmd_serve}
