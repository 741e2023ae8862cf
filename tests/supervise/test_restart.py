import pytest

from supervisor.config.model import Backoff, RestartPolicy
from supervisor.supervise.restart import ExitReason, RestartTracker

CRASH = ExitReason("exit", code=1)
CLEAN = ExitReason("exit", code=0)


def tracker(condition="always", **kw):
    backoff = kw.pop("backoff", Backoff(base=0.1, cap=1.0, reset_after=10))
    return RestartTracker(RestartPolicy(condition=condition, **kw), backoff)


def test_no_never_restarts():
    d = tracker("no").decide(CRASH, ran_for=1, now=0)
    assert not d.restart and "no" in d.why


@pytest.mark.parametrize("cond", ["always", "unless-stopped"])
def test_always_restarts_even_clean_exits(cond):
    d = tracker(cond).decide(CLEAN, ran_for=1, now=0)
    assert d.restart and d.delay == pytest.approx(0.1) and d.attempt == 1


def test_on_failure_only_on_failure():
    t = tracker("on-failure")
    assert not t.decide(CLEAN, ran_for=1, now=0).restart
    assert t.decide(CRASH, ran_for=1, now=0).restart
    assert t.decide(ExitReason("signal", signal=9), ran_for=1, now=0).restart
    assert t.decide(ExitReason("oom", signal=9), ran_for=1, now=0).restart


def test_on_failure_max_attempts_counts_total_restarts():
    t = tracker("on-failure", max_attempts=3)
    got = [t.decide(CRASH, ran_for=0, now=i).restart for i in range(5)]
    assert got == [True, True, True, False, False]
    assert "gave up after 3 restarts" in t.decide(CRASH, ran_for=0, now=9).why


def test_window_counts_only_recent_restarts():
    t = tracker("on-failure", max_attempts=2, window=10.0)
    assert t.decide(CRASH, ran_for=0, now=0).restart
    assert t.decide(CRASH, ran_for=0, now=1).restart
    assert not t.decide(CRASH, ran_for=0, now=2).restart
    assert t.decide(CRASH, ran_for=0, now=10.5).restart  # the first fell out of the window


def test_backoff_doubles_to_cap_and_resets_after_a_long_run():
    t = tracker()
    delays = [t.decide(CRASH, ran_for=0.1, now=i).delay for i in range(6)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert t.decide(CRASH, ran_for=10.0, now=7).delay == pytest.approx(0.1)


def test_deploy_delay_replaces_base():
    t = tracker(delay=0.5, backoff=Backoff(base=0.1, cap=60, reset_after=10))
    assert [t.decide(CRASH, ran_for=0, now=i).delay for i in range(3)] == pytest.approx([0.5, 1.0, 2.0])


def test_stop_requested_never_restarts():
    assert not tracker().decide(CRASH, ran_for=0, now=0, stop_requested=True).restart


def test_unhealthy_is_a_failure_unless_disabled():
    unhealthy = ExitReason("unhealthy", signal=15, detail="probe failed")
    assert tracker("on-failure").decide(unhealthy, ran_for=0, now=0).restart
    t = tracker("always")
    t.restart_on_unhealthy = False
    assert not t.decide(unhealthy, ran_for=0, now=0).restart


def test_reasons_describe_themselves():
    assert CRASH.describe() == "exit code 1"
    assert ExitReason("signal", signal=9).describe() == "killed by SIGKILL"
    assert ExitReason("signal", signal=37).describe() == "killed by SIGRTMIN+3"  # glibc's SIGRTMIN: 34
    assert ExitReason("signal", signal=62).describe() == "killed by SIGRTMAX-2"
    assert ExitReason("signal", signal=32).describe() == "killed by signal 32"  # glibc's own: no name
    assert ExitReason("oom", signal=9).describe() == "OOM killed"
    assert ExitReason("oom", signal=9).exit_code == 137
    assert ExitReason("unhealthy", detail="x").describe() == "unhealthy: x"
    assert not CLEAN.failed and CRASH.failed
