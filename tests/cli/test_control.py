"""The control socket: a real trio server on a temporary path, the real client on a thread."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import pytest
import trio

from syncd.control import MAX_LINE, request, serve_control
from syncd.home import UNREACHABLE, Home, UserError


async def echo(args: dict) -> dict:
    return {"got": args}


async def fail(args: dict) -> dict:
    raise RuntimeError("the handler broke")


async def forever(args: dict) -> dict:
    await trio.sleep_forever()
    return {}


HANDLERS = {"echo": echo, "fail": fail, "forever": forever}


def serving(home: Home, client, handlers=HANDLERS):
    """Run client(home) on a thread while the server runs; return what it returned."""
    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, home.control_path, handlers)
            try:
                return await trio.to_thread.run_sync(client, home)
            finally:
                nursery.cancel_scope.cancel()
    return trio.run(main)


def raw(home: Home, data: bytes) -> dict:
    """Send bytes as they are, end the stream, and read the answer line."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(home.control_path))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return json.loads(sock.makefile("rb").readline())


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


def test_round_trip(home):
    answer = serving(home, lambda h: request(h, "echo", a=1, b=["x"]))
    assert answer == {"ok": True, "got": {"a": 1, "b": ["x"]}}


def test_socket_mode_and_cleanup(home):
    def check(h: Home) -> None:
        st = h.control_path.stat()
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert [p.name for p in h.path.iterdir()] == ["control.sock"]

    serving(home, check)
    assert list(home.path.iterdir()) == []  # removed when cancelled


def test_a_stale_socket_is_replaced(home):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(home.control_path))
    stale.close()  # the file stays, with nobody listening
    with pytest.raises(UserError) as e:
        request(home, "echo")
    assert e.value.code == UNREACHABLE and "is the home served" in str(e.value)
    assert serving(home, lambda h: request(h, "echo"))["ok"]


def test_errors_are_answers_and_the_server_goes_on(home, expect_log):
    expect_log(r"syncd.control ERROR control op 'fail' failed")  # the handler that raises
    def client(h: Home) -> list[dict]:
        return [request(h, "nosuch"), request(h, "fail"), raw(h, b"not json\n"),
                raw(h, b'["op"]\n'), raw(h, b'{"op": 3}\n'),
                raw(h, b'{"op": "echo", "x": "' + b"y" * MAX_LINE + b'"}\n'),
                raw(h, b'{"op": "echo"}'),  # no newline: the end of the stream ends it
                request(h, "echo", n=1)]

    answers = serving(home, client)
    errors = [a["error"] for a in answers[:6]]
    assert not any(a["ok"] for a in answers[:6])
    assert errors[0] == "unknown op 'nosuch'"
    assert errors[1] == "fail failed: the handler broke"
    assert errors[2:5] == ['malformed request: want one JSON object with "op"'] * 3
    assert "longer than" in errors[5]
    assert answers[6:] == [{"ok": True, "got": {}}, {"ok": True, "got": {"n": 1}}]


def test_nobody_there(home):
    with pytest.raises(UserError) as e:
        request(home, "echo")
    assert e.value.code == UNREACHABLE
    with pytest.raises(UserError) as e:
        request(Home(home.path / "missing"), "echo")
    assert e.value.code == UNREACHABLE


def test_a_server_that_does_not_answer_times_out(home):
    def client(h: Home) -> UserError:
        with pytest.raises(UserError) as e:
            request(h, "forever", timeout=0.3)
        return e.value

    error = serving(home, client)
    assert error.code == UNREACHABLE and "did not answer 'forever' in 0.3 s" in str(error)


def test_a_home_deeper_than_a_socket_address(tmp_path):
    deep = tmp_path.joinpath(*["d" * 50] * 4)
    deep.mkdir(parents=True)
    home = Home(deep)
    assert len(str(home.control_path)) > 108
    assert serving(home, lambda h: request(h, "echo"))["ok"]
