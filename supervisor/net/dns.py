"""The embedded DNS server: one trio UDP socket per stack network, on its gateway address, port 53.

A query (A, AAAA, ANY) for a name the stack knows in that network — a service name, SERVICE.N, a
container name, an alias — is answered from the current endpoints (`lookup`): service names and
aliases with every eligible (running or healthy; not unhealthy, stopping or starting) replica's
address, shuffled; TTL 0, so clients come back. A gets the IPv4 addresses, AAAA the IPv6 ones
(networks with `enable_ipv6`), an empty NOERROR answer when there are none of that type; NXDOMAIN
when nothing is eligible. Any other name is forwarded as is to the host's resolvers (`upstreams`: from the
host's /etc/resolv.conf, loopback ones included: the supervisor runs in the host's namespace), the
reply relayed with the client's id. Wire format: dnspython.
"""

from __future__ import annotations

import random
from typing import Callable, Iterable

import structlog
import trio

log = structlog.get_logger()

Lookup = Callable[[str], "list[str] | None"]  # name (lower case, no trailing dot) → addresses, None: not ours
MAX_UDP = 4096


def answer(query: bytes, lookup: Lookup, *, shuffle: bool = True) -> bytes | None:
    """The reply to `query` when the name is the stack's; None when it must be forwarded. A query
    that does not parse gets FORMERR (or None when there is not even a header)."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.rcode
    import dns.rdataclass
    import dns.rdatatype
    import dns.rrset

    try:
        msg = dns.message.from_wire(query)
    except dns.exception.DNSException:
        if len(query) < 12:
            return None
        return bytes(query[:2]) + b"\x81\x01" + b"\x00" * 8  # FORMERR, no sections
    if msg.flags & dns.flags.QR or len(msg.question) != 1:
        return None if msg.flags & dns.flags.QR else _rcode(msg, dns.rcode.FORMERR)
    q = msg.question[0]
    name = q.name.to_text(omit_final_dot=True).lower()
    if q.rdclass != dns.rdataclass.IN:
        return None
    addrs = lookup(name)
    if addrs is None:
        return None
    resp = dns.message.make_response(msg)
    resp.flags |= dns.flags.AA | dns.flags.RA
    addrs = list(addrs)
    if not addrs:
        resp.set_rcode(dns.rcode.NXDOMAIN)  # ours, but nothing eligible right now
        return resp.to_wire()
    if shuffle:
        random.shuffle(addrs)
    for rdtype, of_type in ((dns.rdatatype.A, [a for a in addrs if ":" not in a]),
                            (dns.rdatatype.AAAA, [a for a in addrs if ":" in a])):
        if q.rdtype in (rdtype, dns.rdatatype.ANY) and of_type:  # none of the type: NODATA
            resp.answer.append(dns.rrset.from_text_list(q.name, 0, dns.rdataclass.IN, rdtype, of_type))
    return resp.to_wire()


def _rcode(msg, rcode) -> bytes:
    import dns.message

    resp = dns.message.make_response(msg)
    resp.set_rcode(rcode)
    return resp.to_wire()


def host_upstreams(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and ":" not in parts[1]:
                    out.append((parts[1], 53))
    except OSError:
        pass
    return out


async def forward(query: bytes, upstreams: Iterable[tuple[str, int]], timeout: float = 2.0) -> bytes | None:
    """The first upstream's reply to `query` (a fresh socket per query: its reply cannot be
    confused with another's); None when none answers in time."""
    for host, port in upstreams:
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as s:
            with trio.move_on_after(timeout):
                await s.connect((host, port))
                await s.send(query)
                while True:
                    data = await s.recv(MAX_UDP)
                    if data[:2] == query[:2]:
                        return data
    return None


class DnsServer:
    """Answers on (address, port) for one network."""

    def __init__(self, address: str, lookup: Lookup, upstreams: list[tuple[str, int]] | None = None, port: int = 53):
        self.address = address
        self.port = port
        self.lookup = lookup
        self.upstreams = host_upstreams() if upstreams is None else upstreams
        self.sock: trio.socket.SocketType | None = None

    async def bind(self) -> None:
        self.sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await self.sock.bind((self.address, self.port))
        self.port = self.sock.getsockname()[1]

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.sock is None:
            await self.bind()
        assert self.sock is not None
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    data, peer = await self.sock.recvfrom(MAX_UDP)
                    try:
                        reply = answer(data, self.lookup)
                    except Exception as e:  # noqa: BLE001 - one bad query must not stop the server
                        log.warning("dns.bad_query", peer=str(peer), error=str(e))
                        continue
                    if reply is not None:
                        await self.sock.sendto(reply, peer)
                    elif self.upstreams:
                        nursery.start_soon(self._forward, data, peer)
        finally:
            self.sock.close()

    async def _forward(self, data: bytes, peer: tuple) -> None:
        reply = await forward(data, self.upstreams)
        if reply is not None and self.sock is not None:
            try:
                await self.sock.sendto(reply, peer)
            except OSError:
                pass
