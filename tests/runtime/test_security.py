"""Capability math (Docker's rules), applying capabilities through the fake, seccomp resolution."""

import errno

import pytest

from supervisor import syscalls as S
from supervisor.runtime import security as sec

DOCKER_MASK = 0x00000000A80425FB
LAST = 40


def caps(*a, **kw):
    return sec.resolve_capabilities(*a, last_cap=LAST, **kw)


def test_docker_defaults():
    assert len(sec.DEFAULT_CAPABILITIES) == 14
    assert sec.capability_mask(caps()) == DOCKER_MASK
    assert set(sec.capabilities_of_mask(DOCKER_MASK)) == set(sec.DEFAULT_CAPABILITIES)


@pytest.mark.parametrize(("add", "drop", "expected"), [
    (["NET_ADMIN"], [], set(sec.DEFAULT_CAPABILITIES) | {"CAP_NET_ADMIN"}),
    (["cap_sys_ptrace"], ["MKNOD", "CAP_NET_RAW"],
     set(sec.DEFAULT_CAPABILITIES) - {"CAP_MKNOD", "CAP_NET_RAW"} | {"CAP_SYS_PTRACE"}),
    ([], ["ALL"], set()),
    (["NET_BIND_SERVICE"], ["all"], {"CAP_NET_BIND_SERVICE"}),
    (["ALL"], ["SYS_ADMIN"], set(sec.CAPABILITIES) - {"CAP_SYS_ADMIN"}),
])
def test_cap_add_and_drop(add, drop, expected):
    assert set(caps(add, drop)) == expected


def test_privileged_is_every_known_capability():
    assert caps(privileged=True) == sec.CAPABILITIES
    assert sec.resolve_capabilities(privileged=True, last_cap=37) == sec.CAPABILITIES[:38]


def test_unknown_capability():
    with pytest.raises(sec.CapabilityError, match="unknown capability: 'NET_WIZARD'"):
        caps(["NET_WIZARD"])


def test_result_is_sorted_by_number():
    got = caps(["SYS_ADMIN"], [])
    assert list(got) == sorted(got, key=sec.CAP_NUMBERS.__getitem__)


def test_apply_capabilities_order():
    sc = S.RecordingSyscalls()
    ids = []
    sec.apply_capabilities(sc, sec.DEFAULT_CAPABILITIES, uid=1000, gid=1000, groups=[1000, 50],
                           setids=lambda *a: ids.append((a, len(sc.calls))), last_cap=LAST)
    drops = [c[2] for c in sc.calls if c[:2] == ("prctl", S.PR_CAPBSET_DROP)]
    assert set(drops) == set(range(LAST + 1)) - {sec.CAP_NUMBERS[c] for c in sec.DEFAULT_CAPABILITIES}
    ops = [(c[0], c[1]) if c[0] == "prctl" else (c[0],) for c in sc.calls]
    last_drop = max(i for i, o in enumerate(ops) if o == ("prctl", S.PR_CAPBSET_DROP))
    assert ops[last_drop + 1] == ("prctl", S.PR_SET_KEEPCAPS)
    assert ids == [((1000, 1000, [1000, 50]), last_drop + 2)]  # user set after KEEPCAPS, before capset
    assert sc.calls[last_drop + 2] == ("capset", DOCKER_MASK, DOCKER_MASK, 0)
    assert sc.calls[last_drop + 3] == ("prctl", S.PR_SET_KEEPCAPS, 0, 0, 0, 0)
    assert sc.calls[last_drop + 4] == ("prctl", S.PR_CAP_AMBIENT, S.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)


def test_bounding_drop_of_unknown_capability_is_ignored():
    sc = S.RecordingSyscalls(fail={"prctl": errno.EINVAL})
    with pytest.raises(S.SyscallError):  # PR_SET_KEEPCAPS failing is real
        sec.apply_capabilities(sc, (), setids=lambda *a: None, last_cap=LAST)
    assert sum(1 for c in sc.calls if c[1] == S.PR_CAPBSET_DROP) == LAST + 1


# --- seccomp -------------------------------------------------------------------------------------


def resolve(capset=None, arch="amd64", kernel=(6, 1)):
    return sec.resolve_seccomp(sec.default_profile(), capset if capset is not None else caps(), arch, kernel)


def rules_for(plan, name):
    return [r for r in plan.rules if name in r.names]


def test_default_profile_for_default_caps_on_amd64():
    p = resolve()
    assert p.default_action == "SCMP_ACT_ERRNO" and p.default_errno == 1
    assert p.arches == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
    for name in ("read", "execve", "ptrace", "arch_prctl", "capset"):
        assert p.allowed(name), name
    for name in ("mount", "umount2", "unshare", "setns", "pivot_root", "keyctl", "bpf", "init_module",
                 "open_by_handle_at", "reboot", "userfaultfd", "kexec_load", "io_uring_setup"):
        assert not p.allowed(name), name
    clone = rules_for(p, "clone")
    assert [r.args for r in clone] == [(sec.SeccompArg(0, "SCMP_CMP_MASKED_EQ", 2114060288, 0),)]
    (clone3,) = rules_for(p, "clone3")
    assert clone3.action == "SCMP_ACT_ERRNO" and clone3.errno_ret == errno.ENOSYS
    assert p.allowed("chroot")  # CAP_SYS_CHROOT is a default
    assert not rules_for(p, "riscv_flush_icache") and not rules_for(p, "arm_fadvise64_64")


def test_sys_admin_opens_the_namespace_calls():
    p = resolve(caps(["SYS_ADMIN"]))
    assert p.allowed("mount") and p.allowed("unshare") and p.allowed("clone") and p.allowed("clone3")
    assert not any(r.args for r in rules_for(p, "clone"))  # the masked clone rule is excluded
    assert not any(r.action == "SCMP_ACT_ERRNO" for r in rules_for(p, "clone3"))


def test_capability_gated_groups():
    assert resolve(caps(["SYS_PTRACE"])).allowed("process_vm_writev")
    assert resolve(caps(["SYS_MODULE"])).allowed("finit_module")
    assert not resolve(caps([], ["SYS_CHROOT"])).allowed("chroot")
    assert resolve(caps(["DAC_READ_SEARCH"])).allowed("open_by_handle_at")


def test_arch_and_kernel_conditions():
    arm = resolve(arch="arm64")
    assert arm.arches == ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")
    assert arm.allowed("arm_fadvise64_64") and not arm.allowed("arch_prctl")
    old = resolve(kernel=(4, 4))
    assert not old.allowed("ptrace")  # minKernel 4.8


def test_kernel_version_parsing():
    assert sec.kernel_version("6.18.44-fc-v657") == (6, 18)
    assert sec.kernel_version("4.8.0") == (4, 8)


def test_vendored_profile_is_moby_cd3bed80():
    import hashlib
    from importlib import resources

    data = resources.files("supervisor.runtime").joinpath("seccomp-default.json").read_bytes()
    assert hashlib.sha256(data).hexdigest().startswith("536529b6")


def test_build_filter_from_the_plan():
    pytest.importorskip("pyseccomp")
    flt = sec.build_filter(resolve(caps()))
    assert flt is not None
