"""Peers talk mutual TLS with pinned certificates (docs/protocol.md, "Identity and TLS"):
real homes on 127.0.0.1, real TLS, the real CLI."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import threading
import time

import httpx
import pytest

from syncd import auth
from tests.helpers import syncd, tls_client, wait_for
from tests.hostile.conftest import node_id, state
from tests.peers.conftest import read, wait_content


def fingerprint(home) -> str:
    return json.loads(syncd(home, "id", "--json").stdout)["fingerprint"]


def signed(client: httpx.Client, key: str, url: str, method: str = "GET",
           target: str = "/v1/changes?since=0") -> httpx.Response:
    headers = auth.sign_request(bytes.fromhex(key), method, target, b"")
    return client.request(method, url + target, headers=headers)


def refusal(error: str | None) -> bool:
    """A peer's last_error says that the other one refuses this machine (a 403 for a
    request on a connection opened before, or its certificate refused in the handshake,
    which a client sees as an alert or as the connection closed before any answer)."""
    return any(words in (error or "") for words in (
        "does not admit this machine", "refused this machine's certificate",
        "it closed the connection before answering, as a peer does to a certificate it has "
        "not pinned"))


def stays_away(path, seconds: float = 4.0) -> bool:
    """Nothing appears at `path` for a while (what a refused peer sends never arrives)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if read(path) is not None:
            return False
        time.sleep(0.2)
    return True


def test_the_first_proven_hello_pins_the_peers_certificate(cluster):
    a, b = cluster(2)
    (a / "f").write_bytes(b"over TLS")
    wait_content(b / "f", b"over TLS")
    for p, q in ((a, b), (b, a)):
        peer = p.peer(q.name)
        assert peer["pinned"] and peer["fingerprint"] == fingerprint(q.home)
        assert peer["device"] == q.status()["device"]["id"]


def test_a_device_with_the_key_that_nobody_here_added_is_refused(cluster):
    a, b, c = cluster(3, mounted=False)
    a.expect_log(r"refused GET /v1/changes\?since=0: 403")
    for p in (a, b):
        syncd(p.home, "peer", "remove", "gamma")  # gamma holds the key, and knows them
    for p in (a, b, c):
        p.start()
    (c / "from-gamma").write_bytes(b"let me in")
    (a / "from-alpha").write_bytes(b"members only")
    wait_content(b / "from-alpha", b"members only")
    assert stays_away(a / "from-gamma") and stays_away(b / "from-gamma", 0.5)
    assert read(c / "from-alpha") is None
    wait_for(lambda: refusal(c.peer("alpha")["last_error"]), 20,
             "gamma to say why alpha refuses it")
    with tls_client(a.home, c.home) as client, pytest.raises(httpx.TransportError):
        signed(client, c.key, a.url)  # its certificate: refused by TLS
    with tls_client(a.home) as client:  # no certificate: hello only
        r = signed(client, c.key, a.url)
        assert r.status_code == 403 and "no certificate" in r.json()["detail"]
    assert not a.peer("beta")["last_error"]


def hello(client: httpx.Client, key: str, url: str, device: str, name: str,
          fingerprint: str) -> httpx.Response:
    body = json.dumps({"device": device, "name": name, "fingerprint": fingerprint,
                       "server": None}).encode()
    headers = {**auth.sign_request(bytes.fromhex(key), "POST", "/v1/hello", body),
               "content-type": "application/json"}
    return client.post(url + "/v1/hello", content=body, headers=headers)


def test_a_hello_without_a_certificate_cannot_name_a_pinned_device(cluster):
    """Only beta's pinned certificate speaks for beta: a hello naming beta on a
    connection that presents none is refused (403), and nothing of it is taken (beta's
    loop is not woken); a device nobody pinned still introduces itself so."""
    a, b = cluster(2)
    (a / "f").write_bytes(b"paired")
    wait_content(b / "f", b"paired")
    wait_for(lambda: a.peer("beta")["pinned"], 20, "alpha to pin beta")
    beta = b.status()["device"]["id"]
    with tls_client(a.home) as client:  # no certificate
        r = hello(client, a.key, a.url, beta, "beta", fingerprint(b.home))
        assert r.status_code == 403, r.text
        assert r.json()["detail"] == (f"device {beta}'s certificate is pinned here: a hello "
                                      "naming it must present that certificate, and this "
                                      "connection presents none")
        r = hello(client, a.key, a.url, "ab" * 16, "newcomer", "cd" * 32)
        assert r.status_code == 200 and r.json()["client"] is None, r.text
    with tls_client(a.home, b.home) as client:  # beta's own certificate
        r = hello(client, a.key, a.url, beta, "beta", fingerprint(b.home))
        assert r.status_code == 200 and r.json()["client"] == fingerprint(b.home), r.text
    assert a.peer("beta")["pinned"] and a.peer("beta")["device"] == beta


def test_a_peer_that_pinned_us_first_is_greeted_with_our_certificate(cluster):
    """beta pins alpha at its first hello while alpha does not know beta yet; alpha,
    told of beta later, says its first hello without a certificate, is refused (beta
    pinned alpha's), says it again presenting it, and the two exchange."""
    a, b = cluster(2, mounted=False)
    syncd(a.home, "peer", "remove", "beta")
    a.start()
    b.start()
    wait_for(lambda: b.peer("alpha")["pinned"], 20, "beta to pin alpha")
    syncd(a.home, "peer", "add", "beta", b.url)
    (a / "from-alpha").write_bytes(b"a")
    (b / "from-beta").write_bytes(b"b")
    wait_content(b / "from-alpha", b"a", 30)
    wait_content(a / "from-beta", b"b", 30)
    assert a.peer("beta")["pinned"] and a.peer("beta")["fingerprint"] == fingerprint(b.home)


def test_a_certificate_other_than_the_fingerprint_given_is_never_pinned(cluster):
    a, b = cluster(2, mounted=False)
    syncd(a.home, "peer", "remove", "beta")
    syncd(a.home, "peer", "add", "beta", b.url, "--fingerprint", "0f" * 32)
    a.start()
    b.start()
    (b / "f").write_bytes(b"from beta")
    wait_for(lambda: "given with --fingerprint" in (a.peer("beta")["last_error"] or ""), 20,
             "alpha to refuse beta's certificate")
    assert stays_away(a / "f")
    assert not a.peer("beta")["pinned"] and a.peer("beta")["device"] is None
    # the right one, given: pinned at the first hello, and the file comes
    syncd(a.home, "peer", "remove", "beta")
    syncd(a.home, "peer", "add", "beta", b.url, "--fingerprint", fingerprint(b.home).upper())
    wait_content(a / "f", b"from beta")
    assert a.peer("beta")["pinned"]


def test_a_peer_that_shows_another_certificate_than_the_pinned_one_is_refused(cluster):
    a, b = cluster(2)
    (a / "one").write_bytes(b"1")
    wait_content(b / "one", b"1")
    pinned = a.peer("beta")["fingerprint"]
    b.stop()
    (b.home / "device.pem").unlink()  # a new key pair and certificate, same device
    b.start()
    assert fingerprint(b.home) != pinned
    (b / "two").write_bytes(b"2")
    (a / "three").write_bytes(b"3")
    wait_for(lambda: "not the one pinned here" in (a.peer("beta")["last_error"] or ""), 30,
             "alpha to refuse beta's new certificate")
    assert stays_away(a / "two") and read(b / "three") is None
    assert a.peer("beta")["fingerprint"] == pinned


def test_a_peer_cannot_push_in_another_peers_name(cluster):
    """beta's certificate admits beta only: a push that names gamma as its sender is
    refused (403) and applies nothing; the same push in beta's own name is applied."""
    a, b, c = cluster(3)
    a.expect_log(r"refused POST /v1/changes: 403 this connection's certificate is device")
    (a / "hello").write_bytes(b"all three")
    for p in (b, c):
        wait_content(p / "hello", b"all three")
    wait_for(lambda: all(a.peer(q.name)["pinned"] for q in (b, c)), 20,
             "alpha to pin beta and gamma")
    beta, gamma = (p.status()["device"]["id"] for p in (b, c))
    dir_state = state(node_id(), name="forged", kind="dir")  # made by a device beta relays

    def push(sender: str) -> httpx.Response:
        body = json.dumps({"device": sender, "changes": [dir_state]}).encode()
        headers = {**auth.sign_request(bytes.fromhex(b.key), "POST", "/v1/changes", body),
                   "content-type": "application/json"}
        with tls_client(a.home, b.home) as client:
            return client.post(a.url + "/v1/changes", content=body, headers=headers)

    r = push(gamma)
    assert r.status_code == 403, r.text
    assert f"device {beta}'s: it may not push as device {gamma}" in r.json()["detail"]
    assert not os.path.lexists(a / "forged")  # a push answers once applied: nothing was
    r = push(beta)
    assert r.status_code == 200 and r.json() == {"applied": 1}, r.text
    wait_for(lambda: (a / "forged").is_dir(), 10, "beta's own push to apply")


def test_a_removed_peer_is_refused_on_its_next_request(cluster):
    a, b = cluster(2)
    a.expect_log(r"refused GET /v1/changes\?since=0: 403",
                 r"refused POST /v1/(hello|changes): 403")
    (a / "f").write_bytes(b"before")
    wait_content(b / "f", b"before")
    with tls_client(a.home, b.home) as client:
        assert signed(client, b.key, a.url).status_code == 200  # a kept-alive connection
        syncd(a.home, "peer", "remove", "beta")
        r = signed(client, b.key, a.url)  # on the same connection
        assert r.status_code == 403 and "not admitted here" in r.json()["detail"]
    with tls_client(a.home, b.home) as client, pytest.raises(httpx.TransportError):
        signed(client, b.key, a.url)  # a new connection: its certificate is not trusted
    (b / "g").write_bytes(b"after")
    assert stays_away(a / "g")
    wait_for(lambda: refusal(b.peer("alpha")["last_error"]), 20,
             "beta to say that alpha refuses it")
    assert b.peer("alpha")["pending_changes"] >= 1  # kept for alpha, never skipped


def test_plain_http_to_the_peer_port_gets_nothing(cluster):
    (a,) = cluster(1)
    port = int(a.url.rpartition(":")[2])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /v1/changes HTTP/1.1\r\nHost: alpha\r\n\r\n")
        received = b""
        while chunk := s.recv(4096):
            received += chunk
    assert b"HTTP" not in received
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/v1/changes", timeout=10)


def test_a_rotated_key_shuts_out_the_device_that_did_not_get_it(cluster):
    a, b, c = cluster(3)
    (a / "one").write_bytes(b"1")
    for p in (b, c):
        wait_content(p / "one", b"1")
    wait_for(lambda: all(p.peer(q.name)["pinned"] for p in (a, b, c) for q in (a, b, c)
                         if q is not p), 20, "every peer pinned by every other")
    old = a.key
    syncd(a.home, "peer", "remove", "gamma")  # gamma must leave the group
    done = syncd(a.home, "cluster-key", "--rotate")
    assert done.stdout.strip() == "new cluster key; handed to: beta" and not done.stderr
    new = syncd(a.home, "cluster-key").stdout.strip()
    assert new != old and syncd(b.home, "cluster-key").stdout.strip() == new
    assert syncd(c.home, "cluster-key").stdout.strip() == old
    (a / "two").write_bytes(b"2")
    wait_content(b / "two", b"2")  # alpha and beta go on with the new key
    (b / "three").write_bytes(b"3")
    wait_content(a / "three", b"3")
    # beta still admits gamma's certificate, but gamma cannot prove membership any more
    b.expect_log(r"WARNING refused \S+ /v1/\S+: bad signature")
    c.expect_log(r"WARNING refused \S+ /v1/\S+: bad signature")
    # and alpha, when gamma's requests get there: on a connection kept alive from before
    # its removal, or as the hello a device without a pin may still send
    a.expect_log(r"WARNING refused \S+ /v1/\S+: bad signature")
    (c / "four").write_bytes(b"4")
    assert stays_away(b / "four") and stays_away(a / "four", 0.5)
    assert read(c / "two") is None
    wait_for(lambda: "do not share a cluster key" in (c.peer("beta")["last_error"] or ""), 30,
             "gamma to learn that beta does not share its key")


class Relay:
    """A man in the middle: terminates TLS with a certificate of its own (a device of
    the cluster's, `home`) and relays every byte to `port` over TLS of its own: what it
    sees, it passes on unchanged, valid signatures included."""

    def __init__(self, home, port: int):
        self.target = port
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(home / "device.pem")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        self.relayed = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                raw, _ = self.listener.accept()
                self.sockets.append(raw)
                threading.Thread(target=self._relay, args=(raw,), daemon=True).start()

    def _relay(self, raw: socket.socket) -> None:
        with contextlib.suppress(OSError):
            client = self.tls.wrap_socket(raw, server_side=True)
            onward = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            onward.check_hostname, onward.verify_mode = False, ssl.CERT_NONE
            server = onward.wrap_socket(socket.create_connection(("127.0.0.1", self.target)))
            self.sockets += [client, server]
            self.relayed += 1
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
            self._pipe(client, server)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        for s in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                s.close()


def test_a_man_in_the_middle_relaying_valid_signatures_is_never_pinned(cluster):
    a, b, c = cluster(3, mounted=False)
    relay = Relay(c.home, int(a.url.rpartition(":")[2]))  # with gamma's certificate
    try:
        syncd(b.home, "peer", "set", "alpha", "--address", relay.url)
        a.start()
        b.start()
        # (alpha, having pinned beta first, refuses beta's hello through the relay,
        # which presents no certificate of beta's: beta says that too)
        wait_for(lambda: "something between the two machines terminates TLS" in
                 (b.peer("alpha")["last_error"] or ""), 30, "beta to refuse the relay")
        assert relay.relayed  # the signed answer came back through it, and was not enough
        alpha = b.peer("alpha")
        assert (alpha["pinned"], alpha["fingerprint"], alpha["device"]) == (False, None, None)
        (b / "f").write_bytes(b"not through the relay")
        assert stays_away(a / "f")
    finally:
        relay.close()
