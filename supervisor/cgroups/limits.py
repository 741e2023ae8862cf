"""Unit conversions between the spec, cgroup v1 and cgroup v2, and the spec keys behind each limit.

The conversions are pure functions; the tests check them against the values runc and the kernel
documentation give. `LimitWriter` is what both drivers write a `Resources` with: it turns a refused
write into an error naming the service and spec key, and a missing feature into a `Skipped`.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable

from supervisor.cgroups import files
from supervisor.errors import CgroupError
from supervisor.log import get_logger
from supervisor.runtime.record import record

log = get_logger()

# The compose key a person wrote, for each `Resources` field: errors and warnings name these.
# (`deploy.resources.limits.*` / `reservations.*` land in the same fields; see specs/cgroups.md.)
SPEC_KEYS: dict[str, str] = {
    "memory": "mem_limit",
    "memory_reservation": "mem_reservation",
    "memswap": "memswap_limit",
    "cpus": "cpus",
    "cpu_shares": "cpu_shares",
    "cpuset": "cpuset",
    "pids": "pids_limit",
    "io_weight": "blkio_config.weight",
    "io_weight_device": "blkio_config.weight_device",
}

CPU_PERIOD_US = 100_000  # cpu.max / cpu.cfs_period_us: the kernel's and Docker's default period
SHARES_MIN, SHARES_MAX, SHARES_DEFAULT = 2, 262_144, 1024  # kernel: MIN_SHARES, MAX_SHARES (1 << 18)
WEIGHT_MIN, WEIGHT_MAX, WEIGHT_DEFAULT = 1, 10_000, 100  # cgroup-v2.rst: cpu.weight, io.weight
BLKIO_WEIGHT_MIN, BLKIO_WEIGHT_MAX = 10, 1000  # cgroup v1 blkio.weight and BFQ's weight range


@record
class Skipped:
    """A limit pysup could not apply because the host lacks what it needs; logged, not fatal."""

    service: str
    key: str
    reason: str

    def __str__(self) -> str:
        who = f"service {self.service!r}: " if self.service else ""
        return f"{who}{self.key} is ignored: {self.reason}"


def shares_to_weight(shares: int) -> int:
    """cgroup v1 `cpu.shares` (2..262144, default 1024) -> v2 `cpu.weight` (1..10000, default 100).

    The mapping runc (opencontainers/cgroups ConvertCPUSharesToCgroupV2Value, since runc 1.3) and
    crun use: a quadratic in log2(shares) through the three points min -> min, default -> default,
    max -> max. The older linear formula `1 + (shares - 2) * 9999 // 262142` sent the default 1024 to
    39, so a container with default shares got less CPU than its neighbours on v2."""
    if shares <= SHARES_MIN:
        return WEIGHT_MIN
    if shares >= SHARES_MAX:
        return WEIGHT_MAX
    lg = math.log2(shares)
    exponent = (lg * lg + 125 * lg) / 612.0 - 7.0 / 34.0
    return math.ceil(10**exponent)


def weight_to_shares(weight: int) -> int:
    """The inverse of `shares_to_weight`: the smallest shares that map to `weight` (a binary
    search; the mapping is monotonic and reaches every weight)."""
    weight = max(WEIGHT_MIN, min(WEIGHT_MAX, weight))
    lo, hi = SHARES_MIN, SHARES_MAX
    while lo < hi:
        mid = (lo + hi) // 2
        if shares_to_weight(mid) >= weight:
            hi = mid
        else:
            lo = mid + 1
    return lo


def blkio_weight_to_io_weight(weight: int) -> int:
    """v1 `blkio.weight` / BFQ weight (10..1000) -> v2 `io.weight` (1..10000), runc's
    ConvertBlkIOToIOWeightValue."""
    weight = max(BLKIO_WEIGHT_MIN, min(BLKIO_WEIGHT_MAX, weight))
    return 1 + (weight - BLKIO_WEIGHT_MIN) * 9999 // 990


def io_weight_to_blkio_weight(weight: int) -> int:
    """v2 `io.weight` (1..10000) -> v1 `blkio.weight` (10..1000), rounding to the nearest."""
    weight = max(WEIGHT_MIN, min(WEIGHT_MAX, weight))
    return BLKIO_WEIGHT_MIN + round((weight - 1) * 990 / 9999)


def cpus_to_quota(cpus: float, period: int = CPU_PERIOD_US) -> int:
    """`cpus: 0.5` -> 50000 µs of CPU time per 100000 µs period (Docker's NanoCPUs rule)."""
    return round(cpus * period)


def swap_limit(memory: int | None, memswap: int | None) -> int | None:
    """The swap a container may use, in bytes, from compose's `memswap_limit` (memory + swap).

    None: no limit. Docker's rules: -1 is unlimited; unset (or 0, which Docker treats as unset) with a
    memory limit allows as much swap as memory; equal to memory allows no swap. A memswap below
    memory is a spec error (ValueError)."""
    if memswap == 0:
        memswap = None
    if memory is None:
        if memswap not in (None, -1):
            raise ValueError("memswap_limit needs a memory limit (mem_limit) as well")
        return None
    if memswap is None:
        return memory
    if memswap == -1:
        return None
    if memswap < memory:
        raise ValueError(f"memswap_limit ({memswap}) is below mem_limit ({memory}); it counts memory plus swap")
    return memswap - memory


def pids_limit(pids: int | None) -> int | None:
    """None, -1 and 0 mean unlimited (Docker treats 0 as unset since 20.10)."""
    return pids if pids is not None and pids > 0 else None


def refused(exc: CgroupError, *, service: str, field: str, value: object, hint: str = "") -> CgroupError:
    """A limit write the kernel refused -> an error naming the service and the spec key."""
    key = SPEC_KEYS.get(field, field)
    who = f"service {service!r}: " if service else ""
    reason = os.strerror(exc.errno) if exc.errno else exc.message
    message = f"{who}{key}: the kernel refused {os.path.basename(exc.path)} = {value!s} ({exc.path}): {reason}"
    if hint:
        message += f" ({hint})"
    return CgroupError(message, path=exc.path, operation=exc.operation, service=service or None, key=key, errno=exc.errno)


def spec_error(message: str, *, service: str, field: str, path: str) -> CgroupError:
    """A limit that cannot be written at all (memswap below memory, not a block device, ...)."""
    key = SPEC_KEYS.get(field, field)
    who = f"service {service!r}: " if service else ""
    return CgroupError(f"{who}{key}: {message}", path=path, operation="limit", service=service or None, key=key)


def device_number(device: str, *, service: str, field: str) -> str:
    """`/dev/sda` -> `8:0`, as blkio/io weight files name devices."""
    try:
        st = os.stat(device)
    except OSError as exc:
        raise spec_error(f"{device}: {exc.strerror}", service=service, field=field, path=device) from None
    if not stat.S_ISBLK(st.st_mode):
        raise spec_error(f"{device} is not a block device", service=service, field=field, path=device)
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def is_set(r, field: str) -> bool:
    """Whether a `Resources` field asks for a limit (unset, 0 and "unlimited" do not)."""
    value = getattr(r, field)
    if field == "pids":
        return pids_limit(value) is not None
    if field == "memswap":
        return value not in (None, -1, 0)
    return bool(value)


class LimitWriter:
    """Writes one service's `Resources` into cgroup files for a driver, and collects the limits the
    host cannot apply. The one place where v1 and v2 turn a refused write into an error naming the
    service and spec key, and a missing feature into a `Skipped`."""

    def __init__(self, r, service: str):
        self.r = r
        self.service = service
        self.skipped: list[Skipped] = []

    def put(self, directory: str, field: str, name: str, value: object, hint: str = "") -> None:
        try:
            files.write(os.path.join(directory, name), str(value))
        except CgroupError as exc:
            raise refused(exc, service=self.service, field=field, value=value, hint=hint) from None

    def skip(self, reason: str, *fields: str) -> None:
        """Each of `fields` the service sets is ignored, for `reason`."""
        self.skipped.extend(Skipped(self.service, SPEC_KEYS[f], reason) for f in fields if is_set(self.r, f))

    def swap(self, directory: str) -> int | None:
        """`swap_limit` of the service's memory and memswap; a spec error names memswap_limit."""
        try:
            return swap_limit(self.r.memory or None, self.r.memswap)
        except ValueError as exc:
            raise spec_error(str(exc), service=self.service, field="memswap", path=directory) from None

    def device_weights(self, directory: str, name: str, convert: Callable[[int], int], *, reset: bool,
                       default: object = "default") -> None:
        """`blkio_config.weight_device` as `MAJ:MIN W` lines into `name`; with `reset`, a device the
        file lists and the service no longer does goes back to `default`."""
        wanted = {device_number(d, service=self.service, field="io_weight_device"): convert(w)
                  for d, w in self.r.io_weight_device}
        if reset and os.path.exists(os.path.join(directory, name)):
            for line in files.read_text(os.path.join(directory, name)).splitlines():
                dev = line.split()[0] if line.split() else ""
                if ":" in dev and dev not in wanted:
                    self.put(directory, "io_weight_device", name, f"{dev} {default}")
        for dev, weight in wanted.items():
            self.put(directory, "io_weight_device", name, f"{dev} {weight}")

    def done(self) -> tuple[Skipped, ...]:
        for s in self.skipped:
            log.warning("cgroup limit ignored", service=self.service or None, key=s.key, reason=s.reason)
        return tuple(self.skipped)
