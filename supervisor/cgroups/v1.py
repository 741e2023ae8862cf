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

import structlog

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
from supervisor.config.model import Resources
from supervisor.errors import CgroupError

log = structlog.get_logger()

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
        m = self._mirror if controller == MIRROR else self._mounts.get(controller)
        if m is None:
            return None
        return hierarchy_dir(m, self.parent, self.base, *split_path(path))

    def directories(self, path: str) -> dict[str, str]:
        out = {c: hierarchy_dir(m, self.parent, self.base, *split_path(path)) for c, m in self._mounts.items()}
        if self._mirror is not None:
            out[MIRROR] = hierarchy_dir(self._mirror, self.parent, self.base, *split_path(path))
        return out

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
        try:
            for mount in self._hierarchies.values():
                levels = [hierarchy_dir(mount, self.parent)]
                for part in [self.base, *parts]:
                    levels.append(os.path.join(levels[-1], part))
                for attempt in range(2):
                    try:
                        for i in range(1, len(levels)):
                            last = i == len(levels) - 1
                            if files.mkdir(levels[i], exist_ok=exist_ok or not last):
                                made.append(levels[i])
                                if "cpuset" in mount.controllers:
                                    _inherit_cpuset(levels[i - 1], levels[i])
                        break
                    except CgroupError as exc:
                        if exc.errno != E.ENOENT or attempt:  # the base was pruned under us: retry once
                            raise
            skipped = self._apply(path, resources, service, reset=False)
        except BaseException:
            for d in reversed(made):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            raise
        log.debug("cgroup created", cgroup=path, service=service or None)
        return skipped

    def update(self, path: str, resources: Resources, *, service: str = "") -> tuple[Skipped, ...]:
        if not self.exists(path):
            raise CgroupError(f"update {self._describe(path)}: no such cgroup", path=self._describe(path),
                              operation="update", service=service or None, errno=E.ENOENT)
        return self._apply(path, resources, service, reset=True)

    def _apply(self, path: str, r: Resources, service: str, *, reset: bool) -> tuple[Skipped, ...]:
        skipped: list[Skipped] = []

        def skip(field: str, reason: str) -> None:
            skipped.append(Skipped(service, L.SPEC_KEYS[field], reason))

        def put(directory: str, field: str, name: str, value: object, hint: str = "") -> None:
            try:
                files.write(os.path.join(directory, name), str(value))
            except CgroupError as exc:
                raise L.refused(exc, service=service, field=field, value=value, hint=hint) from None

        def no_controller(name: str, *fields: str) -> None:
            for field in fields:
                if L.is_set(r, field):
                    skip(field, f"the {name} controller is not mounted on this host")

        mem = self._ctl(path, "memory")
        if mem:
            self._apply_memory(mem, r, service, reset, put, skip)
        else:
            no_controller("memory", "memory", "memory_reservation", "memswap")

        cpu = self._ctl(path, "cpu")
        if cpu:
            if r.cpus or reset:
                put(cpu, "cpus", "cpu.cfs_period_us", L.CPU_PERIOD_US)
                quota = L.cpus_to_quota(r.cpus) if r.cpus else UNLIMITED
                put(cpu, "cpus", "cpu.cfs_quota_us", quota, hint="the quota must be at least 1000 µs, cpus >= 0.01")
            if r.cpu_shares or reset:
                put(cpu, "cpu_shares", "cpu.shares", r.cpu_shares or L.SHARES_DEFAULT)
        else:
            no_controller("cpu", "cpus", "cpu_shares")

        cpuset = self._ctl(path, "cpuset")
        if cpuset:
            if r.cpuset or reset:
                value = r.cpuset or files.read_text(os.path.join(os.path.dirname(cpuset), "cpuset.cpus")).strip()
                put(cpuset, "cpuset", "cpuset.cpus", value, hint="CPUs this host or the parent cgroup does not have")
        else:
            no_controller("cpuset", "cpuset")

        pids = self._ctl(path, "pids")
        if pids:
            if L.pids_limit(r.pids) or reset:
                put(pids, "pids", "pids.max", L.pids_limit(r.pids) or "max")
        else:
            no_controller("pids", "pids")

        blkio = self._ctl(path, "blkio")
        if blkio:
            self._apply_blkio(blkio, r, service, reset, put, skip)
        else:
            no_controller("blkio", "io_weight", "io_weight_device")
        for s in skipped:
            log.warning("cgroup limit ignored", service=service or None, key=s.key, reason=s.reason)
        return tuple(skipped)

    def _apply_memory(self, mem: str, r: Resources, service: str, reset: bool, put, skip) -> None:
        try:
            swap = L.swap_limit(r.memory or None, r.memswap)
        except ValueError as exc:
            raise L.spec_error(str(exc), service=service, field="memswap", path=mem) from None
        limit = r.memory or UNLIMITED
        memsw = r.memory + swap if r.memory and swap is not None else UNLIMITED
        has_memsw = os.path.exists(os.path.join(mem, "memory.memsw.limit_in_bytes"))
        if not has_memsw and r.memswap not in (None, -1):
            skip("memswap", "swap accounting is off on this host (no memory.memsw.limit_in_bytes)")
        busy = "the container uses more memory than that, and the kernel could not reclaim enough"
        writes = []
        if r.memory or reset:
            writes.append(("memory", "memory.limit_in_bytes", limit, busy))
        if has_memsw and (r.memory or r.memswap is not None or reset):
            # memsw must stay >= memory at every moment: raise memsw first when it grows past the
            # current memory limit, else lower memory first (runc's order)
            current = files.read_int(os.path.join(mem, "memory.limit_in_bytes")) or 0
            memsw_first = _inf(memsw) >= current
            entry = ("memswap", "memory.memsw.limit_in_bytes", memsw, busy)
            writes = [entry, *writes] if memsw_first else [*writes, entry]
        for field, name, value, hint in writes:
            put(mem, field, name, value, hint=hint)
        if r.memory_reservation or reset:
            put(mem, "memory_reservation", "memory.soft_limit_in_bytes", r.memory_reservation or UNLIMITED)

    def _apply_blkio(self, blkio: str, r: Resources, service: str, reset: bool, put, skip) -> None:
        if os.path.exists(os.path.join(blkio, "blkio.weight")):
            name, dev_name, default = "blkio.weight", "blkio.weight_device", CFQ_DEFAULT_WEIGHT
        elif os.path.exists(os.path.join(blkio, "blkio.bfq.weight")):
            name, dev_name, default = "blkio.bfq.weight", "blkio.bfq.weight_device", BFQ_DEFAULT_WEIGHT
        else:
            for field in ("io_weight", "io_weight_device"):
                if L.is_set(r, field):
                    skip(field, "the host's I/O scheduler has no cgroup weights (no blkio.weight or "
                                "blkio.bfq.weight; the BFQ scheduler gives them)")
            return
        if r.io_weight or reset:
            put(blkio, "io_weight", name, r.io_weight or default, hint="the weight range is 10..1000")
        wanted = {L.device_number(d, service=service, field="io_weight_device"): w for d, w in r.io_weight_device}
        if reset and os.path.exists(os.path.join(blkio, dev_name)):
            for line in files.read_text(os.path.join(blkio, dev_name)).splitlines():
                dev = line.split()[0] if line.split() else ""
                if ":" in dev and dev not in wanted:
                    put(blkio, "io_weight_device", dev_name, f"{dev} {0 if name == 'blkio.weight' else 'default'}")
        for dev, weight in wanted.items():
            put(blkio, "io_weight_device", dev_name, f"{dev} {weight}")

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
        state = os.path.join(freezer, "freezer.state")
        # v1's freezer sends no notification when FREEZING becomes FROZEN: re-ask, backing off
        # from 1 ms (runc does the same); tasks freeze in microseconds unless stuck in the kernel
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            files.write(state, "FROZEN")
            if files.read_text(state).strip() == "FROZEN":
                return
            if time.monotonic() > deadline:
                raise CgroupError(f"freeze {freezer}: still FREEZING after {timeout:g} s", path=freezer, operation="freeze")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

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
            try:
                self.freeze(path, timeout=min(timeout, 1.0))
            except CgroupError as exc:
                log.warning("cgroup did not freeze; signalling anyway", cgroup=path, error=str(exc))
            try:
                for pid in self.procs(path):
                    files.signal(pid, sig)  # a frozen task cannot fork; it dies once thawed
            finally:
                self.thaw(path)
        else:
            deadline = time.monotonic() + timeout
            while True:  # no freezer: sweep until nobody is left (a fast forker can race this)
                pids = self.procs(path)
                for pid in pids:
                    files.signal(pid, sig)
                if sig != signal.SIGKILL or not pids or time.monotonic() > deadline:
                    break
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
                if fds:
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
            for sub in files.walk_bottom_up(d):
                files.rmdir_retry(sub, deadline)
        log.debug("cgroup removed", cgroup=path)

    def prune(self) -> None:
        for d in self._dirs("").values():
            try:
                os.rmdir(d)
            except OSError as exc:
                if exc.errno not in (E.ENOENT, E.EBUSY, E.ENOTEMPTY):
                    raise CgroupError(f"remove {d}: {exc.strerror}", path=d, operation="rmdir", errno=exc.errno) from None

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


def _inherit_cpuset(parent: str, child: str) -> None:
    """A new v1 cpuset cgroup starts with no CPUs and no memory nodes, and no task can join it until
    both are set: copy the parent's (runc does the same)."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        mine = os.path.join(child, name)
        if not files.read_text(mine).strip():
            files.write(mine, files.read_text(os.path.join(parent, name)).strip() or "\n")


def _inf(value: int) -> float:
    return math.inf if value == UNLIMITED else value
