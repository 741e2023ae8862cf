"""The control API against a real `pysup up`: ps, top, exec, stats, the stack found by -p, -f or
the compose file in the current directory, and what a command says when no stack runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.root

PS_FIELDS = {"id", "name", "service", "index", "state", "health", "pid", "started_at", "uptime", "restarts",
             "crash_loop", "next_retry_in", "last_exit", "gave_up", "stopped", "oom_kills", "ip", "ports"}
STATS_FIELDS = {"id", "name", "service", "index", "cpu_percent", "memory_used", "memory_limit", "memory_percent",
                "pids", "io_read", "io_write"}


def pysup(up_env, *args: str, project: bool = True, input: str | None = None, timeout: float = 20,
          **kw) -> subprocess.CompletedProcess:
    pre = ("-p", up_env.project) if project else ()
    kw.setdefault("cwd", up_env.tmp)
    return subprocess.run([sys.executable, "-m", "supervisor", *pre, *args], env=up_env.env,
                          capture_output=True, text=True, input=input, timeout=timeout, **kw)


def ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"{p.args}: {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def wait_socket(up_env, u, timeout: float = 10.0) -> None:
    path = up_env.tmp / "run" / up_env.project / "control.sock"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert u.proc.poll() is None, f"pysup exited ({u.proc.returncode}):\n{u.stderr()[-3000:]}"
        assert time.monotonic() < deadline, f"no control socket:\n{u.stderr()[-3000:]}"
        time.sleep(0.02)


STACK = """
services:
  web:
    x-pysup: {rootfs: ROOTFS}
    init: true
    deploy: {replicas: 2}
    command: ["/bin/sh", "-c", "echo life; exec sleep 1000"]
  db:
    x-pysup: {rootfs: ROOTFS}
    init: true
    command: ["/bin/sleep", "1000"]
    healthcheck: {test: ["CMD", "true"], interval: 100ms}
"""


def test_ps_top_exec_stats(up_env):
    u = up_env.up(STACK)
    wait_socket(up_env, u)
    u.wait_event("replica.health", status="healthy", service="db")
    u.wait_for(lambda e: u.count("replica.started") >= 3, what="3 replicas")

    rows = json.loads(ok(pysup(up_env, "ps", "--format", "json")))
    assert [r["name"] for r in rows] == ["web-1", "web-2", "db-1"] or sorted(r["name"] for r in rows) == \
        ["db-1", "web-1", "web-2"]
    for r in rows:
        assert set(r) == PS_FIELDS
        assert isinstance(r["pid"], int) and r["uptime"] >= 0 and r["restarts"] == 0 and r["last_exit"] is None
        assert r["id"] == f"{up_env.project}-{r['service']}-{r['index']}"
    db = next(r for r in rows if r["service"] == "db")
    assert db["state"] == "healthy" and db["health"] == "healthy"

    table = ok(pysup(up_env, "ps", "web")).splitlines()
    assert table[0].split()[:3] == ["NAME", "SERVICE", "STATE"]
    assert sorted(line.split()[0] for line in table[1:]) == ["web-1", "web-2"]
    # the stack found by the compose file in the current directory, and by -f
    assert "db-1" in ok(pysup(up_env, "ps", project=False))
    assert "db-1" in ok(pysup(up_env, "-f", str(up_env.tmp / "compose.yaml"), "ps", project=False, cwd="/"))

    top = ok(pysup(up_env, "top", "web.1"))
    assert "sleep 1000" in top and "web-2" not in top

    p = pysup(up_env, "exec", "-e", "FOO=bar", "-w", "/tmp", "web.2", "--", "/bin/sh", "-c",
              "echo foo=$FOO cwd=$(pwd); cat; tr '\\0' ' ' < /proc/1/cmdline; echo; echo oops >&2; exit 3",
              input="from stdin\n")
    assert p.returncode == 3, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "foo=bar cwd=/tmp" and lines[1] == "from stdin"
    assert lines[2].startswith("/dev/init") and "sleep 1000" in lines[2]  # the container's PID 1
    assert p.stderr == "oops\n"
    assert ok(pysup(up_env, "exec", "-u", "1000", "web", "--", "id", "-u")).strip() == "1000"
    p = pysup(up_env, "exec", "nope", "--", "true")
    assert p.returncode == 1 and p.stderr.strip() == "pysup: no such service: nope"

    rows = json.loads(ok(pysup(up_env, "stats", "--no-stream", "--format", "json")))
    assert sorted(r["name"] for r in rows) == ["db-1", "web-1", "web-2"]
    for r in rows:
        assert set(r) == STATS_FIELDS
        assert r["memory_used"] > 0 and r["pids"] >= 1 and r["cpu_percent"] is not None and r["memory_limit"] > 0
    table = ok(pysup(up_env, "stats", "--no-stream")).splitlines()
    assert table[0].startswith("NAME") and len(table) == 4
    # streaming: a new sample every second
    with subprocess.Popen([sys.executable, "-m", "supervisor", "-p", up_env.project, "stats", "--format", "json"],
                          env=up_env.env, stdout=subprocess.PIPE, text=True) as s:
        try:
            assert len(json.loads(s.stdout.readline())) == 3
            assert len(json.loads(s.stdout.readline())) == 3
        finally:
            s.kill()
    assert u.stop() == 0


def test_no_stack_running(up_env):
    up_env.write(STACK)
    for cmd in (["ps"], ["stop", "web"], ["exec", "web", "--", "true"], ["down"], ["events"]):
        p = pysup(up_env, *cmd)
        assert p.returncode == 1
        assert p.stderr.count("\n") == 1 and f"no stack {up_env.project!r} is running" in p.stderr, p.stderr
    p = pysup(up_env, "ps", project=False)
    assert p.returncode == 1 and f"no stack {up_env.project!r} is running" in p.stderr


def test_exec_caller_gone_ends_the_command(up_env):
    u = up_env.up("""
    services:
      app:
        x-pysup: {rootfs: ROOTFS}
        init: true
        command: ["/bin/sleep", "1000"]
    """)
    wait_socket(up_env, u)
    u.wait_event("replica.started")
    p = subprocess.Popen([sys.executable, "-m", "supervisor", "-p", up_env.project, "exec", "app", "--",
                          "sleep", "777"], env=up_env.env)
    try:
        def sleeping() -> bool:
            return "sleep 777" in ok(pysup(up_env, "top", "app"))
        deadline = time.monotonic() + 10
        while not sleeping():
            assert time.monotonic() < deadline, "exec did not start"
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 130
    finally:  # a failure above must not leave the client running into the next test
        if p.poll() is None:
            p.kill()
            p.wait()
    deadline = time.monotonic() + 5
    while sleeping():
        assert time.monotonic() < deadline, "the exec'd command outlived its caller"
        time.sleep(0.05)
    assert u.proc.poll() is None and u.stop() == 0
