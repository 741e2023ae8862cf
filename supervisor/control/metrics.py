"""`pysup up --metrics ADDR:PORT`: a Prometheus endpoint (text format, prometheus-client) with
per-replica CPU, memory, pids, restarts, OOM kills, health and state, and the supervisor's own
figures (its process: CPU, memory, fds; replicas per state; reconciles).

    await nursery.start(serve_metrics, sup, "127.0.0.1:9100")

A small HTTP/1.0 responder on trio: `GET /metrics` (or `/`) answers the exposition; anything else
404. Each scrape reads the replicas' cgroup counters then (no sampling task).
"""

from __future__ import annotations

from typing import Any

import structlog
import trio

from ..errors import PysupError
from ..supervise.state import LIVE

log = structlog.get_logger()

MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (every address), `[V6]:PORT`."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise PysupError(f"--metrics {text}: expected ADDR:PORT (e.g. 127.0.0.1:9100 or :9100)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class StackCollector:
    """A prometheus-client collector over a live `StackSupervisor`."""

    def __init__(self, sup: Any):
        self.sup = sup

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["service", "replica"]
        cpu = CounterMetricFamily("pysup_replica_cpu_seconds", "CPU time used by the replica's cgroup", labels=labels)
        mem = GaugeMetricFamily("pysup_replica_memory_bytes", "Memory used by the replica's cgroup", labels=labels)
        limit = GaugeMetricFamily("pysup_replica_memory_limit_bytes", "The replica's memory limit", labels=labels)
        pids = GaugeMetricFamily("pysup_replica_pids", "Processes in the replica's cgroup", labels=labels)
        restarts = CounterMetricFamily("pysup_replica_restarts", "Restarts by the restart policy", labels=labels)
        ooms = CounterMetricFamily("pysup_replica_oom_kills", "OOM kills in the replica's cgroup", labels=labels)
        healthy = GaugeMetricFamily("pysup_replica_healthy", "1 healthy, 0 otherwise (only with a health check)",
                                    labels=labels)
        up = GaugeMetricFamily("pysup_replica_up", "1 while the replica's process runs", labels=labels)
        state = GaugeMetricFamily("pysup_replica_state", "1 for the replica's current state",
                                  labels=[*labels, "state"])
        per_state: dict[str, int] = {}
        manager = getattr(self.sup.cgroups, "manager", None)
        for r in self.sup.all_replicas():
            lv = [r.service.name, str(r.index)]
            st = r.status
            per_state[str(st.state)] = per_state.get(str(st.state), 0) + 1
            restarts.add_metric(lv, st.restart_count)
            ooms.add_metric(lv, st.oom_kills)
            up.add_metric(lv, 1 if st.state in LIVE else 0)
            state.add_metric([*lv, str(st.state)], 1)
            if st.health is not None:
                healthy.add_metric(lv, 1 if st.health == "healthy" else 0)
            if r.service.resources.memory:
                limit.add_metric(lv, r.service.resources.memory)
            if manager is not None and not r.done.is_set():
                try:
                    s = manager.stats(r.cgroup)
                except Exception:  # noqa: BLE001 - gone between listing and reading
                    continue
                if s.cpu_usage_us is not None:
                    cpu.add_metric(lv, s.cpu_usage_us / 1e6)
                if s.memory_current is not None:
                    mem.add_metric(lv, s.memory_current)
                if s.pids_current is not None:
                    pids.add_metric(lv, s.pids_current)
        replicas = GaugeMetricFamily("pysup_replicas", "Replicas per state", labels=["state"])
        for k, v in sorted(per_state.items()):
            replicas.add_metric([k], v)
        reconciles = CounterMetricFamily("pysup_reconciles", "Live reconciles finished")
        reconciles.add_metric([], getattr(self.sup, "reconciles", 0))
        yield from (cpu, mem, limit, pids, restarts, ooms, healthy, up, state, replicas, reconciles)


def registry_for(sup: Any):
    from prometheus_client import CollectorRegistry, ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StackCollector(sup))
    ProcessCollector(namespace="pysup", registry=registry)  # pysup's own CPU, memory, fds
    return registry


async def _handle(registry: Any, stream: trio.SocketStream) -> None:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async with stream:
        buf = b""
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                while b"\r\n\r\n" not in buf and b"\n\n" not in buf and len(buf) <= MAX_REQUEST:
                    data = await stream.receive_some(4096)
                    if not data:
                        break
                    buf += data
        except trio.TooSlowError:
            return
        except (trio.BrokenResourceError, OSError):
            return
        parts = buf.split(b"\r\n", 1)[0].split()
        if len(parts) >= 2 and parts[0] in (b"GET", b"HEAD") and parts[1].split(b"?")[0] in (b"/metrics", b"/"):
            try:
                body = generate_latest(registry)
                status, ctype = b"200 OK", CONTENT_TYPE_LATEST.encode()
            except Exception as exc:  # noqa: BLE001 - a scrape must not take the stack down
                body, status, ctype = f"error: {exc!r}\n".encode(), b"500 Internal Server Error", b"text/plain"
        else:
            body, status, ctype = b"not found: try /metrics\n", b"404 Not Found", b"text/plain"
        head = (b"HTTP/1.0 " + status + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
        try:
            await stream.send_all(head + (body if parts[:1] != [b"HEAD"] else b""))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


async def serve_metrics(sup: Any, address: str, *,
                        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    import functools

    host, port = parse_address(address)
    registry = registry_for(sup)
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise PysupError(f"--metrics {address}: cannot listen: {exc.strerror or exc}") from None
    bound = listeners[0].socket.getsockname()[1]
    log.info("up.metrics", address=f"{host}:{bound}", path="/metrics")
    task_status.started(bound)
    await trio.serve_listeners(functools.partial(_handle, registry), listeners)
