"""`syncd mount`, `umount` and `serve`: start and stop the process that serves a home,
with a mount or, on a machine that is always on, without one (docs/cli.md)."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import select
import shutil
import subprocess
import sys
import threading
import time

from syncd.home import OK, STATE, UNREACHABLE, USAGE, Home, UserError, mount_table

log = logging.getLogger("syncd")

READY_TIMEOUT = 60.0  # seconds for a background mount to answer
UMOUNT_TIMEOUT = 60.0  # seconds for the serving process to commit and exit


def add_parsers(sub, common) -> None:
    p = sub.add_parser("mount", parents=[common], help="mount the share")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing directory")
    p.add_argument("--foreground", action="store_true",
                   help="serve in the foreground until unmounted or signalled")
    p.add_argument("--allow-other", action="store_true",
                   help="let other users of this machine in (permissions still apply)")
    p.add_argument("--debug-fuse", action="store_true", help="log every FUSE request")
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)

    sub.add_parser("umount", parents=[common], help="unmount the share cleanly")
    p = sub.add_parser("serve", parents=[common],
                       help="run the daemon without a mount (an always-on machine)")
    p.add_argument("--mirror", action="store_true",
                   help="keep every file's content here, so peers always find a holder")


def cmd_mount(home: Home, args) -> int:
    home.require()
    mountpoint = os.path.abspath(args.mountpoint)
    _check_can_mount(home, mountpoint)
    if args.foreground:
        return _mount_foreground(home, mountpoint, args)
    return _mount_background(home, mountpoint, args)


def _check_can_mount(home: Home, mountpoint: str) -> None:
    if not os.path.exists("/dev/fuse"):
        raise UserError("/dev/fuse is missing: install the Debian package fuse3 and load the "
                        "fuse module (modprobe fuse)")
    if shutil.which("fusermount3") is None:
        raise UserError("fusermount3 not found: install the Debian package fuse3")
    _end_stuck_holder(home)
    holder = home.holder()
    if holder is not None:
        where = f" at {holder.mountpoint}" if holder.mountpoint else ""
        raise UserError(f"{home.path} is already mounted{where} (pid {holder.pid})", STATE)
    try:
        os.stat(mountpoint)
    except FileNotFoundError:
        raise UserError(f"mount point {mountpoint} does not exist", USAGE) from None
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise UserError(f"mount point {mountpoint}: {e.strerror}") from None
        if home.last_mountpoint() != mountpoint:
            raise UserError(f"a dead FUSE mount is on {mountpoint}; clear it with "
                            f"'fusermount3 -u -z {mountpoint}'") from None
        log.info("clearing the dead mount left on %s by a crash", mountpoint)
        subprocess.run(["fusermount3", "-u", "-z", mountpoint], check=False)
    if not os.path.isdir(mountpoint):
        raise UserError(f"mount point {mountpoint} is not a directory", USAGE)
    fstype = mount_table().get(mountpoint)
    if fstype == "fuse.syncd" and home.last_mountpoint() == mountpoint:
        # Ours, and nobody serves it (checked above): a crash left it. stat() did not
        # say ENOTCONN because the kernel answered from its attribute cache.
        log.info("clearing the dead mount left on %s by a crash", mountpoint)
        subprocess.run(["fusermount3", "-u", "-z", mountpoint], check=False)
        fstype = mount_table().get(mountpoint)
    if fstype is not None:
        raise UserError(f"mount point {mountpoint} is busy: a {fstype} file system is "
                        "mounted there")


def _mount_foreground(home: Home, mountpoint: str, args) -> int:
    from syncd.serving import serve  # pyfuse3 and trio load only in the serving process

    ready_fd = args.ready_fd  # the pipe to a waiting `syncd mount`, until ready

    def ready() -> None:
        nonlocal ready_fd
        if os.environ.get("SYNCD_READY_MODULES"):  # what was imported by then (the tests)
            with open(os.environ["SYNCD_READY_MODULES"], "w") as f:
                f.write("\n".join(sorted(sys.modules)))
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
            ready_fd = None
        log.info("serving %s on %s", home.path, mountpoint)

    try:
        serve(home, mountpoint, args.allow_other, args.debug_fuse, ready)
    except UserError as e:
        if ready_fd is not None:
            os.write(ready_fd, f"error {e.code} {e}\n".encode())
        raise
    return OK


def _mount_background(home: Home, mountpoint: str, args) -> int:
    """Start the serving process detached (before any trio or FUSE state exists here),
    and return once the mount answers, or report the process's death."""
    r, w = os.pipe()
    cmd = [sys.executable, "-m", "syncd", "--home", str(home.path), "mount", mountpoint,
           "--foreground", "--ready-fd", str(w)]
    if args.allow_other:
        cmd.append("--allow-other")
    if args.debug_fuse:
        cmd.append("--debug-fuse")
    with open(home.log_path, "ab") as logfile:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logfile,
                                stderr=logfile, pass_fds=(w,), start_new_session=True)
    os.close(w)
    try:
        line = _read_line(r, READY_TIMEOUT)
    finally:
        os.close(r)
    if line.startswith("error "):
        _, code, message = line.split(" ", 2)
        proc.wait()
        raise UserError(message, int(code))
    if line != "ready":
        try:  # the pipe closes a moment before the process can be waited for
            code = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            proc.kill()
            raise UserError(f"the mount process did not get ready in {READY_TIMEOUT:.0f} s; "
                            f"see {home.log_path}", UNREACHABLE)
        raise UserError(f"the mount process died (exit status {code}); see {home.log_path}")
    if not _answers(mountpoint, READY_TIMEOUT):
        raise UserError(f"{mountpoint} does not answer; see {home.log_path}", UNREACHABLE)
    print(f"mounted {home.path} on {mountpoint} (pid {proc.pid})")
    return OK


def _read_line(fd: int, timeout: float) -> str:
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _answers(path: str, timeout: float) -> bool:
    """stat() the mount point on a thread: a hung file system must not hang us."""
    done = threading.Event()

    def probe() -> None:
        try:
            os.stat(path)
            done.set()
        except OSError:
            pass

    threading.Thread(target=probe, daemon=True).start()
    return done.wait(timeout)


def _end_stuck_holder(home: Home) -> None:
    stuck = home.holder()
    if home.end_stuck_holder():
        log.warning("aborted the FUSE connection of %s: its process %d had been killed and "
                    "could not exit", stuck.mountpoint, stuck.pid)


def cmd_umount(home: Home, args) -> int:
    home.require()
    _end_stuck_holder(home)
    holder = home.holder()
    if holder is None:
        last = home.last_mountpoint()
        if last and mount_table().get(last) == "fuse.syncd":
            subprocess.run(["fusermount3", "-u", "-z", last], check=False)
            print(f"cleared the dead mount of {home.path} on {last}")
            return OK
        raise UserError(f"{home.path} is not mounted", STATE)
    if holder.mountpoint is None:
        raise UserError(f"{home.path} is served without a mount (pid {holder.pid})", STATE)
    done = subprocess.run(["fusermount3", "-u", holder.mountpoint], capture_output=True,
                          text=True)
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        if "busy" in reason.lower():
            raise UserError(f"{holder.mountpoint} is busy: close the files and shells that "
                            "use it, then try again")
        raise UserError(f"cannot unmount {holder.mountpoint}: {reason}")
    deadline = time.monotonic() + UMOUNT_TIMEOUT
    while home.holder() is not None:
        if time.monotonic() > deadline:
            raise UserError(f"unmounted, but pid {holder.pid} has not exited after "
                            f"{UMOUNT_TIMEOUT:.0f} s", UNREACHABLE)
        time.sleep(0.05)
    print(f"unmounted {holder.mountpoint}")
    _left_for_relays(home)
    return OK


def _left_for_relays(home: Home) -> None:
    """Say which relays did not get everything made here before the process ended (it
    gives reachable ones a bounded time: daemon.LAST_UPLOAD)."""
    from syncd.index.catalog import open_catalog
    from syncd.index.relays import list_relays, pending_to

    with open_catalog(home.db_path, home.store_path, readonly=True) as cat:
        for relay in list_relays(cat.db):
            left = pending_to(cat.db, relay).changes
            if left:
                print(f"syncd: warning: relay {relay.name}: {left} change(s) made here are "
                      f"not stored there yet ({relay.last_error or relay.state}); they go at "
                      "the next mount while it is reachable", file=sys.stderr)


def cmd_serve(home: Home, args) -> int:
    home.require()
    from syncd.serving import serve_only  # trio and the daemon load only here

    holder = home.holder()
    if holder is not None:
        raise UserError(f"{home.path} is already served (pid {holder.pid})", STATE)
    log.info("serving %s without a mount%s", home.path, " (mirror)" if args.mirror else "")
    serve_only(home, args.mirror)
    return OK


COMMANDS = {"mount": cmd_mount, "umount": cmd_umount, "serve": cmd_serve}
