"""Live reconcile: from the save of `replicas: 100` (from 0) to 100 replicas running, pysup beside
its peers in one run; and the planning cost of 200 services × 10 replicas.

    .venv/bin/python bench/reconcile.py [--runs 3] [--n 100] [--only pysup,crun,runc,plan]   (as root)

Rows:
- pysup: a real `pysup up` (JSON logs) of one service `sleep 1000` with 64 MiB memory and 64 pids
  limits in a busybox rootfs, at 0 replicas; the spec file is saved by rename with `replicas: N`;
  the time is from just before the rename to the N-th `replica.started` event's timestamp (the
  container has exec'd). Between runs the file goes back to 0 and pysup stops them all. This
  includes the watcher's debounce (50 ms), the reload, the plan and the starts.
- crun / runc `run -d`, 8 at a time (the way the DESIGN.md numbers were taken): N detached
  containers of the same rootfs and limits, from the first start to the last one returning;
  then all are killed and deleted. crun runs in a private mount namespace with the empty cgroup2
  mount unmounted (crun 1.8 refuses hybrid mode), as in bench/run_latency.py.
- plan: `reconcile.plan` of 200 services × 10 replicas where a third of them scale, warm (the
  hashes cached on the running replicas, as in pysup) and cold (every hash computed), median of 20.
podman, podman-compose, supervisord and circus are not run here (podman takes 14 s per 100); their
numbers from DESIGN.md are printed beside for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from _up import make_rootfs, pysup_up  # noqa: E402

REFERENCE = {  # DESIGN.md / issue 6, this machine, 100 containers (podman-compose: 50)
    "podman run -d (100)": 14.0, "podman-compose (50 replicas)": 15.0,
    "supervisord / circus (100 plain processes, no isolation)": 1.6,
}


# --- pysup ---------------------------------------------------------------------------------------


def _spec(project: str, rootfs: str, n: int) -> str:
    return textwrap.dedent(f"""\
        name: {project}
        services:
          app:
            x-pysup: {{rootfs: {rootfs}}}
            command: ["sleep", "1000"]
            stop_grace_period: 100ms
            mem_limit: 64m
            pids_limit: 64
            deploy: {{replicas: {n}}}
        """)


def _events(path: str) -> list[dict]:
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def _ts(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def pysup_runs(rootfs: str, n: int, runs: int) -> list[float]:
    work = tempfile.mkdtemp(prefix="pysup-bench-reconcile-")
    project = f"bench-{uuid.uuid4().hex[:6]}"
    compose = os.path.join(work, "compose.yaml")
    with open(compose, "w") as f:
        f.write(_spec(project, rootfs, 0))
    times = []
    phases: list[tuple[float, float]] = []  # (save -> reconcile.plan, save -> first replica.started)

    def wait(pred, timeout=60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            evs = _events(err_path)
            if pred(evs):
                return evs
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("pysup: " + open(err_path, errors="replace").read()[-2000:])
            time.sleep(0.02)

    def save(k: int) -> float:
        tmp = compose + ".tmp"
        with open(tmp, "w") as f:
            f.write(_spec(project, rootfs, k))
        t = time.time()
        os.rename(tmp, compose)
        return t

    with pysup_up(compose, work, args=["--no-color"], cwd=work, stop_timeout=30) as up:
        proc, err_path = up.proc, up.err_path
        wait(lambda evs: any(e.get("event") == "watch.started" for e in evs))
        for run in range(runs):
            seen = len(_events(err_path))
            t0 = save(n)
            evs = wait(lambda evs: sum(e.get("event") == "replica.started" for e in evs[seen:]) >= n)
            started = [e for e in evs[seen:] if e.get("event") == "replica.started"]
            times.append(_ts(started[n - 1]) - t0)
            planned = next(e for e in evs[seen:] if e.get("event") == "reconcile.plan")
            phases.append((_ts(planned) - t0, _ts(started[0]) - t0))
            wait(lambda evs, run=run: sum(e.get("event") == "reconcile.done" for e in evs) >= 2 * run + 1)
            save(0)
            wait(lambda evs, run=run: sum(e.get("event") == "reconcile.done" for e in evs) >= 2 * run + 2)
    if phases:
        print(f"pysup phases (median): save -> plan {statistics.median(p[0] for p in phases) * 1000:.0f} ms "
              f"(debounce, reload, plan), save -> first container running "
              f"{statistics.median(p[1] for p in phases) * 1000:.0f} ms; the rest is the starts")
    return times


# --- crun / runc -----------------------------------------------------------------------------------


def make_bundle(rootfs: str, where: str, tool: str) -> str:
    bundle = os.path.join(where, "bundle")
    os.mkdir(bundle)
    subprocess.run([tool, "spec"], cwd=bundle, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(bundle, "config.json")) as f:
        cfg = json.load(f)
    cfg["root"] = {"path": rootfs, "readonly": True}
    cfg["process"]["args"] = ["sleep", "1000"]
    cfg["process"]["terminal"] = False
    cfg["linux"].setdefault("resources", {})
    cfg["linux"]["resources"]["memory"] = {"limit": 64 << 20}
    cfg["linux"]["resources"]["pids"] = {"limit": 64}
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(cfg, f)
    return bundle


def oci_worker(tool: str, bundle: str, n: int, hybrid_fix: bool) -> float:
    """`--oci-worker TOOL BUNDLE N`: N `run -d` 8 at a time; prints the seconds; cleans up."""
    if hybrid_fix and os.path.ismount("/sys/fs/cgroup/unified"):
        subprocess.run(["umount", "/sys/fs/cgroup/unified"], check=True)
    ids = [f"pysup-bench-{uuid.uuid4().hex[:10]}" for _ in range(n)]

    def one(cid: str) -> int:
        return subprocess.run([tool, "run", "-d", "--bundle", bundle, cid], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode

    t = time.perf_counter()
    with ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(one, ids))
    took = time.perf_counter() - t
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda cid: subprocess.run([tool, "delete", "-f", cid], capture_output=True), ids))
    if any(codes):
        raise RuntimeError(f"{tool} run -d failed {sum(1 for c in codes if c)} times")
    return took


def oci_runs(tool: str, rootfs: str, n: int, runs: int) -> list[float]:
    work = tempfile.mkdtemp(prefix=f"pysup-bench-{tool}-")
    try:
        bundle = make_bundle(rootfs, work, tool)
        out = []
        for _ in range(runs):
            cmd = [sys.executable, os.path.abspath(__file__), "--oci-worker", tool, bundle, str(n)]
            if tool == "crun":
                cmd = ["unshare", "-m", "--propagation", "private", *cmd, "--hybrid-fix"]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}")
            out.append(float(p.stdout.strip()))
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- plan ------------------------------------------------------------------------------------------


def plan_times(reps: int = 20) -> tuple[float, float]:
    import attrs

    from supervisor.config.model import Dependency, Service, Stack
    from supervisor.supervise import reconcile as R

    services = [Service(name=f"s{i}", image="busybox", command=("run", str(i)), replicas=10,
                        environment={f"K{j}": str(j) for j in range(10)},
                        depends_on=(Dependency(service=f"s{i - 1}"),) if i % 10 else ())
                for i in range(200)]
    before = Stack(name="p", project_dir="/p", files=(), services={s.name: s for s in services})
    obs = R.ObservedStack({s.name: R.ObservedService(s.name, [R.ObservedReplica(i, *R.hashes(s))
                                                              for i in range(1, 11)]) for s in services})

    def edited() -> Stack:  # a fresh load: new Service objects, a third of them scaled
        return Stack(name="p", project_dir="/p", files=(), services={
            s.name: attrs.evolve(s, replicas=12 if k % 3 == 0 else 10) for k, s in enumerate(services)})

    cold, warm = [], []
    for _ in range(reps):
        after = edited()
        R._hash_cache.clear()
        t = time.perf_counter()
        R.plan(after, obs)
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        p = R.plan(after, obs)
        warm.append(time.perf_counter() - t)
        assert len(p.of("scale-up")) == 67
    return statistics.median(cold), statistics.median(warm)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--only", default="")
    ap.add_argument("--oci-worker", nargs=3, metavar=("TOOL", "BUNDLE", "N"))
    ap.add_argument("--hybrid-fix", action="store_true")
    args = ap.parse_args()
    if args.oci_worker:
        tool, bundle, n = args.oci_worker
        print(oci_worker(tool, bundle, int(n), args.hybrid_fix))
        return 0
    only = set(filter(None, args.only.split(",")))

    def want(row: str) -> bool:
        return not only or row in only

    if want("plan"):
        cold, warm = plan_times()
        print(f"plan 200 services x 10 replicas: {warm * 1000:.2f} ms warm, {cold * 1000:.2f} ms cold "
              "(every hash computed)  [target < 10 ms]")
    if not (want("pysup") or want("crun") or want("runc")):
        return 0
    if os.geteuid() != 0:
        print("the container rows need root", file=sys.stderr)
        return 1
    rootfs = make_rootfs()
    rows = []
    try:
        if want("pysup"):
            t = pysup_runs(rootfs, args.n, args.runs)
            rows.append((f"pysup: save replicas: {args.n} -> {args.n} running", t))
        for tool in ("crun", "runc"):
            if want(tool) and shutil.which(tool):
                try:
                    rows.append((f"{tool} run -d x{args.n}, 8 at a time", oci_runs(tool, rootfs, args.n, args.runs)))
                except RuntimeError as exc:
                    print(f"{tool}: {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    base = statistics.median(rows[0][1]) if rows else None
    print(f"\n0 -> {args.n} containers running, {args.runs} runs each, median (min-max), ratio to the first row:")
    for name, ts in rows:
        med = statistics.median(ts)
        print(f"  {name:<48} {med:6.3f} s  ({min(ts):.3f}-{max(ts):.3f})  x{med / base:.2f}")
    print("  for reference (DESIGN.md, same machine, not run here):")
    for name, secs in REFERENCE.items():
        print(f"  {name:<48} {secs:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
