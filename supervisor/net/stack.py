"""A stack's networking as `pysup up` uses it: `open_stack_network` (set up before the first
container, removed after the last) and `StackNetwork.decorate` (a replica's ContainerSpec joins its
prepared network namespace and gets a generated /etc/hosts).

Every service without `network_mode` is on a bridge: the networks it lists, else the stack's
`default` network (as Docker Compose does); `network_mode: none|host|service:NAME` keeps that
(see specs/networking.md).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Any, AsyncIterator

import structlog
import trio

from ..errors import PysupError

log = structlog.get_logger()


def used_networks(stack: Any) -> dict[str, Any]:
    """The stack's networks that some service joins (key → config.model.Network); the implicit
    `default` included when a service has no `networks:` and no `network_mode`."""
    return {k: n for k, n in stack.networks.items()
            if any(a.network == k for s in stack.services.values() if _attaches(s) for a in s.networks)}


def _attaches(service: Any) -> bool:
    return service.network_mode in (None, "bridge") and bool(service.networks)


class StackNetwork:
    def __init__(self, stack: Any, network: Any):
        self.stack = stack
        self.network = network
        # where the per-replica "detach when done" tasks run: the caller's nursery around the
        # supervisor (set before the first start; cancelling it detaches, shielded)
        self.nursery: trio.Nursery | None = None
        self._watched: set[str] = set()
        self.replicas: dict[str, Any] = {}  # container id → Replica (its state decides DNS answers)
        self.seen: dict[str, Any] = {}  # container id → Replica, every one started (network_mode: service:)
        self.dns: dict[str, Any] = {}  # network key → DnsServer, for the networks whose server runs
        # published ports: (protocol, host, port) → proxy.TcpProxy / UdpProxy; an ephemeral one's
        # "port" is proxy.ephemeral_key (its service and entry), its proxy's .port the bound one
        self.proxies: dict[tuple[str, str, Any], Any] = {}
        # id(server or proxy) → its serve task's scope, and an event set when that task has ended
        self._scopes: dict[int, tuple[trio.CancelScope, trio.Event]] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the DNS servers, the published ports and the per-replica clean-ups until cancelled
        (then every replica network is removed, shielded). Start it before the first container."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            for server in list(self.dns.values()) + list(self.proxies.values()):
                await self._start(server)
            task_status.started()
            await trio.sleep_forever()

    async def _start(self, server: Any) -> None:
        assert self.nursery is not None
        scope, ended = self._scopes[id(server)] = trio.CancelScope(), trio.Event()

        async def serve(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await server.serve(task_status=task_status)
            finally:
                ended.set()

        await self.nursery.start(serve)

    def _stop(self, server: Any) -> trio.Event | None:
        """Stop serving (a published port or DNS server a live edit removed) and close its
        sockets; the event is set once they are closed (a TCP port's relay thread ends first)."""
        scope, ended = self._scopes.pop(id(server), (None, None))
        if scope is not None:
            scope.cancel()
        _close_sockets(server)
        return ended

    async def bind(self) -> None:
        """The DNS servers' and published ports' sockets, before anything starts: a host port in
        use is an error naming the service and key (PortInUse); DNS that cannot bind, a warning."""
        await self._bind_dns(list(self.network.subnets) if self.network is not None else [])
        if self.network is None:
            return
        new, _changed, _gone = await self._bind_ports(self.stack)
        self.proxies.update(new)

    async def _bind_dns(self, keys: list[str]) -> None:
        from .dns import DnsServer

        for key in keys:
            server = DnsServer(str(self.network.alloc[key].gateway), functools.partial(self.lookup, key))
            try:
                await server.bind()
            except OSError as e:
                log.warning("net.dns_unavailable", network=key, address=server.address, error=str(e),
                            detail="containers get the peers' names in /etc/hosts instead")
                continue
            self.dns[key] = server

    async def _bind_ports(self, stack: Any, later: set | frozenset = frozenset()) -> tuple[dict, dict, dict]:
        """The published ports of `stack` against those served now: (new ones, bound, except the
        keys in `later`, not bound; kept ones whose service, target or balancing changed → the new
        proxy; ones to stop). A host port in use raises PortInUse naming the service and key, and
        closes what it bound."""
        wanted = self._wanted(stack)
        new: dict = {}
        try:
            for key, (name, proxy) in wanted.items():
                if key in self.proxies:
                    continue
                if key not in later:
                    await proxy.bind()
                    log.info("net.port_published", service=name, host=proxy.host, port=proxy.port,
                             target=proxy.target, protocol=key[0], ephemeral=not isinstance(key[2], int))
                new[key] = proxy
        except BaseException:
            for proxy in new.values():
                _close_sockets(proxy)
            raise
        changed = {k: p for k, (_n, p) in wanted.items() if k in self.proxies}
        gone = {k: p for k, p in self.proxies.items() if k not in wanted}
        return new, changed, gone

    def _wanted(self, stack: Any) -> dict[tuple[str, str, Any], tuple[str, Any]]:
        """(protocol, host, port or ephemeral key) → (service, a new proxy) for every published
        port of `stack`."""
        from .proxy import proxies_for

        wanted: dict[tuple[str, str, Any], tuple[str, Any]] = {}
        for name, svc in stack.services.items():
            if _attaches(svc) and svc.ports:
                for port, proxy in proxies_for(svc, functools.partial(self.backends, name)):
                    wanted[("udp" if hasattr(proxy, "sessions") else "tcp", proxy.host, port)] = (name, proxy)
        return wanted

    def host_port(self, service: Any, i: int) -> tuple[str, int] | None:
        """The host address and port serving `service.ports[i]` now: for an entry without a host
        port, the ephemeral one bound for it; None if nothing is bound for it."""
        from .proxy import ephemeral_key

        p = service.ports[i]
        if p.published is None:
            port: Any = ephemeral_key(service.name, service.ports, i)
        elif p.published[0] == p.published[1]:
            port = p.published[0]
        else:
            return None  # a host range: one port per replica
        proxy = self.proxies.get((p.protocol, p.host_ip or "0.0.0.0", port))
        if proxy is None or proxy.port == 0:
            return None
        return proxy.host, proxy.port

    def close_sockets(self) -> None:
        for server in list(self.dns.values()) + list(self.proxies.values()):
            _close_sockets(server)

    # --- a live edit --------------------------------------------------------------------------

    async def apply(self, stack: Any) -> None:
        """Before a live edit's reconcile: make its new networks (bridge, NAT, DNS) and bind its
        new published ports; stop serving the ports it dropped; a network it dropped goes with its
        last member. Bad input (unknown network, overlapping subnet, port in use, a network edited
        in place) raises a PysupError naming the key, and nothing changes."""
        _check(stack)
        net = self.network
        assert net is not None
        wanted = used_networks(stack)
        for key, n in wanted.items():
            if key in net.networks and net.networks[key] != n:
                raise PysupError(f"networks.{key}: a live edit cannot change an existing network "
                                 "(restart pysup up, or give the new one another key)")
        # a port that only moves to another host address (0.0.0.0:8080 → 127.0.0.1:8080) is bound
        # once its old listener is closed, after everything else has checked out
        keys = set(self._wanted(stack))
        moving = {(k[0], k[2]) for k in self.proxies if k not in keys and isinstance(k[2], int)}
        later = {k for k in keys if k not in self.proxies and (k[0], k[2]) in moving}
        new, changed, gone = await self._bind_ports(stack, later)
        added = [k for k in wanted if k not in net.networks]
        try:
            if added:
                await trio.to_thread.run_sync(_add_networks, net, {k: wanted[k] for k in added})
            if later:
                try:
                    await self._move_ports({k: new[k] for k in later}, gone)
                except BaseException:
                    with trio.CancelScope(shield=True):
                        for key in added:
                            await trio.to_thread.run_sync(net.remove_network, key)
                    raise
        except BaseException:
            for proxy in new.values():
                _close_sockets(proxy)
            raise
        self.stack = stack
        await self._bind_dns(added)
        for key in added:
            if key in self.dns:
                await self._start(self.dns[key])
        for key, proxy in changed.items():  # same host port: the listener stays, the rest is the edit's
            old = self.proxies[key]
            if (old.target, old.who) != (proxy.target, proxy.who) or old.balancer.policy != proxy.balancer.policy:
                old.target, old.who, old.balancer = proxy.target, proxy.who, proxy.balancer
                log.info("net.port_updated", host=old.host, port=old.port, target=old.target, protocol=key[0])
        for key, proxy in gone.items():
            if key in self.proxies:  # (a moved one is stopped already)
                self._stop(self.proxies.pop(key))
                log.info("net.port_unpublished", host=proxy.host, port=proxy.port, protocol=key[0])
        for key, proxy in new.items():
            self.proxies[key] = proxy
            await self._start(proxy)
        await self.collect()

    async def _move_ports(self, later: dict, gone: dict) -> None:
        """Bind the ports in `later` in place of the old listeners on the same protocol and port
        (in `gone`); should one not bind, the old ones are bound and served again."""
        ports = {(k[0], k[2]) for k in later}
        olds = {k: p for k, p in gone.items() if (k[0], k[2]) in ports and k in self.proxies}
        for key in olds:
            ended = self._stop(self.proxies.pop(key))
            if ended is not None:
                await ended.wait()
            log.info("net.port_unpublished", host=olds[key].host, port=olds[key].port, protocol=key[0])
        try:
            for key, proxy in later.items():
                await proxy.bind()
                log.info("net.port_published", host=proxy.host, port=proxy.port, target=proxy.target,
                         protocol=key[0])
        except BaseException:
            with trio.CancelScope(shield=True):
                for proxy in later.values():
                    _close_sockets(proxy)
                for key, proxy in olds.items():
                    try:
                        await proxy.bind()
                    except PysupError as e:
                        log.error("net.port_lost", host=proxy.host, port=proxy.port, protocol=key[0], error=str(e))
                        continue
                    self.proxies[key] = proxy
                    await self._start(proxy)
            raise

    async def collect(self) -> None:
        """Remove the networks the stack no longer uses once no replica is on them."""
        net = self.network
        if net is None:
            return
        wanted = used_networks(self.stack)
        for key in [k for k in list(net.networks) if k not in wanted and not net.in_use(k)]:
            server = self.dns.pop(key, None)
            if server is not None:
                self._stop(server)
            with trio.CancelScope(shield=True):
                try:
                    await trio.to_thread.run_sync(net.remove_network, key)
                except Exception as e:  # noqa: BLE001
                    log.error("net.remove_failed", network=key, error=str(e))

    def backends(self, service: str, index: int | None = None) -> list[str]:
        """Published ports: the eligible replicas' addresses (their first network), by index;
        only replica `index`'s when given."""
        eps = sorted((e for e in list(self.network.endpoints.values()) if e.service == service and e.members
                      and index in (None, e.index)), key=lambda e: e.index)
        return [str(e.members[0].address) for e in eps if self.eligible(e.container_id)]

    def eligible(self, container_id: str) -> bool:
        from ..supervise.state import ReplicaState as S

        r = self.replicas.get(container_id)
        return r is not None and r.status.state in (S.RUNNING, S.HEALTHY) and not r.stop_requested

    def lookup(self, key: str, name: str) -> list[str] | None:
        """DNS: the addresses of `name` in network `key`; [] for a name of the stack with nothing
        eligible now, None for a name that is not the stack's (forwarded)."""
        known, addrs = self.network.lookup(key, name, self.eligible)
        if known:
            return addrs
        for svc in self.stack.services.values():
            for att in svc.networks:
                if att.network == key and name in {svc.name.lower(), *(a.lower() for a in att.aliases)}:
                    return []
        return None

    def decorate(self, replica: Any, spec: Any) -> Any:
        """The spec with the replica's network: its namespace (made on the first start, kept over
        restarts, removed when the replica is done) and an /etc/hosts naming its peers."""
        from ..runtime.spec import generated_hosts

        service = replica.service
        self.seen[replica.container_id] = replica
        if replica.container_id not in self._watched and self.nursery is not None:  # once per container
            self._watched.add(replica.container_id)
            self.nursery.start_soon(self._detach_when_done, replica)
        mode = service.network_mode or ""
        if mode.startswith("service:"):
            return spec.replace(netns=self._shared_netns(service, mode.partition(":")[2]))
        if self.network is None or not _attaches(service):
            return spec
        ep = self.network.attach(replica.container_id, service, replica.index)
        self.replicas[replica.container_id] = replica
        hostname = spec.effective_hostname
        first = ep.members[0] if ep.members else None
        changes: dict[str, Any] = {"netns": ep.netns}
        if first is not None and first.key in self.dns:
            # names come from the DNS server; /etc/hosts: the container's own names and address
            own = dict.fromkeys((hostname, replica.container_id))
            entries = tuple((n, str(first.address)) for n in own)
            if first.address6 is not None:
                entries += tuple((n, str(first.address6)) for n in own)
            if not (service.dns or service.dns_search or service.dns_opt):
                changes["resolv_conf"] = f"nameserver {self.dns[first.key].address}\n"
        else:
            entries = tuple(self.network.hosts_entries(replica.container_id))
        extra = tuple((h, ip) for h, ip in service.extra_hosts) + entries
        changes["hosts"] = generated_hosts(hostname, extra)
        return spec.replace(**changes)

    def _shared_netns(self, service: Any, target: str) -> str:
        """The namespace of `target`'s lowest-numbered replica: its prepared one (it outlives
        restarts), else its running PID 1's."""
        eps = sorted((e for e in (self.network.endpoints.values() if self.network is not None else ())
                      if e.service == target), key=lambda e: e.index)
        if eps:
            return eps[0].netns
        for r in sorted((r for r in list(self.seen.values()) if r.service.name == target), key=lambda r: r.index):
            handle = r.handle
            if handle is not None and not r.done.is_set():
                return f"/proc/{handle.pid}/ns/net"
        raise PysupError(f"services.{service.name}.network_mode: service {target!r} has no running container "
                         "whose network to share (add depends_on on it)")

    async def _detach_when_done(self, replica: Any) -> None:
        try:
            await replica.done.wait()
        finally:
            self._watched.discard(replica.container_id)
            self.replicas.pop(replica.container_id, None)
            self.seen.pop(replica.container_id, None)
            with trio.CancelScope(shield=True):
                try:
                    if self.network is not None:
                        await trio.to_thread.run_sync(self.network.detach, replica.container_id)
                except Exception as e:  # noqa: BLE001
                    log.error("net.detach_failed", container=replica.container_id, error=str(e))
                if self.network is not None and any(k not in used_networks(self.stack)
                                                    for k in self.network.networks):
                    await self.collect()  # a live edit dropped a network: gone after its last member


def _check(stack: Any) -> None:
    for name, svc in stack.services.items():
        mode = svc.network_mode or ""
        if mode.startswith("service:") and mode.partition(":")[2] not in stack.services:
            raise PysupError(f"services.{name}.network_mode: unknown service {mode.partition(':')[2]!r}")
        if mode.startswith("container:"):
            raise PysupError(f"services.{name}.network_mode: {mode!r} is not supported (use service:NAME)")
        for att in svc.networks:
            if att.network not in stack.networks:
                raise PysupError(f"services.{name}.networks: unknown network {att.network!r}")
            if att.ipv6_address and not stack.networks[att.network].enable_ipv6:
                raise PysupError(f"services.{name}.networks.{att.network}.ipv6_address: networks.{att.network} "
                                 "has no IPv6 (set enable_ipv6: true)")


@contextlib.asynccontextmanager
async def open_stack_network(stack: Any, runtime_dir: str) -> AsyncIterator[StackNetwork]:
    """Set up the stack's bridges (after removing a crashed run's leftovers): every network a
    service joins, the implicit `default` included. Everything made goes on exit."""
    _check(stack)
    from .bridge import BridgeNetworks
    from .ipam import DEFAULT_POOL

    net = BridgeNetworks(stack.name, used_networks(stack), runtime_dir,
                         pool=getattr(stack.x, "subnet_pool", None) or DEFAULT_POOL)
    removed = await trio.to_thread.run_sync(net.cleanup_leftovers)
    for what in removed:
        log.warning("up.leftover_removed", removed=what)
    if removed:
        print(f"pysup: removed network leftovers of a previous run of {stack.name!r}: " + "; ".join(removed),
              file=sys.stderr, flush=True)
    try:
        await trio.to_thread.run_sync(_plan_and_setup, net)
        sn = StackNetwork(stack, net)
        await sn.bind()
        try:
            yield sn
        finally:
            sn.close_sockets()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(functools.partial(_close, net))


def _close_sockets(server: Any) -> None:
    """Close a DNS server's or published port's sockets (a TCP port's relay closes its own)."""
    if hasattr(server, "close"):
        server.close()
    elif getattr(server, "sock", None) is not None:
        server.sock.close()


def _add_networks(net: Any, networks: dict[str, Any]) -> None:
    from .bridge import HostLock

    with HostLock():
        net.add_networks(networks)


def _plan_and_setup(net: Any) -> None:
    from .bridge import HostLock

    with HostLock():
        net.plan()
        net.setup()


def _close(net: Any) -> None:
    try:
        net.close()
    except Exception as e:  # noqa: BLE001
        log.error("net.cleanup_failed", error=str(e))
