"""Start-to-exit of `/bin/true` in a busybox rootfs: pysup beside its peers, side by side, as ratios.

    .venv/bin/python bench/run_latency.py [--runs 30] [--only pysup,crun,...] [--layer]    (as root)

Rows (each a median over --runs, after 2 warm-up runs; p90 beside it):
- pysup (in supervisor): a running trio process with its zygote already started; per container
  `Launcher.start` → exit observed through the pidfd. Also start-to-exec (the `started` handle).
  Read-only root like the OCI bundles (`--layer`: also with the default writable overlay layer).
- pysup one-shot: a fresh interpreter that runs one container with `run_oneshot` (no trio, no
  zygote: what `pysup run --rm` is built on), the real `pysup run --rm` command line (with the
  limits, then without) as a regular install runs it (a venv of its own with a plain path to
  this checkout) and as the development venv runs it (its editable install adds setuptools'
  import hook, ~4-7 ms per start), and the same through trio + a zygote (`run_one`).
- bare fork+exec of the rootfs's busybox `true`, and `unshare -fmuipn chroot` (floors).
- bubblewrap (`--unshare-all`, no cgroups), crun, runc (OCI bundle, 64 MiB memory, 64 pids,
  read-only root), `podman run --rootfs` (same limits) when installed (bench/install-peers.sh).

pysup rows use the same limits through v1 cgroups made per container (memory, pids: mkdir,
limits, pid placement by the zygote's cgroup hook, rmdir after exit), as crun and runc do.
crun 1.8 refuses cgroup "hybrid" mode: its runs happen in a private mount namespace with the
empty cgroup2 mount (/sys/fs/cgroup/unified) unmounted, which the output says.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sysconfig
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

MEMORY = 64 * 1024 * 1024
PIDS = 64
V1 = "/sys/fs/cgroup"


def median_p90(xs: list[float]) -> tuple[float, float]:
    s = sorted(xs)
    return statistics.median(s), s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


def installed_pysup(work: str) -> str:
    """A `pysup` entry point as `pip install .` (not editable) leaves it: a venv of its own whose
    site-packages holds a plain path to this checkout (where the installed package would sit)
    and to the development venv's packages (no .pth of theirs runs: no editable import hook)."""
    venv = os.path.join(work, "installed-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    purelib = sysconfig.get_paths()["purelib"]
    site = subprocess.run([os.path.join(venv, "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "pysup.pth"), "w") as f:
        f.write(f"{REPO}\n{purelib}\n")
    script = os.path.join(venv, "bin/pysup")
    with open(script, "w") as f:  # what pip writes for the console script
        f.write(f"#!{os.path.join(venv, 'bin/python')}\nimport sys\nfrom supervisor.cli import main\n"
                "if __name__ == '__main__':\n    sys.exit(main())\n")
    os.chmod(script, 0o755)
    return script


def time_cmd(argv: list[str], runs: int, env: dict | None = None) -> list[float]:
    out = []
    for i in range(runs + 2):
        t = time.perf_counter()
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        dt = time.perf_counter() - t
        if p.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {p.returncode}: {p.stderr.decode(errors='replace').strip()[:300]}")
        if i >= 2:
            out.append(dt)
    return out


# --- v1 cgroups for the pysup rows ---------------------------------------------------------------


class V1Cgroup:
    """memory + pids leaf cgroups with the benchmark's limits (the cgroups driver is not wired yet)."""

    def __init__(self, name: str):
        self.dirs = []
        for ctrl, files in (("memory", {"memory.limit_in_bytes": MEMORY}), ("pids", {"pids.max": PIDS})):
            d = os.path.join(V1, ctrl, name)
            os.mkdir(d)
            self.dirs.append(d)
            for f, v in files.items():
                with open(os.path.join(d, f), "w") as fh:
                    fh.write(str(v))

    @property
    def procs(self) -> tuple[str, ...]:
        return tuple(os.path.join(d, "cgroup.procs") for d in self.dirs)

    def remove(self) -> None:
        for d in self.dirs:
            try:
                os.rmdir(d)
            except OSError:
                pass


def have_v1() -> bool:
    return os.path.isdir(os.path.join(V1, "memory")) and os.path.isdir(os.path.join(V1, "pids"))


async def _pysup_runs(rootfs: str, runs: int, cgroups: bool, layer: bool = False) -> tuple[list[float], list[float]]:
    import trio

    from supervisor.runtime.launcher import open_runtime
    from supervisor.runtime.security import resolve_capabilities
    from supervisor.runtime.spec import ContainerSpec

    caps = resolve_capabilities()
    to_exec: list[float] = []
    to_exit: list[float] = []
    state = tempfile.mkdtemp(prefix="pysup-bench-state-")
    try:
        async with open_runtime(state_root=state) as rt:
            for i in range(runs + 2):
                cid = f"pysup-bench-{uuid.uuid4().hex[:10]}"
                t0 = time.perf_counter()
                cg = V1Cgroup(cid) if cgroups else None
                try:
                    spec = ContainerSpec(id=cid, rootfs=rootfs, argv=("/bin/true",), capabilities=caps,
                                         read_only=not layer, cgroup_procs=cg.procs if cg else ())
                    with trio.fail_after(10):
                        async with trio.open_nursery() as n:
                            h = await n.start(
                                lambda task_status: rt.start(spec, stdout="null", stderr="null", task_status=task_status))
                            t1 = time.perf_counter()
                            st = await h.wait()
                    if st.exit_code != 0:
                        raise RuntimeError(f"pysup container exited {st}")
                finally:
                    if cg:
                        cg.remove()
                t2 = time.perf_counter()
                if i >= 2:
                    to_exec.append(t1 - t0)
                    to_exit.append(t2 - t0)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return to_exec, to_exit


def pysup_in_supervisor(rootfs: str, runs: int, cgroups: bool, layer: bool = False) -> tuple[list[float], list[float]]:
    import trio

    return trio.run(_pysup_runs, rootfs, runs, cgroups, layer)


# A one-shot run as `pysup run` will do it, with nothing else imported (bench/ itself is heavy).
ONESHOT_CODE = """
import os, uuid
from supervisor.runtime.oneshot import run_oneshot
from supervisor.runtime.security import resolve_capabilities
from supervisor.runtime.spec import ContainerSpec
cid = "pysup-bench-" + uuid.uuid4().hex[:10]
dirs = []
if {cgroups}:
    for ctrl, f, v in (("memory", "memory.limit_in_bytes", 64 << 20), ("pids", "pids.max", 64)):
        d = "/sys/fs/cgroup/%s/%s" % (ctrl, cid)
        os.mkdir(d)
        dirs.append(d)
        with open(d + "/" + f, "w") as fh:
            fh.write(str(v))
try:
    spec = ContainerSpec(id=cid, rootfs={rootfs!r}, argv=("/bin/true",), capabilities=resolve_capabilities(),
                         read_only=True, cgroup_procs=tuple(d + "/cgroup.procs" for d in dirs))
    code = run_oneshot(spec, stdio=(os.open(os.devnull, os.O_RDWR), 1, 2), state_root={state!r},
                       seccomp_cache={state!r} + "/seccomp", forward_signals=False)
finally:
    for d in dirs:
        os.rmdir(d)
raise SystemExit(code)
"""


def oneshot_main(rootfs: str, cgroups: bool, with_trio: bool) -> int:
    """`--oneshot ROOTFS`: what `pysup run --rm --rootfs ROOTFS /bin/true` will do: `run_oneshot`
    (no trio, no zygote; the compiled seccomp filter cached on disk), or with `--trio` the
    supervisor's path (`run_one`: trio imported, a zygote started)."""
    from supervisor.runtime.security import resolve_capabilities
    from supervisor.runtime.spec import ContainerSpec

    cid = f"pysup-bench-{uuid.uuid4().hex[:10]}"
    cg = V1Cgroup(cid) if cgroups else None
    state = os.environ.get("PYSUP_BENCH_STATE", "/run/pysup-bench")
    try:
        spec = ContainerSpec(id=cid, rootfs=rootfs, argv=("/bin/true",), capabilities=resolve_capabilities(),
                             read_only=True, cgroup_procs=cg.procs if cg else ())
        if with_trio:
            import trio

            from supervisor.runtime.launcher import run_one

            return trio.run(lambda: run_one(spec, stdin="null", state_root=state, forward_signals=False))
        from supervisor.runtime.oneshot import run_oneshot

        return run_oneshot(spec, stdio=(os.open(os.devnull, os.O_RDWR), 1, 2), state_root=state,
                           seccomp_cache=os.path.join(state, "seccomp"), forward_signals=False)
    finally:
        if cg:
            cg.remove()


# --- OCI bundles -----------------------------------------------------------------------------------


def make_bundle(rootfs: str, where: str) -> str:
    bundle = os.path.join(where, "bundle")
    os.mkdir(bundle)
    subprocess.run(["crun", "spec"] if shutil.which("crun") else ["runc", "spec"], cwd=bundle, check=True,
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(bundle, "config.json")) as f:
        cfg = json.load(f)
    cfg["root"] = {"path": rootfs, "readonly": True}
    cfg["process"]["args"] = ["/bin/true"]
    cfg["process"]["terminal"] = False
    cfg["linux"].setdefault("resources", {})
    cfg["linux"]["resources"]["memory"] = {"limit": MEMORY}
    cfg["linux"]["resources"]["pids"] = {"limit": PIDS}
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(cfg, f)
    return bundle


def worker(argv: list[str], runs: int, hybrid_fix: bool) -> list[float]:
    """`--worker JSON-ARGV N`: times N runs of the command ("{id}" replaced by a fresh container
    name), in this process's mount namespace (with the empty cgroup2 mount unmounted: hybrid fix)."""
    if hybrid_fix and os.path.ismount("/sys/fs/cgroup/unified"):
        subprocess.run(["umount", "/sys/fs/cgroup/unified"], check=True)
    out = []
    for i in range(runs + 2):
        cid = f"pysup-bench-{uuid.uuid4().hex[:10]}"
        cmd = [a.replace("{id}", cid) for a in argv]
        t = time.perf_counter()
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        dt = time.perf_counter() - t
        if p.returncode != 0:
            if cmd[0] in ("crun", "runc"):
                subprocess.run([cmd[0], "delete", "-f", cid], capture_output=True)
            raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {p.stderr.decode(errors='replace').strip()[:300]}")
        if i >= 2:
            out.append(dt)
    return out


def worker_runs(argv: list[str], runs: int, hybrid_fix: bool) -> list[float]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(argv), str(runs)]
    if hybrid_fix:
        cmd = ["unshare", "-m", "--propagation", "private", *cmd, "--hybrid-fix"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}")
    return json.loads(p.stdout)


# --- main --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--only", default="", help="comma-separated rows to run (pysup,oneshot,bare,unshare,bwrap,crun,runc,podman)")
    ap.add_argument("--no-cgroups", action="store_true", help="pysup rows without the 64 MiB / 64 pids cgroups")
    ap.add_argument("--layer", action="store_true", help="also pysup with a writable overlay layer (not read-only)")
    ap.add_argument("--worker", nargs=2, metavar=("ARGV", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--trio", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--hybrid-fix", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--oneshot", metavar="ROOTFS", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        argv, n = args.worker
        print(json.dumps(worker(json.loads(argv), int(n), args.hybrid_fix)))
        return 0
    if args.oneshot:
        return oneshot_main(args.oneshot, not args.no_cgroups and have_v1(), args.trio)
    if os.geteuid() != 0:
        print("run_latency: needs root", file=sys.stderr)
        return 1
    only = set(filter(None, args.only.split(",")))
    want = lambda name: not only or name in only  # noqa: E731
    cgroups = not args.no_cgroups and have_v1()
    work = tempfile.mkdtemp(prefix="pysup-bench-")
    rows: list[tuple[str, list[float] | None, str]] = []
    try:
        rootfs = os.path.join(work, "rootfs")
        subprocess.run(["bash", os.path.join(REPO, "scripts/make-busybox-rootfs.sh"), rootfs], check=True)
        limits = "64 MiB, 64 pids (v1 cgroups)" if cgroups else "no cgroups"
        if want("pysup"):
            to_exec, to_exit = pysup_in_supervisor(rootfs, args.runs, cgroups)
            rows.append(("pysup, in supervisor: start→exit", to_exit, limits))
            rows.append(("pysup, in supervisor: start→exec", to_exec, limits))
            if args.layer:
                _, to_exit = pysup_in_supervisor(rootfs, args.runs, cgroups, layer=True)
                rows.append(("pysup, in supervisor, writable layer", to_exit, limits + "; overlayfs upper per container"))
        if want("oneshot"):
            # Bytecode caching on, as installed software has it (this environment may set
            # PYTHONDONTWRITEBYTECODE): the warm-up runs write the .pyc files.
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env.update(PYTHONPATH=REPO, PYSUP_BENCH_STATE=os.path.join(work, "state"))
            code = ONESHOT_CODE.format(rootfs=rootfs, state=os.path.join(work, "state"), cgroups=cgroups)
            rows.append(("pysup one-shot (run_oneshot)", time_cmd([sys.executable, "-c", code], args.runs, env),
                         limits + "; interpreter start included, no trio"))
            # The real command line, as a person types it (PYSUP_*_DIR in the benchmark's work dir).
            cli_env = dict(env, PYSUP_STATE_DIR=os.path.join(work, "pysup-state"),
                           PYSUP_RUNTIME_DIR=os.path.join(work, "pysup-run"))
            # The `pysup` entry point as a regular install has it (`python -m` adds runpy, ~2.5 ms);
            # and the development venv's, whose editable install adds setuptools' import hook
            # (~7 ms at every interpreter start: a finder that imports pathlib and more).
            installed = installed_pysup(work)
            dev = os.path.join(os.path.dirname(sys.executable), "pysup")
            limits_args = ["--memory", "64m", "--pids-limit", "64"] if cgroups else []
            for label, script in (("", installed), (", dev venv", dev)):
                if not os.access(script, os.X_OK):
                    continue
                cli = [script, "run", "--rm", "--read-only", "--rootfs", rootfs]
                how = "a regular install's `pysup run`" if not label else "the editable install's `pysup run`"
                rows.append((f"pysup run --rm (CLI{label})", time_cmd([*cli, *limits_args, "--", "/bin/true"],
                                                                       args.runs, cli_env),
                             limits + f"; {how}, cgroup by supervisor.cgroups"))
                rows.append((f"pysup run --rm (CLI{label}), no limits", time_cmd([*cli, "--", "/bin/true"], args.runs,
                                                                                   cli_env),
                             "no cgroup: the cgroup driver is not imported"))
            extra = ["--no-cgroups"] if not cgroups else []
            me = [sys.executable, os.path.abspath(__file__), "--oneshot", rootfs, *extra, "--trio"]
            rows.append(("pysup one-shot via trio + zygote (run_one)", time_cmd(me, args.runs, env),
                         limits + "; interpreter, trio import, zygote start"))
        if want("bare"):
            rows.append(("bare fork+exec", time_cmd([os.path.join(rootfs, "bin/busybox"), "true"], args.runs), "floor"))
        if want("unshare"):
            rows.append(("unshare -fmuipn + chroot", time_cmd(["unshare", "-fmuipn", "chroot", rootfs, "/bin/true"], args.runs),
                         "no pivot_root, no /proc, no limits"))
        if want("bwrap"):
            if shutil.which("bwrap"):
                rows.append(("bubblewrap --unshare-all", time_cmd(
                    ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", rootfs, "/", "--proc", "/proc",
                     "--dev", "/dev", "/bin/true"], args.runs), "no cgroups"))
            else:
                rows.append(("bubblewrap", None, "not installed"))
        bundle = None
        for rt in ("crun", "runc"):
            if not want(rt):
                continue
            if not shutil.which(rt):
                rows.append((rt, None, "not installed"))
                continue
            bundle = bundle or make_bundle(rootfs, work)
            note = "64 MiB, 64 pids"
            if rt == "crun":
                note += "; private mount ns with the cgroup2 mount unmounted (crun 1.8 refuses hybrid mode)"
            try:
                rows.append((f"{rt} run", worker_runs([rt, "run", "--bundle", bundle, "{id}"], args.runs, rt == "crun"),
                             note))
            except RuntimeError as e:
                rows.append((f"{rt} run", None, f"failed: {e}"))
        if want("podman"):
            if shutil.which("podman"):
                try:
                    # nofile: podman asks for 1048576, above this host's hard limit (no CAP_SYS_RESOURCE)
                    rows.append(("podman run --rootfs", worker_runs(
                        ["podman", "run", "--rm", "--name", "{id}", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "--memory", "64m",
                         "--pids-limit", "64", "--read-only", "--network", "none", "--rootfs", rootfs, "/bin/true"],
                        max(20, args.runs // 2), True),
                        "64 MiB, 64 pids; network none; same private mount ns as crun"))
                except RuntimeError as e:
                    rows.append(("podman run --rootfs", None, f"failed: {e}"))
            else:
                rows.append(("podman", None, "not installed"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = next((median_p90(xs)[0] for name, xs, _ in rows if xs and name.startswith("pysup, in supervisor: start→exit")), None)
    print(f"\nstart-to-exit of /bin/true in a busybox rootfs, {args.runs} runs each (medians; {os.cpu_count()} cores)\n")
    print(f"| {'what':42} | {'median ms':>9} | {'p90 ms':>7} | {'× pysup':>7} | notes")
    print(f"|{'-' * 44}|{'-' * 11}|{'-' * 9}|{'-' * 9}|------")
    for name, xs, note in rows:
        if not xs:
            print(f"| {name:42} | {'–':>9} | {'–':>7} | {'–':>7} | {note}")
            continue
        med, p90 = median_p90(xs)
        ratio = f"{med / base:.2f}" if base else "–"
        print(f"| {name:42} | {med * 1000:9.2f} | {p90 * 1000:7.2f} | {ratio:>7} | {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
