"""`syncd wait`: until the peers have confirmed every change made here, and other
machines hold its content (docs/cli.md)."""

from __future__ import annotations

import time

from syncd import control
from syncd.commands.content import FETCH_TIMEOUT
from syncd.home import FAILURE, OK, STATE, UNREACHABLE, Home, UserError
from syncd.index.catalog import open_catalog
from syncd.index.peers import Peer, list_peers, pending_for
from syncd.index.relays import list_relays

# How long a peer or relay not tried yet since the start is waited for (a first attempt, a
# relay's first round) before only those online count.
SETTLE = 10.0


def add_parsers(sub, common) -> None:
    p = sub.add_parser("wait", parents=[common],
                       help="wait until peers have confirmed every change made here")
    p.add_argument("--peer", metavar="NAME", help="only this peer (default: every online one)")
    p.add_argument("--copies", type=int, metavar="N",
                   help="and the content of each change is held by N other machines "
                        "(default: the setting min_copies, 1 unless set; 0: do not check "
                        "content)")
    p.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds")


def cmd_wait(home: Home, args) -> int:
    """Poll the index (read-only) until the peers' cursors cover every change made here
    up to now. What can never succeed fails at once: nothing serving the home (nothing
    sends the changes), no peer in use, fewer peers in use than copies asked."""
    home.require()
    if args.copies is None:
        args.copies = int(home.config()["min_copies"])
    if home.holder() is None:
        raise UserError(f"{home.path} is not mounted or served: nothing sends its changes "
                        "to peers; 'syncd mount' or 'syncd serve' first", STATE)
    # A mount answers before its peer loops run (syncd/starting.py); the serving process
    # answers this once they do, so peers are judged as after a mount's start before.
    control.request(home, "peers", timeout=60)
    started = time.monotonic()
    deadline = None if args.timeout is None else started + args.timeout
    target = None
    while True:
        with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
            relays = [Peer(r.name, r.url, None, r.state, r.cursor, r.last_seen, r.last_error)
                      for r in list_relays(cat.db)]
            peers = list_peers(cat.db) + relays
            if target is None:
                target = cat.seq
                _check_in_use(peers, args)
            behind = _behind(cat.db, peers, target, args.peer,
                             settling=time.monotonic() - started < SETTLE)
        if behind is None:
            raise UserError("no peer is reachable: nothing could confirm the changes",
                            UNREACHABLE)
        if not behind:
            print("every change made here has been confirmed"
                  + (f" by {args.peer}" if args.peer else " by every online peer"))
            return _wait_copies(home, args, target, deadline, _stored_on(relays, args.peer))
        if deadline is not None and time.monotonic() > deadline:
            report = ", ".join(f"{name} ({n} change(s), {size} bytes)"
                               for name, n, size in behind)
            raise UserError(f"timed out after {args.timeout:g} s; behind: {report}",
                            UNREACHABLE)
        time.sleep(0.1)


def _check_in_use(peers: list[Peer], args) -> None:
    """Fail at once when no peer is in use (not outofuse) to confirm, or fewer than the
    copies asked for."""
    if args.peer is not None:
        chosen = [p for p in peers if p.name == args.peer]
        if not chosen:
            raise UserError(f"no peer named {args.peer!r}", FAILURE)
        if chosen[0].state == "outofuse":
            raise UserError(f"peer {args.peer} is out of use: 'syncd peer set {args.peer} "
                            "auto' to use it again", STATE)
    if not peers:
        raise UserError("this home has no peers or relays: 'syncd peer add NAME URL' or "
                        "'syncd relay add NAME URL' first", STATE)
    in_use = sum(p.state != "outofuse" for p in peers)
    if not in_use:
        raise UserError("every peer is out of use: nothing can confirm the changes; "
                        "'syncd peer set NAME auto' to use one again", STATE)
    if in_use < args.copies:
        raise UserError(f"only {in_use} peer{' is' if in_use == 1 else 's are'} in use: "
                        f"{args.copies} copies cannot be held", STATE)


def _stored_on(relays: list[Peer], only: str | None) -> int:
    """The reachable relays that store every change made here, and so its content: each
    counts as a copy (a relay stores the chunks of what is made here with its states)."""
    return sum(r.state == "online" and only in (None, r.name) for r in relays)


def _wait_copies(home: Home, args, target: int, deadline: float | None,
                 relays: int = 0) -> int:
    if args.copies <= relays:
        if relays:
            print(f"the content is stored on {relays} relay(s)")
        return OK
    args.copies -= relays
    left = None if deadline is None else max(deadline - time.monotonic(), 0.1)
    answer = control.request(home, "copies", timeout=(left or FETCH_TIMEOUT) + 10,
                             copies=args.copies, upto=target, seconds=left)
    if not answer.get("ok"):
        raise UserError(answer.get("error") or "copies failed", UNREACHABLE)
    print(f"the content is held by {answer['holders']} other machine(s)")
    return OK


def _behind(db, peers: list[Peer], target: int, only: str | None,
            settling: bool) -> list[tuple] | None:
    """Peers yet to confirm changes up to `target`: [(name, changes, bytes)]; None when no
    peer that counts is online. While `settling`, one not tried yet (state unknown: a relay
    before its first round ends, a peer before its first attempt) counts too, as behind,
    so a wait run right after the start waits for that answer rather than failing at
    once."""
    states = ("online", "unknown") if settling else ("online",)
    counted = [p for p in peers if p.state in states and only in (None, p.name)]
    if not counted:
        return None
    behind = []
    for peer in counted:
        changes, size, _ = pending_for(db, peer, upto=target)
        if changes or peer.state == "unknown":
            behind.append((peer.name, changes, size))
    return behind


COMMANDS = {"wait": cmd_wait}
