"""The control socket's protocol against a fake stack: good requests, and bad ones (malformed,
truncated, oversized, too slow, unknown command, wrong version, another user) get an error reply
and leave the server serving."""

from __future__ import annotations

import json
import os
import socket
import stat
import types

import pytest
import trio

from supervisor.control import protocol as P
from supervisor.control.client import Client, ControlFailed, NotRunning
from supervisor.control.protocol import ControlError
from supervisor.control.server import Controller, EventTap, serve


class FakeSup:
    def __init__(self):
        self.stack = types.SimpleNamespace(services={}, name="fake")
        self.replicas = {}
        self.held = set()
        self.stopped = False

    def all_replicas(self):
        return []

    def replica(self, service, index):
        return None

    def request_stop(self, *, kill=False):
        self.stopped = True


@pytest.fixture
async def server(tmp_path, nursery):
    path = str(tmp_path / "control.sock")
    sup = FakeSup()
    ctl = Controller(sup, project="fake", tap=EventTap())
    await nursery.start(serve, ctl, path)
    return types.SimpleNamespace(path=path, sup=sup, ctl=ctl)


async def raw(path: str, data: bytes, *, shut: bool = True) -> dict:
    """Send `data`, read the one reply line."""
    s = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with s:
        await s.connect(path)
        try:
            while data:
                data = data[await s.send(data):]
            if shut:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):  # the server stopped reading: its reply is queued
            pass
        buf = b""
        while b"\n" not in buf:
            chunk = await s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf.split(b"\n")[0])


async def ping(path: str) -> dict:
    return await trio.to_thread.run_sync(lambda: Client(path, "fake").request("ping"))


async def test_socket_mode_and_ping(server):
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    assert (await ping(server.path))["project"] == "fake"


@pytest.mark.parametrize("data, code", [
    (b"this is not json\n", P.BAD_REQUEST),
    (b"[1, 2, 3]\n", P.BAD_REQUEST),
    (b'{"v": 1, "cmd": "ps"', P.BAD_REQUEST),  # truncated: closed before the newline
    (b"", P.BAD_REQUEST),
    (b'\xff\xfe\n', P.BAD_REQUEST),
    (b'{"v": 1, "cmd": "no-such-thing"}\n', P.UNKNOWN_COMMAND),
    (b'{"v": 99, "cmd": "ps"}\n', P.UNSUPPORTED_VERSION),
    (b'{"v": 1, "cmd": "ps", "args": [1]}\n', P.BAD_REQUEST),
    (b'{"v": 1, "cmd": "stop", "args": {"targets": "x"}}\n', P.BAD_REQUEST),
    (b'{"v": 1, "cmd": "stop", "args": {"targets": ["nope"]}}\n', P.NOT_FOUND),
])
async def test_bad_requests_get_an_error_reply(server, data, code):
    reply = await raw(server.path, data)
    assert reply["ok"] is False and reply["error"]["code"] == code, reply
    assert (await ping(server.path))["project"] == "fake"


async def test_oversized_request(server):
    reply = await raw(server.path, b'{"v": 1, "cmd": "ps", "pad": "' + b"x" * (P.MAX_REQUEST + 10) + b'"}\n',
                      shut=False)
    assert reply["error"]["code"] == P.TOO_LARGE
    # a huge stream with no newline at all
    reply = await raw(server.path, b"y" * (4 * P.MAX_REQUEST), shut=False)
    assert reply["error"]["code"] == P.TOO_LARGE
    assert (await ping(server.path))["project"] == "fake"


async def test_slow_request_times_out(server, monkeypatch, autojump_clock):
    monkeypatch.setattr(P, "REQUEST_TIMEOUT", 0.5)
    s = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with s:
        await s.connect(server.path)
        await s.send(b'{"v": 1,')
        reply = json.loads((await s.recv(65536)).split(b"\n")[0])
    assert reply["error"]["code"] == P.TIMEOUT


async def test_unexpected_fds_are_closed(server, tmp_path):
    r, w = os.pipe()
    try:
        def send():
            with pytest.raises(ControlFailed) as exc:
                Client(server.path, "fake").request("exec", {"argv": ["x"]}, fds=[r])
            return exc.value.code
        assert await trio.to_thread.run_sync(send) == P.BAD_REQUEST
        os.close(r)
        r = -1
        # the server closed its copy of the read end: the pipe has no reader left
        with pytest.raises(BrokenPipeError):
            os.write(w, b"x")
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)


async def test_other_user_refused(tmp_path, nursery):
    path = str(tmp_path / "control.sock")
    ctl = Controller(FakeSup(), project="fake", tap=EventTap())
    await nursery.start(lambda task_status: serve(ctl, path, allowed_uids=frozenset({os.geteuid() + 12345}),
                                                  task_status=task_status))
    reply = await raw(path, b'{"v": 1, "cmd": "ping"}\n')
    assert reply["error"]["code"] == P.FORBIDDEN


async def test_down_and_not_running(server, tmp_path):
    result = await trio.to_thread.run_sync(lambda: Client(server.path, "fake").request("down", {}))
    assert result["stopping"] is True and server.sup.stopped
    with pytest.raises(NotRunning, match="no stack 'gone' is running"):
        Client(str(tmp_path / "nothing.sock"), "gone").request("ps")


async def test_events_stream(server):
    import structlog

    got = []

    def listen():
        for ev in Client(server.path, "fake").stream("events"):
            got.append(ev)
            if len(got) == 2:
                return

    async with trio.open_nursery() as n:
        n.start_soon(trio.to_thread.run_sync, listen)
        while not server.ctl.tap.subscribers:
            await trio.sleep(0.01)
        log = structlog.get_logger()
        log.info("not.a.lifecycle.event")
        log.info("replica.started", service="web", replica=1, pid=5)
        log.info("up.stopping", kill=False)
    assert [e["event"] for e in got] == ["replica.started", "up.stopping"]
    assert got[0]["service"] == "web" and got[0]["pid"] == 5 and "time" in got[0]


def test_short_path(tmp_path):
    long_dir = tmp_path / ("d" * 100)
    long_dir.mkdir()
    path = str(long_dir / "control.sock")
    with P.short_path(path) as name:
        assert len(name) < 108
        s = socket.socket(socket.AF_UNIX)
        s.bind(name)
        s.close()
    assert os.path.exists(path)


def test_parse_target():
    assert P.parse_target("web") == ("web", None)
    assert P.parse_target("web.2") == ("web", 2)
    assert P.parse_target("my-web-3") == ("my-web", 3)


async def test_a_failing_command_gets_an_error_reply(server):
    async def boom(args):
        raise RuntimeError("a bug")

    async def grouped(args):
        async with trio.open_nursery() as n:
            async def fail():
                raise ControlError(P.CONFLICT, "web-1 is not running")
            n.start_soon(fail)

    server.ctl.commands["ps"] = boom
    server.ctl.commands["top"] = grouped
    reply = await raw(server.path, b'{"v": 1, "cmd": "ps"}\n')
    assert reply["error"]["code"] == P.FAILED and "a bug" in reply["error"]["message"]
    reply = await raw(server.path, b'{"v": 1, "cmd": "top"}\n')
    assert reply["error"] == {"code": P.CONFLICT, "message": "web-1 is not running"}
    assert (await ping(server.path))["project"] == "fake"


def test_fast_project_name_agrees_with_the_loader(tmp_path, monkeypatch):
    import argparse

    from supervisor.config.load import load
    from supervisor.control.cli import fast_project_name

    for k in ("COMPOSE_PROJECT_NAME", "COMPOSE_FILE"):
        monkeypatch.delenv(k, raising=False)
    d = tmp_path / "My_Dir"
    d.mkdir()
    cases = {
        "services: {a: {image: host, command: [x]}}\n": "my_dir",
        "name: shop\nservices: {a: {image: host, command: [x]}}\n": "shop",
        "name: 'shop-2'  # a comment\nservices: {a: {image: host, command: [x]}}\n": "shop-2",
        "name: ${X:-inter}\nservices: {a: {image: host, command: [x]}}\n": None,
        "{name: flow, services: {a: {image: host, command: [x]}}}\n": None,
    }
    for text, fast in cases.items():
        (d / "compose.yaml").write_text(text)
        args = argparse.Namespace(files=[], env_files=None, project_directory=None)
        got = fast_project_name(args, environ={}, cwd=str(d))
        assert got == fast, text
        if got is not None:
            monkeypatch.chdir(d)
            assert load(None, environ={}).stack.name == got
    (d / ".env").write_text("COMPOSE_PROJECT_NAME=other\n")
    assert fast_project_name(argparse.Namespace(files=[]), environ={}, cwd=str(d)) is None


def test_logs_helpers(tmp_path):
    from supervisor.control.cli import log_files, parse_since

    assert parse_since("10s", now=1000.0) == 990.0
    assert parse_since("500ms", now=1000.0) == 999.5
    assert parse_since("2h", now=10000.0) == 2800.0
    assert parse_since("1700000000.5") == 1700000000.5
    assert parse_since("2023-11-14T22:13:20Z") == 1700000000.0
    with pytest.raises(Exception, match="not a Unix time"):
        parse_since("yesterday")
    for name in ("shop-web-1.log", "shop-web-1.log.1", "shop-web-1.log.2", "shop-my-db-12.log", "other-x-1.log",
                 "shop-web-1.log.tmp", "shop-junk.log"):
        (tmp_path / name).write_text("")
    files = log_files(str(tmp_path), "shop")
    assert {k: [os.path.basename(p) for p in v] for k, v in files.items()} == {
        ("web", 1): ["shop-web-1.log.2", "shop-web-1.log.1", "shop-web-1.log"],
        ("my-db", 12): ["shop-my-db-12.log"]}


async def test_a_closed_stream_unsubscribes(server):
    s = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await s.connect(server.path)
    await s.send(b'{"v": 1, "cmd": "events"}\n')
    while not server.ctl.tap.subscribers:
        await trio.sleep(0.01)
    s.close()
    with trio.fail_after(5):
        while server.ctl.tap.subscribers:
            await trio.sleep(0.01)


def test_x_pysup_metrics_key(tmp_path):
    from supervisor.config.load import load
    from supervisor.control.metrics import parse_address
    from supervisor.errors import SpecError

    f = tmp_path / "compose.yaml"
    f.write_text("name: m\nx-pysup: {metrics: '127.0.0.1:9100'}\nservices: {a: {image: host, command: [x]}}\n")
    assert load([str(f)], environ={}).stack.x.metrics == "127.0.0.1:9100"
    f.write_text("name: m\nx-pysup: {metrics: 'nope'}\nservices: {a: {image: host, command: [x]}}\n")
    with pytest.raises(SpecError):
        load([str(f)], environ={})
    assert parse_address(":9100") == ("0.0.0.0", 9100)
    assert parse_address("[::1]:0") == ("::1", 0)
    with pytest.raises(Exception, match="ADDR:PORT"):
        parse_address("9100x")


async def test_kill_takes_and_ps_prints_realtime_signals_by_name():
    """`pysup kill -s SIGRTMIN+3` (systemd's stop signal) reaches the replica, and a replica a
    realtime signal killed shows it by that name, as the logs do (`supervise.restart.signal_name`)."""
    import signal

    from supervisor.supervise.restart import ExitReason
    from supervisor.supervise.state import ReplicaState

    sent = []
    handle = types.SimpleNamespace(status=None, send_signal=sent.append)
    status = types.SimpleNamespace(pid=None, state=ReplicaState.EXITED, health=None, restart_count=0,
                                   crash_looping=False, next_retry_at=None, gave_up=False, oom_kills=0,
                                   last_exit=ExitReason.from_status(None, int(signal.SIGRTMIN) + 3))
    replica = types.SimpleNamespace(container_id="c1", name="web-1", index=1, handle=handle, status=status,
                                    service=types.SimpleNamespace(name="web", ports=()))
    sup = FakeSup()
    sup.stack.services = {"web": types.SimpleNamespace(replicas=1)}
    sup.replicas = {"web": [replica]}
    sup.replica = lambda service, index: replica if (service, index) == ("web", 1) else None
    ctl = Controller(sup, project="fake", tap=EventTap())
    for spelled in ("SIGRTMIN+3", "rtmin+3", str(int(signal.SIGRTMIN) + 3), "KILL"):
        assert await ctl.kill({"targets": ["web"], "signal": spelled}) == {"killed": ["web-1"]}
    assert sent == [int(signal.SIGRTMIN) + 3] * 3 + [signal.SIGKILL]
    with pytest.raises(ControlError, match="unknown signal 'SIGRTMIN-1'"):
        await ctl.kill({"targets": ["web"], "signal": "SIGRTMIN-1"})
    row = ctl._replica_row(replica)
    assert row["last_exit"]["signal"] == "SIGRTMIN+3"
    assert row["last_exit"]["reason"] == "killed by SIGRTMIN+3"
