"""Pull and unpack of a ~50 MB image from a loopback registry: pysup beside its peers, as ratios;
then a container's start from the pulled image beside one from a directory rootfs.

    .venv/bin/python bench/image_pull.py [--runs 5] [--mb 50]    (as root)

The image: the busybox rootfs (scripts/make-busybox-rootfs.sh) plus two layers of files (half
random, half text, so gzip has some work), built as an OCI layout and pushed with skopeo to
Debian's docker-registry on a free loopback port. Each run pulls into an empty store:
- pysup: `pysup pull -q` (download, verify, unpack the layers into the store);
- skopeo + umoci: `skopeo copy docker://... oci:DIR` then `umoci unpack` (a flat rootfs);
- podman: `podman pull` into a fresh `--root` (overlay driver), when installed.
Start: `pysup run --rm IMAGE /bin/true` vs `pysup run --rm --rootfs DIR /bin/true` (median).
Peers: bench/install-peers.sh and scripts/install-system.sh (docker-registry, skopeo); umoci from Debian.
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
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests", "images"))

from conftest import Registry  # noqa: E402  (the tests' registry fixture class, reused)
from ocitools import make_oci_layout, tar_bytes, tar_of_dir  # noqa: E402

PY = sys.executable


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}...: {r.stderr.strip()[-400:]}")
    return dt


def filler(mb: int, seed: int) -> bytes:
    import random

    rng = random.Random(seed)
    files = []
    per = 1 << 20
    for i in range(mb):
        data = rng.randbytes(per // 2) + (f"line {i} of pysup's benchmark image\n" * (per // 72)).encode()
        files.append((f"data/{seed}/f{i:03}", "f", data))
    return tar_bytes([("data", "d", None), (f"data/{seed}", "d", None), *files])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=int, default=50)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    work = Path(tempfile.mkdtemp(prefix="pysup-bench-pull-"))
    reg = None
    try:
        rootfs = work / "rootfs"
        subprocess.run(["bash", os.path.join(REPO, "scripts/make-busybox-rootfs.sh"), str(rootfs)], check=True)
        half = args.mb // 2
        make_oci_layout(work / "layout", [tar_of_dir(str(rootfs)), filler(half, 1), filler(args.mb - half, 2)],
                        tag="1")
        size = sum(f.stat().st_size for f in (work / "layout/blobs/sha256").iterdir())
        (work / "reg").mkdir()
        reg = Registry(work / "reg")
        reg.push(work / "layout", "bench/big", "1")
        ref = f"{reg.host}/bench/big:1"
        print(f"image: {ref}, {size / 1e6:.1f} MB compressed, {args.mb} MB of filler; {args.runs} runs each")
        rows: dict[str, list[float]] = {"pysup pull": [], "skopeo copy + umoci unpack": [], "podman pull": []}
        for i in range(args.runs):
            state = work / f"state{i}"
            env = dict(os.environ, PYTHONPATH=REPO, PYSUP_STATE_DIR=str(state), PYSUP_RUNTIME_DIR=str(work / "run"))
            rows["pysup pull"].append(timed([PY, "-m", "supervisor", "pull", "-q", ref], env))
            if shutil.which("skopeo") and shutil.which("umoci"):
                t = timed(["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}",
                           f"oci:{work}/oci{i}:1"])
                t += timed(["umoci", "unpack", "--image", f"{work}/oci{i}:1", f"{work}/bundle{i}"])
                rows["skopeo copy + umoci unpack"].append(t)
            if shutil.which("podman"):
                rows["podman pull"].append(timed(["podman", "--root", f"{work}/podman{i}", "--runroot",
                                                  f"{work}/podrun{i}", "--storage-driver", "overlay", "pull", "-q",
                                                  "--tls-verify=false", ref]))
                subprocess.run(["podman", "--root", f"{work}/podman{i}", "--runroot", f"{work}/podrun{i}",
                                "--storage-driver", "overlay", "system", "reset", "-f"], capture_output=True)
            if i < args.runs - 1:
                shutil.rmtree(state, ignore_errors=True)
        base = statistics.median(rows["pysup pull"])
        for name, ts in rows.items():
            if ts:
                m = statistics.median(ts)
                print(f"  {name:28} {m * 1000:8.0f} ms   x{m / base:.2f} of pysup")
        # start from the pulled image vs from the directory rootfs
        env = dict(os.environ, PYTHONPATH=REPO, PYSUP_STATE_DIR=str(work / f"state{args.runs - 1}"),
                   PYSUP_RUNTIME_DIR=str(work / "run"))
        starts = {"pysup run IMAGE": [PY, "-m", "supervisor", "run", "--rm", ref, "/bin/true"],
                  "pysup run --rootfs DIR": [PY, "-m", "supervisor", "run", "--rm", "--rootfs", str(rootfs), "/bin/true"]}
        res = {}
        for name, cmd in starts.items():
            for _ in range(2):
                timed(cmd, env)
            res[name] = statistics.median(timed(cmd, env) for _ in range(max(args.runs, 10)))
        for name, m in res.items():
            print(f"  {name:28} {m * 1000:8.1f} ms   x{m / res['pysup run --rootfs DIR']:.2f} of --rootfs")
    finally:
        if reg is not None:
            reg.stop()
        subprocess.run(["umount", "-R", "-l", str(work)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
