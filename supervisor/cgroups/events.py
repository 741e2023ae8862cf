"""Kernel cgroup notifications as typed events on trio memory channels. Never a polling loop.

One `CgroupEventWatcher` serves any number of cgroups with one trio task and a fixed handful of
file descriptors plus one per v1 cgroup:

- one inotify descriptor for every watched v2 file: `memory.events` (oom_kill), `pids.events`
  (max) and `cgroup.events` (populated), the files cgroupfs signals when they change;
- one eventfd per v1 memory cgroup, registered in `cgroup.event_control` against
  `memory.oom_control` (cgroup-v1 memory.txt, "OOM Control");
- /dev/kmsg, when readable: the kernel's oom-kill record names the killed process and its cgroup,
  v1 announces a pids-limit hit there (v1's pids.events sends no notification), and v1's OOM
  eventfd fires before the kill, so the "Killed process" record says when to re-read the count;
- all of them in one epoll set, whose descriptor is what the task waits on
  (`trio.lowlevel.wait_readable`).

Each event carries the `replica` label given to `watch()`, and goes to the watcher's channel (one
per supervisor or stack: one consumer decides) or to a channel given for that one cgroup.

Counters are read when the kernel says they changed, and only increases since the last read are
reported, so coalesced notifications lose nothing: `new` says how many kills one event stands for.
"""

from __future__ import annotations

import collections
import ctypes
import errno as E
import heapq
import itertools
import os
import re
import select
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import structlog
import trio

from supervisor.cgroups import CgroupManager, EventSources, files
from supervisor.errors import CgroupError

log = structlog.get_logger()


@attrs.frozen
class OomKilled:
    """The kernel's OOM killer killed a process in the cgroup."""

    replica: str
    cgroup: str  # the path given to watch()
    count: int  # kills in this cgroup so far (the kernel's counter)
    new: int  # kills this event reports (more than 1 when notifications were coalesced)
    pid: int | None = None  # the victim, when the kernel log names it
    process: str | None = None  # its command name (comm)
    at: float = 0.0  # time.monotonic() when pysup learned of it


@attrs.frozen
class PidsLimitHit:
    """A fork or clone in the cgroup failed because pids.max was reached."""

    replica: str
    cgroup: str
    count: int  # pids.events `max` so far
    new: int
    at: float = 0.0


@attrs.frozen
class Emptied:
    """The last process in the cgroup (and below it) exited."""

    replica: str
    cgroup: str
    at: float = 0.0


CgroupEvent = OomKilled | PidsLimitHit | Emptied

# --- inotify through libc (the stdlib has no binding) ---------------------------------------------

IN_MODIFY = 0x00000002
IN_IGNORED = 0x00008000
IN_Q_OVERFLOW = 0x00004000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len
_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


def _inotify_init() -> int:
    fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise CgroupError(f"inotify_init1: {os.strerror(err)}", path="inotify", operation="watch", errno=err)
    return fd


def _inotify_add(fd: int, path: str, mask: int = IN_MODIFY) -> int:
    wd = _libc.inotify_add_watch(fd, os.fsencode(path), mask)
    if wd < 0:
        err = ctypes.get_errno()
        raise CgroupError(f"watch {path}: {os.strerror(err)}", path=path, operation="inotify_add_watch", errno=err)
    return wd


def _inotify_read(fd: int) -> list[tuple[int, int]]:
    """Every queued (wd, mask); empty when nothing is queued."""
    out: list[tuple[int, int]] = []
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return out
        pos = 0
        while pos + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
            out.append((wd, mask))
            pos += _EVENT.size + length


# --- /dev/kmsg records ------------------------------------------------------------------------

_OOM_RECORD = re.compile(r"oom-kill:.*?oom_memcg=(?P<oom>[^,]*),task_memcg=(?P<memcg>[^,]*),task=(?P<task>.*),pid=(?P<pid>\d+),uid=\d+")
_KILLED = re.compile(r"Killed process (?P<pid>\d+) \((?P<task>.*?)\)")
_PIDS = re.compile(r"fork rejected by pids controller in (?P<cgroup>\S+)")


@attrs.define
class _OomRecord:
    memcg: str
    oom_memcg: str
    pid: int
    task: str
    used: bool = False


def parse_kmsg(record: bytes) -> tuple[str, dict[str, str]] | None:
    """One /dev/kmsg record -> ("oom", {...}) | ("killed", {...}) | ("pids", {...}) | None."""
    _, sep, text = record.partition(b";")
    if not sep:
        return None
    line = text.split(b"\n", 1)[0].decode(errors="replace")
    if m := _OOM_RECORD.search(line):
        return "oom", m.groupdict()
    if m := _KILLED.search(line):
        return "killed", m.groupdict()
    if m := _PIDS.search(line):
        return "pids", m.groupdict()
    return None


def _under(path: str | None, top: str | None) -> bool:
    return bool(path and top) and (path == top or path.startswith(top.rstrip("/") + "/"))


# --- the watcher ------------------------------------------------------------------------------

# v1 OOM: the eventfd fires when the cgroup hits OOM, before the victim is chosen (the kernel
# first prints its report, a millisecond or more). If the kill count has not moved yet, look again
# when the kernel log says "Killed process", and at these offsets (seconds): the log wakes its
# readers from irq_work, which can wait for the next timer tick (4 ms at HZ=250), and may not be
# readable at all. A bounded burst after a kernel notification, not a polling loop; the last one
# gives a slow console its time.
_V1_RECHECK = (0.001, 0.002, 0.004, 0.008, 0.016, 0.05, 0.25, 1.0, 5.0)


@attrs.define(eq=False)
class Watch:
    """One watched cgroup. Returned by `watch()`; pass it to `unwatch()`."""

    replica: str
    sources: EventSources
    channel: trio.MemorySendChannel
    oom: int = 0
    pids: int = 0
    populated: int | None = None
    frozen: int = 0
    wds: dict[int, str] = attrs.Factory(dict)  # inotify wd -> "memory" | "pids" | "cgroup"
    efd: int | None = None
    oom_pending: bool = False
    closed: bool = False

    @property
    def cgroup(self) -> str:
        return self.sources.path


class CgroupEventWatcher:
    """Turns cgroup notifications into events. Use `open_cgroup_events`, or construct it, start
    `run` in a nursery, and `close()` it after."""

    def __init__(self, manager: CgroupManager, channel: trio.MemorySendChannel, *, kmsg: bool = True):
        self.manager = manager
        self.channel = channel
        try:
            self._epoll = select.epoll()
        except OSError as exc:
            raise CgroupError(f"cannot watch cgroup events: epoll: {exc.strerror}", path="",
                              operation="epoll_create", errno=exc.errno) from None
        self._inotify = _inotify_init()
        self._epoll.register(self._inotify, select.EPOLLIN)
        self._kmsg: int | None = None
        if kmsg:
            try:
                self._kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                os.lseek(self._kmsg, 0, os.SEEK_END)  # only what happens from now on
                self._epoll.register(self._kmsg, select.EPOLLIN)
            except OSError as exc:
                log.info("kernel log not readable: OOM events will not name the killed process, "
                         "and cgroup v1 pids-limit events are not available", error=exc.strerror)
                self._kmsg = None
        self._watches: list[Watch] = []
        self._by_wd: dict[int, list[Watch]] = {}
        self._by_efd: dict[int, Watch] = {}
        self._oom_records: collections.deque[_OomRecord] = collections.deque(maxlen=64)
        self._timers: list[tuple[float, int, bool, Watch]] = []
        self._seq = itertools.count()
        self._outbox: list[tuple[Watch, CgroupEvent]] = []
        self._in_kmsg = False
        self._closed = False

    @property
    def kmsg(self) -> bool:
        return self._kmsg is not None

    # --- watch / unwatch (synchronous: called from any task) ----------------------------------

    def watch(self, path: str, replica: str, *, channel: trio.MemorySendChannel | None = None) -> Watch:
        """Report events of the cgroup at `path` (relative to the manager's base) as `replica`.

        Call it after creating the cgroup and before starting the process, so nothing is missed:
        only what happens after this call is reported. Call `unwatch` before removing the cgroup:
        cgroupfs sends no inotify event when a cgroup is removed (v1's eventfd does fire, and
        ends the watch by itself), so a forgotten watch would pin the removed files' inodes."""
        if self._closed:
            raise trio.ClosedResourceError("the cgroup event watcher is closed")
        src = self.manager.event_sources(path)
        w = Watch(replica=replica, sources=src, channel=channel or self.channel)
        # Each notification is armed before its baseline is read: a change in between is then
        # either in the baseline or notified. (The other way round, a process that exits between
        # the read and the arming would never be reported as emptied.)
        try:
            if src.memory_events:
                self._add_wd(w, src.memory_events, "memory")
                w.oom = files.read_keyed(src.memory_events).get("oom_kill", 0)
            elif src.oom_control and src.event_control:
                w.efd = self._register_oom_eventfd(src)
                self._by_efd[w.efd] = w
                w.oom = files.read_keyed(src.oom_control).get("oom_kill", 0)
            if src.pids_events:
                if src.pids_inotify:
                    self._add_wd(w, src.pids_events, "pids")
                w.pids = files.read_keyed(src.pids_events).get("max", 0)
            if src.cgroup_events:
                self._add_wd(w, src.cgroup_events, "cgroup")
                state = files.read_keyed(src.cgroup_events)
                w.populated, w.frozen = state.get("populated", 0), state.get("frozen", 0)
        except BaseException:
            self._drop(w)
            raise
        self._watches.append(w)
        return w

    def unwatch(self, w: Watch) -> None:
        if w in self._watches:
            self._watches.remove(w)
        self._drop(w)

    def watching(self) -> list[Watch]:
        return list(self._watches)

    def _add_wd(self, w: Watch, path: str, kind: str, mask: int = IN_MODIFY) -> None:
        wd = _inotify_add(self._inotify, path, mask)
        w.wds[wd] = kind
        self._by_wd.setdefault(wd, []).append(w)

    def _register_oom_eventfd(self, src: EventSources) -> int:
        try:
            efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError as exc:  # EMFILE: one eventfd per watched v1 cgroup
            raise CgroupError(f"watch {src.oom_control}: eventfd: {exc.strerror} (raise RLIMIT_NOFILE for many "
                              "replicas)", path=src.oom_control or "", operation="eventfd", errno=exc.errno) from None
        try:
            ofd = os.open(src.oom_control, os.O_RDONLY | os.O_CLOEXEC)
            try:
                # "<event_fd> <fd of memory.oom_control>"; the kernel keeps the eventfd, not ofd
                files.write(src.event_control, f"{efd} {ofd}")
            finally:
                os.close(ofd)
            self._epoll.register(efd, select.EPOLLIN)
        except BaseException:
            os.close(efd)
            raise
        return efd

    def _drop(self, w: Watch) -> None:
        w.closed = True
        for wd in list(w.wds):
            users = self._by_wd.get(wd, [])
            if w in users:
                users.remove(w)
            if not users:
                self._by_wd.pop(wd, None)
                _libc.inotify_rm_watch(self._inotify, wd)  # EINVAL if the cgroup is gone: fine
        w.wds.clear()
        if w.efd is not None:
            self._by_efd.pop(w.efd, None)
            try:
                self._epoll.unregister(w.efd)
            except (OSError, ValueError):
                pass
            os.close(w.efd)  # the kernel drops the registration when the eventfd goes
            w.efd = None
        w.oom_pending = False

    # --- the task -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wait for notifications and send events until cancelled or `close()`d; closes the watcher
        on exit."""
        try:
            task_status.started()
            while not self._closed:
                timeout = self._next_timer() - time.monotonic()
                try:
                    if timeout > 0:
                        with trio.move_on_after(timeout):
                            await trio.lowlevel.wait_readable(self._epoll.fileno())
                    else:
                        await trio.lowlevel.checkpoint()
                except trio.ClosedResourceError:
                    return  # close() from another task: a normal end
                if self._closed:  # closed while this task was sending events
                    return
                self._dispatch(self._epoll.poll(0))
                self._fire_timers()
                outbox, self._outbox = self._outbox, []
                for w, event in outbox:
                    try:
                        await w.channel.send(event)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        log.debug("cgroup event dropped: its receiver is gone", replica=w.replica, cgroup=w.cgroup)
                        self.unwatch(w)
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:  # wakes `run` if it is waiting on the descriptor; it then returns
            trio.lowlevel.notify_closing(self._epoll.fileno())
        except RuntimeError:  # not inside trio.run
            pass
        for w in list(self._watches):
            self.unwatch(w)
        for fd in (self._inotify, self._kmsg):
            if fd is not None:
                os.close(fd)
        self._epoll.close()

    def _next_timer(self) -> float:
        while self._timers and not self._timers[0][3].oom_pending:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else float("inf")

    def _dispatch(self, ready: list[tuple[int, int]]) -> None:
        # the kernel log first: an oom-kill record must be in hand when its count change is read
        fds = {fd for fd, _ in ready}
        if self._kmsg is not None and self._kmsg in fds:
            self._on_kmsg()
        if self._inotify in fds:
            self._on_inotify()
        for fd in fds:
            w = self._by_efd.get(fd)
            if w is not None:
                self._on_eventfd(w)

    def _on_inotify(self) -> None:
        for wd, mask in _inotify_read(self._inotify):
            if mask & IN_Q_OVERFLOW:
                for w in list(self._watches):
                    self._check_all(w)
                continue
            if mask & IN_IGNORED:  # the file is gone: the cgroup was removed
                for w in self._by_wd.pop(wd, []):
                    w.wds.pop(wd, None)
                continue
            for w in list(self._by_wd.get(wd, [])):
                kind = w.wds.get(wd)
                if kind == "memory":
                    self._check_oom(w)
                elif kind == "pids":
                    self._check_pids(w)
                elif kind == "cgroup":
                    self._check_populated(w)

    def _on_eventfd(self, w: Watch) -> None:
        try:
            os.eventfd_read(w.efd)
        except (BlockingIOError, OSError):
            pass
        if not self._check_oom(w) and not w.closed:
            # the OOM notification comes before the kill: look again soon
            w.oom_pending = True
            now = time.monotonic()
            for delay in _V1_RECHECK:
                heapq.heappush(self._timers, (now + delay, next(self._seq), delay == _V1_RECHECK[-1], w))

    def _on_kmsg(self) -> None:
        if self._kmsg is None or self._in_kmsg:
            return
        self._in_kmsg = True
        try:
            self._drain_kmsg()
        finally:
            self._in_kmsg = False

    def _drain_kmsg(self) -> None:
        assert self._kmsg is not None
        while True:
            try:
                record = os.read(self._kmsg, 8192)
            except BlockingIOError:
                return
            except BrokenPipeError:  # records were overwritten before we read them: go on
                continue
            except OSError:
                return
            parsed = parse_kmsg(record)
            if parsed is None:
                continue
            kind, f = parsed
            if kind == "oom":
                self._oom_records.append(_OomRecord(f["memcg"], f["oom"], int(f["pid"]), f["task"]))
            elif kind == "killed":
                for w in list(self._watches):
                    if w.oom_pending:
                        self._check_oom(w)
            elif kind == "pids":
                for w in list(self._watches):
                    if _under(f["cgroup"], w.sources.pids_kernel_path):
                        self._check_pids(w)

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, last, w = heapq.heappop(self._timers)
            if w.oom_pending and not w.closed:
                self._check_oom(w)
                if last:  # an OOM that ended without a kill (reclaim won, or oom_kill_disable)
                    w.oom_pending = False

    # --- reading counters ---------------------------------------------------------------------

    def _read(self, w: Watch, path: str | None) -> dict[str, int] | None:
        if path is None:
            return None
        try:
            return files.read_keyed(path)
        except CgroupError as exc:
            if exc.errno in (E.ENOENT, E.ENODEV):  # removed: nothing more will come
                self.unwatch(w)
                return None
            raise

    def _check_all(self, w: Watch) -> None:
        self._check_oom(w)
        self._check_pids(w)
        self._check_populated(w, notified=False)

    def _check_oom(self, w: Watch) -> bool:
        src = w.sources
        counters = self._read(w, src.memory_events or src.oom_control)
        if counters is None:
            return False
        count = counters.get("oom_kill", 0)
        if count <= w.oom:
            return False
        new, w.oom, w.oom_pending = count - w.oom, count, False
        pid, process = self._victim(src.memcg_kernel_path)
        self._emit(w, OomKilled(w.replica, w.cgroup, count, new, pid, process, time.monotonic()))
        return True

    def _victim(self, memcg: str | None) -> tuple[int | None, str | None]:
        """The latest unclaimed oom-kill record for a process in `memcg` (or below)."""
        self._on_kmsg()  # the record precedes the counter: make sure it has been read
        for rec in reversed(self._oom_records):
            if not rec.used and (_under(rec.memcg, memcg) or _under(rec.oom_memcg, memcg)):
                rec.used = True
                return rec.pid, rec.task
        return None, None

    def _check_pids(self, w: Watch) -> None:
        counters = self._read(w, w.sources.pids_events)
        if counters is None:
            return
        count = counters.get("max", 0)
        if count > w.pids:
            new, w.pids = count - w.pids, count
            self._emit(w, PidsLimitHit(w.replica, w.cgroup, count, new, time.monotonic()))

    def _check_populated(self, w: Watch, *, notified: bool = True) -> None:
        counters = self._read(w, w.sources.cgroup_events)
        if counters is None:
            return
        now, frozen = counters.get("populated", 0), counters.get("frozen", 0)
        before, before_frozen = w.populated, w.frozen
        w.populated, w.frozen = now, frozen
        # cgroupfs sends at most one notification per file per 10 ms and delays the rest, so a
        # process that joins and exits within that window shows up as one notification with
        # nothing changed: populated went 0 -> 1 -> 0 (frozen alone cannot explain it)
        if now == 0 and (before == 1 or (notified and before == 0 and frozen == before_frozen)):
            # a kill and the exit can land in one notification: report the kill first
            self._check_oom(w)
            self._check_pids(w)
            self._emit(w, Emptied(w.replica, w.cgroup, time.monotonic()))

    def _emit(self, w: Watch, event: CgroupEvent) -> None:
        self._outbox.append((w, event))


@asynccontextmanager
async def open_cgroup_events(
    manager: CgroupManager, channel: trio.MemorySendChannel, *, kmsg: bool = True
) -> AsyncIterator[CgroupEventWatcher]:
    """A running watcher for the duration of the block; everything is closed after it."""
    watcher = CgroupEventWatcher(manager, channel, kmsg=kmsg)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            try:
                yield watcher
            finally:
                nursery.cancel_scope.cancel()
    finally:
        watcher.close()
