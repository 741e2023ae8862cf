"""The control server of a running `pysup up`: a Unix socket in the project's runtime directory
(mode 0600), one request per connection (protocol.py, specs/control-api.md).

    await nursery.start(serve, Controller(sup, project=...), path)

Every connection runs in its own task; a bad request (not JSON, truncated, too large, too slow,
from another user, an unknown command) gets an error reply and the connection is closed: nothing
of it reaches the supervisor. Lifecycle events reach `events` subscribers through a structlog
processor (`EventTap`) that copies the supervisor's own log events.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio

from ..config.units import UnitError, parse_signal
from ..errors import PysupError
from ..supervise.restart import signal_name
from ..supervise.state import ENDED, LIVE, ReplicaState as S
from . import protocol as P
from .protocol import ControlError

log = structlog.get_logger()

EVENT_PREFIXES = ("replica.", "service.", "reconcile.", "up.", "control.")
EVENT_BUFFER = 256  # events queued per subscriber; a slower one misses events (and is told)


# --- events ------------------------------------------------------------------------------------

class EventTap:
    """A structlog processor: copies lifecycle events to subscribers (memory channels)."""

    def __init__(self) -> None:
        self.subscribers: set[trio.MemorySendChannel] = set()
        self._thread = threading.get_ident()

    def __call__(self, _logger: Any, _name: str, event_dict: dict) -> dict:
        if self.subscribers and threading.get_ident() == self._thread:
            name = str(event_dict.get("event", ""))
            if name.startswith(EVENT_PREFIXES):
                ev = {k: v for k, v in event_dict.items() if k != "timestamp"}
                ev["time"] = round(time.time(), 6)
                for ch in list(self.subscribers):
                    try:
                        ch.send_nowait(ev)
                    except trio.WouldBlock:
                        pass
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self.subscribers.discard(ch)
        return event_dict

    def install(self) -> None:
        """Into structlog's processor chain (before the renderer; the list is shared by every
        logger, cached ones included)."""
        procs = structlog.get_config()["processors"]
        if self not in procs:
            procs.insert(max(len(procs) - 1, 0), self)

    def uninstall(self) -> None:
        procs = structlog.get_config()["processors"]
        if self in procs:
            procs.remove(self)


# --- the commands ------------------------------------------------------------------------------

def _proc_start(pid: int) -> float | None:
    """Wall-clock start time of `pid`."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return time.time() - uptime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _host_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Controller:
    """The commands, over a `StackSupervisor` (and its runtime and cgroup manager)."""

    def __init__(self, sup: Any, *, project: str, tap: EventTap | None = None, net: Any = None):
        self.sup = sup
        self.net = net  # supervisor.net.stack.StackNetwork: the ports bound (ephemeral ones for ps)
        self.project = project
        self.tap = tap or EventTap()
        self.paused: set[str] = set()  # container ids
        self.nursery: trio.Nursery | None = None  # the server's (set by `serve`)
        self._execs = 0
        self.commands: dict[str, Callable[..., Awaitable[Any]]] = {
            "ping": self.ping, "ps": self.ps, "stop": self.stop, "start": self.start, "restart": self.restart,
            "kill": self.kill, "pause": self.pause, "unpause": self.unpause, "down": self.down,
            "exec": self.exec, "top": self.top, "stats": self.stats, "events": self.events,
        }
        self.streaming = {"stats", "events"}

    @property
    def manager(self) -> Any:
        return getattr(self.sup.cgroups, "manager", None)

    # --- helpers ---------------------------------------------------------------------------------

    def resolve(self, targets: Any, *, default_all: bool = True, one: bool = False) -> list[tuple[str, int]]:
        """SERVICE or SERVICE.N / SERVICE-N → (service, index) pairs (a service: its indexes in
        the spec and any listed replica)."""
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise ControlError(P.BAD_REQUEST, "targets must be a list of strings")
        stack = self.sup.stack
        if not targets:
            if not default_all:
                raise ControlError(P.BAD_REQUEST, "name a service (SERVICE or SERVICE.N)")
            targets = list(stack.services)
        out: list[tuple[str, int]] = []
        for t in targets:
            if t in stack.services or t in self.sup.replicas:
                svc = stack.services.get(t)
                indexes = set(range(1, (svc.replicas if svc else 0) + 1))
                indexes |= {r.index for r in self.sup.replicas.get(t, ())}
                out += [(t, i) for i in sorted(indexes) if (t, i) not in out]
                continue
            name, index = P.parse_target(t)
            if index is None or (name not in stack.services and name not in self.sup.replicas):
                raise ControlError(P.NOT_FOUND, f"no such service: {t}")
            svc = stack.services.get(name)
            if self.sup.replica(name, index) is None and not (svc and 1 <= index <= svc.replicas):
                raise ControlError(P.NOT_FOUND, f"no such replica: {t}")
            if (name, index) not in out:
                out.append((name, index))
        if one and len(out) != 1:
            raise ControlError(P.BAD_REQUEST, f"name one replica (SERVICE.N): {', '.join(targets)} is {len(out)}")
        return out

    def _replica_row(self, r: Any) -> dict[str, Any]:
        st = r.status
        now = trio.current_time()
        last = st.last_exit
        started = _proc_start(st.pid) if st.pid else None
        state = "paused" if r.container_id in self.paused and st.state in LIVE else str(st.state)
        return {
            "id": r.container_id, "name": r.name, "service": r.service.name, "index": r.index, "state": state,
            "health": st.health, "pid": st.pid,
            "started_at": round(started, 3) if started else None,
            "uptime": round(max(time.time() - started, 0.0), 3) if started else None,
            "restarts": st.restart_count, "crash_loop": st.crash_looping,
            "next_retry_in": (round(max(st.next_retry_at - now, 0.0), 3)
                              if st.state is S.RESTARTING and st.next_retry_at is not None else None),
            "last_exit": None if last is None else {
                "code": last.exit_code, "signal": signal_name(last.signal) if last.signal else None,
                "oom": last.kind == "oom", "reason": last.describe()},
            "gave_up": st.gave_up, "stopped": (r.service.name, r.index) in self.held,
            "oom_kills": st.oom_kills, "ip": getattr(r, "ip", None),  # set by networking, when it lands
            "ports": [self._port(r.service, i) for i in range(len(r.service.ports))],
        }

    def _port(self, service: Any, i: int) -> dict[str, Any]:
        """A port entry as published: one without a host port shows the ephemeral port bound for it
        (`ephemeral`: true; `published` null while none is bound)."""
        p = service.ports[i]
        row = {"target": p.target, "published": list(p.published) if p.published else None,
               "host_ip": p.host_ip, "protocol": p.protocol}
        if p.published is None:
            row["ephemeral"] = True
            bound = self.net.host_port(service, i) if self.net is not None else None
            if bound is not None:
                row["host_ip"], row["published"] = bound[0], [bound[1], bound[1]]
        return row

    @property
    def held(self) -> set[tuple[str, int]]:
        return self.sup.held

    def _live(self, service: str, index: int) -> Any:
        r = self.sup.replica(service, index)
        if r is None or r.done.is_set():
            raise ControlError(P.CONFLICT, f"{service}-{index} is not running")
        return r

    # --- commands ----------------------------------------------------------------------------------

    async def ping(self, args: dict) -> Any:
        return {"project": self.project, "pid": os.getpid(), "version": P.VERSION}

    async def ps(self, args: dict) -> Any:
        services = args.get("services") or []
        if services:
            self.resolve(services)  # unknown names are an error
        rows = []
        for r in self.sup.all_replicas():
            if services and r.service.name not in services and r.name not in services \
                    and f"{r.service.name}.{r.index}" not in services:
                continue
            ended = r.done.is_set() or (r.status.state in ENDED and r.status.gave_up is not None)
            if ended and not args.get("all"):
                continue
            rows.append(self._replica_row(r))
        return rows

    async def stop(self, args: dict) -> Any:
        pairs = self.resolve(args.get("targets", []), default_all=False)
        stopped = []
        async with trio.open_nursery() as n:
            for svc, i in pairs:
                self.held.add((svc, i))
                r = self.sup.replica(svc, i)
                if r is not None and not r.done.is_set():
                    stopped.append(r.name)
                    n.start_soon(self._stop_one, r)
        log.info("control.stopped", replicas=stopped)
        return {"stopped": stopped}

    async def _stop_one(self, r: Any) -> None:
        if r.container_id in self.paused:  # a frozen process cannot take its stop signal
            await self._thaw(r)
            self.paused.discard(r.container_id)
        await r.stop()

    async def start(self, args: dict) -> Any:
        pairs = self.resolve(args.get("targets", []), default_all=False)
        started = []
        async with trio.open_nursery() as n:
            for svc, i in pairs:
                self.held.discard((svc, i))
                r = self.sup.replica(svc, i)
                if r is not None and not r.done.is_set():
                    continue
                service = self.sup.stack.services.get(svc)
                if service is None:
                    continue
                started.append(f"{svc}-{i}")
                n.start_soon(self._start_one, service, i)
        log.info("control.started", replicas=started)
        return {"started": started}

    async def _start_one(self, service: Any, index: int) -> None:
        new = self.sup.new_replica(service, index)
        self.sup._put(new)
        # Like `docker start`: answers once the container runs (Replica.run's started), or its
        # start failed.
        if not await self.sup._start_replica(new, self.sup._nursery, live=True):
            raise ControlError(P.FAILED, f"{new.name} could not be started (see pysup up's log)")

    async def restart(self, args: dict) -> Any:
        pairs = self.resolve(args.get("targets", []), default_all=False)
        targets = [f"{s}.{i}" for s, i in pairs]
        await self.stop({"targets": targets})
        return await self.start({"targets": targets})

    async def kill(self, args: dict) -> Any:
        pairs = self.resolve(args.get("targets", []), default_all=False)
        sig = args.get("signal", "SIGKILL")
        try:
            signum = parse_signal(sig if isinstance(sig, int) else str(sig))  # "KILL", "9", "SIGRTMIN+3"
        except UnitError:
            raise ControlError(P.BAD_REQUEST, f"unknown signal {sig!r}") from None
        killed = []
        for svc, i in pairs:
            r = self.sup.replica(svc, i)
            if r is not None and r.handle is not None and r.handle.status is None:
                r.handle.send_signal(signum)
                killed.append(r.name)
        log.info("control.killed", replicas=killed, signal=signal_name(signum))
        return {"killed": killed}

    async def _freeze(self, r: Any) -> None:
        await trio.to_thread.run_sync(functools.partial(self.manager.freeze, r.cgroup))

    async def _thaw(self, r: Any) -> None:
        await trio.to_thread.run_sync(self.manager.thaw, r.cgroup)

    async def pause(self, args: dict) -> Any:
        done = await self._set_paused(args, True)
        log.info("control.paused", replicas=done)
        return {"paused": done}

    async def unpause(self, args: dict) -> Any:
        done = await self._set_paused(args, False)
        log.info("control.unpaused", replicas=done)
        return {"unpaused": done}

    async def _set_paused(self, args: dict, paused: bool) -> list[str]:
        """Freeze (or thaw) each live replica the targets name, in order; the names done."""
        done = []
        for svc, i in self.resolve(args.get("targets", []), default_all=False):
            r = self._live(svc, i)
            try:
                await (self._freeze if paused else self._thaw)(r)
            except PysupError as exc:
                raise ControlError(P.FAILED, str(exc)) from None
            if paused:
                self.paused.add(r.container_id)
            else:
                self.paused.discard(r.container_id)
            done.append(r.name)
        return done

    async def down(self, args: dict) -> Any:
        timeout = args.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            raise ControlError(P.BAD_REQUEST, "timeout must be a number >= 0")
        for cid in list(self.paused):
            r = next((x for x in self.sup.all_replicas() if x.container_id == cid), None)
            if r is not None:
                await self._thaw(r)
        self.paused.clear()
        log.info("control.down", timeout=timeout)
        self.sup.request_stop()
        if timeout is not None:
            async def kill_later() -> None:
                await trio.sleep(timeout)
                self.sup.request_stop(kill=True)

            if self.nursery is not None:  # the server's: cancelled once the stack has stopped
                self.nursery.start_soon(kill_later)
        return {"stopping": True, "pid": os.getpid()}

    async def exec(self, args: dict, fds: list[int], conn: Any = None) -> Any:
        from ..runtime.spec import ExecSpec

        argv = args.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ControlError(P.BAD_REQUEST, "argv must be a non-empty list of strings")
        if len(fds) != 3:
            raise ControlError(P.BAD_REQUEST, "exec needs the caller's stdin, stdout and stderr (SCM_RIGHTS)")
        env_args = args.get("env") or {}
        if not isinstance(env_args, dict) or not all(isinstance(v, str) for v in env_args.values()):
            raise ControlError(P.BAD_REQUEST, "env must be an object of strings")
        svc, i = self.resolve([args.get("target", "")] if args.get("target") else [], default_all=False)[0]
        r = self.sup.replica(svc, i)
        # SERVICE without .N: its first running replica
        if args.get("target") == svc:
            r = next((x for x in self.sup.replicas.get(svc, ()) if x.status.state in LIVE), r)
        handle, spec = (r.handle, r.spec) if r is not None else (None, None)
        if r is None or handle is None or spec is None or r.status.state not in LIVE:
            raise ControlError(P.CONFLICT, f"{svc}-{i} is not running")
        env = dict(spec.env)
        env.update(env_args)
        overrides: dict[str, Any] = {"env": tuple(env.items())}
        if args.get("user"):
            overrides["user"] = str(args["user"])
        if args.get("workdir"):
            overrides["cwd"] = str(args["workdir"])
        self._execs += 1
        try:
            xspec = ExecSpec.for_container(spec, handle.pid, tuple(argv), id=f"{r.container_id}.exec.{self._execs}",
                                           **overrides)
        except (ValueError, TypeError) as exc:
            raise ControlError(P.BAD_REQUEST, str(exc)) from None
        log.info("control.exec", service=svc, replica=r.index, argv=argv)
        try:
            proc = await self.nursery.start(functools.partial(self.sup.runtime.exec, handle, xspec, stdin=fds[0],
                                                              stdout=fds[1], stderr=fds[2]))
        except PysupError as exc:  # Docker's codes: 126 not executable, 127 not found, else 125
            return {"exit_code": exc.exit_code, "error": str(exc)}
        finally:
            _close_all(fds)  # the process has its own copies
        if conn is None:
            status = await proc.wait()
        else:  # the caller hung up (Ctrl-C on `pysup exec`): the command goes too
            async with trio.open_nursery() as n:
                async def watch_caller() -> None:
                    try:
                        while await conn.recv(4096):
                            pass
                    except OSError:
                        pass
                    proc.kill()

                n.start_soon(watch_caller)
                status = await proc.wait()
                n.cancel_scope.cancel()
        return {"exit_code": status.exit_code}

    async def top(self, args: dict) -> Any:
        targets = args.get("targets") or []
        rows = []
        for svc, i in self.resolve(targets, default_all=False):
            r = self.sup.replica(svc, i)
            if r is None or r.done.is_set():
                continue
            try:
                pids = await trio.to_thread.run_sync(self.manager.procs, r.cgroup)
            except PysupError:
                pids = []
            for pid in sorted(pids):
                row = _process(pid)
                if row is not None:
                    rows.append({"replica": r.name, **row})
        return rows

    def _stats_sample(self) -> dict[str, tuple[Any, Any]]:
        out = {}
        for r in self.sup.all_replicas():
            if r.done.is_set():
                continue
            try:
                out[r.container_id] = (r, self.manager.stats(r.cgroup))
            except PysupError:
                continue
        return out

    async def stats(self, args: dict, send: Callable[[Any], Awaitable[None]]) -> None:
        interval = args.get("interval", 1.0)
        if not isinstance(interval, (int, float)) or not 0.05 <= interval <= 60:
            raise ControlError(P.BAD_REQUEST, "interval must be between 0.05 and 60 seconds")
        host_mem = _host_memory()
        prev, t_prev = self._stats_sample(), time.monotonic()
        while True:
            await trio.sleep(interval)
            cur, t_cur = self._stats_sample(), time.monotonic()
            rows = []
            for cid, (r, s) in cur.items():
                p = prev.get(cid)
                cpu = None
                if p is not None and s.cpu_usage_us is not None and p[1].cpu_usage_us is not None:
                    cpu = round(max(s.cpu_usage_us - p[1].cpu_usage_us, 0) / ((t_cur - t_prev) * 1e6) * 100, 2)
                limit = r.service.resources.memory or host_mem
                rows.append({
                    "id": cid, "name": r.name, "service": r.service.name, "index": r.index, "cpu_percent": cpu,
                    "memory_used": s.memory_current, "memory_limit": limit,
                    "memory_percent": (round(s.memory_current / limit * 100, 2)
                                       if s.memory_current is not None and limit else None),
                    "pids": s.pids_current, "io_read": s.io_read_bytes, "io_write": s.io_write_bytes})
            await send(rows)
            if not args.get("stream", True):
                return
            prev, t_prev = cur, t_cur

    async def events(self, args: dict, send: Callable[[Any], Awaitable[None]]) -> None:
        tx, rx = trio.open_memory_channel[dict](EVENT_BUFFER)
        self.tap.subscribers.add(tx)
        try:
            async with rx:
                async for ev in rx:
                    await send(ev)
        finally:
            self.tap.subscribers.discard(tx)
            tx.close()


def _process(pid: int) -> dict[str, Any] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    comm = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(errors="replace")
    rest = stat.rsplit(b")", 1)[1].split()
    cmd = cmdline.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace") or f"[{comm}]"
    return {"pid": pid, "ppid": int(rest[1]), "uid": uid, "state": rest[0].decode(), "command": cmd}


# --- the socket --------------------------------------------------------------------------------

def _json(obj: Any) -> bytes:
    return json.dumps(obj, default=str, separators=(",", ":")).encode() + b"\n"


def _error(code: str, message: str) -> bytes:
    return _json({"v": P.VERSION, "ok": False, "error": {"code": code, "message": message}})


def peer_uid(sock: Any) -> int:
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", data)[1]


async def read_request(conn: Any) -> tuple[dict, list[int]]:
    """One request line and the fds sent with it (closed by the caller). ControlError if bad."""
    buf = bytearray()
    fds: list[int] = []
    try:
        with trio.fail_after(P.REQUEST_TIMEOUT):
            while b"\n" not in buf:
                data, ancdata, _flags, _addr = await conn.recvmsg(
                    P.MAX_REQUEST + 1 - len(buf), socket.CMSG_SPACE(P.MAX_FDS * 4))
                for level, kind, payload in ancdata:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds += list(struct.unpack(f"{len(payload) // 4}i", payload[:len(payload) - len(payload) % 4]))
                if not data:
                    raise ControlError(P.BAD_REQUEST, "truncated request: the connection closed before a newline")
                buf += data
                if len(buf) > P.MAX_REQUEST or (b"\n" in buf and buf.index(b"\n") >= P.MAX_REQUEST):
                    raise ControlError(P.TOO_LARGE, f"request larger than {P.MAX_REQUEST} bytes")
    except trio.TooSlowError:
        _close_all(fds)
        raise ControlError(P.TIMEOUT, f"no complete request within {P.REQUEST_TIMEOUT:g} s") from None
    except ControlError:
        _close_all(fds)
        raise
    if len(fds) > P.MAX_FDS:
        _close_all(fds)
        raise ControlError(P.BAD_REQUEST, f"at most {P.MAX_FDS} file descriptors")
    line = bytes(buf[:buf.index(b"\n")])
    try:
        req = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        _close_all(fds)
        raise ControlError(P.BAD_REQUEST, "the request is not JSON") from None
    if not isinstance(req, dict):
        _close_all(fds)
        raise ControlError(P.BAD_REQUEST, "the request must be a JSON object")
    return req, fds


def _known_leaf(exc: BaseException) -> Exception | None:
    """The first ControlError or PysupError in an exception group (a nursery's), else None."""
    if isinstance(exc, (ControlError, PysupError)):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            found = _known_leaf(e)
            if found is not None:
                return found
    return None


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


async def handle_connection(ctl: Controller, conn: Any, allowed_uids: frozenset[int]) -> None:
    fds: list[int] = []
    with conn:
        async def send(obj: Any) -> None:
            data = memoryview(obj if isinstance(obj, bytes) else _json(obj))
            while data:
                sent = await conn.send(data)
                data = data[sent:]

        try:
            try:
                uid = peer_uid(conn)
                if uid not in allowed_uids:
                    log.warning("control.refused", uid=uid)
                    raise ControlError(P.FORBIDDEN, f"uid {uid} may not use this stack's control socket")
                req, fds = await read_request(conn)
                if req.get("v") != P.VERSION:
                    raise ControlError(P.UNSUPPORTED_VERSION,
                                       f"protocol version {req.get('v')!r} is not supported (this is {P.VERSION})")
                cmd = req.get("cmd")
                args = req.get("args") or {}
                if not isinstance(args, dict):
                    raise ControlError(P.BAD_REQUEST, "args must be an object")
                fn = ctl.commands.get(cmd) if isinstance(cmd, str) else None
                if fn is None:
                    raise ControlError(P.UNKNOWN_COMMAND, f"unknown command {cmd!r}")
                if cmd in ctl.streaming:
                    started = False

                    async def item(obj: Any) -> None:
                        nonlocal started
                        if not started:
                            started = True
                            await send({"v": P.VERSION, "ok": True, "stream": True})
                        await send({"item": obj})

                    async with trio.open_nursery() as n:
                        async def until_caller_gone() -> None:  # ends the stream when the client closes
                            try:
                                while await conn.recv(4096):
                                    pass
                            except OSError:
                                pass
                            n.cancel_scope.cancel()

                        async def run_stream() -> None:
                            await fn(args, item)
                            n.cancel_scope.cancel()

                        n.start_soon(until_caller_gone)
                        n.start_soon(run_stream)
                    if not started:
                        await send({"v": P.VERSION, "ok": True, "stream": True})
                    return
                result = await (fn(args, fds, conn) if cmd == "exec" else fn(args))
                await send({"v": P.VERSION, "ok": True, "result": result})
            except ControlError as exc:
                await send(_error(exc.code, exc.message))
            except PysupError as exc:
                await send(_error(P.FAILED, str(exc)))
            except Exception as exc:  # noqa: BLE001 - a bug here must not take the stack down
                leaf = _known_leaf(exc)
                if leaf is not None:
                    code = leaf.code if isinstance(leaf, ControlError) else P.FAILED
                    await send(_error(code, str(leaf)))
                    return
                try:
                    import traceback

                    log.error("control.internal_error", error=repr(exc),
                              traceback="".join(traceback.format_exception(exc))[-4000:])
                except Exception:  # noqa: BLE001, S110 - not even the log may raise here
                    pass
                await send(_error(P.FAILED, f"internal error: {exc!r}"))
        except (trio.BrokenResourceError, trio.ClosedResourceError, BrokenPipeError, ConnectionResetError):
            pass
        except OSError as exc:
            log.debug("control.connection_error", error=str(exc))
        finally:
            _close_all(fds)


async def serve(ctl: Controller, path: str, *, allowed_uids: frozenset[int] | None = None,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Listen on `path` (replacing a stale socket), mode 0600; remove it when cancelled."""
    allowed = allowed_uids if allowed_uids is not None else frozenset({os.geteuid()})
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        with P.short_path(path) as name:
            await sock.bind(name)
        os.chmod(path, 0o600)
        sock.listen(64)
        ctl.tap.install()
        task_status.started()
        log.debug("control.listening", path=path)
        async with trio.open_nursery() as n:
            ctl.nursery = n
            while True:
                conn, _ = await sock.accept()
                n.start_soon(handle_connection, ctl, conn, allowed)
    finally:
        ctl.tap.uninstall()
        sock.close()
        try:
            os.unlink(path)
        except OSError:
            pass


__all__ = ["Controller", "EventTap", "serve"]
