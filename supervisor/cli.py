"""The `pysup` command line: argument parsing and error reporting, no logic.

A `PysupError` becomes its message on stderr and exit status 1; only a bug shows a traceback.
Subcommands import what they need when they run, so a short command stays fast to start.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence

from . import __version__
from .errors import PysupError, SpecError

TYPE_CHECKING = False  # typing costs ~1.5 ms of `pysup run`'s start; `Any` is for annotations only
if TYPE_CHECKING:
    from typing import Any


def _project_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Compose accepts these before the subcommand (`pysup -f a.yaml config`) and after it; the
    # copies on subcommands must not reset what was given before it, hence SUPPRESS there.
    kw = {} if top else {"default": argparse.SUPPRESS}
    g = parser.add_argument_group("project options")
    g.add_argument("-f", "--file", dest="files", action="append", metavar="FILE",
                   help="compose file (repeat to merge several; '-' reads stdin)", **({"default": []} if top else kw))
    g.add_argument("-p", "--project-name", metavar="NAME", help="project name (default: from the file)", **kw)
    g.add_argument("--project-directory", metavar="DIR", help="base for relative paths (default: the first file's)", **kw)
    g.add_argument("--env-file", dest="env_files", action="append", metavar="FILE",
                   help="interpolation variables (default: .env in the project directory)", **kw)
    g.add_argument("--profile", dest="profiles", action="append", metavar="NAME",
                   help="enable services of this profile ('*' for all)", **kw)


def _add_run_parser(sub: Any) -> None:
    run = sub.add_parser("run", help="run one container in the foreground (like docker run)",
                         description="Run CMD in a new container, in the foreground; exit with its status "
                                     "(125: pysup failed, 126: CMD not executable, 127: CMD not found).",
                         usage="pysup run [OPTIONS] (--rootfs DIR | IMAGE) [--] CMD [ARG...]")
    run.add_argument("--rm", action="store_true", help="remove the container when it exits (always done: "
                     "pysup keeps no stopped containers)")
    run.add_argument("--rootfs", metavar="DIR", help="use DIR as the root filesystem (instead of an IMAGE)")
    run.add_argument("--name", metavar="NAME", help="the container's name (default: a random id)")
    run.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="set an environment variable")
    run.add_argument("-v", "--volume", dest="volumes", action="append", default=[], metavar="SRC:DST[:OPTS]",
                     help="bind a host path (absolute SRC), a named volume (SRC a name) or an anonymous one (DST); "
                     "OPTS: ro, rw, idmap (with --userns: a writable host path idmapped, root writes as host root)")
    run.add_argument("--tmpfs", action="append", default=[], metavar="DST[:size=N,mode=M]", help="mount a tmpfs")
    run.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
    run.add_argument("-u", "--user", metavar="USER[:GROUP]", help="user name or uid (and group)")
    run.add_argument("--hostname", metavar="NAME")
    run.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    run.add_argument("--cap-add", action="append", default=[], metavar="CAP")
    run.add_argument("--cap-drop", action="append", default=[], metavar="CAP")
    run.add_argument("--privileged", action="store_true", help="all capabilities, no masked paths, no seccomp")
    run.add_argument("--network", choices=("none", "host"), default=None,
                     help="none (default: a private network namespace with lo only) or host")
    run.add_argument("--init", action="store_true", help="run a small init (tini) as PID 1")
    run.add_argument("-m", "--memory", metavar="BYTES", help="memory limit (64m, 1g, ...)")
    run.add_argument("--cpus", metavar="N", help="CPU limit in cores (0.5, 2, ...)")
    run.add_argument("--pids-limit", type=int, metavar="N", help="maximum number of processes")
    run.add_argument("--ulimit", dest="ulimits", action="append", default=[], metavar="NAME=SOFT[:HARD]")
    run.add_argument("--sysctl", dest="sysctls", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--security-opt", action="append", default=[], metavar="OPT",
                     help="seccomp=unconfined|FILE, no-new-privileges[=false]")
    run.add_argument("--userns", metavar="MODE", help="auto: a user namespace mapping root to an unprivileged "
                     "host range; host (default): none")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="[IMAGE] [--] CMD [ARG...]")
    run.set_defaults(handler=cmd_run)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only` ("run"), just that subcommand: building every
    subcommand's parser costs ~7 ms, a fifth of a `pysup run --rm` of /bin/true."""
    parser = argparse.ArgumentParser(prog="pysup", description="A daemonless container supervisor for compose files.")
    parser.add_argument("--version", action="version", version=f"pysup {__version__}")
    parser.add_argument("--log-format", choices=("console", "json"), default=None,
                        help="how log lines are written to stderr (default: x-pysup.log_format, else console)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    _project_options(parser, top=True)
    parser.set_defaults(project_name=None, project_directory=None, env_files=None, profiles=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if only == "run":
        _add_run_parser(sub)
        return parser

    config = sub.add_parser("config", help="validate the stack and print it resolved and normalised",
                            description="Print the fully resolved stack (like `docker compose config`), or its errors.")
    _project_options(config, top=False)
    config.add_argument("--format", choices=("yaml", "json"), default="yaml")
    out = config.add_mutually_exclusive_group()
    out.add_argument("--services", action="store_true", help="print the service names, one per line")
    out.add_argument("-q", "--quiet", action="store_true", help="only validate; print nothing but errors")
    config.set_defaults(handler=cmd_config)

    _add_run_parser(sub)

    image = sub.add_parser("image", help="manage the local image store",
                           description="Root filesystems imported into pysup's image store (paths.images_dir()).")
    isub = image.add_subparsers(dest="image_command", metavar="IMAGE_COMMAND", required=True)
    imp = isub.add_parser("import", help="import a directory or a rootfs tarball as an image",
                          description="Import PATH (a directory, or a .tar, .tar.gz, .tar.xz, .tar.bz2 or .tar.zst "
                                      "rootfs tarball) as the image NAME[:TAG] (tag: latest).")
    imp.add_argument("ref", metavar="NAME[:TAG]")
    imp.add_argument("path", metavar="PATH")
    imp.set_defaults(handler=cmd_image_import)
    ls = isub.add_parser("ls", help="list the images", description="List the images of the local store.")
    ls.add_argument("-q", "--quiet", action="store_true", help="print NAME:TAG only")
    ls.add_argument("--format", choices=("table", "json"), default="table")
    ls.set_defaults(handler=cmd_image_ls)
    rm = isub.add_parser("rm", help="remove images", description="Remove images, and the layers no other image uses.")
    rm.add_argument("refs", nargs="+", metavar="NAME[:TAG]")
    rm.add_argument("-f", "--force", action="store_true", help="even when a running container uses it")
    rm.set_defaults(handler=cmd_image_rm)
    load = isub.add_parser("load", help="load images from a docker save tarball or an OCI layout",
                           description="Load the images of FILE: a `docker save` tarball, or an OCI image layout "
                                       "(a directory or a tar of one).")
    load.add_argument("file", metavar="FILE")
    load.add_argument("--name", metavar="NAME[:TAG]", help="the name for images the archive does not name fully")
    load.set_defaults(handler=cmd_image_load)
    prune = isub.add_parser("prune", help="remove the layers no image uses",
                            description="Garbage-collect the layers no image uses (kept while a container mounts them).")
    prune.add_argument("-f", "--force", action="store_true", help="even layers a running container mounts")
    prune.set_defaults(handler=cmd_image_prune)
    pull = sub.add_parser("pull", help="pull images from registries (the stack's, by pull_policy)",
                          description="Pull IMAGEs, or without any the images of the stack's services whose "
                                      "pull_policy says so (default: missing ones).")
    _project_options(pull, top=False)
    pull.add_argument("images", nargs="*", metavar="IMAGE")
    pull.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    pull.set_defaults(handler=cmd_pull)

    up = sub.add_parser("up", help="run the stack in the foreground until stopped",
                        description="Start the services in dependency order and supervise them (health checks, "
                                    "restarts, logs) until Ctrl-C: the first stops gracefully, the second at once.")
    _project_options(up, top=False)
    up.add_argument("--abort-on-container-exit", action="store_true",
                    help="stop the stack when any container exits; exit with its status")
    up.add_argument("--exit-code-from", metavar="SERVICE",
                    help="exit with this service's container status (implies --abort-on-container-exit)")
    up.add_argument("--no-log-prefix", action="store_true", help="print container output without `service-N | `")
    up.add_argument("--no-color", action="store_true", help="no colours in the output")
    up.add_argument("--metrics", metavar="ADDR:PORT", help="serve Prometheus metrics at http://ADDR:PORT/metrics")
    up.set_defaults(handler=cmd_up)
    export = sub.add_parser("export", help="write the stack as another engine's manifests",
                            description="Write the stack as manifests for another engine (specs/kubernetes-export.md).")
    esub = export.add_subparsers(dest="export_format", metavar="FORMAT", required=True)
    kube = esub.add_parser("kubernetes", aliases=["k8s"], help="Kubernetes manifests and a kustomization.yaml",
                           description="Write one Kubernetes manifest per object plus a kustomization.yaml "
                                       "(apply with `kubectl apply -k DIR`), or one stream with -o -. The output is "
                                       "deterministic; what Kubernetes cannot express is listed as warnings.")
    _project_options(kube, top=False)
    kube.add_argument("-o", "--output", metavar="DIR", default="-",
                      help="directory to write (created; files a previous export wrote and no longer needed are "
                           "removed), or '-' for one YAML stream on stdout (default)")
    kube.add_argument("-n", "--namespace", metavar="NS", help="put every object in this namespace")
    kube.add_argument("--kube-version", metavar="1.MINOR", default=None,
                      help="the cluster's Kubernetes version: decides which fields are used (default: 1.33)")
    kube.add_argument("--publish-as", choices=("LoadBalancer", "NodePort"), default="LoadBalancer",
                      help="the Service type for published ports (default: LoadBalancer)")
    kube.add_argument("--allow-hostpath", action="store_true",
                      help="export bind mounts as hostPath volumes instead of refusing them")
    kube.add_argument("--host-image", metavar="IMAGE", default=None,
                      help="the image for services with `image: host` or x-pysup.rootfs (default: busybox:1.36)")
    kube.add_argument("--wait-image", metavar="IMAGE", default=None,
                      help="the image of the init containers that wait for healthy dependencies "
                           "(needs sh, nc and nslookup; default: busybox:1.36)")
    kube.add_argument("--volume-size", metavar="SIZE", default="1Gi",
                      help="the storage each PersistentVolumeClaim requests (default: 1Gi)")
    kube.add_argument("--no-network-policies", action="store_true",
                      help="no NetworkPolicies (by default, only services sharing a network can talk)")
    kube.set_defaults(handler=cmd_export_kubernetes)
    from .control.cli import add_parsers as add_control_parsers  # ps, logs, exec, stats, events, stop, down, ...

    add_control_parsers(sub, _project_options)
    return parser


_log_settings: dict[str, str] = {}


def _warn(problems) -> None:
    """Log spec warnings. structlog is imported (and configured) only when there is something to
    say: it costs ~60 ms, a third of a short command's run."""
    if not problems:
        return
    import structlog

    from . import log

    log.configure(_log_settings.get("format") or "console", _log_settings.get("level", "info"))
    for problem in problems:
        structlog.get_logger().warning(str(problem))


def _load(args: argparse.Namespace):
    return _loaded(args).stack


def _loaded(args: argparse.Namespace):
    from .config.load import load

    loaded = load(args.files or None, project_name=args.project_name, project_dir=args.project_directory,
                  env_files=args.env_files, profiles=args.profiles)
    _warn(loaded.warnings)
    return loaded


def cmd_config(args: argparse.Namespace) -> int:
    stack = _load(args)
    if args.quiet:
        return 0
    if args.services:
        sys.stdout.write("".join(f"{name}\n" for name in stack.services))
        return 0
    from .config import render

    # Like `docker compose config`: `$` doubled, so the output loads again to the same stack.
    if args.format == "json":
        sys.stdout.write(render.to_json(stack, escape_interpolation=True) + "\n")
    else:
        sys.stdout.write(render.to_yaml(stack, escape_interpolation=True))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .runtime.run import RunError, RunRequest, run_container

    rest = list(args.args)
    image = None
    if args.rootfs is None:
        if not rest or rest[0] == "--":
            raise RunError("give an IMAGE or --rootfs DIR before the command")
        image = rest.pop(0)
    if rest and rest[0] == "--":
        rest.pop(0)
    if not rest and image is None:  # an image may have a command of its own
        raise RunError("no command given (pysup run ... -- CMD [ARG...])")
    if args.memory or args.cpus or args.pids_limit is not None:
        from . import log  # the cgroup driver logs: structlog is imported when it writes a line

        log.configure_lazily(_log_settings.get("format") or "console", _log_settings.get("level", "info"))
    code = run_container(RunRequest(
        rest, rootfs=args.rootfs, image=image, name=args.name, env=args.env, volumes=args.volumes, workdir=args.workdir,
        user=args.user, hostname=args.hostname, read_only=args.read_only, cap_add=args.cap_add,
        cap_drop=args.cap_drop, privileged=args.privileged, network=args.network, init=args.init, memory=args.memory,
        cpus=args.cpus, pids_limit=args.pids_limit, security_opt=args.security_opt, tmpfs=args.tmpfs,
        ulimits=args.ulimits, sysctls=args.sysctls, userns=args.userns, rm=args.rm))
    import os

    main_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__main__.py")
    if sys.argv and (os.path.basename(sys.argv[0]) == "pysup" or os.path.abspath(sys.argv[0]) == main_file):
        # The process is `pysup run` itself and everything is cleaned up: exit now, without the
        # interpreter's teardown (~4 ms of a ~40 ms one-shot run).
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    return code


def _image_store():
    from . import paths
    from .images.store import ImageStore

    return ImageStore(paths.images_dir())


def cmd_image_import(args: argparse.Namespace) -> int:
    image = _image_store().import_path(args.ref, args.path)
    print(f"{image.ref} {image.id}")
    return 0


def cmd_image_ls(args: argparse.Namespace) -> int:
    import json
    import time

    from .images.store import human_size

    images = _image_store().list()
    if args.quiet:
        sys.stdout.write("".join(f"{i.ref}\n" for i in images))
    elif args.format == "json":
        sys.stdout.write(json.dumps([{"name": i.name, "tag": i.tag, **i.to_dict()} for i in images], indent=1) + "\n")
    else:
        rows = [("NAME", "TAG", "IMAGE ID", "SIZE", "CREATED")]
        rows += [(i.name, i.tag, i.id.removeprefix("sha256:")[:12], human_size(i.size),
                  time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.created))) for i in images]
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        sys.stdout.write("".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n" for r in rows))
    return 0


def cmd_image_rm(args: argparse.Namespace) -> int:
    store = _image_store()
    failed = 0
    for ref in args.refs:
        try:
            image, _layers = store.remove(ref, force=args.force)
        except PysupError as exc:
            print(f"pysup: {exc}", file=sys.stderr)
            failed = exc.exit_code
            continue
        print(f"removed {image.ref}")
    return failed


def cmd_image_load(args: argparse.Namespace) -> int:
    from .images.archive import load

    for image in load(_image_store(), args.file, name=args.name):
        print(f"loaded {image.ref} {image.id}")
    return 0


def cmd_image_prune(args: argparse.Namespace) -> int:
    from .images.commands import prune

    print(prune(_image_store(), force=args.force))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from .images.commands import pull, stack_pulls

    store = _image_store()
    if args.images:
        return pull(store, list(args.images), quiet=args.quiet)
    stack = _load(args)
    refs = [image for _service, image in stack_pulls(stack, store)]
    return pull(store, refs, stack.x.registries, quiet=args.quiet) if refs else 0


def cmd_up(args: argparse.Namespace) -> int:
    loaded = _loaded(args)
    stack = loaded.stack
    import trio

    from . import app, log

    if args.exit_code_from is not None and args.exit_code_from not in stack.services:
        raise PysupError(f"--exit-code-from {args.exit_code_from}: no such service")
    fmt = _log_settings.get("format") or stack.x.log_format or "console"
    log.configure(fmt, _log_settings.get("level", "info"))
    options = app.UpOptions(abort_on_container_exit=args.abort_on_container_exit, exit_code_from=args.exit_code_from,
                            log_prefix=not args.no_log_prefix, colour=False if args.no_color else None,
                            reload=None if "-" in (args.files or ()) else functools.partial(_reload, args),
                            watch_files=_env_files(args, stack), metrics=args.metrics or stack.x.metrics)
    try:
        return trio.run(app.run, stack, options)
    except BaseExceptionGroup as group:  # nurseries wrap errors; a person wants the one message
        leaves = _leaves(group)
        first = next((e for e in leaves if isinstance(e, PysupError)), None)
        if first is not None and all(isinstance(e, (PysupError, KeyboardInterrupt)) for e in leaves):
            raise first from None
        raise


def _reload(args: argparse.Namespace):
    """`pysup up`'s live reconcile: the spec loaded again with the same arguments (not with
    `-f -`: stdin cannot be read twice)."""
    from .config.load import load

    return load(args.files or None, project_name=args.project_name, project_dir=args.project_directory,
                env_files=args.env_files, profiles=args.profiles)


def _env_files(args: argparse.Namespace, stack) -> tuple[str, ...]:
    """The interpolation env files (`.env` or --env-file): watched too, though not in Stack.sources."""
    if args.env_files:
        return tuple(os.path.abspath(f) for f in args.env_files)
    return (os.path.join(stack.project_dir, ".env"),)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def cmd_export_kubernetes(args: argparse.Namespace) -> int:
    from .export import kubernetes, writer

    from .config.load import load

    loaded = load(args.files or None, project_name=args.project_name, project_dir=args.project_directory,
                  env_files=args.env_files, profiles=args.profiles)
    _warn(loaded.warnings)
    stack = loaded.stack
    defaults = kubernetes.Options()
    options = kubernetes.Options(
        namespace=args.namespace, kube_version=args.kube_version or defaults.kube_version,
        publish=args.publish_as, allow_hostpath=args.allow_hostpath,
        host_image=args.host_image or defaults.host_image, wait_image=args.wait_image or defaults.wait_image,
        volume_size=args.volume_size, network_policies=not args.no_network_policies)
    try:
        exported = kubernetes.export(stack, options)
    except SpecError as exc:  # point each refusal (and warning) at the line that asked for it
        located = SpecError(loaded.locate(exc.problems))
        located.warnings = loaded.locate(exc.warnings)
        raise located from None
    _warn(loaded.locate(exported.warnings))
    if args.output == "-":
        sys.stdout.write(writer.render_stream(exported.manifests))
        return 0
    files = writer.render_files(exported.manifests, namespace=args.namespace)
    removed = writer.write_directory(args.output, files)
    for name in removed:
        print(f"removed {name}", file=sys.stderr)
    print(f"wrote {len(files)} files to {args.output}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(only="run" if argv[:1] == ["run"] else None).parse_args(argv)
    _log_settings.update(format=args.log_format, level=args.log_level)
    try:
        return args.handler(args)
    except SpecError as exc:
        _warn(exc.warnings)
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return exc.exit_code
    except PysupError as exc:
        print(f"pysup: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `pysup config | head`: stdout closed early is not an error worth a traceback.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
