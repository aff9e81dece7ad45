"""The command line for the cluster key and peers (docs/cli.md), run as a user would."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import assert_clean_error, syncd

KEY = "0123456789abcdef" * 4


def key_of(home: Path) -> str:
    out = syncd(home, "cluster-key").stdout
    assert out.endswith("\n") and out.count("\n") == 1
    return out.strip()


def peers(home: Path) -> list[dict]:
    out = json.loads(syncd(home, "peer", "list", "--json").stdout)
    assert out["schema_version"] == 1
    return out["peers"]


def test_init_makes_a_new_key_readable_by_its_owner_only(home, tmp_path):
    key = key_of(home)
    assert re.fullmatch("[0-9a-f]{64}", key)
    path = home / "cluster.key"
    assert path.read_text() == key + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(home.glob("*.tmp"))
    other = tmp_path / "other"
    syncd(other, "init", "--name", "other")
    assert key_of(other) != key


def test_init_makes_a_key_pair_and_a_certificate_of_the_device(home, tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    shown = json.loads(syncd(home, "id", "--json").stdout)
    device = json.loads(syncd(home, "status", "--json").stdout)["device"]["id"]
    pem = (home / "device.pem").read_bytes()
    assert stat.S_IMODE((home / "device.pem").stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in pem
    cert = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE"):])
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device
    assert shown == {"schema_version": 1, "device": device, "name": "test",
                     "fingerprint": hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()}
    assert syncd(home, "id").stdout.split() == ["device", device,
                                                "fingerprint", shown["fingerprint"]]
    assert syncd(home, "id").stdout == syncd(home, "id").stdout  # made once
    syncd(tmp_path / "other", "init", "--name", "other")
    assert json.loads(syncd(tmp_path / "other", "id", "--json").stdout)["fingerprint"] != \
        shown["fingerprint"]
    assert_clean_error(syncd(tmp_path / "none", "id", check=False), 3, "syncd init")


def test_init_with_the_key_of_a_cluster(tmp_path):
    syncd(tmp_path / "a", "init", "--cluster-key", KEY)
    assert key_of(tmp_path / "a") == KEY
    (tmp_path / "key").write_text(f"  {KEY}\n\n")
    syncd(tmp_path / "b", "init", "--cluster-key-file", str(tmp_path / "key"))
    assert key_of(tmp_path / "b") == KEY
    syncd(tmp_path / "c", "init", "--cluster-key-file", "-", input=KEY + "\n")
    assert key_of(tmp_path / "c") == KEY


@pytest.mark.parametrize("args, stdin, words", [
    (["--cluster-key", KEY[:-1]], None, "64 lowercase hex digits"),
    (["--cluster-key", KEY.upper()], None, "64 lowercase hex digits"),
    (["--cluster-key-file", "-"], "", "standard input: a cluster key is 64"),
    (["--cluster-key-file", "-"], KEY + "é", "standard input: a cluster key is 64"),
    (["--cluster-key-file", "KEYFILE"], None, "KEYFILE: a cluster key is 64"),
    (["--cluster-key-file", "MISSING"], None, "cannot read the cluster key from"),
])
def test_a_bad_key_is_a_usage_error_and_creates_nothing(tmp_path, args, stdin, words):
    (tmp_path / "KEYFILE").write_bytes(b"\xff" + KEY.encode())
    args = [str(tmp_path / a) if a in ("KEYFILE", "MISSING") else a for a in args]
    done = syncd(tmp_path / "h", "init", *args, check=False, input=stdin)
    assert_clean_error(done, 2, words.replace("KEYFILE", str(tmp_path / "KEYFILE")))
    assert KEY not in done.stderr  # a mistyped key is not echoed
    assert not (tmp_path / "h").exists()


def test_the_key_options_exclude_each_other(tmp_path):
    done = syncd(tmp_path / "h", "init", "--cluster-key", KEY, "--cluster-key-file", "-",
                 check=False, input=KEY)
    assert done.returncode == 2 and "not allowed with" in done.stderr
    assert not (tmp_path / "h").exists()


def test_a_key_is_rotated_only_by_the_serving_process(home):
    key = key_of(home)
    assert_clean_error(syncd(home, "cluster-key", "--rotate", check=False), 4, "is not served")
    assert key_of(home) == key


def test_cluster_key_errors(home, tmp_path):
    assert_clean_error(syncd(tmp_path / "none", "cluster-key", check=False), 3, "syncd init")
    (home / "cluster.key").write_text("not a key\n")
    assert_clean_error(syncd(home, "cluster-key", check=False), 1, "malformed")
    (home / "cluster.key").unlink()
    assert_clean_error(syncd(home, "cluster-key", check=False), 1, "cluster.key is missing")


def test_peer_add_list_set_remove(home):
    assert peers(home) == []
    assert "no peers" in syncd(home, "peer", "list").stdout
    assert "added peer beta" in syncd(home, "peer", "add", "beta", "https://10.0.0.2:7700/").stdout
    syncd(home, "peer", "add", "a.l-p_h4", "[::1]:7701")  # https:// is the default
    syncd(home, "peer", "add", "gamma", "gamma.example:80", "--fingerprint", "AB:" * 31 + "AB")
    assert peers(home) == [
        {"name": name, "url": url, "addresses": [url], "discovered": [], "device": None,
         "fingerprint": "ab" * 32 if name == "gamma" else None, "pinned": False,
         "state": "unknown", "last_seen": None}
        for name, url in (("a.l-p_h4", "https://[::1]:7701"), ("beta", "https://10.0.0.2:7700"),
                          ("gamma", "https://gamma.example:80"))]
    syncd(home, "peer", "set", "beta", "outofuse")
    assert [p["state"] for p in peers(home)] == ["unknown", "outofuse", "unknown"]
    syncd(home, "peer", "set", "beta", "auto")
    assert [p["state"] for p in peers(home)] == ["unknown"] * 3
    syncd(home, "peer", "remove", "a.l-p_h4")
    assert [p["name"] for p in peers(home)] == ["beta", "gamma"]


def test_peer_list_shows_what_the_daemon_learned(home):
    syncd(home, "peer", "add", "beta", "https://10.0.0.2:7700")
    syncd(home, "peer", "add", "gamma-with-a-long-name", "https://10.0.0.3:7700")
    with sqlite3.connect(home / "index.db") as conn:
        conn.execute("UPDATE peers SET device = ?, state = 'online', last_seen = ? "
                     "WHERE name = 'beta'", ("9c" * 16, 1_763_900_000))
    conn.close()
    assert peers(home)[0] == {"name": "beta", "url": "https://10.0.0.2:7700",
                              "addresses": ["https://10.0.0.2:7700"], "discovered": [],
                              "device": "9c" * 16, "fingerprint": None, "pinned": False,
                              "state": "online",
                              "last_seen": "2025-11-23T12:13:20Z"}
    lines = syncd(home, "peer", "list").stdout.splitlines()
    assert lines[0].split() == ["NAME", "URL", "STATE", "LAST", "SEEN", "DEVICE"]
    assert lines[1].split() == ["beta", "https://10.0.0.2:7700", "online",
                                "2025-11-23T12:13:20Z", "9c" * 16]
    assert lines[2].split() == ["gamma-with-a-long-name", "https://10.0.0.3:7700", "unknown",
                                "never", "-"]
    assert len({line.index("http") for line in lines[1:]}) == 1  # aligned
    assert lines[0].index("URL") == lines[1].index("http")


@pytest.mark.parametrize("url", [
    "ftp://10.0.0.2:7700", "https://10.0.0.2", "https://10.0.0.2:0", "https://10.0.0.2:65536",
    "https://10.0.0.2:7700/v1", "10.0.0.2", "https://user@host:7700", "https://:7700",
    "https://host:77a", "https://host:7700//", ":7700",
])
def test_peer_add_refuses_other_urls(home, url):
    assert_clean_error(syncd(home, "peer", "add", "beta", url, check=False), 2,
                       "want https://HOST:PORT or HOST:PORT")
    assert peers(home) == []


def test_an_http_address_is_refused_with_what_to_write(home):
    assert_clean_error(syncd(home, "peer", "add", "beta", "http://10.0.0.2:7700/", check=False),
                       2, "peers talk TLS only, use https://10.0.0.2:7700")
    assert peers(home) == []


@pytest.mark.parametrize("fingerprint", ["ab" * 31, "ab" * 33, "zz" * 32, ""])
def test_a_bad_fingerprint_is_a_usage_error(home, fingerprint):
    assert_clean_error(syncd(home, "peer", "add", "beta", "10.0.0.2:7700", "--fingerprint",
                             fingerprint, check=False), 2, "--fingerprint: a fingerprint is 64")
    assert peers(home) == []


@pytest.mark.parametrize("name", ["", "a" * 65, "a/b", "a b", "é", "a\n"])
def test_peer_add_refuses_bad_names(home, name):
    assert_clean_error(syncd(home, "peer", "add", "--", name, "https://h:1", check=False), 2,
                       "bad peer name")
    assert peers(home) == []


def test_peer_errors(home, tmp_path):
    syncd(home, "peer", "add", "beta", "https://10.0.0.2:7700")
    assert_clean_error(syncd(home, "peer", "add", "beta", "https://10.0.0.9:7700", check=False),
                       4, "already a peer named 'beta'")
    assert peers(home)[0]["url"] == "https://10.0.0.2:7700"
    assert_clean_error(syncd(home, "peer", "add", "test", "https://h:1", check=False), 2,
                       "this machine's own name")
    assert_clean_error(syncd(home, "peer", "remove", "nobody", check=False), 1,
                       "no peer named 'nobody'")
    assert_clean_error(syncd(home, "peer", "set", "nobody", "auto", check=False), 1,
                       "no peer named 'nobody'")
    assert syncd(home, "peer", "set", "beta", "online", check=False).returncode == 2
    assert syncd(home, "peer", check=False).returncode == 2
    assert_clean_error(syncd(tmp_path / "none", "peer", "list", check=False), 3,
                       "syncd init")
    assert [p["name"] for p in peers(home)] == ["beta"]


# A stand-in for the serving process: holds the home's lock and, with "serve", answers
# reload-peers on the control socket by appending a line to a file.
SERVER = """
import sys, trio
from syncd.control import serve_control
from syncd.home import Home

home = Home(sys.argv[1])
home.acquire(None)

async def reload_peers(args):
    with open(sys.argv[2], "a") as f:
        f.write(f"reload-peers {args}\\n")
    return {}

async def main():
    async with trio.open_nursery() as nursery:
        if sys.argv[3] == "serve":
            await nursery.start(serve_control, home.control_path,
                                {"reload-peers": reload_peers})
        print("ready", flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


@pytest.fixture
def served(home, tmp_path):
    procs = []

    def start(mode: str) -> Path:
        calls = tmp_path / "calls"
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(home), str(calls), mode],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline() == "ready\n"
        return calls

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_peer_changes_reach_the_serving_process(home, served):
    calls = served("serve")
    done = [syncd(home, "peer", "add", "beta", "https://10.0.0.2:7700"),
            syncd(home, "peer", "set", "beta", "outofuse"),
            syncd(home, "peer", "remove", "beta")]
    assert [d.stderr for d in done] == [""] * 3
    assert calls.read_text() == "reload-peers {}\n" * 3


def test_a_serving_process_that_does_not_answer_gets_the_change_later(home, served):
    served("silent")
    done = syncd(home, "peer", "add", "beta", "https://10.0.0.2:7700")
    assert "syncd: warning:" in done.stderr and "next start" in done.stderr
    assert done.stderr.count("\n") == 1
    assert [p["name"] for p in peers(home)] == ["beta"]


def test_peer_addresses_are_kept_in_order_and_replaced_by_set(home):
    syncd(home, "peer", "add", "beta", "https://10.0.0.2:7700", "https://beta.vpn:7700/",
          "https://[fd00::2]:7700")
    (beta,) = peers(home)
    assert beta["addresses"] == ["https://10.0.0.2:7700", "https://beta.vpn:7700",
                                 "https://[fd00::2]:7700"]
    assert beta["url"] == "https://10.0.0.2:7700"  # the first, until one answers
    done = syncd(home, "peer", "set", "beta", "--address", "https://beta.example:7700",
                 "https://10.0.0.2:7700")
    assert done.stdout.strip() == "peer beta at https://beta.example:7700 https://10.0.0.2:7700"
    (beta,) = peers(home)
    assert (beta["url"], beta["addresses"]) == (
        "https://beta.example:7700", ["https://beta.example:7700", "https://10.0.0.2:7700"])
    syncd(home, "peer", "set", "beta", "outofuse", "--address", "https://10.0.0.9:7700")
    (beta,) = peers(home)
    assert (beta["state"], beta["addresses"]) == ("outofuse", ["https://10.0.0.9:7700"])


@pytest.mark.parametrize("args, words", [
    (["add", "gamma", "https://10.0.0.3:7700", "10.0.0.4"],
     "bad peer address '10.0.0.4': want https://HOST:PORT or HOST:PORT"),
    (["add", "gamma", "https://10.0.0.3:7700", "https://10.0.0.3:7700/"],
     "address https://10.0.0.3:7700 is given twice"),
    (["set", "beta", "--address", "https://ok:1", "https://bad"],
     "bad peer address 'https://bad': want https://HOST:PORT or HOST:PORT"),
    (["set", "beta"], "peer set wants outofuse, auto or --address ADDRESS..."),
])
def test_bad_peer_addresses_are_usage_errors_that_change_nothing(home, args, words):
    syncd(home, "peer", "add", "beta", "https://10.0.0.2:7700")
    assert_clean_error(syncd(home, "peer", *args, check=False), 2, words)
    assert [(p["name"], p["addresses"]) for p in peers(home)] == [
        ("beta", ["https://10.0.0.2:7700"])]
    assert_clean_error(syncd(home, "peer", "set", "nobody", "--address", "https://h:1",
                             check=False), 1, "no peer named 'nobody'")
