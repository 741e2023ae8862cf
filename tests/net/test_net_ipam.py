"""IPAM, pure: subnets from the pool around the host's routes, requested subnets and addresses."""

import ipaddress

import pytest

from supervisor.net.ipam import Allocator, IpamError, plan_subnets

N = ipaddress.IPv4Network


def test_pool_blocks_skip_host_routes_and_each_other():
    got = plan_subnets({"a": None, "b": None}, [N("10.213.0.0/24"), N("0.0.0.0/0")], pool="10.213.0.0/16")
    assert got == {"a": N("10.213.1.0/24"), "b": N("10.213.2.0/24")}


def test_requested_subnet_is_honoured_and_pool_blocks_avoid_it():
    got = plan_subnets({"a": None, "b": "10.213.0.0/24"}, [], pool="10.213.0.0/16")
    assert got == {"a": N("10.213.1.0/24"), "b": N("10.213.0.0/24")}
    assert list(got) == ["a", "b"]  # the stack's order


def test_requested_subnet_overlapping_a_host_route_names_the_key():
    with pytest.raises(IpamError, match=r"networks\.b\.ipam\.config\.subnet: 192\.0\.2\.0/25 overlaps the host's route to 192\.0\.2\.0/24"):
        plan_subnets({"b": "192.0.2.0/25"}, [N("192.0.2.0/24")])


def test_two_requested_subnets_that_overlap():
    with pytest.raises(IpamError, match=r"networks\.b.*overlaps networks\.a"):
        plan_subnets({"a": "10.9.0.0/16", "b": "10.9.3.0/24"}, [])


def test_bad_and_tiny_subnets():
    with pytest.raises(IpamError, match="not an IPv4 subnet"):
        plan_subnets({"a": "nope"}, [])
    with pytest.raises(IpamError, match="too small"):
        plan_subnets({"a": "10.1.1.1/32"}, [])


def test_pool_exhausted():
    with pytest.raises(IpamError, match="no free /24 left in the pool 10.0.0.0/24"):
        plan_subnets({"a": None, "b": None}, [], pool="10.0.0.0/24")


def test_allocator_gateway_first_then_lowest_free_and_release():
    a = Allocator(N("10.5.0.0/29"), key="front")
    assert str(a.gateway) == "10.5.0.1"
    assert [str(a.allocate()) for _ in range(3)] == ["10.5.0.2", "10.5.0.3", "10.5.0.4"]
    a.release("10.5.0.3")
    assert str(a.allocate()) == "10.5.0.3"
    assert str(a.allocate("10.5.0.6")) == "10.5.0.6"
    assert str(a.allocate()) == "10.5.0.5"
    with pytest.raises(IpamError, match=r"networks\.front \(10\.5\.0\.0/29\) has no free address"):
        a.allocate()


def test_allocator_requested_addresses_are_checked():
    a = Allocator(N("10.5.0.0/24"), gateway="10.5.0.254", key="front")
    assert str(a.allocate()) == "10.5.0.1"
    with pytest.raises(IpamError, match=r"services\.web: ipv4_address 10\.6\.0\.1 is not a host address of networks\.front"):
        a.allocate("10.6.0.1", who="services.web: ")
    with pytest.raises(IpamError, match="already in use"):
        a.allocate("10.5.0.254")
    with pytest.raises(IpamError, match="not an IPv4 address"):
        a.allocate("x")
    with pytest.raises(IpamError, match="gateway: 10.7.0.1 is not in"):
        Allocator(N("10.5.0.0/24"), gateway="10.7.0.1", key="front")


def test_nat_ruleset_masquerades_non_internal_and_isolates():
    from supervisor.net.nat import ruleset

    rs = ruleset("proj", [("pysup-a", N("10.1.0.0/24"), False), ("pysup-b", N("10.2.0.0/24"), True)])["nftables"]
    assert rs[0] == {"add": {"table": {"family": "ip", "name": "pysup-proj"}}}
    rules = [(c["add"]["rule"]["chain"], c["add"]["rule"]["expr"]) for c in rs if "rule" in c["add"]]
    assert [(ch, list(e[-1])) for ch, e in rules] == [("postrouting", ["masquerade"]), ("forward", ["drop"]),
                                                       ("forward", ["drop"])]
    assert rules[0][1][0]["match"]["right"] == {"prefix": {"addr": "10.1.0.0", "len": 24}}
    assert rules[2][1][0]["match"]["right"] == "pysup-b"  # the internal one: nothing forwarded out


def test_balancer_round_robin_and_least_connections():
    from supervisor.net.proxy import Balancer

    backends = ["a", "b", "c"]
    rr = Balancer(lambda: backends)
    assert [rr.candidates()[0] for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    assert rr.candidates() == ["a", "b", "c"]  # the others follow: a refused connect tries the next
    lc = Balancer(lambda: backends, "least-connections")
    lc.active = {"a": 2, "b": 0, "c": 1}
    assert lc.candidates() == ["b", "c", "a"]
    lc.active["b"] = 5
    assert lc.candidates()[0] == "c"
    assert Balancer(lambda: []).candidates() == []


def test_published_ports_fixed_balanced_range_one_per_replica_ephemeral_balanced():
    import types

    from supervisor.config.model import Port
    from supervisor.net.proxy import TcpProxy, UdpProxy, proxies_for

    svc = types.SimpleNamespace(name="web", x=types.SimpleNamespace(load_balance="round-robin"), ports=(
        Port(target=80, published=(8080, 8080), host_ip="127.0.0.1"),
        Port(target=53, published=(5300, 5301), protocol="udp"),
        Port(target=9000), Port(target=9000, host_ip="127.0.0.1"), Port(target=9000, protocol="udp"),
        Port(target=9000)))
    addrs = {1: "10.0.0.2", 2: "10.0.0.3"}
    keyed = proxies_for(svc, lambda index=None: [addrs[index]] if index else list(addrs.values()))
    ps = [p for _k, p in keyed]
    assert [(k, type(p), p.host, p.port, p.target) for k, p in keyed] == [
        (8080, TcpProxy, "127.0.0.1", 8080, 80), (5300, UdpProxy, "0.0.0.0", 5300, 53),
        (5301, UdpProxy, "0.0.0.0", 5301, 53),
        # no host port: port 0 (the kernel picks one), keyed by the service and entry, not by 0
        (("ephemeral", "web", 9000, 0), TcpProxy, "0.0.0.0", 0, 9000),
        (("ephemeral", "web", 9000, 0), TcpProxy, "127.0.0.1", 0, 9000),
        (("ephemeral", "web", 9000, 0), UdpProxy, "0.0.0.0", 0, 9000),
        (("ephemeral", "web", 9000, 1), TcpProxy, "0.0.0.0", 0, 9000)]
    assert ps[0].balancer.candidates() == ["10.0.0.2", "10.0.0.3"]
    assert ps[1].balancer.candidates() == ["10.0.0.2"] and ps[2].balancer.candidates() == ["10.0.0.3"]
    assert ps[3].balancer.candidates() == ["10.0.0.3", "10.0.0.2"]  # every replica (in turn)
    assert ps[0].who == "services.web.ports[0]: " and ps[6].who == "services.web.ports[5]: "


def test_a_prepared_network_namespace_replaces_a_new_one():
    from supervisor import syscalls as S
    from supervisor.runtime.spec import ContainerSpec
    from supervisor.runtime.zygote import DEFAULT_NAMESPACES, namespace_flags

    spec = ContainerSpec(id="c", rootfs="/r", argv=("true",), netns="/run/pysup/p/netns/c")
    assert ContainerSpec.from_json(spec.to_json()).netns == "/run/pysup/p/netns/c"
    assert not namespace_flags(spec) & S.CLONE_NEWNET
    assert namespace_flags(spec) != DEFAULT_NAMESPACES  # so the spare (new netns) is not used for it
    assert namespace_flags(spec.replace(netns=None)) & S.CLONE_NEWNET


def test_networks_added_later_are_planned_around_the_existing_ones():
    """A live edit's new networks (BridgeNetworks._plan, no bridges made): the stack's networks keep
    their subnets and gateways, a new one takes the next free block (its own bridge's route, in the
    host's table, is not an overlap), and one overlapping an existing network names both keys."""
    from supervisor.config.model import IpamPool, Network
    from supervisor.net.bridge import BridgeNetworks

    b = BridgeNetworks("p", {"default": Network(key="default", name="p_default")}, "/nonexistent",
                       pool="10.213.0.0/16")
    b.plan(taken=[N("10.213.0.0/24")])
    assert b.subnets == {"default": N("10.213.1.0/24")}
    gw = b.alloc["default"]
    routes = [N("10.213.0.0/24"), N("10.213.1.0/24")]  # the host's, with default's bridge now
    b._plan({"back": Network(key="back", name="p_back")}, routes)
    assert b.subnets == {"default": N("10.213.1.0/24"), "back": N("10.213.2.0/24")}
    assert b.alloc["default"] is gw
    with pytest.raises(IpamError, match=r"networks\.clash\.ipam\.config\.subnet: 10\.213\.1\.0/25 overlaps "
                                        r"networks\.default \(10\.213\.1\.0/24\)"):
        b._plan({"clash": Network(key="clash", name="p_clash", ipam=(IpamPool(subnet="10.213.1.0/25"),))}, routes)


def test_ipv6_subnets_and_addresses():
    got = plan_subnets({"a": None, "b": "fd00:1::/64"}, [N("10.0.0.0/8"), ipaddress.IPv6Network("fd70:7973:7570::/64")],
                       pool="fd70:7973:7570::/48", prefix=64, version=6)
    assert got == {"a": ipaddress.IPv6Network("fd70:7973:7570:1::/64"), "b": ipaddress.IPv6Network("fd00:1::/64")}
    with pytest.raises(IpamError, match=r"networks\.b\.ipam\.config\.subnet: '10\.0\.0\.0/24' is not an IPv6 subnet"):
        plan_subnets({"b": "10.0.0.0/24"}, [], version=6)
    a = Allocator(got["b"], key="b")
    assert str(a.gateway) == "fd00:1::1"
    assert str(a.allocate()) == "fd00:1::2"
    assert str(a.allocate("fd00:1::10")) == "fd00:1::10"
    with pytest.raises(IpamError, match=r"ipv6_address 'fd00:2::1'|ipv6_address fd00:2::1 is not a host address"):
        a.allocate("fd00:2::1")
    with pytest.raises(IpamError, match=r"ipv6_address '10\.0\.0\.1' is not an IPv6 address"):
        a.allocate("10.0.0.1")
    with pytest.raises(IpamError, match=r"networks\.b\.ipam\.config\.gateway: 10\.0\.0\.1 is not in fd00:1::/64"):
        Allocator(got["b"], "10.0.0.1", key="b")


def test_the_ipv4_and_ipv6_ipam_entries_are_told_apart():
    from supervisor.config.model import IpamPool, Network
    from supervisor.net.ipam import pool_of

    n = Network(key="n", name="p_n", enable_ipv6=True,
                ipam=(IpamPool(subnet="fd00:1::/64"), IpamPool(subnet="10.9.0.0/24", gateway="10.9.0.254")))
    assert pool_of(n).subnet == "10.9.0.0/24" and pool_of(n, 6).subnet == "fd00:1::/64"
    assert pool_of(Network(key="n", name="p_n", enable_ipv6=True), 6) is None
