"""Crash loops with growing delays, restart: no, on-failure:3, unhealthy → restarted."""

import pytest

pytestmark = pytest.mark.root


def test_crash_loop_backoff_no_and_on_failure(up_env):
    u = up_env.up("""
    x-pysup: {backoff: {base: 100ms, cap: 400ms, reset_after: 10s}}
    x-base: &b
      x-pysup: {rootfs: ROOTFS}
      command: ["/bin/sh", "-c", "echo crash; exit 1"]
    services:
      loop: {<<: *b, restart: always}
      once: {<<: *b, restart: "no"}
      three: {<<: *b, restart: "on-failure:3"}
    """)
    u.wait_event("replica.restarting", service="loop", attempt=5, timeout=15)
    delays = [e["delay"] for e in u.events() if e.get("event") == "replica.restarting" and e["service"] == "loop"]
    assert delays[:5] == [0.1, 0.2, 0.4, 0.4, 0.4]
    assert all(e["reason"] == "exit code 1" for e in u.events() if e.get("event") == "replica.restarting")
    crash_loop = [e["crash_loop"] for e in u.events() if e.get("event") == "replica.restarting" and e["service"] == "loop"]
    assert crash_loop[0] is False and crash_loop[-1] is True
    gave_up = u.wait_event("replica.exited", service="three")
    assert "gave up after 3 restarts" in gave_up["restart"]
    assert u.count("replica.started", service="three") == 4
    assert u.count("replica.started", service="once") == 1
    assert u.wait_event("replica.exited", service="once")["restart"] == "restart policy is no"
    assert u.stop() == 0


def test_unhealthy_is_restarted(up_env):
    u = up_env.up("""
    services:
      app:
        x-pysup: {rootfs: ROOTFS}
        restart: always
        stop_grace_period: 300ms
        command: ["/bin/sh", "-c", "touch /tmp/ok; sleep 0.6; rm /tmp/ok; exec sleep 1000"]
        healthcheck: {test: ["CMD", "test", "-f", "/tmp/ok"], interval: 100ms, retries: 2}
    """)
    u.wait_event("replica.health", status="healthy")
    u.wait_event("replica.health", status="unhealthy", timeout=5)
    restarting = u.wait_event("replica.restarting", timeout=5)
    assert restarting["reason"].startswith("unhealthy: 2 failed probes in a row")
    u.wait_for(lambda e: e.get("event") == "replica.started" and u.count("replica.started") >= 2, what="restart")
    assert u.stop() == 0
