"""Live reconcile for real: a changed command replaced rolling (start-first keeps a healthy
replica throughout), a `mem_limit`-only change applied to the running cgroup without a restart,
a failing update rolled back."""

import time
from pathlib import Path

import pytest

from .test_reconcile_scale import reconciled, save

pytestmark = pytest.mark.root

APP = """
services:
  app:
    x-pysup: {{rootfs: ROOTFS}}
    command: ["/bin/sh", "-c", "{script}"]
    stop_grace_period: 200ms
    mem_limit: {mem}
    healthcheck: {{test: ["CMD", "test", "-f", "/tmp/ok"], interval: 100ms, retries: 2}}
    deploy:
      replicas: 3
      update_config: {{parallelism: 1, order: {order}, failure_action: rollback, monitor: 300ms}}
"""
GOOD = "touch /tmp/ok; echo {v}; exec sleep 1000"


def app(version="v1", mem="64m", order="start-first", script=None):
    return APP.format(script=script or GOOD.format(v=version), mem=mem, order=order)


def healthy_over_time(events, service="app"):
    """The number of healthy replicas after each event."""
    healthy, counts = set(), []
    for e in events:
        if e.get("service") != service:
            continue
        c = e.get("container")
        if e.get("event") == "replica.health":
            (healthy.add if e["status"] == "healthy" else healthy.discard)(c)
        elif e.get("event") in ("replica.stopping", "replica.stopped", "replica.exited", "replica.restarting"):
            healthy.discard(c)
        else:
            continue
        counts.append(len(healthy))
    return counts


def test_changed_command_is_replaced_one_by_one_start_first(up_env):
    u = up_env.up(app())
    u.wait_event("watch.started")
    for i in (1, 2, 3):
        u.wait_event("replica.health", status="healthy", replica=i)
    n_before = len(u.events())
    save(up_env, app("v2"))
    done = reconciled(u, 1)
    assert done["ok"] and done["results"] == ["replace app: ok"], done
    during = u.events()[n_before:]
    assert min(healthy_over_time(u.events())[len(healthy_over_time(u.events()[:n_before])):]) >= 3
    steps = [(e["event"], e["container"]) for e in during if e.get("event") in ("update.starting_new", "update.stopping_old")]
    p = up_env.project
    assert steps == [("update.starting_new", f"{p}-app-1-r1"), ("update.stopping_old", f"{p}-app-1"),
                     ("update.starting_new", f"{p}-app-2-r1"), ("update.stopping_old", f"{p}-app-2"),
                     ("update.starting_new", f"{p}-app-3-r1"), ("update.stopping_old", f"{p}-app-3")]
    for i in (1, 2, 3):
        assert f"app-{i} | v2" in u.stdout()
    from supervisor.cgroups import open_manager

    assert sorted(open_manager().children(up_env.project)) == ["app.1.r1", "app.2.r1", "app.3.r1"]
    assert u.stop() == 0


def test_mem_limit_only_updates_the_cgroup_without_restarting(up_env):
    from supervisor.cgroups import open_manager

    u = up_env.up(app(mem="64m"))
    u.wait_event("watch.started")
    pids = {i: u.wait_event("replica.started", replica=i)["pid"] for i in (1, 2, 3)}
    m = open_manager()

    def limit(i):
        dirs = m.directories(f"{up_env.project}/app.{i}")
        if "memory" in dirs:  # v1
            return int(Path(dirs['memory'], 'memory.limit_in_bytes').read_text())
        return int(Path(next(iter(dirs.values())), 'memory.max').read_text())

    assert limit(1) == 64 << 20
    save(up_env, app(mem="96m"), "in-place")
    done = reconciled(u, 1)
    assert done["ok"] and done["results"] == ["update-limits app: ok"], done
    assert [limit(i) for i in (1, 2, 3)] == [96 << 20] * 3
    assert u.count("replica.started") == 3  # no restart
    for i in (1, 2, 3):
        assert pids[i] in m.procs(f"{up_env.project}/app.{i}")
    assert u.count("replica.limits_updated") == 3
    assert u.stop() == 0


def test_failing_update_is_rolled_back(up_env):
    u = up_env.up(app(order="stop-first"))
    u.wait_event("watch.started")
    for i in (1, 2, 3):
        u.wait_event("replica.health", status="healthy", replica=i)
    save(up_env, app(order="stop-first", script="echo broken; exit 3"))
    done = reconciled(u, 1)
    assert not done["ok"] and done["results"][0].startswith("replace app: rolled back"), done
    assert u.count("update.rolling_back") == 1
    time.sleep(0.3)
    from supervisor.cgroups import open_manager

    children = sorted(open_manager().children(up_env.project))
    assert children == ["app.1.r2", "app.2", "app.3"], children  # 1 went to the bad config and back
    assert u.stop() == 0


SECRET = """
services:
  app:
    x-pysup: {{rootfs: ROOTFS}}
    command: ["/bin/sh", "-c", "echo pw=$$(cat /run/secrets/pw); exec sleep 1000"]
    stop_grace_period: 200ms
    secrets: [pw]
  other:
    x-pysup: {{rootfs: ROOTFS}}
    command: ["/bin/sleep", "1000"]
    stop_grace_period: 200ms
secrets:
  pw: {{file: ./{file}}}
"""


def test_a_changed_secret_definition_replaces_the_services_using_it(up_env):
    (up_env.tmp / "one.txt").write_text("one\n")
    (up_env.tmp / "two.txt").write_text("two\n")
    u = up_env.up(SECRET.format(file="one.txt"))
    u.wait_event("watch.started")
    u.wait_for(lambda e: "app-1   | pw=one" in u.stdout() or "app-1 | pw=one" in u.stdout(), what="pw=one")
    other = u.wait_event("replica.started", service="other")["pid"]
    save(up_env, SECRET.format(file="two.txt"))
    done = reconciled(u, 1)
    assert done["ok"] and done["results"] == ["replace app: ok"], done
    u.wait_for(lambda e: "pw=two" in u.stdout(), what="the replacement reads the new secret")
    assert [e["pid"] for e in u.events() if e.get("event") == "replica.started" and e.get("service") == "other"] == [other]
    assert u.stop() == 0
