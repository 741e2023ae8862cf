"""Steering a running `pysup up`: stop (stays stopped, also across a reconcile), start, restart,
kill, pause/unpause, logs of every life, the events stream, and down."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from .test_control_commands import ok, pysup, wait_socket

pytestmark = pytest.mark.root


def states(up_env, *extra: str) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads(ok(pysup(up_env, "ps", "--all", "--format", "json", *extra)))}


def test_stop_start_restart_kill_pause_logs_events_down(up_env):
    u = up_env.up("""
    services:
      web:
        x-pysup: {rootfs: ROOTFS}
        init: true
        restart: always
        command: ["/bin/sh", "-c", "echo life; exec sleep 1000"]
      other:
        x-pysup: {rootfs: ROOTFS}
        init: true
        command: ["/bin/sleep", "1000"]
    """)
    wait_socket(up_env, u)
    u.wait_for(lambda e: u.count("replica.started") >= 2, what="2 replicas")
    events_out = open(up_env.tmp / "events.json", "w")
    ev = subprocess.Popen([sys.executable, "-m", "supervisor", "-p", up_env.project, "events", "--format", "json"],
                          env=up_env.env, stdout=events_out)
    try:
        time.sleep(0.5)  # the subscription is in place

        assert ok(pysup(up_env, "stop", "web")) == "web-1\n"
        web = states(up_env)["web-1"]
        assert web["state"] == "exited" and web["stopped"] is True and web["pid"] is None
        assert "web-1" not in {r["name"] for r in json.loads(ok(pysup(up_env, "ps", "--format", "json")))}
        # a reconcile (the spec edited: web's config changed) leaves it stopped; so does time
        # (restart: always)
        def reconciles():
            return u.count("reconcile.nothing_to_do") + u.count("reconcile.done")
        done = reconciles()
        spec = up_env.tmp / "compose.yaml"
        spec.write_text(spec.read_text().replace("restart: always", "restart: always\n    environment: {X: '1'}"))
        u.wait_for(lambda e: reconciles() > done, what="a reconcile")
        time.sleep(0.3)
        assert states(up_env)["web-1"]["state"] == "exited"
        assert u.proc.poll() is None

        assert ok(pysup(up_env, "start", "web")) == "web-1\n"
        assert states(up_env)["web-1"]["state"] == "running"
        assert ok(pysup(up_env, "exec", "web", "--", "sh", "-c", "echo $X")) == "1\n"  # started with the edited spec
        p = pysup(up_env, "exec", "web", "--", "no-such-command")
        assert p.returncode == 127 and "not found" in p.stderr
        assert ok(pysup(up_env, "restart", "web.1")) == "web-1\n"
        u.wait_for(lambda e: u.count("replica.started", service="web") >= 3, what="third life")

        # logs: every life, from the kept file
        deadline = time.monotonic() + 5
        while ok(pysup(up_env, "logs", "web")).count("life") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        logs = ok(pysup(up_env, "logs", "web"))
        assert logs.splitlines() == ["web-1 | life"] * 3
        assert ok(pysup(up_env, "logs", "--tail", "1", "--no-log-prefix", "web.1")) == "life\n"
        stamped = ok(pysup(up_env, "logs", "-t", "--since", "1h", "web-1")).splitlines()
        assert len(stamped) == 3 and re.match(r"web-1 \| \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z life$", stamped[0])
        assert ok(pysup(up_env, "logs", "--since", str(time.time() + 60), "web")) == ""
        assert ok(pysup(up_env, "logs", "other")) == ""

        # kill: the signal reaches PID 1; restart: always brings it back
        pid = states(up_env)["web-1"]["pid"]
        assert ok(pysup(up_env, "kill", "-s", "KILL", "web")) == "web-1\n"
        u.wait_event("replica.restarting", service="web", reason="killed by SIGKILL")
        deadline = time.monotonic() + 5
        while states(up_env)["web-1"]["pid"] in (None, pid):
            assert time.monotonic() < deadline, "not restarted"
            time.sleep(0.05)
        assert pysup(up_env, "kill", "-s", "NOPE", "web").returncode == 1

        # pause / unpause: the cgroup frozen and thawed
        assert ok(pysup(up_env, "pause", "other")) == "other-1\n"
        assert states(up_env)["other-1"]["state"] == "paused"
        top = ok(pysup(up_env, "top", "other"))
        assert "sleep 1000" in top
        assert ok(pysup(up_env, "unpause", "other")) == "other-1\n"
        assert states(up_env)["other-1"]["state"] == "running"
        # a paused replica stops (thawed first) and starts again
        ok(pysup(up_env, "pause", "other"))
        t0 = time.monotonic()
        assert ok(pysup(up_env, "stop", "other")) == "other-1\n"
        assert time.monotonic() - t0 < 5 and states(up_env)["other-1"]["state"] == "exited"
        assert ok(pysup(up_env, "start", "other.1")) == "other-1\n"
        assert states(up_env)["other-1"]["state"] == "running"

        # logs -f follows until the stack stops; down stops it gracefully and waits for it
        follow = subprocess.Popen([sys.executable, "-m", "supervisor", "-p", up_env.project, "logs", "-f", "web"],
                                  env=up_env.env, stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        t0 = time.monotonic()
        ok(pysup(up_env, "down", "-t", "5"))
        assert u.wait(5) == 0 and time.monotonic() - t0 < 5
        out, _ = follow.communicate(timeout=10)
        assert follow.returncode == 0 and out.count("life") == 4
        assert not (up_env.tmp / "run" / up_env.project).exists()
    finally:
        if ev.poll() is None:
            try:
                ev.wait(5)  # ends when the stack does
            except subprocess.TimeoutExpired:
                ev.send_signal(signal.SIGKILL)
                ev.wait()
        events_out.close()
    events = [json.loads(line) for line in (up_env.tmp / "events.json").read_text().splitlines()]
    names = [e["event"] for e in events]
    for want in ("control.stopped", "replica.stopped", "control.started",
                 "replica.started", "control.killed", "replica.restarting", "control.paused", "control.down",
                 "up.stopping"):
        assert want in names, (want, names)
    started = next(e for e in events if e["event"] == "replica.started")
    assert started["service"] == "web" and started["replica"] == 1 and isinstance(started["pid"], int)
    assert all(isinstance(e["time"], float) for e in events)
