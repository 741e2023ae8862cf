"""Stopping: grace then SIGKILL of the whole cgroup; SIGKILL of pysup itself, then cleanup."""

import signal
import time

import pytest

from .conftest import alive

pytestmark = pytest.mark.root


def test_term_ignoring_process_killed_after_grace(up_env):
    u = up_env.up("""
    services:
      stubborn:
        x-pysup: {rootfs: ROOTFS}
        stop_grace_period: 1s
        command: ["/bin/sh", "-c", "trap '' TERM; sleep 1000 & while true; do sleep 1; done"]
      polite:
        x-pysup: {rootfs: ROOTFS}
        stop_grace_period: 1s
        command: ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    """)
    u.wait_event("replica.started", service="stubborn")
    u.wait_event("replica.started", service="polite")
    time.sleep(0.2)
    t0 = time.monotonic()
    assert u.stop(signal.SIGINT) == 0
    took = time.monotonic() - t0
    assert took < 1 + 1, took
    killing = u.wait_event("replica.killing", service="stubborn")
    assert "still running 1 s after SIGTERM" in killing["why"]
    assert u.count("replica.killing", service="polite") == 0


def test_second_signal_kills_at_once(up_env):
    u = up_env.up("""
    services:
      stubborn:
        x-pysup: {rootfs: ROOTFS}
        stop_grace_period: 30s
        command: ["/bin/sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
    """)
    u.wait_event("replica.started")
    u.proc.send_signal(signal.SIGINT)
    u.wait_event("replica.stopping")
    t0 = time.monotonic()
    assert u.stop(signal.SIGINT) == 0
    assert time.monotonic() - t0 < 2


def test_sigkill_of_pysup_then_up_cleans_leftovers(up_env):
    stack = """
    services:
      app:
        x-pysup: {rootfs: ROOTFS}
        command: ["sleep", "1000"]
        stop_grace_period: 500ms
        deploy: {replicas: 2}
    """
    u = up_env.up(stack)
    pids = [u.wait_event("replica.started", replica=i)["pid"] for i in (1, 2)]
    u.proc.kill()
    u.proc.wait()
    deadline = time.monotonic() + 3
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids), "containers outlived pysup"
    assert up_env.cgroups(), "the cgroups are the leftovers this test is about"
    again = up_env.up(None)
    again.wait_event("replica.started", replica=1)
    again.wait_event("replica.started", replica=2)
    removed = [e["removed"] for e in again.events() if e.get("event") == "up.leftover_removed"]
    assert any(r.startswith(f"cgroup {up_env.project}/app.1") for r in removed), removed
    assert any(r.startswith("record ") for r in removed), removed
    assert "removed leftovers of a previous run" in again.stderr()
    assert again.stop() == 0


def test_exit_code_from(up_env):
    u = up_env.up("""
    services:
      job:
        x-pysup: {rootfs: ROOTFS}
        command: ["/bin/sh", "-c", "sleep 0.3; exit 7"]
      server:
        x-pysup: {rootfs: ROOTFS}
        stop_grace_period: 300ms
        command: ["sleep", "1000"]
    """, "--exit-code-from", "job")
    assert u.wait(15) == 7
    assert u.count("up.aborting") == 1
