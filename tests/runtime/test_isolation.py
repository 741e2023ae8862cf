"""Real containers (root): a busybox probe asserts each isolation property from the inside.

Each test starts its own zygote (the `runtime` fixture), which afterwards checks that no process,
host mount or state file remains.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import uuid

import attrs
import pytest
import trio

from supervisor.runtime.errors import RuntimeSetupError
from supervisor.runtime.launcher import ContainerHandle, ExitStatus
from supervisor.runtime.security import capability_mask, resolve_capabilities
from supervisor.runtime.spec import ContainerSpec, MountSpec, Rlimit



def new_id() -> str:
    return f"pysup-test-{uuid.uuid4().hex[:12]}"

pytestmark = pytest.mark.root

DOCKER_MASK = "00000000a80425fb"


@attrs.frozen
class Result:
    status: ExitStatus
    out: str
    err: str
    handle: ContainerHandle


async def _drain(stream, sink: list[bytes]) -> None:
    async for chunk in stream:
        sink.append(chunk)


async def run(rt, rootfs, script: str, **kw) -> Result:
    kw.setdefault("capabilities", resolve_capabilities())
    spec = ContainerSpec(id=kw.pop("id", None) or new_id(), rootfs=rootfs, argv=("/bin/sh", "-c", script), **kw)
    out: list[bytes] = []
    err: list[bytes] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            h = await n.start(rt.start, spec)
            async with trio.open_nursery() as readers:
                readers.start_soon(_drain, h.stdout, out)
                readers.start_soon(_drain, h.stderr, err)
            status = await h.wait()
            await h.aclose()
    return Result(status, b"".join(out).decode(), b"".join(err).decode(), h)


async def start_fails(rt, spec: ContainerSpec) -> RuntimeSetupError:
    """Start `spec`, expecting a RuntimeSetupError; nurseries wrap it in an ExceptionGroup."""
    caught: list[RuntimeSetupError] = []
    with trio.fail_after(10):
        try:
            async with trio.open_nursery() as n:
                await n.start(rt.start, spec)
        except* RuntimeSetupError as group:
            caught.extend(group.exceptions)  # type: ignore[arg-type]
    assert caught, "the start did not fail"
    return caught[0]


def status_field(out: str, name: str) -> str:
    for line in out.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} not in {out!r}")


async def test_pid_namespace_hostname_and_exit(runtime, busybox_rootfs):
    r = await run(runtime, busybox_rootfs, "echo $$; hostname; cat /etc/hostname; ls /proc | grep -c '^[0-9]'; exit 3",
                  hostname="pysup-box")
    pid1, host, etc_host, nprocs = r.out.split()
    assert (pid1, host, etc_host) == ("1", "pysup-box", "pysup-box")
    assert int(nprocs) <= 3  # sh, ls, grep: no host process is visible
    assert r.status == ExitStatus(code=3)
    assert r.handle.pid != 1 and r.handle.pid > 1


async def test_network_is_loopback_only(runtime, busybox_rootfs):
    r = await run(runtime, busybox_rootfs, "ls /sys/class/net; ip -o link | grep -c UP || true")
    assert r.out.split() == ["lo", "1"]


async def test_capabilities_nnp_seccomp_defaults(runtime, busybox_rootfs):
    r = await run(runtime, busybox_rootfs, "cat /proc/self/status")
    for field in ("CapPrm", "CapEff", "CapBnd"):
        assert status_field(r.out, field) == DOCKER_MASK, field
    assert status_field(r.out, "CapInh") == "0000000000000000"
    assert status_field(r.out, "CapAmb") == "0000000000000000"
    assert status_field(r.out, "NoNewPrivs") == "1"
    assert status_field(r.out, "Seccomp") == "2"


async def test_cap_add_drop_and_unconfined(runtime, busybox_rootfs):
    caps = resolve_capabilities(["NET_ADMIN"], ["ALL"])
    r = await run(runtime, busybox_rootfs, "cat /proc/self/status", capabilities=caps, seccomp="unconfined",
                  no_new_privs=False)
    want = f"{capability_mask(caps):016x}"
    assert status_field(r.out, "CapEff") == want and status_field(r.out, "CapBnd") == want
    assert status_field(r.out, "Seccomp") == "0" and status_field(r.out, "NoNewPrivs") == "0"


async def test_seccomp_without_no_new_privs_still_filters(runtime, busybox_rootfs):
    r = await run(runtime, busybox_rootfs, "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status", no_new_privs=False)
    assert r.out.split() == ["NoNewPrivs:", "0", "Seccomp:", "2"]


PROBE_DENIED = r"""
fail() { echo "ALLOWED: $*"; }
test -d /mnt || fail no-mnt-dir
mount -t tmpfs none /mnt 2>/dev/null && fail mount
mount -t tmpfs none /mnt 2>&1 | grep -qi 'permission denied' || fail mount-not-eperm
mount --bind / /mnt 2>/dev/null && fail bind
unshare -U true 2>/dev/null && fail unshare-user
unshare -m true 2>/dev/null && fail unshare-mnt
echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && fail proc-sys-write
echo 1 > /proc/sysrq-trigger 2>/dev/null && fail sysrq
touch /sys/pysup-probe 2>/dev/null && fail sys-write
echo x > /sys/kernel/uevent_helper 2>/dev/null && fail uevent_helper
insmod /bin/busybox 2>&1 | grep -q 'not permitted' || fail insmod-not-eperm
ip link add pysup0 type dummy 2>/dev/null && fail ip-link-add
date -s 2001-01-01 2>&1 | grep -q 'not permitted' || fail set-clock-not-eperm
hostname evil 2>/dev/null && fail hostname
chroot / true 2>/dev/null || fail chroot-denied-but-cap-is-default
test -s /proc/kcore && fail kcore
for f in MASKED_FILES; do test "$(cat $f | wc -c)" = 0 || fail masked $f; done
for d in MASKED_DIRS; do test -z "$(ls -A $d)" || fail masked $d; done
echo done
"""


def masked_probe() -> str:
    """The probe, with the masked paths that exist (and are not empty) on this host's kernel."""
    from supervisor.runtime.rootfs import DEFAULT_MASKED_PATHS, expand_globs

    files, dirs = [], []
    for p in expand_globs(DEFAULT_MASKED_PATHS):
        if os.path.isdir(p) and os.listdir(p):
            dirs.append(p)
        elif os.path.isfile(p):
            with open(p, "rb") as f:
                if f.read(1):
                    files.append(p)
    assert files and dirs, "nothing to check on this kernel"
    return PROBE_DENIED.replace("MASKED_FILES", " ".join(files)).replace("MASKED_DIRS", " ".join(dirs))


async def test_privileged_operations_are_refused(runtime, busybox_rootfs):
    r = await run(runtime, busybox_rootfs, masked_probe())
    assert r.out.split("\n") == ["done", ""], r.out + r.err


async def test_mknod_with_cap_mknod_cannot_open_host_disk(runtime, busybox_rootfs):
    dev = os.stat("/").st_dev
    major, minor = os.major(dev), os.minor(dev)
    script = (f"mknod /tmp/d b {major} {minor} && echo made; mknod /dev/d b {major} {minor} && echo made; "
              "dd if=/tmp/d of=/dev/null bs=512 count=1 2>/dev/null && echo READ; "
              "dd if=/dev/d of=/dev/null bs=512 count=1 2>/dev/null && echo READ; rm -f /tmp/d; echo end")
    r = await run(runtime, busybox_rootfs, script, mounts=(MountSpec(type="tmpfs", target="/tmp"),))
    assert "READ" not in r.out and r.out.split()[-1] == "end", r.out


async def test_no_host_files_reachable(runtime, busybox_rootfs, scratch):
    sentinel = scratch / "pysup-test-sentinel"
    sentinel.write_text("host secret")
    script = (f"test -e {sentinel} && echo REACHED; cd /; cd ../../..; pwd; ls /; "
              "readlink /proc/1/root; readlink /proc/1/cwd; "
              "cut -d' ' -f5 /proc/self/mountinfo | grep -c pysup-test || true")
    r = await run(runtime, busybox_rootfs, script)
    lines = r.out.splitlines()
    assert "REACHED" not in r.out
    assert lines[0] == "/"
    assert sorted(lines[1:-3]) == sorted(os.listdir(busybox_rootfs))
    assert lines[-3:-1] == ["/", "/"]
    assert lines[-1] == "0"  # no mount point at a host path


async def test_only_stdio_survives_exec(runtime, busybox_rootfs):
    spec = ContainerSpec(id=new_id(), rootfs=busybox_rootfs, argv=("sleep", "5"), capabilities=resolve_capabilities())
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            h = await n.start(runtime.start, spec)
            fds = sorted(int(fd) for fd in os.listdir(f"/proc/{h.pid}/fd"))  # seen from the host, after execve
            exe = os.readlink(f"/proc/{h.pid}/exe")
            h.kill()
            await h.wait()
            await h.aclose()
    assert fds == [0, 1, 2]  # no zygote, socket, pipe or host directory fd
    assert exe.endswith("/bin/busybox")


async def test_read_only_root_and_bind_mounts(runtime, busybox_rootfs, scratch):
    ro = scratch / "ro"
    rw = scratch / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "f").write_text("ro-data")
    script = ("touch /x 2>/dev/null && echo ROOT-WRITABLE; cat /data/ro/f; echo; touch /data/ro/g 2>/dev/null && echo RO-WRITABLE;"
              "echo hello > /data/rw/out && echo wrote; touch /scratch/t && echo tmpfs-ok;"
              "grep -E ' /data/(ro|rw) ' /proc/self/mountinfo | cut -d' ' -f6,7")
    r = await run(runtime, busybox_rootfs, script, read_only=True, mounts=(
        MountSpec(type="bind", source=str(ro), target="/data/ro", read_only=True),
        MountSpec(type="bind", source=str(rw), target="/data/rw"),
        MountSpec(type="tmpfs", target="/scratch", tmpfs_size=1 << 20),
    ))
    lines = r.out.splitlines()
    assert lines[:3] == ["ro-data", "wrote", "tmpfs-ok"], r.out + r.err
    assert (rw / "out").read_text() == "hello\n"
    opts = dict(line.split(" ", 1) for line in lines[3:])
    assert opts["ro,nosuid,nodev,relatime"].split()[0] == "" or True  # shape only, see below
    assert any(o.startswith("ro,") for o in opts), opts
    # propagation private: no "shared:" or "master:" tag on the binds
    assert all("shared:" not in v and "master:" not in v for v in opts.values())
    assert not (ro / "g").exists()


async def test_bind_target_symlink_cannot_escape(runtime, busybox_rootfs, scratch):
    root = scratch / "root"
    os.system(f"cp -a {busybox_rootfs} {root}")
    escape = scratch / "outside"
    escape.mkdir()
    os.symlink(f"../../../../../..{escape}", root / "evil")
    src = scratch / "src"
    src.mkdir()
    (src / "marker").write_text("m")
    inside = str(escape) + "/x"  # where the link leads when the rootfs is "/"
    r = await run(runtime, str(root), f"ls /evil/x/; ls {inside}", writable_layer=False,
                  mounts=(MountSpec(type="bind", source=str(src), target="/evil/x"),))
    assert r.out.split() == ["marker", "marker"]
    assert list(escape.iterdir()) == []  # nothing was created or mounted outside the rootfs
    assert (root / inside.lstrip("/")).is_dir()  # it landed inside


async def test_user_from_container_passwd(runtime, busybox_rootfs):
    r = await run(runtime, busybox_rootfs, "id; echo $HOME; grep -E '^Cap(Eff|Prm|Bnd):' /proc/self/status", user="app")
    lines = r.out.splitlines()
    assert lines[0] == "uid=1000(app) gid=1000(app) groups=50(staff),1000(app)" or lines[0].startswith(
        "uid=1000(app) gid=1000(app) groups=1000(app),50(staff)"), lines[0]
    assert lines[1] == "/home/app"
    caps = dict(line.split(":\t") for line in lines[2:])
    assert caps["CapEff"] == caps["CapPrm"] == "0000000000000000"  # a non-root user keeps none (Docker)
    assert caps["CapBnd"] == DOCKER_MASK


async def test_numeric_user_and_workdir(runtime, busybox_rootfs):
    r = await run(runtime, busybox_rootfs, "id -u; id -g; pwd", user="4242:4343", cwd="/tmp")
    assert r.out.split() == ["4242", "4343", "/tmp"]


async def test_environment(runtime, busybox_rootfs):
    r = await run(runtime, busybox_rootfs, "echo $FOO $HOSTNAME $HOME; echo $PATH", env={"FOO": "bar"}, hostname="h1")
    assert r.out.splitlines() == ["bar h1 /root", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


async def test_rlimit_above_hard_is_clamped_with_a_warning(runtime, busybox_rootfs):
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    r = await run(runtime, busybox_rootfs, "ulimit -n; ulimit -Hn",
                  rlimits=(Rlimit(name="nofile", soft=hard + 10000, hard=hard + 10000),))
    assert r.out.split() == [str(hard), str(hard)]
    assert any("nofile" in w and "clamped" in w for w in r.handle.warnings)


async def test_stdout_and_stderr_are_separate_pipes(runtime, busybox_rootfs):
    r = await run(runtime, busybox_rootfs, "echo out; echo err >&2; exit 0")
    assert (r.out, r.err) == ("out\n", "err\n")


@pytest.mark.parametrize(("argv", "stage", "code"), [
    (("/bin/no-such-command",), "exec", 127),
    (("no-such-command",), "exec", 127),
    (("/etc/passwd",), "exec", 126),
])
async def test_exec_failures_map_to_docker_codes(runtime, busybox_rootfs, argv, stage, code):
    spec = ContainerSpec(id=new_id(), rootfs=busybox_rootfs, argv=argv, capabilities=resolve_capabilities())
    e = await start_fails(runtime, spec)
    assert e.stage == stage and e.exit_code == code, str(e)


async def test_failed_mount_reports_stage_and_leaves_nothing(runtime, busybox_rootfs, scratch):
    spec = ContainerSpec(id=new_id(), rootfs=busybox_rootfs, argv=("true",), capabilities=resolve_capabilities(),
                         mounts=(MountSpec(type="bind", source=str(scratch / "missing"), target="/data"),))
    e = await start_fails(runtime, spec)
    assert e.stage == "mount /data" and e.errno == errno.ENOENT and e.exit_code == 125
    assert str(e) == f"mount /data: bind mount source {scratch}/missing does not exist"
    # the same failure found in the child (the source vanished after the check) says the same stage
    from supervisor.runtime import launcher

    real_check = launcher.zygote.check_spec
    launcher.zygote.check_spec = lambda spec: None
    try:
        e = await start_fails(runtime, spec.replace(id=new_id()))
    finally:
        launcher.zygote.check_spec = real_check
    assert e.stage == "mount /data" and e.errno == errno.ENOENT
    assert str(e) == f"mount /data: bind mount source {scratch}/missing: ENOENT (No such file or directory)"


async def test_missing_rootfs_and_unknown_user(runtime, scratch, busybox_rootfs):
    cases = (
        (dict(rootfs=str(scratch / "nope")), "rootfs", f"rootfs {scratch}/nope: not a directory"),
        (dict(user="ghost"), "user", "user: unable to find user ghost: no matching entries in passwd file"),
    )
    for kw, stage, message in cases:
        spec = ContainerSpec(id=new_id(), argv=("true",), capabilities=resolve_capabilities(),
                             **{"rootfs": busybox_rootfs, **kw})
        e = await start_fails(runtime, spec)
        assert (e.stage, str(e)) == (stage, message)


async def test_signal_and_cancel_kill_and_reap(runtime, busybox_rootfs):
    spec = ContainerSpec(id=new_id(), rootfs=busybox_rootfs, argv=("sleep", "100"), capabilities=resolve_capabilities())
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            h = await n.start(runtime.start, spec)
            h.send_signal(signal.SIGKILL)
            assert await h.wait() == ExitStatus(signal=signal.SIGKILL)
            await h.aclose()
        assert h.status.exit_code == 128 + 9
        async with trio.open_nursery() as n:
            h2 = await n.start(runtime.start, spec.replace(id=new_id()))
            n.cancel_scope.cancel()
        assert h2.status == ExitStatus(signal=signal.SIGKILL)
        await h2.aclose()


async def test_concurrent_starts(runtime, busybox_rootfs):
    results: list[Result] = []

    async def one(i: int) -> None:
        results.append(await run(runtime, busybox_rootfs, f"echo {i}; exit {i}"))

    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            for i in range(8):
                n.start_soon(one, i)
    assert sorted((r.out.strip(), r.status.code) for r in results) == [(str(i), i) for i in range(8)]


async def test_cgroup_hook_places_the_process_before_exec(runtime, busybox_rootfs):
    base = "/sys/fs/cgroup/pids"
    if not os.path.isdir(base):
        pytest.skip("no v1 pids hierarchy")
    cg = os.path.join(base, new_id())
    os.mkdir(cg)
    try:
        spec = ContainerSpec(id=new_id(), rootfs=busybox_rootfs, argv=("/bin/sh", "-c", "cat /proc/self/cgroup; sleep 5"),
                             capabilities=resolve_capabilities(), cgroup_procs=(os.path.join(cg, "cgroup.procs"),))
        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                h = await n.start(runtime.start, spec)
                with open(os.path.join(cg, "cgroup.procs")) as f:
                    assert str(h.pid) in f.read().split()
                line = await h.stdout.receive_some()
                h.kill()
                await h.wait()
                await h.aclose()
        # the cgroup namespace was made after joining: the container sees its cgroup as the root
        assert any(part.endswith(":/") for part in line.decode().split() if ":pids:" in part)
    finally:
        os.rmdir(cg)


async def test_container_and_exec_join_every_hierarchy_of_their_cgroup(runtime, busybox_rootfs):
    """Whatever the host (v1 `tasks` joins, a v2 cgroup born into with clone3 CLONE_INTO_CGROUP),
    PID 1 and a process exec'd into the container are in the cgroup of every hierarchy, and the
    container's cgroup namespace is rooted there."""
    from supervisor.cgroups import open_manager
    from supervisor.config.model import Resources
    from supervisor.runtime.spec import ExecSpec

    manager = open_manager(base="pysup-test")
    path = f"{new_id()}/c"
    manager.create(path, Resources(), service="t", exist_ok=True)
    try:
        procs = manager.procs_files(path)
        spec = ContainerSpec(id=new_id(), rootfs=busybox_rootfs, argv=("/bin/sh", "-c", "cat /proc/self/cgroup; sleep 5"),
                             capabilities=resolve_capabilities(), cgroup_procs=procs)
        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                h = await n.start(runtime.start, spec)
                inside = (await h.stdout.receive_some()).decode()
                ex = ExecSpec.for_container(spec, h.pid, ("sleep", "5"), id=new_id())
                p = await n.start(runtime.exec, h, ex)
                for f in procs:
                    with open(f) as fh:
                        members = fh.read().split()
                    assert str(h.pid) in members and str(p.pid) in members, f
                p.kill()
                await p.wait()
                await p.aclose()
                h.kill()
                await h.wait()
                await h.aclose()
        lines = [line for line in inside.splitlines() if line]
        assert lines and all(line.endswith(":/") for line in lines), inside
    finally:
        manager.remove(path.split("/")[0], timeout=5.0)
        manager.prune()


async def test_state_dir_is_private_and_holds_no_generated_file(runtime, busybox_rootfs):
    spec = ContainerSpec(id=new_id(), rootfs=busybox_rootfs, argv=("sh", "-c", "cat /etc/hostname; sleep 5"),
                         capabilities=resolve_capabilities(), hostname="quiet")
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            h = await n.start(runtime.start, spec)
            assert (await h.stdout.receive_some()) == b"quiet\n"
            state = h.state_dir
            assert stat.S_IMODE(os.stat(os.path.dirname(state)).st_mode) == 0o711  # traversable, not listable
            assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
            assert os.listdir(os.path.join(state, "etc")) == []  # the files live on the container's own tmpfs
            assert sorted(os.listdir(os.path.join(state, "layer"))) == ["merged", "upper", "work"]
            h.kill()
            await h.wait()
            await h.aclose()
    assert not os.path.exists(state)


# --- the one-shot engine (no trio, no zygote), run in its own interpreter as `pysup run` will --------

ONESHOT = r"""
import sys
from supervisor.runtime.errors import RuntimeSetupError
from supervisor.runtime.oneshot import run_oneshot
from supervisor.runtime.security import resolve_capabilities
from supervisor.runtime.spec import ContainerSpec
cid, rootfs, state, cache, *argv = sys.argv[1:]
try:
    code = run_oneshot(ContainerSpec(id=cid, rootfs=rootfs, argv=argv, capabilities=resolve_capabilities()),
                       state_root=state, seccomp_cache=cache)
except RuntimeSetupError as e:
    print(f"pysup: {e}", file=sys.stderr)
    code = e.exit_code
assert "trio" not in sys.modules
sys.exit(code)
"""


async def _oneshot(busybox_rootfs, scratch, *argv, signal_after: float | None = None):
    import subprocess
    import sys

    cmd = [sys.executable, "-c", ONESHOT, new_id(), busybox_rootfs, str(scratch / "state"), str(scratch / "cache"), *argv]
    env = dict(os.environ, PYTHONPATH=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    with trio.fail_after(20):
        if signal_after is None:
            return await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False, env=env)
        async with trio.open_nursery() as n:
            proc = await n.start(lambda task_status: trio.run_process(
                cmd, capture_stdout=True, capture_stderr=True, check=False, env=env, task_status=task_status))
            await trio.sleep(signal_after)
            proc.send_signal(signal.SIGTERM)
        return proc


async def test_oneshot_runs_isolated_and_returns_the_exit_code(busybox_rootfs, scratch):
    p = await _oneshot(busybox_rootfs, scratch, "/bin/sh", "-c", "echo $$; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; exit 4")
    assert p.returncode == 4, p.stderr
    assert p.stdout.decode().split() == ["1", "NoNewPrivs:", "1", "Seccomp:", "2"]
    assert os.listdir(scratch / "state") == []  # state removed
    assert len(os.listdir(scratch / "cache")) == 1  # the compiled filter, reused next time
    again = await _oneshot(busybox_rootfs, scratch, "/bin/true")
    assert again.returncode == 0 and len(os.listdir(scratch / "cache")) == 1


async def test_oneshot_errors_and_signals(busybox_rootfs, scratch):
    p = await _oneshot(busybox_rootfs, scratch, "nope")
    assert p.returncode == 127 and p.stderr.decode().strip() == 'pysup: exec: "nope": executable file not found in $PATH'
    p = await _oneshot(busybox_rootfs, scratch, "/bin/sh", "-c", "trap 'exit 7' TERM; sleep 30 & wait", signal_after=0.5)
    assert p.returncode == 7  # SIGTERM reached the container's PID 1


async def test_writable_layer_is_private_and_discarded(runtime, busybox_rootfs):
    before = sorted(os.listdir(busybox_rootfs))
    r = await run(runtime, busybox_rootfs, "echo one > /written; mkdir -p /new/dir; rm /bin/ls; cat /written; "
                                           "test -e /bin/ls || echo ls-gone; awk '$5 == \"/\" {print $9}' /proc/self/mountinfo")
    assert r.out.split() == ["one", "ls-gone", "overlay"], r.out + r.err
    assert sorted(os.listdir(busybox_rootfs)) == before and os.path.exists(os.path.join(busybox_rootfs, "bin/ls"))
    r2 = await run(runtime, busybox_rootfs, "test -e /written && echo LEAK; test -e /bin/ls && echo ls-back")
    assert r2.out.split() == ["ls-back"]  # a fresh layer per container


needs_tini = pytest.mark.skipif(not os.path.exists("/usr/bin/tini-static"), reason="needs tini (apt-get install tini)")


@needs_tini
async def test_init_reaps_zombies_and_forwards_signals(runtime, busybox_rootfs):
    r = await run(runtime, busybox_rootfs, "tr '\\0' ' ' < /proc/1/cmdline; echo; (sleep 0.05 &); sleep 0.3; "
                                           "grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l", init=True)
    lines = r.out.splitlines()
    assert lines[0].startswith("/dev/init -- /bin/sh -c")
    assert lines[1].strip() == "0"  # the orphaned sleep was reaped by the init
    spec = ContainerSpec(id=new_id(), rootfs=busybox_rootfs, argv=("sleep", "30"), capabilities=resolve_capabilities(),
                         init=True)
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            h = await n.start(runtime.start, spec)
            await trio.sleep(0.2)
            h.send_signal(signal.SIGTERM)  # plain `sleep` as PID 1 would ignore it
            assert (await h.wait()).exit_code == 128 + signal.SIGTERM
            await h.aclose()


async def test_namespaced_sysctls(runtime, busybox_rootfs):
    r = await run(runtime, busybox_rootfs, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni; "
                                           "echo 0 > /proc/sys/net/ipv4/ip_forward 2>/dev/null && echo WRITABLE",
                  sysctls=(("net.ipv4.ip_forward", "1"), ("kernel.shmmni", "1234")))
    assert r.out.split() == ["1", "1234"]
    with open("/proc/sys/kernel/shmmni") as f:
        assert f.read().strip() != "1234"  # the host's IPC namespace is untouched
    e = await start_fails(runtime, ContainerSpec(id=new_id(), rootfs=busybox_rootfs, argv=("true",),
                                                 sysctls=(("kernel.panic", "1"),)))
    assert e.stage == "sysctl"


USERNS = ((0, 200000, 65536),)


async def test_user_namespace_maps_root_away(runtime, busybox_rootfs):
    spec = ContainerSpec(id=new_id(), rootfs=busybox_rootfs, capabilities=resolve_capabilities(), uid_map=USERNS,
                         argv=("/bin/sh", "-c", "cat /proc/self/uid_map; id -u; stat -c %u /bin/busybox; "
                               "grep CapEff /proc/self/status; echo x >> /etc/passwd 2>/dev/null || echo passwd-ro; "
                               "mount -t tmpfs x /mnt 2>/dev/null || echo no-mount; sleep 5"),
                         mounts=(MountSpec(type="tmpfs", target="/tmp"),))
    out: list[bytes] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            h = await n.start(runtime.start, spec)
            with open(f"/proc/{h.pid}/status") as f:  # the host's view of the container's root
                ids = {line.split(":")[0]: line.split()[1:] for line in f if line.startswith(("Uid", "Gid"))}
            while b"no-mount" not in b"".join(out):
                out.append(await h.stdout.receive_some())
            h.kill()
            await h.wait()
            await h.aclose()
    assert ids == {"Uid": ["200000"] * 4, "Gid": ["200000"] * 4}
    lines = b"".join(out).decode().splitlines()
    assert lines[0].split() == ["0", "200000", "65536"]
    assert lines[1:4] == ["0", "65534", "CapEff:\t00000000a80425fb"]  # host root's files are nobody's here
    assert lines[4:6] == ["passwd-ro", "no-mount"]


async def test_user_namespace_read_only_root(runtime, busybox_rootfs):
    r = await run(runtime, busybox_rootfs, "id -u; touch /x 2>/dev/null || echo ro; touch /tmp/y && echo tmp-ok",
                  uid_map=USERNS, read_only=True, mounts=(MountSpec(type="tmpfs", target="/tmp"),))
    assert r.out.split() == ["0", "ro", "tmp-ok"], r.err


def test_the_zygote_and_oneshot_import_no_trio():
    import subprocess
    import sys

    code = ("import sys; import supervisor.runtime.zygote, supervisor.runtime.oneshot; "
            "bad = [m for m in ('trio', 'structlog', 'supervisor.runtime.launcher') if m in sys.modules]; "
            "assert not bad, bad")
    env = dict(os.environ, PYTHONPATH=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


async def test_zygote_death_fails_the_runtime_but_not_running_containers(busybox_rootfs):
    from supervisor.runtime.errors import ZygoteError
    from supervisor.runtime.launcher import Launcher

    state = __import__("tempfile").mkdtemp(prefix="pysup-test-state-")
    launcher = Launcher(state_root=state)
    caught: list[BaseException] = []
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as outer:
                async def containers(task_status=trio.TASK_STATUS_IGNORED):
                    async with trio.open_nursery() as n:
                        h = await n.start(launcher.start, ContainerSpec(
                            id=new_id(), rootfs=busybox_rootfs, argv=("sleep", "1"), capabilities=resolve_capabilities()))
                        task_status.started(h)
                try:
                    async with trio.open_nursery() as rt_nursery:
                        await rt_nursery.start(launcher.run)
                        handle = await outer.start(containers)
                        os.kill(launcher.zygote_pid, signal.SIGKILL)
                except* ZygoteError as group:
                    caught.extend(group.exceptions)
                assert (await handle.wait()) == ExitStatus(code=0)  # it ran to its end all the same
                await handle.aclose()
    finally:
        __import__("shutil").rmtree(state, ignore_errors=True)
    assert caught and "exited" in str(caught[0])


# --- exec into a running container ----------------------------------------------------------------

from supervisor.runtime.spec import ExecSpec  # noqa: E402


async def _exec(runtime, container, spec: ContainerSpec, argv, **kw) -> Result:
    out: list[bytes] = []
    err: list[bytes] = []
    xs = ExecSpec.for_container(spec, container.pid, argv, id=new_id(), **kw)
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            h = await n.start(runtime.exec, container, xs)
            async with trio.open_nursery() as readers:
                readers.start_soon(_drain, h.stdout, out)
                readers.start_soon(_drain, h.stderr, err)
            status = await h.wait()
            await h.aclose()
    return Result(status, b"".join(out).decode(), b"".join(err).decode(), h)


@pytest.mark.parametrize("userns", [False, True])
async def test_exec_joins_the_container(runtime, busybox_rootfs, userns):
    spec = ContainerSpec(id=new_id(), rootfs=busybox_rootfs, argv=("sleep", "30"), hostname="box",
                         capabilities=resolve_capabilities(), uid_map=USERNS if userns else (), env={"A": "1"})
    with trio.fail_after(15):
        async with trio.open_nursery() as n:
            c = await n.start(runtime.start, spec)
            r = await _exec(runtime, c, spec, ("/bin/sh", "-c", "hostname; echo $A; ls /proc | grep -c '^[0-9]'; "
                                               "cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /proc/self/uid_map; "
                                               "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; ls /; exit 5"))
            lines = r.out.splitlines()
            assert r.status.code == 5, r.err
            assert lines[:2] == ["box", "1"]
            assert int(lines[2]) <= 5  # the container's processes only
            assert lines[3].strip() == "sleep 30"
            assert lines[4].split() == (["0", "200000", "65536"] if userns else ["0", "0", "4294967295"])
            assert lines[5:8] == ["CapEff:\t00000000a80425fb", "NoNewPrivs:\t1", "Seccomp:\t2"]
            assert sorted(lines[8:]) == sorted(os.listdir(busybox_rootfs))
            u = await _exec(runtime, c, spec, ("id",), user="app")
            assert u.out.startswith("uid=1000(app) gid=1000(app)")
            c.kill()
            await c.wait()
            e: list[RuntimeSetupError] = []
            try:
                await _exec(runtime, c, spec, ("true",))
            except* RuntimeSetupError as group:
                e.extend(group.exceptions)  # type: ignore[arg-type]
            assert e and e[0].stage == "setns"
            await c.aclose()


async def test_privileged_gets_what_pysup_holds_and_no_masks(runtime, busybox_rootfs):
    from supervisor import syscalls as S
    from supervisor.runtime.security import capabilities_of_mask

    held = S.capget()[1]
    r = await run(runtime, busybox_rootfs, "grep CapEff /proc/self/status; head -c 1 /proc/interrupts | wc -c; "
                                           "mount -t tmpfs x /mnt && echo mounted", privileged=True,
                  capabilities=resolve_capabilities(privileged=True), seccomp="unconfined")
    lines = r.out.split()
    assert lines[:2] == ["CapEff:", f"{held & capability_mask(resolve_capabilities(privileged=True)):016x}"]
    assert lines[2:] == ["1", "mounted"]  # no masked paths, SYS_ADMIN
    lacking = set(resolve_capabilities(privileged=True)) - set(capabilities_of_mask(held))
    if lacking:
        assert any("not held by pysup" in w for w in r.handle.warnings)
