"""The bounded cache (cache_limit, min_copies; docs/cli.md, "The cache") on real peers
with real mounts: least recently used content goes beyond the limit and comes back on
open; what is pinned, open, uncommitted or not held elsewhere stays; leases keep two
machines from dropping each other's last copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from syncd.index.chunklist import CHUNK, digest_of

from syncd import auth
from tests.helpers import syncd, tls_client, wait_for
from tests.peers.conftest import wait_content

MiB = 1 << 20


def state(path) -> str:
    return os.getxattr(path, "user.syncd.state").decode()


def states(peer, names) -> list[str]:
    return [state(peer / n) for n in names]


def cache(peer) -> dict:
    return peer.status()["cache"]


def round_from_now(peer) -> int:
    """The count of eviction rounds at which one that starts after now has completed
    (docs/cli.md, status's `cache`)."""
    c = cache(peer)
    return c["rounds"] + 1 + c["in_round"]


def wait_round(peer, rounds: int) -> None:
    """Until `peer`'s evictor has completed `rounds` (from round_from_now)."""
    wait_for(lambda: cache(peer)["rounds"] >= rounds, 20, f"eviction round {rounds}")


def a_whole_round(peer) -> None:
    """Until a round that starts after now has completed on `peer`, started at once by
    setting min_copies again (any setting of it wakes the evictor), not up to 5 s later."""
    rounds = round_from_now(peer)
    syncd(peer.home, "config", "set", "min_copies", str(cache(peer)["min_copies"]))
    wait_round(peer, rounds)


def limit(peer, value: str) -> None:
    done = syncd(peer.home, "config", "set", "cache_limit", value)
    assert "applied to the running mount" in done.stdout


def fetched(a, b, n: int, prefix: str = "f") -> dict[str, bytes]:
    """n files of 2 MiB written on a, then read on b in order (b's least recently used
    first); all here on both."""
    data = {f"{prefix}{i}": os.urandom(2 * MiB) for i in range(n)}
    for name, d in data.items():
        (a / name).write_bytes(d)
    for name, d in data.items():
        wait_content(b / name, d)
        wait_for(lambda name=name: state(b / name) == "local", 20, f"{name} local on b")
    return data


def test_least_recently_used_content_goes_and_comes_back_on_open(cluster):
    a, b = cluster(2)
    data = fetched(a, b, 4)
    names = list(data)
    before = cache(b)
    assert before.pop("rounds") >= 0 and before.pop("in_round") in (True, False)
    assert before == {"bytes": None, "limit": None, "setting": "none", "min_copies": 1,
                      "over": False}  # not measured: a stat per chunk, for nothing
    limit(b, "5MiB")
    wait_for(lambda: states(b, names) == ["missing", "missing", "local", "local"], 20,
             "the two least recently used evicted")
    after = cache(b)
    assert after.pop("rounds") > 0 and after.pop("in_round") in (True, False)
    assert after == {"bytes": 4 * MiB, "limit": 5 * MiB, "setting": 5 * MiB,
                     "min_copies": 1, "over": False}
    assert sorted(os.listdir(b.path)) == names  # still listed, sizes and all
    assert os.stat(b / "f0").st_size == 2 * MiB
    assert (b / "f0").read_bytes() == data["f0"]  # fetched again and verified
    # f0 is now the most recently used: f2, least recently used of those here, goes.
    wait_for(lambda: states(b, names) == ["local", "missing", "missing", "local"], 20,
             "f2 evicted after f0 came back")
    assert states(a, names) == ["local"] * 4  # a has no limit
    assert "4.0 MiB of 5.0 MiB (cache_limit 5242880)" in syncd(b.home, "status").stdout
    for name in names:
        assert (b / name).read_bytes() == data[name]


WRITER = """
import sys
with open(sys.argv[1], "r+b", buffering=0) as f:
    f.write(b"uncommitted")
    print("written", flush=True)
    sys.stdin.readline()
"""


def test_pinned_open_and_uncommitted_content_stays_even_over_the_limit(cluster):
    a, b = cluster(2)
    data = fetched(a, b, 3)
    syncd(b.home, "pin", "f1")
    mine = os.urandom(2 * MiB)
    (b / "mine").write_bytes(mine)
    wait_content(a / "mine", mine)  # a holds it too
    # The writer is a process of its own: every command this test runs would otherwise
    # inherit its descriptor, whose close at exec is a flush, which commits.
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(b / "mine")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "written\n"
        with open(b / "f2", "rb") as reader:
            head = reader.read(10)
            limit(b, "0")  # smaller than the open file
            wait_for(lambda: state(b / "f0") == "missing", 20, "f0 evicted")
            a_whole_round(b)
            assert states(b, ["f1", "f2", "mine"]) == ["local"] * 3
            assert head + reader.read() == data["f2"]
            s = b.status()
            assert s["dirty"] == 1  # mine's writes are still uncommitted
            assert s["cache"]["over"] and s["cache"]["limit"] == 0
            assert s["cache"]["bytes"] == 6 * MiB  # f1, f2, mine
            assert "over the limit" in syncd(b.home, "status").stdout
    finally:
        writer.communicate("\n", timeout=30)
    assert writer.returncode == 0
    # Closed: f2 goes. mine's new first chunk is here alone (a fetches lazily): it stays.
    wait_for(lambda: state(b / "f2") == "missing", 20, "f2 evicted once closed")
    a_whole_round(b)
    assert states(b, ["f1", "mine"]) == ["local", "local"]
    assert (b / "mine").read_bytes() == b"uncommitted" + mine[11:]
    assert (b / "f0").read_bytes() == data["f0"]


def test_a_chunk_no_other_machine_holds_is_never_evicted(cluster):
    a, b = cluster(2)
    data = fetched(a, b, 1)
    own = os.urandom(2 * MiB)
    (b / "own").write_bytes(own)  # a learns of it but fetches it only on open
    syncd(b.home, "config", "set", "min_copies", "2")  # only one other machine here
    rounds = round_from_now(b)
    limit(b, "0")
    wait_round(b, rounds)
    assert states(b, ["f0", "own"]) == ["local", "local"]
    a.stop()  # the only other holder of f0 is gone
    rounds = round_from_now(b)
    syncd(b.home, "config", "set", "min_copies", "1")
    wait_round(b, rounds)
    assert states(b, ["f0", "own"]) == ["local", "local"]
    a.start()
    wait_for(lambda: state(b / "f0") == "missing", 30, "f0 evicted once a is back")
    a_whole_round(b)
    assert state(b / "own") == "local"
    assert (b / "f0").read_bytes() == data["f0"]
    assert (b / "own").read_bytes() == own


def lease(peer, member, digests: list[bytes], seconds: float) -> list[str]:
    """Ask `peer` for a lease as `member`, a machine it admits, would: over mutual TLS
    with its certificate, signed with the cluster key."""
    body = json.dumps({"chunks": [d.hex() for d in digests], "seconds": seconds}).encode()
    headers = auth.sign_request(auth.parse_key(peer.key), "POST", "/v1/lease", body)
    with tls_client(peer.home, member.home) as client:
        r = client.post(f"{peer.url}/v1/lease", content=body,
                        headers={**headers, "content-type": "application/json"})
    assert r.status_code == 200, r.text
    return r.json()["leased"]


def test_a_machine_never_drops_a_chunk_it_leased_to_another(cluster):
    a, b = cluster(2)
    data = fetched(a, b, 1)["f0"]
    digests = [digest_of(data[i:i + CHUNK]) for i in range(0, len(data), CHUNK)]
    assert lease(b, a, digests, 8) == [d.hex() for d in digests]
    rounds = round_from_now(b)
    limit(b, "0")
    wait_round(b, rounds)
    assert state(b / "f0") == "local"  # a holds it and would lease it, but b leased it out
    wait_for(lambda: state(b / "f0") == "missing", 20, "f0 evicted once the lease ended")
    assert lease(b, a, digests, 8) == []  # not held any more: nothing to lease
    assert (b / "f0").read_bytes() == data


def test_two_machines_do_not_drop_each_others_last_copy(cluster):
    a, b = cluster(2)
    data = fetched(a, b, 3)
    rounds = {peer: round_from_now(peer) for peer in (a, b)}
    for peer in (a, b):
        syncd(peer.home, "config", "set", "cache_limit", "0")
    for peer in (a, b):  # each has tried every file, asking the other for leases
        wait_round(peer, rounds[peer])
    for name in data:
        assert "local" in (state(a / name), state(b / name)), name
    for name, d in data.items():
        assert (a / name).read_bytes() == d
        assert (b / name).read_bytes() == d


def test_wait_asks_for_min_copies_unless_told(cluster):
    a, _ = cluster(2)
    (a / "f").write_bytes(b"x" * 300_000)
    assert "held by 1 other machine(s)" in syncd(a.home, "wait", "--timeout", "30").stdout
    syncd(a.home, "config", "set", "min_copies", "2")
    done = syncd(a.home, "wait", "--timeout", "30", check=False)
    assert done.returncode == 4 and "2 copies cannot be held" in done.stderr, done.stderr
    assert syncd(a.home, "wait", "--copies", "1", "--timeout", "30").returncode == 0
