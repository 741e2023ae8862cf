"""A memory hog is OOM-killed, reported as such, restarted; its neighbour keeps running."""

import pytest

pytestmark = pytest.mark.root


def test_oom_killed_reported_and_restarted(up_env):
    u = up_env.up("""
    services:
      hog:
        x-pysup: {rootfs: ROOTFS}
        restart: on-failure:1
        command: ["/bin/sh", "-c", "sleep 0.3; dd if=/dev/zero of=/dev/null bs=64M count=1"]
        mem_limit: 16m
        memswap_limit: 16m
      calm:
        x-pysup: {rootfs: ROOTFS}
        command: ["sleep", "1000"]
        stop_grace_period: 500ms
        mem_limit: 16m
    """)
    restarting = u.wait_event("replica.restarting", service="hog", timeout=10)
    assert restarting["reason"].startswith("OOM killed") and restarting["exit_code"] == 137
    u.wait_event("replica.oom_kill", service="hog", timeout=5)
    u.wait_for(lambda e: u.count("replica.started", service="hog") == 2, what="hog restarted")
    u.wait_event("replica.exited", service="hog", timeout=10)  # on-failure:1: the second OOM ends it
    assert u.count("replica.started", service="calm") == 1
    assert u.count("replica.exited", service="calm") == 0
    assert u.stop() == 0
