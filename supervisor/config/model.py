"""The typed stack model: what a compose file means once loaded, validated and normalised.

Every class is frozen and hashable (collections are tuples or `FrozenMap`), so a `Service` can be
compared and hashed to tell whether it changed. Nothing downstream of `config.load` sees raw YAML.
Units are normalised here: durations are float seconds, sizes are int bytes, signals are numbers,
paths are absolute. `None` means "not set": the runtime or the image decides.

Validators guard invariants only (a replica count is not negative); turning YAML into these objects
with located errors is `config.parse`'s job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import attrs

from .resources import FrozenMap, Resources  # noqa: F401  (light: the one-shot `pysup run` path uses them)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..errors import Problem


def _fmap(value: Any) -> FrozenMap:
    return value if isinstance(value, FrozenMap) else FrozenMap(value or {})


def _tuple(value: Any) -> tuple:
    return value if isinstance(value, tuple) else tuple(value or ())


def _opt_tuple(value: Any) -> tuple | None:
    return None if value is None else _tuple(value)


_nonneg = attrs.validators.optional(attrs.validators.ge(0))

RestartCondition = Literal["no", "always", "on-failure", "unless-stopped"]
DependencyCondition = Literal["service_started", "service_healthy", "service_completed_successfully"]


@attrs.frozen(kw_only=True)
class Backoff:
    """Restart delay: `base` doubling per consecutive failure up to `cap`; the count resets once a
    replica has run for `reset_after`. Defaults are the Docker engine's."""

    base: float = attrs.field(default=0.1, validator=attrs.validators.ge(0))
    cap: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    reset_after: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))


@attrs.frozen(kw_only=True)
class RestartPolicy:
    """`restart:` and `deploy.restart_policy` folded into one. `deploy` wins where both are set."""

    condition: RestartCondition = "no"
    max_attempts: int | None = attrs.field(default=None, validator=_nonneg)  # None: unlimited
    delay: float | None = attrs.field(default=None, validator=_nonneg)  # fixed delay instead of backoff base
    window: float | None = attrs.field(default=None, validator=_nonneg)  # a restart counts as failed if it ends sooner


@attrs.frozen(kw_only=True)
class Healthcheck:
    """Docker's health check. `test` is ("CMD", argv...), ("CMD-SHELL", "script"), ("NONE",)
    (disabled: `disable: true` or a NONE test) or () (the image's test). A timing or `retries`
    left None is the image's, else Docker's default (`with_defaults`), as the engine merges a
    container's health check with its image's (`images.config.merge_healthcheck`)."""

    test: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    interval: float | None = None
    timeout: float | None = None
    retries: int | None = None
    start_period: float | None = None
    start_interval: float | None = None

    DEFAULTS = {"interval": 30.0, "timeout": 30.0, "retries": 3, "start_period": 0.0, "start_interval": 5.0}

    @property
    def disabled(self) -> bool:
        return bool(self.test) and self.test[0] == "NONE"

    def with_defaults(self) -> Healthcheck:
        """Every unset timing (None, or 0 as the engine reads it) at Docker's default."""
        unset = {k: v for k, v in self.DEFAULTS.items() if not getattr(self, k) and k != "start_period"}
        if self.start_period is None:
            unset["start_period"] = 0.0
        return attrs.evolve(self, **unset) if unset else self


@attrs.frozen(kw_only=True)
class Port:
    """A published or exposed port. `published` is an inclusive host port range, or None for any."""

    target: int
    published: tuple[int, int] | None = None
    host_ip: str | None = None
    protocol: Literal["tcp", "udp"] = "tcp"
    name: str | None = None
    app_protocol: str | None = None
    mode: str = "ingress"


@attrs.frozen(kw_only=True)
class Mount:
    """A volume entry (or a `tmpfs:` entry): bind, named or anonymous volume, or tmpfs."""

    type: Literal["bind", "volume", "tmpfs"]
    target: str
    source: str | None = None  # bind: absolute host path; volume: top-level volume key; None: anonymous/tmpfs
    read_only: bool = False
    bind_propagation: str | None = None
    bind_create_host_path: bool = True
    volume_nocopy: bool = False
    volume_subpath: str | None = None
    tmpfs_size: int | None = None
    tmpfs_mode: int | None = None
    tmpfs_options: tuple[str, ...] = attrs.field(default=(), converter=_tuple)  # "noexec", "uid=1000", ...
    # A bind mount shown through the container's user namespace even when writable (`:idmap`,
    # `x-pysup: {idmap: true}`): the container's root writes there as host root. Binds only
    # (volumes are idmapped anyway); no effect without a user namespace.
    idmap: bool = False


@attrs.frozen(kw_only=True)
class NetworkAttachment:
    """A service's membership of one stack network (top-level `networks` key)."""

    network: str
    aliases: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    ipv4_address: str | None = None
    ipv6_address: str | None = None
    priority: int = 0
    interface_name: str | None = None


@attrs.frozen(kw_only=True)
class Dependency:
    service: str
    condition: DependencyCondition = "service_started"
    restart: bool = False  # restart this service when the dependency is replaced by a reconcile
    required: bool = True


@attrs.frozen(kw_only=True)
class Ulimit:
    name: str  # "nofile", "nproc", ...
    soft: int
    hard: int


@attrs.frozen(kw_only=True)
class Device:
    source: str
    target: str
    permissions: str = "rwm"


@attrs.frozen(kw_only=True)
class FileRef:
    """A service's use of a top-level secret or config: mounted read-only at `target`."""

    source: str  # top-level key
    target: str  # absolute path in the container (/run/secrets/NAME for secrets by default)
    uid: str | None = None
    gid: str | None = None
    mode: int | None = None


@attrs.frozen(kw_only=True)
class Hook:
    """A `post_start` / `pre_stop` command run inside the container."""

    command: tuple[str, ...] = attrs.field(converter=_tuple)
    user: str | None = None
    privileged: bool = False
    working_dir: str | None = None
    environment: FrozenMap[str, str] = attrs.field(factory=FrozenMap, converter=_fmap)


@attrs.frozen(kw_only=True)
class Logging:
    driver: str | None = None
    options: FrozenMap[str, str] = attrs.field(factory=FrozenMap, converter=_fmap)


@attrs.frozen(kw_only=True)
class UpdateConfig:
    """`deploy.update_config` / `rollback_config`, with the Docker defaults."""

    parallelism: int = 1  # 0: all at once
    delay: float = 0.0
    failure_action: Literal["pause", "continue", "rollback"] = "pause"
    monitor: float = 5.0
    max_failure_ratio: float = 0.0
    order: Literal["stop-first", "start-first"] = "stop-first"


@attrs.frozen(kw_only=True)
class ServiceExtras:
    """A service's `x-pysup` keys."""

    rootfs: str | None = None  # absolute directory to use as the root filesystem
    userns: bool | Literal["auto"] = False
    restart_on_unhealthy: bool = True
    backoff: Backoff | None = None  # None: the stack's
    load_balance: Literal["round-robin", "least-connections"] = "round-robin"


@attrs.frozen(kw_only=True)
class Service:
    name: str
    image: str | None = None
    command: tuple[str, ...] | None = attrs.field(default=None, converter=_opt_tuple)  # None: the image's
    entrypoint: tuple[str, ...] | None = attrs.field(default=None, converter=_opt_tuple)
    environment: FrozenMap[str, str] = attrs.field(factory=FrozenMap, converter=_fmap)  # env_file merged in
    env_files: tuple[str, ...] = attrs.field(default=(), converter=_tuple)  # absolute; watched for edits
    working_dir: str | None = None
    user: str | None = None
    hostname: str | None = None
    domainname: str | None = None
    ports: tuple[Port, ...] = attrs.field(default=(), converter=_tuple)
    expose: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    volumes: tuple[Mount, ...] = attrs.field(default=(), converter=_tuple)  # `tmpfs:` entries included
    read_only: bool = False
    networks: tuple[NetworkAttachment, ...] = attrs.field(default=(), converter=_tuple)
    network_mode: str | None = None  # "host", "none", "service:NAME"; None: the networks above
    depends_on: tuple[Dependency, ...] = attrs.field(default=(), converter=_tuple)
    healthcheck: Healthcheck | None = None  # None: no `healthcheck` key (the image's, if any)
    restart: RestartPolicy = attrs.field(factory=RestartPolicy)
    replicas: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    resources: Resources = attrs.field(factory=Resources)
    update_config: UpdateConfig = attrs.field(factory=UpdateConfig)
    rollback_config: UpdateConfig = attrs.field(factory=UpdateConfig)
    stop_signal: int | None = None  # None: the image's StopSignal, else SIGTERM
    stop_grace_period: float = 10.0
    init: bool = False
    cap_add: tuple[str, ...] = attrs.field(default=(), converter=_tuple)  # "NET_ADMIN" (no CAP_ prefix) or "ALL"
    cap_drop: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    privileged: bool = False
    security_opt: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    ulimits: tuple[Ulimit, ...] = attrs.field(default=(), converter=_tuple)
    sysctls: FrozenMap[str, str] = attrs.field(factory=FrozenMap, converter=_fmap)
    labels: FrozenMap[str, str] = attrs.field(factory=FrozenMap, converter=_fmap)
    container_name: str | None = None
    profiles: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    pid: str | None = None  # "host", "service:NAME"
    ipc: str | None = None  # "host", "private", "shareable", "service:NAME"
    userns_mode: str | None = None
    devices: tuple[Device, ...] = attrs.field(default=(), converter=_tuple)
    dns: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    dns_search: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    dns_opt: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    extra_hosts: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_tuple)  # (host, ip)
    logging: Logging | None = None
    links: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    volumes_from: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    secrets: tuple[FileRef, ...] = attrs.field(default=(), converter=_tuple)
    configs: tuple[FileRef, ...] = attrs.field(default=(), converter=_tuple)
    post_start: tuple[Hook, ...] = attrs.field(default=(), converter=_tuple)
    pre_stop: tuple[Hook, ...] = attrs.field(default=(), converter=_tuple)
    pull_policy: str | None = None
    x: ServiceExtras = attrs.field(factory=ServiceExtras)


@attrs.frozen(kw_only=True)
class IpamPool:
    subnet: str | None = None
    gateway: str | None = None
    ip_range: str | None = None


@attrs.frozen(kw_only=True)
class Network:
    key: str  # the name services use in the file
    name: str  # the real name: `name:` or "<project>_<key>"
    driver: str | None = None
    driver_opts: FrozenMap[str, str] = attrs.field(factory=FrozenMap, converter=_fmap)
    internal: bool = False
    external: bool = False
    enable_ipv6: bool = False
    attachable: bool = False
    ipam: tuple[IpamPool, ...] = attrs.field(default=(), converter=_tuple)
    labels: FrozenMap[str, str] = attrs.field(factory=FrozenMap, converter=_fmap)


@attrs.frozen(kw_only=True)
class Volume:
    key: str
    name: str  # `name:` or "<project>_<key>"
    driver: str | None = None
    driver_opts: FrozenMap[str, str] = attrs.field(factory=FrozenMap, converter=_fmap)
    external: bool = False
    labels: FrozenMap[str, str] = attrs.field(factory=FrozenMap, converter=_fmap)


@attrs.frozen(kw_only=True)
class FileObject:
    """A top-level secret or config: its content comes from a file, a variable or inline text."""

    key: str
    name: str
    file: str | None = None  # absolute
    environment: str | None = None  # variable name; its value resolved at load into `content`
    content: str | None = None
    external: bool = False


@attrs.frozen(kw_only=True)
class StackExtras:
    """Top-level `x-pysup` keys."""

    backoff: Backoff = attrs.field(factory=Backoff)
    registries: FrozenMap[str, Registry] = attrs.field(factory=FrozenMap, converter=_fmap)
    subnet_pool: str | None = None
    log_format: Literal["console", "json"] | None = None
    metrics: str | None = None  # ADDR:PORT of `pysup up`'s Prometheus endpoint (--metrics wins)


@attrs.frozen(kw_only=True)
class Registry:
    mirrors: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    insecure: bool = False


@attrs.frozen(kw_only=True)
class Stack:
    name: str  # the project name
    project_dir: str
    files: tuple[str, ...] = attrs.field(converter=_tuple)  # the spec files named, in merge order
    services: FrozenMap[str, Service] = attrs.field(factory=FrozenMap, converter=_fmap)
    networks: FrozenMap[str, Network] = attrs.field(factory=FrozenMap, converter=_fmap)
    volumes: FrozenMap[str, Volume] = attrs.field(factory=FrozenMap, converter=_fmap)
    secrets: FrozenMap[str, FileObject] = attrs.field(factory=FrozenMap, converter=_fmap)
    configs: FrozenMap[str, FileObject] = attrs.field(factory=FrozenMap, converter=_fmap)
    x: StackExtras = attrs.field(factory=StackExtras)
    # Every file whose content shaped this stack (spec files, includes, extends, env files):
    # the watcher reloads when any of them changes.
    sources: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    # Where a key path of this stack is in those files (Problems in, located Problems out), for
    # errors found later, such as a container that does not start. Bound to the files as this
    # stack read them: a later edit has its own. Not part of the stack's value.
    locate: Callable[[Sequence[Problem]], tuple[Problem, ...]] | None = attrs.field(
        default=None, eq=False, repr=False)

    def backoff_for(self, service: Service) -> Backoff:
        return service.x.backoff or self.x.backoff
