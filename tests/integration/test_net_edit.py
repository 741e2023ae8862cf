"""Networks and published ports changed by a live edit (issue 8): a service added on a new network
with a port gets both, a changed `ports:` moves the listener, a dropped network goes after its last
member; a bad edit (port in use, overlapping subnet) is reported with its key and the running
stack is kept. Only 127.0.0.1 and the bridges the test makes are used."""

from __future__ import annotations

import socket
import time

import pytest

from .test_net_bridge import net_env  # noqa: F401 - the fixture
from .test_net_ports import free_port, get
from .test_reconcile_scale import reconciled, save

pytestmark = [pytest.mark.root, pytest.mark.slow]


def httpd(name: str, body: str, port_line: str, extra: str = "", listen: int = 80) -> str:
    return f"""
  {name}:
    x-pysup: {{rootfs: ROOTFS}}
    init: true
    stop_grace_period: 200ms
    deploy: {{update_config: {{monitor: 100ms}}}}  # a replacement counts as done at once
    command: ["/bin/sh", "-c", "mkdir /www; echo {body} > /www/index.html; exec httpd -f -p {listen} -h /www"]
    ports: ["{port_line}"]
{extra}"""


def serves(port: int, body: str, u, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = get(port)
            if got == body:
                return
        except OSError as e:
            got = repr(e)
        assert time.monotonic() < deadline, f"127.0.0.1:{port}: {got}\n{u.stderr()[-2000:]}"
        time.sleep(0.05)


def refused(port: int) -> bool:
    try:
        get(port)
    except OSError:
        return True
    return False


def test_edits_add_and_remove_networks_and_ports(net_env):  # noqa: F811
    p1, p2, p3 = free_port(), free_port(), free_port()
    u = net_env.up("services:" + httpd("web", "web", f"127.0.0.1:{p1}:80"))
    u.wait_event("watch.started", timeout=20)
    default = u.wait_event("net.bridge_created", network="default")
    serves(p1, "web", u)

    # a new service on a new network, publishing a port; web's port moves from p1 to p3
    save(net_env, "services:" + httpd("web", "web", f"127.0.0.1:{p3}:80")
         + httpd("api", "api", f"127.0.0.1:{p2}:80", "    networks: [back]\n")
         + "networks:\n  back: {}\n")
    done = reconciled(u, 1)
    assert done["ok"], done
    assert u.count("net.bridge_created", network="back") == 1
    serves(p2, "api", u)
    serves(p3, "web", u)
    assert refused(p1)
    api = next(e for e in u.events() if e.get("event") == "net.attached" and "-api-" in e["container"])
    assert set(api["addresses"]) == {"back"}

    # a bad edit: the new port is taken; nothing changes
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        save(net_env, "services:" + httpd("web", "web", f"127.0.0.1:{busy}:80")
             + httpd("api", "api", f"127.0.0.1:{p2}:80", "    networks: [back]\n")
             + "networks:\n  back: {}\n")
        ev = u.wait_event("reload.invalid", timeout=20)
    assert ev["problem"] == f"services.web.ports[0]: 127.0.0.1:{busy}/tcp: Address already in use", ev
    # a bad edit: a new network overlapping the default one
    save(net_env, "services:" + httpd("web", "web", f"127.0.0.1:{p3}:80", "    networks: [default, clash]\n")
         + "networks:\n  clash:\n    ipam: {config: [{subnet: " + default["subnet"] + "}]}\n")
    u.wait_for(lambda e: e.get("event") == "reload.invalid" and "clash" in e["problem"], 20, "the overlap")
    problem = [e for e in u.events() if e.get("event") == "reload.invalid"][-1]["problem"]
    assert problem == f"networks.clash.ipam.config.subnet: {default['subnet']} overlaps networks.default " \
                      f"({default['subnet']})", problem
    assert u.count("net.bridge_created", network="clash") == 0
    assert u.count("reconcile.done") == 1
    serves(p3, "web", u)
    serves(p2, "api", u)

    # the same host port, another target port: api is replaced, the listener stays and follows
    save(net_env, "services:" + httpd("web", "web", f"127.0.0.1:{p3}:80")
         + httpd("api", "api81", f"127.0.0.1:{p2}:81", "    networks: [back]\n", listen=81)
         + "networks:\n  back: {}\n")
    done = reconciled(u, 2)
    assert done["ok"] and done["results"] == ["replace api: ok"], done
    u.wait_event("net.port_updated", timeout=20, port=p2, target=81)
    serves(p2, "api81", u)

    # api and its network dropped: the bridge goes after api's replica
    save(net_env, "services:" + httpd("web", "web", f"127.0.0.1:{p3}:80"))
    done = reconciled(u, 3)
    assert done["ok"], done
    u.wait_event("net.bridge_removed", timeout=20, network="back")
    assert refused(p2)
    serves(p3, "web", u)
    from supervisor.net.bridge import bridge_name

    assert bridge_name(net_env.project, "back") not in net_env.links()
    assert u.stop() == 0


def ephemeral_web(env: str = "one") -> str:
    # `ports: ["80"]` but on loopback only (the tests publish nothing on the host's other addresses):
    # the same entry without a host port, its host address given
    return f"""
services:
  web:
    x-pysup: {{rootfs: ROOTFS}}
    init: true
    stop_grace_period: 200ms
    deploy: {{replicas: 2, update_config: {{monitor: 100ms}}}}
    environment: {{EDIT: {env}}}
    command: ["/bin/sh", "-c", "mkdir /www; awk '$$2 ~ /-web-[0-9]+(-r[0-9]+)?$$/ {{print $$2; exit}}' /etc/hosts > /www/index.html; exec httpd -f -p 80 -h /www"]
    ports: ["127.0.0.1::80"]
"""


def test_an_ephemeral_port_is_shown_by_ps_balanced_kept_over_an_edit_and_closed_with_its_entry(net_env):  # noqa: F811
    import json

    from .test_control_commands import ok, pysup

    u = net_env.up(ephemeral_web())
    u.wait_event("watch.started", timeout=20)
    logged = u.wait_event("net.port_published", service="web", ephemeral=True)
    port = logged["port"]
    assert logged["host"] == "127.0.0.1" and logged["target"] == 80 and logged["protocol"] == "tcp"
    assert port not in (0, 80)
    rows = json.loads(ok(pysup(net_env, "ps", "--format", "json")))
    assert [r["ports"] for r in rows] == [[{"target": 80, "published": [port, port], "host_ip": "127.0.0.1",
                                            "protocol": "tcp", "ephemeral": True}]] * 2
    table = ok(pysup(net_env, "ps")).splitlines()
    assert sum(f"127.0.0.1:{port}->80/tcp" in line for line in table) == 2, table

    def replicas_seen(want: set[str]) -> set[str]:
        seen: set[str] = set()
        deadline = time.monotonic() + 10
        while not want <= seen and time.monotonic() < deadline:
            try:
                seen.add(get(port))
            except OSError:
                time.sleep(0.05)  # httpd not listening yet
        return seen

    both = {f"{net_env.project}-web-1", f"{net_env.project}-web-2"}
    assert replicas_seen(both) == both

    # another environment: both replicas replaced, the port and its listener stay
    save(net_env, ephemeral_web("two"))
    done = reconciled(u, 1)
    assert done["ok"] and done["results"] == ["replace web: ok"], done
    assert u.count("net.port_published") == 1 and u.count("net.port_unpublished") == 0
    rows = json.loads(ok(pysup(net_env, "ps", "--format", "json")))
    assert {r["ports"][0]["published"][0] for r in rows} == {port}
    both = {f"{net_env.project}-web-1-r1", f"{net_env.project}-web-2-r1"}  # the replacements
    assert replicas_seen(both) == both

    # the entry removed: the port is closed
    save(net_env, ephemeral_web("two").replace('    ports: ["127.0.0.1::80"]\n', ""))
    done = reconciled(u, 2)
    assert done["ok"], done
    u.wait_event("net.port_unpublished", port=port, host="127.0.0.1")
    assert refused(port)
    rows = json.loads(ok(pysup(net_env, "ps", "--format", "json")))
    assert [r["ports"] for r in rows] == [[], []]
    assert u.stop() == 0
