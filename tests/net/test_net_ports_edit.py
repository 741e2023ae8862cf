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
    f = tmp_path / "compose.yaml"
    f.write_text(f"name: pysupedit\nservices:\n  web:\n    image: busybox\n    ports: [\"{port_line}\"]\n")
    return load([str(f)], environ={}).stack


def listening(host: str, port: int) -> bool:
    with socket.socket() as c:
        c.settimeout(1)
        return c.connect_ex((host, port)) == 0


def test_a_port_moved_to_another_host_address_is_rebound(tmp_path):
    port = 18181
    before, after = stack(tmp_path, f"0.0.0.0:{port}:80"), stack(tmp_path, f"127.0.0.1:{port}:80")

    async def main() -> None:
        sn = StackNetwork(before, BridgeNetworks("pysupedit", used_networks(before), str(tmp_path / "run")))
        sn.network.subnets = {}  # no bridge needed: no replica runs, nothing is added
        sn.network.networks = dict(used_networks(after))
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
