"""pysup's nftables table for a stack's networks: `ip pysup-<project>`, nothing else touched.

    chain postrouting (nat, srcnat): ip saddr SUBNET oifname != BRIDGE masquerade   (non-internal networks)
    chain forward (filter):          iifname BRIDGE oifname != BRIDGE drop           (internal networks)
                                     iifname BRIDGE oifname != BRIDGE oifname "pysup*" drop  (the others:
                                     no forwarding between pysup networks, of this stack or another)

Networks with IPv6 (`enable_ipv6`) get the same rules for their IPv6 subnet in a second table,
`ip6 pysup-<project>`. Written with `nft -j -f -` (JSON in, one transaction), removed with
`delete table`. The host's
`net.ipv4.ip_forward` is not changed: with it off, the NAT rules exist but nothing is forwarded
(a warning says so).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any, Iterable

import structlog

from ..errors import PysupError

log = structlog.get_logger()

FAMILY = "ip"
FAMILY6 = "ip6"


class NatError(PysupError):
    pass


def table_name(project: str) -> str:
    return f"pysup-{project}"


def _meta(key: str, op: str, value: str) -> dict:
    return {"match": {"op": op, "left": {"meta": {"key": key}}, "right": value}}


def ruleset(project: str, networks: Iterable[tuple[str, Any, bool]], family: str = FAMILY) -> dict:
    """The JSON batch that creates the table. `networks`: (bridge, IPv4Network, internal); with
    family `ip6`, their IPv6 subnets."""
    t = table_name(project)
    proto = "ip6" if family == FAMILY6 else "ip"
    cmds: list[dict] = [
        {"add": {"table": {"family": family, "name": t}}},
        {"add": {"chain": {"family": family, "table": t, "name": "postrouting", "type": "nat",
                           "hook": "postrouting", "prio": 100, "policy": "accept"}}},
        {"add": {"chain": {"family": family, "table": t, "name": "forward", "type": "filter",
                           "hook": "forward", "prio": 0, "policy": "accept"}}},
    ]

    def rule(chain: str, expr: list) -> dict:
        return {"add": {"rule": {"family": family, "table": t, "chain": chain, "expr": expr}}}

    for bridge, subnet, internal in networks:
        if internal:
            cmds.append(rule("forward", [_meta("iifname", "==", bridge), _meta("oifname", "!=", bridge),
                                         {"drop": None}]))
            continue
        cmds.append(rule("postrouting", [
            {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "saddr"}},
                       "right": {"prefix": {"addr": str(subnet.network_address), "len": subnet.prefixlen}}}},
            _meta("oifname", "!=", bridge), {"masquerade": None}]))
        cmds.append(rule("forward", [_meta("iifname", "==", bridge), _meta("oifname", "!=", bridge),
                                     _meta("oifname", "==", "pysup*"), {"drop": None}]))
    return {"nftables": cmds}


def _nft(args: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    nft = shutil.which("nft") or "/usr/sbin/nft"
    try:
        p = subprocess.run([nft, *args], input=stdin, capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise NatError("nft not found: networks need nftables (apt-get install nftables)") from None
    if check and p.returncode != 0:
        raise NatError(f"nft {' '.join(args)}: {p.stderr.strip()}")
    return p


def table_exists(project: str, family: str = FAMILY) -> bool:
    p = _nft(["-j", "list", "tables", family], check=False)
    if p.returncode != 0:
        return False
    return any(x.get("table", {}).get("name") == table_name(project) for x in json.loads(p.stdout)["nftables"])


def install(project: str, networks: Iterable[tuple[str, Any, bool]],
            networks6: Iterable[tuple[str, Any, bool]] = ()) -> None:
    """Create the project's table (and its ip6 one for `networks6`), or replace them (a live edit
    added or removed a network): one transaction, so the old rules hold until the new ones do."""
    networks6 = list(networks6)
    cmds: list[dict] = []
    for family, nets in ((FAMILY, networks), (FAMILY6, networks6)):
        table = {"family": family, "name": table_name(project)}
        cmds += [{"add": {"table": dict(table)}}, {"delete": {"table": dict(table)}}]
        if family == FAMILY or networks6:
            cmds += ruleset(project, nets, family)["nftables"]
    _nft(["-j", "-f", "-"], json.dumps({"nftables": cmds}))
    _warn_if_off("net.ipv4.ip_forward", "containers get no route out")
    if any(not internal for _b, _s, internal in networks6):
        _warn_if_off("net.ipv6.conf.all.forwarding", "containers get no IPv6 route out")


def _warn_if_off(sysctl: str, consequence: str) -> None:
    """Log `net.forwarding_off` when the forwarding sysctl is not 1 (unreadable: say nothing)."""
    try:
        with open("/proc/sys/" + sysctl.replace(".", "/")) as f:
            if f.read().strip() == "1":
                return
    except OSError:
        return
    log.warning("net.forwarding_off", detail=f"{sysctl} is 0: {consequence} (pysup does not change it)")


def remove(project: str) -> bool:
    """Delete the project's tables (ip, ip6); False when there was none."""
    found = False
    for family in (FAMILY, FAMILY6):
        if table_exists(project, family):
            _nft(["delete", "table", family, table_name(project)])
            found = True
    return found
