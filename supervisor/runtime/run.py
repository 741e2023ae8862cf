"""`pysup run`: one container in the foreground, like `docker run`, without trio or a zygote.

    code = run_container(RunRequest(argv=("/bin/sh",), rootfs="/srv/root", memory="64m"))

What it does, in order (each step undone in reverse, even on failure):
1. resolve the root filesystem: `--rootfs DIR`, an image of the local store (`pysup image import`),
   or `host` (a read-only view of the host's filesystem, private /tmp, /run and /var/tmp);
2. named volumes (`-v NAME:/dst`) created on first use under `paths.volumes_dir()` and kept;
   anonymous ones (`-v /dst`) made under `volumes_dir/.anonymous/<id>` and removed with it
   (`volumes.py`);
3. a user namespace (`--userns auto`): a host id range allocated (`userns.allocate`) and freed;
4. with `--memory`, `--cpus` or `--pids-limit`: a cgroup `pysup/run/<id>` (supervisor.cgroups),
   joined by the container before it execs, removed afterwards;
5. `run_oneshot`: stdio passed through, signals forwarded, the container's exit status returned.

A one-shot run must start fast: this module imports nothing heavy at the top; the cgroup driver
(and its imports) is loaded only when a limit is asked for.

Errors: `RunError` (a PysupError, exit status 125) for anything pysup refuses or fails to set up;
`RuntimeSetupError` keeps Docker's 126 (not executable) and 127 (not found).
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable

from .. import paths
from ..errors import PysupError
from . import volumes
from .errors import RuntimeSetupError

TYPE_CHECKING = False  # typing costs ~1.5 ms of `pysup run`'s start; `Any` is for annotations only
if TYPE_CHECKING:
    from typing import Any


class RunError(PysupError):
    """`pysup run` could not set the container up: one line, exit status 125 like Docker."""

    exit_code = 125


class RunRequest:
    """`pysup run`'s options, with `docker run`'s names and syntax (strings as typed)."""

    __slots__ = ("argv", "rootfs", "image", "name", "env", "volumes", "workdir", "user", "hostname", "read_only",
                 "cap_add", "cap_drop", "privileged", "network", "init", "memory", "cpus", "pids_limit",
                 "security_opt", "tmpfs", "ulimits", "sysctls", "userns", "rm")

    def __init__(self, argv: tuple[str, ...] | list[str], *, rootfs: str | None = None, image: str | None = None,
                 name: str | None = None, env: tuple[str, ...] = (), volumes: tuple[str, ...] = (),
                 workdir: str | None = None, user: str | None = None, hostname: str | None = None,
                 read_only: bool = False, cap_add: tuple[str, ...] = (), cap_drop: tuple[str, ...] = (),
                 privileged: bool = False, network: str | None = None, init: bool = False,
                 memory: str | None = None, cpus: str | None = None, pids_limit: int | None = None,
                 security_opt: tuple[str, ...] = (), tmpfs: tuple[str, ...] = (), ulimits: tuple[str, ...] = (),
                 sysctls: tuple[str, ...] = (), userns: str | None = None, rm: bool = True):
        self.argv = tuple(argv)
        self.rootfs, self.image, self.name = rootfs, image, name
        self.env, self.volumes, self.tmpfs = tuple(env), tuple(volumes), tuple(tmpfs)
        self.workdir, self.user, self.hostname, self.read_only = workdir, user, hostname, read_only
        self.cap_add, self.cap_drop, self.privileged = tuple(cap_add), tuple(cap_drop), privileged
        self.network, self.init = network, init
        self.memory, self.cpus, self.pids_limit = memory, cpus, pids_limit
        self.security_opt, self.ulimits, self.sysctls = tuple(security_opt), tuple(ulimits), tuple(sysctls)
        self.userns, self.rm = userns, rm

    @property
    def has_limits(self) -> bool:
        return bool(self.memory or self.cpus or self.pids_limit is not None)


def split_volume_args(args: tuple[str, ...]) -> tuple[list[str], list[tuple[str, str, str]], list[str]]:
    """`-v` arguments → (host binds `SRC:DST[:OPTS]`, named volumes (name, DST, OPTS), anonymous DSTs)."""
    binds, named, anonymous = [], [], []
    for text in args:
        parts = text.split(":")
        if len(parts) == 1:
            if not os.path.isabs(parts[0]):
                raise RunError(f"volume {text!r}: an anonymous volume needs an absolute target")
            anonymous.append(os.path.normpath(parts[0]))
        elif os.path.isabs(parts[0]) or parts[0].startswith("."):
            binds.append(text)
        else:
            if len(parts) > 3 or not os.path.isabs(parts[1]):
                raise RunError(f"volume {text!r}: expected NAME:DST[:ro]")
            try:
                volumes.check_name(parts[0])
            except volumes.VolumeError as e:
                raise RunError(str(e)) from None
            opts = parts[2] if len(parts) == 3 else ""
            # idmap: accepted and dropped, as in a compose file: a volume is idmapped anyway
            bad = [o for o in opts.split(",") if o and o not in ("ro", "rw", "idmap")]
            if bad:
                raise RunError(f"volume {text!r}: unknown option {bad[0]!r} (ro, rw or idmap)")
            named.append((parts[0], os.path.normpath(parts[1]), opts))
    return binds, named, anonymous


def run_container(req: RunRequest, *, environ: Any = None, stdio: tuple[int, int, int] = (0, 1, 2),
                  warn: Callable[[str], None] | None = None) -> int:
    """Run the request to its end; the container's exit status (Docker's conventions). Call it
    from the main thread of a single-threaded process (it clones the container itself)."""
    from .spec import UnsupportedOption, resolve_root

    cid = req.name or os.urandom(16).hex()  # not uuid: importing it costs ~2 ms of a one-shot start
    if req.rootfs and not os.path.isdir(req.rootfs):
        raise RunError(f"--rootfs {req.rootfs}: not a directory")
    try:
        images = None
        if req.image and req.image != "host" and environ is not None:
            from ..images.store import ImageStore

            images = ImageStore(paths.images_dir(environ))
        rootfs, lower, host_view = resolve_root(service_name=None, rootfs=req.rootfs, image=req.image, images=images)
    except UnsupportedOption as e:
        raise RunError(str(e)) from None
    if req.image and not req.rootfs and not host_view:  # a pulled image's Entrypoint, Cmd, Env, WorkingDir, User
        from ..images.config import ImageConfigError, apply_to_run

        try:
            apply_to_run(req, images)
        except ImageConfigError as e:
            raise RunError(str(e)) from None
    if not req.argv:
        raise RunError("no command given (pysup run ... -- CMD [ARG...]), and the image has none")
    binds, named, anonymous = split_volume_args(req.volumes)
    state_root = paths.containers_dir(environ)
    # Until the container runs (run_oneshot then forwards them), SIGTERM and SIGHUP end the run
    # like Ctrl-C: through the undo steps below, with 128 + the signal as the exit status.
    old_handlers = {sig: signal.signal(sig, _exit_on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return _run(req, cid, rootfs, lower, host_view, binds, named, anonymous, state_root, environ, stdio, warn)
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)


def _exit_on_signal(sig: int, _frame: object) -> None:
    raise SystemExit(128 + sig)


def _run(req: RunRequest, cid: str, rootfs: str, lower: tuple[str, ...], host_view: bool, binds: list[str],
         named: list[tuple[str, str, str]], anonymous: list[str], state_root: str, environ: Any,
         stdio: tuple[int, int, int], warn: Callable[[str], None] | None) -> int:
    from .oneshot import run_oneshot
    from .spec import MountSpec, UnsupportedOption, for_run, host_view_mounts

    if os.path.exists(os.path.join(state_root, cid)):
        raise RunError(f"container {cid} already exists ({os.path.join(state_root, cid)})")
    undo: list[Callable[[], None]] = []
    try:
        try:
            spec = for_run(req.argv, rootfs=rootfs, id=cid, env=req.env, volumes=tuple(binds), workdir=req.workdir,
                           user=req.user, hostname=req.hostname, read_only=req.read_only or host_view,
                           cap_add=req.cap_add, cap_drop=req.cap_drop, privileged=req.privileged,
                           network=req.network, init=req.init, security_opt=req.security_opt, tmpfs=req.tmpfs,
                           ulimits=req.ulimits, sysctls=req.sysctls)
        except (UnsupportedOption, ValueError) as e:
            raise RunError(str(e)) from None
        uid_map: tuple[tuple[int, int, int], ...] = ()
        if req.userns and req.userns != "host":
            if req.userns not in ("auto", "true"):
                raise RunError(f"--userns {req.userns!r}: only auto (or host)")
            from . import userns

            try:
                first, count = userns.allocate(cid, environ=environ)
            except userns.UsernsError as e:
                raise RunError(str(e)) from None
            undo.append(lambda: userns.release(cid, environ=environ))
            uid_map = ((0, first, count),)
        extra: list[Any] = []
        vroot = paths.volumes_dir(environ)
        for name, dst, opts in named:
            extra.append(MountSpec(type="bind", source=os.path.join(vroot, name), target=dst,
                                   read_only="ro" in opts.split(","), owned=True))
        anon = volumes.anonymous_dir(cid, vroot)
        for i, dst in enumerate(anonymous):
            extra.append(MountSpec(type="bind", source=os.path.join(anon, str(i)), target=dst, owned=True))
        if extra:
            try:
                volumes.prepare(spec.replace(mounts=tuple(extra)), volumes_root=vroot,
                                       anonymous=anon if anonymous else None)
                if anonymous:  # removed with the container
                    undo.append(lambda: volumes.remove_anonymous(path=anon))
            except (volumes.VolumeError, OSError) as e:
                raise RunError(f"volumes: {e}") from None
        if host_view:
            extra += host_view_mounts([m.target for m in spec.mounts] + [m.target for m in extra])
        changes: dict[str, Any] = {}
        if extra:
            changes["mounts"] = spec.mounts + tuple(extra)
        if lower:
            changes["lower_layers"] = lower
        if host_view:
            changes["writable_layer"] = False
        if uid_map:
            changes["uid_map"] = uid_map
            # idmapped layers, host view and bind mounts (volumes too): host root's files are the
            # container root's, and what it writes is owned by host root on disk (any range reads it)
            changes["idmap"] = True
        if req.has_limits:
            procs, remove = make_cgroup(cid, req)
            undo.append(remove)
            changes["cgroup_procs"] = procs
        if changes:
            spec = spec.replace(**changes)
        try:
            return run_oneshot(spec, stdio=stdio, state_root=state_root, seccomp_cache=paths.seccomp_cache_dir(environ),
                               warn=warn)
        except RuntimeSetupError as e:
            raise name_flag(req, e) from None
        except OSError as e:
            raise RunError(f"container {cid}: {e}") from None
    except BaseException:
        failed = True
        raise
    else:
        failed = False
    finally:
        errors = []
        for fn in reversed(undo):
            try:
                fn()
            except Exception as e:  # keep undoing; report the first after
                errors.append(e)
        if errors and not failed:  # never hides the error that stopped the run
            raise RunError(f"container {cid}: clean-up: {errors[0]}")


def name_flag(req: RunRequest, exc: RuntimeSetupError) -> RuntimeSetupError:
    """The start failure with the option it comes from in front (`-u bob: ...`, `-v SRC:DST: ...`),
    so a person sees which part of the command line to fix; as it is when none applies."""
    stage = exc.stage or ""
    flag = None
    if stage == "rootfs":
        flag = f"--rootfs {req.rootfs}" if req.rootfs else f"image {req.image}"
    elif stage == "user" and req.user:
        flag = f"-u {req.user}"
    elif stage == "exec" and req.argv:
        flag = f"command {req.argv[0]}"
    elif stage.startswith("mount "):
        target = os.path.normpath(stage[len("mount "):])
        for opt, values in (("-v", req.volumes), ("--tmpfs", req.tmpfs)):
            for text in values:
                parts = text.split(":")
                dst = parts[0] if opt == "--tmpfs" or len(parts) == 1 else parts[1]
                if os.path.isabs(dst) and os.path.normpath(dst) == target:
                    flag = f"{opt} {text}"
                    break
            if flag:
                break
    if flag is None:
        return exc
    return RuntimeSetupError(f"{flag}: {exc}", stage=stage, errno=exc.errno, container=exc.container)


def parse_limits(req: RunRequest) -> Any:
    """`--memory 64m --cpus 0.5 --pids-limit 64` → config.model.Resources (from its light home)."""
    from ..config.resources import Resources
    from .spec import UnsupportedOption, _size

    try:
        memory = _size(req.memory) if req.memory else None
        cpus = float(req.cpus) if req.cpus else None
    except (UnsupportedOption, ValueError) as e:
        raise RunError(f"limits: {e}") from None
    if cpus is not None and cpus <= 0:
        raise RunError(f"--cpus {req.cpus}: must be above 0")
    if memory is not None and memory < 6 * 1024 * 1024:
        raise RunError(f"--memory {req.memory}: the minimum is 6m (as Docker)")
    return Resources(memory=memory, cpus=cpus, pids=req.pids_limit)


RUN_CGROUP_PARENT = "run"


def make_cgroup(cid: str, req: RunRequest, manager: Any = None) -> tuple[tuple[str, ...], Callable[[], None]]:
    """The cgroup `pysup/run/<cid>` with the request's limits: (cgroup.procs files, remove)."""
    from ..cgroups import CgroupError, open_manager

    resources = parse_limits(req)
    try:
        mgr = manager or open_manager()
        path = f"{RUN_CGROUP_PARENT}/{cid}"
        mgr.create(path, resources, service=cid)
    except CgroupError as e:
        raise RunError(f"cgroup for container {cid}: {e}") from None

    def remove() -> None:
        mgr.remove(path)
        for d in mgr.directories(RUN_CGROUP_PARENT).values():
            try:
                os.rmdir(d)  # only when no other `pysup run` uses it (EBUSY/ENOTEMPTY otherwise)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                    raise
        mgr.prune()

    try:
        return mgr.procs_files(path), remove
    except BaseException:
        remove()
        raise
