"""Several addresses per peer, against real mounted peers on 127.0.0.1 (issue 13): tried in
order, the one that answered last first; identity from the hello, never from an
address."""

from __future__ import annotations

import json

from tests.helpers import free_port, syncd, wait_for
from tests.peers.conftest import wait_content


def test_a_peer_is_reached_at_its_second_address_which_is_then_tried_first(cluster):
    a, b = cluster(2, mounted=False)
    dead = f"https://127.0.0.1:{free_port()}"  # nobody listens there
    syncd(a.home, "peer", "set", "beta", "--address", dead, b.url)
    before = a.peer("beta")
    assert (before["url"], before["addresses"]) == (dead, [dead, b.url])  # the first
    a.start()
    b.start()
    (a / "f").write_bytes(b"over the second address")
    wait_content(b / "f", b"over the second address")
    wait_for(lambda: a.peer("beta")["url"] == b.url, 20, "beta's url to be the second")
    beta = a.peer("beta")
    assert beta["addresses"] == [dead, b.url] and beta["state"] == "online"
    listed = json.loads(syncd(a.home, "peer", "list", "--json").stdout)["peers"]
    assert (listed[0]["url"], listed[0]["addresses"]) == (b.url, [dead, b.url])
    # kept across a restart: the address that answered is tried first from the start
    a.stop()
    assert a.peer("beta")["url"] == b.url
    a.start()
    (a / "g").write_bytes(b"again")
    wait_content(b / "g", b"again")
    assert a.peer("beta")["url"] == b.url
    # set replaces the list; with only a dead address, beta cannot be reached
    syncd(a.home, "peer", "set", "beta", "--address", dead)
    wait_for(lambda: a.peer("beta")["state"] == "offline", 20, "beta offline")
    beta = a.peer("beta")
    assert (beta["url"], beta["addresses"]) == (dead, [dead])
    assert f"beta ({dead}) does not answer" in beta["last_error"]
    syncd(a.home, "peer", "set", "beta", "--address", dead, b.url)
    (a / "h").write_bytes(b"back")
    wait_content(b / "h", b"back")
    assert a.peer("beta")["url"] == b.url


def test_an_address_that_answers_as_another_device_is_not_that_peer(cluster):
    """Gamma's address listed first for beta: gamma holds the cluster key, but shows its
    own certificate, not the one pinned for beta, so alpha goes on to beta's own address."""
    a, b, c = cluster(3)
    wait_for(lambda: a.peer("beta")["device"] and a.peer("gamma")["device"], 20, "greeted")
    beta_device = a.peer("beta")["device"]
    syncd(a.home, "peer", "set", "beta", "--address", c.url, b.url)
    (a / "f").write_bytes(b"to beta")
    wait_content(b / "f", b"to beta")
    wait_for(lambda: a.peer("beta")["url"] == b.url and a.peer("beta")["state"] == "online",
             20, "beta reached at its own address")
    assert a.peer("beta")["device"] == beta_device
    syncd(a.home, "peer", "set", "beta", "--address", c.url)
    wait_for(lambda: a.peer("beta")["state"] == "offline", 20, "beta offline")
    beta = a.peer("beta")
    assert beta["device"] == beta_device
    # gamma's certificate is not the one pinned for beta
    assert f"beta ({c.url}) does not answer: its certificate is not the one pinned here" in \
        beta["last_error"]
