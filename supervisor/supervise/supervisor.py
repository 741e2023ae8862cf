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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
import trio

from ..config import graph
from ..config.model import Dependency, Stack
from ..errors import PysupError
from .backend import Cgroups
from .health import HealthStatus
from .logs import Console
from .replica import Replica
from .restart import ExitReason
from .state import ReplicaState as S

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

    # --- control -----------------------------------------------------------------------------

    def request_stop(self, *, kill: bool = False) -> None:
        if kill:
            self._kill = True
            for r in self.all_replicas():
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
            async with trio.open_nursery() as starters:
                for level in order:
                    for name in level:
                        starters.start_soon(self._start_service, name, replicas_nursery)
                starters.start_soon(self._watch_ended)
                await self._stop.wait()
                starters.cancel_scope.cancel()
            await self._stop_all(deps)
        if self.error is not None:
            raise self.error
        if self.exit_code_from is not None:
            exits = [r.exits[-1] for r in self.replicas.get(self.exit_code_from, ()) if r.exits]
            self.exit_code = exits[0].exit_code if exits else 0
        return self.exit_code

    async def _watch_ended(self) -> None:
        """Every replica ended for good (no restart coming): the stack is done, like compose."""
        names = set(self.stack.services)

        def finished() -> bool:
            rs = self.all_replicas()
            return (self._started_services == names and bool(rs)
                    and all(r.done.is_set() or (r.status.gave_up is not None) for r in rs))

        if not any(s.replicas for s in self.stack.services.values()):
            return
        await self.wait_until(finished)
        log.info("up.all_exited")
        self._stop.set()

    async def _start_service(self, name: str, nursery: trio.Nursery) -> None:
        service = self.stack.services[name]
        with structlog.contextvars.bound_contextvars(service=name):
            try:
                for dep in service.depends_on:
                    if dep.service in self.stack.services:
                        await self._wait_dependency(name, dep)
            except DependencyError as exc:
                log.error("up.dependency_failed", dependency=exc.dependency, condition=exc.condition, error=str(exc))
                if self.error is None:
                    self.error = exc
                    self.exit_code = 1
                self._stop.set()
                return
            backoff = self.stack.backoff_for(service)
            reps = [Replica(project=self.stack.name, service=service, index=i, runtime=self.runtime,
                            cgroups=self.cgroups, make_spec=self.make_spec, backoff=backoff, console=self.console,
                            log_dir=self.log_dir, notify=self._notify, on_exit=self._on_exit)
                    for i in range(1, service.replicas + 1)]
            self.replicas[name] = reps
            for r in reps:
                self.on_replica(r)
            log.info("service.starting", replicas=len(reps))
            async with trio.open_nursery() as n:
                for r in reps:
                    n.start_soon(self._start_replica, r, nursery)
            self._started_services.add(name)
            self._notify()

    async def _start_replica(self, replica: Replica, nursery: trio.Nursery) -> None:
        try:
            await nursery.start(replica.run)
        except PysupError as exc:  # its cgroup could not be made: the stack stops, gracefully
            log.error("replica.create_failed", service=replica.service.name, replica=replica.index, error=str(exc))
            if self.error is None:
                self.error = exc
                self.exit_code = 1
            self._stop.set()

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

    async def _stop_all(self, deps: dict[str, list[str]]) -> None:
        log.info("up.stopping", kill=self._kill)
        for level in graph.stop_order(deps):
            async with trio.open_nursery() as n:
                for name in level:
                    for r in self.replicas.get(name, ()):
                        n.start_soon(self._stop_replica, r)

    async def _stop_replica(self, r: Replica) -> None:
        if r.entered:
            await r.stop(kill=self._kill)
