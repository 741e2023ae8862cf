"""`pysup up` for real: dependency order and readiness, secrets, hooks, logs, the project lock."""

import json

import pytest

pytestmark = pytest.mark.root

STACK = """
x-base: &b
  x-pysup: {rootfs: ROOTFS}
  stop_grace_period: 300ms
services:
  db:
    <<: *b
    command: ["/bin/sh", "-c", "sleep 0.5; touch /tmp/ready; echo db ready; exec sleep 1000"]
    healthcheck: {test: ["CMD", "test", "-f", "/tmp/ready"], interval: 100ms, retries: 3, start_period: 3s, start_interval: 100ms}
  web:
    <<: *b
    command: ["/bin/sh", "-c", "echo secret=$$(cat /run/secrets/pw); while true; do sleep 1; done"]
    depends_on: {db: {condition: service_healthy}}
    secrets: [pw]
    post_start:
      - command: ["/bin/sh", "-c", "echo hooked > /tmp/hooked"]
    healthcheck: {test: ["CMD", "test", "-f", "/tmp/hooked"], interval: 100ms}
    deploy: {replicas: 2}
secrets:
  pw: {environment: PW}
"""


def test_waits_for_health_then_starts_dependents(up_env):
    up_env.env["PW"] = "s3cret"
    u = up_env.up(STACK)
    healthy = u.wait_event("replica.health", status="healthy", service="db")
    for i in (1, 2):
        started = u.wait_event("replica.started", service="web", replica=i)
        assert started["timestamp"] > healthy["timestamp"]
        u.wait_event("replica.health", status="healthy", service="web", replica=i)  # the hook ran inside
    u.wait_for(lambda e: "secret=s3cret" in u.stdout().replace("web-2 | secret=s3cret", ""), what="secret")
    assert "web-1 | secret=s3cret" in u.stdout() and "db-1  | db ready" in u.stdout()
    # a second `up` of the same project refuses while this one runs
    second = up_env.up(None)
    assert second.wait(15) == 1
    assert "is already up" in second.stderr()
    assert u.stop() == 0
    kept = up_env.tmp / "state" / "projects" / up_env.project / "logs" / f"{up_env.project}-db-1.log"
    lines = [json.loads(x) for x in kept.read_text().splitlines()]
    assert {"stream": "stdout", "line": "db ready"}.items() <= lines[0].items()


def test_dependency_never_healthy_fails_naming_both(up_env):
    u = up_env.up("""
    x-base: &b
      x-pysup: {rootfs: ROOTFS}
      stop_grace_period: 300ms
    services:
      db:
        <<: *b
        command: ["sleep", "1000"]
        healthcheck: {test: ["CMD", "false"], interval: 100ms, retries: 2}
      web:
        <<: *b
        command: ["sleep", "1000"]
        depends_on: {db: {condition: service_healthy}}
    """)
    assert u.wait(20) == 1
    assert "service 'web' cannot start: its dependency 'db' (service_healthy) failed: db-1 is unhealthy" in u.stderr()
    assert u.count("replica.started", service="web") == 0


def test_a_privileged_hook_runs_with_every_capability_the_others_with_the_containers(up_env):
    with open("/proc/self/status") as f:
        own = next(line.split()[1] for line in f if line.startswith("CapEff:"))
    u = up_env.up("""
    services:
      app:
        x-pysup: {rootfs: ROOTFS}
        command: ["sleep", "1000"]
        stop_grace_period: 300ms
        cap_drop: [NET_RAW]
        post_start:
          - command: ["/bin/sh", "-c", "echo plain $$(grep CapEff /proc/self/status)"]
          - command: ["/bin/sh", "-c", "echo privileged $$(grep CapEff /proc/self/status)"]
            privileged: true
        pre_stop:
          - command: ["/bin/sh", "-c", "echo pre $$(grep CapEff /proc/self/status)"]
            privileged: true
    """)
    plain = u.wait_for(lambda e: e.get("event") == "replica.post_start" and "plain" in (e.get("output") or ""))
    priv = u.wait_for(lambda e: e.get("event") == "replica.post_start" and "privileged" in (e.get("output") or ""))
    assert plain["output"].split()[-1] == "00000000a80405fb"  # Docker's default set less NET_RAW
    assert priv["output"].split()[-1] == own
    assert u.stop() == 0
    pre = next(e for e in u.events() if e.get("event") == "replica.pre_stop")
    assert pre["output"].split()[-1] == own
