"""Published ports: pysup listens on the host port itself and forwards each TCP connection (each UDP
client) to one of the service's eligible replicas, so any number of replicas share one host port.

The backend is picked when a connection arrives: round-robin, or the replica with the fewest open
connections (`x-pysup.load_balance: least-connections`). A replica leaving the rotation (unhealthy,
stopping, gone) gets no new connections; the ones it has are left alone until they end. A backend
that refuses the connection is skipped for the next one, so a replica stopping between the pick and
the connect costs no failed request.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import structlog
import trio

from ..errors import PysupError

log = structlog.get_logger()

Backends = Callable[[], "list[str]"]  # the eligible replicas' addresses, now
CONNECT_TIMEOUT = 1.0  # a container on a local bridge answers a SYN in microseconds
UDP_IDLE = 60.0
BUFSIZE = 65536


class PortInUse(PysupError):
    pass


class Balancer:
    """Picks a backend address; counts open connections per address (least-connections)."""

    def __init__(self, backends: Backends, policy: str = "round-robin"):
        self.backends = backends
        self.policy = policy
        self.active: dict[str, int] = {}
        self._turn = itertools.count()

    def candidates(self) -> list[str]:
        """Every eligible address, the preferred first."""
        addrs = list(self.backends())
        if not addrs:
            return []
        if self.policy == "least-connections":
            start = next(self._turn) % len(addrs)
            addrs = addrs[start:] + addrs[:start]  # ties: in turn
            return sorted(addrs, key=lambda a: self.active.get(a, 0))
        start = next(self._turn) % len(addrs)
        return addrs[start:] + addrs[:start]


async def _pipe(src: trio.SocketStream, dst: trio.SocketStream, both: trio.CancelScope) -> None:
    """Copy until EOF, then half-close `dst` (the other direction goes on); a reset on either side
    ends both directions (`both`), so the client never waits on a dead backend."""
    try:
        while data := await src.receive_some(BUFSIZE):
            await dst.send_all(data)
        await dst.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        both.cancel()


async def _connect(addr: str, port: int) -> trio.SocketStream:
    """A TCP connection to an IPv4 address (no resolver, no happy eyeballs: one address)."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            await sock.connect((addr, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


class TcpProxy:
    def __init__(self, host: str, port: int, target: int, balancer: Balancer, *, who: str = ""):
        self.host, self.port, self.target, self.balancer, self.who = host, port, target, balancer, who
        self.listeners: list[trio.SocketListener] = []

    async def bind(self) -> None:
        try:
            self.listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        except OSError as e:
            raise PortInUse(f"{self.who}{self.host}:{self.port}/tcp: {e.strerror or e}") from None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if not self.listeners:
            await self.bind()
        await trio.serve_listeners(self.handle, self.listeners, task_status=task_status)

    async def handle(self, client: trio.SocketStream) -> None:
        async with client:
            for addr in self.balancer.candidates():
                try:
                    upstream = await _connect(addr, self.target)
                except (OSError, trio.TooSlowError) as e:
                    log.info("proxy.backend_skipped", port=self.port, backend=addr, error=repr(e))
                    continue  # stopping or not listening: the next one
                self.balancer.active[addr] = self.balancer.active.get(addr, 0) + 1
                try:
                    async with upstream, trio.open_nursery() as n:
                        n.start_soon(_pipe, client, upstream, n.cancel_scope)
                        await _pipe(upstream, client, n.cancel_scope)  # one task fewer per connection
                finally:
                    self.balancer.active[addr] -= 1
                return
            log.warning("proxy.no_backend", port=self.port, target=self.target)


class UdpProxy:
    """One socket per client (address, port) towards the backend picked for it, kept while the
    client talks (idle timeout)."""

    def __init__(self, host: str, port: int, target: int, balancer: Balancer, *, who: str = ""):
        self.host, self.port, self.target, self.balancer, self.who = host, port, target, balancer, who
        self.sock: trio.socket.SocketType | None = None
        self.sessions: dict[Any, trio.socket.SocketType] = {}

    async def bind(self) -> None:
        self.sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        try:
            await self.sock.bind((self.host, self.port))
        except OSError as e:
            self.sock.close()
            raise PortInUse(f"{self.who}{self.host}:{self.port}/udp: {e.strerror or e}") from None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.sock is None:
            await self.bind()
        assert self.sock is not None
        task_status.started()
        with self.sock:
            async with trio.open_nursery() as n:
                while True:
                    data, peer = await self.sock.recvfrom(BUFSIZE)
                    up = self.sessions.get(peer)
                    if up is None:
                        cands = self.balancer.candidates()
                        if not cands:
                            continue
                        up = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
                        await up.connect((cands[0], self.target))
                        self.sessions[peer] = up
                        n.start_soon(self._replies, peer, up, cands[0])
                    try:
                        await up.send(data)
                    except OSError:
                        pass

    async def _replies(self, peer: Any, up: trio.socket.SocketType, addr: str) -> None:
        self.balancer.active[addr] = self.balancer.active.get(addr, 0) + 1
        try:
            with up:
                while True:
                    with trio.move_on_after(UDP_IDLE) as idle:
                        data = await up.recv(BUFSIZE)
                    if idle.cancelled_caught:
                        return
                    assert self.sock is not None
                    await self.sock.sendto(data, peer)
        except OSError:
            return
        finally:
            self.sessions.pop(peer, None)
            self.balancer.active[addr] -= 1


def proxies_for(service: Any, backends: Callable[..., list[str]]) -> list[TcpProxy | UdpProxy]:
    """One proxy per published host port of the service. A fixed port is balanced over every
    eligible replica (`backends()`); a host range gives each replica its own port, the first port
    replica 1's, and so on (`backends(index)`), as Docker Compose does. `backends(index=None)`."""
    out: list[TcpProxy | UdpProxy] = []
    balancer = Balancer(backends, service.x.load_balance)
    for i, p in enumerate(service.ports):
        if p.published is None:
            continue  # an ephemeral host port per replica: not published by pysup yet
        lo, hi = p.published
        cls = UdpProxy if p.protocol == "udp" else TcpProxy
        who = f"services.{service.name}.ports[{i}]: "
        if lo == hi:
            out.append(cls(p.host_ip or "0.0.0.0", lo, p.target, balancer, who=who))
            continue
        for port in range(lo, hi + 1):
            own = Balancer(lambda index=port - lo + 1: backends(index))
            out.append(cls(p.host_ip or "0.0.0.0", port, p.target, own, who=who))
    return out
