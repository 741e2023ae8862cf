"""`Resources` (the limits a cgroup enforces) and `FrozenMap`, part of the stack model
(`config.model` re-exports both) but kept apart from it and from attrs: the one-shot `pysup run`
path builds a `Resources` for `--memory`/`--cpus`/`--pids-limit` and the cgroup driver's `Host`
holds a `FrozenMap`, and importing attrs and the whole model costs ~15 ms of a ~40 ms run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from ..runtime.record import field, record

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V]):
    """An immutable, hashable, insertion-ordered mapping."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[K, V] | Any = (), /):
        self._data: dict[K, V] = dict(data)
        self._hash: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))  # equal maps hash equal, whatever the order
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


def _tuple(value: Any) -> tuple:
    return value if isinstance(value, tuple) else tuple(value or ())


def _nonneg(_instance: Any, attribute: Any, value: Any) -> None:
    """attrs' `optional(ge(0))`, with its message."""
    if value is not None and value < 0:
        raise ValueError(f"'{attribute.name}' must be >= 0: {value}")


@record(kw_only=True)
class Resources:
    """Limits the cgroup enforces. Reservations become soft limits (memory.low, cpu weight)."""

    memory: int | None = field(default=None, validator=_nonneg)  # bytes, hard limit
    memory_reservation: int | None = field(default=None, validator=_nonneg)
    memswap: int | None = None  # memory + swap in bytes; -1: unlimited swap
    cpus: float | None = field(default=None, validator=_nonneg)  # CPU time in cores, cpu.max
    cpu_shares: int | None = field(default=None, validator=_nonneg)  # relative weight (v1 shares)
    cpuset: str | None = None  # "0-1,3"
    pids: int | None = None  # pids.max; None or -1: unlimited
    io_weight: int | None = None  # blkio_config.weight, 10..1000
    io_weight_device: tuple[tuple[str, int], ...] = field(default=(), converter=_tuple)
