"""Host id ranges for user namespaces: where they come from, no overlap, freed, reclaimed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from supervisor.runtime import userns as U

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path):
    return {"PYSUP_STATE_DIR": str(tmp_path / "state")}


def files(tmp_path, subuid: str, subgid: str) -> dict:
    (tmp_path / "subuid").write_text(subuid)
    (tmp_path / "subgid").write_text(subgid)
    return {"subuid": str(tmp_path / "subuid"), "subgid": str(tmp_path / "subgid")}


def test_ranges_from_subuid_and_subgid(tmp_path):
    f = files(tmp_path, "alice:100000:65536\nroot:200000:131072\n0:900000:65536\n", "root:200000:65536\n0:900000:65536\n")
    assert U.host_ranges(**f) == ([(200000, 65536), (900000, 65536)], f["subuid"])
    f = files(tmp_path, "", "")
    assert U.host_ranges(**f) == ([U.RESERVED], "reserved")
    f = files(tmp_path, "root:100000:65536\n", "root:500000:65536\n")
    with pytest.raises(U.UsernsError, match="no ids in common"):
        U.host_ranges(**f)


def test_allocations_never_overlap_and_are_freed(tmp_path, env):
    f = files(tmp_path, "root:100000:196608\n", "root:100000:196608\n")
    a = U.allocate("pysup-test-a", environ=env, **f)
    b = U.allocate("pysup-test-b", environ=env, **f)
    c = U.allocate("pysup-test-c", environ=env, **f)
    assert sorted([a, b, c]) == [(100000, 65536), (165536, 65536), (231072, 65536)]
    with pytest.raises(U.UsernsError, match="no free range"):
        U.allocate("pysup-test-d", environ=env, **f)
    with pytest.raises(U.UsernsError, match="already"):
        U.allocate("pysup-test-a", environ=env, **f)
    U.release("pysup-test-b", environ=env)
    assert U.allocate("pysup-test-d", environ=env, **f) == b  # the freed slot, reused
    U.release("pysup-test-nothing", environ=env)
    record = json.loads(Path(env["PYSUP_STATE_DIR"], "userns", "allocations.json").read_text())
    assert sorted(record) == ["pysup-test-a", "pysup-test-c", "pysup-test-d"]
    assert record["pysup-test-a"]["pid"] == os.getpid()


def test_a_dead_owners_range_is_reclaimed(tmp_path, env):
    f = files(tmp_path, "root:100000:65536\n", "root:100000:65536\n")
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(p.stdout)
    U.allocate("pysup-test-crashed", environ=env, owner_pid=dead, **f)
    assert U.allocate("pysup-test-new", environ=env, **f) == (100000, 65536)
    assert list(U.allocations(env)) == ["pysup-test-new"]


def test_a_range_is_kept_for_the_processes_that_would_not_stop(tmp_path, env):
    """release(kept_by=pids): the range stays taken, under a name of its own, until those
    processes are gone, even once its owner has exited; the container's name is free again."""
    f = files(tmp_path, "root:100000:393216\n", "root:100000:393216\n")
    stuck = subprocess.Popen([sys.executable, "-S", "-c", "import time; time.sleep(60)"])
    try:
        a = U.allocate("pysup-test-a", environ=env, **f)
        U.release("pysup-test-a", environ=env, kept_by=[stuck.pid, 999999999])  # the gone one is dropped
        assert list(U.allocations(env)) == [f"kept:pysup-test-a:{a[0]}"]
        # a reused id (same name, same cgroup, the stuck process still in it): a new range, kept too
        again = U.allocate("pysup-test-a", environ=env, **f)
        assert again != a
        U.release("pysup-test-a", environ=env, kept_by=[stuck.pid])
        assert sorted(U.allocations(env)) == [f"kept:pysup-test-a:{a[0]}", f"kept:pysup-test-a:{again[0]}"]
        b = U.allocate("pysup-test-b", environ=env, **f)
        assert b not in (a, again)  # both still taken: never handed out
        # a shared (per-service) range: a holder leaving with a stuck process keeps it for that
        # process even after the last holder left, or after the pysup that owned it died
        s = U.allocate("service:p/web", holder="p-web-1", environ=env, **f)
        U.allocate("service:p/web", holder="p-web-2", environ=env, **f)
        U.release("service:p/web", holder="p-web-1", environ=env, kept_by=[stuck.pid])
        U.release("service:p/web", holder="p-web-2", environ=env)  # the last holder
        assert U.allocations(env)[f"kept:service:p/web:{s[0]}"]["keepers"][0]["pid"] == stuck.pid
        p = subprocess.run([sys.executable, "-S", "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        d = U.allocate("service:p/db", holder="p-db-1", environ=env, owner_pid=int(p.stdout), **f)
        data = json.loads(Path(env["PYSUP_STATE_DIR"], "userns", "allocations.json").read_text())
        data["service:p/db"]["keepers"] = [{"pid": stuck.pid, "start": U._start_time(stuck.pid)}]
        Path(env["PYSUP_STATE_DIR"], "userns", "allocations.json").write_text(json.dumps(data))
        # its owner died (pysup killed), the stuck holder's process runs: the next run's replicas
        # get a new range for the service, and the old one stays the stuck process's
        d2 = U.allocate("service:p/db", holder="p-db-1", environ=env, **f)
        assert d2 != d and f"kept:service:p/db:{d[0]}" in U.allocations(env)
    finally:
        stuck.kill()
        stuck.wait()
    U.release("pysup-test-b", environ=env)
    U.release("service:p/db", holder="p-db-1", environ=env)
    assert U.allocate("pysup-test-c", environ=env, **f) == a  # the processes are gone: reclaimed
    assert list(U.allocations(env)) == ["pysup-test-c"]


def test_the_reserved_range_when_root_has_none(tmp_path, env):
    f = files(tmp_path, "", "")
    first, count = U.allocate("pysup-test-r", environ=env, **f)
    assert (first, count) == (U.RESERVED[0], 65536) and first + count < 2**31


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/bin/busybox"), reason="needs root and busybox")
def test_pysup_run_userns_auto(scratch, busybox_rootfs):
    tmp_path = scratch  # 0755: a user namespace's root reaches its layer and volumes through here
    state = tmp_path / "state"
    state.mkdir()
    e = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "PYSUP_STATE_DIR": str(state),
         "PYSUP_RUNTIME_DIR": str(tmp_path / "run")}
    r = subprocess.run([sys.executable, "-m", "supervisor", "run", "--rm", "--userns", "auto", "--rootfs", busybox_rootfs,
                        "-v", "pysup-test-uvol:/v", "-v", "/anon", "--", "/bin/sh", "-c",
                        "cat /proc/self/uid_map; cat /proc/self/gid_map; id -u; touch /v/x /anon/y && echo wrote; "
                        "cat /etc/passwd > /dev/null && echo readable; stat -c %u /bin/busybox; "
                        "echo changed >> /etc/passwd && touch /tmp/t && echo image-writable"],
                       capture_output=True, text=True, env=e, timeout=60, cwd=str(REPO))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    (first, _count), *_ = U.host_ranges()[0]
    uid_map = lines[0].split()
    assert uid_map == lines[1].split() and uid_map[0] == "0" and uid_map[2] == "65536"
    assert int(uid_map[1]) >= first
    # idmapped layers: host root's files are the container root's, written through the writable layer
    assert lines[2:] == ["0", "wrote", "readable", "0", "image-writable"]
    with open(os.path.join(busybox_rootfs, "etc/passwd")) as f:
        assert "changed" not in f.read(), "the rootfs itself was written"
    # volumes are idmapped too: what the container's root writes is host root's on disk, so a
    # container with any other range reads it as its own root's
    assert os.stat(state / "volumes" / "pysup-test-uvol" / "x").st_uid == 0
    # ... so no host user may reach what it leaves there (a setuid-root file)
    assert os.stat(state / "volumes").st_mode & 0o777 == 0o700
    assert U.allocations({"PYSUP_STATE_DIR": str(state)}) == {}


def _run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    e = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "PYSUP_STATE_DIR": str(tmp_path / "state"),
         "PYSUP_RUNTIME_DIR": str(tmp_path / "run")}
    return subprocess.run([sys.executable, "-m", "supervisor", "run", "--rm", "--userns", "auto", *args],
                          capture_output=True, text=True, env=e, timeout=60, cwd=str(REPO))


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/bin/busybox"), reason="needs root and busybox")
def test_userns_read_only_binds_are_idmapped_writable_host_dirs_and_the_host_view_are_not(scratch, busybox_rootfs):
    host_file = scratch / "owned-by-root"
    host_file.write_text("x\n")
    os.chown(host_file, 0, 0)
    os.chown(scratch, 0, 0)
    r = _run(scratch, "--rootfs", busybox_rootfs, "-v", f"{scratch}:/dir", "-v", f"{host_file}:/file:ro", "--",
             "/bin/sh", "-c", "cat /proc/self/uid_map; stat -c %u /dir /dir/owned-by-root /file; "
             "touch /dir/made 2>/dev/null && echo wrote || echo refused")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[0::2] == ["0", "65536"] and int(lines[0].split()[1]) > 0
    # read-only: host root's file is the container root's; writable host directory: host ids kept
    # (nobody inside), so the container's root cannot write there as host root
    assert lines[1:] == ["65534", "65534", "0", "refused"], r.stderr
    assert not (scratch / "made").exists() and "warning" not in r.stderr
    # image: host: the host's files stay host ids (nobody inside): root-only ones are out of reach
    r = _run(scratch, "host", "--", "/bin/sh", "-c", "id -u; stat -c %u /etc/passwd /usr/bin; "
             "cat /etc/shadow >/dev/null 2>&1 && echo shadow-read || echo shadow-refused; "
             "touch /usr/pysup-test-x 2>/dev/null || echo read-only")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["0", "65534", "65534", "shadow-refused", "read-only"], r.stderr


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/bin/busybox"), reason="needs root and busybox")
def test_userns_a_filesystem_that_cannot_be_idmapped_is_bound_as_is_with_a_warning(scratch, busybox_rootfs):
    # sysfs has no idmapped mounts (FS_ALLOW_IDMAP): the bind works, its root-owned files are nobody's
    r = _run(scratch, "--rootfs", busybox_rootfs, "-v", "/sys/kernel:/k:ro", "--", "/bin/stat", "-c", "%u", "/k")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["65534"]
    assert "bind mount /sys/kernel -> /k: its filesystem cannot be idmapped" in r.stderr


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/bin/busybox"), reason="needs root and busybox")
def test_userns_a_writable_bind_with_idmap_is_written_as_host_root(scratch, busybox_rootfs):
    data = scratch / "data"
    data.mkdir()
    (data / "owned-by-root").write_text("host\n")
    for path in (data, data / "owned-by-root"):
        os.chown(path, 0, 0)
    os.chmod(data, 0o755)
    script = ("stat -c %u /d /d/owned-by-root; touch /d/made && echo wrote || echo refused; "
              "mkdir /d/sub 2>/dev/null && chown 1000:1000 /d/sub && echo chowned || echo no-mkdir")
    # the opt-in: host root's directory is the container root's, and what it writes is host root's
    r = _run(scratch, "--rootfs", busybox_rootfs, "-v", f"{data}:/d:rw,idmap", "--", "/bin/sh", "-c", script)
    if "cannot be idmapped" in r.stderr:
        pytest.skip(f"this kernel cannot idmap {data}'s filesystem: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["0", "0", "wrote", "chowned"], r.stderr
    made, sub = os.stat(data / "made"), os.stat(data / "sub")
    assert (made.st_uid, made.st_gid) == (0, 0)  # host root, not the container's range
    assert (sub.st_uid, sub.st_gid) == (1000, 1000)  # the container's ids are the host's ids on disk
    for path in (data / "made", data / "sub"):
        path.unlink() if path.is_file() else path.rmdir()
    # without it (today's rule): host ids kept, host root's directory is nobody's and not writable
    r = _run(scratch, "--rootfs", busybox_rootfs, "-v", f"{data}:/d", "--", "/bin/sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["65534", "65534", "refused", "no-mkdir"], r.stderr
    assert sorted(os.listdir(data)) == ["owned-by-root"]
    # CAP_SYS_ADMIN inside changes nothing for a writable opt-in (it is writable as host root anyway) ...
    r = _run(scratch, "--privileged", "--rootfs", busybox_rootfs, "-v", f"{data}:/d:idmap", "--", "/bin/sh", "-c",
             "touch /d/made && stat -c %u /d/made")
    assert r.returncode == 0 and r.stdout.split() == ["0"], r.stderr
    assert os.stat(data / "made").st_uid == 0
    # ... but does not lift the read-only rule: `ro,idmap` would be remountable into host root's writes
    r = _run(scratch, "--privileged", "--rootfs", busybox_rootfs, "-v", f"{data}:/d:ro,idmap", "--", "/bin/sh", "-c",
             REMOUNT_ALL_RW + "echo changed > /d/owned-by-root; stat -c %u /d/owned-by-root")
    assert r.returncode == 0 and r.stdout.split() == ["65534"], r.stderr
    assert (data / "owned-by-root").read_text() == "host\n"
    assert "read-only and the container holds CAP_SYS_ADMIN" in r.stderr


def test_a_shared_range_goes_with_its_last_holder(tmp_path, env):
    f = files(tmp_path, "root:100000:196608\n", "root:100000:196608\n")
    a = U.allocate("service:p/web", holder="p-web-1", environ=env, **f)
    assert U.allocate("service:p/web", holder="p-web-2", environ=env, **f) == a  # joined, not a new range
    other = U.allocate("p-db-1", environ=env, **f)
    assert other != a
    U.release("service:p/web", holder="p-web-1", environ=env)
    assert U.allocations(env)["service:p/web"]["holders"] == ["p-web-2"]
    U.release("service:p/web", holder="p-web-2", environ=env)
    assert sorted(U.allocations(env)) == ["p-db-1"]
    with pytest.raises(U.UsernsError, match="already"):  # a per-container range is never joined
        U.allocate("p-db-1", holder="p-db-2", environ=env, **f)


# A container that keeps CAP_SYS_ADMIN in its user namespace (privileged, cap_add) may remount its
# own mounts: the kernel locks mount flags only on mounts copied into a less privileged namespace,
# not on those pysup attaches or makes read-only for it. Through an idmapped mount that would make
# host root's files writable as host root; read-only things must stay out of reach.
REMOUNT_ALL_RW = "for m in $(cut -d' ' -f5 /proc/self/mountinfo); do mount -o remount,bind,rw $m 2>/dev/null; done; "


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/bin/busybox"), reason="needs root and busybox")
def test_userns_privileged_cannot_write_host_root_files_through_a_read_only_bind(scratch, busybox_rootfs):
    victim = scratch / "src" / "owned-by-root"
    victim.parent.mkdir()
    victim.write_text("host\n")
    os.chown(victim, 0, 0)
    os.chmod(victim, 0o644)
    for flags in (("--privileged",), ("--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined")):
        r = _run(scratch, *flags, "--rootfs", busybox_rootfs, "-v", f"{victim.parent}:/x:ro", "--", "/bin/sh", "-c",
                 REMOUNT_ALL_RW + "echo changed > /x/owned-by-root; cat /x/owned-by-root")
        assert r.returncode == 0, r.stderr
        assert victim.read_text() == "host\n", (flags, r.stdout, r.stderr)
        assert "read-only and the container holds CAP_SYS_ADMIN" in r.stderr
    # without CAP_SYS_ADMIN the read-only bind stays idmapped: host root's file is the container root's
    r = _run(scratch, "--rootfs", busybox_rootfs, "-v", f"{victim.parent}:/x:ro", "--", "/bin/stat", "-c", "%u",
             "/x/owned-by-root")
    assert r.returncode == 0 and r.stdout.split() == ["0"], r.stderr


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/bin/busybox"), reason="needs root and busybox")
def test_userns_privileged_cannot_write_host_root_files_through_a_read_only_root(scratch, busybox_rootfs):
    # image: host (outside /tmp, which the view replaces) and a read-only rootfs directory
    outside = Path(tempfile.mkdtemp(prefix=".pysup-test-", dir=REPO))
    try:
        victim = outside / "owned-by-root"
        victim.write_text("host\n")
        os.chmod(victim, 0o644)
        r = _run(scratch, "--privileged", "host", "--", "/bin/sh", "-c", REMOUNT_ALL_RW + f"echo changed > {victim}")
        assert victim.read_text() == "host\n", (r.stdout, r.stderr)
        assert "Permission denied" in r.stderr, r.stderr  # the view is never idmapped: host ids, nobody inside
    finally:
        shutil.rmtree(outside, ignore_errors=True)
    rootfs = scratch / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    r = _run(scratch, "--privileged", "--read-only", "--rootfs", str(rootfs), "--", "/bin/sh", "-c",
             REMOUNT_ALL_RW + "echo changed > /etc/hostname-pysup-test; echo changed >> /etc/passwd")
    assert not (rootfs / "etc" / "hostname-pysup-test").exists(), (r.stdout, r.stderr)
    assert "changed" not in (rootfs / "etc" / "passwd").read_text()
