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
