"""The zygote: a small synchronous fork server that starts containers. Never imports trio.

Started once by the launcher as `python -m supervisor.runtime.zygote FD [PARENT_PID]` where FD
is its end of a SOCK_SEQPACKET socketpair (protocol: `protocol.py`, specs/runtime-protocol.md). It
imports and warms everything a container start needs (the compiled default seccomp filter, the
masked-path globs), freezes its objects for the garbage collector, then serves requests one at a
time. A `start` is one clone:

    zygote ──clone(NEWPID|NEWNS|NEWUTS|NEWIPC|NEWNET[|NEWUSER]|CLONE_PARENT)──► the container's PID 1
        early_init: PR_SET_DUMPABLE 0, setsid, signals reset, umask, lo up
        child_main: join the cgroups (cgroup.procs), unshare(CLONE_NEWCGROUP)
        container_init: stdio, hostname, rootfs plan + pivot_root, rlimits
        process_init: user, cwd, capabilities, no_new_privs, close every fd but the sync pipe
                      (O_CLOEXEC), seccomp, execve
    child → zygote over the CLOEXEC sync pipe: JSON lines `{"warning": ...}`, or
    `{"stage", "errno", "message"}` on failure; EOF without a failure means execve succeeded.

With the default namespaces and no cgroup v2, the clone was made ahead of time (`Spare`, once
a start has shown one fits): the request only hands it the spec. An `exec` clones into a running container's namespaces (`handle_exec`) and shares
`process_init`. With a user namespace the child waits until the zygote has written its id maps
(`clone_container`, `setup_user_namespace`).

CLONE_PARENT makes every such process the supervisor's child directly (the supervisor is a child
subreaper too): it waits with a pidfd, and reaps a failed child itself (`failed` carries its pid).
A failed start leaves nothing else: the mounts and namespaces die with the process. The zygote has
PR_SET_PDEATHSIG(SIGKILL): it dies with the supervisor. Code that runs in a child never returns
into the serving loop: every child path ends in execve or os._exit.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import json
import os
import resource
import select
import signal
import socket
import struct
import sys

from .. import syscalls as S
from . import protocol
from . import rootfs as R
from . import security
from .spec import ContainerSpec, ExecSpec, env_with_defaults, generated_hosts, generated_resolv_conf
from .users import UserError, resolve_user

TYPE_CHECKING = False  # typing stays unimported: the zygote imports this module (~0.4 MB of its memory)
if TYPE_CHECKING:
    from typing import Any


class Failure(Exception):
    """A start failed at `stage` (`mount /proc`, `exec`, ...) with `errno`."""

    def __init__(self, stage: str, err: int | None, message: str):
        super().__init__(message)
        self.stage = stage
        self.errno = err
        self.pid: int | None = None  # a child that exists (killed): its parent reaps it

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "errno": self.errno, "message": str(self)}


def _fail_from(stage: str, e: BaseException) -> Failure:
    if isinstance(e, R.StageError):
        return Failure(e.stage, e.errno, str(e))
    err = getattr(e, "errno", None)
    if isinstance(e, S.SyscallError):
        return Failure(stage, err, f"{stage}: {e}" if not str(e).startswith(stage) else str(e))
    if isinstance(e, OSError) and err:
        return Failure(stage, err, f"{stage}: {errno.errorcode.get(err, err)} ({e.strerror})")
    return Failure(stage, err, f"{stage}: {e}")


# --- pieces of the child ---------------------------------------------------------------------


INIT_PATH = "/dev/init"


def namespace_flags(spec: ContainerSpec) -> int:
    flags = S.CLONE_NEWNS | S.CLONE_NEWCGROUP
    if not spec.host_pid:
        flags |= S.CLONE_NEWPID
    if not spec.host_net and not spec.netns:
        flags |= S.CLONE_NEWNET
    if not spec.host_ipc:
        flags |= S.CLONE_NEWIPC
    if not spec.host_uts:
        flags |= S.CLONE_NEWUTS
    if spec.uid_map:
        flags |= S.CLONE_NEWUSER
    return flags


def rootfs_options(spec: ContainerSpec, state_dir: str | None = None) -> R.RootfsOptions:
    """The mount plan's options; `state_dir` stands in for the spec's when that is not set yet."""
    generated: list[tuple[str, str, str]] = []
    state_dir = spec.state_dir or state_dir
    etc_dir = os.path.join(state_dir, "etc") if state_dir else None
    if etc_dir:
        hostname = spec.effective_hostname
        generated = [
            ("/etc/hostname", os.path.join(etc_dir, "hostname"), hostname + "\n"),
            ("/etc/hosts", os.path.join(etc_dir, "hosts"),
             spec.hosts if spec.hosts is not None else generated_hosts(hostname)),
            ("/etc/resolv.conf", os.path.join(etc_dir, "resolv.conf"),
             spec.resolv_conf if spec.resolv_conf is not None else generated_resolv_conf()),
        ]
    masked = () if spec.privileged else (spec.masked_paths if spec.masked_paths is not None else R.DEFAULT_MASKED_PATHS)
    ro = () if spec.privileged else (spec.readonly_paths if spec.readonly_paths is not None else R.DEFAULT_READONLY_PATHS)
    rootfs, lower, mounts = spec.rootfs, spec.lower_layers, spec.mounts
    if idmapped(spec) and state_dir:  # the idmapped copies the parent attached (idmap_layers)
        base = os.path.join(state_dir, "idmap")
        if idmap_root(spec):
            rootfs, *rest = (os.path.join(base, str(i)) for i in range(1 + len(lower)))
            lower = tuple(rest)
        # a bind mount's idmapped copy exists when its filesystem allowed it (else: a warning)
        mounts = tuple(m.replace(source=os.path.join(base, f"b{i}"))
                       if idmap_bind(spec, m) and os.path.lexists(os.path.join(base, f"b{i}")) else m
                       for i, m in enumerate(mounts))
    return R.RootfsOptions(rootfs=rootfs, read_only=spec.read_only, mounts=mounts, masked_paths=masked,
                           readonly_paths=ro, generated_files=tuple(generated), generated_dir=etc_dir,
                           sysctls=spec.sysctls, init_binary=spec.init_path if spec.init else None,
                           layer_dir=os.path.join(state_dir, "layer") if state_dir and spec.writable_layer
                           else None, lower_layers=lower,
                           mount_dir=os.path.join(state_dir, "root") if state_dir else None,
                           host_view=spec.rootfs == "/",
                           sys_from_host=bool(spec.uid_map) and (bool(spec.netns) or spec.host_net))


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, 0x8913, struct.pack("16sH22x", b"lo", 0))  # SIOCGIFFLAGS
        flags = struct.unpack("16sH22x", ifr)[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", flags | 1))  # SIOCSIFFLAGS, IFF_UP


def set_rlimits(spec: ContainerSpec, warnings: list[str]) -> None:
    for rl in spec.rlimits:
        res = getattr(resource, "RLIMIT_" + rl.name.upper(), None)
        if res is None:
            raise Failure(f"rlimit {rl.name}", errno.EINVAL, f"rlimit {rl.name}: unknown limit")
        _, cur_hard = resource.getrlimit(res)
        soft, hard = rl.soft, rl.hard
        inf = resource.RLIM_INFINITY

        def above(a: int, b: int) -> bool:  # a > b with -1/RLIM_INFINITY as infinity
            if b == inf or b < 0:
                return False
            return a == inf or a < 0 or a > b

        if above(hard, cur_hard):
            warnings.append(f"ulimit {rl.name}: hard limit {hard} above the supervisor's {cur_hard} "
                            f"(no CAP_SYS_RESOURCE); clamped to {cur_hard}")
            hard = cur_hard
        if above(soft, hard):
            soft = hard
        try:
            resource.setrlimit(res, (soft, hard))
        except (OSError, ValueError) as e:
            raise Failure(f"rlimit {rl.name}", getattr(e, "errno", errno.EINVAL), f"rlimit {rl.name}: {e}") from None


def find_executable(name: str, path_var: str) -> str:
    if "/" in name:
        return name
    found_noexec = None
    for d in path_var.split(":"):
        cand = os.path.join(d or ".", name)
        if os.path.isfile(cand):
            if os.access(cand, os.X_OK):
                return cand
            found_noexec = found_noexec or cand
    if found_noexec:
        return found_noexec  # execve reports EACCES → 126
    raise Failure("exec", errno.ENOENT, f'exec: "{name}": executable file not found in $PATH')


def reset_signals() -> None:
    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def early_init(private_net: bool) -> None:
    """The part of PID 1's set-up that needs no spec (a spare child does it while it waits)."""
    S.prctl(S.PR_SET_DUMPABLE, 0)  # no ptrace or /proc/PID/* access from the container until execve
    os.setsid()
    reset_signals()
    os.umask(0)
    if private_net:
        loopback_up()


def container_init(spec: ContainerSpec, stdio: list[int], sync_w: int, bpf: bytes | None) -> None:
    """PID 1 after `early_init`: everything from stdio to execve. Raises Failure; never returns
    on success."""
    sc = S.LinuxSyscalls()
    warnings: list[str] = []
    stage = "stdio"
    try:
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        if not spec.host_uts:
            stage = "sethostname"
            sc.sethostname(spec.effective_hostname)
            if spec.domainname:
                sc.setdomainname(spec.domainname)
        stage = "rootfs"
        R.apply(R.plan_rootfs(rootfs_options(spec)), sc)
        stage = "rlimits"
        set_rlimits(spec, warnings)
    except Failure:
        raise
    except BaseException as e:
        raise _fail_from(stage, e) from None
    process_init(spec, sync_w, bpf, warnings, init=spec.init, create_cwd=True)


def held_capabilities(sc: S.Syscalls, caps: tuple[str, ...], warnings: list[str]) -> tuple[str, ...]:
    """`caps` less those this process does not hold (it cannot grant them: capset would fail), with
    a warning: here, CAP_SYS_RESOURCE is outside pysup's own bounding set."""
    permitted = sc.capget()[1]
    missing = [c for c in caps if not permitted >> security.CAP_NUMBERS[c] & 1]
    if missing:
        warnings.append(f"capabilities {', '.join(missing)} are not held by pysup; not granted")
        return tuple(c for c in caps if c not in missing)
    return caps


def process_init(spec: Any, sync_w: int, bpf: bytes | None, warnings: list[str], *, init: bool = False,
                 create_cwd: bool = False) -> None:
    """The tail every container process shares (PID 1, or a process exec'd into a container):
    user, working directory, environment, capabilities, no_new_privs, fds, seccomp, execve.
    Runs with the container's root as "/" and stdio in place. Raises Failure."""
    sc = S.LinuxSyscalls()
    stage = "user"
    try:
        try:
            user = resolve_user(spec.user)
        except UserError as e:
            raise Failure("user", errno.ENOENT, f"user: {e}") from None
        stage = f"chdir {spec.cwd}"
        if create_cwd and not os.path.isdir(spec.cwd):
            _mkdir_p(spec.cwd)  # Docker creates a missing working_dir
        os.chdir(spec.cwd)
        cwd = os.getcwd()  # CVE-2024-21626: a cwd outside the root shows as "(unreachable)"
        if not cwd.startswith("/"):
            raise Failure(stage, errno.ENOENT, f"{stage}: outside the container root")
        stage = "exec lookup"
        env = env_with_defaults(spec, user.home)
        argv = list(spec.argv)
        exe = find_executable(argv[0], env["PATH"])
        if init:
            argv = [INIT_PATH, "--", exe, *argv[1:]]
            exe = INIT_PATH
        flt = bpf
        if flt is not None and not spec.no_new_privs:
            # Without no_new_privs the filter must go in while CAP_SYS_ADMIN is still held (runc).
            stage = "seccomp"
            security.load_bpf(flt)
        stage = "capabilities"
        caps = held_capabilities(sc, spec.capabilities, warnings)
        security.apply_capabilities(sc, caps, uid=user.uid, gid=user.gid, groups=user.groups)
        # Die with the supervisor (our parent, by CLONE_PARENT). Set after the credential change,
        # which clears it; execve keeps it (but for set-id binaries).
        S.prctl(S.PR_SET_PDEATHSIG, signal.SIGKILL)
        if spec.no_new_privs:
            stage = "no_new_privs"
            security.set_no_new_privs(sc)
        stage = "close fds"
        if sync_w > 3:
            S.close_range(3, sync_w - 1)
        S.close_range(sync_w + 1)
        os.umask(0o022)
        for w in warnings:
            os.write(sync_w, json.dumps({"warning": w}).encode() + b"\n")
        if flt is not None and spec.no_new_privs:
            stage = "seccomp"
            security.load_bpf(flt)
        stage = "exec"
        try:
            os.execve(exe, argv, env)
        except OSError as e:
            name = errno.errorcode.get(e.errno or 0, str(e.errno))
            raise Failure("exec", e.errno, f'exec "{exe}": {name} ({e.strerror})') from None
    except Failure:
        raise
    except BaseException as e:
        raise _fail_from(stage, e) from None


def _mkdir_p(path: str) -> None:
    cur = ""
    for part in [p for p in path.split("/") if p]:
        cur += "/" + part
        try:
            os.mkdir(cur, 0o755)
        except FileExistsError:
            pass


def _filter_key(spec: ContainerSpec) -> tuple:
    prof = spec.seccomp if isinstance(spec.seccomp, dict) else None
    return (tuple(sorted(spec.capabilities)), spec.no_new_privs,
            json.dumps(prof, sort_keys=True) if prof is not None else "default")


def prepare_filter(spec: ContainerSpec, filters: dict) -> bytes | None:
    """The container's seccomp filter as BPF, built and compiled once per capability set and
    profile in the zygote, so each child only installs the bytes."""
    if spec.seccomp is None or spec.seccomp == "unconfined":
        return None
    key = _filter_key(spec)
    if key in filters:
        return filters[key]
    if not isinstance(spec.seccomp, dict) and spec.seccomp != "default":
        raise Failure("seccomp", errno.EINVAL, f"seccomp: unknown profile {spec.seccomp!r}")
    filters[key] = _compile_apart(spec.seccomp if isinstance(spec.seccomp, dict) else None, spec.capabilities,
                                  spec.no_new_privs)
    return filters[key]


def _compile_apart(profile: dict | None, capabilities: tuple[str, ...], no_new_privs: bool) -> bytes:
    """Resolve and compile a filter (`profile` None: Docker's default) in a forked child, which
    sends back the BPF: pyseccomp (with ctypes.util, subprocess, ...) and the parsed profile never
    enter the zygote, whose memory every container start copies from and which lives as long as
    pysup (~3 MB). Raises Failure."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            os.close(r)
            try:
                plan = security.resolve_seccomp(profile if profile is not None else security.default_profile(),
                                                capabilities)
                out = b"\0" + security.compile_bpf(security.build_filter(plan, no_new_privs=no_new_privs))
            except security.SeccompError as e:
                out = b"\1" + str(e).encode()
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                out = b"\1" + f"seccomp: {e}".encode()
            _write_all(w, out)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        data = _read_all(r)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    if not data:
        raise Failure("seccomp", errno.EINVAL, "seccomp: the filter compiler died")
    if data[:1] != b"\0":
        raise Failure("seccomp", errno.EINVAL, data[1:].decode(errors="replace"))
    return data[1:]


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _write_line(fd: int, obj: dict) -> None:
    data = json.dumps(obj).encode() + b"\n"
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            b = os.read(fd, 65536)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _parse_lines(data: bytes) -> tuple[list[str], dict | None, dict | None]:
    warnings: list[str] = []
    error = None
    result = None
    for line in data.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if "warning" in obj:
            warnings.append(obj["warning"])
        elif "stage" in obj:
            error = obj
        elif "pid" in obj:
            result = obj
    return warnings, error, result


DEFAULT_NAMESPACES = S.CLONE_NEWNS | S.CLONE_NEWCGROUP | S.CLONE_NEWUTS | S.CLONE_NEWIPC | S.CLONE_NEWPID | S.CLONE_NEWNET


def check_spec(spec: ContainerSpec) -> None:
    """Refuse, before anything is made, what would fail in the child anyway (one clear line)."""
    from .errors import RuntimeSetupError
    from .spec import UnsupportedOption, check_sysctl

    if not os.path.isdir(spec.rootfs):
        raise RuntimeSetupError(f"rootfs {spec.rootfs}: not a directory", stage="rootfs", errno=errno.ENOENT,
                                container=spec.id)
    if not spec.argv:
        raise RuntimeSetupError("no command", stage="request", errno=errno.EINVAL, container=spec.id)
    for layer in spec.lower_layers:
        if not os.path.isdir(layer):
            raise RuntimeSetupError(f"image layer {layer}: not a directory", stage="rootfs", errno=errno.ENOENT,
                                    container=spec.id)
    try:
        R.plan_rootfs(rootfs_options(spec, state_dir=f"/run/pysup/containers/{spec.id}"))
    except R.MountPlanError as e:
        raise RuntimeSetupError(f"mounts: {e}", stage="mounts", errno=errno.EINVAL, container=spec.id) from None
    if spec.init and not os.access(spec.init_path, os.X_OK):
        raise RuntimeSetupError(f"init: {spec.init_path} is not an executable (apt-get install tini)", stage="init",
                                errno=errno.ENOENT, container=spec.id)
    for key, _value in spec.sysctls:
        try:
            check_sysctl(key, host_ipc=spec.host_ipc, host_net=spec.host_net)
        except UnsupportedOption as e:
            raise RuntimeSetupError(str(e), stage="sysctl", errno=errno.EPERM, container=spec.id) from None
    for m in spec.mounts:
        if m.type == "bind" and m.source and not os.path.exists(m.source):
            raise RuntimeSetupError(f"mount {m.target}: bind mount source {m.source} does not exist",
                                    stage=f"mount {m.target}", errno=errno.ENOENT, container=spec.id)


def clone_flags(spec: ContainerSpec) -> int:
    """Namespaces made by the clone itself; the cgroup namespace comes after joining the cgroups."""
    return (namespace_flags(spec) & ~S.CLONE_NEWCGROUP) | S.CLONE_PARENT


def v2_cgroup(paths: tuple[str, ...]) -> str | None:
    """The cgroup v2 directory among `paths` (cgroup.procs files; a hybrid host has one v2 and
    several v1 hierarchies), which a clone can be born into; None if there is none."""
    for path in paths:
        d = os.path.dirname(path)
        if os.path.basename(path) == "cgroup.procs" and os.path.exists(os.path.join(d, "cgroup.controllers")):
            return d
    return None


def join_cgroups(paths: tuple[str, ...], skip: str | None = None) -> None:
    """Move this (single-threaded) process into the cgroups of `paths` but the directory `skip`
    (joined at clone time). Raises Failure. A v1 hierarchy is joined through its `tasks` file:
    moving the calling thread alone skips the global cgroup_threadgroup_rwsem write lock (an RCU
    grace period, ~10 ms) that a cgroup.procs write takes, and the thread is the whole process."""
    for path in paths:
        d = os.path.dirname(path)
        if d == skip:
            continue
        target = path
        if os.path.basename(path) == "cgroup.procs" and not os.path.exists(os.path.join(d, "cgroup.controllers")):
            tasks = os.path.join(d, "tasks")
            if os.path.exists(tasks):
                target = tasks
        try:
            with open(target, "w") as f:
                f.write("0")
        except OSError as e:
            raise _fail_from(f"cgroup {path}", e) from None


def child_main(spec: ContainerSpec, stdio: list[int], sync_w: int, bpf: bytes | None,
               joined: str | None = None) -> None:
    """The container's PID 1 once its spec is known (`joined`: the cgroup v2 directory it was
    cloned into). Always ends in execve or _exit."""
    rc = 1
    stage = "cgroup"
    try:
        if not spec.uid_map:  # in a user namespace the parent did it (no rights on the host's cgroupfs here)
            join_cgroups(spec.cgroup_procs, skip=joined)
        stage = "unshare cgroup"
        S.unshare(S.CLONE_NEWCGROUP)  # after joining: /proc/self/cgroup shows "/"
        container_init(spec, stdio, sync_w, bpf)
    except BaseException as e:
        rc = _child_failed(sync_w, stage, e)
    finally:
        os._exit(rc)


def _child_failed(sync_w: int, stage: str, exc: BaseException) -> int:
    """Report why a container child failed on its sync pipe; returns its exit status (127 when
    exec found no such file, as Docker)."""
    if isinstance(exc, Failure):
        _report(sync_w, exc.to_dict())
        return 127 if exc.stage == "exec" and exc.errno == errno.ENOENT else 1
    _report(sync_w, _fail_from(stage, exc).to_dict())
    return 1


def _report(fd: int, obj: dict) -> None:
    try:
        _write_line(fd, obj)
    except BaseException:
        pass


class Spare:
    """A container PID 1 cloned ahead of time with the default namespaces (new PID, mount, UTS, IPC,
    network), `early_init` done, blocked until the zygote hands it a spec, the seccomp BPF and the
    stdio fds over its own socketpair. Takes the clone (~2-3 ms: a network namespace is not cheap)
    and the generic set-up off the start path. Like every container it is the supervisor's child
    (CLONE_PARENT), so the zygote announces it (`spare {pid}`) for the supervisor to reap should it
    never be used."""

    def __init__(self, pid: int, ctrl: socket.socket, sync_r: int):
        self.pid = pid
        self.ctrl = ctrl
        self.sync_r = sync_r

    @classmethod
    def spawn(cls, sock: socket.socket) -> Spare | None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = S.clone_fork((DEFAULT_NAMESPACES & ~S.CLONE_NEWCGROUP) | S.CLONE_PARENT)
        except OSError:
            for x in (ours, theirs):
                x.close()
            os.close(sync_r)
            os.close(sync_w)
            return None
        if pid == 0:
            try:
                os.close(sync_r)
                ours.close()
                sock.close()
            finally:
                _spare_main(theirs, sync_w)
        theirs.close()
        os.close(sync_w)
        protocol.send(sock, protocol.SPARE, pid=pid)
        return cls(pid, ours, sync_r)

    def hand_over(self, spec: ContainerSpec, fds: list[int], bpf: bytes | None) -> None:
        payload = {"spec": spec.to_dict(), "bpf": bpf.hex() if bpf is not None else None}
        self.ctrl.sendmsg([json.dumps(payload).encode()], protocol.fds_ancillary(fds))
        self.ctrl.close()

    def discard(self) -> None:
        self.ctrl.close()  # EOF: the spare exits
        os.close(self.sync_r)


def _spare_main(ctrl: socket.socket, sync_w: int) -> None:
    rc = 1
    stage = "spare"
    try:
        early_init(private_net=True)
        data, ancdata, flags, _ = ctrl.recvmsg(protocol.MAX_MESSAGE, socket.CMSG_SPACE(protocol.MAX_FDS * 4))
        fds = protocol.fds_from_ancillary(ancdata)
        if not data:
            rc = 0
            return  # the zygote went away or discarded us
        ctrl.close()
        msg = json.loads(data)
        spec = ContainerSpec.from_dict(msg["spec"])
        bpf = bytes.fromhex(msg["bpf"]) if msg.get("bpf") else None
        child_main(spec, fds, sync_w, bpf)  # never returns
    except BaseException as e:
        _report(sync_w, _fail_from(stage, e).to_dict())
    finally:
        os._exit(rc)


def _clone(flags: int, cgroup_fd: int = -1) -> int:
    """clone_fork, born in the cgroup v2 directory `cgroup_fd` when >= 0. When the kernel cannot
    (before 5.7), a plain clone whose result is negated (-1 for the child) so the caller knows the
    child must join the cgroup itself."""
    if cgroup_fd < 0:
        return S.clone_fork(flags)
    try:
        return S.clone_into_cgroup(flags, cgroup_fd)
    except S.SyscallError as e:
        if e.errno not in (errno.ENOSYS, errno.E2BIG, errno.EINVAL, errno.EPERM):
            raise
    pid = S.clone_fork(flags)
    return -pid if pid else -1


def _clone_in_netns(path: str, flags: int, cgroup_fd: int = -1) -> int:
    """clone with the child in the network namespace at `path` (prepared by pysup's networking):
    the zygote (single-threaded) joins it for the clone and returns to its own; so the child is in
    it from the start, also when it gets a new user namespace (no setns rights from there)."""
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        e.netns = True  # type: ignore[attr-defined]
        raise
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            S.setns(target, S.CLONE_NEWNET)
        except OSError as e:
            e.netns = True  # type: ignore[attr-defined]
            raise
        try:
            pid = _clone(flags, cgroup_fd)
        except OSError:
            S.setns(own, S.CLONE_NEWNET)
            raise
        if pid not in (0, -1):  # the zygote goes back; the child stays
            S.setns(own, S.CLONE_NEWNET)
        return pid
    finally:
        os.close(target)
        os.close(own)


def clone_container(spec: ContainerSpec, stdio: list[int], bpf: bytes | None, flags: int, *,
                    close_in_child: list = ()) -> tuple[int, int]:
    """Clone the container's PID 1 with `flags` and let it run to execve; returns (pid, the read
    end of its sync pipe). With a user namespace the child first waits for its parent to write its
    uid/gid maps, move it into its cgroups and hand it the state directory. Raises Failure (with
    `.pid` set when a child exists: it has been killed, its parent must reap it)."""
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC) if spec.uid_map else (-1, -1)
    joined = v2_cgroup(spec.cgroup_procs)
    cgroup_fd = -1
    try:
        if joined is not None:
            cgroup_fd = os.open(joined, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if spec.netns and not spec.host_net:
            pid = _clone_in_netns(spec.netns, flags, cgroup_fd)
        else:
            pid = _clone(flags, cgroup_fd)
        if pid < 0:  # the kernel cannot clone into a cgroup: the child joins it
            pid, joined = -pid if pid != -1 else 0, None
    except OSError as e:
        for fd in (sync_r, sync_w, go_r, go_w):
            if fd >= 0:
                os.close(fd)
        raise _fail_from("join network namespace" if getattr(e, "netns", False) else "clone", e) from None
    finally:
        if cgroup_fd >= 0:
            os.close(cgroup_fd)
    if pid == 0:
        try:
            os.close(sync_r)
            for obj in close_in_child:
                obj.close()
            if spec.uid_map:
                os.close(go_w)
                if os.read(go_r, 1) != b"1":
                    os._exit(1)  # the parent failed and said so already
                os.close(go_r)
                os.setresgid(0, 0, 0)  # become root of the namespace proper (runc's nsexec does the same)
                os.setresuid(0, 0, 0)
            early_init(private_net=not spec.host_net and not spec.netns)  # a prepared netns has lo up
        except BaseException as e:
            _report(sync_w, _fail_from("init", e).to_dict())
            os._exit(1)
        child_main(spec, stdio, sync_w, bpf, joined)
    if spec.uid_map:
        os.close(go_r)
        try:
            for w in setup_user_namespace(pid, spec, joined):  # reported like the child's own warnings
                os.write(sync_w, json.dumps({"warning": w}).encode() + b"\n")
            os.write(go_w, b"1")
        except BaseException as e:
            os.close(sync_w)
            os.close(sync_r)
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            f = e if isinstance(e, Failure) else _fail_from("user namespace", e)
            f.pid = pid  # type: ignore[attr-defined]
            raise f from None
        finally:
            os.close(go_w)
    os.close(sync_w)
    return pid, sync_r


def _host_id(maps: tuple[tuple[int, int, int], ...], inner: int) -> int | None:
    for start, host, size in maps:
        if start <= inner < start + size:
            return host + inner - start
    return None


def idmapped(spec: ContainerSpec) -> bool:
    return bool(spec.idmap and spec.uid_map)


def remountable(spec: ContainerSpec) -> bool:
    """Does the container keep CAP_SYS_ADMIN in its user namespace (privileged, cap_add)? Then it
    may remount its own mounts: the kernel locks a mount's flags only when it is copied into a
    less privileged namespace, not on what the zygote attaches or the child makes read-only. A
    read-only idmapped mount would be host root's files writable as host root after a remount."""
    return spec.privileged or "CAP_SYS_ADMIN" in spec.capabilities


def idmap_root(spec: ContainerSpec) -> bool:
    """Are the layers idmapped? Never the host's tree (`image: host`): idmapped, the container's
    root would be host root to every file of the host, /etc/shadow included; the host's files
    stay host ids there, nobody inside. Not either when the root is the idmapped tree itself,
    read-only (a read-only root of one layer: no overlay in between), and the container can
    remount it (`remountable`)."""
    if not idmapped(spec) or spec.rootfs == "/":
        return False
    return not (spec.read_only and not spec.lower_layers and remountable(spec))


def idmap_bind(spec: ContainerSpec, m: Any) -> bool:
    """Is bind mount `m` shown through an idmapped copy? A read-only one, unless the container can
    remount it (`remountable`; `ro` among its options counts as read-only too); a writable one only
    when its source is pysup's own (`owned`: a volume, under the 0700 volumes directory) or the
    user asked for it (`idmap`, podman's `:idmap`). A writable host directory otherwise keeps its
    host ids, as podman does without `:idmap`: idmapped, the container's root would write there as
    host root (a setuid-root file any host user could run).

    The `idmap` opt-in does not lift the read-only rule: `:ro,idmap` in a container that can
    remount is not idmapped (its read-only flag would be no barrier: a remount would make host
    root's files writable as host root, which `ro` said should not happen). On a writable mount a
    remountable container gains nothing from CAP_SYS_ADMIN that the opt-in did not already grant:
    the mount is writable as host root either way, and the idmapping itself cannot be changed from
    inside (MOUNT_ATTR_IDMAP takes a detached mount not yet idmapped, and CAP_SYS_ADMIN over the
    filesystem's own user namespace: host root's)."""
    if not (idmapped(spec) and m.type == "bind" and m.source):
        return False
    if m.read_only or "ro" in m.options:
        return not remountable(spec)
    return bool(m.owned or m.idmap)


_IDMAP_UNSUPPORTED = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM)


def idmap_layers(pid: int, spec: ContainerSpec) -> list[str]:
    """The parent's part of `idmap`: each layer (rootfs, then lower_layers; `idmap_root`) and each
    bind mount's source (`idmap_bind`) cloned as a detached mount (open_tree), idmapped through
    the child's user namespace, and attached at <state_dir>/idmap/<n> (bind mount n: idmap/b<n>)
    inside the child's mount namespace (setns there and back: this process is single-threaded).
    Only host root can make them; the child uses them instead of the originals. A bind mount on a
    filesystem that refuses idmapping is used as it is, with a warning (returned): its files show
    host ids inside."""
    base = os.path.join(spec.state_dir, "idmap")
    fds: list[int] = []
    warnings: list[str] = []
    try:
        os.mkdir(base, 0o711)
        userns = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        fds.append(userns)
        trees = []
        if spec.rootfs != "/" and not idmap_root(spec):
            warnings.append("the read-only root in a user namespace with CAP_SYS_ADMIN (it could remount it "
                            "writable): not idmapped; files owned by host users show as nobody (65534) inside")
        elif spec.rootfs != "/":
            for i, layer in enumerate((spec.rootfs, *spec.lower_layers)):
                target = os.path.join(base, str(i))
                os.mkdir(target, 0o755)
                tree = S.open_tree(layer)
                fds.append(tree)
                S.idmap_tree(tree, userns)
                trees.append((tree, target))
        for i, m in enumerate(spec.mounts):
            if m.type != "bind" or not m.source:
                continue
            if not idmap_bind(spec, m):
                if m.read_only or "ro" in m.options:
                    warnings.append(f"bind mount {m.source} -> {m.target}: read-only and the container holds "
                                    "CAP_SYS_ADMIN in its user namespace (it could remount it writable): not "
                                    "idmapped; files owned by host users show as nobody (65534) inside")
                continue  # a writable host directory keeps host ids (idmap_bind says why)
            try:
                tree = S.open_tree(m.source, S.OPEN_TREE_CLONE | S.OPEN_TREE_CLOEXEC
                                   | (S.AT_RECURSIVE if m.recursive else 0))
            except OSError:
                continue  # a missing source: the child's mount reports it, with the mount's name
            fds.append(tree)
            try:
                S.idmap_tree(tree, userns, recursive=m.recursive)
            except OSError as e:
                if e.errno not in _IDMAP_UNSUPPORTED:
                    raise
                warnings.append(f"bind mount {m.source} -> {m.target}: its filesystem cannot be idmapped "
                                f"({os.strerror(e.errno or 0)}); files owned by host users show as nobody (65534) inside")
                continue
            target = os.path.join(base, f"b{i}")
            if os.path.isdir(m.source):
                os.mkdir(target, 0o755)
            else:
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
            trees.append((tree, target))
        if not trees:
            return warnings
        theirs = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        fds.append(theirs)
        ours = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        fds.append(ours)
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fds.append(cwd)
        S.setns(theirs, S.CLONE_NEWNS)
        try:
            for tree, target in trees:
                S.move_mount(tree, target)
        finally:
            S.setns(ours, S.CLONE_NEWNS)
            os.fchdir(cwd)
    except OSError as e:
        raise _fail_from("idmap layers", e) from None
    finally:
        for fd in fds:
            os.close(fd)
    return warnings


def setup_user_namespace(pid: int, spec: ContainerSpec, joined: str | None = None) -> list[str]:
    """The parent's half of a user namespace start: id maps, cgroups, state directory ownership,
    idmapped mounts. Returns warnings for the start's report."""
    for name, maps in (("uid_map", spec.uid_map), ("gid_map", spec.gid_map or spec.uid_map)):
        stage = f"write {name}"
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write("".join(f"{a} {b} {c}\n" for a, b, c in maps))
        except OSError as e:
            raise _fail_from(stage, e) from None
    for path in spec.cgroup_procs:
        if os.path.dirname(path) == joined:
            continue
        try:
            with open(path, "w") as f:
                f.write(str(pid))
        except OSError as e:
            raise _fail_from(f"cgroup {path}", e) from None
    uid, gid = _host_id(spec.uid_map, 0), _host_id(spec.gid_map or spec.uid_map, 0)
    if spec.state_dir and uid is not None and gid is not None:
        os.chown(spec.state_dir, uid, gid)  # the namespace's root makes its layer and /etc files there
    if spec.state_dir and idmapped(spec):
        return idmap_layers(pid, spec)
    return []


def spare_fits(spec: ContainerSpec) -> bool:
    """Can a spare become this container? Only with the default namespaces (a container joining
    pysup's prepared network namespace clones without CLONE_NEWNET) and no cgroup v2: a spare sits
    in the zygote's cgroup, and moving it into a cgroup v2 costs more (see join_cgroups) than a
    clone born in the container's cgroup."""
    return namespace_flags(spec) == DEFAULT_NAMESPACES and v2_cgroup(spec.cgroup_procs) is None


def handle_start(sock: socket.socket, msg: dict, fds: list[int], filters: dict,
                 spare: Spare | None) -> tuple[Spare | None, bool | None]:
    """Start one container (with the spare when it fits); returns the spare left unused and
    whether a spare would have fitted (None: the request was refused before that was known)."""
    cid = msg.get("id")
    try:
        spec = ContainerSpec.from_dict(msg["spec"])
        if len(fds) != 3:
            raise Failure("request", errno.EINVAL, f"request: expected 3 stdio fds, got {len(fds)}")
        if not spec.argv:
            raise Failure("request", errno.EINVAL, "request: empty command")
        bpf = prepare_filter(spec, filters)
    except Failure as f:
        protocol.send(sock, protocol.FAILED, id=cid, pid=None, **f.to_dict())
        return spare, None
    except (TypeError, ValueError, KeyError) as e:
        protocol.send(sock, protocol.FAILED, id=cid, pid=None, stage="request", errno=errno.EINVAL,
                      message=f"request: {e}")
        return spare, None
    fits = spare_fits(spec)
    if spare is not None and fits:
        try:
            spare.hand_over(spec, fds, bpf)
            pid, sync_r = spare.pid, spare.sync_r
            spare = None
        except OSError:  # the spare died: it is reaped by the supervisor; start the usual way
            spare.discard()
            spare = None
            pid = 0
    else:
        pid = 0
    if not pid:
        try:
            pid, sync_r = clone_container(spec, fds, bpf, clone_flags(spec),
                                          close_in_child=[sock] + ([spare.ctrl] if spare is not None else []))
        except Failure as f:
            protocol.send(sock, protocol.FAILED, id=cid, pid=getattr(f, "pid", None), **f.to_dict())
            return spare, fits
    os.set_blocking(sync_r, False)
    PENDING[sync_r] = (cid, pid, [])
    return spare, fits


# Starts whose child has not reported yet, by the read end of its sync pipe: (id, pid, bytes so
# far). The zygote answers each when its pipe closes (exec, or failure), so several containers set
# themselves up at once instead of one after another.
PENDING: dict[int, tuple[str, int, list[bytes]]] = {}


def finish_pending(sock: socket.socket, sync_r: int) -> bool:
    """Read what the child of `sync_r` reported; once its pipe closed, answer STARTED or FAILED
    and return True."""
    cid, pid, chunks = PENDING[sync_r]
    while True:
        try:
            b = os.read(sync_r, 65536)
        except BlockingIOError:
            return False
        if not b:
            break
        chunks.append(b)
    del PENDING[sync_r]
    warnings, error, _ = _parse_lines(b"".join(chunks))
    os.close(sync_r)
    if error is not None:
        protocol.send(sock, protocol.FAILED, id=cid, pid=pid, **error)
    else:
        protocol.send(sock, protocol.STARTED, id=cid, pid=pid, warnings=warnings)
    return True


JOINABLE = (("user", S.CLONE_NEWUSER), ("cgroup", S.CLONE_NEWCGROUP), ("ipc", S.CLONE_NEWIPC),
            ("uts", S.CLONE_NEWUTS), ("net", S.CLONE_NEWNET), ("mnt", S.CLONE_NEWNS))


def join_flags(target_pid: int) -> int:
    """The namespaces of `target_pid` that differ from ours (a user namespace cannot be re-entered,
    and a host_net container shares ours)."""
    flags = 0
    for name, flag in JOINABLE:
        try:
            if os.stat(f"/proc/{target_pid}/ns/{name}").st_ino != os.stat(f"/proc/self/ns/{name}").st_ino:
                flags |= flag
        except FileNotFoundError:
            pass
    return flags


def handle_exec(sock: socket.socket, msg: dict, fds: list[int], filters: dict) -> None:
    """A process inside a running container: its PID namespace is joined by the zygote for the clone
    (pid_for_children, restored at once), the others by the child with setns(pidfd) at once; the
    cgroups first, while the child still has the host's rights."""
    cid = msg.get("id")
    try:
        spec = ExecSpec.from_dict(msg["spec"])
        if len(fds) != 4:
            raise Failure("request", errno.EINVAL, f"request: expected 3 stdio fds and a pidfd, got {len(fds)}")
        if not spec.argv:
            raise Failure("request", errno.EINVAL, "request: empty command")
        bpf = prepare_filter(spec, filters)  # type: ignore[arg-type]
        pidfd = fds[3]
        try:
            flags = join_flags(spec.container_pid)
            signal.pidfd_send_signal(pidfd, 0)  # still alive: the pid read above was its
        except OSError as e:
            raise _fail_from("setns", e) from None
    except Failure as f:
        protocol.send(sock, protocol.FAILED, id=cid, pid=None, **f.to_dict())
        return
    except (TypeError, ValueError, KeyError) as e:
        protocol.send(sock, protocol.FAILED, id=cid, pid=None, stage="request", errno=errno.EINVAL,
                      message=f"request: {e}")
        return
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    pid = -1
    try:
        S.setns(pidfd, S.CLONE_NEWPID)  # our children's PID namespace: the container's
        try:
            pid = S.clone_fork(S.CLONE_PARENT)
        finally:
            if pid != 0:  # the parent only: the child must never return into this loop
                S.setns(own_pidns, S.CLONE_NEWPID)
    except OSError as e:
        if pid == 0:
            os._exit(1)
        for fd in (own_pidns, sync_r, sync_w):
            os.close(fd)
        protocol.send(sock, protocol.FAILED, id=cid, pid=None, **_fail_from("setns pid", e).to_dict())
        return
    if pid == 0:
        stage = "cgroup"
        rc = 1
        try:
            os.close(sync_r)
            sock.close()
            join_cgroups(spec.cgroup_procs)
            stage = "setns"
            S.setns(pidfd, flags)  # root and cwd become the container's with its mount namespace
            os.close(pidfd)
            if flags & S.CLONE_NEWUSER:
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
            stage = "init"
            early_init(private_net=False)
            stage = "stdio"
            for target, fd in enumerate(fds[:3]):
                os.dup2(fd, target)
            process_init(spec, sync_w, bpf, [])
        except BaseException as e:
            rc = _child_failed(sync_w, stage, e)
        finally:
            os._exit(rc)
    os.close(own_pidns)
    os.close(sync_w)
    warnings, error, _ = _parse_lines(_read_all(sync_r))
    os.close(sync_r)
    if error is not None:
        protocol.send(sock, protocol.FAILED, id=cid, pid=pid, **error)
    else:
        protocol.send(sock, protocol.STARTED, id=cid, pid=pid, warnings=warnings)


def serve(sock: socket.socket, spares: bool = True) -> None:
    filters: dict = {}
    try:  # warm: the default profile's filter for the default capabilities
        prepare_filter(ContainerSpec(id="warm", rootfs="/", argv=("true",),
                                     capabilities=security.resolve_capabilities()), filters)
    except Failure:
        pass
    R.plan_rootfs(R.RootfsOptions(rootfs="/"))  # warm the masked-path glob cache
    gc.collect()
    gc.freeze()  # children do not walk (and copy-on-write) the zygote's objects
    protocol.send(sock, protocol.HELLO, pid=os.getpid())
    # A spare is cloned once a start shows one would be used (spare_fits), and kept while starts
    # fit: stacks on pysup's networks or on cgroup v2 never use one (~5 MB of a process, saved).
    spare: Spare | None = None
    want_spare = False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    registered: set = set()
    try:
        while True:
            for fd in list(PENDING):
                if fd not in registered:
                    poller.register(fd, select.POLLIN)
                    registered.add(fd)
            ready = poller.poll()
            sock_ready = False
            for fd, _ev in ready:
                if fd == sock.fileno():
                    sock_ready = True
                elif fd in PENDING:
                    if finish_pending(sock, fd):
                        poller.unregister(fd)
                        registered.discard(fd)
            if not sock_ready:
                continue
            try:
                got = protocol.recv(sock)
            except protocol.ProtocolError as e:
                protocol.send(sock, protocol.ERROR, message=str(e))
                continue
            if got is None:
                return
            msg, fds = got
            try:
                if msg["type"] == protocol.SHUTDOWN:
                    return
                if msg["type"] == protocol.START:
                    spare, fits = handle_start(sock, msg, fds, filters, spare)
                    want_spare = want_spare if fits is None else fits
                elif msg["type"] == protocol.EXEC:
                    handle_exec(sock, msg, fds, filters)
                else:
                    protocol.send(sock, protocol.ERROR, message=f"unexpected message {msg['type']}")
            finally:
                for fd in fds:
                    os.close(fd)
            if spare is None and spares and want_spare:
                spare = Spare.spawn(sock)  # while the last start's child sets itself up
    finally:
        if spare is not None:
            spare.discard()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    fd = int(argv[1])
    S.prctl(S.PR_SET_PDEATHSIG, signal.SIGKILL)
    if len(argv) > 2 and os.getppid() != int(argv[2]):  # the supervisor died before PDEATHSIG was set
        return 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    try:
        serve(sock, spares=os.environ.get("PYSUP_ZYGOTE_SPARE", "1") != "0")
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
