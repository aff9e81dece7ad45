"""What a command loads: `syncd status` in a fresh interpreter imports none of the serving
process's libraries, nor sqlite-utils, whose imports were most of its time (README, "Large
shares"). Stated as modules, not as a timing."""

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import needs_fuse

# The serving process's (FUSE, trio, the HTTP server and client), the writable index's
# (sqlite-utils) and those of a few commands (identities, ignore rules, --version).
HEAVY = {"trio", "pyfuse3", "fastapi", "starlette", "pydantic", "hypercorn", "httpx",
         "zeroconf", "prometheus_client", "zstandard", "sqlite_utils", "cryptography",
         "pathspec", "importlib.metadata"}

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


@needs_fuse
def test_status_of_a_mounted_home_asks_it_without_loading_trio(mount, tmp_path):
    out, loaded = run_fresh(tmp_path, mount.home, "status", "--json")
    found = json.loads(out)
    assert found["pid"] == mount.pid
    assert found["transfers"] is not None  # the serving process answered on its socket
    assert "syncd.control" in loaded
    assert loaded & HEAVY == set()
