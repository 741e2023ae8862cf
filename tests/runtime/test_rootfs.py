"""The mount plan as data, secure path resolution, and applying a plan through the recording fake."""

import errno
import os

import pytest

from supervisor import syscalls as S
from supervisor.runtime import rootfs as R
from supervisor.runtime.spec import MountSpec


def plan(tmp_path, **kw):
    kw.setdefault("sys_glob_root", str(tmp_path / "nosys"))
    return R.plan_rootfs(R.RootfsOptions(rootfs=str(tmp_path / "root"), **kw))


def mounts(p):
    return {s.target: s for s in p.before_pivot if isinstance(s, R.Mount)}


def test_default_plan_has_the_reference_filesystems(tmp_path):
    p = plan(tmp_path)
    m = mounts(p)
    assert [s.target for s in p.before_pivot if isinstance(s, R.Mount)][:2] == ["/proc", "/dev"]
    assert m["/proc"].fstype == "proc" and m["/proc"].flags == S.MS_NOSUID | S.MS_NODEV | S.MS_NOEXEC
    assert m["/sys"].fstype == "sysfs" and m["/sys"].flags & S.MS_RDONLY
    assert m["/dev"].flags & S.MS_NODEV and m["/dev"].data == "mode=755,size=65536k"
    assert m["/dev/pts"].data == "newinstance,ptmxmode=0666,mode=0620,gid=5"
    assert m["/dev/shm"].flags == S.MS_NOSUID | S.MS_NODEV | S.MS_NOEXEC
    assert m["/dev/mqueue"].fstype == "mqueue"
    for dev in ("null", "zero", "full", "random", "urandom", "tty"):
        step = m[f"/dev/{dev}"]
        assert step.source == f"/dev/{dev}" and step.flags == S.MS_BIND and step.create == "file"
    links = {s.path: s.target for s in p.before_pivot if isinstance(s, R.Symlink)}
    assert links == {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1",
                     "/dev/stderr": "/proc/self/fd/2", "/dev/ptmx": "pts/ptmx"}
    masked = [s.path for s in p.after_pivot if isinstance(s, R.MaskPath)]
    assert {"/proc/kcore", "/proc/keys", "/proc/interrupts", "/sys/firmware", "/sys/devices/virtual/powercap"} <= set(masked)
    ro = [s.path for s in p.after_pivot if isinstance(s, R.ReadonlyPath)]
    assert ro == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
    assert R.ReadonlyRoot() not in p.after_pivot


def test_thermal_throttle_glob_is_expanded(tmp_path):
    for cpu in ("cpu0", "cpu1"):
        (tmp_path / "sys/sys/devices/system/cpu" / cpu / "thermal_throttle").mkdir(parents=True)
    p = plan(tmp_path, sys_glob_root=str(tmp_path / "sys"))
    masked = [s.path for s in p.after_pivot if isinstance(s, R.MaskPath)]
    assert "/sys/devices/system/cpu/cpu0/thermal_throttle" in masked
    assert "/sys/devices/system/cpu/cpu1/thermal_throttle" in masked
    assert not any("*" in m for m in masked)


def test_user_mounts_binds_ro_private_and_tmpfs(tmp_path):
    p = plan(tmp_path, read_only=True, mounts=(
        MountSpec(type="bind", source="/srv/data", target="/data/deep", read_only=True),
        MountSpec(type="tmpfs", target="/run", tmpfs_size=1 << 20, tmpfs_mode=0o1777),
        MountSpec(type="bind", source="/srv", target="/data", propagation="rslave"),
    ))
    m = mounts(p)
    order = [s.target for s in p.before_pivot if isinstance(s, R.Mount)]
    assert order.index("/data") < order.index("/data/deep")  # parents first
    deep = m["/data/deep"]
    assert deep.flags == S.MS_BIND | S.MS_REC and deep.create == "auto"
    assert deep.propagation == S.MS_PRIVATE | S.MS_REC
    assert deep.remount == S.MS_BIND | S.MS_REMOUNT | S.MS_NOSUID | S.MS_NODEV | S.MS_RDONLY
    assert m["/data"].propagation == S.MS_SLAVE | S.MS_REC and not m["/data"].remount & S.MS_RDONLY
    assert m["/run"].fstype == "tmpfs" and m["/run"].data == "mode=1777,size=1048576"
    assert m["/run"].flags == S.MS_NOSUID | S.MS_NODEV | S.MS_NOEXEC
    assert p.after_pivot[0] == R.ReadonlyRoot()


@pytest.mark.parametrize(("mount", "message"), [
    (MountSpec(type="bind", source="rel", target="/x"), "not an absolute path"),
    (MountSpec(type="bind", source="/x", target="rel"), "not absolute"),
    (MountSpec(type="bind", source="/x", target="/x", propagation="shared"), "propagation"),
    (MountSpec(type="tmpfs", target="/x", options=("bogus",)), "unknown mount option"),
])
def test_bad_mounts_are_refused_at_plan_time(tmp_path, mount, message):
    with pytest.raises(R.MountPlanError, match=message):
        plan(tmp_path, mounts=(mount,))


def test_generated_files_are_written_on_the_host_and_bound(tmp_path):
    p = plan(tmp_path, generated_files=(("/etc/hostname", "/state/hostname", "box\n"),))
    i = p.before_pivot.index(R.WriteHostFile("/state/hostname", "box\n"))
    bind = p.before_pivot[i + 1]
    assert isinstance(bind, R.Mount) and bind.target == "/etc/hostname" and bind.source == "/state/hostname"
    assert bind.create == "file" and bind.remount & S.MS_NODEV


def test_a_user_mount_replaces_a_generated_file(tmp_path):
    p = plan(tmp_path, mounts=(MountSpec(type="bind", source="/h", target="/etc/hosts"),),
             generated_files=(("/etc/hosts", "/state/hosts", "x"),))
    assert R.WriteHostFile("/state/hosts", "x") not in p.before_pivot


# --- secure_join ---------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "real").mkdir()
    os.symlink("/real", root / "abs")  # absolute: means <root>/real
    os.symlink("../../../../../../outside", root / "climb")
    os.symlink("/../../etc", root / "climbabs")
    os.symlink("real/../etc", root / "rel")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    (tmp_path / "outside").mkdir()
    return str(root)


@pytest.mark.parametrize(("unsafe", "expected"), [
    ("/", ""),
    ("/etc/passwd", "/etc/passwd"),
    ("/abs/x", "/real/x"),
    ("/climb", "/outside"),  # clamped at the root: <root>/outside, never the host's
    ("/climb/x", "/outside/x"),
    ("/climbabs/passwd", "/etc/passwd"),
    ("/rel", "/etc"),
    ("/../../../etc", "/etc"),
    ("/missing/../etc", "/etc"),
    ("relative/path", "/relative/path"),
])
def test_secure_join_never_leaves_the_root(tree, unsafe, expected):
    got = R.secure_join(tree, unsafe)
    assert got == tree + expected
    assert got == tree or got.startswith(tree + "/")


def test_secure_join_loops(tree):
    with pytest.raises(S.SyscallError) as info:
        R.secure_join(tree, "/loop1/x")
    assert info.value.errno == errno.ELOOP


# --- apply through the recording fake ------------------------------------------------------------


def test_apply_order_prepare_mounts_pivot_masks(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    p = plan(tmp_path, masked_paths=("/proc/kcore",), readonly_paths=("/proc/sys",))
    sc = S.RecordingSyscalls()
    exists = {"/proc/kcore", "/proc/sys"}
    R.apply(p, sc, exists=lambda path: path in exists or os.path.lexists(path),
            isdir=lambda path: path == "/proc/sys")
    r = str(root)
    calls = sc.calls
    assert calls[0] == ("mount", None, "/", None, S.MS_SLAVE | S.MS_REC, None)
    assert calls[1] == ("mount", r, r, None, S.MS_BIND | S.MS_REC, None)
    assert calls[2] == ("mount", None, r, None, S.MS_PRIVATE, None)
    assert calls[3] == ("mount", None, r, None, S.MS_BIND | S.MS_REMOUNT | S.MS_NODEV, None)
    assert ("mkdir", r + "/proc", 0o755) in calls
    assert ("mount", "proc", r + "/proc", "proc", S.MS_NOSUID | S.MS_NODEV | S.MS_NOEXEC, None) in calls
    assert ("touch", r + "/dev/null", 0o644) in calls
    assert ("mount", "/dev/null", r + "/dev/null", None, S.MS_BIND, None) in calls
    piv = calls.index(("pivot_root", ".", "."))
    assert calls[piv - 1] == ("chdir", r)
    assert calls[piv + 1:piv + 4] == [("mount", None, ".", None, S.MS_SLAVE | S.MS_REC, None),
                                      ("umount2", ".", S.MNT_DETACH), ("chdir", "/")]
    after = calls[piv + 4:]
    assert after[0] == ("mount", "/dev/null", "/proc/kcore", None, S.MS_BIND, None)
    assert after[1] == ("mount", "/proc/sys", "/proc/sys", None, S.MS_BIND | S.MS_REC, None)
    assert after[2] == ("mount", None, "/proc/sys", None,
                        S.MS_BIND | S.MS_REMOUNT | S.MS_RDONLY | S.MS_NOSUID | S.MS_NODEV | S.MS_NOEXEC, None)
    assert not any(c[0] == "mount" and c[2] and not c[2].startswith((r, "/proc", "/", ".")) for c in calls)


def test_masked_directory_gets_an_empty_readonly_tmpfs(tmp_path):
    (tmp_path / "root").mkdir()
    p = plan(tmp_path, masked_paths=("/proc/acpi",), readonly_paths=())
    sc = S.RecordingSyscalls()
    R.apply(p, sc, exists=lambda path: path == "/proc/acpi" or os.path.lexists(path),
            isdir=lambda path: path == "/proc/acpi" or os.path.isdir(path))
    assert sc.calls[-1] == ("mount", "tmpfs", "/proc/acpi", "tmpfs",
                            S.MS_RDONLY | S.MS_NOSUID | S.MS_NODEV | S.MS_NOEXEC, "mode=555")


def test_missing_masked_paths_are_skipped(tmp_path):
    (tmp_path / "root").mkdir()
    sc = S.RecordingSyscalls()
    R.apply(plan(tmp_path, masked_paths=("/proc/nothing-here",), readonly_paths=()), sc)
    assert sc.calls[-1] == ("chdir", "/")


def test_failure_reports_the_stage(tmp_path):
    (tmp_path / "root").mkdir()
    sc = S.RecordingSyscalls(fail={("mount", str(tmp_path / "root/proc")): errno.EPERM})
    with pytest.raises(R.StageError) as info:
        R.apply(plan(tmp_path), sc)
    assert info.value.stage == "mount /proc"
    assert str(info.value).startswith("mount /proc: mount ") and "EPERM" in str(info.value)
    assert info.value.errno == errno.EPERM
    assert "pivot_root" not in sc.ops()


def test_missing_bind_source_is_a_stage_error(tmp_path):
    (tmp_path / "root").mkdir()
    p = plan(tmp_path, mounts=(MountSpec(type="bind", source=str(tmp_path / "nope"), target="/data"),))
    with pytest.raises(R.StageError) as info:
        R.apply(p, S.RecordingSyscalls())
    assert info.value.stage == "mount /data" and info.value.errno == errno.ENOENT


def test_bind_target_through_a_symlink_stays_inside(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/../../../../tmp", root / "evil")
    src = tmp_path / "src"
    src.mkdir()
    p = plan(tmp_path, mounts=(MountSpec(type="bind", source=str(src), target="/evil/x"),))
    sc = S.RecordingSyscalls()
    R.apply(p, sc)
    binds = [c for c in sc.calls if c[0] == "mount" and c[1] == str(src)]
    assert binds == [("mount", str(src), f"{root}/tmp/x", None, S.MS_BIND | S.MS_REC, None)]
    assert ("mkdir", f"{root}/tmp", 0o755) in sc.calls


def test_check_dev_null_refuses_other_nodes(tmp_path):
    f = tmp_path / "fake-null"
    f.write_text("")
    with pytest.raises(S.SyscallError, match="not a 1:3"):
        R.check_dev_null(str(f))
    R.check_dev_null("/dev/null")


def test_generated_files_go_on_a_private_tmpfs_first(tmp_path):
    p = plan(tmp_path, generated_files=(("/etc/hosts", "/state/hosts", "x"),), generated_dir="/state")
    i = p.before_pivot.index(R.HostTmpfs("/state"))
    assert p.before_pivot[i + 1] == R.WriteHostFile("/state/hosts", "x")
    (tmp_path / "root").mkdir()
    sc = S.RecordingSyscalls()
    R.apply(p, sc)
    assert ("mount", "tmpfs", "/state", "tmpfs", S.MS_NOSUID | S.MS_NODEV | S.MS_NOEXEC, "size=256k,mode=755") in sc.calls


def test_writable_layer_is_an_overlay_in_the_state_dir(tmp_path):
    (tmp_path / "root").mkdir()
    p = plan(tmp_path, layer_dir="/state/layer")
    assert p.overlay == R.Overlay(str(tmp_path / "root"), "/state/layer/upper", "/state/layer/work", "/state/layer/merged")
    assert p.rootfs == "/state/layer/merged"
    sc = S.RecordingSyscalls()
    R.apply(p, sc, exists=lambda path: False)
    assert sc.calls[:6] == [
        ("mount", None, "/", None, S.MS_SLAVE | S.MS_REC, None),
        ("mkdir", "/state/layer", 0o755), ("mkdir", "/state/layer/upper", 0o755),
        ("mkdir", "/state/layer/work", 0o755), ("mkdir", "/state/layer/merged", 0o755),
        ("mount", "overlay", "/state/layer/merged", "overlay", S.MS_NODEV,
         f"lowerdir={tmp_path}/root,upperdir=/state/layer/upper,workdir=/state/layer/work"),
    ]
    assert ("mount", "proc", "/state/layer/merged/proc", "proc", S.MS_NOSUID | S.MS_NODEV | S.MS_NOEXEC, None) in sc.calls
    assert ("chdir", "/state/layer/merged") in sc.calls


def test_read_only_root_needs_no_layer(tmp_path):
    assert plan(tmp_path, layer_dir="/state/layer", read_only=True).overlay is None


def test_layer_refuses_paths_overlayfs_cannot_name(tmp_path):
    with pytest.raises(R.MountPlanError, match="writable layer"):
        R.plan_rootfs(R.RootfsOptions(rootfs="/a,b", layer_dir="/s"))


def test_sysctls_and_init_in_the_plan(tmp_path):
    p = plan(tmp_path, sysctls=(("net.ipv4.ip_forward", "1"),), init_binary="/usr/bin/tini-static")
    assert p.before_pivot[1] == R.Sysctl("net.ipv4.ip_forward", "1")  # right after /proc
    m = mounts(p)["/dev/init"]
    assert m.source == "/usr/bin/tini-static" and m.create == "file" and m.remount & S.MS_RDONLY
    (tmp_path / "root").mkdir()
    sc = S.RecordingSyscalls()
    R.apply(p, sc)
    assert ("write_file", f"{tmp_path}/root/proc/sys/net/ipv4/ip_forward", b"1", 0o644) in sc.calls
