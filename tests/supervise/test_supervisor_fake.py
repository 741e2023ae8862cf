"""The supervisor's orchestration on a fake runtime and the autojump clock: order, readiness,
restarts with backoff, health-driven restarts, stop order and grace, abort-on-exit."""

import signal
import textwrap

import pytest
import trio

from supervisor.config.load import load
from supervisor.supervise.state import ReplicaState as S
from supervisor.supervise.supervisor import DependencyError, StackSupervisor

from .fakes import FakeCgroups, FakeRuntime, exits, forever, make_spec


def stack(tmp_path, text):
    f = tmp_path / "compose.yaml"
    f.write_text("name: p\n" + textwrap.dedent(text).replace("{command:", "{image: busybox, command:"))
    return load([str(f)], environ={}).stack


def supervisor(st, rt, **kw):
    return StackSupervisor(st, runtime=rt, cgroups=FakeCgroups(rt), make_spec=make_spec, **kw)


async def run_for(sup, seconds):
    code = None
    async with trio.open_nursery() as n:
        async def go():
            nonlocal code
            code = await sup.run()
        n.start_soon(go)
        await trio.sleep(seconds)
        sup.request_stop()
    return code


HC = "healthcheck: {test: [CMD, check], interval: 1s, retries: 2}"


async def test_healthy_dependency_gates_start(tmp_path, autojump_clock):
    st = stack(tmp_path, f"""
    services:
      db: {{command: [db], {HC}}}
      web: {{command: [web], depends_on: {{db: {{condition: service_healthy}}}}}}
      side: {{command: [side]}}
    """)
    rt = FakeRuntime({"db": forever(), "web": forever(), "side": forever()}, probes={"db": lambda n: 0 if n >= 2 else 1})
    sup = supervisor(st, rt)
    assert await run_for(sup, 10) == 0
    starts = dict(rt.starts)
    assert starts["p-db-1"] == starts["p-side-1"] == 0  # independent services in parallel
    assert starts["p-web-1"] == pytest.approx(2)  # after the second probe made db healthy
    assert all(r.status.state is S.EXITED for r in sup.all_replicas())


async def test_unhealthy_dependency_fails_naming_both(tmp_path, autojump_clock):
    st = stack(tmp_path, f"""
    services:
      db: {{command: [db], restart: "no", {HC}}}
      web: {{command: [web], depends_on: {{db: {{condition: service_healthy}}}}}}
    """)
    rt = FakeRuntime({"db": forever(), "web": forever()}, probes={"db": lambda n: 1})
    sup = supervisor(st, rt)
    with trio.fail_after(30):
        with pytest.raises(DependencyError, match="'web'.*'db'.*unhealthy"):
            await sup.run()
    assert "p-web-1" not in dict(rt.starts)


async def test_optional_dependency_failure_is_a_warning(tmp_path, autojump_clock):
    st = stack(tmp_path, """
    services:
      db: {command: [db]}
      web: {command: [web], depends_on: {db: {condition: service_healthy, required: false}}}
    """)
    rt = FakeRuntime({"db": forever(), "web": forever()})
    sup = supervisor(st, rt)
    await run_for(sup, 2)
    assert "p-web-1" in dict(rt.starts)


async def test_completed_successfully(tmp_path, autojump_clock):
    st = stack(tmp_path, """
    services:
      migrate: {command: [m]}
      web: {command: [web], depends_on: {migrate: {condition: service_completed_successfully}}}
    """)
    rt = FakeRuntime({"migrate": exits(0, after=2), "web": forever()})
    await run_for(supervisor(st, rt), 5)
    assert dict(rt.starts)["p-web-1"] == pytest.approx(2)


async def test_crash_loop_backoff_grows_and_state_shows_retry(tmp_path, autojump_clock):
    st = stack(tmp_path, """
    x-pysup: {backoff: {base: 1s, cap: 4s, reset_after: 100s}}
    services:
      bad: {command: [bad], restart: always}
    """)
    rt = FakeRuntime({"bad": exits(1, after=0)})
    sup = supervisor(st, rt)
    seen = []

    async def watch():
        await sup.wait_until(lambda: sup.replicas.get("bad"))
        r = sup.replicas["bad"][0]
        await sup.wait_until(lambda: r.status.state is S.RESTARTING and r.status.restart_count == 3)
        seen.append((r.status.next_retry_at, r.status.crash_looping))

    async with trio.open_nursery() as n:
        n.start_soon(watch)
        await run_for(sup, 20)
    times = [t for _, t in rt.starts]
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    assert gaps[:5] == [1, 2, 4, 4, 4]
    assert seen[0][1] is True and seen[0][0] == pytest.approx(3 + 4)


async def test_restart_no_stays_exited_and_on_failure_gives_up(tmp_path, autojump_clock):
    st = stack(tmp_path, """
    x-pysup: {backoff: {base: 100ms}}
    services:
      once: {command: [x], restart: "no"}
      three: {command: [x], restart: "on-failure:3"}
      keep: {command: [x]}
    """)
    rt = FakeRuntime({"once": exits(2), "three": exits(1), "keep": forever()})
    sup = supervisor(st, rt)
    await run_for(sup, 30)
    starts = [cid for cid, _ in rt.starts]
    assert starts.count("p-once-1") == 1 and starts.count("p-three-1") == 4
    three = sup.replicas["three"][0].status
    assert "gave up after 3 restarts" in three.gave_up


async def test_all_exited_ends_up(tmp_path, autojump_clock):
    st = stack(tmp_path, """
    services:
      a: {command: [x]}
      b: {command: [x]}
    """)
    rt = FakeRuntime({"a": exits(0), "b": exits(3)})
    with trio.fail_after(10):
        assert await supervisor(st, rt).run() == 0


async def test_unhealthy_is_stopped_and_restarted(tmp_path, autojump_clock):
    st = stack(tmp_path, f"""
    services:
      app: {{command: [x], restart: always, {HC}}}
    """)
    # healthy twice, then failing: unhealthy after 2 failures
    rt = FakeRuntime({"app": forever()}, probes={"app": lambda n: 0 if n <= 2 else 1})
    sup = supervisor(st, rt)
    await run_for(sup, 5.5)
    r = sup.replicas["app"][0]
    assert r.exits[0].kind == "unhealthy" and "2 failed probes" in r.exits[0].detail
    assert rt.handles["p-app-1"].signals  # it was sent the stop signal
    assert len(rt.starts) >= 2


async def test_stop_reverse_order_grace_then_kill(tmp_path, autojump_clock):
    st = stack(tmp_path, """
    services:
      db: {command: [x]}
      web: {command: [x], depends_on: [db], stop_grace_period: 3s, deploy: {replicas: 2}}
    """)
    rt = FakeRuntime({"db": forever(), "web": forever(ignore_term=True)})
    sup = supervisor(st, rt)
    t0 = None
    async with trio.open_nursery() as n:
        n.start_soon(sup.run)
        await trio.sleep(1)
        t0 = trio.current_time()
        sup.request_stop()
    assert trio.current_time() - t0 == pytest.approx(3)  # both web replicas in parallel, then db at once
    web = rt.handles["p-web-1"]
    assert web.signals == [signal.SIGTERM, signal.SIGKILL]
    assert rt.handles["p-db-1"].signals == [signal.SIGTERM]


async def test_second_stop_kills_at_once(tmp_path, autojump_clock):
    st = stack(tmp_path, """
    services:
      web: {command: [x], stop_grace_period: 30s}
    """)
    rt = FakeRuntime({"web": forever(ignore_term=True)})
    sup = supervisor(st, rt)
    async with trio.open_nursery() as n:
        n.start_soon(sup.run)
        await trio.sleep(1)
        sup.request_stop()
        await trio.sleep(1)
        t0 = trio.current_time()
        sup.request_stop(kill=True)
    assert trio.current_time() - t0 < 0.1


async def test_abort_on_container_exit_and_exit_code_from(tmp_path, autojump_clock):
    st = stack(tmp_path, """
    services:
      job: {command: [x]}
      srv: {command: [x]}
    """)
    rt = FakeRuntime({"job": exits(7, after=2), "srv": forever()})
    with trio.fail_after(10):
        assert await supervisor(st, rt, abort_on_container_exit=True).run() == 7
    rt = FakeRuntime({"job": exits(7, after=2), "srv": forever()})
    with trio.fail_after(10):
        assert await supervisor(st, rt, exit_code_from="srv").run() == 128 + signal.SIGTERM


async def test_start_failure_is_reported_and_follows_policy(tmp_path, autojump_clock):
    st = stack(tmp_path, """
    services:
      bad: {command: [nope], restart: "on-failure:2"}
      ok: {command: [x]}
    """)
    rt = FakeRuntime({"ok": forever()}, fail_start={"bad"})
    sup = supervisor(st, rt)
    await run_for(sup, 5)
    r = sup.replicas["bad"][0]
    assert [e.kind for e in r.exits] == ["start-failed"] * 3 and r.exits[0].exit_code == 127


async def test_oom_kill_reported_as_oom(tmp_path, autojump_clock):
    st = stack(tmp_path, """
    services:
      hog: {command: [x], restart: always}
      calm: {command: [x]}
    """)
    rt = FakeRuntime({"hog": forever(), "calm": forever()})
    cg = FakeCgroups(rt)
    sup = StackSupervisor(st, runtime=rt, cgroups=cg, make_spec=make_spec)
    async with trio.open_nursery() as n:
        n.start_soon(sup.run)
        await trio.sleep(1)
        cg.oom["p/hog.1"] = 1
        rt.handles["p-hog-1"].send_signal(signal.SIGKILL)
        await trio.sleep(1)
        sup.request_stop()
    hog = sup.replicas["hog"][0]
    assert hog.exits[0].kind == "oom" and hog.exits[0].exit_code == 137
    assert [cid for cid, _ in rt.starts].count("p-calm-1") == 1


async def test_pre_stop_hook_runs_before_the_stop_signal(tmp_path, autojump_clock):
    st = stack(tmp_path, """
    services:
      web:
        image: busybox
        command: [x]
        post_start:
          - command: [warm, up]
        pre_stop:
          - command: [drain]
            user: app
            environment: {MODE: fast}
    """)
    rt = FakeRuntime({"web": forever()})
    calls = []
    real_exec = rt.exec

    async def exec(container, spec, **kw):
        calls.append((spec.argv, spec.user, dict(spec.env).get("MODE"), list(container.signals)))
        return await real_exec(container, spec, **kw)

    rt.exec = exec
    sup = supervisor(st, rt)
    await run_for(sup, 1)
    assert calls[0][0] == ("warm", "up")
    assert calls[1] == (("drain",), "app", "fast", [])  # before any signal
    assert rt.handles["p-web-1"].signals == [signal.SIGTERM]


async def test_cgroup_failure_stops_the_stack_with_the_error(tmp_path, autojump_clock):
    from supervisor.errors import CgroupError

    st = stack(tmp_path, """
    services:
      a: {command: [x]}
      b: {command: [x], depends_on: [a]}
    """)
    rt = FakeRuntime({"a": forever(), "b": forever()})
    cg = FakeCgroups(rt)
    real_create = cg.create

    async def create(path, resources, *, service):
        if service == "b":
            raise CgroupError("mkdir: no space", path=path, operation="create")
        await real_create(path, resources, service=service)

    cg.create = create
    sup = StackSupervisor(st, runtime=rt, cgroups=cg, make_spec=make_spec)
    with trio.fail_after(30), pytest.raises(CgroupError, match="no space"):
        await sup.run()
    assert rt.handles["p-a-1"].signals == [signal.SIGTERM]  # stopped gracefully
    assert cg.live == set()


async def test_replica_run_is_started_once_its_container_runs_or_its_first_start_failed(tmp_path, autojump_clock):
    st = stack(tmp_path, """
    services:
      slow: {command: [slow]}
      bad: {command: [bad], restart: always}
    """)
    rt = FakeRuntime({"slow": forever(), "bad": forever()}, fail_start={"bad"})
    sup = supervisor(st, rt)
    real_start = rt.start

    async def slow_start(spec, **kw):  # the runtime takes 1 s to exec the container
        await trio.sleep(1)
        return await real_start(spec, **kw)

    rt.start = slow_start
    slow = sup.new_replica(st.services["slow"], 1)
    bad = sup.new_replica(st.services["bad"], 1)
    async with trio.open_nursery() as n:
        t0 = trio.current_time()
        await n.start(slow.run)
        assert slow.status.state is S.RUNNING and slow.handle is not None
        assert trio.current_time() - t0 >= 1
        await n.start(bad.run)  # its start failed: run goes on (restarting), start() returns
        assert bad.exits and bad.exits[0].kind == "start-failed"
        assert not bad.done.is_set()
        slow.request_stop()
        bad.request_stop()


@pytest.mark.parametrize("failure", ["timeout", "error"])
async def test_what_a_container_used_is_kept_while_its_cgroup_is_not_gone(tmp_path, autojump_clock, failure):
    """A cgroup that cannot be removed may still hold processes of the container (stuck in the
    kernel): its removed hooks get their pids (the user namespace's ids are handed over to them);
    with no process left in it, they get none; when what is left cannot be read, they do not run
    (nothing is given back)."""
    from supervisor.errors import CgroupError

    st = stack(tmp_path, """
    services:
      ok: {command: [x]}
      stuck: {command: [x]}
      empty: {command: [x]}
      unreadable: {command: [x]}
    """)
    rt = FakeRuntime({"ok": forever(), "stuck": forever(), "empty": forever(), "unreadable": forever()})
    cg = FakeCgroups(rt)
    real_remove = cg.remove

    async def remove(path):
        await real_remove(path)
        if "ok" not in path:
            if failure == "timeout":
                await trio.sleep_forever()  # never ends: the replica gives up after 15 s
            raise CgroupError("rmdir: busy", path=path, operation="remove")

    cg.remove = remove
    def procs(path):
        if "unreadable" in path:
            raise CgroupError("cgroup.procs: I/O error", path=path, operation="read")
        return [4242, 4243] if "stuck" in path else []

    cg.procs = procs
    released, kept = [], []

    def spec(replica):
        def hook(pids):
            if pids:
                kept.append((replica.service.name, pids))
            else:
                released.append(replica.service.name)

        if not replica.removed_hooks:
            replica.removed_hooks.append(hook)
        return make_spec(replica)

    sup = StackSupervisor(st, runtime=rt, cgroups=cg, make_spec=spec)
    await run_for(sup, 5)
    assert sorted(released) == ["empty", "ok"] and kept == [("stuck", [4242, 4243])]
    assert all(r.removed_hooks == [] for r in sup.all_replicas())  # never run again
