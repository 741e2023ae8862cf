"""Service dependency graphs: cycle detection and start/stop order.

Pure functions over `{service: its dependencies}`, so the loader (which reports cycles as located
spec problems) and the supervisor (which starts and stops services) share one definition of order.
Everything is deterministic: the same graph always gives the same cycle and the same levels.

A name that appears only as a dependency (not as a key) is a node with no dependencies of its own.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

Deps = Mapping[str, Collection[str]]


def _nodes(deps: Deps) -> list[str]:
    names = set(deps)
    for targets in deps.values():
        names.update(targets)
    return sorted(names)


def find_cycle(deps: Deps) -> list[str] | None:
    """A dependency cycle as a closed walk (`["a", "b", "c", "a"]`), or None if there is none.

    A service depending on itself gives `["a", "a"]`. Iterative depth-first search in sorted order,
    so deep chains do not hit the recursion limit and the cycle found is always the same one.
    """
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(_nodes(deps), WHITE)
    for start in colour:
        if colour[start] != WHITE:
            continue
        path: list[str] = [start]
        colour[start] = GREY
        stack = [iter(sorted(deps.get(start, ())))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                colour[path.pop()] = BLACK
                continue
            if colour[nxt] == GREY:
                return path[path.index(nxt):] + [nxt]
            if colour[nxt] == WHITE:
                colour[nxt] = GREY
                path.append(nxt)
                stack.append(iter(sorted(deps.get(nxt, ()))))
    return None


def format_cycle(cycle: list[str]) -> str:
    """`["a", "b", "a"]` -> `a -> b -> a`."""
    return " -> ".join(cycle)


def start_order(deps: Deps) -> list[list[str]]:
    """Levels of services that can start in parallel, dependencies first, each level sorted.

    A service sits in the first level after all of its dependencies, so every level starts as
    early as it can. Raises ValueError naming the cycle if there is one.
    """
    cycle = find_cycle(deps)
    if cycle is not None:
        raise ValueError(f"dependency cycle: {format_cycle(cycle)}")
    nodes = _nodes(deps)
    waiting_on = {n: set(deps.get(n, ())) for n in nodes}
    dependents: dict[str, list[str]] = {n: [] for n in nodes}
    for node, targets in waiting_on.items():
        for target in targets:
            dependents[target].append(node)
    level = sorted(n for n in nodes if not waiting_on[n])
    levels: list[list[str]] = []
    while level:
        levels.append(level)
        ready: set[str] = set()
        for done in level:
            for dependent in dependents[done]:
                waiting_on[dependent].discard(done)
                if not waiting_on[dependent]:
                    ready.add(dependent)
        level = sorted(ready)
    return levels


def stop_order(deps: Deps) -> list[list[str]]:
    """Levels for stopping: dependents before what they depend on (start order reversed)."""
    return start_order(deps)[::-1]
