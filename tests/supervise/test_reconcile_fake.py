"""Live reconcile on the fake runtime and the autojump clock: scale up and down, limits in place,
rolling updates (orders, batches, delay, monitor, failure actions), dependents, added and removed
services, edits arriving during a reconcile."""

import signal
import textwrap

import pytest
import trio

from supervisor.config.load import load
from supervisor.supervise.state import ReplicaState as S
from supervisor.supervise.supervisor import StackSupervisor

from .fakes import FakeCgroups, FakeRuntime, make_spec


def stack(tmp_path, text):
    f = tmp_path / "compose.yaml"
    f.write_text("name: p\n" + textwrap.dedent(text))
    return load([str(f)], environ={}).stack


def by_command(exit_after=0.5):
    """`bad` exits 1 after a while, anything else runs until stopped."""
    async def run(h):
        if h.argv[:1] == ("bad",):
            await trio.sleep(exit_after)
            return 1
        await trio.sleep_forever()
    return run


class Harness:
    def __init__(self, st, programs=None, probes=None):
        self.rt = FakeRuntime(programs or {}, probes=probes)
        self.cg = FakeCgroups(self.rt)
        self.sup = StackSupervisor(st, runtime=self.rt, cgroups=self.cg, make_spec=make_spec)

    async def apply(self, st):
        k = self.sup.reconciles
        self.sup.submit(st)
        await self.sup.wait_until(lambda: self.sup.reconciles > k)

    def live(self, service):
        return {r.index: r for r in self.sup.replicas.get(service, ()) if not r.done.is_set()}

    def running(self, service):
        return sorted(i for i, r in self.live(service).items() if r.status.state in (S.RUNNING, S.HEALTHY))


async def run_with(h, body):
    async with trio.open_nursery() as n:
        n.start_soon(h.sup.run)
        await h.sup._first_start_done.wait()
        await trio.sleep(0.1)
        await body()
        h.sup.request_stop()


SCALE = """
services:
  app: {{image: busybox, command: [run], stop_grace_period: 1s, deploy: {{replicas: {n}}}}}
"""


async def test_scale_1_20_5_0_3_keeps_the_original_replicas(tmp_path, autojump_clock):
    h = Harness(stack(tmp_path, SCALE.format(n=1)), {"app": by_command()})

    async def body():
        pids = {1: h.rt.handles["p-app-1"].pid}
        for n in (20, 5, 0, 3):
            await h.apply(stack(tmp_path, SCALE.format(n=n)))
            assert h.running("app") == list(range(1, n + 1))
            assert h.cg.live == {f"p/app.{i}" for i in range(1, n + 1)}
            now = {i: r.handle.pid for i, r in h.live("app").items()}
            for i in set(now) & set(pids):  # the survivors are the same processes
                assert now[i] == pids[i]
            pids = now
        starts = [cid for cid, _ in h.rt.starts]
        assert len(starts) == 20 + 3  # nothing was restarted; only 0 -> 3 started anew

    await run_with(h, body)


async def test_scale_down_stops_highest_first_gracefully(tmp_path, autojump_clock):
    h = Harness(stack(tmp_path, SCALE.format(n=4)), {"app": by_command()})
    stopped = []

    async def body():
        for r in h.sup.replicas["app"]:
            real = r.stop

            async def stop(*, kill=False, r=r, real=real):
                stopped.append(r.index)
                await real(kill=kill)
            r.stop = stop
        await h.apply(stack(tmp_path, SCALE.format(n=1)))
        assert stopped == [4, 3, 2]
        assert h.rt.handles["p-app-4"].signals == [signal.SIGTERM]  # graceful

    await run_with(h, body)


async def test_limits_only_are_applied_in_place(tmp_path, autojump_clock):
    text = """
    services:
      app: {{image: busybox, command: [run], mem_limit: {m}, deploy: {{replicas: 2}}}}
    """
    h = Harness(stack(tmp_path, text.format(m="64m")), {"app": by_command()})

    async def body():
        await h.apply(stack(tmp_path, text.format(m="128m")))
        assert [(p, r.memory) for p, r in h.cg.updates] == [("p/app.1", 128 << 20), ("p/app.2", 128 << 20)]
        assert len(h.rt.starts) == 2  # no restart
        assert all(r.service.resources.memory == 128 << 20 for r in h.sup.replicas["app"])

    await run_with(h, body)


ROLL = """
services:
  app:
    image: busybox
    command: [{cmd}]
    stop_grace_period: 1s
    healthcheck: {{test: [CMD, check], interval: 1s, retries: 2}}
    deploy:
      replicas: 3
      update_config: {{parallelism: {par}, delay: {delay}, order: {order}, failure_action: {action}, monitor: {monitor}}}
"""


def roll(tmp_path, cmd="v1", par=1, delay="0s", order="stop-first", action="pause", monitor="2s"):
    return stack(tmp_path, ROLL.format(cmd=cmd, par=par, delay=delay, order=order, action=action, monitor=monitor))


async def test_stop_first_replaces_one_by_one_with_delay(tmp_path, autojump_clock):
    h = Harness(roll(tmp_path), {"app": by_command()})

    async def body():
        t0 = trio.current_time()
        await h.apply(roll(tmp_path, cmd="v2", delay="5s"))
        new = [(cid, t - t0) for cid, t in h.rt.starts if "-r1" in cid]
        assert [c for c, _ in new] == ["p-app-1-r1", "p-app-2-r1", "p-app-3-r1"]
        # each starts once the previous is healthy (first probe 1 s after its start) + the 5 s delay
        assert [round(t) for _, t in new] == [0, 6, 12]
        for i in (1, 2, 3):
            old = h.rt.handles[f"p-app-{i}"]
            assert old.signals == [signal.SIGTERM]
        assert all(r.service.command == ("v2",) for r in h.sup.replicas["app"])
        assert h.cg.live == {"p/app.1.r1", "p/app.2.r1", "p/app.3.r1"}

    await run_with(h, body)


async def test_start_first_keeps_every_replica_healthy_throughout(tmp_path, autojump_clock):
    h = Harness(roll(tmp_path), {"app": by_command()})
    lowest = []

    async def body():
        await h.sup.wait_until(lambda: len(h.running("app")) == 3 and
                               all(r.status.state is S.HEALTHY for r in h.sup.replicas["app"]))

        async def watch():
            while True:
                reps = list(h.sup.replicas["app"]) + [r for r in h.sup.retiring if r.service.name == "app"]
                lowest.append(sum(r.status.state is S.HEALTHY for r in reps))
                await h.sup._changed.wait()

        async with trio.open_nursery() as n:
            n.start_soon(watch)
            await h.apply(roll(tmp_path, cmd="v2", order="start-first", par=2))
            n.cancel_scope.cancel()
        assert min(lowest) >= 3
        assert max(lowest) >= 4  # new beside old
        assert sorted(r.container_id for r in h.sup.replicas["app"]) == ["p-app-1-r1", "p-app-2-r1", "p-app-3-r1"]

    await run_with(h, body)


@pytest.mark.parametrize("order", ["stop-first", "start-first"])
async def test_failure_rollback_returns_to_the_previous_config(tmp_path, autojump_clock, order):
    h = Harness(roll(tmp_path), {"app": by_command()}, probes={"app": lambda n: 0})
    old_hash = h.sup.stack.services["app"]

    async def body():
        await h.apply(roll(tmp_path, cmd="bad", order=order, action="rollback"))
        reps = h.sup.replicas["app"]
        assert [r.service.command for r in reps] == [("v1",)] * 3
        assert all(r.service == old_hash for r in reps)
        assert len(h.running("app")) == 3
        bad = [cid for cid, _ in h.rt.starts if h.rt.handles[cid].argv == ("bad",)]
        assert len(bad) == 1  # the first batch failed; the rest were never updated
        if order == "start-first":  # the old replica 1 was never stopped
            assert h.rt.handles["p-app-1"].signals == []

    await run_with(h, body)


async def test_failure_pause_and_continue(tmp_path, autojump_clock):
    h = Harness(roll(tmp_path), {"app": by_command()})

    async def body():
        await h.apply(roll(tmp_path, cmd="bad", action="pause"))
        cmds = [r.service.command for r in h.sup.replicas["app"]]
        assert cmds == [("bad",), ("v1",), ("v1",)]  # paused after the first
        await h.apply(roll(tmp_path, cmd="bad", action="continue", monitor="0s"))
        assert [r.service.command for r in h.sup.replicas["app"]] == [("bad",)] * 3

    await run_with(h, body)


async def test_monitor_catches_a_late_failure(tmp_path, autojump_clock):
    h = Harness(roll(tmp_path), {"app": by_command(exit_after=3)})

    async def body():
        # healthy after 1 s, exits at 3 s: inside a 5 s monitor window, not a 1 s one
        await h.apply(roll(tmp_path, cmd="bad", action="rollback", monitor="5s"))
        assert [r.service.command for r in h.sup.replicas["app"]] == [("v1",)] * 3
        await h.apply(roll(tmp_path, cmd="bad", action="rollback", monitor="1s", par=0))
        assert [r.service.command for r in h.sup.replicas["app"]] == [("bad",)] * 3

    await run_with(h, body)


DEPS = """
services:
  db: {{image: busybox, command: [{db}]}}
  web: {{image: busybox, command: [w], depends_on: {{db: {{condition: service_started, restart: {restart}}}}}}}
  side: {{image: busybox, command: [s], depends_on: [db]}}
"""


async def test_dependents_restart_only_with_restart_true(tmp_path, autojump_clock):
    h = Harness(stack(tmp_path, DEPS.format(db="a", restart="true")), {s: by_command() for s in ("db", "web", "side")})

    async def body():
        await h.apply(stack(tmp_path, DEPS.format(db="b", restart="true")))
        starts = [cid for cid, _ in h.rt.starts]
        assert "p-db-1-r1" in starts and "p-web-1-r1" in starts and "p-side-1-r1" not in starts
        assert starts.index("p-web-1-r1") > starts.index("p-db-1-r1")
        await h.apply(stack(tmp_path, DEPS.format(db="c", restart="false")))
        starts = [cid for cid, _ in h.rt.starts]
        assert "p-db-1-r2" in starts and "p-web-1-r2" not in starts

    await run_with(h, body)


async def test_added_service_waits_for_its_dependency_and_removed_stops(tmp_path, autojump_clock):
    before = """
    services:
      old: {image: busybox, command: [o]}
    """
    after = """
    services:
      db: {image: busybox, command: [d], healthcheck: {test: [CMD, x], interval: 2s}}
      web: {image: busybox, command: [w], depends_on: {db: {condition: service_healthy}}}
    """
    h = Harness(stack(tmp_path, before), {s: by_command() for s in ("old", "db", "web")})

    async def body():
        t0 = trio.current_time()
        await h.apply(stack(tmp_path, after))
        starts = {cid: t - t0 for cid, t in h.rt.starts}
        assert starts["p-web-1"] - starts["p-db-1"] == pytest.approx(2)
        assert h.rt.handles["p-old-1"].signals == [signal.SIGTERM]
        assert "old" not in h.sup.replicas and h.cg.live == {"p/db.1", "p/web.1"}

    await run_with(h, body)


async def test_edits_during_a_reconcile_are_applied_next_newest_only(tmp_path, autojump_clock):
    h = Harness(roll(tmp_path), {"app": by_command()})
    applied = []

    async def body():
        real = h.sup.reconcile

        async def reconcile(st):
            applied.append(st.services["app"].command)
            return await real(st)
        h.sup.reconcile = reconcile
        h.sup.submit(roll(tmp_path, cmd="v2", delay="3s"))  # a slow rolling update
        await trio.sleep(1)
        assert h.sup.reconciling
        h.sup.submit(roll(tmp_path, cmd="v3"))
        h.sup.submit(roll(tmp_path, cmd="v4"))
        await h.sup.wait_until(lambda: h.sup.reconciles == 2)
        assert applied == [("v2",), ("v4",)]
        assert [r.service.command for r in h.sup.replicas["app"]] == [("v4",)] * 3
        # the v2 update stopped at the first batch boundary: replica 1 only, then straight to v4
        assert [h.rt.handles[c].argv for c, _ in h.rt.starts] == [("v1",)] * 3 + [("v2",)] + [("v4",)] * 3

    await run_with(h, body)


async def test_stop_during_a_rolling_update_leaves_nothing(tmp_path, autojump_clock):
    h = Harness(roll(tmp_path), {"app": by_command()})
    async with trio.open_nursery() as n:
        n.start_soon(h.sup.run)
        await h.sup._first_start_done.wait()
        h.sup.submit(roll(tmp_path, cmd="v2", order="start-first"))
        await trio.sleep(0.5)  # the new replica 1 is starting beside the old
        h.sup.request_stop()
    assert h.cg.live == set()
    assert all(hd.status is not None for hd in h.rt.handles.values())


async def test_limit_update_failure_is_reported_and_the_rest_goes_on(tmp_path, autojump_clock):
    from supervisor.errors import CgroupError

    text = """
    services:
      app: {{image: busybox, command: [run], pids_limit: {p}, deploy: {{replicas: 2}}}}
    """
    h = Harness(stack(tmp_path, text.format(p=10)), {"app": by_command()})

    async def body():
        async def update(path, resources, *, service):
            if path.endswith(".1"):
                raise CgroupError("write pids.max: EINVAL", path=path, operation="update")
            h.cg.updates.append((path, resources))
        h.cg.update = update
        p = await h.sup.reconcile(stack(tmp_path, text.format(p=20)))
        assert p.summary() == {"update-limits": 2}
        assert [u[0] for u in h.cg.updates] == ["p/app.2"]

    await run_with(h, body)


async def test_scale_up_is_parallel_and_bounded(tmp_path, autojump_clock):
    from supervisor.supervise.supervisor import SCALE_CONCURRENCY

    h = Harness(stack(tmp_path, SCALE.format(n=0)), {"app": by_command()})
    real = h.cg.create
    inflight, peak = [0], [0]

    async def create(path, resources, *, service):  # each cgroup takes 1 s to make
        inflight[0] += 1
        peak[0] = max(peak[0], inflight[0])
        await trio.sleep(1)
        inflight[0] -= 1
        await real(path, resources, service=service)
    h.cg.create = create

    async def body():
        t0 = trio.current_time()
        await h.apply(stack(tmp_path, SCALE.format(n=2 * SCALE_CONCURRENCY)))
        assert trio.current_time() - t0 == pytest.approx(2)  # two waves, not 32 s, not 1 s
        assert peak[0] == SCALE_CONCURRENCY
        assert len(h.running("app")) == 2 * SCALE_CONCURRENCY

    await run_with(h, body)


async def test_batches_of_parallelism(tmp_path, autojump_clock):
    h = Harness(roll(tmp_path), {"app": by_command()})

    async def body():
        t0 = trio.current_time()
        await h.apply(roll(tmp_path, cmd="v2", par=2, delay="3s", monitor="0s"))
        new = sorted((round(t - t0), cid) for cid, t in h.rt.starts if "-r1" in cid)
        # 1 and 2 together, healthy after 1 s, 3 s delay, then 3
        assert new == [(0, "p-app-1-r1"), (0, "p-app-2-r1"), (4, "p-app-3-r1")]

    await run_with(h, body)
