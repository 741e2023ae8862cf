"""Published ports: pysup listens on the host port itself and forwards each TCP connection (each UDP
client) to one of the service's eligible replicas, so any number of replicas share one host port.

The backend is picked when a connection arrives: round-robin, or the replica with the fewest open
connections (`x-pysup.load_balance: least-connections`). A replica leaving the rotation (unhealthy,
stopping, gone) gets no new connections; the ones it has are left alone until they end. A backend
that refuses the connection is skipped for the next one, so a replica stopping between the pick and
the connect costs no failed request.

TCP is relayed outside trio: each published TCP port has a thread of its own running an epoll loop
over non-blocking sockets (`_Relay`), started and waited for by the port's trio task (cancel it and
the thread ends, closing every socket). A trio task per connection and direction cost about half
the throughput with a connection per request (bench/net.py). The balancer is called from that
thread; it reads the supervisor's replica table (plain reads of dicts, under the GIL) and counts
open connections under a lock. UDP stays in trio.
"""

from __future__ import annotations

import errno
import itertools
import os
import select
import socket
import threading
import time
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
        self.active: dict[str, int] = {}  # open connections per address (the relay threads count too)
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def opened(self, addr: str) -> None:
        with self._lock:
            self.active[addr] = self.active.get(addr, 0) + 1

    def closed(self, addr: str) -> None:
        with self._lock:
            self.active[addr] -= 1

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


class TcpProxy:
    """One published TCP port. The connections are relayed by a thread of its own (`_Relay`: an
    epoll loop over non-blocking sockets, no task per connection); the trio side binds the port
    (before anything starts) and runs and stops the thread. `target` and `balancer` are read per
    connection, so a live edit may change them."""

    def __init__(self, host: str, port: int, target: int, balancer: Balancer, *, who: str = ""):
        self.host, self.port, self.target, self.balancer, self.who = host, port, target, balancer, who
        self.sock: socket.socket | None = None
        self._relay: _Relay | None = None

    async def bind(self) -> None:
        try:
            family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM,
                                        flags=socket.AI_PASSIVE)[0][0]
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        except OSError as e:
            raise PortInUse(f"{self.who}{self.host}:{self.port}/tcp: {e.strerror or e}") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise PortInUse(f"{self.who}{self.host}:{self.port}/tcp: {e.strerror or e}") from None
        self.sock = sock
        self.port = sock.getsockname()[1]  # port 0 (ephemeral): the one the kernel picked

    def close(self) -> None:
        """Close the listening socket of a proxy that is not serving (serve closes its own)."""
        if self._relay is None and self.sock is not None:
            self.sock.close()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Relay until cancelled; then the thread stops and every socket is closed (established
        connections too: the stack is stopping, or the edit dropped the port). The thread is a new
        one, not one of trio's cached workers: it makes sockets, and so must be in the network
        namespace of the thread that starts it (a cached worker could have been born elsewhere)."""
        if self.sock is None:
            await self.bind()
        relay = self._relay = _Relay(self)
        token = trio.lowlevel.current_trio_token()
        ended = trio.Event()
        error: list[BaseException] = []

        def body() -> None:
            try:
                relay.run()
            except BaseException as e:  # noqa: BLE001 - raised in the trio task
                error.append(e)
            finally:
                token.run_sync_soon(ended.set)

        threading.Thread(target=body, name=f"pysup-proxy-{self.port}", daemon=True).start()
        try:
            task_status.started()
            await ended.wait()
        finally:
            relay.stop()
            with trio.CancelScope(shield=True):
                await ended.wait()
            self._relay = None
        if error:
            raise error[0]


_IN, _OUT, _ERR = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR | select.EPOLLHUP


class _Side:
    """One socket of a relayed connection: what is still to be written to it, whether it is read."""

    __slots__ = ("sock", "fd", "other", "pair", "out", "eof", "shut", "mask")  # mask None: not in epoll

    def __init__(self, sock: socket.socket, pair: _Pair):
        self.sock, self.fd, self.pair = sock, sock.fileno(), pair
        self.other: _Side = self
        self.out = b""  # read from `other`, not yet written here
        self.eof = False  # the peer behind this socket sent EOF
        self.shut = False  # our write side of this socket is shut down
        self.mask: int | None = -1


class _Pair:
    __slots__ = ("client", "upstream", "addr")

    def __init__(self, client: socket.socket, upstream: socket.socket, addr: str):
        self.addr = addr
        self.client, self.upstream = _Side(client, self), _Side(upstream, self)
        self.client.other, self.upstream.other = self.upstream, self.client


class _Connecting:
    """A client accepted, its upstream connect in flight; `rest`: the candidates after this one."""

    __slots__ = ("client", "upstream", "addr", "rest", "deadline")

    def __init__(self, client: socket.socket, upstream: socket.socket, addr: str, rest: list[str], deadline: float):
        self.client, self.upstream, self.addr, self.rest, self.deadline = client, upstream, addr, rest, deadline


class _Relay:
    """The epoll loop of one TcpProxy, in a thread of its own. Per connection: accept, pick the
    backends in order (`balancer.candidates()`), a non-blocking connect to the first (a refusal
    or `CONNECT_TIMEOUT` moves on to the next), then copy both ways; a side's EOF is passed on as
    a half-close once what was read before it is written; a reset ends both sides. A write that
    would block stops reading the other side until it drains (no buffering beyond one read)."""

    def __init__(self, proxy: TcpProxy):
        self.proxy = proxy
        self.ep = select.epoll()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.fds: dict[int, Any] = {}  # fd → _Side or _Connecting
        self.connecting: dict[int, _Connecting] = {}
        # fds closed while handling one poll's events: that poll's later events for them are stale
        # (the number may already be a new socket's)
        self.stale: set[int] = set()

    def stop(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def run(self) -> None:
        proxy = self.proxy
        assert proxy.sock is not None
        listen_fd = proxy.sock.fileno()
        ep = self.ep
        ep.register(listen_fd, _IN)
        ep.register(self.wake_r, _IN)
        try:
            while True:
                timeout = -1.0
                if self.connecting:
                    timeout = max(0.0, min(c.deadline for c in self.connecting.values()) - time.monotonic())
                self.stale.clear()
                for fd, ev in ep.poll(timeout):
                    if fd in self.stale:
                        continue
                    if fd == listen_fd:
                        self._accept()
                    elif fd == self.wake_r:
                        return
                    else:
                        obj = self.fds.get(fd)
                        try:
                            if type(obj) is _Side:
                                self._on_side(obj, ev)
                            elif type(obj) is _Connecting:
                                self._on_connected(obj)
                        except Exception as e:  # noqa: BLE001 - one connection's trouble, not the port's
                            log.error("proxy.relay_error", port=proxy.port, error=repr(e))
                            if type(obj) is _Side:
                                self._end(obj.pair)
                if self.connecting:
                    now = time.monotonic()
                    for c in [c for c in self.connecting.values() if c.deadline <= now]:
                        self._failed(c, "connect timed out")
        finally:
            for obj in list(self.fds.values()):
                if type(obj) is _Side:
                    self._end(obj.pair)
                elif type(obj) is _Connecting:
                    self._drop_connecting(obj)
                    obj.client.close()
            ep.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            proxy.sock.close()

    # --- a new connection ---------------------------------------------------------------------

    def _accept(self) -> None:
        proxy = self.proxy
        assert proxy.sock is not None
        for _ in range(64):
            try:
                client, _peer = proxy.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # ECONNABORTED, EMFILE: this one is lost, the port goes on
                log.warning("proxy.accept_failed", port=proxy.port, error=str(e))
                return
            client.setblocking(False)
            cands = proxy.balancer.candidates()
            if not cands:
                log.warning("proxy.no_backend", port=proxy.port, target=proxy.target)
                client.close()
                continue
            self._connect(client, cands[0], cands[1:])

    def _connect(self, client: socket.socket, addr: str, rest: list[str]) -> None:
        up = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        err = up.connect_ex((addr, self.proxy.target))
        c = _Connecting(client, up, addr, rest, time.monotonic() + CONNECT_TIMEOUT)
        if err not in (0, errno.EINPROGRESS):
            self._failed(c, os.strerror(err), registered=False)
            return
        self.fds[up.fileno()] = c
        self.connecting[up.fileno()] = c
        self.ep.register(up.fileno(), _OUT)

    def _drop_connecting(self, c: _Connecting) -> None:
        fd = c.upstream.fileno()
        self.stale.add(fd)
        self.fds.pop(fd, None)
        self.connecting.pop(fd, None)
        try:
            self.ep.unregister(fd)
        except (OSError, ValueError):
            pass
        c.upstream.close()

    def _failed(self, c: _Connecting, why: str, registered: bool = True) -> None:
        """The connect to `c.addr` failed (stopping, not listening): the next candidate."""
        log.info("proxy.backend_skipped", port=self.proxy.port, backend=c.addr, error=why)
        if registered:
            self._drop_connecting(c)
        else:
            c.upstream.close()
        if c.rest:
            self._connect(c.client, c.rest[0], c.rest[1:])
        else:
            log.warning("proxy.no_backend", port=self.proxy.port, target=self.proxy.target)
            c.client.close()

    def _on_connected(self, c: _Connecting) -> None:
        err = c.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._failed(c, os.strerror(err))
            return
        fd = c.upstream.fileno()
        self.connecting.pop(fd, None)
        for s in (c.client, c.upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = _Pair(c.client, c.upstream, c.addr)
        self.proxy.balancer.opened(c.addr)
        self.fds[fd] = pair.upstream
        self.fds[pair.client.fd] = pair.client
        pair.upstream.mask = _OUT  # registered while connecting
        self.ep.register(pair.client.fd, _IN)
        pair.client.mask = _IN
        self._update(pair.upstream)

    # --- copying --------------------------------------------------------------------------------

    def _update(self, side: _Side) -> None:
        """Watch `side` for reading while its data has somewhere to go, for writing while it has
        some pending."""
        mask = (_IN if not side.eof and not side.other.out else 0) | (_OUT if side.out else 0)
        if side.mask is None:  # parked after a hang-up: back once there is something to do
            if mask:
                self.ep.register(side.fd, mask)
                side.mask = mask
        elif mask != side.mask:
            self.ep.modify(side.fd, mask)
            side.mask = mask

    def _park(self, side: _Side) -> None:
        if side.mask is not None:
            self.ep.unregister(side.fd)
            side.mask = None

    def _on_side(self, side: _Side, ev: int) -> None:
        if ev & _OUT and side.out:
            if not self._flush(side):
                return
        if ev & (_IN | _ERR) and not side.eof and not side.other.out:
            try:
                data = side.sock.recv(BUFSIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._end(side.pair)
                return
            if not data:
                side.eof = True
                other = side.other
                if not other.out:
                    self._shut(other)
                if self._done(side.pair):
                    return
            else:
                other = side.other
                try:
                    n = other.sock.send(data)
                except (BlockingIOError, InterruptedError):
                    n = 0
                except OSError:
                    self._end(side.pair)
                    return
                if n < len(data):
                    other.out = data[n:]
                    self._update(other)
            self._update(side)
        elif ev & select.EPOLLERR:
            self._end(side.pair)
        elif ev & select.EPOLLHUP:
            # shut both ways while not read now (EOF seen, or paused while the other side drains):
            # what is left is delivered once the other side has drained; until then epoll would
            # report the hang-up again and again, so the socket is taken out of it
            self._park(side)

    def _flush(self, side: _Side) -> bool:
        try:
            n = side.sock.send(side.out)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self._end(side.pair)
            return False
        side.out = side.out[n:]
        if not side.out:
            if side.other.eof:
                self._shut(side)
                if self._done(side.pair):
                    return False
            self._update(side.other)
        self._update(side)
        return True

    def _shut(self, side: _Side) -> None:
        if not side.shut:
            side.shut = True
            try:
                side.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _done(self, pair: _Pair) -> bool:
        if pair.client.eof and pair.upstream.eof and not pair.client.out and not pair.upstream.out:
            self._end(pair)
            return True
        return False

    def _end(self, pair: _Pair) -> None:
        if self.fds.get(pair.client.fd) is not pair.client:
            return  # ended already
        for side in (pair.client, pair.upstream):
            self.stale.add(side.fd)
            self.fds.pop(side.fd, None)
            try:
                self.ep.unregister(side.fd)
            except (OSError, ValueError):
                pass
            side.sock.close()
        self.proxy.balancer.closed(pair.addr)


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
        self.port = self.sock.getsockname()[1]  # port 0 (ephemeral): the one the kernel picked

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
        self.balancer.opened(addr)
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
            self.balancer.closed(addr)


def ephemeral_key(service: str, ports: Any, i: int) -> tuple[str, str, int, int]:
    """What names the ephemeral host port of `ports[i]` (an entry without `published`) across live
    edits, in place of a port number: the service, the target, and which of the service's identical
    entries it is (not the entry's position, nor port 0); the protocol and host address are beside
    it in StackNetwork's key."""
    p = ports[i]
    nth = sum(1 for q in ports[:i] if q.published is None and (q.host_ip, q.target, q.protocol)
              == (p.host_ip, p.target, p.protocol))
    return ("ephemeral", service, p.target, nth)


def proxies_for(service: Any, backends: Callable[..., list[str]]) -> list[tuple[Any, TcpProxy | UdpProxy]]:
    """(port key, proxy) per published host port of the service. A fixed port is balanced over every
    eligible replica (`backends()`); a host range gives each replica its own port, the first port
    replica 1's, and so on (`backends(index)`), as Docker Compose does. An entry without a host port
    gets one ephemeral port (bound on port 0: the kernel picks it) balanced like a fixed one, where
    Docker gives each container its own; its key is `ephemeral_key`, so a live edit that keeps the
    entry keeps the port. `backends(index=None)`."""
    out: list[tuple[Any, TcpProxy | UdpProxy]] = []
    balancer = Balancer(backends, service.x.load_balance)
    for i, p in enumerate(service.ports):
        cls = UdpProxy if p.protocol == "udp" else TcpProxy
        who = f"services.{service.name}.ports[{i}]: "
        host = p.host_ip or "0.0.0.0"
        if p.published is None:
            out.append((ephemeral_key(service.name, service.ports, i), cls(host, 0, p.target, balancer, who=who)))
            continue
        lo, hi = p.published
        if lo == hi:
            out.append((lo, cls(host, lo, p.target, balancer, who=who)))
            continue
        for port in range(lo, hi + 1):
            own = Balancer(lambda index=port - lo + 1: backends(index))
            out.append((port, cls(host, port, p.target, own, who=who)))
    return out
