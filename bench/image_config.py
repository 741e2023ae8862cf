"""The cost of applying image configs to a stack on the supervisor's trio thread: each live edit
runs the image gate (`images.live.LiveImages._apply`: which services wait for a pull, then
`images.config.effective_stack`), and `pysup up` runs `effective_stack` once before starting.

    .venv/bin/python bench/image_config.py [--services 200] [--images 200] [--runs 50]

A store (a temporary directory, not the real one) holds `--images` images with Docker-sized
configs (Entrypoint, Cmd, Env, ExposedPorts, Healthcheck, StopSignal) and five layers each; the
stack has `--services` services naming them (`pull_policy: missing`). Rows, median and p90 of
`--runs` calls: `effective_stack` alone, and the gate's whole `_apply` after an edit (a fake
supervisor: only the image work is timed). No peers: Docker Compose and Podman do this in
their daemon per container start; the figure to watch is the time the event loop is blocked.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)


def make_store(root: str, n: int) -> list[str]:
    """An index.json of `n` images (written directly: no layers on disk, the code timed only
    reads the index). Returns their references."""
    images, sizes, refs = {}, {}, []
    for i in range(n):
        layers = [f"sha256:{(i * 5 + k):064x}" for k in range(5)]
        for layer in layers:
            sizes[layer] = 1 << 20
        config = {
            "Entrypoint": ["/docker-entrypoint.sh"], "Cmd": ["server", f"--port={8000 + i}"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    f"APP_VERSION=1.{i}.0", "LANG=C.UTF-8", "GOSU_VERSION=1.17", "TZ=UTC"],
            "WorkingDir": "/srv", "User": "app", "ExposedPorts": {"8080/tcp": {}, "8443/tcp": {}},
            "Healthcheck": {"Test": ["CMD-SHELL", "wget -q -O- localhost:8080/health"], "Interval": 10_000_000_000,
                            "Timeout": 3_000_000_000, "Retries": 3},
            "StopSignal": "SIGQUIT" if i % 2 else "SIGRTMIN+3",
            "Labels": {f"org.opencontainers.image.l{k}": "x" * 40 for k in range(3)},
        }
        ref = f"registry.example:5000/bench/app{i}:1.{i}"
        refs.append(ref)
        images[ref] = {"id": f"sha256:{i:064x}", "layers": layers, "size": 5 << 20, "created": time.time(),
                       "source": f"docker://{ref}", "digest": f"sha256:{i + 1:064x}", "config": config}
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"version": 1, "images": images, "layer_sizes": sizes}, f, indent=1, sort_keys=True)
    return refs


def make_stack(refs: list[str], n: int):
    from supervisor.config.model import Service, Stack

    services = {f"s{i}": Service(name=f"s{i}", image=refs[i % len(refs)], pull_policy="missing") for i in range(n)}
    return Stack(name="pysup-bench", project_dir="/", files=(), services=services)


class Sup:  # the supervisor side of the gate: takes what it is handed
    def __init__(self, stack):
        self.stack = stack

    def edits_pending(self, pending: bool) -> None:
        pass

    def submit(self, stack) -> None:
        self.stack = stack


def timed(fn, runs: int) -> tuple[float, float]:
    fn()  # warm: imports
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return statistics.median(times) * 1e3, times[int(len(times) * 0.9) - 1] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()

    from supervisor.images.config import effective_stack
    from supervisor.images.live import LiveImages
    from supervisor.images.store import ImageStore

    with tempfile.TemporaryDirectory(prefix="pysup-bench-images-") as d:
        refs = make_store(d, args.images)
        index_kb = os.path.getsize(os.path.join(d, "index.json")) / 1024
        stack = make_stack(refs, args.services)
        store = ImageStore(d)
        gate = LiveImages(Sup(stack), store=store)
        gate.newest = stack
        gate.applied = effective_stack(stack, store)

        rows = [("effective_stack", timed(lambda: effective_stack(stack, store), args.runs)),
                ("live edit gate (_apply)", timed(lambda: gate._apply(edit=True), args.runs))]
        print(f"{args.services} image services, {args.images} images in the store (index.json {index_kb:.0f} KiB), "
              f"{args.runs} runs")
        for name, (med, p90) in rows:
            print(f"  {name:<28} median {med:7.2f} ms   p90 {p90:7.2f} ms")


if __name__ == "__main__":
    main()
