"""The trio side of the runtime: one zygote per supervisor, containers watched through pidfds.

    async with open_runtime() as rt:                    # starts the zygote (a nursery-owned task)
        async with trio.open_nursery() as n:
            handle = await n.start(rt.start, spec)      # returns once the container has exec'd
            ...                                         # handle.stdout / handle.stderr are trio streams
            status = await handle.wait()                # ExitStatus(code=0, signal=None)

Every container's PID 1 is this process's child: the zygote clones it with CLONE_PARENT (and this
process is a child subreaper, PR_SET_CHILD_SUBREAPER, for whatever else gets orphaned below it).
Its exit is waited on with `os.pidfd_open` + `trio.lowlevel.wait_readable` + `os.waitid(P_PIDFD)`:
no polling, no SIGCHLD handler. Never forks the trio process: the zygote is started by re-exec.

`exec` starts a process inside a running container the same way (health checks, `pysup exec`).
`run_one(spec)` runs one container in the foreground from a trio program: stdio passed through,
SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 forwarded, Docker's exit codes. (A one-shot
`pysup run` should not import trio at all: `oneshot.run_oneshot` is that path.)
"""

from __future__ import annotations

import errno
import functools
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import structlog
import trio

from .. import syscalls as S
from . import protocol, zygote
from .errors import RuntimeSetupError, ZygoteError
from .spec import ContainerSpec, ExecSpec

log = structlog.get_logger()

DEFAULT_STATE_ROOT = "/run/pysup/containers"


@attrs.frozen
class ExitStatus:
    """How a container's PID 1 ended: `code` when it exited, `signal` when a signal killed it."""

    code: int | None = None
    signal: int | None = None
    core_dumped: bool = False

    @property
    def exit_code(self) -> int:
        """Docker's convention: the exit code, or 128 + the signal number."""
        return self.code if self.code is not None else 128 + (self.signal or 0)

    @classmethod
    def from_waitid(cls, res: os.waitid_result) -> ExitStatus:
        if res.si_code == os.CLD_EXITED:
            return cls(code=res.si_status)
        return cls(signal=res.si_status, core_dumped=res.si_code == os.CLD_DUMPED)


@attrs.define(eq=False)
class ContainerHandle:
    """A running container. `stdin`/`stdout`/`stderr` are trio streams when "pipe" was asked, and
    belong to the caller (close them, or use `aclose()`); everything else belongs to the start task."""

    id: str
    pid: int
    pidfd: int
    state_dir: str | None
    stdin: trio.lowlevel.FdStream | None = None
    stdout: trio.lowlevel.FdStream | None = None
    stderr: trio.lowlevel.FdStream | None = None
    warnings: tuple[str, ...] = ()
    status: ExitStatus | None = None
    _exited: trio.Event = attrs.field(factory=trio.Event)

    def send_signal(self, sig: int) -> None:
        """Signal PID 1 through its pidfd (never a recycled pid). A no-op once it has exited."""
        if self.status is None:
            try:
                signal.pidfd_send_signal(self.pidfd, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> ExitStatus:
        await self._exited.wait()
        assert self.status is not None
        return self.status

    async def aclose(self) -> None:
        for s in (self.stdin, self.stdout, self.stderr):
            if s is not None:
                await s.aclose()


async def wait_pidfd(pidfd: int) -> ExitStatus:
    """Wait for (and reap) the child behind `pidfd`."""
    while True:
        await trio.lowlevel.wait_readable(pidfd)
        res = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        if res is not None:
            return ExitStatus.from_waitid(res)


def _stdio(kind: Any, *, reading: bool) -> tuple[int, int | None, bool]:
    """(fd for the container, fd for us or None, close the container's after sending)."""
    if kind == "pipe":
        r, w = os.pipe2(os.O_CLOEXEC)
        return (r, w, True) if reading else (w, r, True)
    if kind == "null":
        return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC), None, True
    if kind == "inherit":
        fd = 0 if reading else 1
        try:
            os.fstat(fd)
        except OSError:  # closed (e.g. no stdin at all): the container gets /dev/null
            return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC), None, True
        return fd, None, False
    if isinstance(kind, int):
        return kind, None, False
    raise ValueError(f"stdio must be 'pipe', 'null', 'inherit' or an fd, not {kind!r}")


REPLY_TIMEOUT = 60.0  # seconds a start may take in the zygote before the runtime gives up on it


def _zygote_env() -> dict[str, str]:
    """Our environment, with this package importable by `python -m` whatever the cwd. The zygote
    runs without `site` (`-S`: ~2.5 MB less for a process that lives as long as pysup), so the
    site-packages directories (pyseccomp, for the filter compiler) are on its path explicitly."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    site = [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH"), *site) if p)
    return env


class Launcher:
    """The `Runtime` implementation. Run `await nursery.start(launcher.run)` (or `open_runtime()`)
    before `start`."""

    def __init__(self, *, state_root: str = DEFAULT_STATE_ROOT, python: str = sys.executable):
        self.state_root = state_root
        self.python = python
        self._sock: trio.socket.SocketType | None = None
        self._send_lock = trio.Lock()
        self._pending: dict[str, tuple[trio.Event, list[Any]]] = {}
        self._ids = itertools.count(1)
        self.zygote_pid: int | None = None
        self._spares: set[int] = set()
        self._dead: BaseException | None = None

    # --- the zygote ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Launcher] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the zygote, then relay its replies until cancelled; stops it on the way out."""
        S.prctl(S.PR_SET_CHILD_SUBREAPER, 1)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # Forked from trio's own thread, not a worker thread (trio.lowlevel.open_process uses
            # one): the zygote's PR_SET_PDEATHSIG fires when the *thread* that forked it exits, and
            # trio retires idle worker threads after 10 s.
            proc = subprocess.Popen(
                [self.python, "-S", "-m", "supervisor.runtime.zygote", str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                start_new_session=True, env=_zygote_env(),
            )
        finally:
            theirs.close()
        zygote_fd = os.pidfd_open(proc.pid)
        sock = trio.socket.from_stdlib_socket(ours)
        self._sock = sock
        try:
            with trio.fail_after(30):
                hello = await self._recv()
            if hello is None or hello[0]["type"] != protocol.HELLO:
                raise ZygoteError(f"zygote did not say hello: {hello!r}")
            self.zygote_pid = hello[0]["pid"]
            log.debug("runtime.zygote_started", pid=self.zygote_pid)
            task_status.started(self)
            while True:
                got = await self._recv()
                if got is None:
                    raise ZygoteError("the zygote exited")
                msg, fds = got
                for fd in fds:
                    os.close(fd)
                if msg["type"] == protocol.SPARE:
                    self._spares.add(msg["pid"])
                    continue
                if msg["type"] in (protocol.STARTED, protocol.FAILED):
                    self._spares.discard(msg.get("pid"))
                    slot = self._pending.pop(msg.get("id"), None)
                    if slot is not None:
                        slot[1].append(msg)
                        slot[0].set()
                    elif msg.get("pid"):  # its start gave up waiting: kill it, reap it at shutdown
                        try:
                            os.kill(msg["pid"], signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        self._spares.add(msg["pid"])
                else:
                    log.warning("runtime.zygote_message", message=msg)
        except BaseException as e:
            self._dead = e if not isinstance(e, trio.Cancelled) else ZygoteError("runtime closed")
            for event, box in self._pending.values():
                event.set()
            self._pending.clear()
            raise
        finally:
            self._sock = None
            with trio.CancelScope(shield=True):
                await self._drain(sock)  # EOF to the zygote; collect the spares it announced last
                sock.close()
                with trio.move_on_after(5):
                    proc.returncode = (await wait_pidfd(zygote_fd)).exit_code
                if proc.returncode is None:
                    signal.pidfd_send_signal(zygote_fd, signal.SIGKILL)
                    proc.returncode = (await wait_pidfd(zygote_fd)).exit_code
                os.close(zygote_fd)
                await self._reap_spares()

    async def _drain(self, sock: trio.socket.SocketType) -> None:
        """Half-close our end (the zygote sees EOF, discards its spare and exits) and read what it
        sent meanwhile until its EOF, so no spare pid goes unreaped."""
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        with trio.move_on_after(5):
            while True:
                try:
                    data, ancdata, _flags, _ = await sock.recvmsg(protocol.MAX_MESSAGE,
                                                                  socket.CMSG_SPACE(protocol.MAX_FDS * 4))
                except OSError:
                    return
                for fd in protocol.fds_from_ancillary(ancdata):
                    os.close(fd)
                if not data:
                    return
                try:
                    msg = protocol.decode(data)
                except protocol.ProtocolError:
                    continue
                if msg["type"] == protocol.SPARE:
                    self._spares.add(msg["pid"])
                elif msg["type"] in (protocol.STARTED, protocol.FAILED) and msg.get("pid"):
                    self._spares.discard(msg["pid"])
                    self._spares.add(msg["pid"])  # a start nobody waits for any more: reap it too

    async def _reap_spares(self) -> None:
        """Spares are our children (CLONE_PARENT); with the zygote gone they exit: reap them."""
        for pid in sorted(self._spares):
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            try:
                with trio.move_on_after(2):
                    await wait_pidfd(pidfd)
                    continue
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                await wait_pidfd(pidfd)
            except ChildProcessError:
                pass
            finally:
                os.close(pidfd)
        self._spares.clear()

    async def _recv(self) -> tuple[dict, list[int]] | None:
        assert self._sock is not None
        data, ancdata, flags, _ = await self._sock.recvmsg(protocol.MAX_MESSAGE, socket.CMSG_SPACE(protocol.MAX_FDS * 4))
        fds = protocol.fds_from_ancillary(ancdata)
        if not data and not fds:
            return None
        protocol.check_flags(flags, fds)
        return protocol.decode(data), fds

    async def _request(self, type_: str, cid: str, payload: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        if self._sock is None:
            raise self._dead or ZygoteError("the runtime is not running (use open_runtime())")
        key = f"{cid}#{next(self._ids)}"
        event, box = trio.Event(), []
        self._pending[key] = (event, box)
        data = protocol.encode(type_, id=key, spec=payload)
        async with self._send_lock:
            await self._sock.sendmsg([data], protocol.fds_ancillary(fds))
        await event.wait()
        if not box:
            raise self._dead or ZygoteError("the zygote went away")
        return box[0]

    # --- containers ----------------------------------------------------------------------------

    async def start(self, spec: ContainerSpec, *, stdin: Any = "null", stdout: Any = "pipe", stderr: Any = "pipe",
                    task_status: trio.TaskStatus[ContainerHandle] = trio.TASK_STATUS_IGNORED) -> ExitStatus:
        """Start one container; `task_status.started(handle)` once it has exec'd; return its exit.

        Every resource made here has its undo: on a failed start the state directory and pipes go
        (the zygote leaves no process); on cancellation the container is killed and reaped,
        shielded. Raises `RuntimeSetupError` with the failing stage."""
        zygote.check_spec(spec)
        state_dir = os.path.join(self.state_root, spec.id)
        os.makedirs(self.state_root, mode=0o711, exist_ok=True)
        os.chmod(self.state_root, 0o711)  # traversable (not listable): a user namespace's root reaches its own dir
        try:
            os.mkdir(state_dir, 0o700)
        except FileExistsError:
            raise RuntimeSetupError(f"container {spec.id} already exists ({state_dir})", stage="state",
                                    errno=errno.EEXIST, container=spec.id) from None
        try:
            spec = spec.replace(state_dir=state_dir)
            return await self._launch(protocol.START, spec.id, spec.to_dict(), [], state_dir,
                                      stdin, stdout, stderr, task_status)
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)

    async def exec(self, container: ContainerHandle, spec: ExecSpec, *, stdin: Any = "null", stdout: Any = "pipe",
                   stderr: Any = "pipe", task_status: trio.TaskStatus[ContainerHandle] = trio.TASK_STATUS_IGNORED,
                   ) -> ExitStatus:
        """Start a process inside a running container (its namespaces, cgroups, root; the hardening
        of `spec`): a task like `start`, whose handle is the process's. Raises `RuntimeSetupError`
        (stage `setns` when the container is gone)."""
        if container.status is not None:
            raise RuntimeSetupError(f"container {container.id} is not running", stage="setns", errno=errno.ESRCH,
                                    container=container.id)
        spec = spec.replace(container_pid=container.pid)
        return await self._launch(protocol.EXEC, spec.id, spec.to_dict(), [container.pidfd], None,
                                  stdin, stdout, stderr, task_status)

    async def _launch(self, type_: str, cid: str, payload: dict[str, Any], extra_fds: list[int],
                      state_dir: str | None, stdin: Any, stdout: Any, stderr: Any,
                      task_status: trio.TaskStatus[ContainerHandle]) -> ExitStatus:
        ours: list[int | None] = []
        theirs: list[int] = []
        to_close: list[int] = []
        pidfd = -1
        handle: ContainerHandle | None = None
        try:
            for kind, reading in ((stdin, True), (stdout, False), (stderr, False)):
                child, mine, close = _stdio(kind, reading=reading)
                theirs.append(child)
                ours.append(mine)
                if close:
                    to_close.append(child)
            # The request is shielded: once sent, a process may exist, and we must learn its pid.
            with trio.CancelScope(shield=True):
                with trio.move_on_after(REPLY_TIMEOUT) as waited:
                    reply = await self._request(type_, cid, payload, theirs + extra_fds)
            if waited.cancelled_caught:  # a late reply's process is killed by `run` (no one waits)
                raise ZygoteError(f"the zygote did not answer within {REPLY_TIMEOUT:.0f} s")
            for fd in to_close:
                os.close(fd)
            to_close = []
            if reply["type"] == protocol.FAILED:
                if reply.get("pid"):  # the failed process is our child (CLONE_PARENT): reap it
                    pidfd = os.pidfd_open(reply["pid"])
                    with trio.CancelScope(shield=True):
                        await wait_pidfd(pidfd)
                    os.close(pidfd)
                    pidfd = -1
                raise RuntimeSetupError(reply.get("message") or reply.get("stage", "start failed"),
                                        stage=reply.get("stage", "?"), errno=reply.get("errno"), container=cid)
            pid = reply["pid"]
            pidfd = os.pidfd_open(pid)
            handle = ContainerHandle(
                id=cid, pid=pid, pidfd=pidfd, state_dir=state_dir,
                stdin=trio.lowlevel.FdStream(ours[0]) if ours[0] is not None else None,
                stdout=trio.lowlevel.FdStream(ours[1]) if ours[1] is not None else None,
                stderr=trio.lowlevel.FdStream(ours[2]) if ours[2] is not None else None,
                warnings=tuple(reply.get("warnings", ())),
            )
            ours = []  # owned by the handle (an FdStream takes its fd)
            for w in handle.warnings:
                log.warning("container.warning", container=cid, warning=w)
            task_status.started(handle)
            try:
                status = await wait_pidfd(pidfd)
            except BaseException:
                with trio.CancelScope(shield=True):
                    handle.kill()
                    status = await wait_pidfd(pidfd)
                    handle.status = status
                    handle._exited.set()
                raise
            handle.status = status
            handle._exited.set()
            return status
        finally:
            for fd in to_close:
                os.close(fd)
            for fd in ours:
                if fd is not None:
                    os.close(fd)
            if pidfd >= 0:
                if handle is None or handle.status is None:  # started() never reached: kill and reap
                    with trio.CancelScope(shield=True):
                        try:
                            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        await wait_pidfd(pidfd)
                os.close(pidfd)


@asynccontextmanager
async def open_runtime(**kwargs: Any) -> AsyncIterator[Launcher]:
    """A running `Launcher` (its zygote started) for the duration of the block."""
    async with trio.open_nursery() as nursery:
        launcher = await nursery.start(Launcher(**kwargs).run)
        try:
            yield launcher
        finally:
            nursery.cancel_scope.cancel()


FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


async def run_one(spec: ContainerSpec, *, stdin: Any = "inherit", stdout: Any = "inherit", stderr: Any = "inherit",
                  runtime: Launcher | None = None, state_root: str = DEFAULT_STATE_ROOT,
                  forward_signals: bool = True) -> int:
    """Run one container in the foreground, like `docker run`; return its exit status (0-255).

    stdio defaults to the caller's own fds (no copying). Signals the supervisor receives are
    forwarded to the container's PID 1. A start failure raises `RuntimeSetupError` whose
    `exit_code` is 125, 126 or 127 (Docker's)."""
    async with trio.open_nursery() as nursery:
        if runtime is None:
            runtime = await nursery.start(Launcher(state_root=state_root).run)
        handle: ContainerHandle = await nursery.start(
            functools.partial(runtime.start, spec, stdin=stdin, stdout=stdout, stderr=stderr))
        if forward_signals:
            async def forward() -> None:
                with trio.open_signal_receiver(*FORWARDED_SIGNALS) as signals:
                    async for sig in signals:
                        handle.send_signal(sig)
            nursery.start_soon(forward)
        status = await handle.wait()
        await handle.aclose()
        nursery.cancel_scope.cancel()
    return status.exit_code
