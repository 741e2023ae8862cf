"""Stack networks as Linux bridges, over netlink (pyroute2), no `ip` commands.

Per stack network: a bridge `pysup-<hash>` (hash of project and network key), its gateway address
on it, up. Per replica (container id): a network namespace of its own, bind-mounted at
`<runtime dir>/netns/<container id>` so it outlives the replica's restarts (like a pod sandbox),
and per network membership a veth pair: `pysup<hash>h` on the bridge, the other end moved into the
namespace as eth0, eth1, ... with its address; loopback up; a default route through the first
non-internal network's gateway (none when every membership is internal). The container's PID 1 is
cloned into that namespace (ContainerSpec.netns; the zygote joins it for the clone).

What is made is written to `<runtime dir>/net.json` before it is made, so the next start after a
crash removes it (`cleanup_leftovers`), and removed by `detach` (one replica) and `close` (all).

Threads: creating a namespace changes the calling thread's network namespace, so every such step
runs in a fresh OS thread of its own (`_in_thread`), never in trio's worker threads nor the trio
thread; the calls here are synchronous (a few ms).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import threading
import sys
from typing import Any, Callable, Iterable

import structlog

from .. import syscalls as S
from ..atomic import read_record, write_json
from ..errors import PysupError
from .ipam import DEFAULT_POOL, DEFAULT_POOL6, DEFAULT_PREFIX, DEFAULT_PREFIX6, Allocator, IpamError, plan_subnets, pool_of
from .nat import FAMILY

log = structlog.get_logger()

PREFIX = "pysup"


class NetworkError(PysupError):
    pass


def bridge_name(project: str, key: str) -> str:
    return f"{PREFIX}-" + hashlib.sha256(f"{project}/{key}".encode()).hexdigest()[:9]


def bridge_mac(project: str, key: str) -> str:
    """A locally administered unicast MAC address for the bridge, stable per network."""
    h = hashlib.sha256(f"mac/{project}/{key}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *h[:5]))


def container_mac(address: ipaddress.IPv4Address) -> str:
    """The MAC address of a container's interface: 02:42 and its IPv4 address, as Docker does. An
    address freed and handed to another replica (a rolling update) keeps its MAC, so the host's
    and the peers' neighbour entries for it stay right; with a new random MAC they would point at
    the old interface until they expire (connections to it time out meanwhile)."""
    return ":".join(f"{b:02x}" for b in (0x02, 0x42, *address.packed))


def veth_names(container_id: str, key: str) -> tuple[str, str]:
    h = hashlib.sha256(f"{container_id}/{key}".encode()).hexdigest()[:9]
    return f"{PREFIX}{h}h", f"{PREFIX}{h}p"


def _in_thread(fn: Callable[[], Any]) -> Any:
    """Run `fn` in a new OS thread (it may change that thread's namespaces) and return its result."""
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            out["error"] = e

    t = threading.Thread(target=body, name="pysup-netns")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def _iproute() -> Any:
    if "pyroute2" not in sys.modules:
        _stub_pyroute2()
    from pyroute2.iproute.linux import IPRoute

    return IPRoute()


def _stub_pyroute2() -> None:
    """pyroute2/__init__ imports every netlink family it has (ndb with sqlite3, ipvs, wireguard,
    plan9, ...): ~6 MB of `pysup up`'s memory. Only `pyroute2.iproute.linux` is used: the package
    is registered without running its __init__, which runs on the first attribute anyone asks of
    it (`from pyroute2 import X` keeps working)."""
    import importlib
    import importlib.util

    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        return
    mod = importlib.util.module_from_spec(spec)

    def __getattr__(name: str) -> Any:
        if not name.startswith("__") and importlib.util.find_spec(f"pyroute2.{name}") is not None:
            return importlib.import_module(f"pyroute2.{name}")  # a submodule (`from pyroute2 import config`)
        del mod.__dict__["__getattr__"]
        spec.loader.exec_module(mod)
        return getattr(mod, name)

    mod.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules["pyroute2"] = mod


IFA_F_NODAD = 0x02  # an IPv6 address usable at once (no duplicate address detection: pysup hands them out)


def host_routes(family: int = 2) -> list[Any]:
    """The host's routes (main table, IPv4, or IPv6 with family=10) other than the default route
    (and IPv6 link-local and multicast ones); other stacks' bridges included (this stack's
    leftovers are removed before)."""
    out = []
    with _iproute() as ipr:
        for r in ipr.get_routes(family=family, table=254):
            if r["dst_len"] and r.get("dst"):
                net = ipaddress.ip_network(f"{r.get('dst')}/{r['dst_len']}", strict=False)
                if not (net.is_link_local or net.is_multicast):
                    out.append(net)
    return out


class HostLock:
    """A host-wide lock around choosing subnets and making the bridges, so that two `pysup up`
    starting at once do not pick the same free block: an abstract unix socket name (the kernel
    frees it when its holder closes it or dies; nothing left on disk)."""

    NAME = b"\0pysup-net-ipam"

    def __enter__(self) -> HostLock:
        import socket
        import time

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sock.bind(self.NAME)
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.sock.close()
                    raise NetworkError("another pysup has held the network set-up lock for 30 s") from None
                time.sleep(0.01)

    def __exit__(self, *exc: Any) -> None:
        self.sock.close()


def _delete_link(ipr: Any, name: str) -> bool:
    idx = ipr.link_lookup(ifname=name)
    if not idx:
        return False
    try:
        ipr.link("del", index=idx[0])
    except Exception as e:  # noqa: BLE001 - gone meanwhile (a veth goes with its namespace)
        if getattr(e, "code", None) != 19:  # ENODEV
            raise
    return True


def _remove_netns(path: str) -> bool:
    if not os.path.lexists(path):
        return False
    try:
        S.umount2(path, S.MNT_DETACH)
    except OSError:
        pass  # not mounted (a crash between create and mount)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return True


class Membership:
    """One replica's interface in one network."""

    def __init__(self, key: str, ifname: str, address: ipaddress.IPv4Address, host_veth: str,
                 address6: ipaddress.IPv6Address | None = None):
        self.key = key
        self.ifname = ifname
        self.address = address
        self.host_veth = host_veth
        self.address6 = address6  # on an `enable_ipv6` network


class Endpoint:
    """One replica's network namespace and its memberships."""

    def __init__(self, container_id: str, netns: str, service: str, index: int, aliases: dict[str, tuple[str, ...]]):
        self.container_id = container_id
        self.netns = netns
        self.service = service
        self.index = index
        self.aliases = aliases  # network key → aliases
        self.members: list[Membership] = []


class BridgeNetworks:
    """The `Network` of a stack (supervisor.net.Network) over bridges and veths."""

    def __init__(self, project: str, networks: dict[str, Any], runtime_dir: str, *,
                 pool: str = DEFAULT_POOL, prefix: int = DEFAULT_PREFIX):
        self.project = project
        self.networks = dict(networks)  # key → config.model.Network
        self.runtime_dir = runtime_dir
        self.netns_dir = os.path.join(runtime_dir, "netns")
        self.record_path = os.path.join(runtime_dir, "net.json")
        self.pool = pool
        self.prefix = prefix
        self.bridges: dict[str, str] = {}  # key → bridge name
        self.subnets: dict[str, ipaddress.IPv4Network] = {}
        self.alloc: dict[str, Allocator] = {}
        self.subnets6: dict[str, ipaddress.IPv6Network] = {}  # the `enable_ipv6` networks'
        self.alloc6: dict[str, Allocator] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.record: dict[str, list[str]] = {"bridges": [], "veths": [], "netns": [], "tables": []}
        self._lock = threading.Lock()
        self._record_lock = threading.Lock()

    # --- the record ---------------------------------------------------------------------------

    def _save(self) -> None:
        os.makedirs(self.runtime_dir, mode=0o700, exist_ok=True)
        write_json(self.record_path, self.record)

    def _note(self, kind: str, item: str) -> None:
        with self._record_lock:  # detaches run in several worker threads at once
            if item not in self.record[kind]:
                self.record[kind].append(item)
                self._save()

    def _forget(self, kind: str, item: str) -> None:
        with self._record_lock:
            if item in self.record[kind]:
                self.record[kind].remove(item)
                self._save()

    def cleanup_leftovers(self) -> list[str]:
        """Remove what a crashed run recorded (and this stack's bridges by name). One line per thing."""
        old = read_record(self.record_path,
                          lambda why: log.warning("net.record_unreadable", path=self.record_path, error=why))
        removed = []
        with _iproute() as ipr:
            for name in old.get("veths", ()):
                if _delete_link(ipr, name):
                    removed.append(f"veth {name}")
            for name in set(old.get("bridges", ())) | {bridge_name(self.project, k) for k in self.networks}:
                if name.startswith(PREFIX) and _delete_link(ipr, name):
                    removed.append(f"bridge {name}")
        from . import nat

        if nat.remove(self.project):
            removed.append(f"nftables table {FAMILY} {nat.table_name(self.project)}")
        paths = set(old.get("netns", ()))
        if os.path.isdir(self.netns_dir):
            paths |= {os.path.join(self.netns_dir, n) for n in os.listdir(self.netns_dir)}
        for path in sorted(paths):
            if _remove_netns(path):
                removed.append(f"network namespace {path}")
        try:
            os.unlink(self.record_path)
        except FileNotFoundError:
            pass
        return removed

    # --- the stack's bridges --------------------------------------------------------------------

    def plan(self, taken: Iterable[ipaddress.IPv4Network] | None = None) -> None:
        """Subnets and gateways for every network (raises IpamError naming the key)."""
        self.subnets, self.alloc, self.subnets6, self.alloc6 = {}, {}, {}, {}
        self._plan(self.networks, taken)

    def _plan(self, networks: dict[str, Any], taken: Iterable[ipaddress.IPv4Network] | None) -> None:
        for key, net in networks.items():
            if net.external:
                raise NetworkError(f"networks.{key}: external networks are not supported")
            if net.driver not in (None, "bridge"):
                raise NetworkError(f"networks.{key}: driver {net.driver!r} is not supported (only bridge)")
        pools = {k: pool_of(n) for k, n in networks.items()}
        requested = {k: (p.subnet if p is not None else None) for k, p in pools.items()}
        # the stack's networks planned before are taken (they are requested again, at their place)
        fixed = {k: str(s) for k, s in self.subnets.items()}
        subnets = plan_subnets({**fixed, **requested},
                               [t for t in (host_routes() if taken is None else taken) if t not in self.subnets.values()],
                               pool=self.pool, prefix=self.prefix)
        alloc = {k: Allocator(subnets[k], p.gateway if p is not None else None, key=k) for k, p in pools.items()}
        v6 = {k: pool_of(n, 6) for k, n in networks.items() if n.enable_ipv6}
        subnets6: dict[str, Any] = {}
        alloc6 = {}
        if v6:
            fixed6 = {k: str(s) for k, s in self.subnets6.items()}
            routes6 = host_routes(10) if taken is None else [t for t in taken if t.version == 6]
            subnets6 = plan_subnets({**fixed6, **{k: (p.subnet if p else None) for k, p in v6.items()}},
                                    [t for t in routes6 if t not in self.subnets6.values()],
                                    pool=DEFAULT_POOL6, prefix=DEFAULT_PREFIX6, version=6)
            alloc6 = {k: Allocator(subnets6[k], p.gateway if p else None, key=k) for k, p in v6.items()}
        for k in networks:
            self.subnets[k] = subnets[k]
            if k in v6:
                self.subnets6[k] = subnets6[k]
        self.alloc.update(alloc)
        self.alloc6.update(alloc6)

    def setup(self) -> None:
        """Plan (if not done) and create the bridges."""
        if not self.alloc:
            self.plan()
        os.makedirs(self.netns_dir, mode=0o700, exist_ok=True)
        self._make_bridges(list(self.subnets))

    def _make_bridges(self, keys: list[str]) -> None:
        with _iproute() as ipr:
            for key in keys:
                subnet = self.subnets[key]
                name = bridge_name(self.project, key)
                self._note("bridges", name)
                _delete_link(ipr, name)
                # a fixed MAC: by default a bridge takes its ports' lowest, and changes it when that
                # port goes, leaving the containers' ARP entries for the gateway stale for seconds
                ipr.link("add", ifname=name, kind="bridge", address=bridge_mac(self.project, key))
                idx = ipr.link_lookup(ifname=name)[0]
                ipr.addr("add", index=idx, address=str(self.alloc[key].gateway), prefixlen=subnet.prefixlen)
                extra = {}
                if key in self.subnets6:
                    ipr.addr("add", index=idx, address=str(self.alloc6[key].gateway),
                             prefixlen=self.subnets6[key].prefixlen, flags=IFA_F_NODAD)
                    extra = {"subnet6": str(self.subnets6[key]), "gateway6": str(self.alloc6[key].gateway)}
                ipr.link("set", index=idx, state="up")
                self.bridges[key] = name
                log.info("net.bridge_created", network=key, bridge=name, subnet=str(subnet),
                         gateway=str(self.alloc[key].gateway), **extra)
        self._install_nat()

    def _install_nat(self) -> None:
        """pysup's nftables table for the networks there are now (replaced in one transaction)."""
        from . import nat

        if self.bridges:
            self._note("tables", nat.table_name(self.project))
            nat.install(self.project, [(self.bridges[k], self.subnets[k], self.networks[k].internal)
                                       for k in self.bridges],
                        [(self.bridges[k], self.subnets6[k], self.networks[k].internal)
                         for k in self.bridges if k in self.subnets6])
        elif self.record["tables"]:
            nat.remove(self.project)
            self._forget("tables", nat.table_name(self.project))

    def add_networks(self, networks: dict[str, Any], taken: Iterable[ipaddress.IPv4Network] | None = None) -> None:
        """A live edit's new networks: plan them beside the existing ones (an overlap is an
        IpamError naming the key, and nothing is made), then create their bridges."""
        new = {k: n for k, n in networks.items() if k not in self.networks}
        if not new:
            return
        before = (dict(self.subnets), dict(self.alloc), dict(self.subnets6), dict(self.alloc6))
        try:
            self._plan(new, taken)
        except BaseException:
            self.subnets, self.alloc, self.subnets6, self.alloc6 = before
            raise
        self.networks.update(new)
        os.makedirs(self.netns_dir, mode=0o700, exist_ok=True)
        try:
            self._make_bridges(list(new))
        except BaseException:
            for key in new:
                self.remove_network(key)
            raise

    def in_use(self, key: str) -> bool:
        return any(m.key == key for ep in list(self.endpoints.values()) for m in ep.members)

    def remove_network(self, key: str) -> None:
        """Remove a network no endpoint is on any more (a live edit dropped it)."""
        with _iproute() as ipr:
            name = self.bridges.pop(key, None) or bridge_name(self.project, key)
            _delete_link(ipr, name)
            self._forget("bridges", name)
        self.networks.pop(key, None)
        self.subnets.pop(key, None)
        self.alloc.pop(key, None)
        self.subnets6.pop(key, None)
        self.alloc6.pop(key, None)
        self._install_nat()
        log.info("net.bridge_removed", network=key, bridge=name)

    def close(self) -> None:
        """Remove every endpoint and bridge, and the record."""
        for cid in list(self.endpoints):
            try:
                self.detach(cid)
            except Exception as e:  # noqa: BLE001 - go on with the rest
                log.error("net.detach_failed", container=cid, error=str(e))
        from . import nat

        nat.remove(self.project)
        self._forget("tables", nat.table_name(self.project))
        with _iproute() as ipr:
            for key, name in list(self.bridges.items()):
                _delete_link(ipr, name)
                self._forget("bridges", name)
                del self.bridges[key]
        if os.path.isdir(self.netns_dir):  # whatever a failed detach left
            for n in os.listdir(self.netns_dir):
                _remove_netns(os.path.join(self.netns_dir, n))
        try:
            os.rmdir(self.netns_dir)
        except OSError:
            pass
        try:
            os.unlink(self.record_path)
        except FileNotFoundError:
            pass

    # --- replicas -------------------------------------------------------------------------------

    def endpoint(self, container_id: str) -> Endpoint | None:
        return self.endpoints.get(container_id)

    def attach(self, container_id: str, service: Any, index: int) -> Endpoint:
        """The replica's namespace, made and wired on its first start; the same one on a restart."""
        with self._lock:
            ep = self.endpoints.get(container_id)
            if ep is not None:
                return ep
            who = f"services.{service.name}.networks: "
            for att in service.networks:
                if att.network not in self.subnets:
                    raise NetworkError(f"{who}unknown network {att.network!r}")
            path = os.path.join(self.netns_dir, container_id)
            ep = Endpoint(container_id, path, service.name, index,
                          {a.network: tuple(a.aliases) for a in service.networks})
            plan = []
            try:
                for i, att in enumerate(service.networks):
                    who = f"services.{service.name}.networks.{att.network}: "
                    addr = self.alloc[att.network].allocate(att.ipv4_address if index == 1 else None, who=who)
                    host, peer = veth_names(container_id, att.network)
                    m = Membership(att.network, att.interface_name or f"eth{i}", addr, host)
                    ep.members.append(m)
                    if att.network in self.alloc6:
                        m.address6 = self.alloc6[att.network].allocate(att.ipv6_address if index == 1 else None,
                                                                       who=who)
                    plan.append((att.network, host, peer))
            except IpamError:
                for m in ep.members:
                    self.alloc[m.key].release(m.address)
                    if m.address6 is not None:
                        self.alloc6[m.key].release(m.address6)
                raise
            self._note("netns", path)
            for _key, host, _peer in plan:
                self._note("veths", host)
            self.endpoints[container_id] = ep
        try:
            _in_thread(lambda: self._wire(ep, plan))
        except BaseException as e:
            self.detach(container_id)
            if isinstance(e, (OSError,)) or type(e).__module__.startswith("pyroute2"):
                raise NetworkError(f"services.{service.name}: network set-up failed: {e}") from None
            raise
        v6 = {m.key: str(m.address6) for m in ep.members if m.address6 is not None}
        log.info("net.attached", container=container_id,
                 addresses={m.key: str(m.address) for m in ep.members}, **({"addresses6": v6} if v6 else {}))
        return ep

    def _wire(self, ep: Endpoint, plan: list[tuple[str, str, str]]) -> None:
        """In a fresh thread: make the namespace, the veths, addresses and routes."""
        with open(ep.netns, "x"):
            pass
        host_ipr = _iproute()  # bound to the host's namespace (this thread's, now)
        try:
            S.unshare(S.CLONE_NEWNET)
            S.mount("/proc/thread-self/ns/net", ep.netns, None, S.MS_BIND)
            ns_fd = os.open(ep.netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                for (key, host, peer), m in zip(plan, ep.members):
                    _delete_link(host_ipr, host)
                    host_ipr.link("add", ifname=host, kind="veth", peer={"ifname": peer, "net_ns_fd": ns_fd})
                    hidx = host_ipr.link_lookup(ifname=host)[0]
                    bidx = host_ipr.link_lookup(ifname=self.bridges[key])[0]
                    host_ipr.link("set", index=hidx, master=bidx, state="up")
            finally:
                os.close(ns_fd)
            with _iproute() as ipr:  # this thread is in the new namespace now
                lo = ipr.link_lookup(ifname="lo")[0]
                ipr.link("set", index=lo, state="up")
                default_gw = default_gw6 = None
                for (key, _host, peer), m in zip(plan, ep.members):
                    idx = ipr.link_lookup(ifname=peer)[0]
                    ipr.link("set", index=idx, ifname=m.ifname, address=container_mac(m.address))
                    ipr.addr("add", index=idx, address=str(m.address), prefixlen=self.subnets[key].prefixlen)
                    if m.address6 is not None:
                        ipr.addr("add", index=idx, address=str(m.address6), prefixlen=self.subnets6[key].prefixlen,
                                 flags=IFA_F_NODAD)
                    ipr.link("set", index=idx, state="up")
                    if default_gw is None and not self.networks[key].internal:
                        default_gw = str(self.alloc[key].gateway)
                    if default_gw6 is None and m.address6 is not None and not self.networks[key].internal:
                        default_gw6 = str(self.alloc6[key].gateway)
                if default_gw is not None:
                    ipr.route("add", dst="0.0.0.0/0", gateway=default_gw)
                if default_gw6 is not None:
                    ipr.route("add", dst="::/0", gateway=default_gw6, family=10)
        finally:
            host_ipr.close()

    def detach(self, container_id: str) -> None:
        """Remove the replica's veths and namespace and free its addresses."""
        with self._lock:
            ep = self.endpoints.pop(container_id, None)
        if ep is None:
            return
        try:
            with _iproute() as ipr:
                for m in ep.members:
                    _delete_link(ipr, m.host_veth)
                    self._forget("veths", m.host_veth)
                    self.alloc[m.key].release(m.address)
                    if m.address6 is not None and m.key in self.alloc6:
                        self.alloc6[m.key].release(m.address6)
        finally:
            _remove_netns(ep.netns)  # its veth ends go with it, should the deletes above have failed
        self._forget("netns", ep.netns)
        log.info("net.detached", container=container_id)

    # --- discovery through /etc/hosts ----------------------------------------------------------

    def lookup(self, key: str, name: str, eligible: Callable[[str], bool]) -> tuple[bool, list[str]]:
        """(known, addresses) of `name` (lower case) in network `key`: endpoints whose service,
        SERVICE.N, container name or alias it is, and `eligible(container id)`."""
        known, out = False, []
        for ep in list(self.endpoints.values()):
            for m in ep.members:
                if m.key != key:
                    continue
                names = {ep.service.lower(), f"{ep.service}.{ep.index}".lower(), ep.container_id.lower(),
                         *(a.lower() for a in ep.aliases.get(key, ()))}
                if name in names:
                    known = True
                    if eligible(ep.container_id):
                        out.append(str(m.address))
                        if m.address6 is not None:
                            out.append(str(m.address6))
        return known, out

    def hosts_entries(self, container_id: str) -> list[tuple[str, str]]:
        """(name, address) of every endpoint sharing a network with `container_id`: service name,
        SERVICE.N, container id, aliases (for the generated /etc/hosts)."""
        me = self.endpoints.get(container_id)
        if me is None:
            return []
        mine = {m.key for m in me.members}
        out = []
        for ep in list(self.endpoints.values()):
            for m in ep.members:
                if m.key not in mine:
                    continue
                names = [ep.service, f"{ep.service}.{ep.index}", ep.container_id, *ep.aliases.get(m.key, ())]
                out += [(n, str(m.address)) for n in names]
                if m.address6 is not None:
                    out += [(n, str(m.address6)) for n in names]
        return out
