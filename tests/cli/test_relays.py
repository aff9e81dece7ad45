"""`syncd relay add|list|remove` run as a user would (docs/cli.md), on real directories."""

from __future__ import annotations

import json

from tests.helpers import assert_clean_error, free_port, syncd


def relays(home) -> list[dict]:
    out = json.loads(syncd(home, "relay", "list", "--json").stdout)
    assert out["schema_version"] == 1
    return out["relays"]


def test_relay_add_marks_the_directory_and_a_second_home_of_the_share_takes_it(home, tmp_path):
    root = tmp_path / "usb"
    root.mkdir()
    done = syncd(home, "relay", "add", "usb", root.as_uri() + "/")
    assert "marked as a relay of this share" in done.stdout
    marker = json.loads((root / ".syncd-relay").read_text())
    assert marker["syncd_relay"] == 1 and len(marker["share"]) == 32
    key = syncd(home, "cluster-key").stdout.strip()
    assert key not in (root / ".syncd-relay").read_text()
    assert relays(home) == [{"name": "usb", "url": root.as_uri(), "credentials": None,
                             "state": "unknown", "last_seen": None, "last_error": None}]
    assert "usb" in syncd(home, "relay", "list").stdout
    other = tmp_path / "other"
    syncd(other, "init", "--name", "other", "--listen", f"127.0.0.1:{free_port()}",
          "--cluster-key", key)
    assert "a relay of this share already" in \
        syncd(other, "relay", "add", "usb", root.as_uri()).stdout
    syncd(home, "relay", "remove", "usb")
    assert relays(home) == [] and (root / ".syncd-relay").exists()  # what is there stays
    assert "no relays" in syncd(home, "relay", "list").stdout


def test_bad_relays_get_a_clear_error_and_change_nothing(home, tmp_path):
    root = tmp_path / "usb"
    for args, code, words in (
            (["bad name!", root.as_uri()], 2, "bad relay name"),
            (["usb", "ftp://host/x"], 2, "want file:///PATH"),
            (["usb", "https://me:pw@nas/dav"], 2, "never in the URL"),
            (["usb", root.as_uri()], 4, "wants a directory or collection that exists"),
            (["usb", "https://nas/dav", "--credentials", str(tmp_path / "none")], 2,
             "cannot read the credentials")):
        assert_clean_error(syncd(home, "relay", "add", *args, check=False), code, words)
    assert not root.exists() and relays(home) == []
    root.mkdir()
    stranger = tmp_path / "stranger"
    syncd(stranger, "init", "--name", "s", "--listen", f"127.0.0.1:{free_port()}")
    syncd(stranger, "relay", "add", "usb", root.as_uri())
    marker = (root / ".syncd-relay").read_bytes()
    assert_clean_error(syncd(home, "relay", "add", "usb", root.as_uri(), check=False), 4,
                       "the relay of another share")
    assert (root / ".syncd-relay").read_bytes() == marker and relays(home) == []
    assert_clean_error(syncd(home, "relay", "remove", "usb", check=False), 1,
                       "no relay named 'usb'")
