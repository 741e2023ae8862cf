"""The kernel calls Python 3.11 lacks, over ctypes, behind a small `Syscalls` Protocol.

Python 3.11 has no `os.unshare`, `os.setns`, `mount`, `pivot_root`, `prctl` or `capset`; this
module wraps them from libc (or the raw syscall where glibc has no wrapper). Every failure raises
`SyscallError`, an `OSError` that names the operation and the path, so a failed container start can
say `mount /proc: EPERM (Operation not permitted)`.

Code that builds kernel state (the rootfs plan, capabilities) takes a `Syscalls` object instead of
calling this module directly: `LinuxSyscalls` is the real one, `RecordingSyscalls` records the calls
for unit tests of plans (youki's `TestHelperSyscall`).

This module imports only the standard library: the zygote imports it before it forks.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as _errno
import os
import socket
import stat as _stat
from collections.abc import Callable, Iterator

TYPE_CHECKING = False  # typing stays unimported: the zygote imports this module (~0.4 MB of its memory)
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object  # `Syscalls` below is a Protocol for the type checker only

# --- flags -------------------------------------------------------------------------------------

# unshare(2) / setns(2) / clone(2)
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

# umount2(2)
MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

# prctl(2)
PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_GET_KEEPCAPS = 7
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

CLONE_PARENT = 0x00008000
CLONE_INTO_CGROUP = 0x200000000  # clone3 only

# capget/capset
LINUX_CAPABILITY_VERSION_3 = 0x20080522

# pivot_root has no glibc wrapper: syscall numbers per machine.
_PIVOT_ROOT_NR = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217, "i686": 217, "armv7l": 218}
_CLONE_NR = {"x86_64": 56, "aarch64": 220, "riscv64": 220, "ppc64le": 120}  # (flags, newsp, ...) order
_CLOSE_RANGE_NR = 436  # the same on every architecture (asm-generic numbering since 5.x)
_OPEN_TREE_NR = 428  # open_tree, move_mount, mount_setattr: the same on every architecture
_MOVE_MOUNT_NR = 429
_MOUNT_SETATTR_NR = 442  # Linux 5.12
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_IDMAP = 0x100000
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = 0o2000000  # O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4

NAMESPACE_FLAGS = {
    "mnt": CLONE_NEWNS,
    "cgroup": CLONE_NEWCGROUP,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "net": CLONE_NEWNET,
}

MOUNT_FLAG_NAMES = {
    "ro": MS_RDONLY,
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "sync": MS_SYNCHRONOUS,
    "dirsync": MS_DIRSYNC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
    "bind": MS_BIND,
    "rbind": MS_BIND | MS_REC,
    "remount": MS_REMOUNT,
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}


def describe_mount_flags(flags: int) -> str:
    """`MS_BIND|MS_REC|MS_RDONLY` -> "bind,rec,ro" (for logs, plan dumps and test failures)."""
    names = []
    for name, bit in (
        ("ro", MS_RDONLY), ("nosuid", MS_NOSUID), ("nodev", MS_NODEV), ("noexec", MS_NOEXEC),
        ("remount", MS_REMOUNT), ("bind", MS_BIND), ("move", MS_MOVE), ("rec", MS_REC),
        ("unbindable", MS_UNBINDABLE), ("private", MS_PRIVATE), ("slave", MS_SLAVE), ("shared", MS_SHARED),
        ("relatime", MS_RELATIME), ("strictatime", MS_STRICTATIME), ("noatime", MS_NOATIME),
    ):
        if flags & bit:
            names.append(name)
    return ",".join(names)


# --- errors ------------------------------------------------------------------------------------


class SyscallError(OSError):
    """A failed kernel call: `errno`, the operation (`mount`, `pivot_root`, ...) and the path.

    `str()` is the one line a person reads: `mount /proc: EPERM (Operation not permitted)`.
    """

    def __init__(self, err: int, op: str, path: str | None = None):
        super().__init__(err, os.strerror(err), path)
        self.op = op
        self.path = path

    @property
    def errno_name(self) -> str:
        return _errno.errorcode.get(self.errno or 0, str(self.errno))

    def __str__(self) -> str:
        where = f"{self.op} {self.path}" if self.path else self.op
        return f"{where}: {self.errno_name} ({self.strerror})"

    def __reduce__(self):  # keep op/path across pickling (tests, multiprocessing)
        return (type(self), (self.errno, self.op, self.path))


def _fsdecode(p: str | bytes | os.PathLike | None) -> bytes | None:
    return None if p is None else os.fsencode(p)


# --- libc --------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_libc.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_libc.setdomainname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_libc.syscall.restype = ctypes.c_long


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_libc.capget.argtypes = (ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData))
_libc.capset.argtypes = (ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData))


def _check(ret: int, op: str, path: str | bytes | os.PathLike | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise SyscallError(err, op, None if path is None else os.fsdecode(path))
    return ret


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0, data: str | None = None) -> None:
    d = _fsdecode(data)
    _check(_libc.mount(_fsdecode(source), _fsdecode(target), _fsdecode(fstype), flags, d), "mount", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_fsdecode(target), flags), "umount", target)


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _PIVOT_ROOT_NR.get(os.uname().machine)
    if nr is None:
        raise SyscallError(_errno.ENOSYS, "pivot_root", new_root)
    _check(_libc.syscall(nr, _fsdecode(new_root), _fsdecode(put_old)), "pivot_root", new_root)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path: str, attr_set: int, attr_clr: int = 0, *, recursive: bool = True) -> None:
    """mount_setattr(2): change mount attributes (MOUNT_ATTR_RDONLY, ...) of the mount at `path`
    and, with `recursive`, of every mount below it, in one call (Linux 5.12)."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    _check(_libc.syscall(_MOUNT_SETATTR_NR, ctypes.c_long(-100), _fsdecode(path), AT_RECURSIVE if recursive else 0,
                         ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))), "mount_setattr", path)


def open_tree(path: str, flags: int = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC) -> int:
    """open_tree(2): with OPEN_TREE_CLONE, a detached copy of the mount at `path` (a bind mount not
    attached anywhere yet), as an fd for `idmap_tree` and `move_mount`."""
    return _check(_libc.syscall(_OPEN_TREE_NR, ctypes.c_long(-100), _fsdecode(path), ctypes.c_uint(flags)),
                  "open_tree", path)


def idmap_tree(tree_fd: int, userns_fd: int, *, recursive: bool = False) -> None:
    """Make the detached mount `tree_fd` an idmapped mount through the user namespace `userns_fd`:
    an id x on disk is shown as the namespace's x (Linux 5.12; overlayfs lower layers: 5.19).
    `recursive`: every mount of a tree cloned with AT_RECURSIVE (all must allow it, or EINVAL).
    EINVAL also when the filesystem does not support idmapped mounts."""
    attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _check(_libc.syscall(_MOUNT_SETATTR_NR, ctypes.c_long(tree_fd), b"", ctypes.c_uint(flags),
                         ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))), "mount_setattr idmap")


def move_mount(tree_fd: int, target: str) -> None:
    """move_mount(2): attach the detached mount `tree_fd` at `target` (in the caller's mount namespace)."""
    _check(_libc.syscall(_MOVE_MOUNT_NR, ctypes.c_long(tree_fd), b"", ctypes.c_long(-100), _fsdecode(target),
                         ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)), "move_mount", target)


def sethostname(name: str) -> None:
    try:
        socket.sethostname(name)
    except OSError as e:
        raise SyscallError(e.errno or _errno.EINVAL, "sethostname", name) from None


def setdomainname(name: str) -> None:
    b = name.encode()
    _check(_libc.setdomainname(b, len(b)), "setdomainname", name)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


# The interpreter's own symbols (and libc's, through the global namespace), called with the GIL held.
_pyapi = ctypes.PyDLL(None, use_errno=True)
_pyapi.syscall.restype = ctypes.c_long
_pyapi.syscall.argtypes = (ctypes.c_long, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulong)


def clone_fork(flags: int) -> int:
    """fork(2) with clone flags: new namespaces at once, and CLONE_PARENT so the child is our
    parent's child. Returns 0 in the child, its pid in the parent, like `os.fork`, and keeps the
    interpreter consistent the same way (PyOS_BeforeFork / PyOS_AfterFork_*).

    A raw clone skips glibc's fork handlers: call it from a single-threaded process only (the
    zygote), and the child must not rely on glibc's cached thread id (raise(3), pthread_kill)."""
    nr = _CLONE_NR.get(os.uname().machine)
    if nr is None:
        raise SyscallError(_errno.ENOSYS, "clone")
    return _forking_syscall("clone", nr, flags | 17, None, None, None, 0)  # 17: SIGCHLD to the parent on exit


_CLONE3_NR = 435  # the same on every architecture (the generic syscall table)


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls",
        "set_tid", "set_tid_size", "cgroup")]


def clone_into_cgroup(flags: int, cgroup_fd: int) -> int:
    """`clone_fork` with the child born in the cgroup v2 directory `cgroup_fd` (clone3
    CLONE_INTO_CGROUP, Linux 5.7): no migration afterwards, so none of the cgroup_threadgroup_rwsem
    write lock (an RCU grace period, ~10 ms) that writing cgroup.procs costs. Raises SyscallError
    (ENOSYS, E2BIG, EINVAL on kernels without it: the caller falls back)."""
    # clone3 refuses an exit signal with CLONE_PARENT: the child then takes its parent's (SIGCHLD)
    args = _CloneArgs(flags=flags | CLONE_INTO_CGROUP, exit_signal=0 if flags & CLONE_PARENT else 17,
                      cgroup=cgroup_fd)
    return _forking_syscall("clone3", _CLONE3_NR, ctypes.addressof(args), ctypes.c_void_p(ctypes.sizeof(args)),
                            None, None, 0)


def _forking_syscall(name: str, *args: object) -> int:
    """A clone-like syscall wrapped as os.fork wraps fork(): the interpreter's before/after-fork
    hooks run on each side. 0 in the child, the pid in the parent; SyscallError on failure."""
    _pyapi.PyOS_BeforeFork()
    pid = _pyapi.syscall(*args)
    if pid == 0:
        _pyapi.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    _pyapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise SyscallError(err, name)
    return pid


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) as 64-bit masks."""
    hdr = _CapHeader(LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(hdr), data), "capget")
    return tuple(data[0].__getattribute__(f) | (data[1].__getattribute__(f) << 32)
                 for f in ("effective", "permitted", "inheritable"))  # type: ignore[return-value]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(hdr), data), "capset")


def close_range(first: int, last: int = 0xFFFFFFFF) -> None:
    """Close every fd in [first, last]; falls back to os.closerange on kernels without the call."""
    if _libc.syscall(_CLOSE_RANGE_NR, ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(0)) < 0:
        os.closerange(first, min(last, os.sysconf("SC_OPEN_MAX")) + 1)


def cap_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


# --- the Protocol ------------------------------------------------------------------------------


class Syscalls(Protocol):
    """What a container set-up plan may ask of the kernel. Paths are host paths (before pivot_root)
    or container paths (after). Every method raises `SyscallError` on failure."""

    def unshare(self, flags: int) -> None: ...
    def setns(self, fd: int, nstype: int = 0) -> None: ...
    def mount(self, source: str | None, target: str, fstype: str | None = None, flags: int = 0,
              data: str | None = None) -> None: ...
    def umount2(self, target: str, flags: int = 0) -> None: ...
    def mount_setattr(self, path: str, attr_set: int, attr_clr: int = 0, *, recursive: bool = True) -> None: ...
    def pivot_root(self, new_root: str, put_old: str) -> None: ...
    def sethostname(self, name: str) -> None: ...
    def setdomainname(self, name: str) -> None: ...
    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int: ...
    def capget(self) -> tuple[int, int, int]: ...
    def capset(self, effective: int, permitted: int, inheritable: int) -> None: ...
    # filesystem steps of a plan
    def mkdir(self, path: str, mode: int = 0o755) -> None: ...
    def touch(self, path: str, mode: int = 0o644) -> None: ...
    def mknod(self, path: str, mode: int, device: int) -> None: ...
    def symlink(self, target: str, path: str) -> None: ...
    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None: ...
    def chdir(self, path: str) -> None: ...
    def locked_flags(self, path: str) -> int: ...
    def pinned(self, path: str, root: str) -> contextlib.AbstractContextManager[str]: ...


def _os_call(op: str, path: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except OSError as e:
        raise SyscallError(e.errno or _errno.EIO, op, path) from None


_realpaths: dict[str, str] = {}


def _realpath(path: str) -> str:
    # The roots pinned against are the rootfs (fixed for a container's set-up) and "/": memoised.
    got = _realpaths.get(path)
    if got is None:
        got = _realpaths[path] = os.path.realpath(path)
    return got


class LinuxSyscalls:
    """The real kernel."""

    unshare = staticmethod(unshare)
    setns = staticmethod(setns)
    mount = staticmethod(mount)
    umount2 = staticmethod(umount2)
    mount_setattr = staticmethod(mount_setattr)
    pivot_root = staticmethod(pivot_root)
    sethostname = staticmethod(sethostname)
    setdomainname = staticmethod(setdomainname)
    prctl = staticmethod(prctl)
    capset = staticmethod(capset)

    def capget(self) -> tuple[int, int, int]:
        return capget(0)

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        def f() -> None:
            try:
                os.mkdir(path, mode)
            except FileExistsError:
                if not os.path.isdir(path) or os.path.islink(path):
                    raise
        _os_call("mkdir", path, f)

    def touch(self, path: str, mode: int = 0o644) -> None:
        _os_call("create", path, lambda: os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)))

    def mknod(self, path: str, mode: int, device: int) -> None:
        _os_call("mknod", path, lambda: os.mknod(path, mode, device))

    def symlink(self, target: str, path: str) -> None:
        _os_call("symlink", path, lambda: os.symlink(target, path))

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        def f() -> None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        _os_call("write", path, f)

    def chdir(self, path: str) -> None:
        _os_call("chdir", path, lambda: os.chdir(path))

    def locked_flags(self, path: str) -> int:
        """The per-mount flags of the mount at `path` that a bind remount must repeat: in a user
        namespace the kernel locks nosuid/nodev/noexec and the atime flags of inherited mounts,
        and a remount that leaves them out fails with EPERM (runc does the same)."""
        try:
            f = os.statvfs(path).f_flag
        except OSError:
            return 0
        out = f & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)  # same bits as ST_*
        if f & 4096:  # ST_RELATIME
            out |= MS_RELATIME
        return out

    @contextlib.contextmanager
    def pinned(self, path: str, root: str) -> Iterator[str]:
        """Open `path` with O_PATH|O_NOFOLLOW, check that the kernel's view of it is still inside
        `root` and not a symlink, and yield `/proc/self/fd/N` to mount onto: a path string the
        container could swap between resolution and mount is never used (CVE-2021-30465)."""
        try:
            fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise SyscallError(e.errno or _errno.EIO, "open", path) from None
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
            root_real = _realpath(root)
            if _stat.S_ISLNK(os.fstat(fd).st_mode) or not (real == root_real or real.startswith(root_real.rstrip("/") + "/")):
                raise SyscallError(_errno.EXDEV, "resolve (escapes the root)", path)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)


# --- the recording fake ------------------------------------------------------------------------


class RecordingSyscalls:
    """Records every call as a tuple (`("mount", source, target, fstype, flags, data)`) in `calls`.

    `fail` maps an operation name, or `(operation, path)`, to an errno to raise there: the way unit
    tests check that a plan reports the failing stage and undoes what it did. Filesystem steps are
    recorded, not performed; `pinned` yields the path itself.
    """

    def __init__(self, fail: dict[object, int] | None = None, caps: tuple[int, int, int] = (0, 0, 0)):
        self.calls: list[tuple] = []
        self.fail = dict(fail or {})
        self._caps = caps

    def _record(self, op: str, *args: object, path: str | None = None) -> None:
        self.calls.append((op, *args))
        err = self.fail.get((op, path)) if path is not None else None
        if err is None:
            err = self.fail.get(op)
        if err is not None:
            raise SyscallError(err, op, path)

    def ops(self) -> list[str]:
        return [c[0] for c in self.calls]

    def unshare(self, flags: int) -> None:
        self._record("unshare", flags)

    def setns(self, fd: int, nstype: int = 0) -> None:
        self._record("setns", fd, nstype)

    def mount(self, source, target, fstype=None, flags=0, data=None) -> None:
        self._record("mount", source, target, fstype, flags, data, path=target)

    def umount2(self, target, flags=0) -> None:
        self._record("umount2", target, flags, path=target)

    def mount_setattr(self, path, attr_set, attr_clr=0, *, recursive=True) -> None:
        self._record("mount_setattr", path, attr_set, attr_clr, recursive, path=path)

    def pivot_root(self, new_root, put_old) -> None:
        self._record("pivot_root", new_root, put_old, path=new_root)

    def sethostname(self, name) -> None:
        self._record("sethostname", name)

    def setdomainname(self, name) -> None:
        self._record("setdomainname", name)

    def prctl(self, option, arg2=0, arg3=0, arg4=0, arg5=0) -> int:
        self._record("prctl", option, arg2, arg3, arg4, arg5)
        return 0

    def capget(self) -> tuple[int, int, int]:
        return self._caps

    def capset(self, effective, permitted, inheritable) -> None:
        self._record("capset", effective, permitted, inheritable)
        self._caps = (effective, permitted, inheritable)

    def mkdir(self, path, mode=0o755) -> None:
        self._record("mkdir", path, mode, path=path)

    def touch(self, path, mode=0o644) -> None:
        self._record("touch", path, mode, path=path)

    def mknod(self, path, mode, device) -> None:
        self._record("mknod", path, mode, device, path=path)

    def symlink(self, target, path) -> None:
        self._record("symlink", target, path, path=path)

    def write_file(self, path, data, mode=0o644) -> None:
        self._record("write_file", path, data, mode, path=path)

    def chdir(self, path) -> None:
        self._record("chdir", path, path=path)

    def locked_flags(self, path) -> int:
        return 0

    @contextlib.contextmanager
    def pinned(self, path: str, root: str) -> Iterator[str]:
        yield path
