"""The container's filesystem as a plan: a tuple of frozen steps, computed from options, then applied.

`plan_rootfs(opts)` is pure: it returns a `RootfsPlan` that unit tests compare as data.
`apply(plan, sc)` performs it through a `Syscalls` object, inside the container's fresh mount
namespace, as the container's PID 1 (so /proc is its own):

1. `/` becomes MS_SLAVE|MS_REC: nothing mounted here propagates back to the host.
2. with a writable layer, an overlayfs (lower: the rootfs; upper and work: in the container's state
   directory) becomes the root; the root is bind-mounted onto itself (a mount point, for
   pivot_root), made private and nodev.
3. /proc, /dev (a nodev tmpfs with the host's six default device nodes bound in, own devpts, shm,
   mqueue, symlinks), /sys read-only. Every writable mount is nodev, the root included, so a node
   made with CAP_MKNOD cannot be opened even before a devices cgroup exists.
   Namespaced sysctls are written to the fresh /proc right after it is mounted; with `init`, the
   host's static tini is bound read-only at /dev/init.
4. the service's bind mounts and tmpfs, parents first; generated /etc/hostname, hosts, resolv.conf
   (written on a private tmpfs over the container's state directory, then bound in).
5. pivot_root(".", ".") then the old root detached (MNT_DETACH): no path leads back to the host and
   no put_old directory is left in the rootfs (runc's way).
6. read-only root (bind remount) when asked; masked paths (files: /dev/null bound over them,
   checked to be char 1:3 first; directories: an empty read-only tmpfs) and read-only paths.

Every target is resolved inside the rootfs component by component (`secure_join`, like runc's
securejoin: symlinks are followed as if the rootfs were `/`), then pinned with an O_PATH fd and
mounted onto `/proc/self/fd/N`. Nothing needs undoing on the host: every mount lives in the
container's mount namespace and goes away with it.

Imports: standard library only (the zygote imports this; steps are `record.py` records).
"""

from __future__ import annotations

import collections
import errno
import functools
import glob
import os
import stat
from collections.abc import Callable, Iterable

from .record import record

from .. import syscalls as S
from ..syscalls import Syscalls, SyscallError
from .spec import MountSpec

DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/sys/devices/virtual/tpm",
    "/sys/devices/system/cpu/cpu*/thermal_throttle",  # expanded against the host's /sys at plan time
)
DEFAULT_READONLY_PATHS: tuple[str, ...] = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# (name, major, minor): OCI's default devices; the mode is always 0666 character device.
DEFAULT_DEVICES: tuple[tuple[str, int, int], ...] = (
    ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
)
DEFAULT_DEV_SYMLINKS: tuple[tuple[str, str], ...] = (
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
)

_NOSUID_NODEV_NOEXEC = S.MS_NOSUID | S.MS_NODEV | S.MS_NOEXEC
ROOT_FLAGS = S.MS_NODEV  # per-mount flags of the container's root (kept by the read-only remount)


# --- steps -------------------------------------------------------------------------------------
# Each step's `stage` names it in a StageError when it fails ("mount /proc", "mask /proc/kcore").


@record
class Mount:
    """mount(source, <rootfs>/target, fstype, flags, data). `create` makes the target a "dir" or
    "file" first. `propagation` (MS_PRIVATE, ...) and `remount` flags (MS_BIND|MS_REMOUNT|...)
    are applied to the same pinned target afterwards."""

    target: str
    fstype: str | None
    source: str | None = None
    flags: int = 0
    data: str | None = None
    create: str = "dir"
    propagation: int = 0
    remount: int = 0

    @property
    def stage(self) -> str:
        return f"mount {self.target}"


@record
class Mknod:
    path: str  # in the container
    major: int
    minor: int
    mode: int = 0o666

    @property
    def stage(self) -> str:
        return f"mknod {self.path}"


@record
class Symlink:
    target: str
    path: str

    @property
    def stage(self) -> str:
        return f"symlink {self.path}"


@record
class HostTmpfs:
    """A small tmpfs over a host directory, inside the container's mount namespace only: generated
    files are written there (fast, never on the host's disk) and bound into the rootfs; the host
    sees an empty directory, and the files die with the container's mounts."""

    path: str

    @property
    def stage(self) -> str:
        return f"mount tmpfs {self.path}"


@record
class WriteHostFile:
    """A generated file written on the host side (the container's state directory)."""

    path: str
    content: str

    @property
    def stage(self) -> str:
        return f"write {self.path}"


@record
class Sysctl:
    """Write `value` to /proc/sys/<key> of the container's own procfs (mounted just before)."""

    key: str
    value: str

    @property
    def stage(self) -> str:
        return f"sysctl {self.key}"


@record
class MaskPath:
    path: str

    @property
    def stage(self) -> str:
        return f"mask {self.path}"


@record
class ReadonlyPath:
    path: str

    @property
    def stage(self) -> str:
        return f"readonly {self.path}"


@record
class ReadonlyRoot:
    stage = "readonly root"


Step = Mount | Mknod | Symlink | HostTmpfs | WriteHostFile | Sysctl | MaskPath | ReadonlyPath | ReadonlyRoot


@record
class Overlay:
    """A writable layer: overlayfs of `lower` (the rootfs, never written) + `upper`/`work` (in the
    container's state directory, discarded with it), mounted at `merged`, which becomes the root."""

    lower: str  # overlayfs lowerdir: one directory, or several joined by ":" (top first)
    upper: str | None  # None: a read-only overlay of the lower layers (an image of several layers)
    work: str | None
    merged: str

    @property
    def data(self) -> str:
        if self.upper is None:
            return f"lowerdir={self.lower}"
        return f"lowerdir={self.lower},upperdir={self.upper},workdir={self.work}"


@record
class RootfsPlan:
    """`before_pivot` run with host paths resolved inside `rootfs`; `after_pivot` with the container's.
    With `overlay`, `rootfs` is its `merged` directory."""

    rootfs: str
    before_pivot: tuple[Step, ...]
    after_pivot: tuple[Step, ...]
    overlay: Overlay | None = None
    # The host's own "/" (image: host): bound recursively at `rootfs` (a directory of the state dir)
    # and made read-only with every mount below it, before anything is mounted over it.
    host_view: bool = False


@record(kw_only=True)
class RootfsOptions:
    rootfs: str
    read_only: bool = False
    mounts: tuple[MountSpec, ...] = ()
    masked_paths: tuple[str, ...] = DEFAULT_MASKED_PATHS
    readonly_paths: tuple[str, ...] = DEFAULT_READONLY_PATHS
    generated_files: tuple[tuple[str, str, str], ...] = ()  # (container path, host path, content)
    generated_dir: str | None = None  # host directory holding them: a private tmpfs is mounted there first
    mount_sys: bool = True
    # /sys as a read-only recursive bind of the host's instead of a new sysfs: a user namespace may
    # mount sysfs only when it owns the network namespace, and a prepared (pod-like) or the host's
    # network namespace is owned by the host's (runc binds /sys likewise then)
    sys_from_host: bool = False
    mqueue: bool = True
    sysctls: tuple[tuple[str, str], ...] = ()  # (dotted key, value), already checked as namespaced
    init_binary: str | None = None  # a host binary bound read-only at /dev/init
    layer_dir: str | None = None  # a writable overlay layer (upper, work, merged) here; None: the rootfs itself
    lower_layers: tuple[str, ...] = ()  # more image layers below `rootfs` (top first)
    mount_dir: str | None = None  # where a root that is not `rootfs` itself is assembled (host view, layers)
    host_view: bool = False  # `rootfs` is the host's "/" (image: host): bound at `mount_dir`, read-only
    sys_glob_root: str = "/"  # where masked-path globs under /sys are expanded (tests point it elsewhere)


class MountPlanError(ValueError):
    """A mount request that cannot be planned (relative target, missing source, ...)."""


# --- planning ----------------------------------------------------------------------------------


def _tmpfs_data(size: int | None, mode: int | None) -> str | None:
    parts = []
    if mode is not None:
        parts.append(f"mode={mode:o}")
    if size is not None:
        parts.append(f"size={size}")
    return ",".join(parts) or None


def _user_mount(m: MountSpec) -> Mount:
    if not os.path.isabs(m.target):
        raise MountPlanError(f"mount target {m.target!r} is not absolute")
    extra = 0
    for opt in m.options:
        if opt not in S.MOUNT_FLAG_NAMES:
            raise MountPlanError(f"unknown mount option {opt!r} for {m.target}")
        extra |= S.MOUNT_FLAG_NAMES[opt]
    if m.type == "tmpfs":
        flags = S.MS_NOSUID | S.MS_NODEV | S.MS_NOEXEC | extra | (S.MS_RDONLY if m.read_only else 0)
        return Mount(m.target, "tmpfs", "tmpfs", flags, _tmpfs_data(m.tmpfs_size, m.tmpfs_mode))
    if m.type != "bind":
        raise MountPlanError(f"unsupported mount type {m.type!r} for {m.target}")
    if not m.source or not os.path.isabs(m.source):
        raise MountPlanError(f"bind mount source {m.source!r} for {m.target} is not an absolute path")
    if m.propagation not in ("private", "rprivate", "slave", "rslave"):
        raise MountPlanError(f"propagation {m.propagation!r} for {m.target}: only (r)private and (r)slave")
    remount = S.MS_BIND | S.MS_REMOUNT | S.MS_NOSUID | S.MS_NODEV | extra | (S.MS_RDONLY if m.read_only else 0)
    return Mount(
        m.target, None, m.source,
        S.MS_BIND | (S.MS_REC if m.recursive else 0),
        create="auto",
        propagation=S.MOUNT_FLAG_NAMES[m.propagation],
        remount=remount,
    )


def expand_globs(paths: Iterable[str], root: str = "/") -> tuple[str, ...]:
    """Masked-path globs expanded against `root` (the host's /sys: same kernel, same CPUs).
    Cached: the zygote expands once and every container start reuses it (a glob of /sys costs ~1 ms)."""
    return _expand_globs(tuple(paths), root)


@functools.lru_cache(maxsize=32)
def _expand_globs(paths: tuple[str, ...], root: str) -> tuple[str, ...]:
    out: list[str] = []
    for p in paths:
        if any(c in p for c in "*?["):
            base = root.rstrip("/")
            out += sorted(m[len(base):] for m in glob.glob(base + p))
        else:
            out.append(p)
    return tuple(out)


def plan_rootfs(opts: RootfsOptions) -> RootfsPlan:
    """The whole filesystem set-up as data. Raises `MountPlanError` for a bad request."""
    rootfs = os.path.abspath(opts.rootfs)
    overlay = None
    host_view = opts.host_view
    layers = (rootfs, *(os.path.abspath(p) for p in opts.lower_layers))
    if host_view:
        if opts.lower_layers or not opts.read_only or not opts.mount_dir:
            raise MountPlanError("the host's root (image: host) is only available read-only, alone, with a state "
                                 "directory")
        rootfs = os.path.abspath(opts.mount_dir)
    elif opts.layer_dir and not opts.read_only:
        for path in (*layers, opts.layer_dir):
            if any(c in path for c in ",:\\"):
                raise MountPlanError(f"a writable layer cannot use {path!r} (',', ':' or '\\' in the path)")
        d = os.path.abspath(opts.layer_dir)
        overlay = Overlay(":".join(layers), f"{d}/upper", f"{d}/work", f"{d}/merged")
        rootfs = overlay.merged
    elif opts.lower_layers:
        if not opts.mount_dir:
            raise MountPlanError("an image of several layers needs a state directory")
        for path in layers:
            if any(c in path for c in ",:\\"):
                raise MountPlanError(f"an image layer cannot be {path!r} (',', ':' or '\\' in the path)")
        overlay = Overlay(":".join(layers), None, None, os.path.abspath(opts.mount_dir))
        rootfs = overlay.merged
    steps: list[Step] = [
        Mount("/proc", "proc", "proc", _NOSUID_NODEV_NOEXEC),
        *(Sysctl(k, v) for k, v in opts.sysctls),
        # nodev: a device node the container makes (CAP_MKNOD is a default) cannot be opened here;
        # the default devices are bind mounts of the host's nodes, which keep their own flags.
        Mount("/dev", "tmpfs", "tmpfs", S.MS_NOSUID | S.MS_NODEV | S.MS_STRICTATIME, "mode=755,size=65536k"),
    ]
    steps += [Mount(f"/dev/{name}", None, f"/dev/{name}", S.MS_BIND, create="file")
              for name, _major, _minor in DEFAULT_DEVICES]
    steps += [
        Mount("/dev/pts", "devpts", "devpts", S.MS_NOSUID | S.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"),
        Mount("/dev/shm", "tmpfs", "shm", _NOSUID_NODEV_NOEXEC, "mode=1777,size=65536k"),
    ]
    if opts.mqueue:
        steps.append(Mount("/dev/mqueue", "mqueue", "mqueue", _NOSUID_NODEV_NOEXEC))
    steps += [Symlink(t, p) for t, p in DEFAULT_DEV_SYMLINKS]
    if opts.init_binary:
        steps.append(Mount("/dev/init", None, opts.init_binary, S.MS_BIND, create="file",
                           remount=S.MS_BIND | S.MS_REMOUNT | S.MS_RDONLY | S.MS_NOSUID | S.MS_NODEV))
    if opts.mount_sys:
        if opts.sys_from_host:
            steps.append(Mount("/sys", None, "/sys", S.MS_BIND | S.MS_REC, propagation=S.MS_PRIVATE | S.MS_REC,
                               remount=S.MS_BIND | S.MS_REMOUNT | S.MS_RDONLY | _NOSUID_NODEV_NOEXEC))
        else:
            steps.append(Mount("/sys", "sysfs", "sysfs", _NOSUID_NODEV_NOEXEC | S.MS_RDONLY))
    # Parents before children, like Docker's sort by path depth (stable for equal depth).
    user = sorted(opts.mounts, key=lambda m: len([p for p in os.path.normpath(m.target).split("/") if p]))
    steps += [_user_mount(m) for m in user]
    user_targets = {os.path.normpath(m.target) for m in opts.mounts}
    if opts.generated_dir and opts.generated_files:
        steps.append(HostTmpfs(opts.generated_dir))
    for target, host, content in opts.generated_files:
        if target in user_targets:
            continue  # the service mounts its own file there
        steps.append(WriteHostFile(host, content))
        # Bound from our own private tmpfs: the bind is private already, no propagation change.
        steps.append(Mount(target, None, host, S.MS_BIND, create="file",
                           remount=S.MS_BIND | S.MS_REMOUNT | S.MS_NOSUID | S.MS_NODEV | S.MS_NOEXEC
                           | (S.MS_RDONLY if opts.read_only else 0)))
    after: list[Step] = []
    if opts.read_only:
        after.append(ReadonlyRoot())
    after += [MaskPath(p) for p in expand_globs(opts.masked_paths, opts.sys_glob_root)]
    after += [ReadonlyPath(p) for p in opts.readonly_paths]
    return RootfsPlan(rootfs, tuple(steps), tuple(after), overlay, host_view)


# --- safe path resolution ----------------------------------------------------------------------


def secure_join(root: str, unsafe: str, *, lstat: Callable[[str], os.stat_result] = os.lstat,
                readlink: Callable[[str], str] = os.readlink) -> str:
    """`root` + `unsafe`, with every symlink on the way resolved as if `root` were `/`.

    `..` never climbs above `root`; an absolute link target restarts at `root`; components that do
    not exist are kept as they are. The result is always `root` or a path under it (runc's
    filepath-securejoin, same semantics). Raises SyscallError(ELOOP) after 255 links.
    """
    root = os.path.abspath(root)
    base = "" if root == "/" else root
    pending = collections.deque(unsafe.split("/"))
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = base + "/" + "/".join([*resolved, part])
        try:
            st = lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        except NotADirectoryError:
            raise SyscallError(errno.ENOTDIR, "resolve", unsafe) from None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 255:
                raise SyscallError(errno.ELOOP, "resolve", unsafe)
            link = readlink(candidate)
            if link.startswith("/"):
                resolved = []
            pending.extendleft(reversed(link.split("/")))
            continue
        resolved.append(part)
    return base + "/" + "/".join(resolved) if resolved else (root if root != "" else "/")


# --- applying ----------------------------------------------------------------------------------


class _Applier:
    def __init__(self, sc: Syscalls, root: str, *, exists: Callable[[str], bool] = os.path.lexists,
                 isdir: Callable[[str], bool] = os.path.isdir):
        self.sc = sc
        self.root = root
        self.exists = exists
        self.isdir = isdir
        self._null: str | None = None  # /dev/null in this root, checked to be 1:3 once

    def resolve(self, path: str) -> str:
        return secure_join(self.root, path)

    def ensure(self, path: str, kind: str) -> str:
        """Resolve `path` in the root, creating missing parents (directories) and the target itself."""
        host = self.resolve(path)
        base = "" if self.root == "/" else self.root.rstrip("/")
        # Every component between the root and `host` is a real directory or missing (secure_join
        # followed every link): create the missing ones, parents first.
        cur = base
        for comp in [p for p in host[len(base):].split("/") if p][:-1]:
            cur += "/" + comp
            if not self.exists(cur):
                self.sc.mkdir(cur, 0o755)
        if not self.exists(host):
            if kind == "file":
                self.sc.touch(host, 0o644)
            else:
                self.sc.mkdir(host, 0o755)
        return host

    def mount(self, step: Mount) -> None:
        kind = step.create
        if kind == "auto":
            if step.source is None or not self.exists(step.source):
                raise SyscallError(errno.ENOENT, "bind mount source", step.source)
            kind = "dir" if self.isdir(step.source) else "file"
        host = self.ensure(step.target, kind)
        with self.sc.pinned(host, self.root) as t:
            self.sc.mount(step.source, t, step.fstype, step.flags, step.data)
        if step.propagation or step.remount:
            # Pin again: the mount above covered the old inode.
            with self.sc.pinned(host, self.root) as t:
                if step.propagation:
                    self.sc.mount(None, t, None, step.propagation, None)
                if step.remount:
                    self.sc.mount(None, t, None, step.remount | self.sc.locked_flags(t), None)

    def run(self, step: Step) -> None:
        if isinstance(step, Mount):
            self.mount(step)
        elif isinstance(step, Mknod):
            self.sc.mknod(self.resolve(step.path), stat.S_IFCHR | step.mode, os.makedev(step.major, step.minor))
        elif isinstance(step, Symlink):
            self.sc.symlink(step.target, self.resolve(step.path))
        elif isinstance(step, Sysctl):
            self.sc.write_file(self.resolve("/proc/sys/" + step.key.replace(".", "/")), step.value.encode(), 0o644)
        elif isinstance(step, HostTmpfs):
            if not self.exists(step.path):
                self.sc.mkdir(step.path, 0o755)
            self.sc.mount("tmpfs", step.path, "tmpfs", _NOSUID_NODEV_NOEXEC, "size=256k,mode=755")
        elif isinstance(step, WriteHostFile):
            self.sc.write_file(step.path, step.content.encode(), 0o644)
        elif isinstance(step, ReadonlyRoot):
            self.sc.mount(None, "/", None, S.MS_BIND | S.MS_REMOUNT | S.MS_RDONLY | ROOT_FLAGS | self.sc.locked_flags("/"),
                          None)
        elif isinstance(step, MaskPath):
            self.mask(step.path)
        elif isinstance(step, ReadonlyPath):
            host = self.resolve(step.path)
            if not self.exists(host):
                return
            with self.sc.pinned(host, self.root) as t:
                self.sc.mount(t, t, None, S.MS_BIND | S.MS_REC, None)
            with self.sc.pinned(host, self.root) as t:
                self.sc.mount(None, t, None, S.MS_BIND | S.MS_REMOUNT | S.MS_RDONLY | _NOSUID_NODEV_NOEXEC
                              | self.sc.locked_flags(t), None)
        else:  # pragma: no cover - exhaustive
            raise TypeError(step)

    def mask(self, path: str) -> None:
        host = self.resolve(path)
        if not self.exists(host):
            return
        with self.sc.pinned(host, self.root) as t:
            if self.isdir(host):
                self.sc.mount("tmpfs", t, "tmpfs", S.MS_RDONLY | _NOSUID_NODEV_NOEXEC, "mode=555")
            else:
                if self._null is None:
                    self._null = self.resolve("/dev/null")
                    check_dev_null(self._null)
                self.sc.mount(self._null, t, None, S.MS_BIND, None)


def check_dev_null(path: str) -> None:
    """runc's CVE-2025-31133 fix: only ever mask with a real 1:3 character device."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return  # a recording fake created nothing: nothing to check
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        raise SyscallError(errno.EPERM, "mask (not a 1:3 char device)", path)


class StageError(Exception):
    """A set-up step failed: `stage` says which (`mount /proc`), `cause` the OSError."""

    def __init__(self, stage: str, cause: BaseException):
        super().__init__(f"{stage}: {cause}")
        self.stage = stage
        self.cause = cause

    @property
    def errno(self) -> int | None:
        return getattr(self.cause, "errno", None)


def prepare_root(sc: Syscalls, rootfs: str, overlay: Overlay | None = None, host_view: bool = False) -> None:
    try:
        sc.mount(None, "/", None, S.MS_SLAVE | S.MS_REC, None)
    except OSError as e:
        raise StageError("make / rslave", e) from e
    if overlay is not None:
        try:
            dirs = [overlay.merged] if overlay.upper is None else [
                os.path.dirname(overlay.upper), overlay.upper, overlay.work, overlay.merged]
            for d in dirs:
                sc.mkdir(d, 0o755)
            flags = ROOT_FLAGS | (S.MS_RDONLY if overlay.upper is None else 0)
            sc.mount("overlay", overlay.merged, "overlay", flags, overlay.data)
        except OSError as e:
            raise StageError(f"overlay {overlay.lower}", e) from e
    if host_view:
        try:
            sc.mkdir(rootfs, 0o755)
            sc.mount("/", rootfs, None, S.MS_BIND | S.MS_REC, None)
            # Private, every mount of it, before it is made read-only: the copies are slaves of the
            # host's (the namespace is rslave), and a mount the host made later under a shared one
            # (systemd makes / shared) would propagate in, writable.
            sc.mount(None, rootfs, None, S.MS_PRIVATE | S.MS_REC, None)
            # Every mount of the host's tree read-only, in one call: a bind remount would only do the top one.
            sc.mount_setattr(rootfs, S.MOUNT_ATTR_RDONLY, recursive=True)
        except OSError as e:
            raise StageError("bind the host's root", e) from e
    try:
        sc.mount(rootfs, rootfs, None, S.MS_BIND | S.MS_REC, None)
        sc.mount(None, rootfs, None, S.MS_PRIVATE, None)
        # nodev on the root too: with no devices cgroup yet, this is what keeps CAP_MKNOD harmless.
        sc.mount(None, rootfs, None, S.MS_BIND | S.MS_REMOUNT | ROOT_FLAGS | sc.locked_flags(rootfs), None)
    except OSError as e:
        raise StageError(f"bind rootfs {rootfs}", e) from e


def pivot(sc: Syscalls, rootfs: str) -> None:
    """pivot_root(".", "."): the old root is stacked on "/" and detached at once; nothing is left
    in the rootfs (runc's libcontainer/rootfs_linux.go pivotRoot)."""
    try:
        sc.chdir(rootfs)
        sc.pivot_root(".", ".")
        sc.mount(None, ".", None, S.MS_SLAVE | S.MS_REC, None)  # no unmount event reaches the host
        sc.umount2(".", S.MNT_DETACH)
        sc.chdir("/")
    except OSError as e:
        raise StageError("pivot_root", e) from e


def apply(plan: RootfsPlan, sc: Syscalls, *, exists: Callable[[str], bool] = os.path.lexists,
          isdir: Callable[[str], bool] = os.path.isdir) -> None:
    """Perform the plan: prepare, steps, pivot_root, post-pivot steps. Raises `StageError`."""
    prepare_root(sc, plan.rootfs, plan.overlay, plan.host_view)
    before = _Applier(sc, plan.rootfs, exists=exists, isdir=isdir)
    for step in plan.before_pivot:
        try:
            before.run(step)
        except OSError as e:
            raise StageError(step.stage, e) from e
    pivot(sc, plan.rootfs)
    after = _Applier(sc, "/", exists=exists, isdir=isdir)
    for step in plan.after_pivot:
        try:
            after.run(step)
        except OSError as e:
            raise StageError(step.stage, e) from e
