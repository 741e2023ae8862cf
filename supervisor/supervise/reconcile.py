"""Live reconcile, the pure half: `plan(desired, observed)` says what to do to make the running
stack match the newest spec; `StackSupervisor.reconcile` carries the plan out.

    observed = sup.observe()                 # ObservedStack: every live replica and its hashes
    p = plan(new_stack, observed)            # Plan: a tuple of Actions, in the order to apply
    for action in p.actions: log.info("reconcile.action", **action.describe())

Level-triggered (reference/style-anchors.md §3): the plan depends only on the whole desired
stack and the whole observed replica table, never on what the edit was, so running it twice is
harmless.

Each service has two hashes (compose's `pkg/compose/hash.go` rule, plus one pysup split):
- `config_hash`: everything that needs a new container, i.e. all of the service except its
  replica count, `depends_on`, `profiles`, `pull_policy`, `deploy.update_config` /
  `rollback_config` (how to update, not what runs) and its resource limits;
- `limits_hash`: the resource limits alone; a change of only these is applied in place to the
  running replicas' cgroups (`cgroups.update`), no restart.

Per service, with N the desired replica count (indexes are 1..N):
- a service in `desired` but not observed: `create` indexes 1..N (started in dependency order);
- indexes in 1..N not observed: `scale-up`;
- observed indexes above N: `scale-down`, highest index first;
- observed indexes in 1..N with another config hash: `replace` (rolling, `deploy.update_config`);
- observed indexes in 1..N with the same config hash and other limits: `update-limits`;
- a service observed but not desired: `remove` (services in reverse dependency order);
- a service left alone whose `depends_on` entry has `restart: true` for a service being replaced
  (or restarted): `restart` of all its kept replicas, after the dependency (transitively).
Replicas that ended for good (their restart policy gave up) with the current config are left
alone, as compose's `up` does.

Action order in the plan: removals (reverse dependency order), scale-downs, limit updates,
replacements and restarts (dependency order), scale-ups and creations (dependency order). Stop
first, start later (kopf's rule): freed resources come back before new replicas need them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from ..config import graph
from ..config.model import FrozenMap, Service, Stack

ActionKind = Literal["remove", "scale-down", "update-limits", "replace", "restart", "scale-up", "create"]

# Left out of the config hash: a change of only these never recreates a replica.
NOT_HASHED = frozenset({"replicas", "depends_on", "profiles", "pull_policy", "update_config", "rollback_config",
                        "resources"})


_PLAIN = frozenset({str, int, float, bool, type(None)})
_FIELDS: dict[type, tuple[str, ...]] = {}


def _canon(value: Any) -> Any:
    """A plain, order-independent (for maps) structure of a model value, to hash."""
    t = type(value)
    if t in _PLAIN:
        return value
    if t is tuple or t is list:
        return tuple([_canon(v) for v in value]) if value else ()
    names = _FIELDS.get(t)
    if names is None:
        if not attrs.has(t):
            if isinstance(value, Mapping):
                return tuple(sorted((str(k), _canon(v)) for k, v in value.items()))
            return value
        names = _FIELDS[t] = tuple(f.name for f in attrs.fields(t))
    return tuple([(n, _canon(getattr(value, n))) for n in names])


def _digest(value: Any) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


_hash_cache: dict[int, tuple[Service, str, str]] = {}
_SERVICE_FIELDS = tuple(f for f in attrs.fields(Service) if f.name not in NOT_HASHED)


def hashes(service: Service, stack: Stack | None = None) -> tuple[str, str]:
    """(config_hash, limits_hash) of a service. With `stack`, the config hash also covers the
    top-level definitions the service uses (its secrets, configs and named volumes), so changing
    one of those replaces the service like a change of its own keys."""
    hit = _hash_cache.get(id(service))
    if hit is not None and hit[0] is service:
        config, limits = hit[1], hit[2]
    else:
        fields = tuple([(f.name, _canon(getattr(service, f.name))) for f in _SERVICE_FIELDS])
        config, limits = _digest(fields), _digest(_canon(service.resources))
        if len(_hash_cache) > 4096:
            _hash_cache.clear()
        _hash_cache[id(service)] = (service, config, limits)  # the Service is kept: its id is not reused
    used = _definitions_used(service, stack) if stack is not None else ()
    return (_digest((config, used)) if used else config), limits


def _definitions_used(service: Service, stack: Stack) -> tuple:
    used = [("secret", r.source, _canon(stack.secrets.get(r.source))) for r in service.secrets]
    used += [("config", r.source, _canon(stack.configs.get(r.source))) for r in service.configs]
    used += [("volume", m.source, _canon(stack.volumes.get(m.source)))
             for m in service.volumes if m.type == "volume" and m.source]
    return tuple(used)


def config_hash(service: Service, stack: Stack | None = None) -> str:
    return hashes(service, stack)[0]


def limits_hash(service: Service) -> str:
    return hashes(service)[1]


# --- what is running ------------------------------------------------------------------------------


@attrs.frozen
class ObservedReplica:
    index: int
    config_hash: str
    limits_hash: str
    ended: bool = False  # ended for good: its restart policy gave up


@attrs.frozen
class ObservedService:
    name: str
    replicas: tuple[ObservedReplica, ...] = attrs.field(converter=tuple)
    depends_on: tuple[str, ...] = attrs.field(default=(), converter=tuple)  # for the removal order


@attrs.frozen
class ObservedStack:
    services: FrozenMap[str, ObservedService] = attrs.field(factory=FrozenMap, converter=FrozenMap)


# --- the plan -------------------------------------------------------------------------------------


@attrs.frozen
class Action:
    kind: ActionKind
    service: str
    indexes: tuple[int, ...] = attrs.field(converter=tuple)
    because: str = ""  # restart: the dependency that was replaced

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"action": self.kind, "service": self.service, "replicas": list(self.indexes)}
        if self.because:
            d["because"] = self.because
        return d


@attrs.frozen
class Plan:
    actions: tuple[Action, ...] = attrs.field(converter=tuple)

    def __bool__(self) -> bool:
        return bool(self.actions)

    def of(self, *kinds: ActionKind) -> list[Action]:
        return [a for a in self.actions if a.kind in kinds]

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.actions:
            out[a.kind] = out.get(a.kind, 0) + len(a.indexes)
        return out


def _deps(stack: Stack) -> dict[str, list[str]]:
    return {name: [d.service for d in s.depends_on if d.service in stack.services]
            for name, s in stack.services.items()}


def _flat(levels: list[list[str]]) -> list[str]:
    return [name for level in levels for name in level]


def plan(desired: Stack, observed: ObservedStack) -> Plan:
    """The actions that take `observed` to `desired` (see the module docstring)."""
    obs = observed.services
    removals: list[Action] = []
    downs: list[Action] = []
    limits: dict[str, Action] = {}
    replaces: dict[str, Action] = {}
    ups: dict[str, Action] = {}

    gone = {name: list(o.depends_on) for name, o in obs.items() if name not in desired.services}
    if gone:
        deps = {name: [d for d in ds if d in gone] for name, ds in gone.items()}
        for name in _flat(graph.stop_order(deps)):
            idx = sorted((r.index for r in obs[name].replicas), reverse=True)
            removals.append(Action("remove", name, idx))

    kept: dict[str, list[int]] = {}  # service -> indexes kept as they are (for dependents' restarts)
    for name, service in desired.services.items():
        o = obs.get(name)
        want = service.replicas
        if o is None:
            if want:
                ups[name] = Action("create", name, range(1, want + 1))
            continue
        chash, lhash = hashes(service, desired)
        have = {r.index: r for r in o.replicas}
        above = sorted((i for i in have if i > want), reverse=True)
        if above:
            downs.append(Action("scale-down", name, above))
        missing = [i for i in range(1, want + 1) if i not in have]
        if missing:
            ups[name] = Action("scale-up", name, missing)
        stale, relimit, same = [], [], []
        for i in range(1, want + 1):
            r = have.get(i)
            if r is None:
                continue
            if r.config_hash != chash:
                stale.append(i)
            elif r.ended:  # gave up with the current config: left alone (it has no cgroup to update)
                continue
            else:
                same.append(i)
                if r.limits_hash != lhash:
                    relimit.append(i)
        if stale:
            replaces[name] = Action("replace", name, stale)
        if relimit:
            limits[name] = Action("update-limits", name, relimit)
        kept[name] = same

    order = _flat(graph.start_order(_deps(desired)))
    # depends_on.restart: true — restarted after (and because) a dependency was replaced
    replaced = set(replaces)
    restarts: dict[str, Action] = {}
    for name in order:
        service = desired.services[name]
        why = next((d.service for d in service.depends_on if d.restart and d.service in replaced), None)
        if why is None or not kept.get(name):
            continue
        restarts[name] = Action("restart", name, kept[name], because=why)
        replaced.add(name)

    actions = removals + downs
    actions += [limits[n] for n in order if n in limits]
    for n in order:
        if n in replaces:
            if n in restarts:  # some replicas changed, the others restart with them
                r = restarts.pop(n)
                actions.append(Action("replace", n, sorted(replaces[n].indexes + r.indexes)))
            else:
                actions.append(replaces[n])
        elif n in restarts:
            actions.append(restarts[n])
    actions += [ups[n] for n in order if n in ups]
    return Plan(actions)
