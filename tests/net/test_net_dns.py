"""The embedded DNS server's answers on the wire (dnspython builds the queries), and forwarding to
a fake resolver on loopback."""

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import trio

from supervisor.net.dns import DnsServer, answer, forward, host_upstreams

NAMES = {"web": ["10.1.0.2", "10.1.0.3", "10.1.0.4"], "web.2": ["10.1.0.3"], "db": []}


def lookup(name):
    return NAMES.get(name)


def ask(name: str, rdtype: str = "A") -> dns.message.Message | None:
    q = dns.message.make_query(name, rdtype)
    wire = answer(q.to_wire(), lookup)
    if wire is None:
        return None
    r = dns.message.from_wire(wire)
    assert r.id == q.id and r.flags & dns.flags.QR and r.flags & dns.flags.AA
    return r


def addrs(r: dns.message.Message) -> list[str]:
    return sorted(rd.address for rrset in r.answer for rd in rrset)


def test_a_service_name_gets_every_address_with_ttl_0_in_varying_order():
    r = ask("web")
    assert r.rcode() == dns.rcode.NOERROR and addrs(r) == NAMES["web"]
    assert r.answer[0].ttl == 0
    orders = set()
    for _ in range(50):
        orders.add(tuple(rd.address for rd in ask("WEB.").answer[0]))  # case-insensitive, absolute names
    assert len(orders) > 1


def test_replica_names_aaaa_and_names_with_nothing_eligible():
    assert addrs(ask("web.2")) == ["10.1.0.3"]
    r = ask("web", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer  # no IPv6: empty, not forwarded
    assert ask("db").rcode() == dns.rcode.NXDOMAIN
    assert ask("db", "AAAA").rcode() == dns.rcode.NXDOMAIN


def test_aaaa_gets_the_ipv6_addresses_and_a_the_ipv4_ones():
    both = {"v6": ["10.1.0.9", "fd70:7973:7570::2"]}
    r = dns.message.from_wire(answer(dns.message.make_query("v6", "AAAA").to_wire(), both.get))
    assert addrs(r) == ["fd70:7973:7570::2"] and r.answer[0].ttl == 0
    r = dns.message.from_wire(answer(dns.message.make_query("v6", "A").to_wire(), both.get))
    assert addrs(r) == ["10.1.0.9"]


def test_other_names_are_forwarded_and_garbage_is_formerr():
    assert ask("example.org") is None
    assert answer(b"\x12\x34" + b"\xff" * 20, lookup)[:4] == b"\x12\x34\x81\x01"
    assert answer(b"\x00", lookup) is None


def test_host_upstreams(tmp_path):
    f = tmp_path / "resolv.conf"
    f.write_text("# x\nnameserver 127.0.0.53\nnameserver ::1\nsearch a\nnameserver 10.0.0.1\n")
    assert host_upstreams(str(f)) == [("127.0.0.53", 53), ("10.0.0.1", 53)]


async def fake_resolver(task_status=trio.TASK_STATUS_IGNORED):
    """Answers every query with 192.0.2.7 (never sends anything but replies to loopback)."""
    s = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await s.bind(("127.0.0.1", 0))
    task_status.started(s.getsockname()[1])
    with s:
        while True:
            data, peer = await s.recvfrom(4096)
            q = dns.message.from_wire(data)
            r = dns.message.make_response(q)
            r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.7"))
            await s.sendto(r.to_wire(), peer)


async def test_server_answers_and_forwards_to_the_upstream():
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            up = await n.start(fake_resolver)
            server = DnsServer("127.0.0.1", lookup, upstreams=[("127.0.0.1", up)], port=0)
            await n.start(server.serve)
            with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as c:
                await c.connect(("127.0.0.1", server.port))
                for name, want in (("web.2", ["10.1.0.3"]), ("example.org", ["192.0.2.7"])):
                    q = dns.message.make_query(name, "A")
                    await c.send(q.to_wire())
                    r = dns.message.from_wire(await c.recv(4096))
                    assert r.id == q.id and addrs(r) == want
            n.cancel_scope.cancel()


async def test_forward_gives_up_after_the_timeout():
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as silent:
        await silent.bind(("127.0.0.1", 0))
        q = dns.message.make_query("x.org", "A").to_wire()
        with trio.fail_after(3):
            assert await forward(q, [silent.getsockname()], timeout=0.2) is None
