"""Dependency graphs: cycles, start and stop order."""

from __future__ import annotations

import graphlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.config.graph import find_cycle, format_cycle, start_order, stop_order

NAMES = st.sampled_from([f"s{i}" for i in range(12)] + ["web", "db", "cache", "a", "b", "c"])


@st.composite
def dags(draw) -> dict[str, set[str]]:
    """A random DAG: services in a random order, each depending only on earlier ones."""
    names = draw(st.lists(NAMES, unique=True, min_size=0, max_size=12))
    deps: dict[str, set[str]] = {}
    for i, name in enumerate(names):
        deps[name] = set(draw(st.lists(st.sampled_from(names[:i]), max_size=4))) if i else set()
    return deps


@st.composite
def cyclic_graphs(draw) -> tuple[dict[str, set[str]], list[str]]:
    """A random graph with at least one cycle planted in it (the planted cycle is returned too)."""
    deps = {k: set(v) for k, v in draw(dags()).items()}
    ring = draw(st.lists(NAMES, unique=True, min_size=1, max_size=5))
    for here, there in zip(ring, ring[1:] + ring[:1]):
        deps.setdefault(here, set()).add(there)
    return deps, ring


def _edges_of(cycle: list[str], deps: dict[str, set[str]]) -> bool:
    return all(b in deps.get(a, ()) for a, b in zip(cycle, cycle[1:]))


@given(dags())
def test_dag_levels_put_every_dependency_earlier(deps: dict[str, set[str]]) -> None:
    levels = start_order(deps)
    level_of = {name: i for i, level in enumerate(levels) for name in level}
    assert sum(len(level) for level in levels) == len(level_of) == len(deps)
    for name, targets in deps.items():
        for target in targets:
            assert level_of[target] < level_of[name]
        # as early as possible: right after the latest dependency
        assert level_of[name] == (max((level_of[t] for t in targets), default=-1) + 1)
    assert all(level == sorted(level) and level for level in levels)
    assert stop_order(deps) == levels[::-1]
    assert find_cycle(deps) is None


@given(cyclic_graphs())
def test_cycles_are_found(graph: tuple[dict[str, set[str]], list[str]]) -> None:
    deps, _ = graph
    cycle = find_cycle(deps)
    assert cycle is not None
    assert cycle[0] == cycle[-1] and len(cycle) >= 2
    assert len(set(cycle[:-1])) == len(cycle) - 1  # a simple cycle
    assert _edges_of(cycle, deps)
    with pytest.raises(ValueError, match="^dependency cycle: "):
        start_order(deps)
    with pytest.raises(ValueError):
        stop_order(deps)


@given(st.dictionaries(NAMES, st.sets(NAMES, max_size=3), max_size=10))
def test_agrees_with_graphlib_on_arbitrary_graphs(deps: dict[str, set[str]]) -> None:
    sorter = graphlib.TopologicalSorter(deps)
    try:
        sorter.prepare()
        acyclic = True
    except graphlib.CycleError:
        acyclic = False
    cycle = find_cycle(deps)
    assert (cycle is None) == acyclic
    if cycle is not None:
        assert _edges_of(cycle, deps)


def test_examples() -> None:
    deps = {"web": ["db", "cache"], "db": [], "cache": ["db"], "worker": ["db"]}
    assert start_order(deps) == [["db"], ["cache", "worker"], ["web"]]
    assert stop_order(deps) == [["web"], ["cache", "worker"], ["db"]]
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"x": ["a"], "a": ["b"], "b": ["a"]}) == ["a", "b", "a"]
    assert find_cycle({}) is None and start_order({}) == []
    assert format_cycle(["a", "b", "a"]) == "a -> b -> a"


def test_names_only_depended_on_are_nodes() -> None:
    assert start_order({"web": ["db"]}) == [["db"], ["web"]]


def test_cycle_error_names_the_cycle() -> None:
    with pytest.raises(ValueError, match=r"^dependency cycle: a -> b -> a$"):
        start_order({"a": {"b"}, "b": {"a"}, "c": set()})


def test_long_chain_does_not_recurse() -> None:
    deps = {f"s{i}": [f"s{i + 1}"] for i in range(5000)}
    assert find_cycle(deps) is None
    assert len(start_order(deps)) == 5001
    deps["s5000"] = ["s0"]
    assert len(find_cycle(deps)) == 5002
