"""The cgroup v2 (unified hierarchy) driver.

One directory per cgroup; controllers are switched on for children by writing `+name` to the
parent's `cgroup.subtree_control`, level by level from `parent` down (runc's fs2 does the same).
Limits: memory.max, memory.swap.max, memory.low, cpu.max, cpu.weight, cpuset.cpus, pids.max,
io.weight (io.bfq.weight under BFQ). Whole-tree kill is `cgroup.kill` (Linux 5.14+), pause is
`cgroup.freeze` (5.2+), and `cgroup.events` says when a cgroup is populated or frozen.
"""

from __future__ import annotations

import errno as E
import os
import signal
import time

from supervisor.cgroups import (
    V2_CONTROLLERS,
    EventSources,
    Host,
    Support,
    files,
    hierarchy_dir,
    kernel_path,
    split_path,
)
from supervisor.cgroups import limits as L
from supervisor.cgroups.limits import Skipped
from supervisor.cgroups.stats import CgroupStats, StatsReader, build_v2, read_v2, v2_files
from supervisor.config.resources import Resources
from supervisor.errors import CgroupError
from supervisor.log import get_logger

log = get_logger()

# Always switched on for pysup's cgroups when the host has them (limits, stats, events need them);
# cpuset only when a service asks for it (it costs the kernel a little on every fork).
BASE_CONTROLLERS = frozenset({"cpu", "io", "memory", "pids"})
NO_LIMITS = Resources()


class V2Manager:
    """`CgroupManager` on a cgroup v2 hierarchy."""

    def __init__(
        self,
        host: Host,
        *,
        base: str = "pysup",
        parent: str = "/",
        use_kill_file: bool = True,
        controllers: frozenset[str] | None = None,
    ):
        """`use_kill_file` and `controllers` (a subset to use) exist for tests: the first checks the
        freeze-signal-thaw kill of kernels before 5.14, the second the missing-controller paths."""
        if host.unified is None:
            raise CgroupError("the cgroup v2 driver needs a cgroup2 mount", path="/sys/fs/cgroup", operation="detect")
        self.host = host
        self.base = base
        self.parent = parent
        self.mount = host.unified
        self._parent_dir = hierarchy_dir(self.mount, parent)
        self._base_dir = os.path.join(self._parent_dir, base)
        # Off only in tests, to exercise the freeze-signal-thaw path that kernels before 5.14 use.
        self._use_kill_file = use_kill_file
        try:
            self._available = frozenset(files.read_text(os.path.join(self._parent_dir, "cgroup.controllers")).split())
        except CgroupError:
            self._available = frozenset()
        if controllers is not None:
            self._available &= controllers

    # --- paths -------------------------------------------------------------------------------

    def _dir(self, path: str) -> str:
        return os.path.join(self._base_dir, *split_path(path))

    def _levels(self, path: str) -> list[str]:
        """parent, base, ..., the cgroup itself."""
        out = [self._parent_dir, self._base_dir]
        for part in split_path(path):
            out.append(os.path.join(out[-1], part))
        return out

    def directories(self, path: str) -> dict[str, str]:
        return {"unified": self._dir(path)}

    def exists(self, path: str) -> bool:
        return os.path.isdir(self._dir(path))

    def children(self, path: str) -> list[str]:
        return files.subdirs(self._dir(path))

    # --- support -----------------------------------------------------------------------------

    def support(self) -> Support:
        notes: list[str] = []
        if not self._has_core_file("cgroup.kill", (5, 14)):
            notes.append("no cgroup.kill (Linux 5.14+): whole-tree kill freezes, signals each process and thaws")
        if not self._has_core_file("cgroup.freeze", (5, 2)):
            notes.append("no cgroup.freeze (Linux 5.2+): pause is not available, and kill signals every process "
                         "until the cgroup is empty")
        return Support(
            layout=self.host.layout,
            driver="v2",
            root=self._base_dir,
            controllers=self._available & frozenset(V2_CONTROLLERS),
            missing=frozenset(V2_CONTROLLERS) - self._available,
            notes=tuple(notes),
        )

    def _has_core_file(self, name: str, since: tuple[int, int]) -> bool:
        for d in (self._base_dir, self._parent_dir):
            if os.path.normpath(d) != os.path.normpath(self.mount.mountpoint) and os.path.isdir(d):
                return os.path.exists(os.path.join(d, name))
        return _kernel_at_least(since)  # only the root is there to look at, and it has neither file

    # --- create / update ---------------------------------------------------------------------

    def create(
        self, path: str, resources: Resources | None = None, *, service: str = "", exist_ok: bool = False
    ) -> tuple[Skipped, ...]:
        resources = resources or NO_LIMITS
        want = self._wanted(resources)
        levels = self._levels(path)
        made: list[str] = []
        try:
            files.make_levels(levels, made, exist_ok=exist_ok, after=lambda parent, _: self._enable(parent, want))
            # a cgroup that was there already (exist_ok) may hold older limits: write every field
            skipped = self._apply(levels[-1], resources, service, reset=levels[-1] not in made)
        except BaseException:
            files.undo_mkdirs(made)
            raise
        log.debug("cgroup created", cgroup=levels[-1], service=service or None)
        return skipped

    def update(self, path: str, resources: Resources, *, service: str = "") -> tuple[Skipped, ...]:
        levels = self._levels(path)
        if not os.path.isdir(levels[-1]):
            raise CgroupError(f"update {levels[-1]}: no such cgroup", path=levels[-1], operation="update",
                              service=service or None, errno=E.ENOENT)
        for i in range(1, len(levels)):  # cpuset may be new in this edit
            self._enable(levels[i - 1], self._wanted(resources))
        return self._apply(levels[-1], resources, service, reset=True)

    def _wanted(self, r: Resources) -> frozenset[str]:
        want = set(BASE_CONTROLLERS)
        if r.cpuset:
            want.add("cpuset")
        return frozenset(want) & self._available

    def _enable(self, directory: str, want: frozenset[str]) -> None:
        """Switch `want` on in `directory`'s cgroup.subtree_control where the kernel offers them."""
        control = os.path.join(directory, "cgroup.subtree_control")
        enabled = set(files.read_text(control).split())
        offered = set(files.read_text(os.path.join(directory, "cgroup.controllers")).split())
        for name in sorted((want & offered) - enabled):
            try:
                files.write(control, f"+{name}")
            except CgroupError as exc:
                hint = ""
                if exc.errno == E.EBUSY:
                    hint = (" (the cgroup has processes of its own, and cgroup v2 allows controllers only "
                            "for children of a cgroup without processes: give pysup another parent)")
                raise CgroupError(
                    f"enable the {name} controller in {control}: {os.strerror(exc.errno or 0)}{hint}",
                    path=control,
                    operation="enable controller",
                    errno=exc.errno,
                ) from None

    def _apply(self, leaf: str, r: Resources, service: str, *, reset: bool) -> tuple[Skipped, ...]:
        """Write the limits. `reset`: write every field, unset ones back to the kernel default."""
        have = set(files.read_text(os.path.join(os.path.dirname(leaf), "cgroup.subtree_control")).split())
        have &= self._available
        w = L.LimitWriter(r, service)

        def no_controller(name: str, *fields: str) -> None:
            w.skip(f"the {name} controller is not available on this host", *fields)

        if "memory" in have:
            swap = w.swap(leaf)
            if r.memory or reset:
                w.put(leaf, "memory", "memory.max", r.memory or "max")
            if os.path.exists(os.path.join(leaf, "memory.swap.max")):
                if r.memory or r.memswap is not None or reset:
                    w.put(leaf, "memswap", "memory.swap.max", "max" if swap is None else swap)
            else:
                w.skip("swap accounting is off on this host (no memory.swap.max)", "memswap")
            if r.memory_reservation or reset:
                w.put(leaf, "memory_reservation", "memory.low", r.memory_reservation or 0)
        else:
            no_controller("memory", "memory", "memory_reservation", "memswap")

        if "cpu" in have:
            if r.cpus or reset:
                quota = L.cpus_to_quota(r.cpus) if r.cpus else "max"
                w.put(leaf, "cpus", "cpu.max", f"{quota} {L.CPU_PERIOD_US}",
                      hint="the quota must be at least 1000 µs, cpus >= 0.01")
            if r.cpu_shares or reset:
                weight = L.shares_to_weight(r.cpu_shares) if r.cpu_shares else L.WEIGHT_DEFAULT
                w.put(leaf, "cpu_shares", "cpu.weight", weight)
        else:
            no_controller("cpu", "cpus", "cpu_shares")

        if "cpuset" in have:
            hint = "CPUs this host or the parent cgroup does not have"
            if r.cpuset:
                w.put(leaf, "cpuset", "cpuset.cpus", r.cpuset, hint=hint)
            elif reset and files.read_text(os.path.join(leaf, "cpuset.cpus")).strip():
                # back to all of the parent's CPUs. Not to "" (inherit): the kernel refuses to
                # empty the cpuset of a cgroup that has processes (ENOSPC)
                parent = files.read_text(os.path.join(os.path.dirname(leaf), "cpuset.cpus.effective")).strip()
                w.put(leaf, "cpuset", "cpuset.cpus", parent, hint=hint)
        else:
            no_controller("cpuset", "cpuset")

        if "pids" in have:
            if L.pids_limit(r.pids) or reset:
                w.put(leaf, "pids", "pids.max", L.pids_limit(r.pids) or "max")
        else:
            no_controller("pids", "pids")

        if "io" in have:
            self._apply_io(leaf, w, reset)
        else:
            no_controller("io", "io_weight", "io_weight_device")
        return w.done()

    def _apply_io(self, leaf: str, w: L.LimitWriter, reset: bool) -> None:
        bfq = os.path.exists(os.path.join(leaf, "io.bfq.weight"))
        if not bfq and not os.path.exists(os.path.join(leaf, "io.weight")):
            w.skip("no io.weight on this host (needs io-cost or the BFQ scheduler)", "io_weight", "io_weight_device")
            return
        name = "io.bfq.weight" if bfq else "io.weight"
        # BFQ takes v1's 1..1000 range as it is; io.weight is 1..10000 (runc's conversion)
        conv = (lambda x: x) if bfq else L.blkio_weight_to_io_weight
        if w.r.io_weight or reset:
            w.put(leaf, "io_weight", name, f"default {conv(w.r.io_weight) if w.r.io_weight else L.WEIGHT_DEFAULT}")
        w.device_weights(leaf, name, conv, reset=reset)

    # --- processes ---------------------------------------------------------------------------

    def add_process(self, path: str, pid: int) -> None:
        files.write(os.path.join(self._dir(path), "cgroup.procs"), pid, retry_einval=5)

    def procs_files(self, path: str) -> tuple[str, ...]:
        return (os.path.join(self._dir(path), "cgroup.procs"),)

    def procs(self, path: str) -> list[int]:
        out: list[int] = []
        for d in files.walk_bottom_up(self._dir(path)):
            out.extend(files.read_pids(os.path.join(d, "cgroup.procs")))
        return sorted(set(out))

    def populated(self, path: str) -> bool:
        try:
            return files.read_keyed(os.path.join(self._dir(path), "cgroup.events")).get("populated") == 1
        except CgroupError as exc:
            if exc.errno in (E.ENOENT, E.ENODEV):
                return False
            raise

    def freeze(self, path: str, *, timeout: float = 5.0) -> None:
        leaf = self._dir(path)
        control = os.path.join(leaf, "cgroup.freeze")
        if not os.path.exists(control):
            raise CgroupError(f"pause needs cgroup.freeze (Linux 5.2+): {control} is missing", path=control, operation="freeze")
        files.write(control, "1")
        if not files.wait_keyed(os.path.join(leaf, "cgroup.events"), "frozen", 1, timeout):
            files.write(control, "0")  # a failed pause must not freeze the container later on
            raise CgroupError(f"freeze {leaf}: not frozen after {timeout:g} s (a process stuck in the kernel?); "
                              "thawed again", path=leaf, operation="freeze")

    def thaw(self, path: str) -> None:
        files.write(os.path.join(self._dir(path), "cgroup.freeze"), "0")

    def kill(self, path: str, sig: int = signal.SIGKILL, *, wait: bool = False, timeout: float = 5.0) -> None:
        leaf = self._dir(path)
        if not os.path.isdir(leaf):
            return
        kill_file = os.path.join(leaf, "cgroup.kill")
        if sig == signal.SIGKILL and self._use_kill_file and os.path.exists(kill_file):
            files.write(kill_file, "1")  # the kernel kills the whole subtree; nothing can fork away
        else:
            self._signal_all(path, sig, timeout)
        if wait and not self.wait_empty(path, timeout=timeout):
            raise CgroupError(
                f"kill {leaf}: processes {self.procs(path)} still there after {timeout:g} s",
                path=leaf,
                operation="kill",
            )

    def _signal_all(self, path: str, sig: int, timeout: float) -> None:
        """Freeze, signal every process, thaw: frozen processes cannot fork a new one in between."""
        leaf = self._dir(path)
        can_freeze = os.path.exists(os.path.join(leaf, "cgroup.freeze"))
        if can_freeze:
            files.write(os.path.join(leaf, "cgroup.freeze"), "1")
            # a task stuck in the kernel (D state) may not freeze; signal anyway
            files.wait_keyed(os.path.join(leaf, "cgroup.events"), "frozen", 1, min(timeout, 1.0))
        try:
            # frozen: one pass reaches everyone; not frozen: sweep again until none is left
            files.signal_each(lambda: self.procs(path), sig,
                              sweep_until=None if can_freeze else time.monotonic() + timeout)
        finally:
            if can_freeze:
                files.write(os.path.join(leaf, "cgroup.freeze"), "0")

    def wait_empty(self, path: str, *, timeout: float = 5.0) -> bool:
        return files.wait_keyed(os.path.join(self._dir(path), "cgroup.events"), "populated", 0, timeout)

    # --- removal -----------------------------------------------------------------------------

    def remove(self, path: str, *, timeout: float = 10.0) -> None:
        leaf = self._dir(path)
        if not os.path.isdir(leaf):
            return
        deadline = time.monotonic() + timeout
        if self.populated(path):
            self.kill(path, timeout=timeout)
            if not self.wait_empty(path, timeout=max(0.0, deadline - time.monotonic())):
                raise CgroupError(
                    f"remove {leaf}: processes {self.procs(path)} still there after {timeout:g} s",
                    path=leaf,
                    operation="remove",
                )
        files.remove_tree(leaf, deadline)
        log.debug("cgroup removed", cgroup=leaf)

    def prune(self) -> None:
        files.rmdir_unused(self._base_dir)

    # --- stats, events -----------------------------------------------------------------------

    def stats(self, path: str) -> CgroupStats:
        return read_v2(self._dir(path))

    def stats_reader(self, path: str) -> StatsReader:
        return StatsReader(v2_files(self._dir(path)), build_v2)

    def event_sources(self, path: str) -> EventSources:
        leaf = self._dir(path)
        j = os.path.join
        memory = os.path.exists(j(leaf, "memory.events"))
        pids = os.path.exists(j(leaf, "pids.events"))
        kpath = kernel_path(self.mount, leaf)
        return EventSources(
            path=path,
            memory_events=j(leaf, "memory.events") if memory else None,
            pids_events=j(leaf, "pids.events") if pids else None,
            pids_inotify=True,
            cgroup_events=j(leaf, "cgroup.events"),
            memcg_kernel_path=kpath if memory else None,
            pids_kernel_path=kpath if pids else None,
        )


def _kernel_at_least(version: tuple[int, int]) -> bool:
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return True
    return (major, minor) >= version
