"""Resource limits: the service-level keys (`mem_limit`, `cpus`, `pids_limit`, ...), their
`deploy.resources` twins, and `blkio_config`, folded into one `Resources`.

compose-go's consistency rule is kept exactly (loader/validate.go): when a service-level limit is
set (non-zero) and a `deploy.resources.limits` block exists, the block's value must equal it, a
missing one counting as zero. So `mem_limit: 1g` beside `limits: {cpus: 1}` is refused, as
`docker compose` refuses it. A zero service-level value means "not set", as in compose.
`deploy.resources.reservations.cpus` is ignored, as Docker Compose ignores it (a swarm option).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..errors import KeyPath
from .model import Resources
from .parse_common import Ctx, Invalid, as_int, as_list, as_map, as_str, cpus, q, size

_CPUSET = re.compile(r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*")


def _memswap(value: Any, path: KeyPath) -> int:
    if value in (-1, "-1"):
        return -1  # unlimited swap
    return size(value, path)


def _pids(value: Any, path: KeyPath) -> int:
    return as_int(value, path, minimum=-1, what="pids limit")


def _weight(value: Any, path: KeyPath) -> int:
    weight = as_int(value, path, what="blkio weight")
    if not 10 <= weight <= 1000:
        raise Invalid(path, f"invalid blkio weight {q(value)}: must be between 10 and 1000")
    return weight


def _cpuset(value: Any, path: KeyPath) -> str:
    text = as_str(value, path)
    if not _CPUSET.fullmatch(text):
        raise Invalid(path, f"invalid cpuset {q(text)}: expected CPU numbers and ranges like \"0-2,4\"")
    return text


# (service key, deploy section, deploy key, parser)
_TWINS: tuple[tuple[str, str, str, Callable[[Any, KeyPath], Any]], ...] = (
    ("mem_limit", "limits", "memory", size),
    ("cpus", "limits", "cpus", cpus),
    ("pids_limit", "limits", "pids", _pids),
    ("mem_reservation", "reservations", "memory", size),
)
_FIELD = {"mem_limit": "memory", "cpus": "cpus", "pids_limit": "pids", "mem_reservation": "memory_reservation"}


def resources(ctx: Ctx, svc: Any, path: KeyPath) -> dict[str, Any]:
    dpath = (*path, "deploy", "resources")
    res = as_map(as_map(svc.get("deploy"), (*path, "deploy")).get("resources"), dpath)
    sections = {name: as_map(res.get(name), (*dpath, name)) for name in ("limits", "reservations")}
    fields: dict[str, Any] = {}
    for key, section, dkey, parse in _TWINS:
        legacy = svc.get(key)
        legacy = None if legacy is None else ctx.attempt(parse, legacy, (*path, key), default=None)
        spec = sections[section]
        twin = spec.get(dkey)
        twin = None if twin is None else ctx.attempt(parse, twin, (*dpath, section, dkey), default=None)
        if legacy and res.get(section) is not None and (twin or 0) != legacy:
            ctx.report(Invalid((*path, key), f'can\'t set distinct values on "{key}" and '
                                             f'"deploy.resources.{section}.{dkey}"', key=True))
        value = twin if twin is not None else legacy
        if value:  # zero is "not set" (no limit), as in compose
            fields[_FIELD[key]] = value
    for key, field, parse in (
        ("memswap_limit", "memswap", _memswap),
        ("cpu_shares", "cpu_shares", lambda v, p: as_int(v, p, minimum=0, what="cpu_shares")),
        ("cpuset", "cpuset", _cpuset),
    ):
        if svc.get(key) is not None:
            fields[field] = ctx.attempt(parse, svc[key], (*path, key), default=None)
    fields.update(ctx.attempt(_blkio, svc.get("blkio_config"), (*path, "blkio_config"), default={}))
    return {"resources": Resources(**{k: v for k, v in fields.items() if v is not None})}


def _blkio(value: Any, path: KeyPath) -> dict[str, Any]:
    spec = as_map(value, path)
    out: dict[str, Any] = {}
    if spec.get("weight") is not None:
        out["io_weight"] = _weight(spec["weight"], (*path, "weight"))
    devices = []
    for i, item in enumerate(as_list(spec.get("weight_device"), (*path, "weight_device"))):
        here = (*path, "weight_device", i)
        entry = as_map(item, here)
        if entry.get("path") is None or entry.get("weight") is None:
            raise Invalid(here, "a weight_device entry needs a path and a weight")
        devices.append((as_str(entry["path"], (*here, "path")), _weight(entry["weight"], (*here, "weight"))))
    if devices:
        out["io_weight_device"] = tuple(devices)
    return out
