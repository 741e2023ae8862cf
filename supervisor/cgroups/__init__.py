"""cgroups: one Protocol, a v2 and a v1 driver, picked from the host's layout at start-up.

Layout (see specs/cgroups.md): every cgroup pysup makes lives under one base directory, `pysup` by
default, made under `parent` (the hierarchy root by default) in each hierarchy pysup uses:

    <mount>/<parent>/pysup/<project>/<service>.<replica>

Callers name cgroups by their path below the base: `""` is the base itself, `"shop"` a stack, and
`"shop/web.1"` a replica (`replica_path("shop", "web", 1)`).

Three host layouts:
- unified: cgroup v2 only (most hosts today). The v2 driver.
- hybrid:  v1 controller hierarchies plus a cgroup2 mount without controllers (systemd's "hybrid",
           e.g. /sys/fs/cgroup/unified). The v1 driver, which also mirrors each cgroup in the v2
           mount: that gives `populated` notifications (cgroup.events), which v1 lacks.
- legacy:  v1 only. The v1 driver; no "emptied" events.

This module, the drivers, files and stats never import trio: the synchronous runtime helper uses
them. The kernel-notification side (trio) is `supervisor.cgroups.events`.
"""

from __future__ import annotations

import os
import re
import signal
from typing import Literal, Protocol

from supervisor.cgroups.limits import Skipped
from supervisor.cgroups.stats import CgroupStats, StatsReader
from supervisor.config.resources import FrozenMap, Resources
from supervisor.errors import CgroupError
from supervisor.runtime.record import field, record

__all__ = [
    "CgroupError",
    "CgroupManager",
    "CgroupStats",
    "EventSources",
    "Host",
    "Layout",
    "Mount",
    "Skipped",
    "StatsReader",
    "Support",
    "detect",
    "open_manager",
    "parse_mountinfo",
    "replica_path",
    "stack_path",
]

Layout = Literal["unified", "hybrid", "legacy"]

# What pysup uses, per driver. Anything else mounted is left alone.
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset", "pids", "freezer", "blkio")
V2_CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids")

# What a person loses when a controller is missing: the start-up message lists these.
EFFECTS: dict[str, str] = {
    "memory": "mem_limit, mem_reservation and memswap_limit are ignored; no OOM-kill events or memory stats",
    "cpu": "cpus and cpu_shares are ignored; no CPU throttling stats",
    "cpuacct": "no CPU usage stats",
    "cpuset": "cpuset is ignored",
    "pids": "pids_limit is ignored; no pids-limit events or pids stats",
    "io": "blkio_config weights are ignored; no I/O stats",
    "blkio": "blkio_config weights are ignored; no I/O stats",
    "freezer": "pause is not available, and kill signals every process until the cgroup is empty "
    "(a process that forks faster than that can outrun it)",
}


@record
class Mount:
    """One mounted cgroup hierarchy. `root` is the cgroup shown at `mountpoint`: "/" unless pysup
    itself runs in a cgroup namespace or sees a bind mount."""

    mountpoint: str
    root: str = "/"
    controllers: frozenset[str] = frozenset()


@record
class Host:
    """The cgroup layout of this host, from /proc/self/mountinfo."""

    layout: Layout
    unified: Mount | None = None  # the cgroup2 mount, if any
    v1: FrozenMap = field(default=FrozenMap(), converter=FrozenMap)  # controller -> Mount

    @property
    def v1_mounts(self) -> tuple[Mount, ...]:
        """Each v1 hierarchy pysup uses once (co-mounted controllers such as cpu,cpuacct share one)."""
        seen: dict[str, Mount] = {}
        for name in V1_CONTROLLERS:
            mount = self.v1.get(name)
            if mount is not None:
                seen.setdefault(mount.mountpoint, mount)
        return tuple(seen.values())


def parse_mountinfo(text: str) -> Host:
    """The cgroup mounts in a /proc/<pid>/mountinfo text -> Host. Pure: the unit tests feed it text."""
    unified: Mount | None = None
    v1: dict[str, Mount] = {}
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 4 or len(fields) < 5:
            continue
        root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
        fstype, super_opts = fields[sep + 1], fields[sep + 3]
        if fstype == "cgroup2":
            candidate = Mount(mountpoint, root)
            if unified is None or (unified.root != "/" and root == "/"):
                unified = candidate
        elif fstype == "cgroup":
            names = frozenset(o for o in super_opts.split(",") if o in V1_CONTROLLERS)
            if not names:
                continue  # name=systemd and other named hierarchies: not ours
            mount = Mount(mountpoint, root, names)
            for name in names:
                old = v1.get(name)
                if old is None or (old.root != "/" and root == "/"):
                    v1[name] = mount
    if v1:
        layout: Layout = "hybrid" if unified is not None else "legacy"
    elif unified is not None:
        layout = "unified"
    else:
        raise CgroupError(
            "no cgroup filesystem is mounted (neither cgroup2 nor cgroup v1 controllers in /proc/self/mountinfo); "
            "pysup needs cgroups to limit and stop containers",
            path="/proc/self/mountinfo",
            operation="detect",
        )
    return Host(layout, unified, FrozenMap(v1))


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040); everything else,
    UTF-8 included, is as it is (unicode_escape would read UTF-8 bytes as Latin-1)."""
    if "\\" not in field:
        return field
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def detect(mountinfo: str = "/proc/self/mountinfo") -> Host:
    """This host's cgroup layout: unified (v2), hybrid (v1 controllers + an empty v2) or legacy (v1)."""
    try:
        with open(mountinfo) as f:
            text = f.read()
    except OSError as exc:
        raise CgroupError(f"read {mountinfo}: {exc.strerror}", path=mountinfo, operation="detect", errno=exc.errno) from None
    return parse_mountinfo(text)


@record
class Support:
    """What the host gives the chosen driver: start-up reports `describe()` once."""

    layout: Layout
    driver: Literal["v1", "v2"]
    root: str  # where the base lives (v2: its directory; v1: the memory hierarchy's, or the first)
    controllers: frozenset[str]  # usable
    missing: frozenset[str]  # wanted, not usable
    notes: tuple[str, ...] = ()  # other gaps: no cgroup.kill, no emptied events, ...

    @property
    def ok(self) -> bool:
        return not self.missing and not self.notes

    def describe(self) -> list[str]:
        """One line for the layout, then one per gap with what it costs and what still works."""
        lines = [f"cgroups: {self.layout} layout, {self.driver} driver, under {self.root}"]
        for name in sorted(self.missing):
            lines.append(f"cgroup controller {name!r} is not available: {EFFECTS.get(name, 'not used')}")
        lines.extend(self.notes)
        if not self.ok:
            works = sorted(self.controllers)
            lines.append(f"still working: {', '.join(works) or 'no controllers'} (limits, events and stats of these), "
                         "and creating, killing and removing cgroups")
        return lines


@record
class EventSources:
    """The kernel files that report events for one cgroup, for `events.CgroupEventWatcher`."""

    path: str  # below the base, as the caller named it
    memory_events: str | None = None  # v2 memory.events: inotify; oom_kill counter
    oom_control: str | None = None  # v1 memory.oom_control: eventfd through cgroup.event_control
    event_control: str | None = None  # v1 cgroup.event_control
    pids_events: str | None = None  # pids.events; `max` counter
    pids_inotify: bool = False  # True on v2; v1's pids.events sends no notification (kmsg does)
    cgroup_events: str | None = None  # cgroup.events (v2, or the hybrid mirror): `populated`
    memcg_kernel_path: str | None = None  # the memory cgroup as the kernel names it in oom-kill records
    pids_kernel_path: str | None = None  # the pids cgroup as the kernel names it ("fork rejected ... in")


def stack_path(project: str) -> str:
    check_name(project)
    return project


def replica_path(project: str, service: str, replica: int) -> str:
    """`pysup/<project>/<service>.<replica>` below the base: the cgroup of one replica."""
    check_name(project)
    check_name(service)
    return f"{project}/{service}.{int(replica)}"


def check_name(name: str) -> None:
    if not name or name in (".", "..") or any(c in name for c in "/,\n\0") or name.startswith("cgroup."):
        raise CgroupError(f"{name!r} cannot name a cgroup", path=name, operation="name")


def split_path(path: str) -> list[str]:
    """`"shop/web.1"` -> ["shop", "web.1"], each part checked; `""` is the base."""
    parts = [p for p in path.split("/") if p] if path else []
    for part in parts:
        check_name(part)
    return parts


class CgroupManager(Protocol):
    """A cgroup driver. Paths are below the base (see the module docstring). All methods are
    synchronous and short, except the `timeout`-bounded waits of `freeze`, `kill(wait=True)`,
    `wait_empty` and `remove`, which a trio caller runs with `trio.to_thread.run_sync`."""

    host: Host
    base: str  # "pysup"

    def support(self) -> Support:
        """Controllers and features this host gives; see `Support.describe`."""
        ...

    def create(self, path: str, resources: Resources | None = None, *, service: str = "", exist_ok: bool = False) -> tuple[Skipped, ...]:
        """Make the cgroup (and its parents), enable controllers along the way (v2), apply limits.
        With `exist_ok`, a cgroup that is there already gets every field, as `update` gives it.
        On failure nothing made by this call is left. Returns the limits the host cannot apply."""
        ...

    def update(self, path: str, resources: Resources, *, service: str = "") -> tuple[Skipped, ...]:
        """Apply `resources` in place to a (running) cgroup: every field, so an unset one resets to
        no limit. A value the kernel refuses raises CgroupError naming the service and spec key."""
        ...

    def add_process(self, path: str, pid: int) -> None:
        """Move `pid` (0: the caller) into the cgroup, in every hierarchy."""
        ...

    def procs_files(self, path: str) -> tuple[str, ...]:
        """The cgroup.procs files (one per hierarchy) a process writes "0" to, to join the cgroup
        itself: the runtime's `spec.cgroup_procs`, written before unshare(CLONE_NEWCGROUP)."""
        ...

    def procs(self, path: str) -> list[int]:
        """Every process in the cgroup and below it."""
        ...

    def exists(self, path: str) -> bool: ...

    def children(self, path: str) -> list[str]:
        """Names of the cgroups directly below `path` (to find replicas after a restart)."""
        ...

    def populated(self, path: str) -> bool:
        """True while any process lives in the cgroup or below it."""
        ...

    def freeze(self, path: str, *, timeout: float = 5.0) -> None:
        """Freeze every process (pause); returns once the kernel says frozen."""
        ...

    def thaw(self, path: str) -> None: ...

    def kill(self, path: str, sig: int = signal.SIGKILL, *, wait: bool = False, timeout: float = 5.0) -> None:
        """Signal every process in the tree, none escaping by forking (v2: cgroup.kill for SIGKILL;
        otherwise freeze, signal each, thaw). `wait`: also wait until the cgroup is empty."""
        ...

    def wait_empty(self, path: str, *, timeout: float = 5.0) -> bool:
        """Block (on kernel notifications, not a sleep loop) until no process is left; False on timeout."""
        ...

    def remove(self, path: str, *, timeout: float = 10.0) -> None:
        """Kill what is left, wait until empty, remove the cgroup and everything below it in every
        hierarchy. Missing is fine. Raises CgroupError (with the pids left) if it cannot."""
        ...

    def prune(self) -> None:
        """Remove the base if no stack uses it any more (another pysup may; then it stays)."""
        ...

    def stats(self, path: str) -> CgroupStats:
        """Usage counters, reading each file once (nothing held open)."""
        ...

    def stats_reader(self, path: str) -> StatsReader:
        """The same counters from files kept open (`pread`), ~5x cheaper for periodic sampling;
        holds 5 (v2) to 8 (v1) descriptors until closed. Close it before removing the cgroup."""
        ...

    def event_sources(self, path: str) -> EventSources: ...

    def directories(self, path: str) -> dict[str, str]:
        """Hierarchy name ("unified", or a v1 controller) -> the cgroup's directory there."""
        ...


def open_manager(host: Host | None = None, *, base: str = "pysup", parent: str = "/") -> CgroupManager:
    """The driver for this host: v2 on a unified host, v1 (with the v2 mirror when there is one)
    on hybrid and legacy hosts."""
    host = host or detect()
    check_name(base)
    if host.layout == "unified":
        from supervisor.cgroups.v2 import V2Manager

        return V2Manager(host, base=base, parent=parent)
    from supervisor.cgroups.v1 import V1Manager

    return V1Manager(host, base=base, parent=parent)


def hierarchy_dir(mount: Mount, parent: str, *parts: str) -> str:
    """The directory of a cgroup in one mounted hierarchy; `parent` is relative to what the mount
    shows (the hierarchy root, unless pysup runs in a cgroup namespace)."""
    return os.path.join(mount.mountpoint, parent.strip("/"), *parts).rstrip("/")


def kernel_path(mount: Mount, directory: str) -> str:
    """The cgroup path the kernel prints (oom-kill and pids messages): from the hierarchy root."""
    rel = os.path.relpath(directory, mount.mountpoint)
    rel = "" if rel == "." else rel
    root = "/" + mount.root.strip("/")
    return os.path.join(root, rel).rstrip("/") or "/"
