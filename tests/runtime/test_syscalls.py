"""supervisor.syscalls: errors that name the operation and path, the recording fake, the real calls."""

import errno
import os

import pytest

from supervisor import syscalls as S


def test_error_names_operation_path_and_errno():
    e = S.SyscallError(errno.EPERM, "mount", "/proc")
    assert str(e) == "mount /proc: EPERM (Operation not permitted)"
    assert isinstance(e, OSError) and e.errno == errno.EPERM and e.op == "mount" and e.path == "/proc"
    assert str(S.SyscallError(errno.EINVAL, "unshare")) == "unshare: EINVAL (Invalid argument)"


def test_real_call_raises_syscall_error():
    with pytest.raises(S.SyscallError) as info:
        S.umount2("/nonexistent-pysup-test-path")
    assert info.value.op == "umount" and info.value.path == "/nonexistent-pysup-test-path"
    assert info.value.errno in (errno.ENOENT, errno.EPERM, errno.EINVAL)


def test_recording_fake_records_and_injects_failures():
    sc = S.RecordingSyscalls(fail={("mount", "/b"): errno.EACCES})
    sc.mount("tmpfs", "/a", "tmpfs", S.MS_NOSUID, "size=1m")
    with pytest.raises(S.SyscallError) as info:
        sc.mount(None, "/b")
    assert str(info.value).startswith("mount /b: EACCES")
    sc.prctl(S.PR_SET_NO_NEW_PRIVS, 1)
    sc.capset(3, 3, 0)
    assert sc.calls[0] == ("mount", "tmpfs", "/a", "tmpfs", S.MS_NOSUID, "size=1m")
    assert sc.ops() == ["mount", "mount", "prctl", "capset"]
    assert sc.capget() == (3, 3, 0)


def test_describe_mount_flags():
    assert S.describe_mount_flags(S.MS_BIND | S.MS_REC | S.MS_RDONLY) == "ro,bind,rec"


def test_capget_reads_own_sets():
    eff, prm, inh = S.capget()
    with open("/proc/self/status") as f:
        status = dict(line.split(":\t") for line in f if ":\t" in line)
    assert eff == int(status["CapEff"], 16) and prm == int(status["CapPrm"], 16) and inh == int(status["CapInh"], 16)


def _in_child(fn) -> int:
    """Run fn in a forked child; its return value (0 = ok) becomes the exit status."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = fn()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_unshare_mount_sethostname_prctl_in_a_child(tmp_path):
    target = str(tmp_path)

    def child() -> int:
        S.unshare(S.CLONE_NEWNS | S.CLONE_NEWUTS)
        S.mount(None, "/", None, S.MS_REC | S.MS_SLAVE)
        S.mount("tmpfs", target, "tmpfs", S.MS_NOSUID, "size=1m")
        with open("/proc/self/mountinfo") as f:
            assert f" {target} " in f.read()
        S.sethostname("pysup-test-uts")
        assert os.uname().nodename == "pysup-test-uts"
        S.prctl(S.PR_SET_NO_NEW_PRIVS, 1)
        assert S.prctl(S.PR_GET_NO_NEW_PRIVS) == 1
        S.umount2(target, S.MNT_DETACH)
        return 0

    assert _in_child(child) == 0
    with open("/proc/self/mountinfo") as f:
        assert f" {target} " not in f.read()  # nothing leaked to the host's mount namespace
    assert os.uname().nodename != "pysup-test-uts"
