"""Live reconcile, the acting half: carry out a `reconcile.Plan` on a running `StackSupervisor`.

    results = await apply(sup, plan, old_stack)     # {"scale-up web": "ok", "replace api": "rolled back: ..."}

In the plan's order:
1. `remove`: services gone from the spec stop (reverse dependency order; replicas in parallel,
   gracefully: pre_stop, stop_signal, grace, SIGKILL);
2. `scale-down`: the indexes above the new count stop, gracefully, the highest first;
3. `update-limits`: `cgroups.update` on each running replica's cgroup, no restart;
4. `replace` / `restart`: rolling, per service, following `deploy.update_config` (services of one
   dependency level in parallel, levels in order);
5. `scale-up` / `create`: the missing indexes start, at most `SCALE_CONCURRENCY` at once; an added
   service waits for its `depends_on` conditions first (a failure is logged, the stack stays up).

Rolling update (swarmkit's updater): the stale indexes in batches of `parallelism` (0: all), with
`delay` between batches. Per index:
- `stop-first`: stop the old replica, start the new one, wait until it is ready;
- `start-first`: start the new one beside the old (its own container id and cgroup: a new
  generation), wait until it is ready, then stop the old; a new one that fails is stopped and
  the old one kept.
Ready is `healthy` for a service with a health check, else `running`. A replica that exits or
turns unhealthy before it is ready, or within `monitor` seconds after, is a failure. When the
failures exceed `max_failure_ratio` of the update: `pause` stops the update there (the rest keep
the old config until the next reconcile), `continue` goes on, `rollback` puts every index
already updated back to the previous config, following `rollback_config`. A newer save ends an
update between two batches (`superseded`): the next reconcile plans from where it stopped.
"""

from __future__ import annotations

from typing import Any

import attrs
import structlog
import trio

from ..config import graph
from ..config.model import Service, Stack, UpdateConfig
from .reconcile import Plan
from .replica import Replica, probe_argv
from .state import ReplicaState as S

log = structlog.get_logger()


async def apply(sup: Any, p: Plan, old_stack: Stack) -> dict[str, str]:
    results: dict[str, str] = {}

    for a in p.of("remove"):
        reps = list(sup.replicas.get(a.service, ()))
        await _stop_many(sup, sorted(reps, key=lambda r: -r.index))
        sup.replicas.pop(a.service, None)
        sup._started_services.discard(a.service)
        results[f"remove {a.service}"] = "ok"

    async with trio.open_nursery() as n:
        for a in p.of("scale-down"):
            reps = [r for i in a.indexes if (r := sup.replica(a.service, i)) is not None]
            n.start_soon(_stop_many, sup, reps)
            results[f"scale-down {a.service}"] = "ok"

    async with trio.open_nursery() as n:
        for a in p.of("update-limits"):
            n.start_soon(_update_limits, sup, a.service, a.indexes, results)

    rolls = {a.service: a for a in p.of("replace", "restart")}
    if rolls:
        deps = {name: [d.service for d in s.depends_on if d.service in sup.stack.services]
                for name, s in sup.stack.services.items()}
        for level in graph.start_order(deps):
            async with trio.open_nursery() as n:
                for name in level:
                    if name in rolls:
                        n.start_soon(_roll_service, sup, rolls[name], results)

    from .supervisor import SCALE_CONCURRENCY

    limiter = trio.CapacityLimiter(SCALE_CONCURRENCY)
    async with trio.open_nursery() as n:
        for a in p.of("scale-up", "create"):
            if a.kind == "create":
                n.start_soon(_create, sup, a.service, results)
            else:
                n.start_soon(_scale_up, sup, a.service, a.indexes, limiter, results)
    return results


# --- stop, limits, start ---------------------------------------------------------------------


async def _stop_one(sup: Any, r: Replica) -> None:
    sup._unlist(r)
    if r.entered:
        await r.stop()
    else:
        r.request_stop()
    sup.retiring.discard(r)


async def _stop_many(sup: Any, reps: list[Replica]) -> None:
    """Stop in parallel; the stop signals go out in the given order (highest index first)."""
    async with trio.open_nursery() as n:
        for r in reps:
            n.start_soon(_stop_one, sup, r)
            await trio.lowlevel.checkpoint()


async def _update_limits(sup: Any, name: str, indexes: tuple[int, ...], results: dict[str, str]) -> None:
    service = sup.stack.services[name]
    errors = []
    for i in indexes:
        r = sup.replica(name, i)
        if r is None:
            continue
        try:
            await r.update_limits(service, sup.stack)
            log.info("replica.limits_updated", service=name, replica=i, cgroup=r.cgroup)
        except Exception as exc:  # noqa: BLE001 - a limit the kernel refuses: reported, the rest go on
            errors.append(f"{r.name}: {exc}")
            log.error("replica.limits_not_updated", service=name, replica=i, error=str(exc))
    results[f"update-limits {name}"] = "ok" if not errors else "failed: " + "; ".join(errors)


async def _scale_up(sup: Any, name: str, indexes: tuple[int, ...], limiter: trio.CapacityLimiter,
                    results: dict[str, str]) -> None:
    service = sup.stack.services[name]
    failed: list[str] = []

    async def one(i: int) -> None:
        async with limiter:
            r = sup.new_replica(service, i)
            sup._put(r)
            if await sup._start_replica(r, sup._nursery, live=True):
                await sup.wait_until(lambda: r.started_once or r.exits or r.done.is_set())
            else:
                failed.append(r.name)

    log.info("service.scaling", service=name, adding=len(indexes), replicas=service.replicas)
    async with trio.open_nursery() as n:
        for i in indexes:
            n.start_soon(one, i)
    results[f"scale-up {name}"] = "ok" if not failed else f"failed: could not create {', '.join(failed)}"


async def _create(sup: Any, name: str, results: dict[str, str]) -> None:
    from .supervisor import DependencyError

    try:
        await sup._start_service(name, sup._nursery, live=True)
        results[f"create {name}"] = "ok"
    except DependencyError as exc:
        results[f"create {name}"] = f"failed: {exc}"


# --- rolling update --------------------------------------------------------------------------


def _needs_health(service: Service) -> bool:
    check = service.healthcheck
    return check is not None and probe_argv(check) is not None


def _failure(r: Replica, n0: int) -> str | None:
    if len(r.exits) > n0:
        return f"{r.name} exited ({r.exits[-1].describe()})"
    if r.done.is_set():
        return f"{r.name} ended"
    if r.status.state is S.UNHEALTHY:
        return f"{r.name} is unhealthy"
    return None


async def wait_ready(sup: Any, r: Replica) -> str | None:
    """None once `r` is ready (healthy with a health check, else running); else why it failed."""
    health = _needs_health(r.service)

    def verdict() -> Any:
        why = _failure(r, 0)
        if why:
            return why
        if health:
            return True if r.status.state is S.HEALTHY else None
        return True if r.status.state in (S.RUNNING, S.HEALTHY) else None

    v = await sup.wait_until(verdict)
    return None if v is True else v


async def _replace_one(sup: Any, name: str, index: int, service: Service, order: str) -> tuple[Replica | None, str | None]:
    """One index to `service`: (the new replica, None) or (it or None, why it failed)."""
    old = sup.replica(name, index)
    gen = (old.generation + 1) if old is not None else 0
    new = sup.new_replica(service, index, gen)
    with structlog.contextvars.bound_contextvars(service=name, replica=index):
        if order == "start-first" and old is not None and not old.done.is_set():
            sup.retiring.add(new)
            log.info("update.starting_new", container=new.container_id, replaces=old.container_id)
            if not await sup._start_replica(new, sup._nursery, live=True):
                return None, f"{new.name}: could not create its cgroup"
            why = await wait_ready(sup, new)
            if why is not None:
                log.warning("update.new_failed", container=new.container_id, why=why)
                await _stop_one(sup, new)
                return None, why
            sup._put(new)
            sup.retiring.add(old)
            log.info("update.stopping_old", container=old.container_id)
            await _stop_one(sup, old)
            return new, None
        if old is not None:
            log.info("update.stopping_old", container=old.container_id)
            await _stop_one(sup, old)
        sup._put(new)
        log.info("update.starting_new", container=new.container_id)
        if not await sup._start_replica(new, sup._nursery, live=True):
            return None, f"{new.name}: could not create its cgroup"
        why = await wait_ready(sup, new)
        return new, why


async def roll(sup: Any, name: str, targets: dict[int, Service], cfg: UpdateConfig, *, what: str = "update") -> tuple[str, dict[int, Service]]:
    """Move each index in `targets` to its service, per `cfg`. Returns (result, the services the
    updated indexes ran before)."""
    indexes = sorted(targets)
    total = len(indexes)
    size = cfg.parallelism if cfg.parallelism > 0 else total
    batches = [indexes[k:k + size] for k in range(0, total, size)]
    before: dict[int, Service] = {}
    failures: list[str] = []
    stop_on_failure = cfg.failure_action != "continue"

    def exceeded() -> bool:
        return bool(failures) and len(failures) / total > cfg.max_failure_ratio

    async def monitor(r: Replica) -> None:
        n0 = len(r.exits)
        with trio.move_on_after(cfg.monitor):
            why = await sup.wait_until(lambda: _failure(r, n0))
            failures.append(f"{why} within monitor {cfg.monitor:g} s")
            log.warning(f"{what}.monitor_failed", service=name, replica=r.index, why=why)

    async def one(i: int, monitors: trio.Nursery) -> None:
        old = sup.replica(name, i)
        if old is not None:
            before[i] = old.service
        new, why = await _replace_one(sup, name, i, targets[i], cfg.order)
        if why is not None:
            failures.append(why)
            if new is None and cfg.order == "start-first":
                before.pop(i, None)  # the old one kept running: nothing to roll back there
        elif new is not None:
            log.info(f"{what}.replica_done", service=name, replica=i, container=new.container_id)
            if cfg.monitor > 0:
                monitors.start_soon(monitor, new)

    def superseded() -> bool:  # a newer save is waiting: stop between batches, re-plan from there
        return what == "update" and sup._desired is not None

    stopped = False
    done = 0
    async with trio.open_nursery() as monitors:
        for k, batch in enumerate(batches):
            if stop_on_failure and exceeded():
                stopped = True
                break
            if k and cfg.delay > 0:
                with trio.move_on_after(cfg.delay):
                    await sup.wait_until(superseded)
            if superseded():
                monitors.cancel_scope.cancel()
                log.info("update.superseded", service=name, replaced=done, of=total)
                return f"superseded by a newer save after {done} of {total}", before
            async with trio.open_nursery() as n:
                for i in batch:
                    n.start_soon(one, i, monitors)
            done += len(batch)
        if stopped or (stop_on_failure and exceeded()):
            monitors.cancel_scope.cancel()
    if not failures:
        return "ok", before
    summary = f"{len(failures)} of {total} failed: {failures[0]}"
    if not (stop_on_failure and exceeded()):
        return f"ok with failures ({summary})", before
    return f"{cfg.failure_action}: {summary}", before


async def _roll_service(sup: Any, action: Any, results: dict[str, str]) -> None:
    name = action.service
    service = sup.stack.services[name]
    cfg = service.update_config
    log.info("update.started", service=name, replicas=list(action.indexes), kind=action.kind,
             parallelism=cfg.parallelism, order=cfg.order, failure_action=cfg.failure_action,
             **({"because": action.because} if action.because else {}))
    result, before = await roll(sup, name, {i: service for i in action.indexes}, cfg)
    key = f"{action.kind} {name}"
    if result.startswith("rollback:"):
        log.warning("update.rolling_back", service=name, replicas=sorted(before), why=result)
        rb = service.rollback_config
        rb_result, _ = await roll(sup, name, before, attrs.evolve(rb, failure_action="continue"), what="rollback")
        results[key] = f"rolled back ({rb_result}): {result.removeprefix('rollback: ')}"
    elif result.startswith("pause:"):
        log.warning("update.paused", service=name, why=result)
        results[key] = f"paused: {result.removeprefix('pause: ')}"
    else:
        results[key] = result
    log.info("update.finished", service=name, result=results[key])
