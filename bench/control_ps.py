"""`pysup ps` end to end (interpreter start included) against a running stack of N replicas.

    .venv/bin/python bench/control_ps.py [--n 100] [--runs 20]      (as root)

A real `pysup up` of one service (`sleep 1000`, init: true, busybox rootfs) with N replicas, in
temporary state and runtime directories; once all N have started, `pysup -p NAME ps`, `ps
--format json` and `-f FILE ps` (the project name from the compose file) are each run `--runs`
times as fresh processes; median and worst are printed. The target (issue 7): under 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from _up import make_rootfs, pysup_up


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pysup-bench-ps-")
    rootfs = make_rootfs(os.path.join(tmp, "rootfs"))
    project = f"benchps-{uuid.uuid4().hex[:6]}"
    compose = os.path.join(tmp, "compose.yaml")
    with open(compose, "w") as f:
        f.write(f"name: {project}\nservices:\n  app:\n    x-pysup: {{rootfs: {rootfs}}}\n    init: true\n"
                f"    deploy: {{replicas: {args.n}}}\n    command: [/bin/sleep, '1000']\n")
    with pysup_up(compose, tmp, stop_timeout=60) as up:
        env = up.env
        up.wait_started(args.n, 120, ready=lambda: os.path.exists(os.path.join(tmp, "run", project, "control.sock")))
        base = [sys.executable, "-m", "supervisor"]
        for label, cmd in (("pysup -p NAME ps", [*base, "-p", project, "ps"]),
                           ("pysup -p NAME ps --format json", [*base, "-p", project, "ps", "--format", "json"]),
                           ("pysup -f FILE ps", [*base, "-f", compose, "ps"]),
                           # on a terminal: colours (`script` gives it a pty)
                           ("pysup -p NAME ps (tty)", ["script", "-qec", " ".join([*base, "-p", project, "ps"]),
                                                           "/dev/null"])):
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
                times.append((time.perf_counter() - t0) * 1000)
            rows = len(json.loads(out)) if "json" in label else len(out.strip().splitlines()) - 1
            print(f"{label:34} {args.n} replicas ({rows} rows): median {statistics.median(times):.1f} ms, "
                  f"worst {max(times):.1f} ms")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        print(f"{'(python -c pass)':34} {(time.perf_counter() - t0) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
