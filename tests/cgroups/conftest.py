"""Fixtures for the cgroup tests.

Real-kernel tests get a `manager` per driver the host can run: v1 on a hybrid or legacy host, v2
on a unified host (or inside scripts/test-cgroup2-vm.sh's VM). Each test gets its own base,
`pysup-test-<random>`, removed afterwards even when the test fails, and the finaliser fails the
test if anything of it is left in /sys/fs/cgroup. "Containers" are processes started through
`procs`, which wait on their stdin until they are in their cgroup, and are killed afterwards.
"""

from __future__ import annotations

import errno
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest

from supervisor.cgroups import Host, Mount, detect
from supervisor.cgroups.v1 import V1Manager
from supervisor.cgroups.v2 import V2Manager
from supervisor.config.model import FrozenMap
from supervisor.errors import CgroupError

PY = [sys.executable, "-S", "-c"]  # -S: no site import; a child starts fast, even in the VM


def unique(prefix: str = "pysup-test") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def host() -> Host:
    try:
        return detect()
    except CgroupError as exc:
        pytest.skip(str(exc))


def v2_problem(host: Host) -> str | None:
    """Why the v2 driver cannot be tested for real here, or None."""
    if host.unified is None:
        return "no cgroup2 mount on this host"
    try:
        with open(os.path.join(host.unified.mountpoint, "cgroup.controllers")) as f:
            offered = set(f.read().split())
    except OSError as exc:
        return f"cannot read the cgroup2 root: {exc.strerror}"
    if not {"memory", "pids", "cpu"} <= offered or host.layout != "unified":
        return (f"the cgroup2 mount at {host.unified.mountpoint} has no memory/pids/cpu controllers "
                f"({host.layout} host): scripts/test-cgroup2-vm.sh runs these tests in a cgroup v2 VM")
    return None


def v1_problem(host: Host) -> str | None:
    if not {"memory", "pids", "cpu", "freezer"} <= set(host.v1):
        return f"no cgroup v1 memory/pids/cpu/freezer hierarchies ({host.layout} host)"
    return None


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")


def make_manager(host: Host, kind: str, base: str, **kw):
    problem = v1_problem(host) if kind == "v1" else v2_problem(host)
    if problem:
        pytest.skip(problem)
    return V1Manager(host, base=base, **kw) if kind == "v1" else V2Manager(host, base=base, **kw)


def leftovers(host: Host, base: str) -> list[str]:
    mounts = [m.mountpoint for m in host.v1_mounts]
    if host.unified is not None:
        mounts.append(host.unified.mountpoint)
    return [os.path.join(m, base) for m in mounts if os.path.isdir(os.path.join(m, base))]


def force_remove(directory: str) -> None:
    """Last resort after a failed removal: kill what is there and rmdir bottom-up."""
    for root, dirs, _ in os.walk(directory, topdown=False):
        try:
            with open(os.path.join(root, "cgroup.procs")) as f:
                for pid in f.read().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        except OSError:
            pass
        for _ in range(200):
            try:
                os.rmdir(root)
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    break
                time.sleep(0.01)


class Cleanup:
    """Removes every base a test made and fails the test if anything was left."""

    def __init__(self, host: Host):
        self.host = host
        self.bases: list[tuple[object, str]] = []

    def add(self, manager, base: str):
        self.bases.append((manager, base))
        return manager

    def run(self) -> None:
        errors = []
        for manager, base in self.bases:
            try:
                manager.remove("", timeout=10)
            except CgroupError as exc:
                errors.append(str(exc))
            left = leftovers(self.host, base)
            if left:
                errors.append(f"left behind: {left}")
                for d in left:
                    force_remove(d)
        if errors:
            pytest.fail("; ".join(errors))


@pytest.fixture
def cleanup(host):
    c = Cleanup(host)
    yield c
    c.run()


@pytest.fixture(params=[
    pytest.param("v1", marks=pytest.mark.root),
    pytest.param("v2", marks=[pytest.mark.root, pytest.mark.cgroup_v2]),
])
def manager(request, host, cleanup):
    """A real driver with a fresh `pysup-test-<random>` base, removed after the test."""
    require_root()
    base = unique()
    return cleanup.add(make_manager(host, request.param, base), base)


@pytest.fixture
def make(host, cleanup):
    """Another real driver of the same kind, with options: make(manager, use_kill_file=False)."""

    def _make(like, **kw):
        kind = "v1" if isinstance(like, V1Manager) else "v2"
        base = unique()
        return cleanup.add(make_manager(host, kind, base, **kw), base)

    return _make


class Procs:
    """Container stand-ins: each waits for a line on stdin, then execs its command, so it can be
    put in its cgroup first. All are killed and reaped after the test."""

    def __init__(self):
        self.started: list[subprocess.Popen] = []

    def start(self, manager, path: str, argv: list[str], *, go: bool = True, **kw) -> subprocess.Popen:
        p = subprocess.Popen(["sh", "-c", 'read _go; exec "$@"', "sh", *argv], stdin=subprocess.PIPE, **kw)
        self.started.append(p)
        manager.add_process(path, p.pid)
        if go:
            self.go(p)
        return p

    @staticmethod
    def go(p: subprocess.Popen) -> None:
        """Let a process started with go=False run its command."""
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()

    def python(self, manager, path: str, code: str, **kw) -> subprocess.Popen:
        return self.start(manager, path, [*PY, code], **kw)

    @staticmethod
    def alive(pid: int) -> bool:
        return alive(pid)

    def close(self) -> None:
        for p in self.started:
            if p.poll() is None:
                p.kill()
            p.wait()
            if p.stdin:
                p.stdin.close()
            for stream in (p.stdout, p.stderr):
                if stream:
                    stream.close()


@pytest.fixture
def procs():
    p = Procs()
    yield p
    p.close()


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie). Also `procs.alive`."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@pytest.fixture
def fake_v2(tmp_path):
    """fake_v2("cpu memory") -> a Host whose cgroup v2 root is a directory in tmp_path."""
    return lambda controllers="cpu io memory pids cpuset": fake_v2_host(tmp_path, controllers)


@pytest.fixture
def fake_v1(tmp_path):
    """fake_v1(("memory", "cpu")) -> a legacy Host whose v1 hierarchies are directories in tmp_path."""
    return lambda controllers=None: fake_v1_host(tmp_path, controllers) if controllers else fake_v1_host(tmp_path)


def fake_v2_host(tmp_path, controllers: str = "cpu io memory pids cpuset") -> Host:
    """A cgroup v2 root in tmp_path: just the files the driver reads at the root."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    return Host("unified", Mount(str(root)), FrozenMap())


def fake_v1_host(tmp_path, controllers=("memory", "cpu", "cpuacct", "cpuset", "pids", "freezer", "blkio")) -> Host:
    mounts = {}
    for name in controllers:
        d = tmp_path / "v1" / name
        d.mkdir(parents=True)
        mounts[name] = Mount(str(d), "/", frozenset({name}))
    return Host("legacy", None, FrozenMap(mounts))
