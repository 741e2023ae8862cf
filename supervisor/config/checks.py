"""Checks on the merged raw compose tree that the JSON schema cannot express.

Three kinds, all on the located `Map`/`Seq` tree so every finding points at a line:
- `semantic_problems`: what Docker Compose refuses after the schema passes (compose-go
  `loader/validate.go` `checkConsistency` and `validation/`): references to services, networks,
  volumes, secrets and configs that do not exist or are disabled by profiles, dependency cycles,
  `network_mode` with `networks`, and so on;
- `unsupported_key_warnings`: valid compose that pysup does not act on, one warning per key, so
  nobody believes a setting took effect when it did not;
- `xpysup_problems`: pysup's own `x-pysup` keys, against `supervisor/schema/x-pysup.json`.

The functions assume nothing about types the schema would have rejected: a wrong type is skipped
here (schema validation reports it), never a crash.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from ..errors import KeyPath, Problem
from . import graph
from . import units
from .schema import did_you_mean, load_schema, quote, schema_problems, sort_problems
from .source import Map, problem_at

# --- what pysup acts on (documented in specs/) ----------------------------------------------------

SUPPORTED_TOP_LEVEL_KEYS = frozenset({"name", "include", "services", "networks", "volumes", "secrets", "configs"})

SUPPORTED_SERVICE_KEYS = frozenset({
    "image", "command", "entrypoint", "environment", "env_file", "working_dir", "user", "hostname",
    "domainname", "ports", "expose", "volumes", "tmpfs", "read_only", "networks", "network_mode",
    "depends_on", "healthcheck", "restart", "deploy", "scale", "mem_limit", "memswap_limit",
    "mem_reservation", "cpus", "cpu_shares", "cpuset", "pids_limit", "blkio_config", "stop_signal",
    "stop_grace_period", "init", "cap_add", "cap_drop", "privileged", "security_opt", "ulimits",
    "sysctls", "labels", "container_name", "profiles", "extends", "pid", "ipc", "userns_mode",
    "devices", "dns", "dns_search", "dns_opt", "extra_hosts", "logging", "links", "volumes_from",
    "secrets", "configs", "post_start", "pre_stop", "pull_policy",
})

# deploy: replicated services only; swarm scheduling (placement, global mode, endpoint mode, service
# labels) has no meaning on one host.
SUPPORTED_DEPLOY_KEYS = frozenset({
    "mode", "replicas", "resources", "restart_policy", "update_config", "rollback_config",
})
SUPPORTED_DEPLOY_MODES = frozenset({"replicated"})
SUPPORTED_RESOURCES_KEYS = frozenset({"limits", "reservations"})
SUPPORTED_LIMITS_KEYS = frozenset({"cpus", "memory", "pids"})
SUPPORTED_RESERVATIONS_KEYS = frozenset({"cpus", "memory"})  # not generic_resources, devices
# The model carries the I/O weights (io.weight / blkio.weight); the bps and iops throttles are not
# carried yet, so they warn rather than silently do nothing.
SUPPORTED_BLKIO_KEYS = frozenset({"weight", "weight_device"})
SUPPORTED_PORT_KEYS = frozenset({"target", "published", "host_ip", "protocol", "mode", "name", "app_protocol"})
SUPPORTED_SERVICE_NETWORK_KEYS = frozenset({
    "aliases", "ipv4_address", "ipv6_address", "interface_name", "priority",
})
# `consistency` is a macOS file-sharing hint: no meaning on Linux, so it warns like the other no-ops.
SUPPORTED_MOUNT_KEYS = frozenset({"type", "source", "target", "read_only", "bind", "volume", "tmpfs"})
SUPPORTED_MOUNT_TYPES = frozenset({"bind", "volume", "tmpfs"})
SUPPORTED_BIND_KEYS = frozenset({"propagation", "create_host_path"})  # not selinux relabeling, recursive
SUPPORTED_NETWORK_KEYS = frozenset({
    "name", "driver", "ipam", "external", "internal", "enable_ipv6", "labels",
})
SUPPORTED_NETWORK_DRIVERS = frozenset({"bridge"})
SUPPORTED_IPAM_KEYS = frozenset({"driver", "config"})
SUPPORTED_IPAM_DRIVERS = frozenset({"default"})
SUPPORTED_IPAM_CONFIG_KEYS = frozenset({"subnet", "ip_range", "gateway"})
SUPPORTED_VOLUME_KEYS = frozenset({"name", "driver", "external", "labels"})
SUPPORTED_VOLUME_DRIVERS = frozenset({"local"})
SUPPORTED_SECRET_KEYS = frozenset({"name", "file", "environment", "external", "labels"})
SUPPORTED_CONFIG_KEYS = frozenset({"name", "file", "environment", "content", "external", "labels"})

_HINTS = {"build": "use a prebuilt image"}

NAMESPACE_KEYS = ("network_mode", "pid", "ipc")  # `service:<name>` shares that service's namespace
SERVICE_PREFIX = "service:"
CONTAINER_PREFIX = "container:"


def unsupported_service_keys() -> frozenset[str]:
    """Service keys the compose schema allows but pysup ignores (derived from the vendored schema)."""
    return frozenset(load_schema()["$defs"]["service"]["properties"]) - SUPPORTED_SERVICE_KEYS


# --- small helpers --------------------------------------------------------------------------------

def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _services(tree: Map) -> Mapping[str, Any]:
    return _map(tree.get("services"))


def _is_true(value: Any) -> bool:
    """A YAML true, or the string "true" that interpolation may have left."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _profiles_of(service: Any) -> list[str]:
    return [p for p in _list(_map(service).get("profiles")) if isinstance(p, str)]


def active_services(tree: Map, profiles: Collection[str]) -> set[str]:
    """The services compose would run with these profiles active (compose-go `HasProfile`).

    A service without `profiles` is always active; one with profiles is active when any of them is
    active, and "*" activates every profile. Dependencies are NOT pulled in: like compose, a required
    `depends_on` on a disabled service is an error (`semantic_problems` reports it) and a
    `required: false` one is dropped.
    """
    wanted = set(profiles)
    out = set()
    for name, service in _services(tree).items():
        own = _profiles_of(service)
        if not own or "*" in wanted or wanted.intersection(own):
            out.add(name)
    return out


def _disabled_message(name: str, where: str, service: Any) -> str:
    own = _profiles_of(service)
    needs = f'profile "{own[0]}"' if len(own) == 1 else "one of the profiles " + ", ".join(f'"{p}"' for p in own)
    return f'service "{name}" in {where} is not enabled: it needs {needs}'


# --- references between services -------------------------------------------------------------------

def _depends_on(service: Mapping[str, Any]) -> Iterator[tuple[str, KeyPath, bool]]:
    """(dependency, path suffix under the service, required) for list and map syntax."""
    deps = service.get("depends_on")
    if isinstance(deps, list):
        for i, name in enumerate(deps):
            if isinstance(name, str):
                yield name, ("depends_on", i), True
    elif isinstance(deps, dict):
        for name, cfg in deps.items():
            required = _map(cfg).get("required", True)
            yield name, ("depends_on", name), not (required is False or str(required).lower() == "false")


def _service_refs(service: Mapping[str, Any]) -> Iterator[tuple[str, KeyPath, str, bool]]:
    """Every reference to another service: (name, path suffix, where, required).

    These are the edges compose adds to `depends_on` implicitly (compose-go normalize): links,
    volumes_from (not `container:`) and `service:` namespaces.
    """
    for name, suffix, required in _depends_on(service):
        yield name, suffix, "depends_on", required
    for i, link in enumerate(_list(service.get("links"))):
        if isinstance(link, str) and link:
            yield link.split(":", 1)[0], ("links", i), "links", True
    for i, source in enumerate(_list(service.get("volumes_from"))):
        if isinstance(source, str) and source and not source.startswith(CONTAINER_PREFIX):
            yield source.split(":", 1)[0], ("volumes_from", i), "volumes_from", True
    for key in NAMESPACE_KEYS:
        mode = service.get(key)
        if isinstance(mode, str) and mode.startswith(SERVICE_PREFIX):
            yield mode[len(SERVICE_PREFIX):], (key,), key, True


def dependency_graph(tree: Map, profiles: Collection[str] = ()) -> dict[str, set[str]]:
    """`{service: services it must start after}` for the active services.

    Includes compose's implicit edges (links, volumes_from, `service:` namespaces) and leaves out
    references to unknown services, disabled optional dependencies and self-references (all of which
    `semantic_problems` reports or, for `required: false`, compose drops).
    """
    active = active_services(tree, profiles)
    services = _services(tree)
    return {
        name: {dep for dep, _, _, _ in _service_refs(_map(services[name])) if dep in active and dep != name}
        for name in sorted(active)
    }


# --- semantic problems ----------------------------------------------------------------------------

def semantic_problems(tree: Map, *, profiles: Collection[str] = ()) -> list[Problem]:
    """What compose refuses beyond the schema, each located at the offending value.

    References are checked among the services active with `profiles` (default: only the services
    without profiles), as compose checks the project after disabling the others.
    """
    out: list[Problem] = []
    services = _services(tree)
    active = active_services(tree, profiles)
    for name in sorted(active):
        service = services[name]
        if not isinstance(service, dict):
            continue
        base: KeyPath = ("services", name)
        out += _reference_problems(tree, name, service, base, services, active)
        out += _network_problems(tree, service, base)
        out += _volume_problems(tree, service, base)
        out += _secret_config_problems(tree, service, base)
        out += _consistency_problems(tree, service, base)
        out += _image_problems(tree, name, service, base)
    out += _container_name_problems(tree, services, active)
    out += _cycle_problems(tree, services, active)
    out += _top_level_problems(tree)
    return sort_problems(out)


def _image_problems(tree: Map, name: str, service: Mapping[str, Any], base: KeyPath) -> Iterator[Problem]:
    """Something to run: an image, or pysup's own x-pysup.rootfs. pysup builds no images."""
    if service.get("image") is None and _map(service.get("x-pysup")).get("rootfs") is None:
        hint = " (pysup does not build images: build it elsewhere and name it here)" if "build" in service else ""
        yield problem_at(tree, base, f'service "{name}" has neither an image nor x-pysup.rootfs{hint}', key=True)


def _container_name_problems(tree: Map, services: Mapping[str, Any], active: set[str]) -> Iterator[Problem]:
    """Container names are unique on a host, so across the services of a stack too."""
    first: dict[str, str] = {}
    for name in sorted(active):
        cname = _map(services[name]).get("container_name")
        if not isinstance(cname, str):
            continue
        if cname in first:
            yield problem_at(tree, ("services", name, "container_name"),
                             f'container name "{cname}" is already used by service "{first[cname]}"')
        else:
            first[cname] = name


def _reference_problems(tree: Map, name: str, service: Mapping[str, Any], base: KeyPath,
                        services: Mapping[str, Any], active: set[str]) -> Iterator[Problem]:
    for dep, suffix, where, required in _service_refs(service):
        path = base + suffix
        key = isinstance(suffix[-1], str) and where == "depends_on"  # map syntax: point at the key
        if dep == name:
            yield problem_at(tree, path, f'service "{name}" depends on itself' if where == "depends_on"
                             else f'service "{name}" refers to itself in {where}', key=key)
        elif dep not in services:
            yield problem_at(tree, path, f'unknown service "{dep}" in {where}{did_you_mean(dep, services)}', key=key)
        elif dep not in active and required:
            # compose drops a disabled dependency only when it is `required: false`
            yield problem_at(tree, path, _disabled_message(dep, where, services[dep]), key=key)


def _network_problems(tree: Map, service: Mapping[str, Any], base: KeyPath) -> Iterator[Problem]:
    networks = service.get("networks")
    defined = set(_map(tree.get("networks"))) | {"default"}
    if isinstance(networks, list):
        refs = [(n, base + ("networks", i), False) for i, n in enumerate(networks) if isinstance(n, str)]
    elif isinstance(networks, dict):
        refs = [(n, base + ("networks", n), True) for n in networks]
    else:
        refs = []
    for net, path, key in refs:
        if net not in defined:
            yield problem_at(tree, path, f'network "{net}" is not defined in the top-level networks'
                             f'{did_you_mean(net, defined)}', key=key)
    # compose-go checkConsistency: `s.NetworkMode != "" && len(s.Networks) > 0`
    if isinstance(service.get("network_mode"), str) and service["network_mode"] and refs:
        yield problem_at(tree, base + ("networks",), '"networks" cannot be used together with "network_mode"', key=True)


def volume_source(spec: str) -> str | None:
    """The named volume a short-syntax mount uses, or None (bind mount or anonymous volume).

    `name:/path[:mode]` names a volume; a source starting with "/", "." or "~" is a host path
    (compose-go `isFilePath`); a single field is the target of an anonymous volume.
    """
    parts = spec.split(":")
    if len(parts) < 2:
        return None
    source = parts[0]
    if not source or source[0] in "/.~":
        return None
    return source


def _volume_problems(tree: Map, service: Mapping[str, Any], base: KeyPath) -> Iterator[Problem]:
    defined = set(_map(tree.get("volumes")))
    for i, mount in enumerate(_list(service.get("volumes"))):
        if isinstance(mount, str):
            name, path = volume_source(mount), base + ("volumes", i)
        elif isinstance(mount, dict) and mount.get("type") == "volume" and isinstance(mount.get("source"), str):
            name, path = mount["source"] or None, base + ("volumes", i, "source")
        else:
            continue
        if name is not None and name not in defined:
            yield problem_at(tree, path, f'volume "{name}" is not defined in the top-level volumes'
                             f'{did_you_mean(name, defined)}')


def _secret_config_problems(tree: Map, service: Mapping[str, Any], base: KeyPath) -> Iterator[Problem]:
    for kind, noun in (("secrets", "secret"), ("configs", "config")):
        defined = set(_map(tree.get(kind)))
        for i, ref in enumerate(_list(service.get(kind))):
            if isinstance(ref, str):
                name, path = ref, base + (kind, i)
            elif isinstance(ref, dict) and isinstance(ref.get("source"), str):
                name, path = ref["source"], base + (kind, i, "source")
            else:
                continue
            if name not in defined:
                yield problem_at(tree, path, f'{noun} "{name}" is not defined in the top-level {kind}'
                                 f'{did_you_mean(name, defined)}')


def _consistency_problems(tree: Map, service: Mapping[str, Any], base: KeyPath) -> Iterator[Problem]:
    """Checks on one service's own keys that the parser would otherwise report less clearly.

    The limits that must agree (mem_limit and deploy.resources.limits.memory, ...) and
    container_name with replicas are checked in parse, with compose-go's exact rules."""
    test = _map(service.get("healthcheck")).get("test")
    if isinstance(test, list) and test and test[0] not in ("CMD", "CMD-SHELL", "NONE"):
        yield problem_at(tree, base + ("healthcheck", "test", 0),
                         f'healthcheck test must start with "CMD", "CMD-SHELL" or "NONE", found {quote(test[0])}')


def _cycle_problems(tree: Map, services: Mapping[str, Any], active: set[str]) -> Iterator[Problem]:
    """One problem per dependency cycle, at the reference that starts it.

    Self-references are reported on their own; after reporting a cycle its services are set aside,
    so one tangle of services gives one message rather than one per permutation.
    """
    where: dict[tuple[str, str], KeyPath] = {}
    deps: dict[str, set[str]] = {}
    for name in sorted(active):
        deps[name] = set()
        for dep, suffix, _, _ in _service_refs(_map(services[name])):
            if dep in active and dep != name:
                deps[name].add(dep)
                where.setdefault((name, dep), ("services", name) + suffix)
    while (cycle := graph.find_cycle(deps)) is not None:
        ring = cycle[:-1]
        first = ring.index(min(ring))
        ring = ring[first:] + ring[:first]
        cycle = ring + [ring[0]]
        path = where[(cycle[0], cycle[1])]
        in_depends_on_map = path[-2] == "depends_on" and isinstance(path[-1], str)
        yield problem_at(tree, path, f"dependency cycle: {graph.format_cycle(cycle)}", key=in_depends_on_map)
        for name in ring:
            deps.pop(name, None)
        deps = {n: d - set(ring) for n, d in deps.items()}


def _top_level_problems(tree: Map) -> Iterator[Problem]:
    # compose-go validation: secrets need file|environment (or a driver, or external); configs
    # file|environment|content; at most one of them.
    for kind, sources in (("secrets", ("file", "environment")), ("configs", ("file", "environment", "content"))):
        for name, cfg in _map(tree.get(kind)).items():
            if not isinstance(cfg, dict):
                continue
            present = [k for k in sources if k in cfg]
            noun = kind[:-1]
            if len(present) > 1:
                together = " and ".join(f'"{k}"' for k in present)
                yield problem_at(tree, (kind, name, present[1]), f"{together} cannot be used together in a {noun}",
                                 key=True)
            elif not present and "external" not in cfg and "driver" not in cfg:
                options = ", ".join(f'"{k}"' for k in sources[:-1]) + f' or "{sources[-1]}"'
                yield problem_at(tree, (kind, name), f'{noun} "{name}" needs {options} (or "external: true")', key=True)
    # compose-go checkExternal (volumes only): an external volume takes nothing but its name
    for name, cfg in _map(tree.get("volumes")).items():
        if isinstance(cfg, dict) and _is_true(cfg.get("external")):
            for key in cfg:
                if key not in ("name", "external") and not key.startswith("x-"):
                    yield problem_at(tree, ("volumes", name, key),
                                     f'"{key}" cannot be used with "external: true": an external volume '
                                     "already exists and only its name may be given", key=True)


# --- unsupported keys -----------------------------------------------------------------------------

def unsupported_key_warnings(tree: Map) -> list[Problem]:
    """One warning per key that is valid compose but that pysup ignores, located at the key."""
    out: list[Problem] = []

    def keys(node: Any, path: KeyPath, supported: frozenset[str]) -> None:
        for key in _map(node):
            if key not in supported and not key.startswith("x-"):
                hint = f" ({_HINTS[key]})" if key in _HINTS and len(path) == 2 and path[0] == "services" else ""
                message = f'"{key}" is not supported by pysup and is ignored{hint}'
                out.append(problem_at(tree, path + (key,), message, key=True))

    def value(node: Any, key: str, path: KeyPath, supported: frozenset[str], why: str) -> None:
        v = _map(node).get(key)
        if isinstance(v, str) and v not in supported:
            message = f"{key} {quote(v)} is not supported by pysup and is ignored ({why})"
            out.append(problem_at(tree, path + (key,), message))

    top = {k: v for k, v in tree.items() if k != "version"}
    keys(top, (), SUPPORTED_TOP_LEVEL_KEYS)
    if "version" in tree:
        out.append(problem_at(tree, ("version",), '"version" is obsolete and ignored (remove it)', key=True))

    for name, service in _services(tree).items():
        base: KeyPath = ("services", name)
        if not isinstance(service, dict):
            continue
        keys(service, base, SUPPORTED_SERVICE_KEYS)
        deploy = service.get("deploy")
        keys(deploy, base + ("deploy",), SUPPORTED_DEPLOY_KEYS)
        value(deploy, "mode", base + ("deploy",), SUPPORTED_DEPLOY_MODES, 'services run as "replicated"')
        resources = _map(deploy).get("resources")
        keys(resources, base + ("deploy", "resources"), SUPPORTED_RESOURCES_KEYS)
        keys(_map(resources).get("limits"), base + ("deploy", "resources", "limits"), SUPPORTED_LIMITS_KEYS)
        keys(_map(resources).get("reservations"), base + ("deploy", "resources", "reservations"),
             SUPPORTED_RESERVATIONS_KEYS)
        keys(service.get("blkio_config"), base + ("blkio_config",), SUPPORTED_BLKIO_KEYS)
        for i, port in enumerate(_list(service.get("ports"))):
            keys(port, base + ("ports", i), SUPPORTED_PORT_KEYS)
        for net, cfg in _map(service.get("networks")).items():
            keys(cfg, base + ("networks", net), SUPPORTED_SERVICE_NETWORK_KEYS)
        for i, mount in enumerate(_list(service.get("volumes"))):
            keys(mount, base + ("volumes", i), SUPPORTED_MOUNT_KEYS)
            value(mount, "type", base + ("volumes", i), SUPPORTED_MOUNT_TYPES, "pysup mounts bind, volume and tmpfs")
            keys(_map(mount).get("bind"), base + ("volumes", i, "bind"), SUPPORTED_BIND_KEYS)

    for name, cfg in _map(tree.get("networks")).items():
        base = ("networks", name)
        keys(cfg, base, SUPPORTED_NETWORK_KEYS)
        value(cfg, "driver", base, SUPPORTED_NETWORK_DRIVERS, "pysup creates bridge networks")
        ipam = _map(cfg).get("ipam")
        keys(ipam, base + ("ipam",), SUPPORTED_IPAM_KEYS)
        value(ipam, "driver", base + ("ipam",), SUPPORTED_IPAM_DRIVERS, "pysup assigns addresses itself")
        for i, block in enumerate(_list(_map(ipam).get("config"))):
            keys(block, base + ("ipam", "config", i), SUPPORTED_IPAM_CONFIG_KEYS)
    for name, cfg in _map(tree.get("volumes")).items():
        keys(cfg, ("volumes", name), SUPPORTED_VOLUME_KEYS)
        value(cfg, "driver", ("volumes", name), SUPPORTED_VOLUME_DRIVERS, "volumes are local directories")
    for name, cfg in _map(tree.get("secrets")).items():
        keys(cfg, ("secrets", name), SUPPORTED_SECRET_KEYS)
    for name, cfg in _map(tree.get("configs")).items():
        keys(cfg, ("configs", name), SUPPORTED_CONFIG_KEYS)
    return sort_problems(out)


# --- x-pysup --------------------------------------------------------------------------------------

XPYSUP_SCHEMA = "x-pysup.json"


def _seconds(value: Any) -> float | None:
    try:
        return units.parse_seconds(value)
    except units.UnitError:
        return None


def xpysup_problems(tree: Map) -> list[Problem]:
    """Problems in pysup's own `x-pysup` keys (top level and per service), located."""
    out = schema_problems(tree, XPYSUP_SCHEMA)
    # The checks below add what a schema cannot say, and stay quiet where the schema already spoke.
    flagged = [p.path for p in out]

    def clean(path: KeyPath) -> bool:
        return not any(f[: len(path)] == path or path[: len(f)] == f for f in flagged)

    stack = _map(tree.get("x-pysup"))
    pool = stack.get("subnet_pool")
    if isinstance(pool, str) and clean(("x-pysup", "subnet_pool")):
        try:
            ipaddress.ip_network(pool)
        except ValueError:
            try:
                fixed = f' (did you mean "{ipaddress.ip_network(pool, strict=False)}"?)'
            except ValueError:
                fixed = ""
            out.append(problem_at(tree, ("x-pysup", "subnet_pool"), f"invalid subnet_pool {quote(pool)}{fixed}"))
    backoffs = [(("x-pysup", "backoff"), stack.get("backoff"))]
    backoffs += [(("services", n, "x-pysup", "backoff"), _map(_map(s).get("x-pysup")).get("backoff"))
                 for n, s in _services(tree).items()]
    for path, backoff in backoffs:
        backoff = _map(backoff)
        for key in ("base", "cap", "reset_after"):
            if isinstance(backoff.get(key), str) and clean(path + (key,)):
                try:
                    units.parse_seconds(backoff[key])
                except units.UnitError as exc:
                    out.append(problem_at(tree, path + (key,), str(exc)))
        base, cap = _seconds(backoff.get("base")), _seconds(backoff.get("cap"))
        if base is not None and cap is not None and base > cap and clean(path):
            out.append(problem_at(tree, path + ("base",), f"backoff base ({quote(backoff['base'])}) is longer than "
                                  f"its cap ({quote(backoff['cap'])})"))
    return sort_problems(out)
