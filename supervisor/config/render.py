"""A `Stack` back to compose YAML/JSON, normalised the way `docker compose config` prints it.

Long syntax everywhere (ports, volumes, depends_on, secrets), environment as a map, commands as
lists, durations as Go duration strings ("1m30s"), signals by name, sizes as strings of bytes
(`"268435456"`: the schema takes a string for every size, `deploy.resources.limits.memory` only a
string), file modes as octal strings ("0440"). Values equal to the default are left out.

The output loads back through `parse.build_stack` to an equal `Stack` (given the same project
directory and environment): that is the contract the tests hold it to. Where compose's output and
that contract disagree, the contract wins:
- limits are always written under `deploy.resources` (never `mem_limit`), so the consistency
  rule between the two spellings cannot trip;
- `env_file` is kept (compose drops it after folding it into `environment`), so `env_files`,
  which the watcher uses, survive; `environment` wins over it on the way back in;
- a secret's value from `environment` is written as the variable's name, never as content;
- tmpfs mounts carrying mount flags (`noexec`, ...) are written in the `tmpfs:` short syntax,
  which is the only one that can say them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml
from yaml.nodes import ScalarNode

from . import units
from .model import (
    Backoff,
    FileObject,
    FileRef,
    Healthcheck,
    Hook,
    Mount,
    Network,
    Port,
    Resources,
    RestartPolicy,
    Service,
    ServiceExtras,
    Stack,
    StackExtras,
    UpdateConfig,
    Volume,
)
from .source import _Resolver  # the YAML 1.2 rules the reader uses, to quote what needs quoting

__all__ = ["to_compose", "to_json", "to_yaml"]

_DEFAULT_SERVICE = Service(name="")
_RESTART_TO_DEPLOY = {"no": "none", "always": "any", "on-failure": "on-failure", "unless-stopped": "unless-stopped"}


def to_compose(stack: Stack, *, escape_interpolation: bool = False) -> dict[str, Any]:
    """The stack as a plain compose document (dicts, lists, str, int, float, bool).

    With `escape_interpolation`, every `$` in a value is doubled, so the output can go through
    interpolation again unchanged (what `docker compose config` does)."""
    out: dict[str, Any] = {"name": stack.name, "services": {k: _service(s) for k, s in stack.services.items()}}
    for key, items, fn in (
        ("networks", stack.networks, _network),
        ("volumes", stack.volumes, _volume),
        ("secrets", stack.secrets, _file_object),
        ("configs", stack.configs, _file_object),
    ):
        if items:
            out[key] = {k: fn(v) for k, v in items.items()}
    extras = _stack_extras(stack.x)
    if extras:
        out["x-pysup"] = extras
    return _escape(out) if escape_interpolation else out


def to_json(stack: Stack, *, escape_interpolation: bool = False) -> str:
    return json.dumps(to_compose(stack, escape_interpolation=escape_interpolation), indent=2, ensure_ascii=False)


def to_yaml(stack: Stack, *, escape_interpolation: bool = False) -> str:
    return yaml.dump(
        to_compose(stack, escape_interpolation=escape_interpolation),
        Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100,
    )


# --- helpers --------------------------------------------------------------------------------------


def _put(out: dict[str, Any], key: str, value: Any, default: Any = None) -> None:
    """Set `key` unless `value` is the default or empty."""
    if value is None or value == default or (isinstance(value, (tuple, list, Mapping)) and not value):
        return
    if isinstance(value, Mapping) and not isinstance(value, dict):
        value = dict(value)
    elif isinstance(value, tuple):
        value = list(value)
    out[key] = value


def _duration(seconds: float) -> str:
    return units.format_duration(seconds)


def _bytes(n: int) -> str:
    return str(n)


def _mode(mode: int) -> str:
    return f"0{mode:o}"


def _escape(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


# --- services -------------------------------------------------------------------------------------


def _service(s: Service) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, "image", s.image)
    if s.entrypoint is not None:
        out["entrypoint"] = list(s.entrypoint)
    if s.command is not None:
        out["command"] = list(s.command)
    _put(out, "env_file", s.env_files)
    _put(out, "environment", s.environment)
    for key in ("working_dir", "user", "hostname", "domainname", "container_name", "pid", "ipc",
                "userns_mode", "network_mode", "pull_policy"):
        _put(out, key, getattr(s, key))
    for key in ("read_only", "init", "privileged"):
        _put(out, key, getattr(s, key), False)
    for key in ("profiles", "expose", "cap_add", "cap_drop", "security_opt", "dns", "dns_search",
                "dns_opt", "links", "volumes_from"):
        _put(out, key, getattr(s, key))
    _put(out, "ports", [_port(p) for p in s.ports])
    volumes, tmpfs = _split_mounts(s.volumes)
    _put(out, "volumes", [_mount(m) for m in volumes])
    _put(out, "tmpfs", [_tmpfs_short(m) for m in tmpfs])
    _put(out, "devices", [{"source": d.source, "target": d.target, "permissions": d.permissions} for d in s.devices])
    if s.networks:
        out["networks"] = {a.network: _attachment(a) for a in s.networks}
    _put(out, "extra_hosts", [f"{host}={ip}" for host, ip in s.extra_hosts])
    _put(out, "depends_on", {d.service: _dependency(d) for d in s.depends_on})
    if s.healthcheck is not None:
        out["healthcheck"] = _healthcheck(s.healthcheck)
    if not _needs_deploy_policy(s.restart):
        _put(out, "restart", _restart_string(s.restart), "no")
    _put(out, "deploy", _deploy(s))
    _put(out, "memswap_limit", None if s.resources.memswap is None else _bytes(s.resources.memswap))
    _put(out, "cpu_shares", s.resources.cpu_shares)
    _put(out, "cpuset", s.resources.cpuset)
    _put(out, "blkio_config", _blkio(s.resources))
    if s.stop_signal != _DEFAULT_SERVICE.stop_signal:
        out["stop_signal"] = units.signal_name(s.stop_signal)
    if s.stop_grace_period != _DEFAULT_SERVICE.stop_grace_period:
        out["stop_grace_period"] = _duration(s.stop_grace_period)
    _put(out, "ulimits", {u.name: u.soft if u.soft == u.hard else {"soft": u.soft, "hard": u.hard} for u in s.ulimits})
    _put(out, "sysctls", s.sysctls)
    _put(out, "labels", s.labels)
    if s.logging is not None:
        out["logging"] = {}
        _put(out["logging"], "driver", s.logging.driver)
        _put(out["logging"], "options", s.logging.options)
    _put(out, "secrets", [_file_ref(r) for r in s.secrets])
    _put(out, "configs", [_file_ref(r) for r in s.configs])
    _put(out, "post_start", [_hook(h) for h in s.post_start])
    _put(out, "pre_stop", [_hook(h) for h in s.pre_stop])
    _put(out, "x-pysup", _service_extras(s.x))
    return out


def _port(p: Port) -> dict[str, Any]:
    out: dict[str, Any] = {"target": p.target}
    if p.published is not None:
        lo, hi = p.published
        out["published"] = str(lo) if lo == hi else f"{lo}-{hi}"
    _put(out, "host_ip", p.host_ip)
    out["protocol"] = p.protocol
    out["mode"] = p.mode
    _put(out, "name", p.name)
    _put(out, "app_protocol", p.app_protocol)
    return out


def _split_mounts(mounts: tuple[Mount, ...]) -> tuple[list[Mount], list[Mount]]:
    """(volumes, tmpfs): the trailing tmpfs mounts go to `tmpfs:` when one has mount flags, the
    only syntax that can carry them; they trail because that is where `tmpfs:` entries load."""
    cut = len(mounts)
    while cut and mounts[cut - 1].type == "tmpfs":
        cut -= 1
    tail = list(mounts[cut:])
    if any(m.tmpfs_options for m in tail):
        return list(mounts[:cut]), tail
    return list(mounts), []


def _mount(m: Mount) -> dict[str, Any]:
    out: dict[str, Any] = {"type": m.type}
    _put(out, "source", m.source)
    out["target"] = m.target
    _put(out, "read_only", m.read_only, False)
    if m.type == "bind":
        out["bind"] = {"create_host_path": m.bind_create_host_path}
        _put(out["bind"], "propagation", m.bind_propagation)
        if m.idmap:
            out["x-pysup"] = {"idmap": True}
    elif m.type == "volume":
        vol: dict[str, Any] = {}
        _put(vol, "nocopy", m.volume_nocopy, False)
        _put(vol, "subpath", m.volume_subpath)
        _put(out, "volume", vol)
    else:
        tmp: dict[str, Any] = {}
        _put(tmp, "size", None if m.tmpfs_size is None else _bytes(m.tmpfs_size))
        _put(tmp, "mode", None if m.tmpfs_mode is None else _mode(m.tmpfs_mode))
        _put(out, "tmpfs", tmp)
    return out


def _tmpfs_short(m: Mount) -> str:
    opts = ["ro"] if m.read_only else []
    if m.tmpfs_size is not None:
        opts.append(f"size={m.tmpfs_size}")
    if m.tmpfs_mode is not None:
        opts.append(f"mode={m.tmpfs_mode:o}")
    opts.extend(m.tmpfs_options)
    return f"{m.target}:{','.join(opts)}" if opts else m.target


def _attachment(a: Any) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    _put(out, "aliases", a.aliases)
    _put(out, "ipv4_address", a.ipv4_address)
    _put(out, "ipv6_address", a.ipv6_address)
    _put(out, "priority", a.priority, 0)
    _put(out, "interface_name", a.interface_name)
    return out or None


def _dependency(d: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"condition": d.condition}
    _put(out, "restart", d.restart, False)
    out["required"] = d.required
    return out


def _healthcheck(h: Healthcheck) -> dict[str, Any]:
    if h.disabled:
        return {"disable": True}
    out: dict[str, Any] = {}
    _put(out, "test", h.test)
    for key in ("interval", "timeout", "start_period", "start_interval"):
        value = getattr(h, key)
        if value is not None:
            out[key] = _duration(value)
    _put(out, "retries", h.retries)
    return out


def _needs_deploy_policy(r: RestartPolicy) -> bool:
    """Whether `restart: <string>` cannot say it all (a delay, a window, or attempts to a
    condition other than on-failure)."""
    return r.delay is not None or r.window is not None or (
        r.max_attempts is not None and r.condition != "on-failure")


def _restart_string(r: RestartPolicy) -> str:
    if r.condition == "on-failure" and r.max_attempts is not None:
        return f"on-failure:{r.max_attempts}"
    return r.condition


def _restart_policy(r: RestartPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {"condition": _RESTART_TO_DEPLOY[r.condition]}
    _put(out, "max_attempts", r.max_attempts)
    _put(out, "delay", None if r.delay is None else _duration(r.delay))
    _put(out, "window", None if r.window is None else _duration(r.window))
    return out


def _update_config(u: UpdateConfig) -> dict[str, Any]:
    default = UpdateConfig()
    out: dict[str, Any] = {}
    for key in ("parallelism", "failure_action", "max_failure_ratio", "order"):
        _put(out, key, getattr(u, key), getattr(default, key))
    for key in ("delay", "monitor"):
        if getattr(u, key) != getattr(default, key):
            out[key] = _duration(getattr(u, key))
    return out


def _deploy(s: Service) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if s.replicas != 1:
        out["replicas"] = s.replicas
    r = s.resources
    limits: dict[str, Any] = {}
    _put(limits, "cpus", r.cpus)
    _put(limits, "memory", None if r.memory is None else _bytes(r.memory))
    _put(limits, "pids", r.pids)
    reservations: dict[str, Any] = {}
    _put(reservations, "memory", None if r.memory_reservation is None else _bytes(r.memory_reservation))
    resources: dict[str, Any] = {}
    _put(resources, "limits", limits)
    _put(resources, "reservations", reservations)
    _put(out, "resources", resources)
    if _needs_deploy_policy(s.restart):
        out["restart_policy"] = _restart_policy(s.restart)
    _put(out, "update_config", _update_config(s.update_config))
    _put(out, "rollback_config", _update_config(s.rollback_config))
    return out


def _blkio(r: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, "weight", r.io_weight)
    _put(out, "weight_device", [{"path": p, "weight": w} for p, w in r.io_weight_device])
    return out


def _file_ref(r: FileRef) -> dict[str, Any]:
    out: dict[str, Any] = {"source": r.source, "target": r.target}
    _put(out, "uid", r.uid)
    _put(out, "gid", r.gid)
    _put(out, "mode", None if r.mode is None else _mode(r.mode))
    return out


def _hook(h: Hook) -> dict[str, Any]:
    out: dict[str, Any] = {"command": list(h.command)}
    _put(out, "user", h.user)
    _put(out, "privileged", h.privileged, False)
    _put(out, "working_dir", h.working_dir)
    _put(out, "environment", h.environment)
    return out


def _backoff(b: Backoff) -> dict[str, Any]:
    return {"base": _duration(b.base), "cap": _duration(b.cap), "reset_after": _duration(b.reset_after)}


def _service_extras(x: ServiceExtras) -> dict[str, Any]:
    default = ServiceExtras()
    out: dict[str, Any] = {}
    _put(out, "rootfs", x.rootfs)
    if x.userns != default.userns:
        out["userns"] = x.userns
    if x.restart_on_unhealthy != default.restart_on_unhealthy:
        out["restart_on_unhealthy"] = x.restart_on_unhealthy
    if x.backoff is not None:
        out["backoff"] = _backoff(x.backoff)
    _put(out, "load_balance", x.load_balance, default.load_balance)
    return out


# --- top level ------------------------------------------------------------------------------------


def _network(n: Network) -> dict[str, Any]:
    out: dict[str, Any] = {"name": n.name}
    _put(out, "driver", n.driver)
    _put(out, "driver_opts", n.driver_opts)
    for key in ("internal", "external", "enable_ipv6", "attachable"):
        _put(out, key, getattr(n, key), False)
    pools = []
    for pool in n.ipam:
        entry: dict[str, Any] = {}
        _put(entry, "subnet", pool.subnet)
        _put(entry, "gateway", pool.gateway)
        _put(entry, "ip_range", pool.ip_range)
        pools.append(entry)
    if pools:
        out["ipam"] = {"config": pools}
    _put(out, "labels", n.labels)
    return out


def _volume(v: Volume) -> dict[str, Any]:
    out: dict[str, Any] = {"name": v.name}
    _put(out, "driver", v.driver)
    _put(out, "driver_opts", v.driver_opts)
    _put(out, "external", v.external, False)
    _put(out, "labels", v.labels)
    return out


def _file_object(f: FileObject) -> dict[str, Any]:
    out: dict[str, Any] = {"name": f.name}
    _put(out, "file", f.file)
    if f.environment is not None:
        out["environment"] = f.environment  # the value is re-read from the environment, never printed
    else:
        _put(out, "content", f.content)
    _put(out, "external", f.external, False)
    return out


def _stack_extras(x: StackExtras) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if x.backoff != Backoff():
        out["backoff"] = _backoff(x.backoff)
    _put(out, "registries", {
        host: {k: v for k, v in (("mirrors", list(r.mirrors)), ("insecure", r.insecure)) if v}
        for host, r in x.registries.items()
    })
    _put(out, "subnet_pool", x.subnet_pool)
    _put(out, "log_format", x.log_format)
    _put(out, "metrics", x.metrics)
    return out


# --- YAML -----------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings as `|` blocks; and quotes any string the YAML 1.2 reader
    would take for something else ("1e3", "0o17"), which PyYAML's YAML 1.1 rules leave bare."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    if _Resolver().resolve(ScalarNode, value, (True, False)) != "tag:yaml.org,2002:str":
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    return dumper.represent_str(value)


_Dumper.add_representer(str, _represent_str)
