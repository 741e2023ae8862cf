"""Who the DNS server names: eligible replicas only (unhealthy, stopping, exited ones drop out),
aliases per network, names of the stack with nobody eligible (NXDOMAIN, never forwarded)."""

import ipaddress
import types

from supervisor.config.model import Network, NetworkAttachment
from supervisor.net.bridge import BridgeNetworks, Endpoint, Membership
from supervisor.config.load import load
from supervisor.net.stack import StackNetwork, used_networks
from supervisor.supervise.state import ReplicaState as S


def replica(state, stop=False):
    return types.SimpleNamespace(status=types.SimpleNamespace(state=state), stop_requested=stop)


def setup():
    nets = {"front": Network(key="front", name="p_front"), "back": Network(key="back", name="p_back")}
    b = BridgeNetworks("p", nets, "/nonexistent")
    for i, (svc, idx, key, aliases) in enumerate([("web", 1, "front", ("www",)), ("web", 2, "front", ("www",)),
                                                  ("web", 3, "front", ("www",)), ("db", 1, "back", ())]):
        ep = Endpoint(f"p-{svc}-{idx}", "/x", svc, idx, {key: aliases})
        ep.members.append(Membership(key, "eth0", ipaddress.IPv4Address(f"10.0.0.{i + 2}"), "h"))
        b.endpoints[ep.container_id] = ep
    stack = types.SimpleNamespace(services={
        "web": types.SimpleNamespace(name="web", networks=(NetworkAttachment(network="front", aliases=("www",)),)),
        "db": types.SimpleNamespace(name="db", networks=(NetworkAttachment(network="back"),)),
        "cache": types.SimpleNamespace(name="cache", networks=(NetworkAttachment(network="front"),))})
    sn = StackNetwork(stack, b)
    sn.replicas = {"p-web-1": replica(S.HEALTHY), "p-web-2": replica(S.UNHEALTHY), "p-web-3": replica(S.RUNNING),
                   "p-db-1": replica(S.RUNNING)}
    return sn


def test_only_eligible_replicas_are_named():
    sn = setup()
    assert sorted(sn.lookup("front", "web")) == ["10.0.0.2", "10.0.0.4"]
    assert sorted(sn.lookup("front", "www")) == ["10.0.0.2", "10.0.0.4"]
    assert sn.lookup("front", "web.2") == []  # unhealthy
    sn.replicas["p-web-3"] = replica(S.RUNNING, stop=True)  # stopping
    assert sn.lookup("front", "web") == ["10.0.0.2"]
    sn.replicas["p-web-2"] = replica(S.HEALTHY)  # healthy again
    assert sorted(sn.lookup("front", "web")) == ["10.0.0.2", "10.0.0.3"]
    assert sn.lookup("front", "p-web-1") == ["10.0.0.2"]


def test_names_are_per_network_and_unknown_ones_are_forwarded():
    sn = setup()
    assert sn.lookup("front", "db") is None  # db is not in front: not ours there
    assert sn.lookup("back", "db") == ["10.0.0.5"]
    assert sn.lookup("front", "cache") == []  # a service of the network, nothing running yet
    assert sn.lookup("front", "example.org") is None


def test_every_service_without_network_mode_is_on_the_default_network(tmp_path):
    f = tmp_path / "compose.yaml"
    f.write_text("""
services:
  web: {image: busybox}
  client: {image: busybox}
  alone: {image: busybox, network_mode: none}
  host: {image: busybox, network_mode: host}
  side: {image: busybox, network_mode: "service:web"}
""")
    stack = load([str(f)], environ={}).stack
    assert list(used_networks(stack)) == ["default"]
    assert [a.network for a in stack.services["web"].networks] == ["default"]
    f.write_text("""
services:
  web: {image: busybox, networks: [front]}
  host: {image: busybox, network_mode: host}
networks:
  front: {}
  unused: {}
""")
    assert list(used_networks(load([str(f)], environ={}).stack)) == ["front"]
    f.write_text("services:\n  host: {image: busybox, network_mode: host}\n")
    assert used_networks(load([str(f)], environ={}).stack) == {}
