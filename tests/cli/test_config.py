"""`syncd config`: the home's settings, checked, written, and applied to a running mount
(docs/cli.md, "syncd config")."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from tests.conftest import needs_fuse
from tests.helpers import assert_clean_error, served_log, syncd


def stored(home) -> dict:
    return json.loads((home / "config.json").read_text())


def test_get_lists_every_key_with_its_value(home):
    listed = json.loads(syncd(home, "config", "--json").stdout)
    assert listed["schema_version"] == 1
    assert list(listed["settings"]) == ["name", "listen", "attr_timeout", "prefetch_below",
                                        "log_keep_days", "ui_listen", "versions_keep_days",
                                        "versions_max", "cache_limit", "min_copies", "discovery",
                                        "mode", "relay_member_days", "tombstone_keep_days"]
    assert listed["settings"]["mode"] == "send-receive"
    assert listed["settings"]["ui_listen"] == "127.0.0.1:0"
    assert listed["settings"]["log_keep_days"] == 30
    assert listed["settings"]["versions_keep_days"] == 30
    assert listed["settings"]["tombstone_keep_days"] == 30
    assert listed["settings"]["versions_max"] == "10%"
    assert listed["settings"]["cache_limit"] == "none"
    assert listed["settings"]["min_copies"] == 1
    assert listed["settings"]["discovery"] is True
    assert listed["settings"]["name"] == "test"
    assert listed["settings"]["attr_timeout"] == 60.0
    assert listed["settings"]["prefetch_below"] == 262144
    assert json.loads(syncd(home, "config", "get", "--json").stdout) == listed
    lines = syncd(home, "config").stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(listed["settings"])
    assert syncd(home, "config", "get", "prefetch_below").stdout == "262144\n"
    one = json.loads(syncd(home, "config", "get", "attr_timeout", "--json").stdout)
    assert one == {"schema_version": 1, "settings": {"attr_timeout": 60.0}}


def test_set_checks_and_stores_the_canonical_value(home):
    done = syncd(home, "config", "set", "prefetch_below", "1MiB")
    assert done.stdout == "prefetch_below = 1048576\n"  # nothing serves the home
    assert stored(home)["prefetch_below"] == 1 << 20
    syncd(home, "config", "set", "attr_timeout", "0.5")
    assert syncd(home, "config", "get", "attr_timeout").stdout == "0.5\n"
    assert stored(home)["name"] == "test"  # the other keys are kept
    for given, canonical in (("12MiB", 12 << 20), ("20GiB", 20 << 30), ("12.5 %", "12.5%"),
                             ("0", 0)):
        syncd(home, "config", "set", "versions_max", given)
        assert stored(home)["versions_max"] == canonical
    for given, canonical in (("12MiB", 12 << 20), ("20%", "20%"), ("NONE", "none"),
                             ("0", 0)):
        syncd(home, "config", "set", "cache_limit", given)
        assert stored(home)["cache_limit"] == canonical
    syncd(home, "config", "set", "min_copies", "2")
    assert stored(home)["min_copies"] == 2
    assert syncd(home, "config", "set", "discovery", "False").stdout == "discovery = false\n"
    assert stored(home)["discovery"] is False
    assert syncd(home, "config", "get", "discovery").stdout == "false\n"


@pytest.mark.parametrize(("args", "words"), [
    (("set", "colour", "blue"), "unknown setting 'colour'"),
    (("get", "colour"), "unknown setting 'colour'"),
    (("set", "attr_timeout", "soon"), "bad value 'soon' for 'attr_timeout'"),
    (("set", "attr_timeout", "-1"), "bad value '-1' for 'attr_timeout'"),
    (("set", "attr_timeout", "nan"), "bad value 'nan' for 'attr_timeout'"),
    (("set", "prefetch_below", "12 parsecs"), "bad value '12 parsecs' for 'prefetch_below'"),
    (("set", "listen", "nowhere"), "bad value 'nowhere' for 'listen'"),
    (("set", "versions_max", "lots"), "bad value 'lots' for 'versions_max'"),
    (("set", "versions_max", "101%"), "at most 100%"),
    (("set", "versions_max", "ten%"), "bad value 'ten%' for 'versions_max'"),
    (("set", "versions_keep_days", "0"), "bad value '0' for 'versions_keep_days'"),
    (("set", "cache_limit", "lots"), "want none, a size such as 12MiB"),
    (("set", "cache_limit", "1e9"), "bad value '1e9' for 'cache_limit'"),
    (("set", "cache_limit", "120%"), "bad value '120%' for 'cache_limit'"),
    (("set", "cache_limit", "12 parsecs"), "bad value '12 parsecs' for 'cache_limit'"),
    (("set", "min_copies", "0"), "a last copy is never evicted"),
    (("set", "min_copies", "1.5"), "bad value '1.5' for 'min_copies'"),
    (("set", "min_copies", "two"), "bad value 'two' for 'min_copies'"),
    (("set", "min_copies", "101"), "bad value '101' for 'min_copies'"),
    (("set", "listen", "127.0.0.1:70000"), "bad value '127.0.0.1:70000' for 'listen'"),
    (("set", "name", ""), "bad value '' for 'name'"),
    (("set", "ui_listen", "0.0.0.0:8080"), "bad value '0.0.0.0:8080' for 'ui_listen'"),
    (("set", "ui_listen", "example.com:80"), "bad value 'example.com:80' for 'ui_listen'"),
    (("set", "ui_listen", "::1:80"), "bad value '::1:80' for 'ui_listen'"),
    (("set", "ui_listen", "127.0.0.1"), "bad value '127.0.0.1' for 'ui_listen'"),
    (("set", "name", "my laptop"), "bad value 'my laptop' for 'name'"),
    (("set", "discovery", "maybe"), "want true or false"),
    (("set", "discovery", "1"), "bad value '1' for 'discovery'"),
])
def test_bad_input_names_the_key_and_changes_nothing(home, args, words):
    before = (home / "config.json").read_bytes()
    assert_clean_error(syncd(home, "config", *args, check=False), 2, words)
    assert (home / "config.json").read_bytes() == before


def test_a_bad_value_in_the_file_is_named_at_start(home, tmp_path):
    (home / "config.json").write_text(json.dumps({**stored(home), "attr_timeout": "x"}))
    served_log(home / "mount.log").expect_log("bad value 'x' for 'attr_timeout'")
    done = syncd(home, "mount", str(tmp_path), check=False)
    assert_clean_error(done, 1, "'attr_timeout'")
    assert "config.json" in done.stderr


def test_no_home(tmp_path):
    assert_clean_error(syncd(tmp_path / "none", "config", check=False), 3, "no syncd home")


def _mtime(path) -> int:
    return os.stat(path).st_mtime_ns


def _behind_the_kernel(home, inos: list[int], mtime_ns: int) -> None:
    """Change inodes' mtimes in the index without telling the kernel: what it shows then
    depends on how long it may keep what it was told."""
    conn = sqlite3.connect(home / "index.db")
    try:
        with conn:
            conn.executemany("UPDATE inodes SET mtime_ns = ? WHERE ino = ?",
                             [(mtime_ns, ino) for ino in inos])
    finally:
        conn.close()


@needs_fuse
def test_attr_timeout_applies_to_a_running_mount(mount):
    before = mount.path / "before"
    before.write_bytes(b"cached for 60 s")
    old = _mtime(before)
    done = syncd(mount.home, "config", "set", "attr_timeout", "0")
    assert done.stdout.startswith("attr_timeout = 0.0; applied to the running mount (pid ")
    after = mount.path / "after"
    after.write_bytes(b"cached for 0 s")
    _mtime(after)
    _behind_the_kernel(mount.home, [os.stat(before).st_ino, os.stat(after).st_ino],
                       10**18)
    # Attributes given with a timeout of 0 are asked for again; those given before the
    # change keep their 60 s.
    assert _mtime(after) == 10**18
    assert _mtime(before) == old
    assert stored(mount.home)["attr_timeout"] == 0.0


@needs_fuse
def test_a_setting_that_cannot_apply_live_says_so(mount):
    done = syncd(mount.home, "config", "set", "listen", "127.0.0.1:1")
    assert "takes effect at the next mount or serve" in done.stdout
    assert stored(mount.home)["listen"] == "127.0.0.1:1"


def test_a_server_without_a_mount_takes_what_it_uses(tmp_path):
    from tests.hostile.conftest import Server

    server = Server(tmp_path)
    try:
        server.start()
        done = syncd(server.home, "config", "set", "prefetch_below", "1KiB")
        assert done.stdout.startswith("prefetch_below = 1024; applied to the running server")
        done = syncd(server.home, "config", "set", "attr_timeout", "5")
        assert done.stdout.startswith("attr_timeout = 5.0; the running server (pid ")
        assert done.stdout.rstrip().endswith("does not use it")
    finally:
        server.stop()
