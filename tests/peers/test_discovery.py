"""Discovery on the LAN (docs/protocol.md, "Discovery on the LAN"), for real: two network
namespaces joined by a veth pair, where multicast works as on a LAN, each running the
real `syncd` command (`ip netns exec`). A home served in one is heard in the other; a
known peer whose stored address is wrong is reached at the address heard; with the
setting `discovery` false nothing is announced."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import SYNCD, free_port, served_log, status, syncd, wait_for


@dataclass
class Side:
    """One network namespace and its address on the veth pair."""

    netns: str
    ip: str
    dev: str = ""  # its end of the veth pair


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


@pytest.fixture
def lan():
    """Two namespaces, A (x.1) and B (x.2), on one /24 over a veth pair, loopback up in
    each; deleted after the test, even on failure (the homes' processes are stopped
    first, by the `homes` fixture)."""
    tag = secrets.token_hex(3)
    a, b = Side(f"syncd-{tag}-a", ""), Side(f"syncd-{tag}-b", "")
    made = []
    try:
        for side in (a, b):
            done = _ip("netns", "add", side.netns)
            if done.returncode != 0:
                pytest.skip(f"ip netns is not permitted here: {done.stderr.strip()}")
            made.append(side.netns)
        net = f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}"
        a.ip, b.ip = f"{net}.1", f"{net}.2"
        a.dev, b.dev = f"sd{tag}a", f"sd{tag}b"
        steps = [("link", "add", a.dev, "netns", a.netns, "type", "veth", "peer",
                  "name", b.dev, "netns", b.netns)]
        for side in (a, b):
            steps += [("-n", side.netns, "addr", "add", f"{side.ip}/24", "dev", side.dev),
                      ("-n", side.netns, "link", "set", "lo", "up"),
                      ("-n", side.netns, "link", "set", side.dev, "up")]
        for step in steps:
            done = _ip(*step)
            assert done.returncode == 0, f"ip {' '.join(step)}: {done.stderr}"
        yield a, b
    finally:
        for netns in made:
            _ip("netns", "del", netns)


class Home:
    """A home whose peer port is on a namespace's veth address, served there by
    `syncd serve`; its log is checked when the test ends (tests.helpers.ServedLog)."""

    def __init__(self, root: Path, name: str, side: Side, key: str | None = None,
                 discovery: bool = True):
        self.name, self.side = name, side
        self.home = root / name
        self.port = free_port()
        self.url = f"https://{side.ip}:{self.port}"
        syncd(self.home, "init", "--name", name, "--listen", f"{side.ip}:{self.port}",
              *(["--cluster-key", key] if key else []))
        if not discovery:
            syncd(self.home, "config", "set", "discovery", "false")
        self.key = key or syncd(self.home, "cluster-key").stdout.strip()
        me = json.loads(syncd(self.home, "id", "--json").stdout)
        self.device, self.fingerprint = me["device"], me["fingerprint"]
        self.log = served_log(root / f"{name}.log")
        self.proc: subprocess.Popen | None = None

    def run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        """A syncd command on this home, in its namespace."""
        return syncd(self.home, *args, netns=self.side.netns, **kw)

    def start(self) -> Home:
        """`syncd serve` in the namespace (`ip netns exec` execs it: the pid is syncd's)."""
        self.log.serving()
        with open(self.log.path, "ab") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.side.netns, *SYNCD, "--home", str(self.home),
                 "serve"], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        return self

    def listening(self) -> None:
        wait_for(lambda: "listening for peers on" in self.log.text() or
                 self.proc.poll() is not None, 30, f"{self.name} to serve")
        assert self.proc.poll() is None, f"{self.name} died:\n{self.log.text()}"

    def stop(self) -> None:
        """SIGTERM, and it exits 0 in bounded time (zeroconf's goodbyes included)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(20) == 0, self.log.text()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def homes(tmp_path, lan):
    """make(name, side, ...): a Home (not started); every one started is stopped after
    the test, killed if it does not stop, before the namespaces go."""
    made: list[Home] = []

    def make(*args, **kw) -> Home:
        made.append(Home(tmp_path, *args, **kw))
        return made[-1]

    try:
        yield make
        for h in made:
            h.stop()
    finally:
        for h in made:
            with contextlib.suppress(Exception):
                h.kill()


def discovered(done: subprocess.CompletedProcess) -> dict[str, dict]:
    return {d["device"]: d for d in json.loads(done.stdout)["devices"]}


def test_a_serving_home_is_listed_within_5_s_of_starting(lan, homes):
    a, b = lan
    alpha = homes("alpha", a)
    looker = homes("beta", b)
    # Listening for 5 s from the moment alpha is started: it is heard in that time
    # (its own start included) or the test fails.
    alpha.start()
    heard = discovered(looker.run("peer", "discover", "--json", "--seconds", "5"))
    alpha.listening()
    assert list(heard) == [alpha.device]
    assert heard[alpha.device] == {
        "name": "alpha", "host": f"syncd-{alpha.device}.local", "device": alpha.device,
        "fingerprint": alpha.fingerprint, "addresses": [alpha.url], "peer": None}
    # The text output prints the command that adds it, for a person to run.
    text = looker.run("peer", "discover", "--seconds", "2").stdout
    assert f"syncd peer add alpha {alpha.url} --fingerprint {alpha.fingerprint}" in text
    # A peer already: matched by its fingerprint (and device), not by address.
    looker.run("peer", "add", "a1", f"127.0.0.1:{free_port()}", "--fingerprint",
               alpha.fingerprint)
    heard = discovered(looker.run("peer", "discover", "--json", "--seconds", "2"))
    assert heard[alpha.device]["peer"] == "a1"
    assert "peer         a1, reached at these addresses too" in looker.run(
        "peer", "discover", "--seconds", "2").stdout
    looker.run("peer", "remove", "a1")  # not of alpha's cluster: it would be refused
    # Itself it does not list: served, beta announces itself in B, alpha hears it.
    looker.start().listening()
    assert list(discovered(looker.run("peer", "discover", "--json", "--seconds", "2"))) == \
        [alpha.device]
    assert list(discovered(alpha.run("peer", "discover", "--json", "--seconds", "3"))) == \
        [looker.device]


def test_a_known_peer_at_a_wrong_address_is_reached_where_it_announces_itself(
        lan, homes, tmp_path):
    a, b = lan
    alpha = homes("alpha", a)
    beta = homes("beta", b, key=alpha.key)
    alpha.run("peer", "add", "beta", beta.url, "--fingerprint", beta.fingerprint)
    wrong = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    beta.run("peer", "add", "alpha", wrong, "--fingerprint", alpha.fingerprint)
    # Another certificate than alpha's: alpha's announcement is not this peer's.
    beta.run("peer", "add", "other", f"127.0.0.1:{free_port()}", "--fingerprint", "ab" * 32)
    for h in (alpha, beta):
        h.start()
    for h in (alpha, beta):
        h.listening()

    def reached() -> dict | None:
        peer, other = status(beta.home)["peers"]
        assert other["discovered"] == [] and other["state"] != "online"
        return peer if peer["state"] == "online" else None

    peer = wait_for(reached, 20, "beta to reach alpha at the address it announces")
    assert peer["url"] == alpha.url and peer["device"] == alpha.device and peer["pinned"]
    assert peer["addresses"] == [wrong, alpha.url] and peer["discovered"] == [alpha.url]
    listed = json.loads(beta.run("peer", "list", "--json").stdout)["peers"]
    assert [p["discovered"] for p in listed] == [[alpha.url], []]
    # The stored list is the operator's: what was heard is not written to it.
    beta.stop()
    assert json.loads(beta.run("peer", "list", "--json").stdout)["peers"][0][
        "addresses"] == [wrong]
    beta.start().listening()
    wait_for(reached, 20, "beta to reach alpha again after its restart")
    # Files sync over it: one imported on alpha arrives on beta, verified.
    src = tmp_path / "src"
    src.mkdir()
    (src / "report").write_bytes(os.urandom(100_000))
    alpha.run("import", str(src))
    wait_for(lambda: status(beta.home)["files"] == {
        "total": 1, "local": 1, "missing": 0, "pinned": 0, "conflicts": 0,
        "bytes": 100_000, "bytes_local": 100_000, "local_only": 0}, 20,
        "the file to arrive on beta")


def test_nothing_is_announced_with_discovery_off(lan, homes):
    a, b = lan
    quiet = homes("quiet", a, discovery=False)
    heard = homes("heard", a)  # the same namespace and address, another port: the control
    looker = homes("looker", b)
    for h in (quiet, heard):
        h.start()
    for h in (quiet, heard):
        h.listening()
    found = discovered(looker.run("peer", "discover", "--json", "--seconds", "3"))
    assert list(found) == [heard.device]
    assert "discovery: announcing" in heard.log.text()
    assert "discovery: announcing" not in quiet.log.text()
    # It does not look for its peers either: `discovered` stays empty.
    quiet.run("peer", "add", "heard", f"127.0.0.1:{free_port()}", "--fingerprint",
              heard.fingerprint)
    assert status(quiet.home)["peers"][0]["discovered"] == []


def test_a_failing_zeroconf_is_logged_and_serving_goes_on(lan, homes):
    """Its interface down, mDNS cannot send (Network is unreachable): zeroconf says so,
    and the home is served and stops as ever."""
    a, _ = lan
    alpha = homes("alpha", a)
    assert subprocess.run(["ip", "-n", a.netns, "link", "set", a.dev, "down"]).returncode == 0
    alpha.log.expect_log(r"zeroconf WARNING Error with socket .*Network is unreachable")
    alpha.start().listening()
    wait_for(lambda: "Network is unreachable" in alpha.log.text(), 10, "zeroconf to fail")
    assert status(alpha.home)["pid"] == alpha.proc.pid
    took = time.monotonic()
    alpha.stop()
    assert time.monotonic() - took < 10
