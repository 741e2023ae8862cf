"""The control socket of a real `pysup up`: mode 0600, another user cannot use it, and garbage,
truncated and huge requests get an error reply while the stack keeps running."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import pytest

from supervisor.control import protocol as P

from .conftest import REPO
from .test_control_commands import ok, pysup, wait_socket

pytestmark = pytest.mark.root


def send_raw(path: str, data: bytes, *, shut: bool = True) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, P.short_path(path) as name:
        s.settimeout(10)
        s.connect(name)
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf.split(b"\n")[0])


def test_bad_requests_and_other_users(up_env):
    u = up_env.up("""
    services:
      app:
        x-pysup: {rootfs: ROOTFS}
        init: true
        command: ["/bin/sleep", "1000"]
      crash:
        x-pysup: {rootfs: ROOTFS, backoff: {base: 30s}}
        restart: on-failure
        command: ["/bin/sh", "-c", "exit 3"]
    """)
    wait_socket(up_env, u)
    u.wait_event("replica.started", service="app")
    u.wait_event("replica.restarting", service="crash")
    crash = json.loads(ok(pysup(up_env, "ps", "--format", "json", "crash")))[0]
    assert crash["state"] == "restarting" and 0 < crash["next_retry_in"] <= 30 and crash["pid"] is None
    assert crash["restarts"] == 1 and crash["crash_loop"] is False
    assert crash["last_exit"] == {"code": 3, "signal": None, "oom": False, "reason": "exit code 3"}
    assert "restarting (in " in ok(pysup(up_env, "ps", "crash"))
    path = str(up_env.tmp / "run" / up_env.project / "control.sock")
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()

    for data, code in ((b"\x00\x01garbage\xff\n", P.BAD_REQUEST), (b'{"v": 1, "cmd": "ps"', P.BAD_REQUEST),
                       (b'{"v": 1, "cmd": "rm -rf"}\n', P.UNKNOWN_COMMAND), (b'"ps"\n', P.BAD_REQUEST)):
        reply = send_raw(path, data)
        assert reply["ok"] is False and reply["error"]["code"] == code, (data, reply)
    reply = send_raw(path, b'{"v": 1, "cmd": "ps", "x": "' + b"a" * (8 * P.MAX_REQUEST), shut=False)
    assert reply["error"]["code"] == P.TOO_LARGE

    # another user: the socket (0600, in a 0700 directory) cannot be reached
    def as_nobody():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    p = subprocess.run([sys.executable, "-c",
                        "import sys; sys.path.insert(0, sys.argv[2]);"
                        "from supervisor.control.client import Client; Client(sys.argv[1], 'x').request('ps')",
                        path, str(REPO)],
                       preexec_fn=as_nobody, capture_output=True, text=True, timeout=20)
    assert p.returncode != 0 and "permission denied" in p.stderr, p.stderr

    # the stack is untouched
    assert u.proc.poll() is None
    rows = json.loads(ok(pysup(up_env, "ps", "--format", "json", "app")))
    assert [r["state"] for r in rows] == ["running"]
    assert u.count("replica.started", service="app") == 1
    assert u.stop() == 0
