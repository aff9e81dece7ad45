"""`syncd peer ...`: the operator's view of the peers table (docs/cli.md).

The commands write index.db themselves, each change in one transaction; WAL mode lets them
do so while the serving process runs, and they then ask it to reload its peers.
"""

from __future__ import annotations

import json
import re
import sys

from syncd import control
from syncd.commands.status import live_peers
from syncd.commands.table import print_table
from syncd.home import OK, STATE, USAGE, Home, UserError, utc
from syncd.index.catalog import open_catalog
from syncd.index.peers import (
    NoSuchPeer,
    PeerExists,
    add_peer,
    list_peers,
    remove_peer,
    set_peer_addresses,
    set_peer_use,
)

PEERS_SCHEMA = 1
DISCOVER_SECONDS = 3.0  # zeroconf asks at once and after 1 s; homes starting announce

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_URL = re.compile(r"(https://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})/?")


def check_name(home: Home, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UserError(f"bad peer name {name!r}: 1 to 64 of A-Z a-z 0-9 . _ -", USAGE)
    if name == home.config()["name"]:
        raise UserError(f"{name!r} is this machine's own name", USAGE)
    return name


def check_url(url: str) -> str:
    """An address as stored, without a trailing slash: https://HOST:PORT (given as that
    or as HOST:PORT). Peers talk TLS only: http:// is refused with what to write."""
    if url.startswith("http://"):
        raise UserError(f"bad peer address {url!r}: peers talk TLS only, use "
                        f"https://{url[len('http://'):].rstrip('/')} (or HOST:PORT)", USAGE)
    match = _URL.fullmatch(url)
    if not match or not 0 < int(match["port"]) < 65536:
        raise UserError(f"bad peer address {url!r}: want https://HOST:PORT or HOST:PORT",
                        USAGE)
    return f"https://{match['host']}:{match['port']}"


def check_addresses(addresses: list[str]) -> list[str]:
    """A peer's addresses as stored, in the order given; one given twice is an error."""
    checked = [check_url(a) for a in addresses]
    if twice := sorted({a for a in checked if checked.count(a) > 1}):
        raise UserError(f"address {twice[0]} is given twice", USAGE)
    return checked


def check_fingerprint(text: str | None) -> str | None:
    if text is None:
        return None
    from syncd.identity import parse_fingerprint  # cryptography: only when one is given

    try:
        return parse_fingerprint(text)
    except ValueError as e:
        raise UserError(f"--fingerprint: {e}", USAGE) from None


def add(home: Home, name: str, addresses: list[str], fingerprint: str | None) -> None:
    try:
        with open_catalog(home.db_path, home.store_path) as cat:
            add_peer(cat.db, name, *addresses, fingerprint=fingerprint)
    except PeerExists:
        raise UserError(f"there is already a peer named {name!r}; "
                        "'syncd peer remove' it first", STATE) from None


def remove(home: Home, name: str) -> None:
    try:
        with open_catalog(home.db_path, home.store_path) as cat:
            remove_peer(cat.db, name)
    except NoSuchPeer:
        raise UserError(f"no peer named {name!r}") from None


def set_use(home: Home, name: str, use: str) -> None:
    """use: "outofuse" (never contacted, catch-up kept) or "auto" (probed afresh)."""
    try:
        with open_catalog(home.db_path, home.store_path) as cat:
            set_peer_use(cat.db, name, use)
    except NoSuchPeer:
        raise UserError(f"no peer named {name!r}") from None


def set_addresses(home: Home, name: str, addresses: list[str]) -> None:
    try:
        with open_catalog(home.db_path, home.store_path) as cat:
            set_peer_addresses(cat.db, name, addresses)
    except NoSuchPeer:
        raise UserError(f"no peer named {name!r}") from None


def collect(home: Home) -> dict:
    live = live_peers(home) or {}
    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        peers = list_peers(cat.db)
    return {"schema_version": PEERS_SCHEMA,
            "peers": [{"name": p.name, "url": live.get(p.name, {}).get("url", p.url),
                       "addresses": live.get(p.name, {}).get("addresses", p.addresses),
                       "discovered": live.get(p.name, {}).get("discovered", []),
                       "device": p.device,
                       "fingerprint": p.fingerprint, "pinned": p.cert is not None,
                       "state": live.get(p.name, {}).get("state", p.state),
                       "last_seen": utc(live.get(p.name, {}).get("last_seen", p.last_seen))}
                      for p in peers]}


def print_peers(home: Home, as_json: bool) -> None:
    peers = collect(home)
    if as_json:
        print(json.dumps(peers, indent=2))
        return
    if not peers["peers"]:
        print("no peers: add one with 'syncd peer add NAME ADDRESS'")
        return
    rows = [("NAME", "URL", "STATE", "LAST SEEN", "DEVICE")]
    rows += [(p["name"], p["url"], p["state"], p["last_seen"] or "never", p["device"] or "-")
             for p in peers["peers"]]
    print_table(rows)


def discovered(home: Home, seconds: float) -> dict:
    """The homes heard on the LAN within `seconds`, this one left out, each with the
    peer it is here: one whose fingerprint (pinned or given) is the one announced, and
    whose device, once known, is too (as the serving process matches them)."""
    if not 0.1 <= seconds <= 600:
        raise UserError(f"--seconds {seconds:g}: want 0.1 to 600 seconds", USAGE)
    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        me, known = cat.device, list_peers(cat.db)
    from syncd import discovery  # zeroconf loads only for this command

    devices = []
    for f in discovery.discover(seconds):
        if f.device == me:
            continue
        peer = next((p.name for p in known if p.fingerprint == f.fingerprint
                     and p.device in (None, f.device)), None)
        devices.append({"name": f.name, "host": f.host, "device": f.device,
                        "fingerprint": f.fingerprint, "addresses": list(f.urls),
                        "peer": peer})
    return {"schema_version": PEERS_SCHEMA, "seconds": seconds, "devices": devices}


def print_discovered(home: Home, seconds: float, as_json: bool) -> None:
    found = discovered(home, seconds)
    if as_json:
        print(json.dumps(found, indent=2))
        return
    if not found["devices"]:
        print(f"no syncd home heard on the LAN in {seconds:g} s (on a machine that serves "
              "one, 'syncd config get discovery' must be true and 'listen' not loopback)")
        return
    for d in found["devices"]:
        print(f"{d['name'] or '(no name)'} ({d['host']})")
        print(f"  device       {d['device']}\n  fingerprint  {d['fingerprint']}")
        print(f"  addresses    {' '.join(d['addresses'])}")
        if d["peer"] is not None:
            print(f"  peer         {d['peer']}, reached at these addresses too")
        else:
            name = d["name"] if d["name"] and _NAME.fullmatch(d["name"]) else "NAME"
            print(f"  not a peer   add it with: syncd peer add {name} {d['addresses'][0]} "
                  f"--fingerprint {d['fingerprint']}")


def add_parsers(sub, common) -> None:
    p = sub.add_parser("peer", parents=[common], help="add, list, remove or set peers")
    peer = p.add_subparsers(dest="peer_command", required=True, metavar="PEER_COMMAND")
    p = peer.add_parser("add", parents=[common], help="add a peer")
    p.add_argument("name", metavar="NAME", help="its name here: 1-64 of A-Z a-z 0-9 . _ -")
    p.add_argument("addresses", metavar="ADDRESS", nargs="+",
                   help="where it listens, https://HOST:PORT or HOST:PORT; several are "
                        "tried in order, the one that answered last first")
    p.add_argument("--fingerprint", metavar="FP",
                   help="its certificate's fingerprint, as 'syncd id' prints it there "
                        "(default: pin the certificate its first hello shows)")
    p = peer.add_parser("list", parents=[common], help="list the peers")
    p.add_argument("--json", action="store_true", help="one JSON object (docs/cli.md)")
    p = peer.add_parser("discover", parents=[common],
                        help="list the syncd homes announcing themselves on the LAN")
    p.add_argument("--json", action="store_true", help="one JSON object (docs/cli.md)")
    p.add_argument("--seconds", type=float, default=DISCOVER_SECONDS, metavar="N",
                   help=f"listen this long, 0.1 to 600 (default {DISCOVER_SECONDS:g})")
    p = peer.add_parser("remove", parents=[common], help="forget a peer")
    p.add_argument("name", metavar="NAME")
    p = peer.add_parser("set", parents=[common],
                        help="take a peer out of use, or back; or set its addresses")
    p.add_argument("name", metavar="NAME")
    p.add_argument("use", choices=["outofuse", "auto"], nargs="?",
                   help="outofuse: never contact it, keep its catch-up; auto: contact it")
    p.add_argument("--address", metavar="ADDRESS", nargs="+", dest="addresses",
                   help="replace its addresses with these (tried in order)")


def cmd_peer(home: Home, args) -> int:
    home.require()
    if args.peer_command == "list":
        print_peers(home, as_json=args.json)
        return OK
    if args.peer_command == "discover":
        print_discovered(home, args.seconds, args.json)
        return OK
    if args.peer_command == "add":
        name, addresses = check_name(home, args.name), check_addresses(args.addresses)
        fingerprint = check_fingerprint(args.fingerprint)
        add(home, name, addresses, fingerprint)
        print(f"added peer {args.name} at {' '.join(addresses)}")
    elif args.peer_command == "remove":
        remove(home, args.name)
        print(f"removed peer {args.name}: its certificate is no longer admitted here")
    else:
        if args.use is None and args.addresses is None:
            raise UserError("peer set wants outofuse, auto or --address ADDRESS...", USAGE)
        if args.addresses is not None:
            addresses = check_addresses(args.addresses)
            set_addresses(home, args.name, addresses)
            print(f"peer {args.name} at {' '.join(addresses)}")
        if args.use is not None:
            set_use(home, args.name, args.use)
            print(f"peer {args.name}: {args.use}")
    reload_serving(home, "reload-peers")
    return OK


def reload_serving(home: Home, op: str) -> None:
    """Tell the serving process, if any, that its peers or relays changed (`op`:
    reload-peers, reload-relays); warn when it did not take the change."""
    holder = home.holder()
    if holder is None:
        return
    try:
        answer = control.request(home, op)
    except UserError as e:
        answer = {"error": str(e)}
    if not answer.get("ok"):
        print(f"syncd: warning: the serving process (pid {holder.pid}) did not take the "
              f"change ({answer.get('error')}); it will at its next start", file=sys.stderr)


COMMANDS = {"peer": cmd_peer}
