"""The validated compose tree -> the typed `Stack`: every key in every syntax compose accepts,
normalised (units, absolute paths, defaults, long forms).

This is the last stage of `config.load`: the tree is interpolated, merged and checked against the
compose schema and the cross-reference rules before it gets here, so this module deals with what
a value means, not with whether a key exists. Every problem is located and collected; one
`SpecError` carries them all.

The key families live in `parse_service` (most service keys), `parse_ports`, `parse_mounts` and
`parse_resources`; this module builds the stack, the top-level resources and the `x-pysup` keys.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import attrs

from ..errors import KeyPath, Problem, SpecError
from . import parse_service as fam
from .model import (
    Backoff,
    FileObject,
    FrozenMap,
    IpamPool,
    Network,
    Registry,
    Service,
    ServiceExtras,
    Stack,
    StackExtras,
    Volume,
)
from .parse_common import (
    Ctx,
    Invalid,
    as_bool,
    as_list,
    as_map,
    as_str,
    duration,
    seconds,
    one_of,
    opt_bool,
    opt_str,
    pairs,
    q,
    str_list,
)
from .parse_mounts import parse_devices, parse_tmpfs, parse_volumes
from .parse_ports import parse_expose, parse_ports
from .parse_resources import resources
from .source import Map

__all__ = ["build_stack", "build_service"]


def build_stack(
    tree: Map,
    *,
    name: str,
    project_dir: str,
    files: Sequence[str],
    environ: Mapping[str, str],
    sources: Sequence[str] = (),
    active: Collection[str] | None = None,
    locate: Callable[[Sequence[Problem]], tuple[Problem, ...]] | None = None,
) -> Stack:
    """Build the stack from a validated tree. `environ` is the interpolation environment (it
    fills `environment` entries given without a value, and secrets/configs from `environment`);
    `active` names the services the profiles enable (None: all of them); `locate` finds a key
    path in the files this tree came from (`Stack.locate`)."""
    ctx = Ctx(tree=tree, project_dir=os.path.abspath(project_dir), environ=environ)
    extras = ctx.attempt(_stack_extras, tree.get("x-pysup"), ("x-pysup",), default=StackExtras())
    ctx.backoff = extras.backoff

    services: dict[str, Service] = {}
    for key, spec in sorted(_section(ctx, tree, "services").items()):
        if active is None or key in active:
            service = build_service(ctx, key, spec, ("services", key))
            if service is not None:
                services[key] = service
    # A `required: false` dependency on a service the profiles left out is dropped, as compose
    # does; a required one was refused by the checks already.
    for key, service in services.items():
        if any(not d.required and d.service not in services for d in service.depends_on):
            services[key] = attrs.evolve(service, depends_on=tuple(
                d for d in service.depends_on if d.required or d.service in services))

    networks = _resources(ctx, tree, "networks", name, _network)
    if "default" not in networks and any(
        a.network == "default" for s in services.values() for a in s.networks
    ):
        networks["default"] = Network(key="default", name=f"{name}_default")
    volumes = _resources(ctx, tree, "volumes", name, _volume)
    secrets = _resources(ctx, tree, "secrets", name, _file_object)
    configs = _resources(ctx, tree, "configs", name, _file_object)

    if ctx.problems:
        raise SpecError(ctx.problems)
    return Stack(
        name=name,
        project_dir=ctx.project_dir,
        files=tuple(files),
        services=FrozenMap(services),
        networks=FrozenMap(sorted(networks.items())),
        volumes=FrozenMap(volumes),
        secrets=FrozenMap(secrets),
        configs=FrozenMap(configs),
        x=extras,
        sources=tuple(dict.fromkeys([*sources, *ctx.read_files])),
        locate=locate,
    )


def _section(ctx: Ctx, tree: Map, key: str) -> Map:
    return ctx.attempt(as_map, tree.get(key), (key,), default=Map())


# --- services -------------------------------------------------------------------------------------


def _storage(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    """`volumes` then `tmpfs` entries, as one list of mounts."""
    mounts = parse_volumes(ctx, svc.get("volumes"), (*path, "volumes"))
    if svc.get("tmpfs") is not None:
        mounts += parse_tmpfs(ctx, svc["tmpfs"], (*path, "tmpfs"))
    return {"volumes": mounts}


def _ports(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    return {
        "ports": parse_ports(ctx, svc.get("ports"), (*path, "ports")),
        "expose": parse_expose(ctx, svc.get("expose"), (*path, "expose")),
        "devices": parse_devices(ctx, svc.get("devices"), (*path, "devices")),
    }


def _service_extras(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    if svc.get("x-pysup") is None:
        return {}
    here = (*path, "x-pysup")
    spec = as_map(svc["x-pysup"], here)
    fields: dict[str, Any] = {}
    if spec.get("rootfs") is not None:
        fields["rootfs"] = ctx.path(as_str(spec["rootfs"], (*here, "rootfs")))
    if spec.get("userns") is not None:
        value = spec["userns"]
        fields["userns"] = "auto" if value == "auto" else as_bool(value, (*here, "userns"))
    fields["restart_on_unhealthy"] = opt_bool(spec, "restart_on_unhealthy", here, True)
    if spec.get("backoff") is not None:
        fields["backoff"] = _backoff(spec["backoff"], (*here, "backoff"), ctx.backoff)
    if spec.get("load_balance") is not None:
        fields["load_balance"] = one_of(
            spec["load_balance"], (*here, "load_balance"), ("round-robin", "least-connections"), "load_balance")
    return {"x": ServiceExtras(**fields)}


# Each gives keyword arguments for Service; see parse_service for the signature.
SERVICE_FAMILIES: tuple[fam.Family, ...] = (
    fam.plain, fam.pull_policy, fam.commands, fam.environment, fam.maps, _ports, _storage,
    fam.networks, fam.extra_hosts, fam.depends_on, fam.healthcheck, fam.restart, fam.stop, fam.hooks,
    fam.replicas, fam.update_configs, fam.capabilities, fam.ulimits, fam.logging, fam.file_refs,
    resources, _service_extras,
)


def build_service(ctx: Ctx, name: str, spec: Any, path: KeyPath) -> Service | None:
    """One service, or None once its problems are recorded in `ctx`."""
    svc = ctx.attempt(as_map, spec, path, default=None)
    if svc is None:
        return None
    before = len(ctx.problems)
    kwargs: dict[str, Any] = {"name": name}
    for family in SERVICE_FAMILIES:
        kwargs.update(ctx.attempt(family, ctx, svc, path, default={}))
    if len(ctx.problems) > before:
        return None
    return Service(**kwargs)


# --- top-level resources --------------------------------------------------------------------------


def _resources(ctx: Ctx, tree: Map, section: str, project: str, build: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, spec in sorted(_section(ctx, tree, section).items()):
        path = (section, key)
        item = ctx.attempt(lambda: build(ctx, section, str(key), as_map(spec, path), path, project), default=None)
        if item is not None:
            out[key] = item
    return out


def _name(spec: Map, section: str, key: str, path: KeyPath, project: str) -> tuple[str, bool]:
    """The real name and whether it is external. An explicit `name` wins; an external resource is
    otherwise called by its key (or the legacy `external.name`), a managed one "<project>_<key>"."""
    external_spec = spec.get("external")
    legacy = None
    if isinstance(external_spec, dict):
        external = True
        legacy = opt_str(external_spec, "name", (*path, "external"))
    else:
        external = external_spec is not None and as_bool(external_spec, (*path, "external"))
    explicit = opt_str(spec, "name", path)
    if legacy:
        if explicit:
            raise Invalid((*path, "external", "name"),
                          f"can't use both '{section}.external.name' (deprecated) and '{section}.name'")
        explicit = legacy
    if explicit:
        return explicit, external
    return (key if external else f"{project}_{key}"), external


def _options(spec: Map, key: str, path: KeyPath) -> FrozenMap:
    return FrozenMap(sorted((k, v or "") for k, v, _ in pairs(spec.get(key), (*path, key))))


def _cidr(value: Any, path: KeyPath) -> str:
    text = as_str(value, path)
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise Invalid(path, f"invalid subnet {q(text)}") from None


def _ip(value: Any, path: KeyPath) -> str:
    text = as_str(value, path)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise Invalid(path, f"invalid IP address {q(text)}") from None


def _ipam_pool(item: Any, path: KeyPath) -> IpamPool:
    spec = as_map(item, path)
    return IpamPool(
        subnet=None if spec.get("subnet") is None else _cidr(spec["subnet"], (*path, "subnet")),
        gateway=None if spec.get("gateway") is None else _ip(spec["gateway"], (*path, "gateway")),
        ip_range=None if spec.get("ip_range") is None else _cidr(spec["ip_range"], (*path, "ip_range")),
    )


def _network(ctx: Ctx, section: str, key: str, spec: Map, path: KeyPath, project: str) -> Network:
    name, external = _name(spec, section, key, path, project)
    ipam_path = (*path, "ipam")
    ipam = as_map(spec.get("ipam"), ipam_path)
    pools = [_ipam_pool(p, (*ipam_path, "config", i)) for i, p in enumerate(as_list(ipam.get("config"), (*ipam_path, "config")))]
    return Network(
        key=key, name=name, external=external,
        driver=opt_str(spec, "driver", path),
        driver_opts=_options(spec, "driver_opts", path),
        internal=opt_bool(spec, "internal", path, False),
        enable_ipv6=opt_bool(spec, "enable_ipv6", path, False),
        attachable=opt_bool(spec, "attachable", path, False),
        ipam=tuple(pools),
        labels=_options(spec, "labels", path),
    )


def _volume(ctx: Ctx, section: str, key: str, spec: Map, path: KeyPath, project: str) -> Volume:
    name, external = _name(spec, section, key, path, project)
    opts = dict(_options(spec, "driver_opts", path))
    driver = opt_str(spec, "driver", path)
    # compose: a local volume that is really a bind mount gets its device made absolute
    if driver in (None, "local") and "bind" in opts.get("o", "").split(",") and opts.get("device"):
        opts["device"] = ctx.path(opts["device"])
    return Volume(key=key, name=name, external=external, driver=driver, driver_opts=FrozenMap(opts),
                  labels=_options(spec, "labels", path))


def _file_object(ctx: Ctx, section: str, key: str, spec: Map, path: KeyPath, project: str) -> FileObject:
    """A top-level secret or config; `environment` is resolved into `content` now."""
    name, external = _name(spec, section, key, path, project)
    file, variable = opt_str(spec, "file", path), opt_str(spec, "environment", path)
    content = opt_str(spec, "content", path) if section == "configs" else None
    if variable is not None:
        content = ctx.environ.get(variable)
        if content is None:
            raise Invalid((*path, "environment"), f"environment variable {q(variable)} is not set")
    if not external and file is None and variable is None and content is None:
        sources = "file or environment" if section == "secrets" else "file, environment or content"
        raise Invalid(path, f"{section[:-1]} {q(key)} must declare either {sources}")
    return FileObject(key=key, name=name, external=external, file=None if file is None else ctx.path(file),
                      environment=variable, content=content)


# --- x-pysup --------------------------------------------------------------------------------------


def _backoff(value: Any, path: KeyPath, base: Backoff) -> Backoff:
    """A backoff; keys left out keep `base`'s values."""
    spec = as_map(value, path)
    fields = {k: seconds(spec[k], (*path, k)) for k in ("base", "cap", "reset_after") if spec.get(k) is not None}
    return Backoff(**{"base": base.base, "cap": base.cap, "reset_after": base.reset_after, **fields})


def _registry(value: Any, path: KeyPath) -> Registry:
    spec = as_map(value, path)
    return Registry(mirrors=str_list(spec.get("mirrors"), (*path, "mirrors")),
                    insecure=opt_bool(spec, "insecure", path, False))


def _stack_extras(value: Any, path: KeyPath) -> StackExtras:
    spec = as_map(value, path)
    fields: dict[str, Any] = {}
    if spec.get("backoff") is not None:
        fields["backoff"] = _backoff(spec["backoff"], (*path, "backoff"), Backoff())
    if spec.get("registries") is not None:
        here = (*path, "registries")
        fields["registries"] = FrozenMap(sorted(
            (str(host), _registry(r, (*here, host))) for host, r in as_map(spec["registries"], here).items()))
    if spec.get("subnet_pool") is not None:
        fields["subnet_pool"] = _cidr(spec["subnet_pool"], (*path, "subnet_pool"))
    if spec.get("log_format") is not None:
        fields["log_format"] = one_of(spec["log_format"], (*path, "log_format"), ("console", "json"), "log_format")
    if spec.get("metrics") is not None:
        fields["metrics"] = str(spec["metrics"])
    return StackExtras(**fields)
