"""Live reconcile for real: the spec file rewritten while `pysup up` runs — scale 1 → 20 → 5 → 0
→ 3 (the survivors are the original processes), an invalid save kept out, edits by rename and in
place, SIGHUP."""

import os
import signal
import time

import pytest

pytestmark = pytest.mark.root

SCALE = """
services:
  app:
    x-pysup: {{rootfs: ROOTFS}}
    command: ["sleep", "1000"]
    stop_grace_period: 200ms
    deploy: {{replicas: {n}}}
"""


def replicas(up_env, service):
    """{index: [pids]} of the service's replica cgroups, as the kernel has them."""
    from supervisor.cgroups import open_manager

    m = open_manager()
    out = {}
    if not m.exists(up_env.project):
        return out
    for child in m.children(up_env.project):
        name, _, rest = child.partition(".")
        if name == service:
            out[rest] = m.procs(f"{up_env.project}/{child}")
    return out


def save(up_env, text, how="rename"):
    path = up_env.tmp / "compose.yaml"
    import textwrap

    content = f"name: {up_env.project}\n" + textwrap.dedent(text).replace("ROOTFS", up_env.rootfs)
    if how == "rename":  # as vim and most editors do: a new file renamed over the old
        tmp = up_env.tmp / ".compose.yaml.tmp"
        tmp.write_text(content)
        os.rename(tmp, path)
    else:
        with open(path, "r+") as f:
            f.truncate(0)
            f.write(content)


def until(u, pred, timeout=20.0, what=""):
    deadline = time.monotonic() + timeout
    while not pred():
        if u.proc.poll() is not None:
            raise AssertionError(f"pysup exited ({u.proc.returncode}) before {what}:\n{u.stderr()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{u.stderr()[-3000:]}")
        time.sleep(0.05)


def reconciled(u, n, timeout=20.0):
    until(u, lambda: u.count("reconcile.done") >= n, timeout, f"reconcile #{n}")
    return [e for e in u.events() if e.get("event") == "reconcile.done"][n - 1]


def started_pids(u):
    return {e["container"]: e["pid"] for e in u.events() if e.get("event") == "replica.started"}


def test_scale_1_20_5_0_3_by_rewriting_the_file(up_env):
    u = up_env.up(SCALE.format(n=1))
    u.wait_event("watch.started")
    first = u.wait_event("replica.started", replica=1)["pid"]
    k = 0
    for n, how in ((20, "rename"), (5, "in-place"), (0, "rename"), (3, "in-place")):
        before = started_pids(u)
        t0 = time.monotonic()
        save(up_env, SCALE.format(n=n), how)
        k += 1
        done = reconciled(u, k)
        assert done["ok"], done
        deadline = time.monotonic() + 10
        while True:
            live = replicas(up_env, "app")
            if sorted(live, key=int) == [str(i) for i in range(1, n + 1)] and all(live.values()):
                break
            assert time.monotonic() < deadline, (n, live)
            time.sleep(0.05)
        after = started_pids(u)
        for i in range(1, n + 1):  # survivors are the original containers, never restarted
            cid = f"{up_env.project}-app-{i}"
            if cid in before and n != 3:
                assert after[cid] == before[cid]
                assert u.count("replica.started", container=cid) == (1 if n != 3 else 2)
        print(f"-> {n} replicas: converged in {time.monotonic() - t0:.2f} s")
    assert first == started_pids(u).get(f"{up_env.project}-app-1") or u.count("replica.started", replica=1) == 2
    plans = [e for e in u.events() if e.get("event") == "reconcile.action"]
    assert [(p["action"], p["replicas"]) for p in plans] == [
        ("scale-up", list(range(2, 21))), ("scale-down", list(range(20, 5, -1))),
        ("scale-down", [5, 4, 3, 2, 1]), ("scale-up", [1, 2, 3])]
    assert u.count("replica.started") == 20 + 3
    assert u.stop() == 0


def test_invalid_save_changes_nothing_then_a_valid_one_applies(up_env):
    u = up_env.up(SCALE.format(n=2))
    u.wait_event("watch.started")
    u.wait_event("replica.started", replica=2)
    save(up_env, SCALE.format(n=2).replace("deploy: {replicas: 2}", "deploy: {replicas: -3}"))
    bad = u.wait_event("reload.invalid")
    assert "compose.yaml:" in bad["problem"] and "services.app.deploy.replicas" in bad["problem"]
    save(up_env, "services: [broken")  # YAML error
    until(u, lambda: u.count("reload.invalid") >= 2, what="second invalid")
    assert "keeping the running stack" in u.stderr()
    time.sleep(0.3)
    assert u.count("reconcile.plan") == 0 and sorted(replicas(up_env, "app")) == ["1", "2"]
    save(up_env, SCALE.format(n=3), "in-place")
    assert reconciled(u, 1)["ok"]
    u.wait_event("replica.started", replica=3)
    assert u.count("replica.started") == 3
    assert u.stop() == 0


def test_sighup_forces_a_reload(up_env):
    u = up_env.up(SCALE.format(n=1))
    u.wait_event("watch.started")
    u.wait_event("replica.started", replica=1)
    u.proc.send_signal(signal.SIGHUP)
    u.wait_event("reload.started", trigger="SIGHUP")
    u.wait_event("reconcile.nothing_to_do")
    assert u.proc.poll() is None
    assert u.stop() == 0


def test_env_file_edits_are_watched_too(up_env):
    """The project's .env (interpolation) and a service's env_file: not the spec file itself."""
    (up_env.tmp / ".env").write_text("N=1\n")
    (up_env.tmp / "app.env").write_text("GREETING=hello\n")
    u = up_env.up("""
    services:
      app:
        x-pysup: {rootfs: ROOTFS}
        command: ["/bin/sh", "-c", "echo $$GREETING; exec sleep 1000"]
        env_file: app.env
        stop_grace_period: 200ms
        deploy:
          replicas: ${N}
          update_config: {monitor: 200ms}
    """)
    u.wait_event("watch.started")
    u.wait_event("replica.started", replica=1)
    (up_env.tmp / ".env").write_text("N=2\n")
    assert reconciled(u, 1)["results"] == ["scale-up app: ok"]
    (up_env.tmp / "app.env").write_text("GREETING=bonjour\n")
    assert reconciled(u, 2)["results"] == ["replace app: ok"]
    until(u, lambda: u.stdout().count("bonjour") == 2, 10, "both replicas replaced")
    (up_env.tmp / ".env").write_text("N=1\n")  # still watched after a reload
    assert reconciled(u, 3)["results"] == ["scale-down app: ok"]
    assert u.stop() == 0
