"""`syncd relay ...`: storage that runs no syncd, through which this machine exchanges
with peers it never meets (docs/cli.md, "Relays")."""

from __future__ import annotations

import json
import re
from pathlib import Path

from syncd.commands.peers import reload_serving
from syncd.commands.table import print_table
from syncd.home import OK, STATE, USAGE, Home, UserError, utc
from syncd.index.catalog import open_catalog
from syncd.index.relays import (
    NoSuchRelay,
    RelayExists,
    add_relay,
    forget_member,
    list_relays,
    remove_relay,
)
from syncd.relay.backends import BadRelay, check_url, credentials, open_storage
from syncd.relay.storage import MARKER, Missing, RelayError, Unreachable

RELAYS_SCHEMA = 1
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UserError(f"bad relay name {name!r}: 1 to 64 of A-Z a-z 0-9 . _ -", USAGE)
    return name


def prepare(home: Home, name: str, url: str, credentials_file: str | None) -> str:
    """Make sure the relay's root exists and is this share's (writing the marker when it
    has none); what was found, for the operator. UserError, and nothing written, else."""
    import trio  # loads only for the commands that talk to storage

    from syncd.relay.sealing import Keys, Rejected

    keys = Keys([home.cluster_key(), *home.old_cluster_keys()])
    try:
        storage = open_storage(name, url, credentials_file)
    except BadRelay as e:
        raise UserError(str(e), USAGE) from None

    async def run() -> str:
        try:
            keys.check_marker(await storage.get(MARKER))
            return "a relay of this share already"
        except Missing:
            await storage.put(MARKER, keys.marker())
            return "marked as a relay of this share"
        finally:
            await storage.aclose()

    try:
        return trio.run(run)
    except Unreachable as e:
        raise UserError(f"{e}; 'relay add' wants a directory or collection that exists",
                        STATE) from None
    except RelayError as e:
        raise UserError(str(e), STATE) from None
    except Rejected as e:
        raise UserError(f"{url}: {e}; give this share a directory of its own", STATE) from None


def add(home: Home, name: str, url: str, credentials_file: str | None) -> None:
    url = check_url(url)
    if credentials_file is not None:
        credentials_file = str(Path(credentials_file).resolve())
        credentials(name, credentials_file)  # readable and well-formed, or BadRelay
    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        if any(r.name == name for r in list_relays(cat.db)):
            raise UserError(f"there is already a relay named {name!r}; "
                            "'syncd relay remove' it first", STATE)
    found = prepare(home, name, url, credentials_file)
    try:
        with open_catalog(home.db_path, home.store_path) as cat:
            add_relay(cat.db, name, url, credentials_file)
    except RelayExists:
        raise UserError(f"there is already a relay named {name!r}", STATE) from None
    print(f"added relay {name} at {url}: {found}")


def forget(home: Home, name: str, member: str) -> None:
    """Remove from the relay the certificate of a member that does not open (its tag, or
    its device id), so that nothing is kept for it any more: the way out of a member
    that holds back removal because its certificate is damaged, or sealed with a key
    this share no longer has, once that machine is gone for good. A certificate that
    opens is refused (a member that stopped reading is lost after relay_member_days)."""
    import trio

    from syncd.identity import Certificate, IdentityError
    from syncd.relay.sealing import Keys, Rejected

    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        record = next((r for r in list_relays(cat.db) if r.name == name), None)
    if record is None:
        raise UserError(f"no relay named {name!r}")
    keys = Keys([home.cluster_key(), *home.old_cluster_keys()])
    try:
        storage = open_storage(name, record.url, record.credentials)
    except BadRelay as e:
        raise UserError(str(e), STATE) from None

    tags = {member, keys.tag(member)}  # MEMBER is a tag or a device id

    async def run() -> str | None:
        try:
            listed = await storage.list("m")
            tag = next((t for t in sorted(tags) if f"m/{t}" in listed), None)
            if tag is None:
                return None
            try:
                cert = Certificate.from_pem(keys.open(f"m/{tag}",
                                                      await storage.get(f"m/{tag}")).decode())
                if keys.tag(cert.device) == tag:
                    raise UserError(f"the certificate of member {tag} (device {cert.device}) "
                                    f"on relay {name} opens: it is read and waited for as "
                                    "usual, and no longer once it has not read the relay for "
                                    "relay_member_days", STATE)
            except (Rejected, IdentityError, UnicodeDecodeError):
                pass
            except Missing:
                return None
            await storage.delete(f"m/{tag}")
            return tag
        finally:
            await storage.aclose()

    try:
        removed = trio.run(run)
    except RelayError as e:
        raise UserError(str(e), STATE) from None
    with open_catalog(home.db_path, home.store_path) as cat:
        tag = forget_member(cat.db, name, keys.tag, {removed} if removed else tags) or removed
    if tag is None:
        raise UserError(f"relay {name} has no member {member}")
    print(f"forgot member {tag} of relay {name}: "
          f"{'its certificate there is removed, and ' if removed else ''}nothing is kept "
          "for it any more here (a machine still in use publishes its certificate again "
          "and catches up from the snapshots)")


def collect(home: Home) -> dict:
    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        relays = list_relays(cat.db)
    return {"schema_version": RELAYS_SCHEMA,
            "relays": [{"name": r.name, "url": r.url, "credentials": r.credentials,
                        "state": r.state, "last_seen": utc(r.last_seen),
                        "last_error": r.last_error} for r in relays]}


def print_relays(home: Home, as_json: bool) -> None:
    relays = collect(home)
    if as_json:
        print(json.dumps(relays, indent=2))
        return
    if not relays["relays"]:
        print("no relays: add one with 'syncd relay add NAME URL'")
        return
    rows = [("NAME", "URL", "STATE", "LAST EXCHANGE")]
    rows += [(r["name"], r["url"], r["state"], r["last_seen"] or "never")
             for r in relays["relays"]]
    print_table(rows)


def add_parsers(sub, common) -> None:
    p = sub.add_parser("relay", parents=[common],
                       help="add, list or remove relays (storage that runs no syncd)")
    relay = p.add_subparsers(dest="relay_command", required=True, metavar="RELAY_COMMAND")
    p = relay.add_parser("add", parents=[common], help="add a relay")
    p.add_argument("name", metavar="NAME", help="its name here: 1-64 of A-Z a-z 0-9 . _ -")
    p.add_argument("url", metavar="URL", help="file:///PATH (a directory that exists) or "
                   "https://HOST/PATH (a WebDAV collection that exists)")
    p.add_argument("--credentials", metavar="FILE",
                   help="a file holding USER:PASSWORD for WebDAV (default: the environment's "
                        "SYNCD_RELAY_<NAME>_USER and SYNCD_RELAY_<NAME>_PASSWORD)")
    p = relay.add_parser("list", parents=[common], help="list the relays")
    p.add_argument("--json", action="store_true", help="one JSON object (docs/cli.md)")
    p = relay.add_parser("remove", parents=[common],
                         help="stop using a relay (what is stored there stays)")
    p.add_argument("name", metavar="NAME")
    p = relay.add_parser("forget", parents=[common],
                         help="stop keeping batches for a member whose certificate does "
                              "not open")
    p.add_argument("name", metavar="NAME")
    p.add_argument("member", metavar="MEMBER", help="its tag (as syncd status names it) or "
                   "its device id")


def cmd_relay(home: Home, args) -> int:
    home.require()
    if args.relay_command == "list":
        print_relays(home, as_json=args.json)
        return OK
    if args.relay_command == "add":
        try:
            add(home, check_name(args.name), args.url, args.credentials)
        except BadRelay as e:
            raise UserError(str(e), USAGE) from None
    elif args.relay_command == "forget":
        forget(home, args.name, args.member)
        return OK
    else:
        try:
            with open_catalog(home.db_path, home.store_path) as cat:
                remove_relay(cat.db, args.name)
        except NoSuchRelay:
            raise UserError(f"no relay named {args.name!r}") from None
        print(f"removed relay {args.name}; what this machine stored there stays")
    reload_serving(home, "reload-relays")
    return OK


COMMANDS = {"relay": cmd_relay}
