"""`pysup up`: the root nursery. Lock the project, clean a crashed run's leftovers, start the
runtime (zygote) and the cgroup event watcher, run the stack supervisor, turn signals into a
graceful stop (the first SIGINT/SIGTERM) or an immediate one (the second).

    code = trio.run(app.run, stack, UpOptions(...))
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import sys
from typing import Any

import attrs
import structlog
import trio

from . import paths
from .config.model import Stack
from .errors import PysupError
from .supervise.backend import ManagerCgroups
from .supervise.logs import Console
from .supervise.project import ProjectFiles
from .supervise.replica import Replica
from .supervise.restart import signal_name
from .supervise.supervisor import StackSupervisor

log = structlog.get_logger()


@attrs.frozen
class UpOptions:
    abort_on_container_exit: bool = False
    exit_code_from: str | None = None
    log_prefix: bool = True
    colour: bool | None = None  # None: on a TTY
    environ: Any = None  # paths' environment (None: os.environ)
    # Live reconcile (specs/reconcile.md): reloads the spec (a `config.load.Loaded`, or SpecError);
    # None: the spec is not watched. `watch_files`: more files to watch than `Stack.sources`.
    reload: Any = None
    watch_files: tuple[str, ...] = ()
    metrics: str | None = None  # ADDR:PORT of a Prometheus endpoint (supervisor/control/metrics.py)


def secret_mounts(stack: Stack, service: Any, secrets_dir: str, files: ProjectFiles | None = None) -> tuple:
    """Read-only binds for the service's secrets (/run/secrets/NAME) and configs (their target).
    A file-backed one binds the file; one given by content (environment, inline) is written to
    `secrets_dir` (mode 0400, or its `mode`) first."""
    from .runtime.spec import MountSpec

    mounts = []
    for refs, objects, kind in ((service.secrets, stack.secrets, "secret"), (service.configs, stack.configs, "config")):
        for ref in refs:
            obj = objects.get(ref.source)
            if obj is None:
                raise PysupError(f"services.{service.name}: {kind} {ref.source!r} is not defined")
            source = obj.file
            if source is None:
                if obj.content is None:
                    raise PysupError(f"services.{service.name}: {kind} {ref.source!r} has no file or content "
                                     "(external ones are not supported)")
                os.makedirs(secrets_dir, mode=0o700, exist_ok=True)
                source = os.path.join(secrets_dir, f"{kind}-{ref.source}")
                fd = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(obj.content)
                os.chmod(source, ref.mode if ref.mode is not None else (0o400 if kind == "secret" else 0o444))
                if files is not None:
                    files.add("files", source)
            mounts.append(MountSpec(type="bind", source=source, target=ref.target, read_only=True, recursive=False))
    return tuple(mounts)


def anonymous_volumes_dir(files: ProjectFiles) -> str:
    return os.path.join(files.state_dir, "anonymous-volumes")


def start_error_path(service: Any, exc: Any) -> tuple | None:
    """The spec key a container's start failure (`RuntimeSetupError`, by its stage) comes from:
    a missing rootfs, an unknown user, a missing command, a bad mount source; None for others."""
    stage = exc.stage or ""
    here = ("services", service.name)
    if stage == "rootfs":
        return (*here, "x-pysup", "rootfs") if service.x.rootfs else (*here, "image")
    if stage == "user" and service.user:
        return (*here, "user")
    if stage == "exec":
        return (*here, "entrypoint" if service.entrypoint else "command" if service.command else "image")
    if stage.startswith("mount "):
        target = os.path.normpath(stage[len("mount "):])
        for i, v in enumerate(service.volumes):
            if os.path.normpath(v.target) == target:
                return (*here, "volumes", i, "source")  # a short `SRC:DST` item: the item's own place
    return None


class LocatedRuntime:
    """The runtime, with a container's start failure naming its service's spec key and where it
    is (file:line:col), like a spec error: `compose.yaml:7:11: services.web.user: user: unable to
    find user bob ...`. Everything else is the runtime's. The place is looked up by the running
    stack's `Stack.locate`: in the files as they were when that stack was read, and for a service
    an edit left as it was (its new image still downloading) in the files its definition came
    from; a save that loaded but was not applied does not move them. (An old replica that restarts
    during a rolling update is located in the new files.)"""

    def __init__(self, runtime: Any, started_from: dict[str, Any]):
        self._runtime = runtime
        # container id -> (Service, Stack.locate) of the start under way, filled in by spec_builder
        # just before each start and taken here: only starts in flight keep a stack's files' map.
        self._started_from = started_from

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)

    async def start(self, spec: Any, **kw: Any) -> Any:
        from .runtime.errors import RuntimeSetupError

        service, locate = self._started_from.pop(spec.id, (None, None))
        try:
            return await self._runtime.start(spec, **kw)
        except RuntimeSetupError as exc:
            path = start_error_path(service, exc) if service is not None else None
            if path is None:
                raise
            from .errors import Problem

            problem = Problem(str(exc), path=path)
            if locate is not None:
                problem = locate([problem])[0]
            raise RuntimeSetupError(str(problem), stage=exc.stage, errno=exc.errno, container=exc.container) from None


def spec_builder(stack: Stack | Any, cgroups: ManagerCgroups, files: ProjectFiles, environ: Any = None,
                 network: Any = None, started_from: dict[str, Any] | None = None):
    """The replica → ContainerSpec function the supervisor calls before every start. `stack` may
    be a function returning the current stack (it changes when the spec is edited).
    `started_from` (container id -> (Service, Stack.locate)) is filled in for `LocatedRuntime`."""
    import attrs as _attrs

    from .runtime.spec import from_service
    from .runtime.volumes import named as named_volume

    volumes = paths.volumes_dir(environ)
    # Named volumes are the stack's (`<project>_<key>` unless named) and outlive the run; anonymous
    # ones belong to one container, survive its restarts, and go when the run ends.
    current = stack if callable(stack) else (lambda: stack)
    anonymous_root = anonymous_volumes_dir(files)
    cache: dict[Any, tuple] = {}
    userns_ranges: dict[str, tuple[int, int]] = {}  # container id -> its host id range, kept across restarts

    def userns_range(replica: Replica, project: str) -> tuple[int, int] | None:
        from .runtime import userns

        cid = replica.container_id
        if not userns.wanted(replica.service):
            return None
        if cid not in userns_ranges:
            userns_ranges[cid], give_back = userns.range_for(project, replica.service, cid, environ=environ)

            def release(kept_by: list[int]) -> None:
                userns_ranges.pop(cid, None)
                give_back(kept_by)

            # freed when the container is removed for good, or kept for what of it would not stop
            replica.removed_hooks.append(release)
        return userns_ranges[cid]

    def make(replica: Replica):
        stack = current()
        volume_names = {key: vol.name for key, vol in stack.volumes.items()}
        service = replica.service
        anonymous = os.path.join(anonymous_root, replica.container_id)
        try:
            for v in service.volumes:
                if v.type == "volume" and v.source:
                    named_volume(volume_names.get(v.source, v.source), volumes)  # in the 0700 volumes directory
            spec = from_service(service, id=replica.container_id, cgroup_procs=cgroups.procs_files(replica.cgroup),
                                volumes_dir=volumes, project_dir=stack.project_dir,
                                volume_names=volume_names, anonymous_dir=anonymous,
                                userns_range=userns_range(replica, stack.name))
        except ValueError as exc:  # UnsupportedOption, VolumeError
            raise PysupError(str(exc)) from None
        for m in spec.mounts:
            if m.source and m.source.startswith(anonymous + os.sep):
                # 0700 like the named volumes' directory: what a user namespace's root leaves in
                # its volumes (idmapped: as host root) is out of host users' reach
                os.makedirs(anonymous_root, mode=0o700, exist_ok=True)
                os.makedirs(m.source, exist_ok=True)
        # Per service and the definitions of what it mounts: an edited secret gets new mounts.
        key = (service, tuple(stack.secrets.get(r.source) for r in service.secrets),
               tuple(stack.configs.get(r.source) for r in service.configs))
        if key not in cache:
            cache[key] = secret_mounts(stack, service, files.secrets_dir, files)
        extra = cache[key]
        if extra:
            spec = _attrs.evolve(spec, mounts=spec.mounts + extra)
        files.add("containers", replica.container_id)
        files.add("cgroups", replica.cgroup)
        if network is not None:  # supervisor.net.stack.StackNetwork: join the replica's prepared netns
            spec = network.decorate(replica, spec)
        if started_from is not None:  # last: the start follows at once
            started_from[replica.container_id] = (service, stack.locate)
        return spec

    return make


async def run(stack: Stack, options: UpOptions = UpOptions()) -> int:
    from .cgroups import open_manager
    from .cgroups.events import open_cgroup_events
    from .net.stack import open_stack_network
    from .runtime.launcher import open_runtime

    files = ProjectFiles(stack.name, options.environ)
    files.lock()
    try:
        manager = open_manager()
        support = manager.support()
        if not support.ok:
            for line in support.describe()[1:]:
                log.warning("cgroups.limited", detail=line)
        removed = await trio.to_thread.run_sync(files.clean_leftovers, manager)
        for what in removed:
            log.warning("up.leftover_removed", removed=what)
        if removed:
            print(f"pysup: removed leftovers of a previous run of {stack.name!r}: " + "; ".join(removed),
                  file=sys.stderr, flush=True)
        # Anonymous volumes of a run that ended without cleaning up (pysup was killed).
        shutil.rmtree(anonymous_volumes_dir(files), ignore_errors=True)
        from .images.commands import ensure_images
        from .images.config import effective_stack
        from .images.store import ImageStore

        # pull_policy (the missing images by default), before the run's record: a failed pull leaves nothing
        await ensure_images(stack, options.environ)
        # the images' Healthcheck and StopSignal under the compose keys, for the supervisor
        stack = effective_stack(stack, ImageStore(paths.images_dir(options.environ)), check=True)
        files.start_record()
        colour = sys.stdout.isatty() if options.colour is None else options.colour
        console = Console(prefix=options.log_prefix, colour=colour)
        events_send, _events_recv = trio.open_memory_channel[Any](0)  # per-replica channels are used
        try:
            async with open_runtime(state_root=paths.containers_dir(options.environ)) as rt, \
                    open_cgroup_events(manager, events_send) as watcher, \
                    open_stack_network(stack, files.runtime_dir) as net:
                cgroups = ManagerCgroups(manager, watcher)
                started_from: dict[str, Any] = {}
                located = LocatedRuntime(rt, started_from)
                sup = StackSupervisor(stack, runtime=located, cgroups=cgroups,
                                      make_spec=spec_builder(lambda: sup.stack, cgroups, files, options.environ,
                                                             network=net, started_from=started_from),
                                      console=console, log_dir=files.log_dir,
                                      abort_on_container_exit=options.abort_on_container_exit,
                                      exit_code_from=options.exit_code_from)
                log.info("up.starting", project=stack.name, services=len(stack.services))
                async with trio.open_nursery() as n:
                    n.start_soon(_signals, sup)
                    await n.start(console.run)  # container output, off the trio loop
                    if net is not None:  # DNS servers; replicas' networks are removed as they end
                        await n.start(net.run)
                    from .control import protocol as control_protocol, server as control

                    await n.start(control.serve, control.Controller(sup, project=stack.name, net=net),
                                  control_protocol.socket_path(stack.name, options.environ))
                    if options.metrics:
                        from .control.metrics import serve_metrics

                        await n.start(serve_metrics, sup, options.metrics)
                    if options.reload is not None:
                        from .images.live import LiveImages
                        from .supervise.watch import watch_spec

                        gate = LiveImages(sup, environ=options.environ)  # pulls an edit's new images first
                        await n.start(gate.run)
                        await n.start(functools.partial(watch_spec, gate, options.reload, stack.sources,
                                                        extra=options.watch_files, prepare=net.apply))
                    n.start_soon(_settle_memory, sup)
                    code = await sup.run()
                    n.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                if await trio.to_thread.run_sync(_cleanup_project, manager, stack.name):
                    shutil.rmtree(anonymous_volumes_dir(files), ignore_errors=True)
                    files.finish_record()
        log.info("up.stopped", project=stack.name, exit_code=code)
        return code
    finally:
        files.unlock()


def _cleanup_project(manager: Any, project: str) -> bool:
    """Remove the project's cgroup (and the base if unused); False if something could not go
    (the record then stays for the next `up`)."""
    try:
        if manager.exists(project):
            manager.remove(project, timeout=10.0)
        manager.prune()
        return True
    except PysupError as exc:
        log.error("up.cgroup_not_removed", cgroup=project, error=str(exc))
        return False


async def _settle_memory(sup: StackSupervisor) -> None:
    """Once the stack's first start is done: collect the start-up's garbage (the spec's parse and
    validation, every replica's set-up) and give the freed heap back to the kernel (~1.5 MB with
    100 replicas). Not gc.freeze: objects that later become cyclic garbage (replaced replicas)
    would never be collected."""
    await sup._first_start_done.wait()
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


async def _signals(sup: StackSupervisor) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for sig in signals:
            count += 1
            if count == 1:
                print("Gracefully stopping... (press Ctrl+C again to force)", file=sys.stderr, flush=True)
                log.info("up.signal", signal=signal_name(sig), action="stop")
                sup.request_stop()
            else:
                log.warning("up.signal", signal=signal_name(sig), action="kill")
                sup.request_stop(kill=True)
