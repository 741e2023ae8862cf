"""pysup up whose stdout nobody reads: container output must not stall supervision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from .conftest import Up


class UnreadStdout(Up):
    """`pysup up` with stdout a pipe that is never read (a stuck terminal, a dead `| less`)."""

    def __init__(self, env, workdir, project, compose, args=()):
        self.env, self.workdir, self.project, self.compose = env, workdir, project, compose
        self.out_path = workdir / "stdout-unused"
        self.err_path = workdir / "stderr-blocked"
        self.unread, w = os.pipe()
        try:
            with open(self.err_path, "wb") as err:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "supervisor", "--log-format", "json", "up", "-f", str(compose),
                     "--no-color", *args], stdout=w, stderr=err, env=env, cwd=workdir)
        finally:
            os.close(w)
        self.t0 = time.monotonic()


def test_a_blocked_stdout_drops_terminal_lines_but_supervision_and_logs_go_on(up_env):
    compose = up_env.write("""
        x-pysup: {backoff: {base: 50ms, cap: 50ms, reset_after: 10s}}
        services:
          chatty:
            x-pysup: {rootfs: ROOTFS}
            command: ["sh", "-c", "i=0; while [ $$i -lt 40000 ]; do echo \\"line $$i padding-padding-padding-padding\\";
                               i=$$((i+1)); done; sleep 1000"]
            stop_signal: SIGKILL
          crasher:
            x-pysup: {rootfs: ROOTFS}
            command: ["sh", "-c", "sleep 0.2; exit 3"]
            restart: always
    """)
    u = UnreadStdout(up_env.env, up_env.tmp, up_env.project, compose)
    up_env.ups.append(u)
    try:
        dropping = u.wait_event("console.dropping", timeout=30)
        assert "per-container logs keep everything" in dropping["detail"]
        # the trio loop is free: the crasher keeps being restarted after the terminal side jammed
        before = u.count("replica.restarting", service="crasher")
        u.wait_for(lambda _ev: u.count("replica.restarting", service="crasher") >= before + 3, timeout=20,
                   what="3 more restarts of crasher")
        log = up_env.tmp / "state" / "projects" / up_env.project / "logs" / f"{up_env.project}-chatty-1.log"
        deadline = time.monotonic() + 30
        while True:  # the kept log is complete: every line, in order
            lines = [json.loads(x)["line"] for x in log.read_text().splitlines()] if log.exists() else []
            if len(lines) >= 40000 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert [int(x.split()[1]) for x in lines] == list(range(40000))
        t0 = time.monotonic()
        assert u.stop(timeout=20) == 0
        assert time.monotonic() - t0 < 10
    finally:
        os.close(u.unread)
