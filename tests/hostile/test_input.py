"""Hostile and broken input to the peer API of a real `syncd serve` (DESIGN rule 7): each
gets a clear 4xx whose `detail` says what was wrong, is logged once, and changes nothing in
the index or the store."""

from __future__ import annotations

import base64
import json
import socket
import time

import blake3
import pytest

from syncd import auth
from syncd.api import MAX_BODY, MAX_DATA
from tests.hostile.conftest import new_device, node_id, refused, state

# -- names and ids


BAD_NAMES = {
    "dot-dot": "..",
    "dot": ".",
    "slash": "a/b",
    "absolute": "/etc/passwd",
    "escaping": "../../outside",
    "empty": "",
    "nul": "a\0b",
    "256 bytes": "x" * 256,
    "256 bytes in 128 characters": "é" * 128,
    "lone high surrogate": "\ud800",
    "lone low surrogate": "a\udc80b",
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_a_name_that_escapes_or_is_not_one_component_is_refused(server, unchanged, name):
    good = state(node_id(), name="fine")
    r = server.push([good, state(node_id(), name=name)])  # the good one is not applied
    refused(server, r, 422, "name")


def test_a_name_of_255_bytes_is_fine(server):
    r = server.push([state(node_id(), name="é" * 127 + "x")])
    assert r.status_code == 200, r.text


BAD_IDS = {
    "traversal": "../x",
    "root with a tail": "root/..",
    "upper case": "ROOT",
    "short device": "abc:1",
    "no counter": "0" * 32,
    "huge counter": "0" * 32 + ":" + "9" * 19,
    "upper-case hex": "A" * 32 + ":1",
    "empty": "",
    "nul": "0" * 32 + ":1\0",
    "a special file's, local to each machine": "local:1",
}


@pytest.mark.parametrize("field", ["id", "parent", "conflict_of"])
@pytest.mark.parametrize("bad", BAD_IDS.values(), ids=BAD_IDS.keys())
def test_a_bad_node_id_is_refused(server, unchanged, field, bad):
    s = state(node_id(), name="ok")
    s[field] = bad
    refused(server, server.push([s]), 422, field)


@pytest.mark.parametrize("bad", ["", "0" * 31, "g" * 32, "0" * 33, "../" + "0" * 29])
def test_a_bad_device_id_is_refused(server, unchanged, bad):
    refused(server, server.push([state(node_id(), name="ok")], device=bad), 422, "device")
    hello = json.dumps({"device": bad, "name": "x"}).encode()
    server.mark()
    refused(server, server.request("POST", "/v1/hello", hello), 422, "device")


def test_a_push_in_another_devices_name_is_refused(server, unchanged):
    """The sender is the device of the certificate the connection presented, or nobody."""
    r = server.push([state(node_id(), name="forged")], device=new_device())
    refused(server, r, 403, server.peer_device, "may not push as device")


def test_a_live_node_without_a_parent_is_refused(server, unchanged):
    refused(server, server.push([state(node_id(), parent=None)]), 422, "parent")


def test_a_bad_chunk_digest_is_refused(server, unchanged):
    for digest in ["0" * 63, "A" * 64, "g" * 64, "0" * 65]:
        server.mark()
        refused(server, server.request("GET", f"/v1/chunks/{digest}"), 422, "digest")


def test_a_chunk_path_that_tries_to_escape_the_store_is_not_served(server, unchanged):
    # httpx resolves the dots: the request reaches /cluster.key, signed for another target
    server.expect_log(r"WARNING refused GET /cluster.key: bad signature")
    for target in ["/v1/chunks/..%2F..%2Findex.db", "/v1/chunks/%2e%2e%2f%2e%2e%2fcluster.key",
                   "/v1/chunks/../../cluster.key"]:
        server.mark()
        r = server.request("GET", target)
        assert 400 <= r.status_code < 500, r.text
        assert server.key.hex().encode() not in r.content
        assert b"SQLite" not in r.content


@pytest.mark.parametrize("query", ["since=-1", "since=x", f"since={1 << 64}", "limit=0",
                                   "limit=1001", "since=1e3"])
def test_a_bad_query_is_refused(server, unchanged, query):
    refused(server, server.request("GET", f"/v1/changes?{query}"), 422)


# -- bodies


@pytest.mark.parametrize("body", [
    b'{"device": "', b"{", b"not json", b"[]", b"null", b"7", b"\xff\xfe{}",
    b'{"device": "' + b"0" * 32 + b'", "changes": [' + b"[" * 100_000,
], ids=["truncated", "brace", "not json", "list", "null", "number", "not utf-8",
        "deeply nested"])
def test_a_malformed_body_is_refused(server, unchanged, body):
    refused(server, server.request("POST", "/v1/changes", body), 400)


def test_an_empty_body_is_refused(server, unchanged):
    refused(server, server.request("POST", "/v1/changes", b""), 400)


def test_a_body_not_declared_json_is_refused(server, unchanged):
    """A push's body is read by pydantic from its bytes (syncd/api.py, _validated): one
    sent as another type is refused as FastAPI refuses it for the other bodies."""
    body = json.dumps({"device": server.peer_device,
                       "changes": [state(node_id(), name="typed")]}).encode()
    for kind in ["text/plain", "application/x-www-form-urlencoded", "json"]:
        server.mark()
        refused(server, server.request("POST", "/v1/changes", body,
                                       headers={"content-type": kind}), 400, "JSON")


def test_unknown_fields_are_refused(server, unchanged):
    s = {**state(node_id(), name="ok"), "path": "../../etc"}
    refused(server, server.push([s]), 422, "path")


def test_a_batch_over_the_limit_is_refused(server, unchanged):
    d = new_device()
    states = [state(node_id(d, i), name=f"f{i}") for i in range(1, 1002)]
    refused(server, server.push(states), 422, "1000")


def test_a_body_over_64_mib_gets_413(server, unchanged):
    body = b'{"device": "' + b"0" * (MAX_BODY + 1)
    refused(server, server.request("POST", "/v1/changes", body), 413, "64 MiB")


def test_a_body_over_64_mib_without_a_length_gets_413(server, unchanged):
    def stream():
        for _ in range(65):
            yield b" " * (1 << 20)

    headers = auth.sign_request(server.key, "POST", "/v1/changes", b"")
    r = server.client.post("/v1/changes", content=stream(), headers=headers)
    refused(server, r, 413, "64 MiB")


def test_a_request_cut_short_changes_nothing(server, unchanged):
    """The client announces more body than it sends, then closes: nothing is applied,
    and the server goes on serving."""
    server.expect_log(r"WARNING POST /v1/changes: the client left before sending its whole "
                      r"body")
    body = json.dumps({"device": server.peer_device, "changes": [state(node_id())]}).encode()
    for sent in (body[: len(body) // 2], body[:-1], b""):
        server.mark()
        headers = auth.sign_request(server.key, "POST", "/v1/changes", sent)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
                server.tls.wrap_socket(raw) as s:
            s.sendall(f"POST /v1/changes HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                      f"{head}\r\n".encode() + sent)
            s.shutdown(socket.SHUT_WR)  # ends TLS too: the server reads the end of it
            while s.recv(65536):  # whatever it sends (TLS records), until it closes
                pass
        assert server.request("GET", "/v1/changes?since=0").status_code == 200
        complaints = [line for line in server.new_log().splitlines()
                      if " WARNING " in line or " ERROR " in line]
        assert len(complaints) == 1, complaints
        assert "left before sending its whole body" in complaints[0]


# -- authentication


BODY = json.dumps({"device": "0" * 32, "changes": []}).encode()
JSON = {"content-type": "application/json"}


def test_a_replayed_request_is_refused(server):
    d = new_device()
    body = json.dumps({"device": server.peer_device,
                       "changes": [state(node_id(d), name="once")]}).encode()
    headers = {**auth.sign_request(server.key, "POST", "/v1/changes", body), **JSON}
    first = server.client.post("/v1/changes", content=body, headers=headers)
    assert first.status_code == 200, first.text
    after_first = server.snapshot()
    server.mark()
    again = server.client.post("/v1/changes", content=body, headers=headers)
    refused(server, again, 401, "replayed")
    assert server.snapshot() == after_first


def test_a_request_signed_with_another_key_is_refused(server, unchanged):
    r = server.request("POST", "/v1/changes", BODY, key=auth.new_key())
    refused(server, r, 401, "bad signature")


@pytest.mark.parametrize("missing", [auth.TIME, auth.NONCE, auth.SIGNATURE])
def test_a_request_missing_a_header_is_refused(server, unchanged, missing):
    headers = {**auth.sign_request(server.key, "POST", "/v1/changes", BODY), **JSON}
    del headers[missing]
    r = server.client.post("/v1/changes", content=BODY, headers=headers)
    refused(server, r, 401, "missing header", missing)


def test_an_unsigned_request_is_refused(server, unchanged):
    refused(server, server.request("POST", "/v1/changes", BODY, key=None), 401, "unsigned")


@pytest.mark.parametrize("off", [-301, 301, -10**9])
def test_a_stale_time_is_refused(server, unchanged, off):
    r = server.request("POST", "/v1/changes", BODY, now=time.time() + off)
    refused(server, r, 401, "stale time")


@pytest.mark.parametrize(("header", "value", "word"), [
    (auth.NONCE, "short", "malformed"), (auth.NONCE, "Z" * 32, "malformed"),
    (auth.SIGNATURE, "00", "malformed"), (auth.SIGNATURE, "0" * 64, "bad signature"),
    (auth.TIME, "1" * 10, "bad signature"),  # the signature covers the time
])
def test_a_malformed_auth_header_is_refused(server, unchanged, header, value, word):
    headers = {**auth.sign_request(server.key, "POST", "/v1/changes", BODY), **JSON}
    headers[header] = value
    r = server.client.post("/v1/changes", content=BODY, headers=headers)
    refused(server, r, 401, word)


@pytest.mark.parametrize("stamp", ["soon", "-5", "1" * 40, "1e9", "+1"])
def test_a_malformed_time_is_refused_even_when_signed(server, unchanged, stamp):
    nonce = "ab" * 16
    mac = auth._mac(server.key, ["syncd-request-v1", "POST", "/v1/changes", stamp, nonce],
                    auth.body_hash(BODY))
    headers = {auth.TIME: stamp, auth.NONCE: nonce, auth.SIGNATURE: mac, **JSON}
    r = server.client.post("/v1/changes", content=BODY, headers=headers)
    refused(server, r, 401, "malformed", auth.TIME)


@pytest.mark.parametrize(("method", "target", "body"), [
    ("POST", "/v1/changes", BODY + b" "),  # the body was altered
    ("POST", "/v1/hello", BODY),  # signed for another path
    ("GET", "/v1/changes", BODY),  # signed for another method
    ("POST", "/v1/changes?x=1", BODY),  # a query was added
])
def test_a_request_altered_on_the_way_is_refused(server, unchanged, method, target, body):
    headers = {**auth.sign_request(server.key, "POST", "/v1/changes", BODY), **JSON}
    r = server.client.request(method, target, content=body, headers=headers)
    refused(server, r, 401, "bad signature")


# -- content that cannot be what it says


@pytest.mark.parametrize(("field", "value"), [
    ("size", 5 << 40),  # a 5 TiB file of one chunk: reads would be zeros
    ("size", 0),
    ("chunks", []),
    ("chunks", ["ab" * 32] * 3),  # 3 chunks to fetch for 1 byte
    ("hash", "blake3:" + "0" * 64),  # a hash that is not the chunk list's decides conflicts
    ("hash", None),
])
def test_a_file_whose_content_cannot_be_what_it_says_is_refused(server, unchanged, field,
                                                                value):
    s = state(node_id(), name="content", data=b"x")
    s["content"][field] = value
    refused(server, server.push([s]), 422, "changes.0")


@pytest.mark.parametrize("kind", ["dir", "symlink"])
def test_chunks_on_what_is_not_a_file_are_refused(server, unchanged, kind):
    s = state(node_id(), name="odd", kind=kind)
    s["content"]["chunks"] = ["ab" * 32]
    refused(server, server.push([s]), 422, "chunks")


@pytest.mark.parametrize("kind", ["fifo", "socket", "chardev", "blockdev"])
def test_special_files_never_travel(server, unchanged, kind):
    # local to the machine that made them (docs/cli.md): no kind for them on the wire
    refused(server, server.push([state(node_id(), name="special", kind=kind)]), 422, "kind")


@pytest.mark.parametrize("target", [None, "", "YQBi"])  # none, empty, b"a\0b"
def test_a_symlink_without_a_usable_target_is_refused(server, unchanged, target):
    s = state(node_id(), name="link", kind="symlink")
    s["content"]["target"] = target
    refused(server, server.push([s]), 422, "target")


def test_a_tombstone_needs_no_content(server):
    for kind in ("file", "dir", "symlink"):
        s = state(node_id(), name=f"gone-{kind}", kind=kind, deleted=True)
        assert s["content"]["chunks"] == [] and s["content"]["hash"] is None
        r = server.push([s])
        assert r.status_code == 200, r.text


# -- small content carried in its state (docs/protocol.md, "Node states": `data`)


def with_data(s: dict, data: bytes) -> dict:
    s["content"]["data"] = base64.b64encode(data).decode()
    return s


def test_a_small_file_arrives_with_its_bytes_which_are_then_served(server):
    data = b"small content, carried in its state"
    node = node_id()
    r = server.push([with_data(state(node, name="carried", data=data), data)])
    assert r.status_code == 200, r.text
    digest = blake3.blake3(data).hexdigest()
    one = server.request("GET", f"/v1/chunks/{digest}")
    assert one.status_code == 200 and one.content == data
    many = server.request("POST", "/v1/chunks",
                          json.dumps({"chunks": ["ab" * 32, digest]}).encode())
    assert many.content == data and many.headers["x-syncd-sizes"] == f"-1,{len(data)}"
    # states carry the bytes for a caller that asks (inline=1) only
    carried = base64.b64encode(data).decode()
    asked = server.request("GET", f"/v1/nodes/{node}?inline=1").json()["state"]
    assert asked["content"]["data"] == carried
    assert "data" not in server.request("GET", f"/v1/nodes/{node}").json()["state"]["content"]
    pulled = server.request("GET", "/v1/changes?since=0&inline=1").json()["changes"]
    assert [s["content"]["data"] for s in pulled if s["id"] == node] == [carried]


DATA = b"the bytes this state names"
BIG = b"x" * (MAX_DATA + 1)
BAD_DATA = {  # what is sent as `data`, and how the state is made (tests.hostile.conftest)
    "other bytes": (DATA.upper(), {"data": DATA}),
    "one byte more": (DATA + b"!", {"data": DATA}),
    "not base64": ("not base64!", {"data": DATA}),
    "over 64 KiB": (BIG, {"data": BIG}),
    "a hole's": (bytes(16), {"data": bytes(16)}),
    "a directory's": (DATA, {"kind": "dir"}),
    "a tombstone's": (DATA, {"deleted": True}),
}


@pytest.mark.parametrize(("sent", "made"), BAD_DATA.values(), ids=BAD_DATA.keys())
def test_bytes_a_state_cannot_carry_are_refused_and_nothing_is_applied(server, unchanged,
                                                                      sent, made):
    good = with_data(state(node_id(), name="fine", data=b"fine"), b"fine")
    bad = state(node_id(), name="carried-wrong", **made)
    bad["content"]["data"] = sent if isinstance(sent, str) else \
        base64.b64encode(sent).decode()
    refused(server, server.push([good, bad]), 422, "data")


# -- extended attributes (docs/protocol.md, "Node states": xattr)


def _with_xattrs(s: dict, attrs: dict) -> dict:
    device = s["place"]["device"]
    entries = {name: {"value": None if value is None else base64.b64encode(value).decode(),
                      "clock": 1, "device": device} for name, value in attrs.items()}
    return {**s, "xattr": {**s["place"], "attrs": entries}}


BAD_XATTRS = {
    "virtual": {"user.syncd.state": b"local"},
    "other namespace": {"security.capability": b"x"},
    "no name after user.": {"user.": b"x"},
    "name of 256 bytes": {"user." + "x" * 251: b"x"},
    "value over 64 KiB": {"user.big": b"x" * (64 * 1024 + 1)},
    "more than 16 MiB on one node": {f"user.{i}": b"x" * (64 * 1024) for i in range(257)},
}


@pytest.mark.parametrize("attrs", BAD_XATTRS.values(), ids=BAD_XATTRS.keys())
def test_bad_extended_attributes_are_refused(server, unchanged, attrs):
    good = state(node_id(), name="fine")
    r = server.push([good, _with_xattrs(state(node_id(), name="x"), attrs)])
    refused(server, r, 422, "xattr")


def test_more_than_one_machines_limit_arrives_as_merges_make_it(server):
    # Two machines that set 120 and 60 KiB at once on one file both keep theirs (a merge
    # name by name): 180 KiB, past the 128 KiB one machine may set.
    attrs = {"user.a": b"a" * (60 << 10), "user.a2": b"a" * (60 << 10),
             "user.b": b"b" * (60 << 10)}
    r = server.push([_with_xattrs(state(node_id(), name="merged"), attrs)])
    assert r.status_code == 200, r.text
    rows = server.snapshot()["tables"]["xattrs"]
    assert sorted(row[1] for row in rows if row[2] is not None and len(row[2]) > 1000) == \
        ["user.a", "user.a2", "user.b"]


def test_extended_attributes_on_a_symlink_are_refused(server, unchanged):
    s = _with_xattrs(state(node_id(), name="l", kind="symlink"), {"user.a": b"1"})
    refused(server, server.push([s]), 422, "symlink")


def test_extended_attributes_arrive(server):
    s = _with_xattrs(state(node_id(), name="with-attrs"), {"user.a": b"\x00\xff",
                                                          "user.gone": None})
    r = server.push([s])
    assert r.status_code == 200, r.text
    rows = server.snapshot()["tables"]["xattrs"]
    newest = max(row[0] for row in rows)
    assert [row[1:] for row in rows if row[0] == newest] == [
        ("user.a", b"\x00\xff", 1, s["place"]["device"]),
        ("user.gone", None, 1, s["place"]["device"])]


@pytest.mark.parametrize("body", [b'{"key": "0123"}', b'{"key": "' + b"G" * 64 + b'"}',
                                  b'{"key": "' + b"a" * 64 + b'", "more": 1}', b"[]"])
def test_a_bad_new_cluster_key_is_refused(server, unchanged, body):
    refused(server, server.request("POST", "/v1/cluster-key", body), 422 if body != b"[]"
            else 400)
    assert auth.parse_key((server.home / "cluster.key").read_text()) == server.key


def test_a_new_cluster_key_from_an_admitted_peer_is_taken(fresh_server):
    new = auth.new_key()
    r = fresh_server.request("POST", "/v1/cluster-key", json.dumps({"key": new.hex()}).encode())
    assert r.status_code == 200  # signed with the old key (checked by request())
    assert auth.parse_key((fresh_server.home / "cluster.key").read_text()) == new
    assert fresh_server.request("GET", "/v1/changes?since=0", key=new).status_code == 200
    fresh_server.expect_log(r"WARNING refused GET /v1/changes\?since=0: bad signature")
    assert fresh_server.request("GET", "/v1/changes?since=0").status_code == 401  # the old


LEASE_OK = {"chunks": ["ab" * 32], "seconds": 30}
BAD_LEASES = {
    "no chunks": ({"chunks": [], "seconds": 30}, "chunks"),
    "a digest that is not one": ({"chunks": ["../x"], "seconds": 30}, "chunks"),
    "too many chunks": ({"chunks": ["ab" * 32] * 1001, "seconds": 30}, "chunks"),
    "no seconds": ({"chunks": ["ab" * 32]}, "seconds"),
    "no time at all": ({**LEASE_OK, "seconds": 0}, "seconds"),
    "negative seconds": ({**LEASE_OK, "seconds": -5}, "seconds"),
    "longer than ten minutes": ({**LEASE_OK, "seconds": 601}, "seconds"),
    "seconds as text": ({**LEASE_OK, "seconds": "soon"}, "seconds"),
    "an unknown field": ({**LEASE_OK, "forever": True}, "forever"),
}


@pytest.mark.parametrize(("body", "word"), BAD_LEASES.values(), ids=BAD_LEASES.keys())
def test_a_malformed_lease_is_refused(server, unchanged, body, word):
    r = server.request("POST", "/v1/lease", json.dumps(body).encode())
    refused(server, r, 422, word)


def test_a_lease_of_chunks_not_held_here_leases_nothing(server, unchanged):
    r = server.request("POST", "/v1/lease", json.dumps(LEASE_OK).encode())
    assert r.status_code == 200, r.text
    assert r.json() == {"leased": []}
