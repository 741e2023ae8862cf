"""`pysup run` as a person runs it (root): `python -m supervisor run ...` as a real process, its
output and exit status; afterwards no process, mount, cgroup or state file of the container is left."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid

import pytest

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.root


def new_name() -> str:
    return f"pysup-test-{uuid.uuid4().hex[:12]}"


def cgroups_named(name: str) -> list[str]:
    out = subprocess.run(["find", "/sys/fs/cgroup", "-name", f"*{name}*"], capture_output=True, text=True)
    return out.stdout.split()


def run_cgroups() -> list[str]:
    """Cgroups of `pysup run` (pysup/run/<id>, and pysup/run itself once no run uses it)."""
    out = subprocess.run(["find", "/sys/fs/cgroup", "-path", "*/pysup/run*"], capture_output=True, text=True)
    return out.stdout.split()


def contained_processes(rootfs: str) -> list[int]:
    """Processes whose mount namespace still has the test rootfs mounted (a container left running)."""
    from supervisor.images.store import mounted_by

    pid = mounted_by(rootfs)
    return [] if pid is None else [pid]


def host_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if "pysup-test-" in line]




@pytest.fixture
def env(busybox_rootfs):
    """PYSUP_STATE_DIR / PYSUP_RUNTIME_DIR in temporary directories, checked empty afterwards."""
    state = tempfile.mkdtemp(prefix="pysup-test-state-")
    runtime = tempfile.mkdtemp(prefix="pysup-test-run-")
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), "PYSUP_STATE_DIR": state,
         "PYSUP_RUNTIME_DIR": runtime}
    try:
        yield e
        containers = os.path.join(runtime, "containers")
        assert not os.path.exists(containers) or os.listdir(containers) == [], "container state left"
        anon = os.path.join(state, "volumes", ".anonymous")
        assert not os.path.exists(anon) or os.listdir(anon) == [], "anonymous volumes left"
        assert host_mounts() == [], "mounts left on the host"
        assert run_cgroups() == [], "cgroups left"
        assert contained_processes(busybox_rootfs) == [], "container processes left"
    finally:
        subprocess.run(["rm", "-rf", state, runtime])


def pysup(env, *args: str, stdin: str | None = None, timeout: float = 30):
    return subprocess.run([sys.executable, "-m", "supervisor", *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=str(REPO))


def sh(env, rootfs, script: str, *opts: str, stdin: str | None = None):
    return pysup(env, "run", "--rm", "--rootfs", rootfs, *opts, "--", "/bin/sh", "-c", script, stdin=stdin)


def test_exit_status_and_output_are_the_containers(env, busybox_rootfs):
    r = sh(env, busybox_rootfs, "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")



def test_signals_are_forwarded(env, busybox_rootfs):
    if not os.access("/usr/bin/tini-static", os.X_OK):
        pytest.skip("needs tini-static")
    # With --init the shell is not PID 1, so SIGTERM's default action kills it: 128 + 15.
    with subprocess.Popen([sys.executable, "-m", "supervisor", "run", "--rm", "--init", "--rootfs", busybox_rootfs,
                           "--", "/bin/sh", "-c", "echo started; sleep 30"], stdout=subprocess.PIPE, text=True,
                          env=env, cwd=str(REPO)) as p:
        try:
            assert p.stdout.readline() == "started\n"
            p.terminate()
            p.wait(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert p.returncode == 128 + 15


def test_docker_exit_codes_for_start_failures(env, busybox_rootfs):
    """Each start failure is one line that names the option to fix."""
    r = pysup(env, "run", "--rootfs", busybox_rootfs, "--", "no-such-command")
    assert r.returncode == 127
    assert r.stderr == 'pysup: command no-such-command: exec: "no-such-command": executable file not found in $PATH\n'
    r = pysup(env, "run", "--rootfs", busybox_rootfs, "/etc/passwd")
    assert r.returncode == 126, r.stderr
    r = pysup(env, "run", "--rootfs", "/nonexistent-pysup-test", "--", "/bin/true")
    assert r.returncode == 125 and r.stderr == "pysup: --rootfs /nonexistent-pysup-test: not a directory\n"
    r = pysup(env, "run", "--rootfs", busybox_rootfs, "-v", "/nonexistent-pysup-test:/x", "--", "/bin/true")
    assert r.returncode == 125 and r.stderr == ("pysup: -v /nonexistent-pysup-test:/x: mount /x: bind mount source "
                                                "/nonexistent-pysup-test does not exist\n")
    r = pysup(env, "run", "--rootfs", busybox_rootfs, "-u", "nosuchuser", "--", "/bin/true")
    assert r.returncode == 125 and r.stderr == ("pysup: -u nosuchuser: user: unable to find user nosuchuser: "
                                                "no matching entries in passwd file\n")
    r = pysup(env, "run", "--rootfs", busybox_rootfs)
    assert r.returncode == 125 and "no command" in r.stderr


def test_stdin_is_passed_through(env, busybox_rootfs):
    r = sh(env, busybox_rootfs, "tr a-z A-Z", stdin="hello pysup\n")
    assert (r.returncode, r.stdout) == (0, "HELLO PYSUP\n")


def test_process_options(env, busybox_rootfs):
    r = sh(env, busybox_rootfs, 'echo "$GREETING|$(id -u):$(id -g)|$(pwd)|$(hostname)"', "-e", "GREETING=hi there",
           "-u", "app", "-w", "/home/app", "--hostname", "pysup-test-host")
    assert (r.returncode, r.stdout) == (0, "hi there|1000:1000|/home/app|pysup-test-host\n"), r.stderr
    r = sh(env, busybox_rootfs, "grep CapEff /proc/self/status", "--cap-drop", "ALL")
    assert r.stdout.split() == ["CapEff:", "0000000000000000"], r.stderr
    r = sh(env, busybox_rootfs, "grep -c NET_ADMIN /dev/null; grep CapEff /proc/self/status", "--cap-add", "NET_ADMIN")
    assert int(r.stdout.split()[-1], 16) & (1 << 12), r.stdout  # CAP_NET_ADMIN is bit 12
    r = sh(env, busybox_rootfs, "grep Seccomp: /proc/self/status", "--security-opt", "seccomp=unconfined")
    assert r.stdout.split() == ["Seccomp:", "0"]


def test_read_only_network_and_bind_volumes(env, busybox_rootfs, scratch):
    r = sh(env, busybox_rootfs, "touch /x && echo wrote", "--read-only")
    assert r.returncode != 0 and "wrote" not in r.stdout
    r = sh(env, busybox_rootfs, "ls /sys/class/net", "--network", "none")
    assert r.stdout.split() == ["lo"]
    (scratch / "in.txt").write_text("from the host\n")
    r = sh(env, busybox_rootfs, "cat /data/in.txt; echo new > /data/out.txt; touch /ro/x || echo ro-refused",
           "-v", f"{scratch}:/data", "-v", f"{scratch}:/ro:ro")
    assert r.stdout == "from the host\nro-refused\n", r.stderr
    assert (scratch / "out.txt").read_text() == "new\n"


def test_init_reaps_and_forwards(env, busybox_rootfs):
    if not os.access("/usr/bin/tini-static", os.X_OK):
        pytest.skip("needs tini-static")
    r = sh(env, busybox_rootfs, "cat /proc/1/cmdline | tr '\\0' ' '", "--init")
    assert r.returncode == 0 and r.stdout.startswith("/dev/init -- /bin/sh"), (r.stdout, r.stderr)


def test_limits_through_a_cgroup_removed_afterwards(env, busybox_rootfs):
    name = new_name()
    p = subprocess.Popen([sys.executable, "-m", "supervisor", "run", "--rm", "--name", name, "--rootfs", busybox_rootfs,
                          "--memory", "64m", "--pids-limit", "16", "--cpus", "0.5", "--", "/bin/sh", "-c",
                          "echo started; read x; echo done"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=str(REPO))
    try:
        assert p.stdout.readline() == "started\n"
        dirs = cgroups_named(name)
        assert dirs, "no cgroup for the container"
        mem = next(d for d in dirs if "/memory/" in d)
        assert mem.endswith(f"pysup/run/{name}")
        with open(os.path.join(mem, "memory.limit_in_bytes")) as f:
            assert int(f.read()) == 64 << 20
        pids = next(d for d in dirs if "/pids/" in d)
        with open(os.path.join(pids, "pids.max")) as f:
            assert f.read().strip() == "16"
        with open(os.path.join(pids, "cgroup.procs")) as f:
            assert f.read().split(), "the container is not in its cgroup"
        out, err = p.communicate("\n", timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert (p.returncode, out) == (0, "done\n"), err
    assert cgroups_named(name) == []


def test_pids_limit_is_enforced(env, busybox_rootfs):
    script = "for i in 1 2 3 4 5 6 7 8; do sleep 0.5 & done; wait; echo end"
    r = sh(env, busybox_rootfs, script, "--pids-limit", "4")
    assert r.returncode != 0 and "end" not in r.stdout and "fork" in r.stderr, (r.returncode, r.stdout, r.stderr)
    r = sh(env, busybox_rootfs, script, "--pids-limit", "64")
    assert (r.returncode, r.stdout) == (0, "end\n"), r.stderr


def test_a_name_in_use_is_refused(env, busybox_rootfs):
    name = new_name()
    p = subprocess.Popen([sys.executable, "-m", "supervisor", "run", "--name", name, "--rootfs", busybox_rootfs, "--",
                          "/bin/sh", "-c", "echo started; read x"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env, cwd=str(REPO))
    try:
        assert p.stdout.readline() == "started\n"
        r = pysup(env, "run", "--name", name, "--rootfs", busybox_rootfs, "--", "/bin/true")
        assert r.returncode == 125 and "already exists" in r.stderr
        p.communicate("\n", timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0


def test_named_volumes_are_kept_anonymous_ones_removed(env, busybox_rootfs):
    vol = new_name()
    r = sh(env, busybox_rootfs, "echo kept > /data/f; echo gone > /scratch/f; ls /scratch", "-v", f"{vol}:/data",
           "-v", "/scratch")
    assert (r.returncode, r.stdout) == (0, "f\n"), r.stderr
    vdir = os.path.join(env["PYSUP_STATE_DIR"], "volumes", vol)
    with open(os.path.join(vdir, "f")) as f:
        assert f.read() == "kept\n"
    assert os.listdir(os.path.join(env["PYSUP_STATE_DIR"], "volumes", ".anonymous")) == []
    r = sh(env, busybox_rootfs, "cat /again/f; echo x > /again/g || echo read-only", "-v", f"{vol}:/again:ro")
    assert r.stdout == "kept\nread-only\n", r.stderr
    r = pysup(env, "run", "--rootfs", busybox_rootfs, "-v", "bad/name:/x", "--", "/bin/true")
    assert r.returncode == 125 and "bad/name" in r.stderr


def test_the_run_path_imports_no_attrs_trio_or_structlog():
    """A one-shot `pysup run` must start fast: attrs alone costs ~15 ms to import, trio ~200 ms,
    structlog (with rich) ~50 ms."""
    code = ("import sys; import supervisor.cli, supervisor.runtime.run, supervisor.runtime.oneshot, "
            "supervisor.runtime.volumes, supervisor.runtime.userns, supervisor.images.store; "
            # with --memory/--cpus/--pids-limit: the cgroup drivers and the limits, too
            "import supervisor.cgroups, supervisor.cgroups.v1, supervisor.cgroups.v2; "
            "from supervisor.runtime.run import RunRequest, parse_limits; "
            "assert parse_limits(RunRequest(['x'], memory='64m', pids_limit=64)).pids == 64; "
            "bad = [m for m in ('attrs', 'attr', 'trio', 'structlog', 'rich', 'supervisor.config.model') "
            "if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(REPO)})


def test_lazy_logger_imports_structlog_only_to_write():
    """`supervisor.log.get_logger()` (the cgroup drivers' logger): after `configure_lazily`, a line
    below the level costs no import; one at the level imports and configures structlog and is written."""
    code = ("import sys; from supervisor import log; log.configure_lazily('console', 'info'); "
            "lg = log.get_logger(); lg.debug('quiet', a=1); assert 'structlog' not in sys.modules; "
            "lg.warning('loud line', key='mem_limit'); assert 'structlog' in sys.modules; "
            "lg.debug('still quiet')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert "loud line" in r.stderr and "mem_limit" in r.stderr and "quiet" not in r.stderr


def test_records_still_evolve_with_attrs():
    """Code written for the former attrs classes (`attrs.evolve(spec, ...)`) keeps working."""
    import attrs

    from supervisor.runtime.spec import ContainerSpec, MountSpec

    spec = ContainerSpec(id="pysup-test-a", rootfs="/r", argv=["x"], mounts=[MountSpec(type="tmpfs", target="/t")])
    other = attrs.evolve(spec, id="pysup-test-b")
    assert other == spec.replace(id="pysup-test-b") and other.mounts == spec.mounts
    with pytest.raises(ValueError, match="invalid container id"):
        spec.replace(id="../x")
    with pytest.raises(AttributeError):
        spec.id = "x"  # type: ignore[misc]
    assert ContainerSpec.from_json(spec.to_json()) == spec and hash(spec) == hash(ContainerSpec.from_dict(spec.to_dict()))
