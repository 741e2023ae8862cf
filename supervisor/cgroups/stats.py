"""Resource usage of one cgroup, read straight from cgroupfs.

Cheap by design: only small counter files (v2: 5, v1: 8), never `memory.stat` (the kernel walks
every page-state counter for it). Two ways to read:

- `read_v2(dir)` / `read_v1(dirs)`: open, read, close each file; holds nothing. ~7 µs a file.
- `StatsReader`: opens the files once and re-reads them with `pread(fd, n, 0)`, which makes the
  kernel generate the file afresh: ~1 µs a file, for a supervisor that samples every replica every
  second. It holds one descriptor per file (5-8 per cgroup); close it before removing the cgroup.

A value the host cannot give (a missing controller, memory.peak before Linux 5.19) is None, not
0. No trio here.
"""

from __future__ import annotations

import errno as E
import os
from collections.abc import Callable, Mapping


from supervisor.cgroups import files
from supervisor.errors import CgroupError
from supervisor.runtime.record import record


@record
class CgroupStats:
    """Counters since the cgroup was made. CPU times in microseconds, memory and I/O in bytes."""

    memory_current: int | None = None  # v2 memory.current; v1 memory.usage_in_bytes
    memory_peak: int | None = None  # v2 memory.peak (5.19+); v1 memory.max_usage_in_bytes
    cpu_usage_us: int | None = None
    cpu_user_us: int | None = None
    cpu_system_us: int | None = None
    cpu_throttled_us: int | None = None  # time the quota (cpus) held the cgroup back
    cpu_nr_throttled: int | None = None
    cpu_nr_periods: int | None = None
    pids_current: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None


Data = Mapping[str, bytes | None]  # file name -> contents, None when the file is not there


def parse_io_stat_v2(data: bytes | str) -> tuple[int, int]:
    """io.stat: `8:0 rbytes=1 wbytes=2 rios=3 ...` per device -> (read bytes, write bytes) summed."""
    if isinstance(data, bytes):
        data = data.decode()
    rd = wr = 0
    for line in data.splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key == "rbytes":
                rd += int(value)
            elif key == "wbytes":
                wr += int(value)
    return rd, wr


def parse_blkio_v1(data: bytes | str) -> tuple[int, int]:
    """blkio.throttle.io_service_bytes_recursive: `8:0 Read 123` lines (plus `Total`) -> (read, write)."""
    if isinstance(data, bytes):
        data = data.decode()
    rd = wr = 0
    for line in data.splitlines():
        parts = line.split()
        if len(parts) == 3:
            if parts[1] == "Read":
                rd += int(parts[2])
            elif parts[1] == "Write":
                wr += int(parts[2])
    return rd, wr


def _int(data: bytes | None) -> int | None:
    if data is None:
        return None
    data = data.strip()
    return None if data == b"max" else int(data)


def _us(ns: int | None) -> int | None:
    return None if ns is None else ns // 1000


# --- cgroup v2 ---------------------------------------------------------------------------------

V2_FILES = ("memory.current", "memory.peak", "cpu.stat", "pids.current", "io.stat")


def build_v2(d: Data) -> CgroupStats:
    cpu = files.parse_keyed(d["cpu.stat"]) if d.get("cpu.stat") is not None else {}
    io = d.get("io.stat")
    rd, wr = parse_io_stat_v2(io) if io is not None else (None, None)
    return CgroupStats(
        memory_current=_int(d.get("memory.current")),
        memory_peak=_int(d.get("memory.peak")),
        cpu_usage_us=cpu.get("usage_usec"),
        cpu_user_us=cpu.get("user_usec"),
        cpu_system_us=cpu.get("system_usec"),
        cpu_throttled_us=cpu.get("throttled_usec"),
        cpu_nr_throttled=cpu.get("nr_throttled"),
        cpu_nr_periods=cpu.get("nr_periods"),
        pids_current=_int(d.get("pids.current")),
        io_read_bytes=rd,
        io_write_bytes=wr,
    )


def v2_files(directory: str) -> dict[str, str]:
    return {name: os.path.join(directory, name) for name in V2_FILES}


def read_v2(directory: str) -> CgroupStats:
    """Stats of a cgroup v2 directory."""
    return build_v2(_read_all(v2_files(directory)))


# --- cgroup v1 ---------------------------------------------------------------------------------

V1_FILES = {
    "memory": ("memory.usage_in_bytes", "memory.max_usage_in_bytes"),
    "cpu": ("cpu.stat",),
    "cpuacct": ("cpuacct.usage", "cpuacct.usage_user", "cpuacct.usage_sys"),
    "pids": ("pids.current",),
    "blkio": ("blkio.throttle.io_service_bytes_recursive",),
}


def build_v1(d: Data) -> CgroupStats:
    throttle = files.parse_keyed(d["cpu.stat"]) if d.get("cpu.stat") is not None else {}
    user, system = _us(_int(d.get("cpuacct.usage_user"))), _us(_int(d.get("cpuacct.usage_sys")))
    if d.get("cpuacct.stat") is not None:  # before Linux 4.7: USER_HZ ticks
        ticks = files.parse_keyed(d["cpuacct.stat"])
        hz = os.sysconf("SC_CLK_TCK")
        user = ticks["user"] * 1_000_000 // hz if "user" in ticks else None
        system = ticks["system"] * 1_000_000 // hz if "system" in ticks else None
    blkio = d.get("blkio.throttle.io_service_bytes_recursive")
    rd, wr = parse_blkio_v1(blkio) if blkio is not None else (None, None)
    return CgroupStats(
        memory_current=_int(d.get("memory.usage_in_bytes")),
        memory_peak=_int(d.get("memory.max_usage_in_bytes")),
        cpu_usage_us=_us(_int(d.get("cpuacct.usage"))),
        cpu_user_us=user,
        cpu_system_us=system,
        cpu_throttled_us=_us(throttle.get("throttled_time")),
        cpu_nr_throttled=throttle.get("nr_throttled"),
        cpu_nr_periods=throttle.get("nr_periods"),
        pids_current=_int(d.get("pids.current")),
        io_read_bytes=rd,
        io_write_bytes=wr,
    )


def v1_files(dirs: Mapping[str, str]) -> dict[str, str]:
    """`dirs`: controller -> the cgroup's directory in that hierarchy (a missing one: not mounted)."""
    out = {}
    for controller, names in V1_FILES.items():
        d = dirs.get(controller)
        if d:
            out.update((name, os.path.join(d, name)) for name in names)
    acct = dirs.get("cpuacct")
    if acct and not os.path.exists(os.path.join(acct, "cpuacct.usage_user")):
        out.pop("cpuacct.usage_user", None)
        out.pop("cpuacct.usage_sys", None)
        out["cpuacct.stat"] = os.path.join(acct, "cpuacct.stat")
    return out


def read_v1(dirs: Mapping[str, str]) -> CgroupStats:
    """Stats of a cgroup v1 group: `dirs` maps a controller to its directory."""
    return build_v1(_read_all(v1_files(dirs)))


# --- reading -----------------------------------------------------------------------------------


def _read_all(paths: Mapping[str, str]) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for name, path in paths.items():
        try:
            out[name] = files.read_bytes(path)
        except CgroupError as exc:
            if exc.errno not in (E.ENOENT, E.ENODEV):
                raise
            out[name] = None
    return out


class StatsReader:
    """The stat files of one cgroup, kept open and re-read with pread. A context manager."""

    def __init__(self, paths: Mapping[str, str], build: Callable[[Data], CgroupStats]):
        self._build = build
        self._fds: dict[str, int | None] = {}
        self._paths = dict(paths)
        try:
            for name, path in paths.items():
                try:
                    self._fds[name] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    self._fds[name] = None
        except OSError as exc:
            self.close()
            raise CgroupError(f"open {exc.filename}: {exc.strerror}", path=str(exc.filename), operation="read",
                              errno=exc.errno) from None

    def read(self) -> CgroupStats:
        data: dict[str, bytes | None] = {}
        for name, fd in self._fds.items():
            if fd is None:
                data[name] = None
                continue
            try:
                data[name] = os.pread(fd, 65536, 0)
            except OSError as exc:  # ENODEV: the cgroup was removed
                raise CgroupError(f"read {self._paths[name]}: {exc.strerror}", path=self._paths[name],
                                  operation="read", errno=exc.errno) from None
        return self._build(data)

    def close(self) -> None:
        for fd in self._fds.values():
            if fd is not None:
                os.close(fd)
        self._fds = {}

    def __enter__(self) -> StatsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
