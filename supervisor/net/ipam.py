"""IP address management for stack networks, pure (no kernel): which subnet each network gets and
which address each replica gets in it.

- A network with `ipam.config[0].subnet` gets that subnet; one that overlaps a host route or another
  network of the stack is an error naming the network.
- Others get the first free `prefix`-sized block of the pool (default 10.213.0.0/16 in /24s) that
  overlaps neither the host's routes nor another network.
- The gateway (on the bridge) is `ipam.config[0].gateway` or the subnet's first address; replicas
  get the next free ones, or their `ipv4_address`.
- IPv6 (`enable_ipv6: true`) the same way, with `version=6`: the `ipam.config` entry whose subnet
  is IPv6, else a /64 of the pool fd70:7973:7570::/48 ("pysup" in its bits); `ipv6_address`.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from ..errors import PysupError

DEFAULT_POOL = "10.213.0.0/16"
DEFAULT_PREFIX = 24
DEFAULT_POOL6 = "fd70:7973:7570::/48"
DEFAULT_PREFIX6 = 64

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


class IpamError(PysupError):
    """A subnet or address that cannot be used; the message names the key."""


def _net(text: str, where: str, version: int = 4) -> Net:
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    try:
        return cls(text, strict=False)
    except ValueError as e:
        raise IpamError(f"{where}: {text!r} is not an IPv{version} subnet ({e})") from None


def pool_of(network: object, version: int = 4) -> object | None:
    """The network's `ipam.config` entry for IPv4 (the first one whose subnet is not IPv6) or
    IPv6 (the first one whose subnet is)."""
    for pool in getattr(network, "ipam", ()):
        is6 = pool.subnet is not None and ":" in pool.subnet
        if is6 == (version == 6) and (version == 4 or pool.subnet is not None):
            return pool
    return None


def plan_subnets(requested: dict[str, str | None], taken: Iterable[Net | str] = (), *,
                 pool: str = DEFAULT_POOL, prefix: int = DEFAULT_PREFIX, version: int = 4) -> dict[str, Net]:
    """network key → subnet. `requested`: key → `ipam.config.subnet` or None (any); `taken`: the
    host's routes (and whatever else must not be overlapped)."""
    used = [ipaddress.ip_network(t) if isinstance(t, str) else t for t in taken]
    used = [u for u in used if u.version == version]
    host = list(used)
    out: dict[str, Net] = {}
    for key, text in requested.items():
        if text is None:
            continue
        net = _net(text, f"networks.{key}.ipam.config.subnet", version)
        if net.prefixlen > net.max_prefixlen - 2:
            raise IpamError(f"networks.{key}.ipam.config.subnet: {net} is too small "
                            f"(at most /{net.max_prefixlen - 2})")
        for other in host:
            if net.overlaps(other) and other.prefixlen > 0:
                raise IpamError(f"networks.{key}.ipam.config.subnet: {net} overlaps the host's route to {other}")
        for k, other in out.items():
            if net.overlaps(other):
                raise IpamError(f"networks.{key}.ipam.config.subnet: {net} overlaps networks.{k} ({other})")
        out[key] = net
        used.append(net)
    candidates = _net(pool, "network pool", version).subnets(new_prefix=prefix)
    for key, text in requested.items():
        if text is not None:
            continue
        for cand in candidates:
            if not any(cand.overlaps(u) for u in used if u.prefixlen > 0):
                out[key] = cand
                used.append(cand)
                break
        else:
            raise IpamError(f"networks.{key}: no free /{prefix} left in the pool {pool}")
    return {k: out[k] for k in requested}


class Allocator:
    """Addresses of one subnet: the gateway is taken first; `allocate` hands out the lowest free
    host address, or the requested one."""

    def __init__(self, subnet: Net, gateway: str | None = None, *, key: str = "?"):
        self.subnet = subnet
        self.key = key
        self.field = f"ipv{subnet.version}_address"
        if gateway is not None:
            try:
                gw = ipaddress.ip_address(gateway)
            except ValueError:
                gw = None
            if gw is None or gw.version != subnet.version or gw not in subnet:
                raise IpamError(f"networks.{key}.ipam.config.gateway: {gateway} is not in {subnet}")
        else:
            gw = next(subnet.hosts())
        self.gateway: Addr = gw
        self.used: set[Addr] = {gw}

    def allocate(self, requested: str | None = None, *, who: str = "") -> Addr:
        if requested is not None:
            try:
                addr = ipaddress.ip_address(requested)
                if addr.version != self.subnet.version:
                    raise ValueError
            except ValueError:
                raise IpamError(f"{who}{self.field} {requested!r} is not an IPv{self.subnet.version} address") from None
            if addr not in self.subnet or addr == self.subnet.network_address or (
                    self.subnet.version == 4 and addr == self.subnet.broadcast_address):
                raise IpamError(f"{who}{self.field} {addr} is not a host address of networks.{self.key} "
                                f"({self.subnet})")
            if addr in self.used:
                raise IpamError(f"{who}{self.field} {addr} is already in use in networks.{self.key}")
            self.used.add(addr)
            return addr
        for addr in self.subnet.hosts():
            if addr not in self.used:
                self.used.add(addr)
                return addr
        raise IpamError(f"{who}networks.{self.key} ({self.subnet}) has no free address left")

    def release(self, addr: Addr | str) -> None:
        addr = ipaddress.ip_address(addr)
        if addr != self.gateway:
            self.used.discard(addr)
