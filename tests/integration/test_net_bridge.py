"""Stack networks for real (issue 8): bridges, veths, names in /etc/hosts, internal networks,
isolation, cleanup (also after pysup is killed). Traffic stays inside the bridges these tests make;
nothing is sent anywhere else (an internal network is checked by its routing table, not by trying)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]


def pysup_tables() -> set[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.split()[-1].startswith("pysup-")}


@pytest.fixture
def net_env(up_env):
    """up_env, plus: no link or nftables table of this test's project remains (removed here, and
    the test fails, if one does)."""
    if not shutil.which("nft"):
        pytest.skip("needs nft (apt-get install nftables; scripts/install-system.sh)")
    yield up_env
    for u in up_env.ups:
        if u.proc.poll() is None:
            u.proc.send_signal(signal.SIGINT)
            u.wait(15)
    deadline = time.monotonic() + 3
    while (left := up_env.links()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for name in left:
        subprocess.run(["ip", "link", "del", name], capture_output=True)
    table = f"pysup-{up_env.project}"
    tables = pysup_tables() & {table}
    for name in tables:
        subprocess.run(["nft", "delete", "table", "ip", name], capture_output=True)
    assert not left, f"pysup links left behind: {left}"
    assert not tables, f"pysup nftables tables left behind: {tables}"


WEB_CLIENT = """
services:
  web:
    x-pysup: {rootfs: ROOTFS}
    init: true
    command: ["/bin/sh", "-c", "mkdir -p /www && echo served-by-$$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"]
    networks: [front]
  client:
    image: host  # Debian's static busybox wget crashes on every lookup; curl reads the generated /etc/hosts
    depends_on: [web]
    restart: "no"
    command: ["/bin/sh", "-c", "echo mac $$(cat /sys/class/net/eth0/address); for i in $$(seq 50); do curl -sf --noproxy '*' -m 1 http://web/ && exit 0; sleep 0.1; done; exit 1"]
    networks: [front]
networks:
  front: {}
"""


def test_a_client_fetches_from_a_service_by_name(net_env):
    u = net_env.up(WEB_CLIENT)
    ev = u.wait_event("replica.exited", timeout=20, service="client")
    assert ev["exit_code"] == 0, u.stdout() + u.stderr()[-2000:]
    assert "client-1 | served-by-" in u.stdout()
    # the MAC follows the address (02:42 and its 4 bytes, as Docker): a reused address keeps it
    addr = u.wait_event("net.attached", service="client")["addresses"]["front"]
    mac = "02:42:" + ":".join(f"{int(b):02x}" for b in addr.split("."))
    assert f"client-1 | mac {mac}\n" in re.sub(r" +\| ", " | ", u.stdout())
    assert f"pysup-{net_env.project}" in pysup_tables()
    assert u.stop() == 0


NO_NETWORKS = """
services:
  web:
    x-pysup: {rootfs: ROOTFS}
    init: true
    command: ["/bin/sh", "-c", "mkdir -p /www && echo served-by-$$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"]
  client:
    image: host
    depends_on: [web]
    restart: "no"
    command: ["/bin/sh", "-c", "cat /etc/resolv.conf; for i in $$(seq 50); do curl -sf --noproxy '*' -m 1 http://web/ && exit 0; sleep 0.1; done; exit 1"]
  alone:
    x-pysup: {rootfs: ROOTFS}
    network_mode: none
    restart: "no"
    command: ["/bin/sh", "-c", "echo links: $$(ls /sys/class/net)"]
"""


def test_a_stack_without_networks_puts_its_services_on_the_default_bridge(net_env):
    """No `networks:` key at all: as in Docker Compose, the services share the stack's `default`
    network and reach each other by name (the embedded DNS server); `network_mode: none` stays
    loopback only."""
    from supervisor.net.bridge import bridge_name

    u = net_env.up(NO_NETWORKS)
    ev = u.wait_event("replica.exited", timeout=20, service="client")
    out = re.sub(r" +\| ", " | ", u.stdout())
    assert ev["exit_code"] == 0, out + u.stderr()[-2000:]
    assert "client-1 | served-by-" in out
    assert "client-1 | nameserver 10." in out  # the DNS server on the default network's gateway
    u.wait_event("replica.exited", timeout=20, service="alone")
    assert "alone-1 | links: lo\n" in re.sub(r" +\| ", " | ", u.stdout())
    assert bridge_name(net_env.project, "default") in net_env.links()
    assert f"pysup-{net_env.project}" in pysup_tables()
    assert u.stop() == 0


IPV6 = """
services:
  web:
    x-pysup: {rootfs: ROOTFS}
    init: true
    command: ["/bin/sh", "-c", "mkdir -p /www && echo v6-web > /www/index.html && exec httpd -f -p 80 -h /www"]
    networks:
      v6net: {ipv6_address: "SUBNET10"}
  client:
    image: host
    depends_on: [web]
    restart: "no"
    command: ["/bin/sh", "-c", "for i in $$(seq 50); do curl -6 -sf --noproxy '*' -m 1 http://web/ && exit 0; sleep 0.1; done; exit 1"]
    networks: [v6net]
networks:
  v6net:
    enable_ipv6: true
    ipam:
      config: [{subnet: "SUBNET/64"}]
"""


def test_an_ipv6_network_gives_addresses_routes_and_aaaa_names(net_env):
    subnet = f"fd70:7973:7571:{int(net_env.project[-4:], 16):x}::"  # a subnet of its own (other runs)
    u = net_env.up(IPV6.replace("SUBNET", subnet))
    ev = u.wait_event("replica.exited", timeout=20, service="client")
    assert ev["exit_code"] == 0, u.stdout() + u.stderr()[-2000:]
    assert "client-1 | v6-web" in re.sub(r" +\| ", " | ", u.stdout())  # fetched over IPv6, by name (AAAA)
    web = u.wait_event("net.attached", container=f"{net_env.project}-web-1")
    assert web["addresses6"] == {"v6net": f"{subnet}10"}
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    assert f"table ip6 pysup-{net_env.project}" in out
    assert u.stop() == 0
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    assert f"pysup-{net_env.project}" not in out


ISOLATION = """
services:
  a:
    x-pysup: {rootfs: ROOTFS}
    init: true
    command: ["/bin/sh", "-c", "cat /proc/net/route; echo ROUTES-END; mkdir /www; echo a > /www/index.html; exec httpd -f -p 80 -h /www"]
    networks: [inner]
  b:
    x-pysup: {rootfs: ROOTFS}
    init: true
    command: ["/bin/sh", "-c", "exec httpd -f -p 80 -h /"]
    networks:
      other:
        ipv4_address: 10.213.250.9
  probe:
    image: host
    depends_on: [a, b]
    restart: "no"
    command: ["/bin/sh", "-c", "sleep 0.3; curl -sf --noproxy '*' -m 1 -o /dev/null http://a/ && echo REACHED-A; curl -sf --noproxy '*' -m 1 -o /dev/null http://10.213.250.9/ || echo NOT-B"]
    networks: [inner]
  probe2:
    image: host
    depends_on: [b]
    restart: "no"
    command: ["/bin/sh", "-c", "sleep 0.3; curl -sf --noproxy '*' -m 1 -o /dev/null http://10.213.250.9/ || echo NOT-B2"]
    networks: [outer]
networks:
  inner:
    internal: true
  outer: {}
  other:
    ipam:
      config: [{subnet: 10.213.250.0/24}]
"""


def test_internal_network_has_no_route_out_and_networks_are_isolated(net_env):
    third = int(net_env.project[-2:], 16)  # a fixed subnet of its own (other runs may be going on)
    u = net_env.up(ISOLATION.replace("10.213.250.", f"10.215.{third}."))
    ev = u.wait_event("replica.exited", timeout=20, service="probe")
    u.wait_event("replica.exited", timeout=20, service="probe2")
    out = re.sub(r" +\| ", " | ", u.stdout())  # the prefix is padded to the longest name
    assert ev["exit_code"] == 0, out + u.stderr()[-2000:]
    assert "probe-1 | REACHED-A" in out
    assert "probe-1 | NOT-B" in out  # b's address is in another network: no route to it
    assert "probe2-1 | NOT-B2" in out  # a route through the host, but no forwarding between pysup bridges
    routes = [line.split("| ", 1)[1].strip() for line in out.splitlines() if line.startswith("a-1 ")]
    table = routes[: routes.index("ROUTES-END")]
    assert table and not any(r.split()[1] == "00000000" for r in table[1:]), table  # no default route
    assert u.stop() == 0


def test_everything_goes_on_stop_and_after_a_crash(net_env):
    u = net_env.up(WEB_CLIENT)
    u.wait_event("net.attached", timeout=20)
    u.wait_event("replica.started", timeout=20, service="web")
    made = net_env.links()
    assert f"pysup-{net_env.project}" in pysup_tables()
    assert len([n for n in made if n.startswith("pysup-")]) == 1 and len(made) >= 2, made
    u.proc.send_signal(signal.SIGKILL)
    u.wait(10)
    # the containers die with their cgroups at the next start, and the network leftovers too
    u2 = net_env.up()
    u2.wait_event("replica.exited", timeout=20, service="client")
    assert "removed network leftovers" in u2.stderr()
    assert u2.stop() == 0
    deadline = time.monotonic() + 3
    while net_env.links() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not net_env.links()
    assert f"pysup-{net_env.project}" not in pysup_tables()


@pytest.mark.parametrize("networks, service_net, message", [
    ("  a: {ipam: {config: [{subnet: 10.214.0.0/16}]}}\n  b: {ipam: {config: [{subnet: 10.214.7.0/24}]}}",
     "[a, b]", "networks.b.ipam.config.subnet: 10.214.7.0/24 overlaps networks.a"),
    ("  a: {}", "[nope]", "services.s"),
])
def test_bad_network_input_is_reported_before_anything_starts(net_env, networks, service_net, message):
    u = net_env.up(f"""
services:
  s:
    x-pysup: {{rootfs: ROOTFS}}
    command: ["true"]
    networks: {service_net}
networks:
{networks}
""")
    assert u.wait(15) == 1
    assert message in u.stderr() and "Traceback" not in u.stderr()
    assert u.count("replica.started") == 0
    assert not net_env.links()


DNS = """
services:
  web:
    x-pysup: {rootfs: ROOTFS}
    init: true
    deploy: {replicas: 2}
    command: ["/bin/sh", "-c", "exec sleep 60"]
    networks:
      front: {aliases: [www]}
  client:
    x-pysup: {rootfs: ROOTFS}
    depends_on: [web]
    restart: "no"
    command:
      - /bin/sh
      - -c
      - |
        n() { nslookup -type=a $$1 | grep -c '^Address: [0-9.]*$$'; }
        for i in $$(seq 50); do [ "$$(n web)" = 2 ] && break; sleep 0.1; done
        echo "web=$$(n web) web.1=$$(n web.1) www=$$(n www) client=$$(n client)"
        cat /etc/resolv.conf
    networks: [front]
networks:
  front: {}
"""


def test_the_embedded_dns_server_answers_service_replica_and_alias_names(net_env):
    u = net_env.up(DNS)
    ev = u.wait_event("replica.exited", timeout=20, service="client")
    out = re.sub(r" +\| ", " | ", u.stdout())
    assert ev["exit_code"] == 0, out + u.stderr()[-2000:]
    assert "client-1 | web=2 web.1=1 www=2 client=1" in out, out
    assert re.search(r"client-1 \| nameserver 10\.\d+\.\d+\.1$", out, re.M), out
    assert u.stop() == 0
