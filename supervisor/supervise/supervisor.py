"""The stack supervisor: every replica of every service, started in dependency order, stopped in
reverse.

    sup = StackSupervisor(stack, runtime=..., cgroups=..., make_spec=...)
    code = await sup.run()          # until request_stop(), an abort, or every replica has ended

Start: one task per service waits for its `depends_on` conditions, then starts its replicas;
independent services start in parallel. Conditions (compose's):
- `service_started`: every replica of the dependency has started a process;
- `service_healthy`: every replica is healthy; one unhealthy or ended replica fails at once; a
  dependency without a health check is an error;
- `service_completed_successfully`: every replica exited 0; a non-zero exit fails;
- `required: false`: a failure is a warning, and the dependent starts anyway.
A required dependency failing stops the stack with a `DependencyError` naming both services.

Stop: levels of `graph.stop_order`, each level's services (and each service's replicas) in
parallel; `request_stop(kill=True)` (a second Ctrl-C) SIGKILLs whatever is still running.

Live reconcile (specs/reconcile.md): `submit(stack)` hands over a newer spec; one task applies
`reconcile.plan(newest, observed)` at a time, after the first start is done; a stack submitted
while a reconcile runs is applied next (only the newest one). The actions: `rolling.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import structlog
import trio

from ..config import graph
from ..config.model import Dependency, Stack
from ..errors import PysupError
from .backend import Cgroups
from .health import HealthStatus
from .logs import Console
from .reconcile import ObservedReplica, ObservedService, ObservedStack, Plan, plan
from .replica import Replica
from .restart import ExitReason
from .state import ReplicaState as S

SCALE_CONCURRENCY = 16  # replicas starting at once when a reconcile adds replicas

log = structlog.get_logger()


class DependencyError(PysupError):
    def __init__(self, service: str, dependency: str, condition: str, why: str):
        self.service, self.dependency, self.condition = service, dependency, condition
        super().__init__(f"service {service!r} cannot start: its dependency {dependency!r} ({condition}) failed: {why}")


class StackSupervisor:
    def __init__(self, stack: Stack, *, runtime: Any, cgroups: Cgroups, make_spec: Callable[[Replica], Any],
                 console: Console | None = None, log_dir: str | None = None,
                 abort_on_container_exit: bool = False, exit_code_from: str | None = None,
                 on_replica: Callable[[Replica], None] = lambda r: None):
        self.stack = stack
        self.runtime = runtime
        self.cgroups = cgroups
        self.make_spec = make_spec
        self.console = console
        self.log_dir = log_dir
        self.abort = abort_on_container_exit or exit_code_from is not None
        self.exit_code_from = exit_code_from
        self.on_replica = on_replica
        self.replicas: dict[str, list[Replica]] = {}
        self.exit_code = 0
        self.error: PysupError | None = None
        self._changed = trio.Event()
        self._stop = trio.Event()
        self._kill = False
        self._stopping = False
        self._started_services: set[str] = set()
        self._nursery: trio.Nursery | None = None  # where every replica's task runs
        self.retiring: set[Replica] = set()  # replicas being stopped or started by a reconcile, not listed
        self._first_start_done = trio.Event()
        self._desired: Stack | None = None  # the newest stack submitted, not yet applied
        self._submitted = trio.Event()
        self.reconciling = False
        self.reconciles = 0  # reconciles finished (tests and the bench wait on this)
        self._old_deps: dict[str, list[str]] = {}
        # (service, index) stopped through the control API (`pysup stop`): stays stopped until
        # started (unless-stopped semantics); the stack does not end while one is held
        self.held: set[tuple[str, int]] = set()
        # an edit held back before it reaches `submit` (images.live: services waiting for a pull):
        # the stack does not end meanwhile (`edits_pending`)
        self.pending_edit = False
        if console is not None and not console.width:
            console.width = max((len(f"{n}-{s.replicas}") for n, s in stack.services.items()), default=0)

    # --- observation -------------------------------------------------------------------------

    def _notify(self, _replica: Replica | None = None) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], Any]) -> Any:
        """Wait until `predicate()` is truthy (re-checked on every replica change); returns it."""
        while True:
            result = predicate()
            if result:
                return result
            await self._changed.wait()

    def all_replicas(self) -> list[Replica]:
        return [r for rs in self.replicas.values() for r in rs]

    def statuses(self) -> list[Any]:
        return [r.status for r in self.all_replicas()]

    def observe(self) -> ObservedStack:
        """The live replica table, for `reconcile.plan`."""
        out = {}
        for name, reps in self.replicas.items():
            svc = self.stack.services.get(name)
            deps = [d.service for d in svc.depends_on] if svc is not None else []
            if svc is None:  # removed from the spec while a reconcile was stopping it
                deps = self._old_deps.get(name, [])
            out[name] = ObservedService(name, [ObservedReplica(r.index, r.config_hash, r.limits_hash,
                                                               ended=r.done.is_set() or r.status.gave_up is not None)
                                               for r in reps], deps)
        return ObservedStack(out)

    def replica(self, service: str, index: int) -> Replica | None:
        return next((r for r in self.replicas.get(service, ()) if r.index == index), None)

    def _put(self, r: Replica) -> None:
        """List `r` as its index's replica (replacing the one listed, which must be retiring)."""
        reps = [x for x in self.replicas.get(r.service.name, ()) if x.index != r.index] + [r]
        reps.sort(key=lambda x: x.index)
        self.replicas[r.service.name] = reps
        self.retiring.discard(r)
        self._notify()

    def _unlist(self, r: Replica) -> None:
        """No longer `r`'s index's replica; kept in `retiring` until it has stopped."""
        reps = self.replicas.get(r.service.name)
        if reps is not None and r in reps:
            reps.remove(r)
        if not r.done.is_set():
            self.retiring.add(r)
        self._notify()

    # --- control -----------------------------------------------------------------------------

    def request_stop(self, *, kill: bool = False) -> None:
        if kill:
            self._kill = True
            for r in [*self.all_replicas(), *self.retiring]:
                r.request_stop(kill=True)
        self._stop.set()

    def _on_exit(self, replica: Replica, reason: ExitReason) -> None:
        """--abort-on-container-exit: any container's exit stops the stack; its code is the exit
        status (with --exit-code-from, the named service's last exit)."""
        if not self.abort or self._stop.is_set():
            return
        log.info("up.aborting", because=f"{replica.name} exited ({reason.describe()})")
        self.exit_code = reason.exit_code
        self._stop.set()

    # --- run ---------------------------------------------------------------------------------

    async def run(self) -> int:
        deps = {name: [d.service for d in s.depends_on if d.service in self.stack.services]
                for name, s in self.stack.services.items()}
        order = graph.start_order(deps)
        async with trio.open_nursery() as replicas_nursery:
            self._nursery = replicas_nursery
            async with trio.open_nursery() as starters:
                async def first_start() -> None:
                    async with trio.open_nursery() as n:
                        for level in order:
                            for name in level:
                                n.start_soon(self._start_service, name, replicas_nursery)
                    self._first_start_done.set()

                starters.start_soon(first_start)
                starters.start_soon(self._watch_ended)
                starters.start_soon(self._reconcile_loop)
                await self._stop.wait()
                starters.cancel_scope.cancel()
            await self._stop_all()
        if self.error is not None:
            raise self.error
        if self.exit_code_from is not None:
            exits = [r.exits[-1] for r in self.replicas.get(self.exit_code_from, ()) if r.exits]
            self.exit_code = exits[0].exit_code if exits else 0
        return self.exit_code

    async def _watch_ended(self) -> None:
        """Every replica ended for good (no restart coming): the stack is done, like compose."""
        def finished() -> bool:
            rs = self.all_replicas()
            return (self._started_services >= set(self.stack.services) and bool(rs) and not self.reconciling
                    and self._desired is None and not self.retiring and not self.held and not self.pending_edit
                    and all(r.done.is_set() or (r.status.gave_up is not None) for r in rs))

        if not any(s.replicas for s in self.stack.services.values()):
            return
        await self.wait_until(finished)
        log.info("up.all_exited")
        # A container that could not start fails `up`, as in compose (which stops at once; here
        # the restart policy had its say first): exit status 1 unless --exit-code-from decides.
        never = sorted(r.name for r in self.all_replicas() if r.exits and r.exits[-1].kind == "start-failed")
        if never and self.exit_code == 0:
            log.error("up.start_failed", replicas=never, detail="they could not start; exit status 1")
            self.exit_code = 1
        self._stop.set()

    def new_replica(self, service: Any, index: int, generation: int = 0) -> Replica:
        r = Replica(project=self.stack.name, service=service, index=index, runtime=self.runtime,
                    cgroups=self.cgroups, make_spec=self.make_spec, backoff=self.stack.backoff_for(service),
                    console=self.console, log_dir=self.log_dir, notify=self._notify, on_exit=self._on_exit,
                    generation=generation, stack=self.stack)
        self.on_replica(r)
        return r

    async def _start_service(self, name: str, nursery: trio.Nursery, *, live: bool = False) -> None:
        """Wait for the service's dependencies, then start all its replicas. `live` (an added
        service in a reconcile): a failed dependency is logged, the stack keeps running."""
        service = self.stack.services[name]
        with structlog.contextvars.bound_contextvars(service=name):
            try:
                for dep in service.depends_on:
                    if dep.service in self.stack.services:
                        await self._wait_dependency(name, dep)
            except DependencyError as exc:
                log.error("up.dependency_failed", dependency=exc.dependency, condition=exc.condition, error=str(exc))
                if live:
                    self.replicas.setdefault(name, [])
                    self._started_services.add(name)
                    raise
                if self.error is None:
                    self.error = exc
                    self.exit_code = 1
                self._stop.set()
                return
            reps = [self.new_replica(service, i) for i in range(1, service.replicas + 1)]
            self.replicas[name] = reps
            log.info("service.starting", replicas=len(reps))
            async with trio.open_nursery() as n:
                for r in reps:
                    n.start_soon(self._start_replica, r, nursery, live)
            self._started_services.add(name)
            self._notify()

    async def _start_replica(self, replica: Replica, nursery: trio.Nursery, live: bool = False) -> bool:
        try:
            await nursery.start(replica.run)
            return True
        except PysupError as exc:  # its cgroup could not be made: the stack stops, gracefully
            log.error("replica.create_failed", service=replica.service.name, replica=replica.index, error=str(exc))
            if live:
                self._unlist(replica)
                return False
            if self.error is None:
                self.error = exc
                self.exit_code = 1
            self._stop.set()
            return False

    async def _wait_dependency(self, name: str, dep: Dependency) -> None:
        target = dep.service

        def fail(why: str) -> None:
            if dep.required:
                raise DependencyError(name, target, dep.condition, why)
            log.warning("up.optional_dependency_failed", dependency=target, condition=dep.condition, why=why)

        if dep.condition == "service_healthy":
            check = self.stack.services[target].healthcheck
            if check is None or not check.test or check.test[0] == "NONE":
                fail("it has no health check")
                return
        log.info("up.waiting", dependency=target, condition=dep.condition)
        verdict = await self.wait_until(lambda: self._dependency_verdict(target, dep.condition))
        if verdict is not True:
            fail(verdict)

    def _dependency_verdict(self, target: str, condition: str) -> bool | str | None:
        """True: satisfied; a string: failed (why); None: not yet."""
        reps = self.replicas.get(target)
        if reps is None or target not in self._started_services:
            return None
        if not reps:
            return True
        if condition == "service_started":
            for r in reps:
                if not r.started_once and r.status.gave_up is not None:
                    return f"{r.name} did not start: {r.status.last_exit.describe() if r.status.last_exit else '?'}"
            return True if all(r.started_once for r in reps) else None
        if condition == "service_healthy":
            for r in reps:
                if r.status.health == str(HealthStatus.UNHEALTHY):
                    out = r.health.last_output.strip()[-200:] if r.health else ""
                    return f"{r.name} is unhealthy" + (f" (last check: {out!r})" if out else "")
                if r.status.state in (S.EXITED, S.OOM_KILLED) and r.status.last_exit is not None:
                    return f"{r.name} exited ({r.status.last_exit.describe()})"
            return True if all(r.status.state is S.HEALTHY for r in reps) else None
        # service_completed_successfully
        for r in reps:
            if r.exits and r.exits[-1].failed:
                return f"{r.name} did not complete successfully ({r.exits[-1].describe()})"
        return True if all(r.exits and not r.exits[-1].failed for r in reps) else None

    async def _stop_all(self) -> None:
        log.info("up.stopping", kill=self._kill)
        deps = {name: [d.service for d in s.depends_on if d.service in self.replicas]
                for name, s in self.stack.services.items() if name in self.replicas}
        deps.update({name: [] for name in self.replicas if name not in deps})
        async with trio.open_nursery() as n:  # what a cancelled reconcile left between two states
            for r in list(self.retiring):
                n.start_soon(self._stop_replica, r)
        for level in graph.stop_order(deps):
            async with trio.open_nursery() as n:
                for name in level:
                    for r in self.replicas.get(name, ()):
                        n.start_soon(self._stop_replica, r)

    # --- live reconcile ------------------------------------------------------------------------

    def edits_pending(self, pending: bool) -> None:
        """Whether part of a newer spec is still on its way (held back by `images.live` while an
        image is pulled): the stack does not end as "every replica exited" meanwhile."""
        if pending != self.pending_edit:
            self.pending_edit = pending
            self._notify()

    def submit(self, stack: Stack) -> None:
        """A newer spec to converge to (applied after the running reconcile; only the newest)."""
        self._desired = stack
        self._submitted.set()
        self._notify()  # a rolling update waiting out its delay stops there

    async def _reconcile_loop(self) -> None:
        await self._first_start_done.wait()
        while True:
            await self._submitted.wait()
            self._submitted = trio.Event()
            stack, self._desired = self._desired, None
            if stack is not None:
                await self.reconcile(stack)
                self.reconciles += 1
                self._notify()

    def _keep_held(self, p: Plan) -> Plan:
        """A replica stopped through the control API stays stopped: no replace, restart or limits
        update touches it (`pysup start` starts it with the spec of that time); removed with its
        service or by a scale-down, it is no longer held."""
        if not self.held:
            return p
        actions = []
        for a in p.actions:
            if a.kind in ("replace", "restart", "update-limits"):
                a = attrs.evolve(a, indexes=[i for i in a.indexes if (a.service, i) not in self.held])
                if not a.indexes:
                    continue
            elif a.kind in ("remove", "scale-down"):
                self.held -= {(a.service, i) for i in a.indexes} if a.indexes else \
                    {h for h in self.held if h[0] == a.service}
            actions.append(a)
        return Plan(actions)

    async def reconcile(self, stack: Stack) -> Plan:
        """Carry out `plan(stack, observed)`; logs the plan (one event per action) and the result."""
        from .rolling import apply

        p = self._keep_held(plan(stack, self.observe()))
        if not p:
            log.info("reconcile.nothing_to_do")
            self.stack = stack
            return p
        self._old_deps = {name: [d.service for d in s.depends_on] for name, s in self.stack.services.items()}
        old_stack, self.stack = self.stack, stack
        log.info("reconcile.plan", actions=len(p.actions), **{k.replace("-", "_"): v for k, v in p.summary().items()})
        for a in p.actions:
            log.info("reconcile.action", **a.describe())
        self.reconciling = True
        t0 = trio.current_time()
        try:
            results = await apply(self, p, old_stack)
        finally:
            self.reconciling = False
            self._notify()
        failed = {k: v for k, v in results.items() if v != "ok" and not v.startswith("superseded")}
        level = log.warning if failed else log.info
        level("reconcile.done", ok=not failed, took=round(trio.current_time() - t0, 3),
              results=[f"{k}: {v}" for k, v in results.items()])
        return p

    async def _stop_replica(self, r: Replica) -> None:
        if r.entered:
            await r.stop(kill=self._kill)
