import pytest
import trio

from supervisor.config.model import Healthcheck
from supervisor.supervise.health import (HealthMonitor, HealthStatus as H, ProbeResult, cap_output,
                                         run_probes)


def mon(**kw):
    return HealthMonitor(Healthcheck(test=("CMD", "true"), **kw), started_at=0.0)


def test_success_makes_healthy_and_retries_make_unhealthy():
    m = mon(retries=2)
    assert m.record(ProbeResult(1, 1, 0)) is H.HEALTHY
    assert m.record(ProbeResult(2, 2, 1)) is None and m.failing_streak == 1
    assert m.record(ProbeResult(3, 3, 1)) is H.UNHEALTHY
    assert m.record(ProbeResult(4, 4, 0)) is H.HEALTHY and m.failing_streak == 0


def test_start_period_forgives_only_while_starting():
    m = mon(retries=1, start_period=10)
    assert m.record(ProbeResult(5, 5, 1)) is None and m.failing_streak == 0
    m.record(ProbeResult(6, 6, 0))
    assert m.record(ProbeResult(7, 7, 1)) is H.UNHEALTHY  # once healthy, failures count at once


def test_zero_retries_means_three():
    m = mon(retries=0)
    for t in range(2):
        m.record(ProbeResult(t, t, 1))
    assert m.status is H.STARTING
    assert m.record(ProbeResult(3, 3, 1)) is H.UNHEALTHY


def test_schedule_start_interval_then_interval():
    m = mon(interval=30, start_period=12, start_interval=5)
    assert m.next_delay(0) == 5
    assert m.next_delay(10) == 2  # lands on the end of the start period
    assert m.next_delay(12) == 30
    m.record(ProbeResult(1, 1, 0))
    assert m.next_delay(1) == 30  # healthy: the normal interval


def test_output_cap_and_last_five():
    assert cap_output(b"x" * 5000) == "x" * 4096 + "..."
    assert cap_output(b"ok") == "ok"
    m = mon()
    for i in range(7):
        m.record(ProbeResult(i, i, 0, str(i)))
    assert [r.output for r in m.log] == ["2", "3", "4", "5", "6"]


async def test_probe_loop_timing_and_timeout(autojump_clock):
    m = HealthMonitor(Healthcheck(test=("CMD", "x"), interval=10, timeout=2, retries=2), started_at=trio.current_time())
    calls, changes = [], []

    async def probe():
        calls.append(trio.current_time())
        if len(calls) == 1:
            return 0, b"fine"
        await trio.sleep(100)  # hangs: timed out
        return 0, b""

    with trio.move_on_after(35):
        await run_probes(m, probe, lambda s, _m: changes.append((s, trio.current_time())))
    assert calls == pytest.approx([10, 20, 32])
    assert changes == [(H.HEALTHY, pytest.approx(10)), (H.UNHEALTHY, pytest.approx(34))]
    assert "exceeded timeout" in m.last_output and m.log[-1].exit_code == -1
