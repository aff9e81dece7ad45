"""The `syncd` command (docs/cli.md is the contract)."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path

from syncd import control, settings
from syncd.auth import parse_key
from syncd.home import (
    FAILURE,
    OK,
    STATE,
    USAGE,
    Home,
    UserError,
    default_home,
)
from syncd.index.catalog import open_catalog
from syncd.index.schema import SchemaError

log = logging.getLogger("syncd")

# The families of commands (syncd/commands/) and the commands each adds, in the order of
# `syncd --help`. A command imports and builds the parsers of its own family alone: all of
# them were a third of the start of `syncd status`. --help and a bad command build all.
FAMILIES = {"peers": ("peer",), "mounting": ("mount", "umount", "serve"),
            "status": ("status",), "pending": ("pending",), "history": ("log",),
            "content": ("pin", "unpin", "fetch", "conflicts"), "importing": ("import",),
            "waiting": ("wait",), "config": ("config",), "page": ("ui",),
            "versions": ("versions", "restore"), "modes": ("mode", "revert", "override"),
            "relays": ("relay",)}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or only of those of `command`'s family."""
    # --home is accepted before or after the command name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", type=Path, default=argparse.SUPPRESS,
                        help="the home directory (default: $SYNCD_HOME, else "
                             "$XDG_DATA_HOME/syncd)")
    parser = argparse.ArgumentParser(
        prog="syncd", parents=[common],
        description="A synchronized file system for groups of Linux machines.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", parents=[common], help="create a home")
    p.add_argument("--name", help="this machine's name in the share (default: host name)")
    p.add_argument("--listen", metavar="HOST:PORT", help="address for peers (default "
                   "127.0.0.1:7700)")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--cluster-key", metavar="KEY", help="join the cluster with this key "
                     "(64 hex digits; default: a new cluster with a new key)")
    key.add_argument("--cluster-key-file", metavar="FILE", help="read the key from FILE "
                     "('-': standard input), which keeps it out of the process list")

    p = sub.add_parser("cluster-key", parents=[common], help="print the cluster key")
    p.add_argument("--rotate", action="store_true",
                   help="make a new key and hand it over TLS to the peers pinned here "
                        "(the home must be served)")
    p = sub.add_parser("id", parents=[common],
                       help="print this device's id and its certificate's fingerprint")
    p.add_argument("--json", action="store_true", help="one JSON object (docs/cli.md)")

    for family, names in FAMILIES.items():
        if command is None or command in names:
            _family(family).add_parsers(sub, common)
    return parser


def _family(name: str):
    return importlib.import_module(f"syncd.commands.{name}")


def _command_in(argv: list[str]) -> str | None:
    """The command of a family that argv names, unless it asks for the general help."""
    words = iter(argv)
    for word in words:
        if word == "--home":
            next(words, None)
        elif word == "-h" or (len(word) > 2 and "--help".startswith(word)):
            return None
        elif not word.startswith("-"):
            return word if any(word in names for names in FAMILIES.values()) else None
    return None


class _Version(argparse.Action):
    """--version, read from the package's metadata only when asked: importing
    importlib.metadata is a cost every command would pay."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0,
                         help=help or "show the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import version

        print(f"syncd {version('syncd')}")
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_in(argv)).parse_args(argv)
    home = Home(getattr(args, "home", None) or default_home())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s "
                        "%(message)s")
    try:
        return _run(args.command)(home, args)
    except UserError as e:
        print(f"syncd: error: {e}", file=sys.stderr)
        return e.code
    except SchemaError as e:
        print(f"syncd: error: {e}", file=sys.stderr)
        return FAILURE
    except KeyboardInterrupt:
        return FAILURE
    except BrokenPipeError:
        # The reader left (syncd status | head): no error of ours. Output still buffered
        # would fail again at exit, so it goes nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK


def cmd_init(home: Home, args) -> int:
    for option, key in ((args.listen, "listen"), (args.name, "name")):
        if option is not None:
            try:
                settings.check(key, option)
            except settings.SettingError as e:
                raise UserError(f"--{key}: {e}", USAGE) from None
    Home.init(home.path, args.name, args.listen, _given_key(args))
    print(f"created syncd home {home.path}")
    return OK


def _given_key(args) -> bytes | None:
    """The key given to init, or None for a new cluster; bad input is a usage error."""
    if args.cluster_key_file is None:
        source, text = "--cluster-key", args.cluster_key
    else:
        stdin = args.cluster_key_file == "-"
        source = "standard input" if stdin else args.cluster_key_file
        try:
            data = sys.stdin.buffer.read() if stdin else Path(source).read_bytes()
        except OSError as e:
            raise UserError(f"cannot read the cluster key from {source}: {e.strerror}",
                            USAGE) from None
        text = data.decode("ascii", "replace")  # anything not ASCII is malformed anyway
    if text is None:
        return None
    try:
        return parse_key(text)
    except ValueError as e:
        raise UserError(f"{source}: {e}", USAGE) from None


def cmd_cluster_key(home: Home, args) -> int:
    if not args.rotate:
        print(home.require().cluster_key().hex())
        return OK
    home.require().cluster_key()  # a readable key to sign the handing over with
    if home.holder() is None:
        raise UserError(f"{home.path} is not served: the new key is handed to the peers by "
                        "the process serving it; start 'syncd mount' or 'syncd serve' first",
                        STATE)
    answer = control.request(home, "rotate-key", timeout=60)
    if not answer.get("ok"):
        raise UserError(f"the serving process did not change the key: {answer.get('error')}")
    print(f"new cluster key; handed to: {', '.join(answer['handed']) or 'no peer'}")
    for name, why in sorted(answer["missed"].items()):
        print(f"syncd: warning: {name} did not get it ({why}); it can no longer talk to "
              "this machine: put the key 'syncd cluster-key' prints here in its "
              "HOME/cluster.key (mode 0600) and restart it", file=sys.stderr)
    return FAILURE if answer["missed"] else OK


def cmd_id(home: Home, args) -> int:
    """The device id and the fingerprint a peer pins (`syncd peer add --fingerprint`)."""
    with open_catalog(home.require().db_path, home.store_path, readonly=True) as cat:
        device = cat.device
    fingerprint = home.device_identity(device).fingerprint
    if args.json:
        print(json.dumps({"schema_version": 1, "device": device, "fingerprint": fingerprint,
                          "name": home.config()["name"]}, indent=2))
    else:
        print(f"device       {device}\nfingerprint  {fingerprint}")
    return OK


COMMANDS = {"init": cmd_init, "cluster-key": cmd_cluster_key, "id": cmd_id}


def _run(command: str):
    """The function of a command: this module's, or its family's."""
    if command in COMMANDS:
        return COMMANDS[command]
    (family,) = [f for f, names in FAMILIES.items() if command in names]
    return _family(family).COMMANDS[command]
