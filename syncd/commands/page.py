"""`syncd ui [--metrics]`: the URL of the status page (or of its metrics) that the serving
process shows on loopback, with the home's access token (syncd/ui.py)."""

from __future__ import annotations

from urllib.parse import quote

from syncd import control
from syncd.home import OK, STATE, Home, UserError


def add_parsers(sub, common) -> None:
    p = sub.add_parser("ui", parents=[common],
                       help="print the status page's URL (with its access token)")
    p.add_argument("--metrics", action="store_true",
                   help="print the URL of the Prometheus metrics instead")


def cmd_ui(home: Home, args) -> int:
    home.require()
    if home.holder() is None:
        raise UserError(f"nothing serves {home.path}: the status page is served by 'syncd "
                        "mount' or 'syncd serve'", STATE)
    answer = control.request(home, "ui", timeout=5.0)
    if not answer.get("ok") or not answer.get("url"):
        raise UserError(f"the process serving {home.path} shows no status page: "
                        f"{answer.get('error') or 'not listening yet'}")
    path = "/metrics" if args.metrics else "/"
    print(f"{answer['url']}{path}?token={quote(home.ui_token())}")
    return OK


COMMANDS = {"ui": cmd_ui}
