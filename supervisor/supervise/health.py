"""Health checks: Docker's state machine (pure, `HealthMonitor`) and the probe loop (`run_probes`).

State machine (moby daemon/health.go, reference/features.md §2.1):
- every (re)start begins `starting` with a failing streak of 0;
- exit 0 → `healthy` (from any status), streak reset;
- any other result (non-zero exit, timeout, exec error) is a failure; a failure of a probe that
  *started* within `start_period` of the container's start, while still `starting`, is not
  counted; otherwise the streak grows and at `retries` (<= 0 means 3) the status is `unhealthy`;
- only the first 4096 bytes of a probe's output are kept (`...` appended when cut), and the
  last 5 results.

Timing: the first probe runs one interval after the start; while `starting` inside the start
period the interval is `start_interval`, cut short so a probe lands at the end of the start
period; the next interval counts from when the previous probe finished.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Awaitable, Callable

import attrs
import trio

from ..config.model import Healthcheck

MAX_OUTPUT = 4096
MAX_LOG = 5
DEFAULT_RETRIES = 3


class HealthStatus(enum.Enum):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"

    def __str__(self) -> str:
        return self.value


def cap_output(data: bytes) -> str:
    text = data[:MAX_OUTPUT].decode("utf-8", "replace")
    return text + "..." if len(data) > MAX_OUTPUT else text


@attrs.frozen
class ProbeResult:
    start: float
    end: float
    exit_code: int  # -1: timed out or could not run
    output: str = ""


@attrs.define
class HealthMonitor:
    """One replica's health, reset at each start (`HealthMonitor(check, started_at=now)`)."""

    check: Healthcheck = attrs.field(converter=Healthcheck.with_defaults)  # unset timings: Docker's
    started_at: float
    status: HealthStatus = HealthStatus.STARTING
    failing_streak: int = 0
    log: deque = attrs.field(factory=lambda: deque(maxlen=MAX_LOG))

    @property
    def retries(self) -> int:
        return self.check.retries if self.check.retries > 0 else DEFAULT_RETRIES

    def in_start_period(self, t: float) -> bool:
        return t - self.started_at < self.check.start_period

    def next_delay(self, now: float) -> float:
        """Seconds from `now` (the end of the last probe, or the start) to the next probe."""
        if self.status is HealthStatus.STARTING and self.in_start_period(now):
            end = self.started_at + self.check.start_period
            return max(0.0, min(self.check.start_interval, end - now)) or self.check.start_interval
        return self.check.interval

    def record(self, result: ProbeResult) -> HealthStatus | None:
        """Take one probe result; the new status if it changed, else None."""
        self.log.append(result)
        old = self.status
        if result.exit_code == 0:
            self.failing_streak = 0
            self.status = HealthStatus.HEALTHY
        elif self.status is HealthStatus.STARTING and self.in_start_period(result.start):
            pass  # the start period forgives
        else:
            self.failing_streak += 1
            if self.failing_streak >= self.retries:
                self.status = HealthStatus.UNHEALTHY
        return self.status if self.status is not old else None

    @property
    def last_output(self) -> str:
        return self.log[-1].output if self.log else ""


Probe = Callable[[], Awaitable[tuple[int, bytes]]]  # runs the test once: (exit code, output)


async def run_probes(monitor: HealthMonitor, probe: Probe, on_change: Callable[[HealthStatus, HealthMonitor], None]) -> None:
    """Probe forever on the monitor's schedule; `on_change` is called on each status change.
    A probe past `timeout` is cancelled and recorded as exit -1; an exception from `probe`
    (it could not run) is recorded as exit -1 with its message."""
    while True:
        await trio.sleep(monitor.next_delay(trio.current_time()))
        start = trio.current_time()
        code, out = -1, b""
        with trio.move_on_after(monitor.check.timeout) as scope:
            try:
                code, out = await probe()
            except Exception as exc:  # noqa: BLE001 - a probe that cannot run is a failed probe
                code, out = -1, f"health check could not run: {exc}".encode()
        if scope.cancelled_caught:
            code, out = -1, f"Health check exceeded timeout ({monitor.check.timeout:g}s)".encode()
        new = monitor.record(ProbeResult(start, trio.current_time(), code, cap_output(out)))
        if new is not None:
            on_change(new, monitor)
