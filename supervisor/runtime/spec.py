"""What the runtime needs to start one container: `ContainerSpec`, frozen and JSON-able.

A `ContainerSpec` is fully resolved: capabilities are a final set, paths are absolute, generated
file contents are computed. The launcher sends it to the zygote as JSON (`to_json`/`from_json`);
the zygote's child turns it into a rootfs plan and a security set-up. `from_service` builds one
from the compose model (`supervisor.config.model.Service`).

Imports: standard library only (the zygote and a one-shot `pysup run` import this; the classes
are `record.py`'s frozen records, not attrs: `.replace(**changes)`, `.to_dict()`).
"""

from __future__ import annotations

import json
import os

from .record import field, fields, record

TYPE_CHECKING = False  # typing stays unimported: the zygote imports this module (~0.4 MB of its memory)
if TYPE_CHECKING:
    from typing import Any, Literal

    MountType = Literal["bind", "tmpfs"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _tuple(v: Any) -> tuple:
    return tuple(v or ())


def _opt_tuple(v: Any) -> tuple | None:
    return None if v is None else tuple(v)


def _triples(v: Any) -> tuple[tuple[int, int, int], ...]:
    return tuple((int(a), int(b), int(c)) for a, b, c in (v or ()))


def _pairs(v: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(v, dict):
        v = v.items()
    return tuple((str(a), str(b)) for a, b in (v or ()))


_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _check_id(v: str) -> None:
    if not (0 < len(v) <= 128) or not set(v) <= _ID_CHARS or v[0] in ".-":
        raise ValueError(f"invalid container id {v!r}: 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'")


def _check_abs(what: str, v: str) -> None:
    if not isinstance(v, str) or not v.startswith("/"):
        raise ValueError(f"{what} {v!r} is not an absolute path")


@record(kw_only=True)
class MountSpec:
    """A bind mount (host `source` → container `target`) or a tmpfs at `target`."""

    type: MountType
    target: str
    source: str | None = None
    read_only: bool = False
    propagation: str = "rprivate"  # private | rprivate | slave | rslave (bind mounts)
    recursive: bool = True  # rbind, as Docker does
    tmpfs_size: int | None = None  # bytes
    tmpfs_mode: int | None = None
    options: tuple[str, ...] = field(default=(), converter=_tuple)  # extra mount flags: noexec, nosuid, ...
    # the source is pysup's own directory (a named or anonymous volume), not a host path the user
    # named: under a user namespace it is idmapped even when writable (zygote.idmap_bind)
    owned: bool = False
    # a host path the user asked to see idmapped even when writable (`:idmap`, podman's option):
    # the container's root writes there as host root (zygote.idmap_bind); nothing without uid_map
    idmap: bool = False


@record(kw_only=True)
class Rlimit:
    name: str  # "nofile", "nproc", ... (RLIMIT_ suffix, lower case)
    soft: int
    hard: int


@record(kw_only=True)
class ContainerSpec:
    """One container, resolved. Defaults are pysup's secure defaults (security-defaults.md)."""

    id: str = field(validator=lambda _i, _a, v: _check_id(v))  # a path component of the state dir
    rootfs: str = field(validator=lambda _i, _a, v: _check_abs("rootfs", v))
    argv: tuple[str, ...] = field(converter=_tuple)
    env: tuple[tuple[str, str], ...] = field(default=(), converter=_pairs)
    cwd: str = field(default="/", validator=lambda _i, _a, v: _check_abs("working directory", v))
    user: str | None = None  # "uid", "uid:gid", "name", "name:group"; None: root
    hostname: str | None = None  # None: the container id (its name), at most 63 characters
    domainname: str | None = None
    read_only: bool = False
    writable_layer: bool = True  # overlayfs over the rootfs, discarded with the container (not with read_only)
    # An image of several layers: `rootfs` is the top one, these are below it, top first (overlayfs
    # lowerdir order). The root is then always an overlay (read-only one with read_only).
    lower_layers: tuple[str, ...] = field(default=(), converter=_tuple)
    mounts: tuple[MountSpec, ...] = field(default=(), converter=_tuple)
    # namespaces: each True means "share the host's" (compose pid: host, network_mode: host, ipc: host)
    host_pid: bool = False
    host_net: bool = False
    host_ipc: bool = False
    host_uts: bool = False
    # An existing network namespace to join (a path: a bind-mounted nsfs file, /proc/PID/ns/net)
    # instead of a new one; pysup's networking prepares it (veths, addresses, routes) beforehand.
    netns: str | None = None
    # A user namespace when set: (container id, host id, count) ranges, like OCI's linux.uidMappings.
    uid_map: tuple[tuple[int, int, int], ...] = field(default=(), converter=_triples)
    # With a user namespace: show the rootfs and image layers (image: host, the host's tree) and the
    # bind mounts' sources through idmapped mounts, so files owned by host root are the container's
    # root's (writable through the writable layer), not nobody's; a filesystem that cannot be
    # idmapped is used as it is, with a warning.
    idmap: bool = False
    gid_map: tuple[tuple[int, int, int], ...] = field(default=(), converter=_triples)  # () : as uid_map
    capabilities: tuple[str, ...] = field(default=(), converter=_tuple)  # final set, "CAP_..." names
    privileged: bool = False  # also: no masked/read-only paths, as Docker's --privileged
    no_new_privs: bool = True
    seccomp: str | dict | None = "default"  # "default", None/"unconfined", or an OCI/moby profile dict
    rlimits: tuple[Rlimit, ...] = field(default=(), converter=_tuple)
    sysctls: tuple[tuple[str, str], ...] = field(default=(), converter=_pairs)  # namespaced ones only
    init: bool = False  # a small PID 1 (tini) that reaps zombies and forwards signals, at /dev/init
    init_path: str = "/usr/bin/tini-static"  # the host's static init binary, bound read-only
    hosts: str | None = None  # content of /etc/hosts; None: generated from the hostname
    resolv_conf: str | None = None  # content of /etc/resolv.conf; None: the host's, loopback servers dropped
    masked_paths: tuple[str, ...] | None = field(default=None, converter=_opt_tuple)  # None: the defaults
    readonly_paths: tuple[str, ...] | None = field(default=None, converter=_opt_tuple)
    cgroup_procs: tuple[str, ...] = field(default=(), converter=_tuple)  # cgroup.procs files to join before exec
    state_dir: str | None = None  # host directory for generated files (/etc/hostname, hosts, resolv.conf)

    @property
    def effective_hostname(self) -> str:
        return self.hostname or self.id[:63]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ContainerSpec:
        """The inverse of `to_dict`. Unknown keys are ignored (a newer launcher may send more)."""
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        d["mounts"] = tuple(MountSpec(**m) for m in d.get("mounts", ()))
        d["rlimits"] = tuple(Rlimit(**r) for r in d.get("rlimits", ()))
        return cls(**d)

    @classmethod
    def from_json(cls, s: str | bytes) -> ContainerSpec:
        return cls.from_dict(json.loads(s))


@record(kw_only=True)
class ExecSpec:
    """A process to start inside a running container (`pysup exec`, health-check probes): it joins
    the container's namespaces and cgroups and gets the same hardening as a container's PID 1."""

    id: str = field(validator=lambda _i, _a, v: _check_id(v))
    container_pid: int  # host pid of the container's PID 1 (the launcher also sends its pidfd)
    argv: tuple[str, ...] = field(converter=_tuple)
    env: tuple[tuple[str, str], ...] = field(default=(), converter=_pairs)
    cwd: str = field(default="/", validator=lambda _i, _a, v: _check_abs("working directory", v))
    user: str | None = None
    hostname: str | None = None  # for $HOSTNAME; None: the container id, at most 63 characters
    capabilities: tuple[str, ...] = field(default=(), converter=_tuple)
    no_new_privs: bool = True
    seccomp: str | dict | None = "default"
    cgroup_procs: tuple[str, ...] = field(default=(), converter=_tuple)

    @property
    def effective_hostname(self) -> str:
        return self.hostname or self.id[:63]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExecSpec:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def for_container(cls, spec: ContainerSpec, container_pid: int, argv: Any, *, id: str, **overrides: Any) -> ExecSpec:
        """An exec with the container's own settings (user, env, working dir, security) unless overridden."""
        base = dict(container_pid=container_pid, argv=argv, env=spec.env, cwd=spec.cwd, user=spec.user,
                    hostname=spec.effective_hostname, capabilities=spec.capabilities, no_new_privs=spec.no_new_privs,
                    seccomp=spec.seccomp, cgroup_procs=spec.cgroup_procs)
        base.update(overrides)
        return cls(id=id, **base)


class UnsupportedOption(ValueError):
    """A service option the runtime cannot honour yet (refused rather than silently ignored)."""


# Namespaced sysctls a container may set (moby's ValidateSysctl): IPC ones need a private IPC
# namespace, net.* a private network namespace.
IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                         "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"})


def check_sysctl(key: str, *, host_ipc: bool = False, host_net: bool = False) -> str:
    """The sysctl's dotted name if the container may set it, else UnsupportedOption."""
    name = key.strip().replace("/", ".")
    if name in IPC_SYSCTLS or name.startswith("fs.mqueue."):
        if host_ipc:
            raise UnsupportedOption(f"sysctl {key}: not allowed with the host's IPC namespace")
        return name
    if name.startswith("net."):
        if host_net:
            raise UnsupportedOption(f"sysctl {key}: not allowed with the host's network namespace")
        return name
    raise UnsupportedOption(f"sysctl {key}: not a namespaced sysctl a container may set")


def parse_security_opt(opts: tuple[str, ...], base_dir: str | None = None) -> tuple[bool, str | dict | None]:
    """compose `security_opt` → (no_new_privs, seccomp). Accepts `no-new-privileges[:=]true|false`
    and `seccomp[:=]unconfined|FILE` (FILE relative to `base_dir`); `apparmor`/`label` do not
    apply here (no LSM support) and are ignored."""
    nnp: bool = True
    seccomp: str | dict | None = "default"
    for raw in opts:
        key, sep, value = raw.replace("=", ":", 1).partition(":")
        key = key.strip()
        if key == "no-new-privileges":
            nnp = (value or "true").strip().lower() in ("true", "1", "yes", "")
        elif key == "seccomp":
            value = value.strip()
            if value == "unconfined":
                seccomp = None
            elif value:
                path = value if os.path.isabs(value) or base_dir is None else os.path.join(base_dir, value)
                try:
                    with open(path) as f:
                        seccomp = json.load(f)
                except (OSError, ValueError) as e:
                    raise UnsupportedOption(f"security_opt seccomp={value}: {e}") from None
        elif key in ("apparmor", "label"):
            continue
        else:
            raise UnsupportedOption(f"security_opt {raw!r} is not supported")
    return nnp, seccomp


class UnknownImage(UnsupportedOption):
    """A service's (or `pysup run`'s) image is not in the local store."""


HOST_IMAGE = "host"  # `image: host`: a read-only view of the host's own filesystem


def host_view_mounts(taken: Any = ()) -> tuple[MountSpec, ...]:
    """`image: host`: private, writable /tmp and /var/tmp (sticky, like the host's) and /run, each
    unless the service mounts something there itself."""
    taken = {os.path.normpath(t) for t in taken}
    return tuple(MountSpec(type="tmpfs", target=t, tmpfs_mode=m, options=("nosuid", "nodev"))
                 for t, m in (("/tmp", 0o1777), ("/var/tmp", 0o1777), ("/run", 0o755)) if t not in taken)


def resolve_root(*, service_name: str | None, rootfs: str | None, image: str | None,
                 images: Any = None) -> tuple[str, tuple[str, ...], bool]:
    """(rootfs, lower layers, host view). Precedence: `rootfs` (x-pysup.rootfs or --rootfs), then
    `image` (`host`, or one of the local store: `images` has `.layers(ref)`, default the store in
    paths.images_dir()). Raises UnknownImage / UnsupportedOption with one clear line."""
    who = f"services.{service_name}: " if service_name else ""
    if rootfs:
        return os.path.abspath(rootfs), (), False
    if not image:
        raise UnsupportedOption(f"{who}no image and no x-pysup.rootfs" if service_name else "no image and no --rootfs")
    if image == HOST_IMAGE:
        return "/", (), True
    from ..images.store import ImageNotFound, ImageStore, ImageStoreError

    if images is None:
        from .. import paths

        images = ImageStore(paths.images_dir())
    try:
        layers = images.layers(image)
    except ImageNotFound as e:
        raise UnknownImage(f"{who}{e}") from None
    except ImageStoreError as e:
        raise UnsupportedOption(f"{who}image {image!r}: {e}") from None
    return layers[0], tuple(layers[1:]), False


def from_service(service: Any, *, id: str, rootfs: str | None = None, cgroup_procs: tuple[str, ...] = (),
                 volumes_dir: str | None = None, project_dir: str | None = None,
                 userns_range: tuple[int, int] | None = None, images: Any = None,
                 volume_names: Any = None, anonymous_dir: str | None = None) -> ContainerSpec:
    """A `ContainerSpec` for one replica of a compose service (`supervisor.config.model.Service`).

    The root filesystem: `rootfs`, else the service's `x-pysup.rootfs`, else its `image`: `host`
    (the host's filesystem, read-only, with private /tmp, /var/tmp and /run) or an image of the
    local store (`images`, an `ImageStore`; default: the one in paths.images_dir()).
    Named volumes become binds of `volumes_dir/<name>`, the name being `volume_names[key]` (the
    stack's `volumes.<key>.name`, e.g. `project_key`) or the key; the caller creates them
    (`supervisor.runtime.volumes.ensure_named`). Anonymous volumes become binds of
    `anonymous_dir/<n>` (the caller makes and removes it with the container). A user namespace
    (`x-pysup.userns`, `userns_mode`) maps the container's ids 0.. onto `userns_range` = (first
    host id, count), which the caller allocates (`supervisor.runtime.userns`). Raises
    `UnsupportedOption` (`UnknownImage` for an image not in the store) with one clear line."""
    from .security import resolve_capabilities

    def unsupported(what: str) -> UnsupportedOption:
        return UnsupportedOption(f"services.{service.name}: {what} is not supported by the runtime yet")

    root, lower, host_view = resolve_root(service_name=service.name, rootfs=rootfs or service.x.rootfs,
                                          image=service.image, images=images)
    if not (rootfs or service.x.rootfs or host_view):  # an image's config under the compose keys
        from ..images.config import image_config, with_image_config

        service = with_image_config(service, image_config(service.image, images))
    argv = tuple(service.entrypoint or ()) + tuple(service.command or ())
    if not argv:
        raise UnsupportedOption(f"services.{service.name}: no command or entrypoint")
    for attr, what in (("devices", "devices"), ("volumes_from", "volumes_from")):
        if getattr(service, attr):
            raise unsupported(what)
    uid_map: tuple[tuple[int, int, int], ...] = ()
    from .userns import wanted

    if wanted(service):
        if userns_range is None:
            raise unsupported("a user namespace without a host id range (userns_range)")
        uid_map = ((0, userns_range[0], userns_range[1]),)
    mode = service.network_mode
    if mode not in (None, "host", "none", "bridge") and not mode.startswith("service:"):
        raise unsupported(f"network_mode {mode!r}")  # service:NAME: the caller sets `netns` (supervisor.net)
    if service.pid not in (None, "host"):
        raise unsupported(f"pid {service.pid!r}")
    if service.ipc not in (None, "host", "private", "shareable"):
        raise unsupported(f"ipc {service.ipc!r}")
    mounts = []
    for v in service.volumes:
        if v.type == "tmpfs":
            mounts.append(MountSpec(type="tmpfs", target=v.target, read_only=v.read_only, tmpfs_size=v.tmpfs_size,
                                    tmpfs_mode=v.tmpfs_mode))
        elif v.type == "bind":
            mounts.append(MountSpec(type="bind", source=v.source, target=v.target, read_only=v.read_only,
                                    propagation=v.bind_propagation or "rprivate", idmap=v.idmap))
        elif v.type == "volume" and v.source:
            if not volumes_dir:
                raise unsupported(f"volume {v.source}:{v.target} without a volumes directory")
            name = (volume_names or {}).get(v.source, v.source)
            mounts.append(MountSpec(type="bind", source=os.path.join(volumes_dir, name), target=v.target,
                                    read_only=v.read_only, owned=True))
        elif v.type == "volume":
            if not anonymous_dir:
                raise unsupported(f"anonymous volume {v.target} without a directory for it")
            mounts.append(MountSpec(type="bind", source=os.path.join(anonymous_dir, str(len(mounts))),
                                    target=v.target, read_only=v.read_only, owned=True))
        else:
            raise unsupported(f"volume {v.target} of type {v.type}")
    if host_view:
        mounts += host_view_mounts(v.target for v in service.volumes)
    nnp, seccomp = parse_security_opt(tuple(service.security_opt), project_dir)
    if service.privileged and not any(o.replace("=", ":").startswith("seccomp:") for o in service.security_opt):
        seccomp = None  # Docker: privileged runs unconfined
    hostname = service.hostname
    rlimits = tuple(Rlimit(name=u.name, soft=u.soft, hard=u.hard) for u in service.ulimits)
    return ContainerSpec(
        id=id, rootfs=root, argv=argv, env=tuple(service.environment.items()), cwd=service.working_dir or "/",
        user=service.user, hostname=hostname, domainname=service.domainname, read_only=service.read_only or host_view,
        writable_layer=not host_view, lower_layers=lower, idmap=bool(uid_map),
        mounts=tuple(mounts), host_pid=service.pid == "host", host_net=mode == "host", host_ipc=service.ipc == "host",
        capabilities=resolve_capabilities(service.cap_add, service.cap_drop, service.privileged),
        uid_map=uid_map, privileged=service.privileged, no_new_privs=nnp, seccomp=seccomp, rlimits=rlimits, init=service.init,
        sysctls=tuple((check_sysctl(k, host_ipc=service.ipc == "host", host_net=mode == "host"), str(v))
                      for k, v in service.sysctls.items()),
        hosts=generated_hosts(hostname or id[:63], tuple(service.extra_hosts)) if service.extra_hosts else None,
        resolv_conf=(generated_resolv_conf(tuple(service.dns), tuple(service.dns_search), tuple(service.dns_opt))
                     if (service.dns or service.dns_search or service.dns_opt) else None),
        cgroup_procs=cgroup_procs,
    )


def parse_volume(text: str) -> MountSpec:
    """`docker run -v` syntax: SRC:DST[:OPTS] with OPTS a comma list of ro|rw|(r)private|(r)slave
    and podman's idmap; SRC must be an absolute host path (named volumes need the volume store)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UnsupportedOption(f"volume {text!r}: expected SRC:DST[:ro]")
    src, dst = parts[0], parts[1]
    if not os.path.isabs(src):
        raise UnsupportedOption(f"volume {text!r}: the source must be an absolute host path")
    if not os.path.isabs(dst):
        raise UnsupportedOption(f"volume {text!r}: the target must be an absolute path")
    read_only, propagation, idmap = False, "rprivate", False
    for opt in (parts[2].split(",") if len(parts) == 3 else ()):
        if opt in ("ro", "rw"):
            read_only = opt == "ro"
        elif opt == "idmap":
            idmap = True
        elif opt in ("private", "rprivate", "slave", "rslave"):
            propagation = opt
        elif opt:
            raise UnsupportedOption(f"volume {text!r}: unknown option {opt!r}")
    return MountSpec(type="bind", source=os.path.abspath(src), target=os.path.normpath(dst), read_only=read_only,
                     propagation=propagation, idmap=idmap)


def for_run(argv: tuple[str, ...] | list[str], *, rootfs: str, id: str | None = None, env: tuple[str, ...] = (),
            volumes: tuple[str, ...] = (), workdir: str | None = None, user: str | None = None,
            hostname: str | None = None, read_only: bool = False, cap_add: tuple[str, ...] = (),
            cap_drop: tuple[str, ...] = (), privileged: bool = False, network: str | None = None,
            init: bool = False, security_opt: tuple[str, ...] = (), tmpfs: tuple[str, ...] = (),
            ulimits: tuple[str, ...] = (), sysctls: tuple[str, ...] = (), cgroup_procs: tuple[str, ...] = (),
            ) -> ContainerSpec:
    """A `ContainerSpec` from `pysup run`'s options, with `docker run`'s syntax and meanings:
    `-e K=V` (or `-e K`: taken from our environment), `-v SRC:DST[:ro][,idmap]`, `--tmpfs DST[:size=N,mode=M]`,
    `--ulimit name=soft[:hard]`, `--sysctl k=v`, `--network none|host`. Raises UnsupportedOption."""
    from .security import CapabilityError, resolve_capabilities

    cid = id or os.urandom(16).hex()  # not uuid: its import costs ~3 ms of a one-shot start
    if not argv:
        raise UnsupportedOption("no command given")
    pairs = []
    for e in env:
        k, sep, v = e.partition("=")
        if not k:
            raise UnsupportedOption(f"environment {e!r}: expected K=V")
        if not sep:
            if k not in os.environ:
                continue  # docker run -e K drops an unset K
            v = os.environ[k]
        pairs.append((k, v))
    mounts = [parse_volume(v) for v in volumes]
    for t in tmpfs:
        dst, _, opts = t.partition(":")
        size = mode = None
        for o in filter(None, opts.split(",")):
            key, _, val = o.partition("=")
            if key == "size":
                size = _size(val)
            elif key == "mode":
                mode = int(val, 8)
            else:
                raise UnsupportedOption(f"tmpfs {t!r}: unknown option {o!r}")
        mounts.append(MountSpec(type="tmpfs", target=dst, tmpfs_size=size, tmpfs_mode=mode))
    limits = []
    for u in ulimits:
        name, _, rng = u.partition("=")
        soft, _, hard = rng.partition(":")
        try:
            limits.append(Rlimit(name=name, soft=int(soft), hard=int(hard or soft)))
        except ValueError:
            raise UnsupportedOption(f"ulimit {u!r}: expected name=soft[:hard]") from None
    if network not in (None, "none", "host", "bridge", "default"):
        raise UnsupportedOption(f"network {network!r}: only none and host")
    nnp, seccomp = parse_security_opt(tuple(security_opt))
    if privileged and not any(o.replace("=", ":").startswith("seccomp:") for o in security_opt):
        seccomp = None  # Docker: --privileged runs unconfined
    try:
        caps = resolve_capabilities(cap_add, cap_drop, privileged)
    except CapabilityError as e:
        raise UnsupportedOption(str(e)) from None
    host_net = network == "host"
    ctl = []
    for kv in sysctls:
        k, _, v = kv.partition("=")
        ctl.append((check_sysctl(k, host_net=host_net), v))
    return ContainerSpec(id=cid, rootfs=os.path.abspath(rootfs), argv=tuple(argv), env=tuple(pairs),
                         cwd=workdir or "/", user=user, hostname=hostname, read_only=read_only, mounts=tuple(mounts),
                         host_net=host_net, capabilities=caps, privileged=privileged, no_new_privs=nnp,
                         seccomp=seccomp, rlimits=tuple(limits), sysctls=tuple(ctl), init=init,
                         cgroup_procs=cgroup_procs)


def _size(text: str) -> int:
    """"64m", "1g", "512k", "4096" (bytes; Docker's binary units)."""
    t = text.strip().lower().removesuffix("b")
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in ("k", "m", "g") else t
    try:
        return int(float(num) * mult)
    except ValueError:
        raise UnsupportedOption(f"size {text!r}") from None


def env_with_defaults(spec: ContainerSpec, home: str | None = None) -> dict[str, str]:
    """The process environment: PATH and HOSTNAME default like Docker, HOME from the user entry."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": spec.effective_hostname}
    if home:
        env["HOME"] = home
    env.update(dict(spec.env))
    env.setdefault("HOME", "/")
    return env


def generated_hosts(hostname: str, extra: tuple[tuple[str, str], ...] = ()) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", f"127.0.1.1\t{hostname}"]
    lines += [f"{ip}\t{host}" for host, ip in extra]
    return "\n".join(lines) + "\n"


def generated_resolv_conf(dns: tuple[str, ...] = (), search: tuple[str, ...] = (), options: tuple[str, ...] = (),
                          host_file: str = "/etc/resolv.conf") -> str:
    """Docker's rule: the given servers, else the host's minus loopback ones (they cannot be reached
    from a private network namespace)."""
    servers = list(dns)
    host_search: list[str] = []
    host_opts: list[str] = []
    if not servers:
        try:
            with open(host_file) as f:
                for line in f:
                    parts = line.split()
                    if not parts or parts[0].startswith(("#", ";")):
                        continue
                    if parts[0] == "nameserver" and len(parts) > 1 and not parts[1].startswith(("127.", "::1")):
                        servers.append(parts[1])
                    elif parts[0] == "search":
                        host_search = parts[1:]
                    elif parts[0] == "options":
                        host_opts = parts[1:]
        except OSError:
            pass
    out = [f"nameserver {s}" for s in servers]
    if search or host_search:
        out.append("search " + " ".join(search or host_search))
    if options or host_opts:
        out.append("options " + " ".join(options or host_opts))
    return "\n".join(out) + ("\n" if out else "")


def is_abs(path: str) -> bool:
    return os.path.isabs(path)
