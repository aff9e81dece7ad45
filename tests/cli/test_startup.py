"""What a process loads: `syncd status` in a fresh interpreter imports none of the serving
process's libraries, nor sqlite-utils, whose imports were most of its time; the serving
process answers on its mount before it imports its peer side (README, "Large shares").
Stated as modules, not as a timing."""

import argparse
import json
import socket
import subprocess
import sys
from pathlib import Path

from syncd.cli import FAMILIES, build_parser
from tests.conftest import needs_fuse
from tests.helpers import (
    Mount,
    assert_clean_error,
    force_cleanup,
    fuse_mounts,
    syncd,
    wait_for,
)

# The serving process's (FUSE, trio, the HTTP server and client), the writable index's
# (sqlite-utils) and those of a few commands (identities, ignore rules, --version).
HEAVY = {"trio", "pyfuse3", "fastapi", "starlette", "pydantic", "hypercorn", "httpx",
         "zeroconf", "prometheus_client", "zstandard", "sqlite_utils", "cryptography",
         "pathspec", "importlib.metadata"}

# The serving process's peer side (the HTTP server and client, the API's models, discovery,
# metrics), imported and built once the mount answers (syncd/starting.py).
PEER_SIDE = {"fastapi", "starlette", "pydantic", "hypercorn", "httpx", "zeroconf",
             "prometheus_client", "syncd.daemon", "syncd.api", "syncd.peerlink", "syncd.ui"}

RUN = """
import json, sys
from syncd.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump(sorted(sys.modules), f)
sys.exit(code)
"""


def run_fresh(tmp_path: Path, home: Path, *args: str) -> tuple[str, set[str]]:
    """The command's output, and the modules loaded once it is done, in a new interpreter."""
    out = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", RUN, str(out), "--home", str(home), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, set(json.loads(out.read_text()))


def test_status_of_an_idle_home_loads_no_heavy_library(home, tmp_path):
    out, loaded = run_fresh(tmp_path, home, "status", "--json")
    assert json.loads(out)["pid"] is None
    assert {"sqlite3", "syncd.index.catalog"} <= loaded  # it did read the index
    assert loaded & HEAVY == set()
    # nor the other commands' modules (their parsers are not built)
    assert {m for m in loaded if m.startswith("syncd.commands.")} == {
        "syncd.commands.status", "syncd.commands.table"}


def commands(parser: argparse.ArgumentParser) -> set[str]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def test_a_command_builds_the_parsers_of_its_family_alone():
    own = {"init", "cluster-key", "id"}  # syncd/cli.py's own
    assert commands(build_parser()) == own.union(*FAMILIES.values())
    for names in FAMILIES.values():
        for name in names:
            assert commands(build_parser(name)) == own | set(names), name


def test_help_and_a_bad_command_list_every_command(home):
    every = {"init", "status", "peer", "relay", "mount", "ui", "override"}
    for args in (["--help"], ["--home", str(home), "-h", "status"], ["--hel", "status"]):
        out = syncd(home, *args).stdout
        assert all(f"    {name} " in out for name in every), (args, out)
    done = syncd(home, "bogus", check=False)
    assert done.returncode == 2 and all(f"'{name}'" in done.stderr for name in every)


@needs_fuse
def test_status_of_a_mounted_home_asks_it_without_loading_trio(mount, tmp_path):
    out, loaded = run_fresh(tmp_path, mount.home, "status", "--json")
    found = json.loads(out)
    assert found["pid"] == mount.pid
    assert found["transfers"] is not None  # the serving process answered on its socket
    assert "syncd.control" in loaded
    assert loaded & HEAVY == set()


@needs_fuse
def test_the_mount_answers_before_its_peer_side_is_imported(home, tmp_path):
    modules = tmp_path / "ready-modules"
    m = Mount(home, tmp_path / "mnt")
    try:
        m.start(env={"SYNCD_READY_MODULES": str(modules)}, peer_side=False)
        loaded = set(modules.read_text().split())
        assert {"pyfuse3", "trio", "syncd.mount.operations", "syncd.control"} <= loaded
        assert loaded & PEER_SIDE == set()
        # The control socket answers from the start; an op of the daemon's waits for it.
        assert syncd(home, "ui").stdout.startswith("http://127.0.0.1:")
        (m.path / "f").write_bytes(b"x")
        m.stop()
    finally:
        force_cleanup(home, m.path)


@needs_fuse
def test_a_taken_port_for_peers_is_reported_by_mount_itself(home, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        syncd(home, "config", "set", "listen", f"127.0.0.1:{port}")
        Mount(home, tmp_path / "mnt").served_log.expect_log("cannot listen for peers")
        (tmp_path / "mnt").mkdir()
        done = syncd(home, "mount", str(tmp_path / "mnt"), check=False)
    assert_clean_error(done, 1, f"cannot listen for peers on 127.0.0.1:{port}")
    assert "syncd config set listen" in done.stderr
    assert str(tmp_path / "mnt") not in fuse_mounts()


@needs_fuse
def test_a_port_taken_after_the_mount_answered_ends_it_with_the_reason(home, tmp_path):
    port = int(json.loads((home / "config.json").read_text())["listen"].rpartition(":")[2])
    m = Mount(home, tmp_path / "mnt")
    m.expect_log("cannot listen for peers")
    try:
        m.start(peer_side=False)
        with socket.socket() as taken:  # before the daemon, imported meanwhile, binds it
            taken.bind(("127.0.0.1", port))
            taken.listen()
            wait_for(lambda: str(m.path) not in fuse_mounts(), 30, "the mount to end")
            wait_for(lambda: m.pid is None, 30, "the serving process to exit")
        assert (f"syncd: error: cannot listen for peers on 127.0.0.1:{port} or for the "
                "status page") in m.log()
    finally:
        force_cleanup(home, m.path)
