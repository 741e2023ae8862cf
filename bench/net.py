"""Networking costs: time added to a container start, and published-port throughput through
pysup's proxy against the container address directly.

    .venv/bin/python bench/net.py [--runs 30] [--seconds 3]     (as root; needs wrk and nft)

1. Start overhead: `BridgeNetworks.attach` (namespace, veth pair onto the bridge, address,
   loopback, default route) and `detach`, on a bridge of its own; median and p90 in ms.
   Target: attach under 10 ms.
2. Throughput: `pysup up` of one busybox httpd with `127.0.0.1:PORT:80`; wrk (1 thread,
   10 connections) against 127.0.0.1:PORT (the proxy) and against the container's own address on
   the bridge (direct); requests/s and the ratio. Target: at least 50 % of direct.

Only loopback and the bridge this benchmark makes are used; everything is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
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


def throughput(seconds: int) -> tuple[float, float]:
    rootfs = tempfile.mkdtemp(prefix="pysup-bench-rootfs-")
    tmp = tempfile.mkdtemp(prefix="pysup-bench-up-")
    subprocess.run(["bash", os.path.join(REPO, "scripts/make-busybox-rootfs.sh"), rootfs], check=True)
    os.chmod(rootfs, 0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    compose = os.path.join(tmp, "compose.yaml")
    with open(compose, "w") as f:
        f.write(f"""name: pysupbench{os.getpid()}
services:
  web:
    x-pysup: {{rootfs: {rootfs}}}
    init: true
    command: ["/bin/sh", "-c", "mkdir /www; echo hello > /www/index.html; exec httpd -f -p 80 -h /www"]
    ports: ["127.0.0.1:{port}:80"]
    networks: [n]
networks:
  n: {{}}
""")
    env = dict(os.environ, PYSUP_STATE_DIR=os.path.join(tmp, "state"), PYSUP_RUNTIME_DIR=os.path.join(tmp, "run"))
    err = open(os.path.join(tmp, "stderr"), "w+")
    p = subprocess.Popen([sys.executable, "-m", "supervisor", "--log-format", "json", "up", "-f", compose],
                         stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=REPO)
    try:
        addr = None
        deadline = time.monotonic() + 20
        while addr is None and time.monotonic() < deadline:
            err.seek(0)
            for line in err:
                if '"net.attached"' in line:
                    addr = json.loads(line)["addresses"]["n"]
            time.sleep(0.1)
        if addr is None:
            raise SystemExit("pysup up did not start the container")
        for url in (f"http://127.0.0.1:{port}/", f"http://{addr}/"):
            for _ in range(100):
                try:
                    subprocess.run(["wrk", "-t1", "-c1", "-d1s", url], capture_output=True, check=True, timeout=5)
                    break
                except subprocess.CalledProcessError:
                    time.sleep(0.1)
        return wrk(f"http://127.0.0.1:{port}/", seconds), wrk(f"http://{addr}/", seconds)
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(30)
        err.close()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(rootfs, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--seconds", type=int, default=3)
    a = ap.parse_args()
    up, down = attach_times(a.runs)
    q = statistics.quantiles(up, n=10)
    print(f"attach (namespace + veth + address + routes): median {statistics.median(up):.2f} ms, "
          f"p90 {q[-1]:.2f} ms (target < 10 ms); detach median {statistics.median(down):.2f} ms")
    proxied, direct = throughput(a.seconds)
    print(f"HTTP through pysup's proxy: {proxied:.0f} req/s; direct to the container: {direct:.0f} req/s; "
          f"ratio {proxied / direct:.2f} (target >= 0.50)")


if __name__ == "__main__":
    main()
