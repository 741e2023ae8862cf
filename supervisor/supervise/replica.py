"""One replica's life: its cgroup, its container, restarts, health, hooks, OOM events, stop.

    replica = Replica(...)
    await nursery.start(replica.run)    # creates the cgroup, starts; returns once the container
                                        # runs (or its first start failed); restarts per policy
    ...
    await replica.stop()                # pre_stop, stop_signal, grace, SIGKILL of the cgroup
    await replica.stop(kill=True)       # at once (a second Ctrl-C)

`run` loops: start the container (`runtime.start`), pump its output, run `post_start` hooks and
the health probes inside it, wait for its exit (through the runtime's pidfd), work out why it
ended (exit code, signal, OOM kill from the cgroup's counter, unhealthy), ask the `RestartTracker`,
and either wait out the backoff in state `restarting` (with the next retry time) or stay exited.
Every step is one structlog event with the service, replica and container bound.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable
from typing import Any

import structlog
import trio

from ..config.model import Backoff, Healthcheck, Hook, Service
from ..errors import PysupError
from ..runtime.spec import ContainerSpec, ExecSpec
from .backend import Cgroups
from .health import HealthMonitor, HealthStatus, cap_output, run_probes
from .logs import Console, ContainerLog, pump
from .reconcile import hashes as hashes_of
from .restart import ExitReason, RestartTracker, signal_name
from .state import LIVE, ReplicaState as S, ReplicaStatus

log = structlog.get_logger()

HOOK_TIMEOUT = 60.0  # a post_start hook may not run longer


def probe_argv(check: Healthcheck) -> tuple[str, ...] | None:
    """The argv a health check runs, or None when disabled (NONE, or an unknown form)."""
    test = tuple(check.test)
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD":
        return test[1:] or None
    if test[0] == "CMD-SHELL":
        return ("/bin/sh", "-c", " ".join(test[1:]))
    return ("/bin/sh", "-c", " ".join(test))


class Replica:
    def __init__(self, *, project: str, service: Service, index: int, runtime: Any, cgroups: Cgroups,
                 make_spec: Callable[[Replica], ContainerSpec], backoff: Backoff | None = None,
                 console: Console | None = None, log_dir: str | None = None,
                 notify: Callable[[Replica], None] = lambda r: None,
                 on_exit: Callable[[Replica, ExitReason], None] = lambda r, e: None, generation: int = 0,
                 stack: Any = None):
        self.project = project
        self.service = service
        self.index = index
        # A replacement (a rolling update) is a new generation of the index: its own container id
        # and cgroup, so that with start-first it runs beside the one it replaces.
        self.generation = generation
        suffix = f"-r{generation}" if generation else ""
        self.container_id = f"{project}-{service.name}-{index}{suffix}"
        self.cgroup = f"{project}/{service.name}.{index}{suffix.replace('-', '.')}"
        self.config_hash, self.limits_hash = hashes_of(service, stack)  # `stack`: see reconcile.hashes
        self.runtime = runtime
        self.cgroups = cgroups
        self.make_spec = make_spec
        self.console = console
        # every generation of an index keeps one log (<project>-<service>-<n>.log)
        self.kept = ContainerLog(os.path.join(log_dir, f"{project}-{service.name}-{index}.log")) if log_dir else None
        self.notify = notify
        self.on_exit = on_exit
        # Run once when the replica is gone for good: they give back what the container used (user
        # namespace ids, ...), with the pids its cgroup still holds when it could not be removed
        # (stuck in the kernel; [] when none is left), which go on using it.
        self.removed_hooks: list[Callable[[list[int]], None]] = []
        self.status = ReplicaStatus(service.name, index, self.container_id)
        self.tracker = RestartTracker(service.restart, backoff or Backoff(),
                                      restart_on_unhealthy=service.x.restart_on_unhealthy)
        self.health: HealthMonitor | None = None
        self.handle: Any = None
        self.spec: ContainerSpec | None = None
        self.started_once = False  # a process ran at least once (service_started)
        self.exits: list[ExitReason] = []
        self.stop_requested = False
        self._stop = trio.Event()
        self._kill_now = trio.Event()
        self._wake = trio.Event()
        self._unhealthy: str | None = None  # set when pysup stops it for being unhealthy
        self.done = trio.Event()
        self.entered = False  # run() has begun (stop() waits for it only then)
        self._execs = 0
        self._task_status: trio.TaskStatus[None] | None = None

    def _started(self) -> None:
        """`run`'s task_status.started(), the first time only."""
        status, self._task_status = self._task_status, None
        if status is not None:
            status.started()

    @property
    def name(self) -> str:
        return f"{self.service.name}-{self.index}"

    async def update_limits(self, service: Service, stack: Any = None) -> None:
        """Apply `service`'s resource limits to the running cgroup in place (a reconcile found only
        the limits changed); later restarts use `service` too."""
        await self.cgroups.update(self.cgroup, service.resources, service=service.name)
        self.service = service
        self.config_hash, self.limits_hash = hashes_of(service, stack)

    def _to(self, state: S, **changes: Any) -> None:
        self.status.to(state, **changes)
        self.notify(self)

    # --- the life --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The replica's whole life. `task_status.started()` once its first container runs, or
        once that first start has failed (the restart policy takes it from there) or was called
        off by a stop; raises (before started) only when its cgroup cannot be made."""
        self.entered = True
        self._task_status = task_status
        with structlog.contextvars.bound_contextvars(service=self.service.name, replica=self.index,
                                                     container=self.container_id):
            watch = None
            events_send, events_recv = trio.open_memory_channel[Any](16)
            try:
                await self.cgroups.create(self.cgroup, self.service.resources, service=self.service.name)
                watch = self.cgroups.watch(self.cgroup, self.name, events_send)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._cgroup_events, events_recv)
                    await self._life()
                    nursery.cancel_scope.cancel()
                self._started()
            finally:
                with trio.CancelScope(shield=True):
                    self.cgroups.unwatch(watch)
                    emptied = False
                    try:
                        with trio.move_on_after(15):
                            await self.cgroups.remove(self.cgroup)
                            emptied = True
                        if not emptied:
                            log.error("replica.cgroup_not_removed", cgroup=self.cgroup,
                                      error="its removal did not end within 15 s")
                    except PysupError as exc:
                        log.error("replica.cgroup_not_removed", cgroup=self.cgroup, error=str(exc))
                    if self.kept is not None:
                        self.kept.close()
                    hooks, self.removed_hooks = self.removed_hooks, []
                    pids: list[int] = []
                    if not emptied:
                        # A process of the container may still run (stuck in the kernel): what it
                        # uses stays taken while it does (a user namespace's host ids given to
                        # another container would let it reach this one's files). The project's
                        # clean-up at exit, or the next `pysup up`'s leftover sweep, removes the cgroup.
                        try:
                            pids = self.cgroups.procs(self.cgroup)
                        except Exception as exc:  # noqa: BLE001 - unknown: give nothing back
                            log.warning("replica.resources_kept", cgroup=self.cgroup, error=str(exc))
                            hooks = []
                        else:
                            if pids:
                                log.warning("replica.resources_kept", cgroup=self.cgroup, pids=pids)
                    for hook in hooks:
                        try:
                            hook(pids)
                        except Exception as exc:  # one failed clean-up does not stop the others
                            log.error("replica.cleanup_failed", error=str(exc))
                    if self.status.state not in (S.EXITED, S.OOM_KILLED):
                        if self.status.state is not S.STOPPING:
                            self.status.to(S.STOPPING)
                        self.status.to(S.EXITED)
                    self.done.set()
                    self.notify(self)

    async def _life(self) -> None:
        while not self.stop_requested:
            self._to(S.STARTING)
            started_at = trio.current_time()
            reason = await self._run_container()
            self._started()  # a first start that failed: the caller goes on, the policy decides
            ran_for = trio.current_time() - started_at
            self.exits.append(reason)
            ended = S.OOM_KILLED if reason.kind == "oom" else S.EXITED
            if self.status.state is S.STARTING and ended is S.OOM_KILLED:
                ended = S.EXITED
            self._to(ended, last_exit=reason)
            if not self.stop_requested:
                self.on_exit(self, reason)
            decision = self.tracker.decide(reason, ran_for=ran_for, now=trio.current_time(),
                                           stop_requested=self.stop_requested)
            if not decision.restart:
                if self.stop_requested:
                    log.info("replica.stopped", exit_code=reason.exit_code, reason=reason.describe())
                else:
                    self.status.gave_up = decision.why
                    log.warning("replica.exited", exit_code=reason.exit_code, reason=reason.describe(),
                                restart=decision.why, ran_for=round(ran_for, 3))
                    self.notify(self)
                return
            self._to(S.RESTARTING, next_retry_at=decision.at, restart_count=decision.attempt,
                     failures=self.tracker.consecutive)
            log.warning("replica.restarting", reason=reason.describe(), exit_code=reason.exit_code,
                        attempt=decision.attempt, delay=round(decision.delay, 3), ran_for=round(ran_for, 3),
                        crash_loop=self.status.crash_looping)
            with trio.move_on_after(decision.delay):
                await self._stop.wait()

    async def _run_container(self) -> ExitReason:
        self._unhealthy = None
        self.health = None
        self._wake = trio.Event()  # this run must end: a stop, or unhealthy
        if self.stop_requested:
            self._wake.set()
        try:
            spec = self.make_spec(self)
        except (PysupError, ValueError) as exc:
            log.error("replica.start_failed", error=str(exc))
            return ExitReason("start-failed", code=125, detail=str(exc))
        self.spec = spec
        oom_before = self.cgroups.oom_kills(self.cgroup)
        async with trio.open_nursery() as nursery:
            try:
                handle = await nursery.start(functools.partial(self.runtime.start, spec, stdout="pipe", stderr="pipe"))
            except PysupError as exc:
                log.error("replica.start_failed", error=str(exc))
                return ExitReason("start-failed", code=getattr(exc, "exit_code", 125), detail=str(exc))
            self.handle = handle
            self.started_once = True
            self._to(S.RUNNING, pid=handle.pid)
            log.info("replica.started", pid=handle.pid, cgroup=self.cgroup)
            self._started()
            pumped = trio.Event()
            nursery.start_soon(self._pump_all, handle, pumped)
            with trio.CancelScope() as side:
                async with trio.open_nursery() as aside:
                    aside.start_soon(self._watch_stop, handle)
                    if self.service.post_start:
                        aside.start_soon(self._post_start, handle)
                    check = self.service.healthcheck
                    argv = probe_argv(check) if check else None
                    if check is not None and argv is not None:
                        self.health = HealthMonitor(check, started_at=trio.current_time())
                        self.status.health = str(HealthStatus.STARTING)
                        aside.start_soon(run_probes, self.health, functools.partial(self._probe, handle, argv),
                                         functools.partial(self._health_changed, handle))
                    status = await handle.wait()
                    side.cancel()
            # whatever PID 1 left behind (a host-pid container, a daemonised child) goes too; then
            # the pipes reach EOF
            with trio.CancelScope(shield=True):
                await self.cgroups.kill(self.cgroup)
            with trio.move_on_after(2):
                await pumped.wait()
            nursery.cancel_scope.cancel()
        self.handle = None
        oom = self.cgroups.oom_kills(self.cgroup) > oom_before and status.signal == signal.SIGKILL
        return ExitReason.from_status(status.code, status.signal, oom=oom, unhealthy=self._unhealthy is not None,
                                      detail=self._unhealthy or "")

    async def _pump_all(self, handle: Any, done: trio.Event) -> None:
        try:
            async with trio.open_nursery() as n:
                for stream, name in ((handle.stdout, "stdout"), (handle.stderr, "stderr")):
                    if stream is not None:
                        n.start_soon(pump, stream, name, self.service.name, self.name, self.console, self.kept)
        finally:
            done.set()

    # --- stop ------------------------------------------------------------------------------

    async def stop(self, *, kill: bool = False) -> None:
        """Stop for good (no restart) and wait until the replica's task has cleaned up."""
        self.request_stop(kill=kill)
        await self.done.wait()

    def request_stop(self, *, kill: bool = False) -> None:
        self.stop_requested = True
        self._stop.set()
        self._wake.set()
        if kill:
            self._kill_now.set()

    async def _watch_stop(self, handle: Any) -> None:
        await self._wake.wait()
        await self._terminate(handle, why="stop requested" if self.stop_requested else "unhealthy")

    async def _terminate(self, handle: Any, *, why: str) -> None:
        """pre_stop hooks, stop_signal, `stop_grace_period`, then SIGKILL of the whole cgroup."""
        if self.status.state in LIVE:
            self._to(S.STOPPING)
        grace = self.service.stop_grace_period
        deadline = trio.current_time() + grace
        sig = self.service.stop_signal or signal.SIGTERM  # None: no stop_signal, none in the image
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as n:
                async def kill_on_demand() -> None:
                    await self._kill_now.wait()
                    n.cancel_scope.cancel()

                n.start_soon(kill_on_demand)
                with trio.move_on_at(deadline):
                    if self.service.pre_stop and not self._kill_now.is_set():
                        await self._run_hooks(handle, self.service.pre_stop, "pre_stop")
                    log.info("replica.stopping", signal=signal_name(sig), grace=grace, why=why)
                    handle.send_signal(sig)
                    await handle.wait()
                    n.cancel_scope.cancel()
                    return
                n.cancel_scope.cancel()
            if handle.status is None:
                log.warning("replica.killing", why=("kill requested" if self._kill_now.is_set()
                                                    else f"still running {grace:g} s after {signal_name(sig)}"))
                await self.cgroups.kill(self.cgroup)
                handle.kill()
                await handle.wait()

    # --- health and hooks --------------------------------------------------------------------

    def _health_changed(self, handle: Any, new: HealthStatus, monitor: HealthMonitor) -> None:
        self.status.health = str(new)
        if new is HealthStatus.HEALTHY and self.status.state in (S.RUNNING, S.UNHEALTHY):
            self._to(S.HEALTHY)
        elif new is HealthStatus.UNHEALTHY and self.status.state in (S.RUNNING, S.HEALTHY):
            self._to(S.UNHEALTHY)
        else:
            self.notify(self)
        level = log.info if new is HealthStatus.HEALTHY else log.warning
        level("replica.health", status=str(new), failing_streak=monitor.failing_streak,
              output=monitor.last_output[-200:] if new is not HealthStatus.HEALTHY else None)
        if (new is HealthStatus.UNHEALTHY and self.service.x.restart_on_unhealthy
                and self.service.restart.condition != "no" and self._unhealthy is None):
            self._unhealthy = (f"{monitor.failing_streak} failed probes in a row, last: "
                               f"{monitor.last_output.strip()[-200:]!r}")
            self._wake.set()

    async def _exec(self, handle: Any, argv: tuple[str, ...], kind: str, **overrides: Any) -> tuple[int, bytes]:
        """Run `argv` inside the container; (exit code, output) with stdout and stderr together."""
        assert self.spec is not None
        self._execs += 1
        spec = ExecSpec.for_container(self.spec, handle.pid, argv, id=f"{self.container_id}.{kind}.{self._execs}",
                                      **overrides)
        r, w = os.pipe2(os.O_CLOEXEC)
        out = bytearray()
        try:
            async with trio.open_nursery() as n:
                try:
                    proc = await n.start(functools.partial(self.runtime.exec, handle, spec, stdout=w, stderr=w))
                finally:
                    os.close(w)
                stream = trio.lowlevel.FdStream(r)
                r = -1
                async with stream:
                    while True:
                        data = await stream.receive_some(65536)
                        if not data:
                            break
                        if len(out) <= 4096:
                            out += data
                st = await proc.wait()
        finally:
            if r >= 0:
                os.close(r)
        return st.exit_code, bytes(out)

    async def _probe(self, handle: Any, argv: tuple[str, ...]) -> tuple[int, bytes]:
        return await self._exec(handle, argv, "health")

    async def _run_hooks(self, handle: Any, hooks: tuple[Hook, ...], kind: str) -> None:
        for hook in hooks:
            assert self.spec is not None
            env = dict(self.spec.env)
            env.update(hook.environment)
            overrides: dict[str, Any] = {"env": tuple(env.items())}
            if hook.user:
                overrides["user"] = hook.user
            if hook.working_dir:
                overrides["cwd"] = hook.working_dir
            if hook.privileged:  # like `docker exec --privileged`: every capability (the container's
                # seccomp profile, resolved for them); the container keeps its own set
                from ..runtime.security import resolve_capabilities

                overrides["capabilities"] = resolve_capabilities(privileged=True)
            try:
                code, out = await self._exec(handle, tuple(hook.command), kind.replace("_", ""), **overrides)
            except PysupError as exc:
                code, out = -1, str(exc).encode()
            event = log.info if code == 0 else log.warning
            event(f"replica.{kind}", command=list(hook.command), exit_code=code,
                  output=cap_output(out).strip()[-500:] or None)

    async def _post_start(self, handle: Any) -> None:
        with trio.move_on_after(HOOK_TIMEOUT):
            await self._run_hooks(handle, self.service.post_start, "post_start")

    # --- cgroup events ---------------------------------------------------------------------

    async def _cgroup_events(self, events: trio.MemoryReceiveChannel) -> None:
        from ..cgroups.events import OomKilled, PidsLimitHit

        async for ev in events:
            if isinstance(ev, OomKilled):
                self.status.oom_kills += ev.new
                log.warning("replica.oom_kill", count=ev.count, pid=ev.pid, process=ev.process)
                self.notify(self)
            elif isinstance(ev, PidsLimitHit):
                self.status.pids_limit_hits += ev.new
                log.warning("replica.pids_limit_hit", count=ev.count, limit=self.service.resources.pids)
