"""One function per family of service keys, each giving keyword arguments for `model.Service`.

Every family has the signature `(ctx, svc, path) -> dict`: `svc` is the service's mapping and
`path` its key path (`("services", "web")`). A family reports independent problems itself through
`ctx.attempt` and raises `Invalid` for the rest; `parse.build_service` runs them all.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from collections.abc import Callable
from typing import Any

from ..errors import KeyPath, SpecError
from . import envfile
from .model import (
    Dependency,
    FileRef,
    FrozenMap,
    Healthcheck,
    Hook,
    Logging,
    NetworkAttachment,
    RestartPolicy,
    Ulimit,
    UpdateConfig,
)
from .parse_common import (
    Ctx,
    Invalid,
    as_float,
    as_int,
    as_list,
    as_map,
    as_octal,
    as_str,
    duration,
    one_of,
    opt_bool,
    opt_duration,
    opt_int,
    opt_str,
    pairs,
    q,
    signal_number,
    str_list,
)

Family = Callable[[Ctx, Any, KeyPath], dict[str, Any]]

# Linux capabilities, without the CAP_ prefix (linux/capability.h up to CAP_CHECKPOINT_RESTORE).
CAPABILITIES = frozenset({
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
})
# The names docker's `--ulimit` knows (go-units).
ULIMITS = frozenset({
    "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
    "rss", "rtprio", "rttime", "sigpending", "stack",
})
_PULL_POLICIES = ("always", "never", "missing", "build", "daily", "weekly")
_CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
# deploy.restart_policy.condition -> restart mode; compose also takes the `restart:` names here.
_DEPLOY_CONDITIONS = {
    "none": "no", "no": "no", "on-failure": "on-failure", "any": "always", "always": "always",
    "unless-stopped": "unless-stopped",
}


# --- plain keys -----------------------------------------------------------------------------------

_STRINGS = ("image", "working_dir", "user", "hostname", "domainname", "container_name", "pid", "ipc",
            "userns_mode", "network_mode")
_BOOLS = ("read_only", "init", "privileged")
_LISTS = ("profiles", "links", "volumes_from", "security_opt", "dns", "dns_search", "dns_opt")


def plain(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    """Keys that are a string, a boolean or a list of strings, taken as they are."""
    out: dict[str, Any] = {}
    for key in _STRINGS:
        if svc.get(key) is not None:
            out[key] = ctx.attempt(as_str, svc[key], (*path, key), default=None)
    for key in _BOOLS:
        if svc.get(key) is not None:
            out[key] = ctx.attempt(opt_bool, svc, key, path, False, default=False)
    for key in _LISTS:
        if svc.get(key) is not None:
            out[key] = ctx.attempt(str_list, svc[key], (*path, key), default=())
    return out


def pull_policy(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    if svc.get("pull_policy") is None:
        return {}
    here = (*path, "pull_policy")
    text = as_str(svc["pull_policy"], here)
    if text == "if_not_present":  # compose's old name for it
        text = "missing"
    if text.startswith("every_"):
        duration(text[len("every_"):], here)
    elif text not in _PULL_POLICIES:
        raise Invalid(here, f"invalid pull_policy {q(text)} (use {', '.join(_PULL_POLICIES)} or every_<duration>)")
    return {"pull_policy": text}


def split_command(value: Any, path: KeyPath) -> tuple[str, ...] | None:
    """compose's command syntax: a list as is, a string split like a shell would; None is unset,
    and an empty string or list clears the image's value."""
    if value is None:
        return None
    if isinstance(value, list):
        return tuple(as_str(v, (*path, i)) for i, v in enumerate(value))
    text = as_str(value, path)
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        raise Invalid(path, f"invalid command {q(text)}: {str(exc).lower()}") from None


def commands(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("command", "entrypoint"):
        if key in svc:
            out[key] = ctx.attempt(split_command, svc[key], (*path, key), default=None)
    return out


# --- environment ----------------------------------------------------------------------------------


def resolve_env(ctx: Ctx, value: Any, path: KeyPath, base: dict[str, str] | None = None) -> dict[str, str]:
    """`environment`-style entries over `base`; an entry without a value takes the interpolation
    environment's, and is left out when that has none (compose passes nothing for it)."""
    env = dict(base or {})
    for key, val, _ in pairs(value, path):
        if val is None:
            val = ctx.environ.get(key)
        if val is None:
            env.pop(key, None)
        else:
            env[key] = val
    return env


def _env_file_entries(value: Any, path: KeyPath) -> list[tuple[str, bool, KeyPath]]:
    if isinstance(value, str):
        return [(value, True, path)]
    out = []
    for i, item in enumerate(as_list(value, path)):
        here = (*path, i)
        if isinstance(item, dict):
            if item.get("format") is not None:
                raise Invalid((*here, "format"), f"unsupported env_file format {q(item['format'])}")
            file = opt_str(item, "path", here)
            if not file:
                raise Invalid(here, "an env_file entry needs a path")
            out.append((file, opt_bool(item, "required", here, True), here))
        else:
            out.append((as_str(item, here), True, here))
    return out


def environment(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    env: dict[str, str] = {}
    read: list[str] = []
    if svc.get("env_file") is not None:
        for file, required, here in _env_file_entries(svc["env_file"], (*path, "env_file")):
            full = ctx.path(file)
            if full not in ctx.read_files:
                ctx.read_files.append(full)  # watched even when missing: creating it matters
            if not os.path.exists(full):
                if required:
                    ctx.report(Invalid(here, f"env file {q(full)} not found"))
                continue
            try:
                values = envfile.parse_env_file(full, lambda k: env[k] if k in env else ctx.environ.get(k))
            except SpecError as exc:
                ctx.problems.extend(exc.problems)
                continue
            env.update(values)
            read.append(full)
    env = resolve_env(ctx, svc.get("environment"), (*path, "environment"), env)
    return {"environment": FrozenMap(sorted(env.items())), "env_files": tuple(read)}


def _string_map(value: Any, path: KeyPath) -> FrozenMap:
    """labels, sysctls, driver options: a key without a value is an empty string."""
    return FrozenMap(sorted((k, v or "") for k, v, _ in pairs(value, path)))


def maps(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("labels", "sysctls"):
        if svc.get(key) is not None:
            out[key] = ctx.attempt(_string_map, svc[key], (*path, key), default=FrozenMap())
    return out


# --- networking -----------------------------------------------------------------------------------


def _address(value: Any, path: KeyPath, version: int) -> str:
    text = as_str(value, path)
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        addr = None
    if addr is None or addr.version != version:
        raise Invalid(path, f"invalid IPv{version} address {q(text)}")
    return str(addr)


def _attachment(name: str, spec: Any, path: KeyPath) -> NetworkAttachment:
    if spec is None:
        return NetworkAttachment(network=name)
    spec = as_map(spec, path)
    v4, v6 = spec.get("ipv4_address"), spec.get("ipv6_address")
    return NetworkAttachment(
        network=name,
        aliases=str_list(spec.get("aliases"), (*path, "aliases")),
        ipv4_address=None if v4 is None else _address(v4, (*path, "ipv4_address"), 4),
        ipv6_address=None if v6 is None else _address(v6, (*path, "ipv6_address"), 6),
        priority=opt_int(spec, "priority", path) or 0,
        interface_name=opt_str(spec, "interface_name", path),
    )


def networks(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    value, here = svc.get("networks"), (*path, "networks")
    found: list[NetworkAttachment] = []
    if isinstance(value, dict):
        for name, spec in value.items():
            att = ctx.attempt(_attachment, str(name), spec, (*here, name), default=None)
            found.append(att or NetworkAttachment(network=str(name)))
    elif value is not None:
        found = [NetworkAttachment(network=n) for n in str_list(value, here)]
    if not found and svc.get("network_mode") is None:
        found = [NetworkAttachment(network="default")]
    # compose connects in this order (NetworksByPriority); it also makes the order canonical
    found.sort(key=lambda a: (-a.priority, a.network))
    return {"networks": tuple(found)}


def extra_hosts(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    """compose-go's HostsList: "host:ip", "host=ip", "host=ip1,ip2", "[::1]" brackets, or a map."""
    value, here = svc.get("extra_hosts"), (*path, "extra_hosts")
    if value is None:
        return {}
    entries: list[tuple[str, list[str], KeyPath]] = []
    if isinstance(value, dict):
        for host, ips in value.items():
            entries.append((str(host), list(str_list(ips, (*here, host))) or [""], (*here, host)))
    else:
        for i, item in enumerate(as_list(value, here)):
            text = as_str(item, (*here, i))
            host, sep, ips = text.partition("=")
            if not sep:
                host, sep, ips = text.partition(":")
            if not sep:
                ctx.report(Invalid((*here, i), f"invalid extra host {q(text)}: missing IP"))
                continue
            entries.append((host, ips.split(","), (*here, i)))
    out: list[tuple[str, str]] = []
    for host, ips, where in entries:
        if not host or ":" in host or "=" in host:
            ctx.report(Invalid(where, f"invalid extra host: bad host name {q(host)}"))
            continue
        for ip in ips:
            ip = ip[1:-1] if len(ip) > 2 and ip[0] == "[" and ip[-1] == "]" else ip
            if ip != "host-gateway":
                try:
                    ip = str(ipaddress.ip_address(ip))
                except ValueError:
                    ctx.report(Invalid(where, f"invalid extra host {q(host)}: {q(ip)} is not an IP address"))
                    continue
            out.append((host, ip))
    return {"extra_hosts": tuple(out)}


# --- dependencies ---------------------------------------------------------------------------------


def _dependency(name: str, spec: Any, path: KeyPath) -> Dependency:
    spec = as_map(spec, path)
    condition = spec.get("condition")
    return Dependency(
        service=name,
        condition=one_of(condition, (*path, "condition"), _CONDITIONS, "condition") if condition else "service_started",
        restart=opt_bool(spec, "restart", path, False),
        required=opt_bool(spec, "required", path, True),
    )


def _implicit_dependencies(svc: Any) -> dict[str, bool]:
    """Services named by links, volumes_from and `service:` namespaces, which compose also starts
    first (loader/normalize.go); the value is whether to restart with them."""
    found: dict[str, bool] = {}
    for key in ("network_mode", "ipc", "pid"):
        value = svc.get(key)
        if isinstance(value, str) and value.startswith("service:"):
            found.setdefault(value[len("service:"):], True)
    for link in svc.get("links") or ():
        found.setdefault(str(link).split(":")[0], True)
    for ref in svc.get("volumes_from") or ():
        name = str(ref).split(":")[0]
        if name != "container":
            found.setdefault(name, False)
    return found


def depends_on(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    value, here = svc.get("depends_on"), (*path, "depends_on")
    deps: dict[str, Dependency] = {}
    if isinstance(value, dict):
        for name, spec in value.items():
            dep = ctx.attempt(_dependency, str(name), spec, (*here, name), default=None)
            deps[str(name)] = dep or Dependency(service=str(name))
    elif value is not None:
        deps = {n: Dependency(service=n) for n in str_list(value, here)}
    for name, restart in _implicit_dependencies(svc).items():
        deps.setdefault(name, Dependency(service=name, restart=restart))
    return {"depends_on": tuple(deps[n] for n in sorted(deps))}


# --- health and lifecycle -------------------------------------------------------------------------


def _health_test(value: Any, path: KeyPath) -> tuple[str, ...] | None:
    """("CMD", ...), ("CMD-SHELL", script), () for "the image's test", None for NONE."""
    if value is None:
        return ()
    if isinstance(value, str):
        return ("CMD-SHELL", value)
    test = split_command(value, path) or ()
    if not test:
        return ()
    if test[0] == "NONE":
        return None
    if test[0] not in ("CMD", "CMD-SHELL"):
        raise Invalid(path, 'healthcheck test must start with "CMD", "CMD-SHELL" or "NONE"')
    if len(test) == 1:
        raise Invalid(path, f"healthcheck test {q(test[0])} needs a command after it")
    return test


def healthcheck(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    if svc.get("healthcheck") is None:
        return {}
    here = (*path, "healthcheck")
    spec = as_map(svc["healthcheck"], here)
    if opt_bool(spec, "disable", here, False):
        return {"healthcheck": Healthcheck(test=("NONE",))}
    test = _health_test(spec.get("test"), (*here, "test"))
    if test is None:
        return {"healthcheck": Healthcheck(test=("NONE",))}
    timing: dict[str, Any] = {}
    for key in ("interval", "timeout", "start_period", "start_interval"):
        value = ctx.attempt(opt_duration, spec, key, here, default=None)
        if value is not None:
            timing[key] = value
    retries = ctx.attempt(lambda: opt_int(spec, "retries", here, minimum=0), default=None)
    if retries is not None:
        timing["retries"] = retries
    return {"healthcheck": Healthcheck(test=test, **timing)}


def _restart_string(value: Any, path: KeyPath) -> RestartPolicy:
    text = as_str(value, path)
    name, sep, count = text.partition(":")
    if name not in ("no", "always", "on-failure", "unless-stopped"):
        raise Invalid(path, f"invalid restart policy {q(text)} (use no, always, on-failure[:N] or unless-stopped)")
    if not sep:
        return RestartPolicy(condition=name)
    if name != "on-failure":
        raise Invalid(path, f"invalid restart policy {q(text)}: only on-failure takes a retry count")
    attempts = as_int(count, path, minimum=0, what="restart policy retry count")
    return RestartPolicy(condition=name, max_attempts=attempts or None)  # 0 is docker's "unlimited"


def _deploy_restart(spec: Any, path: KeyPath) -> RestartPolicy:
    spec = as_map(spec, path)
    condition = spec.get("condition")
    if condition is None:
        mode = "always"  # the compose spec's default, `any`
    else:
        text = as_str(condition, (*path, "condition"))
        if text not in _DEPLOY_CONDITIONS:
            raise Invalid((*path, "condition"), f"invalid restart condition {q(text)} (use none, on-failure or any)")
        mode = _DEPLOY_CONDITIONS[text]
    return RestartPolicy(
        condition=mode,
        max_attempts=opt_int(spec, "max_attempts", path, minimum=0) or None,
        delay=opt_duration(spec, "delay", path),
        window=opt_duration(spec, "window", path),
    )


def _deploy(svc: Any, path: KeyPath) -> tuple[Any, KeyPath]:
    here = (*path, "deploy")
    return as_map(svc.get("deploy"), here), here


def restart(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    deploy, dpath = _deploy(svc, path)
    if deploy.get("restart_policy") is not None:
        policy = _deploy_restart(deploy["restart_policy"], (*dpath, "restart_policy"))
    elif svc.get("restart") is not None:
        policy = _restart_string(svc["restart"], (*path, "restart"))
    else:
        return {}
    return {"restart": policy}


def stop(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if svc.get("stop_signal") is not None:
        out["stop_signal"] = ctx.attempt(signal_number, svc["stop_signal"], (*path, "stop_signal"), default=15)
    if svc.get("stop_grace_period") is not None:
        out["stop_grace_period"] = ctx.attempt(
            duration, svc["stop_grace_period"], (*path, "stop_grace_period"), default=10.0)
    return out


def _hook(ctx: Ctx, spec: Any, path: KeyPath) -> Hook:
    spec = as_map(spec, path)
    command = split_command(spec.get("command"), (*path, "command"))
    if not command:
        raise Invalid(path, "a hook needs a command")
    return Hook(
        command=command,
        user=opt_str(spec, "user", path),
        privileged=opt_bool(spec, "privileged", path, False),
        working_dir=opt_str(spec, "working_dir", path),
        environment=FrozenMap(sorted(resolve_env(ctx, spec.get("environment"), (*path, "environment")).items())),
    )


def hooks(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("post_start", "pre_stop"):
        if svc.get(key) is not None:
            here = (*path, key)
            found = [ctx.attempt(_hook, ctx, h, (*here, i), default=None) for i, h in enumerate(as_list(svc[key], here))]
            out[key] = tuple(h for h in found if h is not None)
    return out


# --- scale ----------------------------------------------------------------------------------------


def replicas(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    """`scale` and `deploy.replicas`, which must agree; container_name allows one replica only."""
    deploy, dpath = _deploy(svc, path)
    scale = opt_int(svc, "scale", path, minimum=0, what="scale")
    count = opt_int(deploy, "replicas", dpath, minimum=0, what="replicas")
    if scale is not None and count is not None and scale != count:
        raise Invalid((*path, "scale"), 'can\'t set distinct values on "scale" and "deploy.replicas"', key=True)
    n = scale if scale is not None else count if count is not None else 1
    if n > 1 and svc.get("container_name"):
        attr = "scale" if scale is not None else "deploy.replicas"
        raise Invalid((*path, "container_name"),
                      f'can\'t set "container_name" and "{attr}": container names must be unique', key=True)
    return {"replicas": n}


def _update_config(spec: Any, path: KeyPath) -> UpdateConfig:
    spec = as_map(spec, path)
    fields: dict[str, Any] = {}
    if spec.get("parallelism") is not None:
        fields["parallelism"] = as_int(spec["parallelism"], (*path, "parallelism"), minimum=0, what="parallelism")
    for key in ("delay", "monitor"):
        if spec.get(key) is not None:
            fields[key] = duration(spec[key], (*path, key))
    if spec.get("failure_action") is not None:
        fields["failure_action"] = one_of(
            spec["failure_action"], (*path, "failure_action"), ("pause", "continue", "rollback"), "failure_action")
    if spec.get("max_failure_ratio") is not None:
        ratio = as_float(spec["max_failure_ratio"], (*path, "max_failure_ratio"), what="max_failure_ratio")
        if not 0 <= ratio <= 1:
            raise Invalid((*path, "max_failure_ratio"), f"invalid max_failure_ratio {q(ratio)}: must be between 0 and 1")
        fields["max_failure_ratio"] = ratio
    if spec.get("order") is not None:
        fields["order"] = one_of(spec["order"], (*path, "order"), ("stop-first", "start-first"), "order")
    return UpdateConfig(**fields)


def update_configs(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    deploy, dpath = _deploy(svc, path)
    out: dict[str, Any] = {}
    for key in ("update_config", "rollback_config"):
        if deploy.get(key) is not None:
            out[key] = ctx.attempt(_update_config, deploy[key], (*dpath, key), default=UpdateConfig())
    return out


# --- security -------------------------------------------------------------------------------------


def _capability(value: Any, path: KeyPath) -> str:
    text = as_str(value, path)
    name = text.upper()
    name = name[4:] if name.startswith("CAP_") else name
    if name != "ALL" and name not in CAPABILITIES:
        raise Invalid(path, f"unknown capability {q(text)}")
    return name


def capabilities(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("cap_add", "cap_drop"):
        if svc.get(key) is not None:
            here = (*path, key)
            names: list[str] = []
            for i, item in enumerate(as_list(svc[key], here)):
                name = ctx.attempt(_capability, item, (*here, i), default=None)
                if name is not None and name not in names:
                    names.append(name)
            out[key] = tuple(names)
    return out


def _limit(value: Any, path: KeyPath) -> int:
    """A ulimit value; -1 is unlimited."""
    return as_int(value, path, minimum=-1, what="ulimit")


def _ulimit(name: str, spec: Any, path: KeyPath) -> Ulimit:
    if name not in ULIMITS:
        raise Invalid(path, f"unknown ulimit {q(name)}", key=True)
    if isinstance(spec, dict):
        for part in ("soft", "hard"):
            if spec.get(part) is None:
                raise Invalid(path, f"ulimit {q(name)} needs both soft and hard")
        soft, hard = _limit(spec["soft"], (*path, "soft")), _limit(spec["hard"], (*path, "hard"))
    else:
        soft = hard = _limit(spec, path)
    if hard != -1 and (soft == -1 or soft > hard):
        raise Invalid(path, f"ulimit {q(name)}: the soft limit {soft} is greater than the hard limit {hard}")
    return Ulimit(name=name, soft=soft, hard=hard)


def ulimits(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    if svc.get("ulimits") is None:
        return {}
    here = (*path, "ulimits")
    found = [ctx.attempt(_ulimit, str(k), v, (*here, k), default=None) for k, v in as_map(svc["ulimits"], here).items()]
    return {"ulimits": tuple(sorted((u for u in found if u is not None), key=lambda u: u.name))}


def logging(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    if svc.get("logging") is None:
        return {}
    here = (*path, "logging")
    spec = as_map(svc["logging"], here)
    return {"logging": Logging(
        driver=opt_str(spec, "driver", here),
        options=_string_map(spec.get("options"), (*here, "options")),
    )}


# --- secrets and configs --------------------------------------------------------------------------


def _file_ref(spec: Any, path: KeyPath, default_dir: str, noun: str) -> FileRef:
    """A service's secret or config: by name, or long form. A relative target is under
    `default_dir` (/run/secrets for secrets, / for configs)."""
    if not isinstance(spec, dict):
        name = as_str(spec, path)
        return FileRef(source=name, target=os.path.join(default_dir, name))
    source = opt_str(spec, "source", path)
    if not source:
        raise Invalid(path, f"a {noun} needs a source")
    target = opt_str(spec, "target", path) or source
    mode = spec.get("mode")
    return FileRef(
        source=source,
        target=os.path.normpath(os.path.join(default_dir, target)),
        uid=opt_str(spec, "uid", path),
        gid=opt_str(spec, "gid", path),
        mode=None if mode is None else as_octal(mode, (*path, "mode")),
    )


def file_refs(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, default_dir in (("secrets", "/run/secrets"), ("configs", "/")):
        if svc.get(key) is not None:
            here = (*path, key)
            found = [ctx.attempt(_file_ref, s, (*here, i), default_dir, key[:-1], default=None)
                     for i, s in enumerate(as_list(svc[key], here))]
            out[key] = tuple(r for r in found if r is not None)
    return out

