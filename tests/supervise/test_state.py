import pytest

from supervisor.supervise.state import InvalidTransition, ReplicaState as S, ReplicaStatus, can_transition


def test_normal_life():
    st = ReplicaStatus("web", 1, "p-web-1")
    for new in (S.STARTING, S.RUNNING, S.HEALTHY, S.UNHEALTHY, S.EXITED, S.RESTARTING, S.STARTING, S.RUNNING,
                S.OOM_KILLED, S.RESTARTING, S.STOPPING, S.EXITED):
        st.to(new)
    assert st.state is S.EXITED


def test_invalid_transitions_raise():
    st = ReplicaStatus("web", 1, "p-web-1")
    with pytest.raises(InvalidTransition, match="created -> healthy"):
        st.to(S.HEALTHY)
    assert not can_transition(S.EXITED, S.RUNNING)
    assert not can_transition(S.STOPPING, S.RESTARTING)


def test_restarting_carries_next_retry_and_leaving_clears_it():
    st = ReplicaStatus("web", 1, "p-web-1", state=S.EXITED)
    st.to(S.RESTARTING, next_retry_at=12.5, restart_count=2, failures=2)
    assert st.next_retry_at == 12.5 and st.crash_looping
    st.to(S.STARTING)
    assert st.next_retry_at is None
