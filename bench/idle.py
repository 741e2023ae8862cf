"""pysup's own memory and CPU with N idle replicas, each with a 30 s health check.

    .venv/bin/python bench/idle.py [--n 100] [--window 60] [--no-net]      (as root)

A real `pysup up` (the CLI, as a user runs it) of one service, `sleep 1000` in a busybox rootfs,
N replicas, a health check (`CMD true`) every 30 s, and by default a network (a bridge, a veth and
a network namespace per replica, the embedded DNS: what most stacks have) in temporary state and
runtime directories. Once every replica has started and a few seconds have passed, it prints the
RSS and PSS (shared pages split between their users) of pysup's process and of its zygote (and of
the idle spare the zygote keeps cloned ahead, a container-to-be); the sum of the RSS, and pysup's
RSS plus the zygote's private pages (what the two take together, shared pages counted once); then
pysup's CPU (user + system of both) over `--window` seconds as a share of one core. Targets
(issue 5): under 60 MB RSS in all, under 2 % of one core, no helper process per container. Peers (issue 5, measured on this kind of host):
supervisord 26 MB and circusd 33 MB for 100 plain processes; podman a 2 MB conmon per container.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid

from _up import make_rootfs, pysup_up

PEERS = {"supervisord (100 processes)": 26.0, "circusd (100 processes)": 33.0, "podman conmon x100": 200.0}


def _status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB
    return 0


def _pss(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def _uss(pid: int) -> int:
    """Pages only this process maps (Private_Clean + Private_Dirty)."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def _in_container(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        return any(line.startswith("NSpid:") and len(line.split()) > 2 for line in f)


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--window", type=float, default=60.0, help="seconds of CPU accounting")
    ap.add_argument("--no-net", action="store_true", help="no network: the default private namespaces")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("idle: needs root", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="pysup-bench-idle-")
    rootfs = make_rootfs(os.path.join(tmp, "rootfs"))
    project = f"benchidle-{uuid.uuid4().hex[:6]}"
    compose = os.path.join(tmp, "compose.yaml")
    net = "" if args.no_net else "    networks: [front]\n"
    with open(compose, "w") as f:
        f.write(f"name: {project}\nservices:\n  app:\n    x-pysup: {{rootfs: {rootfs}}}\n"
                f"    deploy: {{replicas: {args.n}}}\n    command: [/bin/sleep, '100000']\n"
                f"    healthcheck: {{test: [CMD, 'true'], interval: 30s, start_period: 0s}}\n{net}"
                + ("" if args.no_net else "networks:\n  front: {}\n"))
    launcher = os.environ.get("IDLE_LAUNCH", "").split() or None
    with pysup_up(compose, tmp, launcher=launcher, stop_timeout=120) as up:
        up.wait_started(args.n, 180, interval=0.2)
        time.sleep(5)  # the start-up's garbage settles
        pythons = [p for p in _children(up.proc.pid) if "supervisor.runtime.zygote" in _cmdline(p)]
        zygote = [p for p in pythons if not _in_container(p)]
        spares = [p for p in pythons if _in_container(p)]  # cloned from the zygote: same cmdline
        containers = [p for p in _children(up.proc.pid) if p not in zygote and p not in spares]
        procs = {"pysup": up.proc.pid, **{f"zygote {p}": p for p in zygote}}
        print(f"{args.n} idle replicas, health check every 30 s, {'no network' if args.no_net else 'one network'}; "
              f"{len(containers)} container processes are pysup's children (no helper process between)")
        total_rss = total_pss = 0
        for label, pid in procs.items():
            rss, pss = _status(pid, "VmRSS"), _pss(pid)
            total_rss += rss
            total_pss += pss
            print(f"  {label:24} RSS {rss / 1024:6.1f} MB   PSS {pss / 1024:6.1f} MB")
        for pid in spares:
            print(f"  {'(spare ' + str(pid) + ')':24} RSS {_status(pid, 'VmRSS') / 1024:6.1f} MB   "
                  f"PSS {_pss(pid) / 1024:6.1f} MB   (a container-to-be, not counted)")
        once = _status(up.proc.pid, "VmRSS") + sum(_uss(p) for p in zygote)
        print(f"  {'total':24} RSS {total_rss / 1024:6.1f} MB   PSS {total_pss / 1024:6.1f} MB   "
              f"target: under 60 MB RSS -> {'met' if total_rss / 1024 < 60 else 'NOT met'}")
        print(f"  {'total, shared pages once':24} RSS {once / 1024:6.1f} MB   (pysup's RSS + the zygote's private "
              f"pages: the interpreter and libraries they share counted once) -> "
              f"{'met' if once / 1024 < 60 else 'NOT met'}")
        for name, mb in PEERS.items():
            print(f"  {name:24} {mb:6.0f} MB")
        pids = list(procs.values())
        c0, t0 = sum(_cpu(p) for p in pids), time.monotonic()
        time.sleep(args.window)
        c1, t1 = sum(_cpu(p) for p in pids), time.monotonic()
        share = (c1 - c0) / (t1 - t0) * 100
        print(f"  CPU over {t1 - t0:.0f} s: {share:.2f} % of one core   target: under 2 % -> "
              f"{'met' if share < 2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
