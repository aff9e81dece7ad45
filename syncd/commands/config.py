"""`syncd config [get [KEY] | set KEY VALUE]`: the home's settings (docs/cli.md, "syncd
config"; the keys are the table in syncd/settings.py).

`set` checks the value, writes config.json, then tells the process serving the home, if
any, over the control socket: a live setting applies there at once, any other at its next
start, and the output says which.
"""

from __future__ import annotations

import argparse
import json
import sys

from syncd import control, settings
from syncd.home import OK, USAGE, Home, UserError

CONFIG_SCHEMA = 1


def add_parsers(sub, common) -> None:
    p = sub.add_parser("config", parents=[common], help="show or change the home's settings")
    p.add_argument("--json", action="store_true", help="one JSON object (docs/cli.md)")
    config = p.add_subparsers(dest="config_command", metavar="CONFIG_COMMAND")
    g = config.add_parser("get", parents=[common], help="show one setting, or all")
    g.add_argument("key", nargs="?", metavar="KEY")
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="one JSON object (docs/cli.md)")
    s = config.add_parser("set", parents=[common], help="change a setting")
    s.add_argument("key", metavar="KEY", help=", ".join(settings.SETTINGS))
    s.add_argument("value", metavar="VALUE")


def cmd_config(home: Home, args) -> int:
    home.require()
    if args.config_command == "set":
        return set_setting(home, args.key, args.value)
    key = getattr(args, "key", None)
    values = home.config()
    if key is not None and key not in settings.SETTINGS:
        raise UserError(f"unknown setting {key!r} (known: {', '.join(settings.SETTINGS)})",
                        USAGE)
    shown = {k: values[k] for k in settings.SETTINGS if key in (None, k)}
    if args.json:
        print(json.dumps({"schema_version": CONFIG_SCHEMA, "settings": shown}, indent=2))
    elif key is not None:
        print(_text(shown[key]))
    else:
        width = max(len(k) for k in shown)
        for k, v in shown.items():
            print(f"{k:<{width}}  {_text(v)}")
    return OK


def _text(value: object) -> str:
    """A value as `config set` takes it: true and false as JSON writes them."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def set_setting(home: Home, key: str, text: str) -> int:
    """Check, store and apply a setting (also `syncd mode`'s)."""
    try:
        value = home.set_config(key, text)
    except settings.SettingError as e:
        raise UserError(str(e), USAGE) from None
    shown = _text(value)
    holder = home.holder()
    if holder is None:
        print(f"{key} = {shown}")
        return OK
    serving = f"the running {'mount' if holder.mountpoint else 'server'} (pid {holder.pid})"
    if not settings.SETTINGS[key].live:
        print(f"{key} = {shown}; takes effect at the next mount or serve ({serving} keeps "
              "the old value until then)")
        return OK
    try:
        answer = control.request(home, "config", key=key, value=value)
    except UserError as e:
        answer = {"error": str(e)}
    if answer.get("ok") and answer.get("applied"):
        print(f"{key} = {shown}; applied to {serving}")
    elif answer.get("ok"):  # e.g. attr_timeout on a server without a mount
        print(f"{key} = {shown}; {serving} does not use it")
    else:
        print(f"{key} = {shown}")
        print(f"syncd: warning: {serving} did not take the change ({answer.get('error')}); "
              "it will at its next start", file=sys.stderr)
    return OK


COMMANDS = {"config": cmd_config}
