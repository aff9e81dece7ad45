"""The control socket, HOME/control.sock: how `syncd` commands ask the process that serves
a home to act (DESIGN, "The shape").

One request per connection: the client sends one JSON object on one line, {"op": OP, ...},
and reads one line back, {"ok": true, ...} or {"ok": false, "error": "..."}. The socket is
the owner's only (mode 0600); a socket file's permissions are what guards it on Linux.

The commands' side, `request`, is plain sockets: trio loads only in the serving process,
so a command asking it (`syncd status` of a mounted home) does not pay for trio's import.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.home import UNREACHABLE, Home, UserError

if TYPE_CHECKING:
    import trio

log = logging.getLogger(__name__)

MAX_LINE = 16 << 20  # an import's batch of entries (the socket is the owner's only)
READ_TIMEOUT = 10.0  # seconds a client may take to send its request line

Handler = Callable[[dict], Awaitable[dict]]


def request(home: Home, op: str, timeout: float = 10.0, **args) -> dict:
    """Send one request to the serving process and return its answer."""
    path = home.control_path
    deadline = time.monotonic() + timeout
    data = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, _short(path) as name:
            sock.settimeout(timeout)
            sock.connect(name)
            sock.sendall(json.dumps({**args, "op": op}).encode() + b"\n")
            while not data.endswith(b"\n"):
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except TimeoutError:
        raise UserError(f"the process serving {home.path} did not answer {op!r} in "
                        f"{timeout:g} s", UNREACHABLE) from None
    except OSError as e:
        raise UserError(f"nobody answers on {path} ({e.strerror or e}): is the home served?",
                        UNREACHABLE) from None
    if not data.endswith(b"\n"):
        raise UserError(f"the process serving {home.path} hung up without answering {op!r}",
                        UNREACHABLE)
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise UserError(f"the process serving {home.path} gave a malformed answer to {op!r}")
    return answer


async def serve_control(path: Path, handlers: dict[str, Handler],
                        ready: trio.Event | None = None, *,
                        task_status: trio.TaskStatus[None]) -> None:
    """Answer requests on the socket at path until cancelled, then remove it.

    A handler gets the request's arguments (without "op") and returns the answer's fields;
    "ok": true is added unless it says otherwise. Nothing a client sends stops the server.
    With `ready`, requests wait until it is set, by when `handlers` is filled in (a mount
    binds the socket before it answers, and builds its daemon after: syncd/starting.py).
    """
    import trio

    path = Path(path)
    # Bound under a temporary name and renamed into place, so the socket is never reachable
    # with a looser mode, and a stale one left by a crash is replaced.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        with _short(tmp) as name:
            await sock.bind(name)
        os.chmod(tmp, 0o600)
        sock.listen()
        os.replace(tmp, path)
        task_status.started()
        await trio.serve_listeners(partial(_answer, handlers, ready),
                                   [trio.SocketListener(sock)])
    finally:
        sock.close()
        for leftover in (tmp, path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


async def _answer(handlers: dict[str, Handler], ready: trio.Event | None,
                  stream: trio.SocketStream) -> None:
    import trio

    async with stream:
        try:
            with trio.fail_after(READ_TIMEOUT):
                line = await _read_line(stream)
        except (trio.TooSlowError, trio.BrokenResourceError):
            return
        if ready is not None:
            await ready.wait()
        answer = await _dispatch(handlers, line)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(json.dumps(answer).encode() + b"\n")


async def _read_line(stream: trio.SocketStream) -> bytes | None:
    """One line, or None when it is longer than MAX_LINE. Only each new piece is searched
    for the newline: an import's batch is a line of megabytes."""
    data = bytearray()
    while len(data) <= MAX_LINE:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        end = chunk.find(b"\n")
        data += chunk if end < 0 else chunk[:end]
        if end >= 0:
            break
    return bytes(data) if len(data) <= MAX_LINE else None


async def _dispatch(handlers: dict[str, Handler], line: bytes | None) -> dict:
    if line is None:
        return {"ok": False, "error": f"request longer than {MAX_LINE} bytes"}
    try:
        args = json.loads(line)
    except ValueError:
        args = None
    if not isinstance(args, dict) or not isinstance(args.get("op"), str):
        return {"ok": False, "error": 'malformed request: want one JSON object with "op"'}
    op = args.pop("op")
    handler = handlers.get(op)
    if handler is None:
        return {"ok": False, "error": f"unknown op {op!r}"}
    try:
        return {"ok": True, **await handler(args)}
    except Exception as e:
        log.exception("control op %r failed", op)
        return {"ok": False, "error": f"{op} failed: {e}"}


@contextlib.contextmanager
def _short(path: Path) -> Iterator[str]:
    """A name for path that fits in a socket address (108 bytes), however deep the home:
    its directory through /proc/self/fd."""
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
