"""Crash → replacement running: how fast `pysup up`'s supervisor restarts a killed container.

    .venv/bin/python bench/restart_latency.py [--runs 30]      (as root; builds a busybox rootfs)

One service, `restart: always`, backoff base 0 (the "first restart, no backoff" case of the
targets: under 20 ms; the default base adds 100 ms, like the Docker engine), a 64 MiB memory and
64 pids limit (its cgroup stays across restarts). Each run SIGKILLs the container's PID 1
through its pidfd, then times until the replacement has exec'd (the replica is `running` with a
new pid): the exit seen through the pidfd, the restart decision, the runtime's clean-up, a new
start through the warm zygote. Measured in-process (the real StackSupervisor, runtime and cgroups
driver); prints median and p90 in ms, and the peers' numbers from DESIGN.md beside it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

PEERS = {"podman --restart=always": 220.0, "circus (fastest setting)": 84.0, "supervisord": 1000.0}


async def measure(rootfs: str, runs: int) -> list[float]:
    import textwrap

    import trio

    from supervisor import app
    from supervisor.cgroups import open_manager
    from supervisor.cgroups.events import open_cgroup_events
    from supervisor.config.load import load
    from supervisor.runtime.launcher import open_runtime
    from supervisor.supervise.backend import ManagerCgroups
    from supervisor.supervise.project import ProjectFiles
    from supervisor.supervise.state import ReplicaState as S
    from supervisor.supervise.supervisor import StackSupervisor

    work = tempfile.mkdtemp(prefix="pysup-bench-restart-")
    env = {"PYSUP_STATE_DIR": f"{work}/state", "PYSUP_RUNTIME_DIR": f"{work}/run"}
    compose = os.path.join(work, "compose.yaml")
    with open(compose, "w") as f:
        f.write(textwrap.dedent(f"""
            name: bench-restart
            x-pysup: {{backoff: {{base: 0s, cap: 0s, reset_after: 0s}}}}
            services:
              app:
                x-pysup: {{rootfs: {rootfs}}}
                command: ["sleep", "1000"]
                restart: always
                stop_grace_period: 100ms
                mem_limit: 64m
                pids_limit: 64
        """))
    stack = load([compose], environ={}).stack
    files = ProjectFiles(stack.name, env)
    files.lock()
    manager = open_manager()
    times: list[float] = []
    try:
        send, _recv = trio.open_memory_channel(0)
        async with open_runtime(state_root=f"{work}/run/containers") as rt, open_cgroup_events(manager, send) as w:
            cgroups = ManagerCgroups(manager, w)
            sup = StackSupervisor(stack, runtime=rt, cgroups=cgroups, make_spec=app.spec_builder(stack, cgroups, files, env))
            async with trio.open_nursery() as n:
                n.start_soon(sup.run)
                await sup.wait_until(lambda: sup.replicas.get("app"))
                r = sup.replicas["app"][0]
                for i in range(runs + 2):
                    await sup.wait_until(lambda: r.status.state is S.RUNNING and r.handle is not None)
                    old = r.status.pid
                    await trio.sleep(0.05)
                    t0 = time.perf_counter()
                    r.handle.kill()
                    await sup.wait_until(lambda: r.status.state is S.RUNNING and r.status.pid != old)
                    if i >= 2:  # warm-up
                        times.append((time.perf_counter() - t0) * 1000)
                sup.request_stop()
        files.finish_record()
    finally:
        files.unlock()
        if manager.exists(stack.name):
            manager.remove(stack.name)
        manager.prune()
        shutil.rmtree(work, ignore_errors=True)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("restart_latency: needs root", file=sys.stderr)
        return 1
    import structlog
    import trio

    from supervisor import log

    log.configure("console", "error")
    structlog.get_logger()
    rootfs = tempfile.mkdtemp(prefix="pysup-bench-rootfs-")
    try:
        subprocess.run(["bash", os.path.join(REPO, "scripts/make-busybox-rootfs.sh"), rootfs], check=True)
        os.chmod(rootfs, 0o755)
        times = trio.run(measure, rootfs, args.runs)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    times.sort()
    med = statistics.median(times)
    p90 = times[int(len(times) * 0.9) - 1]
    print(f"{'crash -> replacement running':32} {'median':>8} {'p90':>8}   (ms, {len(times)} runs)")
    print(f"{'pysup up (no backoff)':32} {med:8.1f} {p90:8.1f}")
    for name, ms in PEERS.items():
        print(f"{name:32} {ms:8.0f} {'':8}   {ms / med:.0f}x pysup's median (DESIGN.md)")
    print(f"target: under 20 ms -> {'met' if med < 20 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
