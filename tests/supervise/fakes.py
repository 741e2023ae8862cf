"""A fake runtime and cgroups for the supervisor's unit tests: containers are trio tasks whose
behaviour a test gives per service, on the (autojump) trio clock."""

from __future__ import annotations

import itertools
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from supervisor.runtime.launcher import ExitStatus
from supervisor.runtime.spec import ContainerSpec


@attrs.define(eq=False)
class FakeHandle:
    id: str
    pid: int
    argv: tuple = ()
    stdout: Any = None
    stderr: Any = None
    status: ExitStatus | None = None
    ignore: set = attrs.Factory(set)
    signals: list = attrs.Factory(list)
    _exit: trio.Event = attrs.Factory(trio.Event)
    _exited: trio.Event = attrs.Factory(trio.Event)

    def send_signal(self, sig: int) -> None:
        if self.status is None:
            self.signals.append(sig)
            if sig not in self.ignore or sig == signal.SIGKILL:
                self.finish(ExitStatus(signal=sig))

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def finish(self, status: ExitStatus) -> None:
        if self.status is None:
            self.status = status
            self._exited.set()

    async def wait(self) -> ExitStatus:
        await self._exited.wait()
        return self.status


Program = Callable[[FakeHandle], Awaitable[int | None]]  # returns an exit code, or None to run forever


def forever(ignore_term: bool = False) -> Program:
    async def run(h: FakeHandle) -> None:
        if ignore_term:
            h.ignore.add(signal.SIGTERM)
        await trio.sleep_forever()
    return run


def exits(code: int, after: float = 1.0) -> Program:
    async def run(h: FakeHandle) -> int:
        await trio.sleep(after)
        return code
    return run


class FakeRuntime:
    def __init__(self, programs: dict[str, Program], probes: dict[str, Callable[[int], int]] | None = None,
                 fail_start: set[str] = frozenset()):
        self.programs = programs
        self.probes = probes or {}
        self.fail_start = set(fail_start)
        self.pids = itertools.count(1000)
        self.starts: list[tuple[str, float]] = []
        self.handles: dict[str, FakeHandle] = {}
        self.probe_calls: dict[str, int] = {}

    @staticmethod
    def service_of(cid: str) -> str:
        return cid.split("-")[1]

    async def start(self, spec: ContainerSpec, *, stdin: Any = "null", stdout: Any = "pipe", stderr: Any = "pipe",
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> ExitStatus:
        service = self.service_of(spec.id)
        if service in self.fail_start:
            from supervisor.runtime.errors import RuntimeSetupError

            raise RuntimeSetupError("exec: no such file", stage="exec", errno=2, container=spec.id)
        h = FakeHandle(spec.id, next(self.pids), argv=tuple(spec.argv))
        self.handles[spec.id] = h
        self.starts.append((spec.id, trio.current_time()))
        task_status.started(h)
        async with trio.open_nursery() as n:
            async def body() -> None:
                code = await self.programs[service](h)
                if code is not None:
                    h.finish(ExitStatus(code=code))

            n.start_soon(body)
            try:
                await h.wait()
            finally:
                n.cancel_scope.cancel()
        return h.status

    async def exec(self, container: FakeHandle, spec: Any, *, stdin: Any = "null", stdout: Any = "pipe",
                   stderr: Any = "pipe", task_status: Any = trio.TASK_STATUS_IGNORED) -> ExitStatus:
        import os

        service = self.service_of(container.id)
        n = self.probe_calls[container.id] = self.probe_calls.get(container.id, 0) + 1
        h = FakeHandle(spec.id, next(self.pids))
        task_status.started(h)
        code = self.probes.get(service, lambda n: 0)(n)
        if isinstance(stdout, int):
            os.write(stdout, f"probe {n} -> {code}\n".encode())
        h.finish(ExitStatus(code=code))
        return h.status


class FakeCgroups:
    def __init__(self, runtime: FakeRuntime):
        self.runtime = runtime
        self.live: set[str] = set()
        self.made: list[str] = []
        self.kills: list[tuple[str, int]] = []
        self.oom: dict[str, int] = {}
        self.limits: dict[str, Any] = {}
        self.updates: list[tuple[str, Any]] = []

    async def create(self, path: str, resources: Any, *, service: str) -> None:
        self.live.add(path)
        self.made.append(path)
        self.limits[path] = resources

    async def update(self, path: str, resources: Any, *, service: str) -> None:
        assert path in self.live, path
        self.updates.append((path, resources))
        self.limits[path] = resources

    def procs_files(self, path: str) -> tuple[str, ...]:
        return ()

    def _handle(self, path: str) -> FakeHandle | None:
        project, rest = path.split("/")
        svc, idx, *gen = rest.split(".")
        return self.runtime.handles.get(f"{project}-{svc}-{idx}" + "".join(f"-{g}" for g in gen))

    async def kill(self, path: str, sig: int = signal.SIGKILL) -> None:
        self.kills.append((path, sig))
        h = self._handle(path)
        if h is not None:
            h.send_signal(sig)

    async def remove(self, path: str) -> None:
        await self.kill(path)
        self.live.discard(path)

    def procs(self, path: str) -> list[int]:
        return []  # the fake's processes are gone once it is removed

    def oom_kills(self, path: str) -> int:
        return self.oom.get(path, 0)

    def watch(self, path: str, label: str, channel: Any) -> Any:
        return None

    def unwatch(self, token: Any) -> None:
        pass


def make_spec(replica: Any) -> ContainerSpec:
    """argv is the service's command (a program can behave per command)."""
    return ContainerSpec(id=replica.container_id, rootfs="/", argv=tuple(replica.service.command or ("app",)))
