"""A live edit that moves a published port to another host address (0.0.0.0:P → 127.0.0.1:P): the
old listener is closed before the new one binds (both at once would clash). Run in a network
namespace of the test's own (a thread that unshared one), so the wildcard address is only its
loopback."""

from __future__ import annotations

import os
import socket
import threading

import pytest
import trio

from supervisor import syscalls as S
from supervisor.config.load import load
from supervisor.net.bridge import BridgeNetworks
from supervisor.net.stack import StackNetwork, used_networks

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace)")


def in_own_netns(fn):
    out: dict = {}

    def body() -> None:
        try:
            S.unshare(S.CLONE_NEWNET)
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test
            out["error"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def stack(tmp_path, port_line: str):
    return stack_text(tmp_path, f"  web:\n    image: busybox\n    ports: [\"{port_line}\"]\n")


def stack_text(tmp_path, text: str):
    f = tmp_path / "compose.yaml"
    f.write_text("name: pysupedit\nservices:\n" + text)
    return load([str(f)], environ={}).stack


def bridgeless(tmp_path, first, networks_from):
    """A StackNetwork for `first` that makes no bridge (no replica runs, nothing is added), with
    the networks of `networks_from`."""
    sn = StackNetwork(first, BridgeNetworks("pysupedit", used_networks(first), str(tmp_path / "run")))
    sn.network.subnets = {}
    sn.network.networks = dict(used_networks(networks_from))
    return sn


def listening(host: str, port: int) -> bool:
    with socket.socket() as c:
        c.settimeout(1)
        return c.connect_ex((host, port)) == 0


def test_a_port_moved_to_another_host_address_is_rebound(tmp_path):
    port = 18181
    before, after = stack(tmp_path, f"0.0.0.0:{port}:80"), stack(tmp_path, f"127.0.0.1:{port}:80")

    async def main() -> None:
        sn = bridgeless(tmp_path, before, after)
        await sn.bind()
        async with trio.open_nursery() as n:
            await n.start(sn.run)
            assert set(sn.proxies) == {("tcp", "0.0.0.0", port)}
            await sn.apply(after)
            assert set(sn.proxies) == {("tcp", "127.0.0.1", port)}
            assert listening("127.0.0.1", port)  # (no trio worker thread: it would stay in this netns)
            n.cancel_scope.cancel()
        sn.close_sockets()

    in_own_netns(lambda: trio.run(main))


def test_an_ephemeral_port_is_kept_over_edits_that_keep_its_entry_and_closed_with_it(tmp_path):
    """`ports: ["80"]`: one port the kernel picks (TCP and UDP), keyed by the service and entry, so
    an edit of something else (another entry, the replicas) keeps the same listener; an edit that
    drops the entry, or the service, closes it."""
    web = "  web:\n    image: busybox\n    ports: {ports}\n    deploy: {{replicas: {n}}}\n"
    api = "  api:\n    image: busybox\n    ports: [\"80\"]\n"
    first = stack_text(tmp_path, web.format(ports='["80", "127.0.0.1::53/udp"]', n=1) + api)
    kept = stack_text(tmp_path, web.format(ports='["127.0.0.1::53/udp", "8", "80"]', n=3) + api)
    dropped = stack_text(tmp_path, web.format(ports='["8"]', n=3))

    def udp_bound(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return True
            return False

    async def main() -> None:
        sn = bridgeless(tmp_path, first, first)
        await sn.bind()
        async with trio.open_nursery() as n:
            await n.start(sn.run)
            assert set(sn.proxies) == {("tcp", "0.0.0.0", ("ephemeral", "web", 80, 0)),
                                       ("udp", "127.0.0.1", ("ephemeral", "web", 53, 0)),
                                       ("tcp", "0.0.0.0", ("ephemeral", "api", 80, 0))}
            web80 = sn.host_port(first.services["web"], 0)
            dns = sn.host_port(first.services["web"], 1)
            api80 = sn.host_port(first.services["api"], 0)
            assert web80[0] == "0.0.0.0" and dns[0] == "127.0.0.1" and web80[1] not in (0, 80)
            assert len({web80[1], api80[1]}) == 2
            assert listening("127.0.0.1", web80[1]) and listening("127.0.0.1", api80[1])
            assert udp_bound(dns[1])
            proxies = dict(sn.proxies)

            await sn.apply(kept)  # entries reordered, one added, replicas changed: same ports
            assert sn.host_port(kept.services["web"], 2) == web80
            assert sn.host_port(kept.services["web"], 0) == dns
            assert sn.host_port(kept.services["api"], 0) == api80
            for key, proxy in proxies.items():
                assert sn.proxies[key] is proxy  # the very listeners: not rebound
            assert listening("127.0.0.1", web80[1])
            eight = sn.host_port(kept.services["web"], 1)
            assert eight is not None and eight[1] not in (web80[1], api80[1], 0)

            ends = [sn._scopes[id(p)][1] for p in proxies.values()]
            await sn.apply(dropped)  # web's 80 and 53/udp entries and api removed: closed
            assert set(sn.proxies) == {("tcp", "0.0.0.0", ("ephemeral", "web", 8, 0))}
            assert sn.host_port(dropped.services["web"], 0) == eight
            with trio.fail_after(5):
                for ended in ends:
                    await ended.wait()  # a TCP port's relay thread closes its socket as it ends
            assert not listening("127.0.0.1", web80[1]) and not listening("127.0.0.1", api80[1])
            assert not udp_bound(dns[1])
            assert listening("127.0.0.1", eight[1])
            n.cancel_scope.cancel()
        sn.close_sockets()

    in_own_netns(lambda: trio.run(main))
