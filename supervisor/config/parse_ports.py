"""`ports` and `expose`: docker's port spec syntax (`nat.ParsePortSpec`) and compose's long form.

A container port range becomes one `Port` per port, paired with the matching host port when the
host side is a range of the same length; a single container port with a host range keeps the range
(the engine picks one free host port from it), as docker does.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ..errors import KeyPath
from .model import Port
from .parse_common import Ctx, Invalid, as_int, as_list, as_map, as_str, one_of, opt_str, q

_PROTOCOLS = ("tcp", "udp")
_MODES = ("ingress", "host")


def parse_ports(ctx: Ctx, value: Any, path: KeyPath) -> tuple[Port, ...]:
    out: list[Port] = []
    for i, item in enumerate(as_list(value, path)):
        here = (*path, i)
        if isinstance(item, dict):
            out.extend(ctx.attempt(_long_port, item, here, default=()))
        else:
            out.extend(ctx.attempt(_short_port, item, here, default=()))
    return tuple(out)


def _port_range(text: str) -> tuple[int, int] | None:
    """"8000" or "8000-8010" as an inclusive range of valid port numbers; None if it is not one."""
    start, dash, end = text.partition("-")
    if not dash:
        end = start
    if not (start.isascii() and start.isdigit() and end.isascii() and end.isdigit()):
        return None
    lo, hi = int(start), int(end)
    if not 1 <= lo <= hi <= 65535:
        return None
    return lo, hi


def _split_proto(text: str) -> tuple[str, str]:
    port, _, proto = text.partition("/")
    return port, (proto or "tcp").lower()


def _host_ip(text: str, fail: Invalid) -> str:
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise fail from None


def _short_port(item: Any, path: KeyPath) -> list[Port]:
    raw = as_str(item, path)
    fail = Invalid(path, f"invalid port {q(raw)}")
    parts = raw.split(":")
    # nat.splitParts: the container port is last, the host port before it, the rest is the IP
    # (so "[::1]:8080:80" and "::1:8080:80" both work).
    container = parts[-1]
    host = parts[-2] if len(parts) >= 2 else ""
    ip_text = ":".join(parts[:-2]) if len(parts) >= 3 else ""
    container, proto = _split_proto(container)
    if proto not in _PROTOCOLS:
        raise Invalid(path, f"invalid port {q(raw)}: protocol {q(proto)} is not supported (use tcp or udp)")
    host_ip = _host_ip(ip_text, fail) if ip_text else None
    targets = _port_range(container)
    published = _port_range(host) if host else None
    if targets is None or (host and published is None):
        raise fail
    count = targets[1] - targets[0]
    if published is None:
        return [Port(target=t, host_ip=host_ip, protocol=proto) for t in range(targets[0], targets[1] + 1)]
    if count == 0:
        return [Port(target=targets[0], published=published, host_ip=host_ip, protocol=proto)]
    if published[1] - published[0] != count:
        raise Invalid(path, f"invalid port {q(raw)}: the host and container port ranges differ in length")
    return [
        Port(target=targets[0] + k, published=(published[0] + k,) * 2, host_ip=host_ip, protocol=proto)
        for k in range(count + 1)
    ]


def _long_port(item: Any, path: KeyPath) -> list[Port]:
    spec = as_map(item, path)
    if spec.get("target") is None:
        raise Invalid(path, "a port needs a target")
    target = as_int(spec["target"], (*path, "target"), minimum=1, what="port")
    if target > 65535:
        raise Invalid((*path, "target"), f"invalid port {q(spec['target'])}")
    published = None
    raw_pub = spec.get("published")
    if raw_pub is not None and raw_pub != "":
        text = as_str(raw_pub, (*path, "published"))
        published = _port_range(text)
        if published is None:
            raise Invalid((*path, "published"), f"invalid port {q(text)}")
    host_ip = opt_str(spec, "host_ip", path)
    if host_ip:
        host_ip = _host_ip(host_ip, Invalid((*path, "host_ip"), f"invalid IP address {q(host_ip)}"))
    protocol = spec.get("protocol")
    mode = spec.get("mode")
    return [Port(
        target=target,
        published=published,
        host_ip=host_ip or None,
        protocol=one_of(str(protocol).lower(), (*path, "protocol"), _PROTOCOLS, "protocol") if protocol else "tcp",
        name=opt_str(spec, "name", path),
        app_protocol=opt_str(spec, "app_protocol", path),
        mode=one_of(mode, (*path, "mode"), _MODES, "port mode") if mode else "ingress",
    )]


def parse_expose(ctx: Ctx, value: Any, path: KeyPath) -> tuple[str, ...]:
    """`expose` entries, validated and written canonically ("80", "8000-8010", "53/udp")."""
    out: list[str] = []
    for i, item in enumerate(as_list(value, path)):
        text = ctx.attempt(_expose_one, item, (*path, i), default=None)
        if text is not None and text not in out:
            out.append(text)
    return tuple(out)


def _expose_one(item: Any, path: KeyPath) -> str:
    raw = as_str(item, path)
    port, proto = _split_proto(raw)
    rng = _port_range(port)
    if rng is None or proto not in _PROTOCOLS:
        raise Invalid(path, f"invalid exposed port {q(raw)}")
    text = str(rng[0]) if rng[0] == rng[1] else f"{rng[0]}-{rng[1]}"
    return text if proto == "tcp" else f"{text}/{proto}"
