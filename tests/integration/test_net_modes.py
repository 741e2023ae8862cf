"""network_mode: service:NAME shares another service's network namespace (its loopback too), with
and without stack networks; none keeps a loopback-only namespace."""

from __future__ import annotations

import re

import pytest

from .test_net_bridge import net_env  # noqa: F401 - the fixture

pytestmark = [pytest.mark.root, pytest.mark.slow]

BASE = """
services:
  web:
    x-pysup: {rootfs: ROOTFS}
    init: true
    command: ["/bin/sh", "-c", "mkdir /www; echo from-web > /www/index.html; exec httpd -f -p 127.0.0.1:8080 -h /www"]
    NETWORKS
  sidecar:
    image: host
    depends_on: [web]
    restart: "no"
    network_mode: service:web
    command: ["/bin/sh", "-c", "for i in $$(seq 50); do curl -sf --noproxy '*' -m 1 http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; exit 1"]
  alone:
    image: host
    restart: "no"
    network_mode: none
    command: ["/bin/sh", "-c", "cat /proc/net/dev | grep -c :"]
"""


@pytest.mark.parametrize("networks", ["", "networks: [front]\nnetworks:\n  front: {}"])
def test_service_network_mode_shares_the_namespace(net_env, networks):  # noqa: F811
    text = BASE.replace("NETWORKS", networks.split("\n")[0]) + "\n".join(networks.split("\n")[1:]) + "\n"
    u = net_env.up(text)
    ev = u.wait_event("replica.exited", timeout=20, service="sidecar")
    u.wait_event("replica.exited", timeout=20, service="alone")
    out = re.sub(r" +\| ", " | ", u.stdout())
    assert ev["exit_code"] == 0, out + u.stderr()[-2000:]
    assert "sidecar-1 | from-web" in out
    assert "alone-1 | 1" in out  # lo only
    assert u.stop() == 0


def test_unknown_service_in_network_mode(net_env):  # noqa: F811
    u = net_env.up("""
services:
  a:
    x-pysup: {rootfs: ROOTFS}
    command: ["true"]
    network_mode: service:nope
""")
    assert u.wait(15) != 0
    assert "services.a.network_mode" in u.stderr() and "nope" in u.stderr()
