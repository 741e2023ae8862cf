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


def test_pids_limit_hit_is_logged_and_the_host_is_unaffected(up_env):
    # A fork loop that stops at the limit: pids.max refuses its forks, the kernel tells (v1: the
    # kernel log's first hit; v2: pids.events) and pysup logs it with the limit.
    u = up_env.up("""
    services:
      forky:
        x-pysup: {rootfs: ROOTFS}
        init: true
        stop_grace_period: 300ms
        pids_limit: 8
        command: ["/bin/sh", "-c", "for i in $$(seq 30); do sleep 60 & done; wait"]
    """)
    hit = u.wait_event("replica.pids_limit_hit", service="forky", timeout=10)
    assert hit["limit"] == 8
    import subprocess
    assert subprocess.run(["true"]).returncode == 0  # the host still forks
    # busybox sh gives up when a fork fails; with restart: no the stack then ends by itself
    assert u.wait(15) == 0
