"""`pysup up --metrics ADDR:PORT`: the Prometheus endpoint of a running stack."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from .test_control_commands import wait_socket

pytestmark = pytest.mark.root


def test_metrics_endpoint(up_env):
    u = up_env.up("""
    services:
      app:
        x-pysup: {rootfs: ROOTFS}
        init: true
        mem_limit: 64m
        command: ["/bin/sleep", "1000"]
        healthcheck: {test: ["CMD", "true"], interval: 100ms}
    """, "--metrics", "127.0.0.1:0")
    wait_socket(up_env, u)
    address = u.wait_event("up.metrics")["address"]
    u.wait_event("replica.health", status="healthy")
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        body = r.read().decode()
    lines = {line.split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
             if line and not line.startswith("#")}
    lv = '{replica="1",service="app"}'
    assert lines[f"pysup_replica_up{lv}"] == 1
    assert lines[f"pysup_replica_healthy{lv}"] == 1
    assert lines[f"pysup_replica_restarts_total{lv}"] == 0
    assert lines[f"pysup_replica_oom_kills_total{lv}"] == 0
    assert lines[f"pysup_replica_memory_limit_bytes{lv}"] == 64 * 1024 * 1024
    assert lines[f"pysup_replica_memory_bytes{lv}"] > 0 and lines[f"pysup_replica_pids{lv}"] >= 1
    assert f"pysup_replica_cpu_seconds_total{lv}" in lines
    assert lines['pysup_replicas{state="healthy"}'] == 1
    assert lines["pysup_process_resident_memory_bytes"] > 0 and "pysup_reconciles_total" in lines
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"http://{address}/nope", timeout=10)
    assert exc.value.code == 404
    exc.value.close()
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:  # garbage, then hang up
        s.sendall(b"\x00\xff" * 10000)
    assert u.proc.poll() is None
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        assert r.status == 200
    assert u.stop() == 0
