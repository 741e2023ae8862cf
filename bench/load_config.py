"""How long loading a large stack takes: pysup's loader beside the compose tools that parse the same file.

    .venv/bin/python bench/load_config.py [--services 200] [--runs 20]

Generates a realistic N-service compose file (ports, environment, healthchecks, limits, networks,
depends_on, YAML anchors) and prints a table of medians:
- pysup in-process: `supervisor.config.load.load()` (what `pysup up` pays on each reload);
- whole commands, interpreter start included: `pysup config -q` and `docker-compose config -q`
  (compose 1.29, also Python; `bench/install-peers.sh` installs it).
Target (issue 2): the in-process load of 200 services under 200 ms.
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
sys.path.insert(0, os.path.dirname(HERE))


def make_stack(n: int) -> str:
    out = [
        "x-common: &common",
        "  image: host",
        "  restart: unless-stopped",
        "  stop_grace_period: 5s",
        "  logging: {driver: json-file, options: {max-size: 10m}}",
        "networks:",
        "  front: {}",
        "  back:",
        "    internal: true",
        "volumes:",
        "  data: {}",
        "services:",
    ]
    for i in range(n):
        # Each service depends on one of ten base services (a 200-long chain makes podman-compose
        # 1.0.3 spin for minutes in its dependency resolution).
        deps = f"\n    depends_on:\n      svc{i % 10}: {{condition: service_started}}" if i >= 10 else ""
        out.append(f"""  svc{i}:
    <<: *common
    command: ["/bin/sh", "-c", "exec sleep infinity"]
    environment:
      INDEX: "{i}"
      MODE: ${{MODE:-production}}
      URL: http://svc{max(i - 1, 0)}:80/
    ports: ["{10000 + i}:80", {{target: 443, published: "{20000 + i}", protocol: tcp}}]
    volumes: ["data:/data/{i}", "/tmp:/host-tmp:ro", {{type: tmpfs, target: /run, tmpfs: {{size: 64m}}}}]
    networks: [front, back]
    healthcheck: {{test: "true", interval: 30s, timeout: 5s, retries: 3, start_period: 10s}}
    deploy:
      replicas: 2
      restart_policy: {{condition: on-failure, delay: 1s, max_attempts: 5}}
    cpus: 0.5
    mem_limit: 128m
    pids_limit: 64
    ulimits: {{nofile: {{soft: 1024, hard: 4096}}}}
    labels: {{team: bench, index: "{i}"}}{deps}""")
    return "\n".join(out) + "\n"


def median_ms(fn, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def command_ms(argv: list[str], runs: int, cwd: str) -> float | str:
    def once():
        r = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError(r.stderr.decode(errors="replace").strip().splitlines()[-1:])
    try:
        once()  # warm the page cache; also tells whether the peer accepts the file
    except (RuntimeError, OSError) as exc:
        return f"failed: {exc}"
    return median_ms(once, runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()

    from supervisor.config.load import load

    with tempfile.TemporaryDirectory(prefix="pysup-bench-") as tmp:
        path = os.path.join(tmp, "docker-compose.yml")
        with open(path, "w") as f:
            f.write(make_stack(args.services))
        env = {"PATH": os.environ.get("PATH", "")}

        load([path], environ=env)  # import and schema compilation are paid once per process
        rows: list[tuple[str, float | str]] = [
            (f"pysup load() in-process, {args.services} services", median_ms(lambda: load([path], environ=env), args.runs)),
        ]
        pysup = os.path.join(os.path.dirname(sys.executable), "pysup")
        whole = [("pysup config -q", [pysup, "config", "-q"])]
        if shutil.which("docker-compose"):
            whole.append(("docker-compose config -q (compose 1.29)", ["docker-compose", "config", "-q"]))
        else:
            rows.append(("docker-compose config -q (compose 1.29)", "not installed (bench/install-peers.sh)"))
        for label, argv in whole:
            rows.append((label, command_ms(argv, args.runs, tmp)))

    peer = next((v for label, v in rows if label.startswith("docker-compose") and isinstance(v, float)), None)
    print(f"\n{'what':<44} {'median ms':>10} {'vs docker-compose':>18}")
    print("-" * 74)
    for label, value in rows:
        if isinstance(value, float):
            ratio = f"{value / peer:.2f}x" if peer and not label.startswith("pysup load") else ""
            print(f"{label:<44} {value:>10.1f} {ratio:>18}")
        else:
            print(f"{label:<44} {value}")
    print(f"\n{args.services} services; median of {args.runs} runs each; {os.cpu_count()} cores; "
          f"python {sys.version.split()[0]}")
    print("podman-compose 1.0.3 (Debian 12) is left out: it has no `config` command, and its "
          "`--dry-run up` queries podman for every container (over 60 s here).")


if __name__ == "__main__":
    main()
