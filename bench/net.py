"""Networking costs: time added to a container start, and published-port throughput through
pysup's proxy against the container address directly.

    .venv/bin/python bench/net.py [--runs 30] [--seconds 3]     (as root; needs wrk and nft)

1. Start overhead: `BridgeNetworks.attach` (namespace, veth pair onto the bridge, address,
   loopback, default route) and `detach`, on a bridge of its own; median and p90 in ms.
   Target: attach under 10 ms.
2. Throughput: `pysup up` of one busybox httpd with `127.0.0.1:PORT:80`; wrk (1 thread,
   10 connections) against 127.0.0.1:PORT (the proxy) and against the container's own address on
   the bridge (direct), alternately `--rounds` times; the medians of requests/s and of the
   per-round ratios (a shared machine's load changes from one second to the next; a ratio of two
   runs side by side varies less). Target: at least 50 % of direct.

Only loopback and the bridge this benchmark makes are used; everything is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from _up import make_rootfs, pysup_up  # noqa: E402


def attach_times(runs: int) -> tuple[list[float], list[float]]:
    from supervisor.config.model import Network, NetworkAttachment
    from supervisor.net.bridge import BridgeNetworks

    d = tempfile.mkdtemp(prefix="pysup-bench-net-")
    b = BridgeNetworks(f"pysupbench{os.getpid()}", {"n": Network(key="n", name="bench_n")}, d)
    svc = types.SimpleNamespace(name="s", networks=(NetworkAttachment(network="n"),))
    up, down = [], []
    try:
        b.setup()
        for i in range(runs):
            t = time.perf_counter()
            b.attach(f"bench-s-{i}", svc, i + 1)
            up.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            b.detach(f"bench-s-{i}")
            down.append((time.perf_counter() - t) * 1000)
    finally:
        b.close()
        shutil.rmtree(d, ignore_errors=True)
    return up, down


def wrk(url: str, seconds: int) -> float:
    out = subprocess.run(["wrk", "-t1", "-c10", f"-d{seconds}s", url], capture_output=True, text=True,
                         check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def _ready(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as c:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return c.recv(100).startswith(b"HTTP/1.")
    except OSError:
        return False


def throughput(seconds: int, rounds: int = 3) -> tuple[list[float], list[float]]:
    """Each wrk run gets target ports of its own in the container: with a connection per request,
    a 3 s run leaves some 15-20 thousand TIME_WAIT sockets toward its (address, port), near the
    28 thousand ephemeral ports, and a run toward the same (address, port) within the next minute
    would crawl (the kernel searching for a free port) -- whichever side ran second would lose."""
    import random

    rootfs = make_rootfs()
    tmp = tempfile.mkdtemp(prefix="pysup-bench-up-")
    targets = random.sample(range(20000, 60000), 2 * rounds)  # proxied ones, then direct ones
    published = []
    for _ in range(rounds):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            published.append(s.getsockname()[1])
    compose = os.path.join(tmp, "compose.yaml")
    servers = " ".join(f"httpd -f -p {t} -h /www &" for t in targets)
    ports = ", ".join(f'"127.0.0.1:{h}:{t}"' for h, t in zip(published, targets))
    with open(compose, "w") as f:
        f.write(f"""name: pysupbench{os.getpid()}
services:
  web:
    x-pysup: {{rootfs: {rootfs}}}
    init: true
    command: ["/bin/sh", "-c", "mkdir /www; echo hello > /www/index.html; {servers} wait"]
    ports: [{ports}]
    networks: [n]
networks:
  n: {{}}
""")
    with pysup_up(compose, tmp, cwd=REPO, stop_timeout=30, remove=[rootfs]) as up:
        addr = None
        deadline = time.monotonic() + 20
        while addr is None and time.monotonic() < deadline:
            up.err.seek(0)
            for line in up.err:
                if '"net.attached"' in line:
                    addr = json.loads(line)["addresses"]["n"]
            time.sleep(0.1)
        if addr is None:
            raise SystemExit("pysup up did not start the container")
        for host, port in [("127.0.0.1", h) for h in published] + [(addr, t) for t in targets[rounds:]]:
            deadline = time.monotonic() + 10
            while not _ready(host, port):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{host}:{port} does not answer")
                time.sleep(0.1)
        proxied, direct = [], []
        for i in range(rounds):
            proxied.append(wrk(f"http://127.0.0.1:{published[i]}/", seconds))
            direct.append(wrk(f"http://{addr}:{targets[rounds + i]}/", seconds))
        return proxied, direct


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    up, down = attach_times(a.runs)
    q = statistics.quantiles(up, n=10)
    print(f"attach (namespace + veth + address + routes): median {statistics.median(up):.2f} ms, "
          f"p90 {q[-1]:.2f} ms (target < 10 ms); detach median {statistics.median(down):.2f} ms")
    proxied, direct = throughput(a.seconds, a.rounds)
    ratios = [p / d for p, d in zip(proxied, direct)]
    print(f"HTTP through pysup's proxy: {statistics.median(proxied):.0f} req/s; direct to the container: "
          f"{statistics.median(direct):.0f} req/s; ratio {statistics.median(ratios):.2f} "
          f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}; target >= 0.50)")


if __name__ == "__main__":
    main()
