"""Replica states and the transitions allowed between them. Pure: no I/O, no trio.

    created ─► starting ─► running ─► healthy ◄─► unhealthy
                  │           │          │            │
                  ▼           ▼          ▼            ▼
               exited ◄── (any running state) ──► oom-killed
                  │                                   │
                  └────────► restarting ◄─────────────┘   (with the next retry time)
                                 │
                                 ▼
                              starting

`stopping` is entered from any live state when pysup stops the replica; it ends in `exited`.
A replica whose restart policy gave up stays `exited` (or `oom-killed`) with `gave_up` set.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs


class ReplicaState(enum.Enum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    EXITED = "exited"
    OOM_KILLED = "oom-killed"

    def __str__(self) -> str:
        return self.value


S = ReplicaState
LIVE = frozenset({S.RUNNING, S.HEALTHY, S.UNHEALTHY})  # a process is running
ENDED = frozenset({S.EXITED, S.OOM_KILLED})

TRANSITIONS: dict[ReplicaState, frozenset[ReplicaState]] = {
    S.CREATED: frozenset({S.STARTING, S.STOPPING, S.EXITED}),
    S.STARTING: frozenset({S.RUNNING, S.EXITED, S.STOPPING}),  # exited: the start failed
    S.RUNNING: frozenset({S.HEALTHY, S.UNHEALTHY, S.EXITED, S.OOM_KILLED, S.STOPPING}),
    S.HEALTHY: frozenset({S.UNHEALTHY, S.EXITED, S.OOM_KILLED, S.STOPPING}),
    S.UNHEALTHY: frozenset({S.HEALTHY, S.EXITED, S.OOM_KILLED, S.STOPPING}),
    S.RESTARTING: frozenset({S.STARTING, S.STOPPING, S.EXITED}),
    S.STOPPING: frozenset({S.EXITED, S.OOM_KILLED}),
    S.EXITED: frozenset({S.RESTARTING, S.STOPPING}),
    S.OOM_KILLED: frozenset({S.RESTARTING, S.STOPPING}),
}


def can_transition(old: ReplicaState, new: ReplicaState) -> bool:
    return new in TRANSITIONS[old]


class InvalidTransition(RuntimeError):
    pass


@attrs.define
class ReplicaStatus:
    """What `ps` shows for one replica. Mutated only through `to()`, which checks the transition."""

    service: str
    index: int
    container: str
    state: ReplicaState = S.CREATED
    pid: int | None = None
    restart_count: int = 0
    failures: int = 0  # consecutive failed runs (what the backoff delay grows with)
    next_retry_at: float | None = None  # trio clock time of the next start, while `restarting`
    last_exit: Any = None  # restart.ExitReason
    gave_up: str | None = None  # why the restart policy stopped restarting
    oom_kills: int = 0
    pids_limit_hits: int = 0
    health: str | None = None  # health.HealthStatus value, None without a health check

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def crash_looping(self) -> bool:
        return self.state is S.RESTARTING and self.failures > 1

    def to(self, new: ReplicaState, **changes: Any) -> ReplicaState:
        """Move to `new` (raises InvalidTransition if not allowed); returns the old state."""
        old = self.state
        if not can_transition(old, new):
            raise InvalidTransition(f"replica {self.name}: {old} -> {new} is not a valid transition")
        self.state = new
        if new is not S.RESTARTING:
            self.next_retry_at = None
        if new not in LIVE:
            self.pid = None if new is not S.STARTING else self.pid
        for k, v in changes.items():
            setattr(self, k, v)
        return old
