"""Capabilities, no_new_privs and seccomp for a container process.

Pure parts (unit-tested without root):
- `resolve_capabilities(cap_add, cap_drop, privileged)`: Docker's rules (moby `oci/caps`
  TweakCapabilities): start from the 14 defaults, `ALL` in cap_add means every capability but the
  dropped ones, `ALL` in cap_drop means only the added ones; the `CAP_` prefix is optional.
- `resolve_seccomp(profile, caps, arch, kernel)`: moby's profile resolution (`includes`/`excludes`
  by capability, architecture, minimum kernel), giving a `SeccompPlan` (data).

Kernel parts (run in the container's PID 1, just before execve):
- `apply_capabilities(sc, caps, uid, gid, groups)`: drop the bounding set (PR_CAPBSET_DROP), keep
  caps across setuid (PR_SET_KEEPCAPS), set groups/gid/uid, capset effective = permitted = caps,
  inheritable and ambient empty.
- `set_no_new_privs(sc)` and `load_seccomp(plan, no_new_privs)`.

Seccomp goes through pyseccomp (PyPI; ctypes over Debian's libseccomp.so.2, API of libseccomp's own
binding): it installs into the venv with pip, where Debian's python3-seccomp (compiled for the
system interpreter, under /usr/lib/python3/dist-packages) would need --system-site-packages.
"""

from __future__ import annotations

import errno
import functools
import json
import os
from collections.abc import Callable, Iterable

from .record import record

from .. import syscalls as S
from ..syscalls import Syscalls

TYPE_CHECKING = False  # typing stays unimported: the zygote imports this module (~0.4 MB of its memory)
if TYPE_CHECKING:
    from typing import Any

# Index = capability number (linux/capability.h, kernel 5.9+).
CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
CAP_NUMBERS: dict[str, int] = {name: i for i, name in enumerate(CAPABILITIES)}

# Docker's defaults (moby oci/caps/defaults.go): mask 0x00000000a80425fb.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)


class CapabilityError(ValueError):
    pass


def all_capabilities(last_cap: int | None = None) -> tuple[str, ...]:
    """Every capability the running kernel knows (`/proc/sys/kernel/cap_last_cap`)."""
    last = S.cap_last_cap() if last_cap is None else last_cap
    return CAPABILITIES[: last + 1]


def normalize_capability(name: str) -> str:
    """"net_admin", "NET_ADMIN", "CAP_NET_ADMIN" -> "CAP_NET_ADMIN"; "all" -> "ALL"."""
    n = name.strip().upper()
    if n == "ALL":
        return "ALL"
    if not n.startswith("CAP_"):
        n = "CAP_" + n
    if n not in CAP_NUMBERS:
        raise CapabilityError(f"unknown capability: {name!r}")
    return n


def resolve_capabilities(cap_add: Iterable[str] = (), cap_drop: Iterable[str] = (), privileged: bool = False,
                         *, last_cap: int | None = None) -> tuple[str, ...]:
    """The container's capability set, in capability-number order (moby TweakCapabilities)."""
    every = all_capabilities(last_cap)
    adds = [normalize_capability(c) for c in cap_add]
    drops = [normalize_capability(c) for c in cap_drop]
    if privileged:
        return every
    if "ALL" in adds:
        caps = {c for c in every if c not in drops}
    elif "ALL" in drops:
        caps = {c for c in adds if c != "ALL"}
    else:
        caps = {c for c in DEFAULT_CAPABILITIES if c not in drops} | set(adds)
    return tuple(sorted(caps, key=CAP_NUMBERS.__getitem__))


def capability_mask(caps: Iterable[str]) -> int:
    mask = 0
    for c in caps:
        mask |= 1 << CAP_NUMBERS[c]
    return mask


def capabilities_of_mask(mask: int) -> tuple[str, ...]:
    return tuple(name for i, name in enumerate(CAPABILITIES) if mask >> i & 1)


def apply_capabilities(sc: Syscalls, caps: Iterable[str], *, uid: int = 0, gid: int = 0,
                       groups: Iterable[int] = (), setids: Callable[[int, int, list[int]], None] | None = None,
                       last_cap: int | None = None) -> None:
    """Bounding set, then user, then effective = permitted = caps; inheritable and ambient empty.

    Order matters: dropping from the bounding set needs CAP_SETPCAP (still held), and without
    PR_SET_KEEPCAPS a setuid away from 0 would clear the permitted set before capset."""
    keep = capability_mask(caps)
    last = S.cap_last_cap() if last_cap is None else last_cap
    for n in range(last + 1):
        if not keep >> n & 1:
            try:
                sc.prctl(S.PR_CAPBSET_DROP, n)
            except OSError as e:
                if e.errno != errno.EINVAL:  # EINVAL: the kernel does not know this capability
                    raise
    sc.prctl(S.PR_SET_KEEPCAPS, 1)
    (setids or _setids)(uid, gid, list(groups))
    sc.capset(keep, keep, 0)
    sc.prctl(S.PR_SET_KEEPCAPS, 0)
    try:
        sc.prctl(S.PR_CAP_AMBIENT, S.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise


def _setids(uid: int, gid: int, groups: list[int]) -> None:
    try:
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as e:
        raise S.SyscallError(e.errno or errno.EPERM, "setuid/setgid", f"{uid}:{gid}") from None


def set_no_new_privs(sc: Syscalls) -> None:
    sc.prctl(S.PR_SET_NO_NEW_PRIVS, 1)


# --- seccomp -----------------------------------------------------------------------------------

# platform.machine() -> Go's GOARCH (the names moby's profile uses in includes/excludes.arches)
# and the libseccomp architecture of the native ABI.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "i386": "386", "armv7l": "arm",
           "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "mips64": "mips64"}
_SCMP_ARCH = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64", "386": "SCMP_ARCH_X86",
              "arm": "SCMP_ARCH_ARM", "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X",
              "riscv64": "SCMP_ARCH_RISCV64"}


def native_arch() -> str:
    """The GOARCH-style name of this machine ("amd64")."""
    return _GOARCH.get(os.uname().machine, os.uname().machine)


def kernel_version(release: str | None = None) -> tuple[int, int]:
    rel = release or os.uname().release
    nums = []
    for part in rel.split("-")[0].split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        nums.append(int(digits or 0))
    return (nums + [0, 0])[0], (nums + [0, 0])[1]


@record
class SeccompArg:
    index: int
    op: str  # SCMP_CMP_EQ, ...
    value: int
    value_two: int = 0


@record
class SeccompRule:
    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[SeccompArg, ...] = ()


@record
class SeccompPlan:
    default_action: str
    default_errno: int | None
    arches: tuple[str, ...]  # SCMP_ARCH_* names, native first
    rules: tuple[SeccompRule, ...]

    def allowed(self, name: str) -> bool:
        """True when some rule allows `name` unconditionally (for tests and `pysup inspect`)."""
        return any(name in r.names and r.action == "SCMP_ACT_ALLOW" and not r.args for r in self.rules)


DEFAULT_PROFILE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp-default.json")


@functools.cache
def default_profile() -> dict[str, Any]:
    """Docker's default profile, vendored (supervisor/runtime/seccomp-default.json, Apache-2.0)."""
    with open(DEFAULT_PROFILE_PATH, "rb") as f:
        return json.load(f)


def _parse_kernel(v: str) -> tuple[int, int]:
    return kernel_version(v)


def resolve_seccomp(profile: dict[str, Any], caps: Iterable[str], arch: str | None = None,
                    kernel: tuple[int, int] | None = None) -> SeccompPlan:
    """Resolve a moby/OCI profile for a container's capabilities, architecture and kernel, as
    moby's `setupSeccomp` does."""
    arch = arch or native_arch()
    kernel = kernel or kernel_version()
    capset = set(caps)
    native = _SCMP_ARCH.get(arch)
    arches: list[str] = []
    for entry in profile.get("archMap") or ():
        if entry["architecture"] == native:
            arches = [entry["architecture"], *entry.get("subArchitectures", ())]
    if not arches:
        arches = list(profile.get("architectures") or ([native] if native else []))
    rules: list[SeccompRule] = []
    for call in profile.get("syscalls") or ():
        names = tuple(call.get("names") or ([call["name"]] if call.get("name") else ()))
        inc = call.get("includes") or {}
        exc = call.get("excludes") or {}
        if exc.get("arches") and arch in exc["arches"]:
            continue
        if inc.get("arches") and arch not in inc["arches"]:
            continue
        if exc.get("caps") and any(c in capset for c in exc["caps"]):
            continue
        if inc.get("caps") and not all(c in capset for c in inc["caps"]):
            continue
        if exc.get("minKernel") and kernel >= _parse_kernel(exc["minKernel"]):
            continue
        if inc.get("minKernel") and kernel < _parse_kernel(inc["minKernel"]):
            continue
        args = tuple(SeccompArg(a["index"], a["op"], a.get("value", 0), a.get("valueTwo", 0))
                     for a in call.get("args") or ())
        rules.append(SeccompRule(names, call["action"], call.get("errnoRet"), args))
    return SeccompPlan(profile.get("defaultAction", "SCMP_ACT_ERRNO"), profile.get("defaultErrnoRet"),
                       tuple(arches), tuple(rules))


_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
        "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}


_SCMP_FLTATR_CTL_OPTIMIZE = 8


class SeccompError(Exception):
    pass


def _action(seccomp: Any, name: str, errno_ret: int | None, default_errno: int | None) -> int:
    if name == "SCMP_ACT_ALLOW":
        return seccomp.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return seccomp.ERRNO(errno_ret if errno_ret is not None else (default_errno or errno.EPERM))
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return seccomp.KILL_THREAD
    if name == "SCMP_ACT_KILL_PROCESS":
        return seccomp.KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return seccomp.TRAP
    if name == "SCMP_ACT_LOG":
        return seccomp.LOG
    if name == "SCMP_ACT_TRACE":
        return seccomp.TRACE(errno_ret or 0)
    raise SeccompError(f"unsupported seccomp action {name}")


def build_filter(plan: SeccompPlan, *, no_new_privs: bool = True) -> Any:
    """A libseccomp filter (pyseccomp.SyscallFilter) for the plan, not yet loaded. Syscalls this
    libseccomp does not know are skipped, as runc does."""
    try:
        import pyseccomp as seccomp
    except ImportError as e:  # fail closed: never start a container without its filter
        raise SeccompError("seccomp: pyseccomp is not installed (pip install pyseccomp)") from e
    default = _action(seccomp, plan.default_action, None, plan.default_errno)
    flt = seccomp.SyscallFilter(default)
    flt.set_attr(seccomp.Attr.CTL_NNP, 1 if no_new_privs else 0)
    try:  # a binary tree of syscalls (libseccomp >= 2.5): the same rules, found in O(log n) per syscall;
        flt.set_attr(_SCMP_FLTATR_CTL_OPTIMIZE, 2)  # installs faster too (0.45 vs 0.8 ms here)
    except OSError:
        pass
    for arch in plan.arches:
        code = getattr(seccomp.Arch, arch.removeprefix("SCMP_ARCH_"), None)
        if code is None or flt.exist_arch(code):
            continue
        try:
            flt.add_arch(code)
        except OSError:
            pass  # not supported by this libseccomp
    for rule in plan.rules:
        action = _action(seccomp, rule.action, rule.errno_ret, plan.default_errno)
        if action == default:
            continue  # libseccomp refuses a rule equal to the default action
        args = [seccomp.Arg(a.index, _OPS[a.op], a.value, a.value_two) for a in rule.args]
        # Several conditions on the same argument are alternatives (runc): one rule each.
        same_index = len({a.index for a in rule.args}) < len(rule.args)
        for name in rule.names:
            nr = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
            if nr == -1:  # __NR_SCMP_ERROR: unknown to this libseccomp
                continue
            try:
                if same_index:
                    for a in args:
                        flt.add_rule(action, nr, a)
                else:
                    flt.add_rule(action, nr, *args)
            except OSError as e:
                raise SeccompError(f"seccomp rule {name}: {e}") from e
    return flt


def load_filter(flt: Any) -> None:
    """Load through libseccomp (compiles the BPF on every call: ~9 ms here; see `compile_bpf`)."""
    try:
        flt.load()
    except OSError as e:
        raise S.SyscallError(e.errno or errno.EINVAL, "seccomp load") from None


def compile_bpf(flt: Any) -> bytes:
    """The filter as a classic BPF program (`struct sock_filter[]`), compiled once by libseccomp.

    The zygote compiles each distinct filter once and each container only installs the bytes
    (`load_bpf`), as crun caches its filters: libseccomp's own seccomp_load recompiles every time."""
    fd = os.memfd_create("pysup-seccomp", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb", closefd=True) as f:
            flt.export_bpf(f)
        size = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, 0, os.SEEK_SET)
        data = b""
        while len(data) < size:
            chunk = os.read(fd, size - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if not data or len(data) % 8:
        raise SeccompError(f"seccomp: libseccomp exported {len(data)} bytes of BPF")
    return data


_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2


def load_bpf(program: bytes) -> None:
    """Install a compiled filter: prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &sock_fprog).

    Needs no_new_privs set before, or CAP_SYS_ADMIN."""
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(program, len(program))
    prog = SockFprog(len(program) // 8, ctypes.addressof(buf))
    S.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog))
