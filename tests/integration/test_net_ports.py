"""Published ports through pysup's proxy, on 127.0.0.1 only: one host port balanced over every
replica; a scale-down takes a replica out of rotation with no failed request."""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.request

import pytest

from .test_net_bridge import net_env  # noqa: F401 - the fixture

pytestmark = [pytest.mark.root, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack(port: int, replicas: int) -> str:
    return f"""
services:
  web:
    x-pysup: {{rootfs: ROOTFS}}
    init: true
    stop_grace_period: 1s
    deploy: {{replicas: {replicas}}}
    # a graceful server: on SIGTERM it finishes what it has (busybox httpd alone would not)
    command: ["/bin/sh", "-c", "mkdir /www; awk '$$2 ~ /-web-[0-9]+$$/ {{print $$2; exit}}' /etc/hosts > /www/index.html; httpd -f -p 80 -h /www & trap 'sleep 0.3; kill $$!; exit 0' TERM; wait"]
    ports: ["127.0.0.1:{port}:80"]
    networks: [front]
networks:
  front: {{}}
"""


def get(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/", timeout=3) as r:
        return r.read().decode().strip()


def test_one_published_port_reaches_every_replica_and_scale_down_fails_no_request(net_env):  # noqa: F811
    port = free_port()
    u = net_env.up(stack(port, 3))
    u.wait_event("net.port_published", timeout=20, port=port)
    for i in (1, 2, 3):
        u.wait_event("replica.started", timeout=20, service="web", replica=i)
    seen: set[str] = set()
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        try:
            seen.add(get(port))
        except OSError:
            time.sleep(0.05)  # httpd not listening yet
    assert len(seen) == 3 and all(re.fullmatch(rf"{net_env.project}-web-[123]", s) for s in seen), seen
    assert len({get(port) for _ in range(6)}) == 3  # round-robin: every one in turn

    failures: list[str] = []
    bodies: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                bodies.append(get(port))
            except OSError as e:
                failures.append(repr(e))

    t = threading.Thread(target=hammer)
    t.start()
    try:
        time.sleep(0.3)
        net_env.write(stack(port, 2))  # the live reconcile removes web-3
        u.wait_event("net.detached", timeout=20, container=f"{net_env.project}-web-3")
        n = len(bodies)
        deadline = time.monotonic() + 10
        while len(bodies) < n + 10 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join()
    assert not failures, failures[:5]
    assert set(bodies[n:]) == {f"{net_env.project}-web-1", f"{net_env.project}-web-2"}
    assert len(bodies) > 20
    assert u.stop() == 0
    with pytest.raises(OSError):
        get(port)


def test_a_host_port_in_use_is_reported_before_anything_starts(net_env):  # noqa: F811
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        u = net_env.up(stack(port, 1))
        assert u.wait(15) == 1
    assert f"services.web.ports[0]: 127.0.0.1:{port}/tcp: Address already in use" in u.stderr()
    assert "Traceback" not in u.stderr()
    assert u.count("replica.started") == 0


def test_ports_are_published_without_any_networks_key(net_env):  # noqa: F811
    """`ports:` in a stack that declares no network: published through the default network."""
    port = free_port()
    u = net_env.up(f"""
services:
  web:
    x-pysup: {{rootfs: ROOTFS}}
    init: true
    command: ["/bin/sh", "-c", "mkdir /www; echo hello-default > /www/index.html; exec httpd -f -p 80 -h /www"]
    ports: ["127.0.0.1:{port}:80"]
""")
    u.wait_event("net.port_published", timeout=20, port=port)
    u.wait_event("replica.started", timeout=20, service="web")
    deadline = time.monotonic() + 10
    while True:
        try:
            assert get(port) == "hello-default"
            break
        except OSError:
            assert time.monotonic() < deadline, u.stderr()[-2000:]
            time.sleep(0.05)
    assert u.stop() == 0
    with pytest.raises(OSError):
        get(port)


UDP = """
services:
  echo:
    image: host
    init: true
    stop_grace_period: 1s
    command: ["/usr/bin/python3", "-c", "import socket\\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\\ns.bind(('0.0.0.0', 7000))\\nwhile True:\\n    d, a = s.recvfrom(100)\\n    s.sendto(b'echo:' + d, a)"]
    ports: ["127.0.0.1:PORT:7000/udp"]
    networks: [front]
networks:
  front: {}
"""


def test_udp_port_is_forwarded_and_answers_come_back(net_env):  # noqa: F811
    port = free_port()
    u = net_env.up(UDP.replace("PORT", str(port)))
    u.wait_event("replica.started", timeout=20, service="echo")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(0.2)
        deadline = time.monotonic() + 10
        while True:
            c.sendto(b"hi", ("127.0.0.1", port))
            try:
                data = c.recv(100)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, u.stderr()[-2000:]
    assert data == b"echo:hi"
    assert u.stop() == 0
