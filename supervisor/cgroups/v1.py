"""The cgroup v1 driver: one directory per controller hierarchy, the same path in each.

Limits: memory.limit_in_bytes, memory.memsw.limit_in_bytes, memory.soft_limit_in_bytes,
cpu.cfs_quota_us/cpu.cfs_period_us, cpu.shares, cpuset.cpus, pids.max, blkio.weight (or BFQ's
blkio.bfq.weight). Whole-tree kill freezes the freezer cgroup, signals every task, thaws.

On a hybrid host (v1 controllers plus a cgroup2 mount without controllers, as systemd sets up) each
cgroup is mirrored in the v2 mount and every process joins it too. v2's core files work there
without any controller: `cgroup.events` tells when the cgroup empties, which v1 cannot.
"""

from __future__ import annotations

import errno as E
import math
import os
import select
import signal
import time

from supervisor.cgroups import (
    V1_CONTROLLERS,
    EventSources,
    Host,
    Mount,
    Support,
    files,
    hierarchy_dir,
    kernel_path,
    split_path,
)
from supervisor.cgroups import limits as L
from supervisor.cgroups.limits import Skipped
from supervisor.cgroups.stats import CgroupStats, StatsReader, build_v1, read_v1, v1_files
from supervisor.config.resources import Resources
from supervisor.errors import CgroupError
from supervisor.log import get_logger

log = get_logger()

NO_LIMITS = Resources()
UNLIMITED = -1  # what v1 limit files take for "no limit"
CFQ_DEFAULT_WEIGHT, BFQ_DEFAULT_WEIGHT = 500, 100
MIRROR = "unified"


class V1Manager:
    """`CgroupManager` on cgroup v1 hierarchies (legacy and hybrid layouts)."""

    def __init__(
        self,
        host: Host,
        *,
        base: str = "pysup",
        parent: str = "/",
        mirror: bool = True,
        use_freezer: bool = True,
        controllers: frozenset[str] | None = None,
    ):
        """`mirror`, `use_freezer` and `controllers` (a subset to use) exist for tests, which check
        the legacy-layout and missing-controller paths on a hybrid host."""
        self.host = host
        self.base = base
        self.parent = parent
        wanted = set(V1_CONTROLLERS if controllers is None else controllers)
        self._mounts: dict[str, Mount] = {c: m for c, m in host.v1.items() if c in wanted}
        if not use_freezer:
            self._mounts.pop("freezer", None)
        # each hierarchy once: co-mounted controllers (cpu,cpuacct) share a directory
        self._hierarchies: dict[str, Mount] = {}
        for name in V1_CONTROLLERS:
            m = self._mounts.get(name)
            if m is not None and m.mountpoint not in {x.mountpoint for x in self._hierarchies.values()}:
                self._hierarchies[name] = m
        self._mirror: Mount | None = None
        self._mirror_note = ""
        if mirror and host.unified is not None:
            parent_dir = hierarchy_dir(host.unified, parent)
            if os.access(parent_dir, os.W_OK):
                self._mirror = host.unified
                self._hierarchies[MIRROR] = host.unified
            else:
                self._mirror_note = f" ({parent_dir} is not writable)"
        if not self._hierarchies:
            raise CgroupError("no usable cgroup v1 hierarchy is mounted", path="/sys/fs/cgroup", operation="detect")

    # --- paths -------------------------------------------------------------------------------

    def _dirs(self, path: str) -> dict[str, str]:
        """hierarchy -> directory of the cgroup at `path` (one entry per distinct hierarchy)."""
        parts = split_path(path)
        return {h: hierarchy_dir(m, self.parent, self.base, *parts) for h, m in self._hierarchies.items()}

    def _ctl(self, path: str, controller: str) -> str | None:
        """The cgroup's directory in `controller`'s hierarchy (or the v2 mirror), None if not mounted."""
        return self.directories(path).get(controller)

    def directories(self, path: str) -> dict[str, str]:
        parts = split_path(path)
        mounts = {**self._mounts, MIRROR: self._mirror} if self._mirror is not None else self._mounts
        return {c: hierarchy_dir(m, self.parent, self.base, *parts) for c, m in mounts.items()}

    def exists(self, path: str) -> bool:
        return any(os.path.isdir(d) for d in self._dirs(path).values())

    def children(self, path: str) -> list[str]:
        names: set[str] = set()
        for d in self._dirs(path).values():
            names.update(files.subdirs(d))
        return sorted(names)

    # --- support -----------------------------------------------------------------------------

    def support(self) -> Support:
        notes: list[str] = []
        if self._mirror is None:
            notes.append("no writable cgroup v2 mount beside the v1 hierarchies" + self._mirror_note
                         + ": no 'emptied' events (cgroup v1 has no populated notification); "
                         "the supervisor still sees each container's main process exit")
        mem = self._mounts.get("memory")
        if mem is not None and not os.path.exists(os.path.join(mem.mountpoint, "memory.memsw.limit_in_bytes")):
            notes.append("swap accounting is off (no memory.memsw.limit_in_bytes): memswap_limit is ignored")
        if "pids" in self._mounts:
            notes.append("cgroup v1's pids.events sends no notification: a pids-limit event comes from the "
                         "kernel log (/dev/kmsg), once per cgroup")
        first = self._mounts.get("memory") or next(iter(self._hierarchies.values()))
        return Support(
            layout=self.host.layout,
            driver="v1",
            root=hierarchy_dir(first, self.parent, self.base),
            controllers=frozenset(self._mounts),
            missing=frozenset(V1_CONTROLLERS) - frozenset(self._mounts),
            notes=tuple(notes),
        )

    # --- create / update ---------------------------------------------------------------------

    def create(
        self, path: str, resources: Resources | None = None, *, service: str = "", exist_ok: bool = False
    ) -> tuple[Skipped, ...]:
        resources = resources or NO_LIMITS
        parts = split_path(path)
        made: list[str] = []
        existed = False
        try:
            for mount in self._hierarchies.values():
                levels = [hierarchy_dir(mount, self.parent)]
                for part in [self.base, *parts]:
                    levels.append(os.path.join(levels[-1], part))
                after = _inherit_cpuset if "cpuset" in mount.controllers else None
                files.make_levels(levels, made, exist_ok=exist_ok, after=after)
                existed = existed or levels[-1] not in made
            # a cgroup that was there already (exist_ok) may hold older limits: write every field
            skipped = self._apply(path, resources, service, reset=existed)
        except BaseException:
            files.undo_mkdirs(made)
            raise
        log.debug("cgroup created", cgroup=path, service=service or None)
        return skipped

    def update(self, path: str, resources: Resources, *, service: str = "") -> tuple[Skipped, ...]:
        if not self.exists(path):
            raise CgroupError(f"update {self._describe(path)}: no such cgroup", path=self._describe(path),
                              operation="update", service=service or None, errno=E.ENOENT)
        return self._apply(path, resources, service, reset=True)

    def _apply(self, path: str, r: Resources, service: str, *, reset: bool) -> tuple[Skipped, ...]:
        w = L.LimitWriter(r, service)

        def no_controller(name: str, *fields: str) -> None:
            w.skip(f"the {name} controller is not mounted on this host", *fields)

        mem = self._ctl(path, "memory")
        if mem:
            self._apply_memory(mem, w, reset)
        else:
            no_controller("memory", "memory", "memory_reservation", "memswap")

        cpu = self._ctl(path, "cpu")
        if cpu:
            if r.cpus or reset:
                w.put(cpu, "cpus", "cpu.cfs_period_us", L.CPU_PERIOD_US)
                quota = L.cpus_to_quota(r.cpus) if r.cpus else UNLIMITED
                w.put(cpu, "cpus", "cpu.cfs_quota_us", quota, hint="the quota must be at least 1000 µs, cpus >= 0.01")
            if r.cpu_shares or reset:
                w.put(cpu, "cpu_shares", "cpu.shares", r.cpu_shares or L.SHARES_DEFAULT)
        else:
            no_controller("cpu", "cpus", "cpu_shares")

        cpuset = self._ctl(path, "cpuset")
        if cpuset:
            if r.cpuset or reset:
                value = r.cpuset or files.read_text(os.path.join(os.path.dirname(cpuset), "cpuset.cpus")).strip()
                w.put(cpuset, "cpuset", "cpuset.cpus", value, hint="CPUs this host or the parent cgroup does not have")
        else:
            no_controller("cpuset", "cpuset")

        pids = self._ctl(path, "pids")
        if pids:
            if L.pids_limit(r.pids) or reset:
                w.put(pids, "pids", "pids.max", L.pids_limit(r.pids) or "max")
        else:
            no_controller("pids", "pids")

        blkio = self._ctl(path, "blkio")
        if blkio:
            self._apply_blkio(blkio, w, reset)
        else:
            no_controller("blkio", "io_weight", "io_weight_device")
        return w.done()

    def _apply_memory(self, mem: str, w: L.LimitWriter, reset: bool) -> None:
        r = w.r
        swap = w.swap(mem)
        limit = r.memory or UNLIMITED
        memsw = r.memory + swap if r.memory and swap is not None else UNLIMITED
        has_memsw = os.path.exists(os.path.join(mem, "memory.memsw.limit_in_bytes"))
        if not has_memsw:
            w.skip("swap accounting is off on this host (no memory.memsw.limit_in_bytes)", "memswap")
        busy = "the container uses more memory than that, and the kernel could not reclaim enough"
        writes = []
        if r.memory or reset:
            writes.append(("memory", "memory.limit_in_bytes", limit))
        if has_memsw and (r.memory or r.memswap is not None or reset):
            # memsw must stay >= memory at every moment: raise memsw first when it grows past the
            # current memory limit, else lower memory first (runc's order)
            current = files.read_int(os.path.join(mem, "memory.limit_in_bytes")) or 0
            entry = ("memswap", "memory.memsw.limit_in_bytes", memsw)
            writes = [entry, *writes] if _inf(memsw) >= current else [*writes, entry]
        for field, name, value in writes:
            w.put(mem, field, name, value, hint=busy)
        if r.memory_reservation or reset:
            w.put(mem, "memory_reservation", "memory.soft_limit_in_bytes", r.memory_reservation or UNLIMITED)

    def _apply_blkio(self, blkio: str, w: L.LimitWriter, reset: bool) -> None:
        if os.path.exists(os.path.join(blkio, "blkio.weight")):
            name, dev_name, default, dev_default = "blkio.weight", "blkio.weight_device", CFQ_DEFAULT_WEIGHT, 0
        elif os.path.exists(os.path.join(blkio, "blkio.bfq.weight")):
            name, dev_name, default, dev_default = "blkio.bfq.weight", "blkio.bfq.weight_device", BFQ_DEFAULT_WEIGHT, "default"
        else:
            w.skip("the host's I/O scheduler has no cgroup weights (no blkio.weight or blkio.bfq.weight; "
                   "the BFQ scheduler gives them)", "io_weight", "io_weight_device")
            return
        if w.r.io_weight or reset:
            w.put(blkio, "io_weight", name, w.r.io_weight or default, hint="the weight range is 10..1000")
        w.device_weights(blkio, dev_name, lambda x: x, reset=reset, default=dev_default)

    # --- processes ---------------------------------------------------------------------------

    def add_process(self, path: str, pid: int) -> None:
        for name in self.procs_files(path):
            files.write(name, pid, retry_einval=5)

    def procs_files(self, path: str) -> tuple[str, ...]:
        return tuple(os.path.join(d, "cgroup.procs") for d in self._dirs(path).values())

    def procs(self, path: str) -> list[int]:
        out: set[int] = set()
        for d in self._dirs(path).values():
            for sub in files.walk_bottom_up(d):
                out.update(files.read_pids(os.path.join(sub, "cgroup.procs")))
        return sorted(out)

    def populated(self, path: str) -> bool:
        mirror = self._ctl(path, MIRROR)
        if mirror:
            try:
                return files.read_keyed(os.path.join(mirror, "cgroup.events")).get("populated") == 1
            except CgroupError as exc:
                if exc.errno not in (E.ENOENT, E.ENODEV):
                    raise
        return bool(self.procs(path))

    def freeze(self, path: str, *, timeout: float = 5.0) -> None:
        freezer = self._ctl(path, "freezer")
        if freezer is None:
            raise CgroupError("pause needs the cgroup v1 freezer controller, which is not mounted",
                              path=path, operation="freeze")
        if not _freeze(freezer, timeout):
            # left FREEZING, it would freeze later on (and a half-frozen container can hang
            # whatever joins it): thaw, as runc does
            files.write(os.path.join(freezer, "freezer.state"), "THAWED")
            raise CgroupError(f"freeze {freezer}: still FREEZING after {timeout:g} s (a process stuck in the "
                              "kernel?); thawed again", path=freezer, operation="freeze")

    def thaw(self, path: str) -> None:
        freezer = self._ctl(path, "freezer")
        if freezer is None:
            raise CgroupError("thaw needs the cgroup v1 freezer controller, which is not mounted",
                              path=path, operation="thaw")
        files.write(os.path.join(freezer, "freezer.state"), "THAWED")

    def kill(self, path: str, sig: int = signal.SIGKILL, *, wait: bool = False, timeout: float = 5.0) -> None:
        if not self.exists(path):
            return
        freezer = self._ctl(path, "freezer")
        if freezer is not None and os.path.isdir(freezer):
            if not _freeze(freezer, min(timeout, 1.0)):
                # FREEZING: the frozen ones cannot fork, the stuck one gets the signal too
                log.warning("cgroup did not freeze completely; signalling anyway", cgroup=path)
            try:
                for pid in self.procs(path):
                    files.signal(pid, sig)  # a frozen task cannot fork; it dies once thawed
            finally:
                self.thaw(path)
        else:  # no freezer: sweep until nobody is left (a fast forker can race this)
            files.signal_each(lambda: self.procs(path), sig, sweep_until=time.monotonic() + timeout)
        if wait and not self.wait_empty(path, timeout=timeout):
            raise CgroupError(f"kill {path}: processes {self.procs(path)} still there after {timeout:g} s",
                              path=self._describe(path), operation="kill")

    def wait_empty(self, path: str, *, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        mirror = self._ctl(path, MIRROR)
        if mirror and os.path.isdir(mirror):
            if not files.wait_keyed(os.path.join(mirror, "cgroup.events"), "populated", 0, timeout):
                return False
        # pidfds: the only wait without a mirror, and a check for a process that never joined it
        return self._wait_pidfds(path, max(0.0, deadline - time.monotonic()))

    def _wait_pidfds(self, path: str, timeout: float) -> bool:
        """Wait for every process to exit on pidfds (readable when the process has exited)."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.procs(path)
            if not pids:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            fds = []
            try:
                for pid in pids:
                    try:
                        fds.append(os.pidfd_open(pid))
                    except ProcessLookupError:
                        pass
                    except OSError:  # out of descriptors: wait a little and list again
                        break
                if len(fds) < len(pids):
                    time.sleep(min(remaining, 0.01))
                elif fds:
                    poller = select.poll()
                    for fd in fds:
                        poller.register(fd, select.POLLIN)
                    poller.poll(max(1, int(remaining * 1000)))
            finally:
                for fd in fds:
                    os.close(fd)

    # --- removal -----------------------------------------------------------------------------

    def remove(self, path: str, *, timeout: float = 10.0) -> None:
        if not self.exists(path):
            return
        deadline = time.monotonic() + timeout
        if self.procs(path):
            self.kill(path, timeout=timeout)
            if not self.wait_empty(path, timeout=max(0.0, deadline - time.monotonic())):
                raise CgroupError(f"remove {self._describe(path)}: processes {self.procs(path)} still there "
                                  f"after {timeout:g} s", path=self._describe(path), operation="remove")
        for d in self._dirs(path).values():
            files.remove_tree(d, deadline)
        log.debug("cgroup removed", cgroup=path)

    def prune(self) -> None:
        for d in self._dirs("").values():
            files.rmdir_unused(d)

    def _describe(self, path: str) -> str:
        return self._ctl(path, "memory") or next(iter(self._dirs(path).values()))

    # --- stats, events -----------------------------------------------------------------------

    def stats(self, path: str) -> CgroupStats:
        return read_v1(self.directories(path))

    def stats_reader(self, path: str) -> StatsReader:
        return StatsReader(v1_files(self.directories(path)), build_v1)

    def event_sources(self, path: str) -> EventSources:
        mem, pids, mirror = self._ctl(path, "memory"), self._ctl(path, "pids"), self._ctl(path, MIRROR)
        j = os.path.join
        return EventSources(
            path=path,
            oom_control=j(mem, "memory.oom_control") if mem else None,
            event_control=j(mem, "cgroup.event_control") if mem else None,
            pids_events=j(pids, "pids.events") if pids and os.path.exists(j(pids, "pids.events")) else None,
            pids_inotify=False,
            cgroup_events=j(mirror, "cgroup.events") if mirror else None,
            memcg_kernel_path=kernel_path(self._mounts["memory"], mem) if mem else None,
            pids_kernel_path=kernel_path(self._mounts["pids"], pids) if pids else None,
        )


def _freeze(freezer: str, timeout: float) -> bool:
    """Freeze the freezer cgroup at `freezer`; False if it is still FREEZING after `timeout`.

    v1's freezer sends no notification when FREEZING becomes FROZEN: re-ask, backing off from
    0.5 ms (runc re-asks too); tasks freeze in microseconds unless one is stuck in the kernel."""
    state = os.path.join(freezer, "freezer.state")
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        files.write(state, "FROZEN")
        if files.read_text(state).strip() == "FROZEN":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _inherit_cpuset(parent: str, child: str) -> None:
    """A new v1 cpuset cgroup starts with no CPUs and no memory nodes, and no task can join it until
    both are set: copy the parent's (runc does the same). A level that has them is left alone."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        mine = os.path.join(child, name)
        if not files.read_text(mine).strip():
            files.write(mine, files.read_text(os.path.join(parent, name)).strip() or "\n")


def _inf(value: int) -> float:
    return math.inf if value == UNLIMITED else value
