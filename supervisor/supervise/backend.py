"""What `supervise/` needs from the kernel side, as small Protocols, and the real adapters.

- `Runtime` (supervisor.runtime.Runtime): `start(spec)` and `exec(handle, spec)` tasks.
- `Cgroups` below: async create/update/kill/remove of one replica's cgroup, its OOM-kill counter and its
  event subscription. `ManagerCgroups` adapts a `cgroups.CgroupManager` (its blocking calls run
  in a worker thread) plus a `cgroups.events.CgroupEventWatcher`.

The unit tests give the supervisor fakes of both (tests/supervise/fakes.py).
"""

from __future__ import annotations

import functools
import signal
from typing import Any, Protocol

import trio

from ..config.model import Resources


class Cgroups(Protocol):
    async def create(self, path: str, resources: Resources, *, service: str) -> None: ...

    async def update(self, path: str, resources: Resources, *, service: str) -> None:
        """Apply new limits to an existing (running) cgroup in place."""
        ...

    def procs_files(self, path: str) -> tuple[str, ...]: ...

    def procs(self, path: str) -> list[int]:
        """The processes in the cgroup and below it ([] when it is gone)."""
        ...

    async def kill(self, path: str, sig: int = signal.SIGKILL) -> None:
        """Signal every process in the cgroup (SIGKILL: none escapes by forking)."""
        ...

    async def remove(self, path: str) -> None:
        """Kill what is left and remove the cgroup; missing is fine."""
        ...

    def oom_kills(self, path: str) -> int:
        """The kernel's count of OOM kills in the cgroup so far."""
        ...

    def watch(self, path: str, label: str, channel: trio.MemorySendChannel) -> Any:
        """OOM / pids-limit events of the cgroup to `channel`; returns a token for `unwatch`."""
        ...

    def unwatch(self, token: Any) -> None: ...


class ManagerCgroups:
    """`Cgroups` over the real drivers."""

    def __init__(self, manager: Any, watcher: Any | None = None):
        self.manager = manager
        self.watcher = watcher

    async def create(self, path: str, resources: Resources, *, service: str) -> None:
        skipped = await trio.to_thread.run_sync(
            functools.partial(self.manager.create, path, resources, service=service, exist_ok=True))
        if skipped:
            import structlog

            for s in skipped:
                structlog.get_logger().warning("cgroup.limit_skipped", cgroup=path, skipped=str(s))

    async def update(self, path: str, resources: Resources, *, service: str) -> None:
        skipped = await trio.to_thread.run_sync(
            functools.partial(self.manager.update, path, resources, service=service))
        if skipped:
            import structlog

            for s in skipped:
                structlog.get_logger().warning("cgroup.limit_skipped", cgroup=path, skipped=str(s))

    def procs_files(self, path: str) -> tuple[str, ...]:
        return tuple(self.manager.procs_files(path))

    def procs(self, path: str) -> list[int]:
        return self.manager.procs(path)

    async def kill(self, path: str, sig: int = signal.SIGKILL) -> None:
        try:
            if not self.manager.procs(path):  # one read; the common case after PID 1 is gone
                return
        except Exception:  # noqa: BLE001 - let kill() report it
            pass
        await trio.to_thread.run_sync(functools.partial(self.manager.kill, path, sig, timeout=2.0))

    async def remove(self, path: str) -> None:
        await trio.to_thread.run_sync(functools.partial(self.manager.remove, path, timeout=10.0))

    def oom_kills(self, path: str) -> int:
        from ..cgroups import files

        src = self.manager.event_sources(path)
        counters_file = src.memory_events or src.oom_control
        if not counters_file:
            return 0
        try:
            return files.read_keyed(counters_file).get("oom_kill", 0)
        except Exception:  # noqa: BLE001 - gone or unreadable: no count to compare
            return 0

    def watch(self, path: str, label: str, channel: trio.MemorySendChannel) -> Any:
        if self.watcher is None:
            return None
        return self.watcher.watch(path, label, channel=channel)

    def unwatch(self, token: Any) -> None:
        if token is not None and self.watcher is not None:
            self.watcher.unwatch(token)
