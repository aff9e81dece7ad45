"""Tests of packaging/: shell completions, the systemd user unit and mount.syncd; and of
the wheel pyproject.toml builds."""

import argparse
import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from syncd import settings
from syncd.cli import build_parser
from tests.conftest import needs_fuse
from tests.helpers import force_cleanup, fuse_mounts, syncd

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
BASH_COMPLETION = PACKAGING / "completions" / "syncd.bash"
ZSH_COMPLETION = PACKAGING / "completions" / "_syncd"
UNIT = PACKAGING / "syncd@.service"
HELPER = PACKAGING / "mount.syncd"
SYNCD = Path(sys.executable).with_name("syncd")


def bash_complete(line, cwd):
    """What bash completion offers for the last word of `line`."""
    words = line.split(" ")
    script = (
        'source "$COMPLETION"; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _syncd; '
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    result = subprocess.run(
        ["bash", "-c", script, "bash", *words],
        env={**os.environ, "COMPLETION": str(BASH_COMPLETION)},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(filter(None, result.stdout.splitlines()))


def test_bash_completion_syntax():
    subprocess.run(["bash", "-n", BASH_COMPLETION], check=True)


@pytest.mark.parametrize(
    "line, expected",
    [
        ("syncd mo", ["mode", "mount"]),
        ("syncd u", ["ui", "umount", "unpin"]),
        ("syncd ui --m", ["--metrics"]),
        ("syncd peer ", ["add", "discover", "list", "remove", "set"]),
        ("syncd peer list --", ["--help", "--home", "--json"]),
        ("syncd peer discover --", ["--help", "--home", "--json", "--seconds"]),
        ("syncd peer discover --seconds ", []),
        ("syncd config set disc", ["discovery"]),
        ("syncd wait --peer beta --c", ["--copies"]),
        ("syncd import d", ["dir1", "dir2"]),
        ("syncd pin d", ["dfile", "dir1", "dir2"]),
        ("syncd --home /somewhere um", ["umount"]),
        ("syncd -", ["--help", "--home"]),
        ("syncd mount --f", ["--foreground"]),
        ("syncd mount /mnt --a", ["--allow-other"]),
        ("syncd init --n", ["--name"]),
        ("syncd umount -", ["--help", "--home"]),
        ("syncd status --j", ["--json"]),
        ("syncd mount d", ["dir1", "dir2"]),
        ("syncd --home d", ["dir1", "dir2"]),
        ("syncd status --home d", ["dir1", "dir2"]),
        ("syncd mount --home /h d", ["dir1", "dir2"]),
    ],
)
def test_bash_completion(tmp_path, line, expected):
    (tmp_path / "dir1").mkdir()
    (tmp_path / "dir2").mkdir()
    (tmp_path / "dfile").touch()
    assert bash_complete(line, tmp_path) == expected


def commands_and_options() -> dict[str, list[str]]:
    """Every command of `syncd`, with the options it documents (not --home and --help)."""
    sub = next(a for a in build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    return {name: [o for a in p._actions if a.help != argparse.SUPPRESS
                   for o in a.option_strings if o.startswith("--") and o not in
                   ("--help", "--home")]
            for name, p in sub.choices.items()}


def test_bash_completion_offers_every_command_and_option(tmp_path):
    commands = commands_and_options()
    assert bash_complete("syncd ", tmp_path) == sorted(commands)
    for name, options in commands.items():
        line = f"syncd {name} {'list ' if name == 'peer' else ''}--"
        assert set(options) <= set(bash_complete(line, tmp_path)), name
    assert bash_complete("syncd config set ", tmp_path) == sorted(settings.SETTINGS)


def test_zsh_completion_names_every_command_and_option():
    text = ZSH_COMPLETION.read_text()
    for name, options in commands_and_options().items():
        assert f"'{name}:" in text, name
        for option in options:
            assert f"'{option}[" in text or f"'{option}=[" in text, (name, option)


@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh is not installed")
def test_zsh_completion_syntax():
    subprocess.run(["zsh", "-n", ZSH_COMPLETION], check=True)


def test_unit_runs_syncd_mount_foreground():
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str
    unit.read(UNIT)
    assert unit["Service"]["ExecStart"] == "syncd mount --foreground %f"
    assert unit["Install"]["WantedBy"] == "default.target"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is missing")
def test_unit_verifies(tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(
        ["systemd-analyze", "--user", "verify", "--man=no", UNIT],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
    )
    # verify looks for syncd only in systemd's fixed search path, where tests do not put it
    missing = "Command syncd is not executable"
    problems = [line for line in result.stderr.splitlines() if missing not in line]
    assert problems == []
    assert result.returncode == 0 or missing in result.stderr


@pytest.fixture
def fake_syncd(tmp_path):
    """A stand-in for syncd that records its arguments and exits with $FAKE_EXIT."""
    fake = tmp_path / "syncd"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.args"\nexit "${FAKE_EXIT:-0}"\n')
    fake.chmod(0o755)
    return fake


def run_helper(fake_syncd, *args, exit_code=0):
    env = {**os.environ, "SYNCD_BIN": str(fake_syncd), "FAKE_EXIT": str(exit_code)}
    return subprocess.run([HELPER, *args], env=env, capture_output=True, text=True)


def syncd_args(fake_syncd):
    args = fake_syncd.with_name("syncd.args")
    return args.read_text().splitlines() if args.exists() else None


@pytest.mark.parametrize(
    "options, extra",
    [
        ([], []),
        (["-o", "rw"], []),
        (["-o", "rw,nosuid,nodev,user,exec,nofail,_netdev"], []),
        (["-n", "-o", "allow_other"], ["--allow-other"]),
        (["-s", "-o", "rw,compress"], []),
    ],
)
def test_helper_runs_syncd(fake_syncd, options, extra):
    result = run_helper(fake_syncd, "/h", "/m", *options)
    assert result.returncode == 0, result.stderr
    assert syncd_args(fake_syncd) == ["--home", "/h", "mount", "/m", *extra]


@pytest.mark.parametrize("option", ["compress", "ro", "noexec"])
def test_helper_rejects_unknown_option(fake_syncd, option):
    result = run_helper(fake_syncd, "/h", "/m", "-o", f"rw,{option}")
    assert result.returncode == 32
    assert f"'{option}'" in result.stderr
    assert syncd_args(fake_syncd) is None


def test_helper_fake_mount_runs_nothing(fake_syncd):
    assert run_helper(fake_syncd, "/h", "/m", "-f", "-o", "rw").returncode == 0
    assert syncd_args(fake_syncd) is None


def test_helper_reports_failure_of_syncd(fake_syncd):
    assert run_helper(fake_syncd, "/h", "/m", exit_code=3).returncode == 32


def test_helper_usage(fake_syncd):
    assert run_helper(fake_syncd, "/h").returncode == 1
    assert syncd_args(fake_syncd) is None


@pytest.fixture
def installed_helper():
    """mount.syncd installed as /sbin/mount.syncd, any existing one put back afterwards."""
    if os.geteuid() != 0:
        pytest.skip("installing /sbin/mount.syncd needs root")
    target = Path("/sbin/mount.syncd")
    backup = target.with_name("mount.syncd.test-backup")
    if target.exists() or target.is_symlink():
        target.rename(backup)
    try:
        shutil.copy2(HELPER, target)
        yield
    finally:
        target.unlink(missing_ok=True)
        if backup.exists() or backup.is_symlink():
            backup.rename(target)


@needs_fuse
def test_mount_t_syncd(installed_helper, home, tmp_path):
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    # mount(8) drops PATH from the helper's environment but passes SYNCD_BIN on
    env = {**os.environ, "SYNCD_BIN": str(SYNCD)}
    try:
        result = subprocess.run(
            ["mount", "-t", "syncd", home, mountpoint],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert result.returncode == 0, result.stderr
        assert fuse_mounts().get(str(mountpoint)) == "fuse.syncd"
        data = b"written through mount -t syncd\n"
        (mountpoint / "hello.txt").write_bytes(data)
        assert (mountpoint / "hello.txt").read_bytes() == data
        syncd(home, "umount")
        assert str(mountpoint) not in fuse_mounts()
    finally:
        force_cleanup(home, mountpoint)


def test_the_wheel_installs_only_the_syncd_package(tmp_path):
    """pyproject.toml installs the folders index/ and mount/ as syncd.index and
    syncd.mount: nothing but syncd/ and the dist-info may land at the top of
    site-packages (a top-level index or mount would shadow, or be shadowed by, any other
    module of those names). Built from a copy of the tree, so that no build/ left in the
    work tree, which setuptools reuses, can hide or add a file."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
        ".hypothesis"))
    out = tmp_path / "wheel"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(out), str(src)], capture_output=True, text=True,
                           timeout=240)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = out.glob("syncd-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        [info] = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
        top_level = z.read(f"{info}/top_level.txt").decode().split()
    assert {n.split("/")[0] for n in names} == {"syncd", info}
    assert top_level == ["syncd"]
    for folder in ("index", "mount"):  # every module of each folder, inside syncd/
        modules = {p.name for p in (REPO / folder).glob("*.py")}
        assert "__init__.py" in modules
        assert modules == {n.split("/")[-1] for n in names
                           if n.startswith(f"syncd/{folder}/") and n.endswith(".py")}
    assert "syncd/__main__.py" in names and "syncd/cli.py" in names
