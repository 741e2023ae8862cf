"""The drivers' file writes against a fake cgroupfs in tmp_path (no root needed).

`FakeKernel` makes a new directory look like a cgroup (its control files appear), applies
`+ctrl` writes to cgroup.subtree_control, and enforces the one v1 rule the write order depends on:
memory.memsw.limit_in_bytes >= memory.limit_in_bytes at every moment. The real-kernel tests in
integration/ check the same paths on real kernels.
"""

from __future__ import annotations

import errno
import os

import pytest

from supervisor.cgroups import files
from supervisor.cgroups.v1 import V1Manager
from supervisor.cgroups.v2 import V2Manager
from supervisor.config.model import Resources
from supervisor.errors import CgroupError

V1_UNLIMITED = "9223372036854771712"

V2_FILES = {
    "cgroup.procs": "", "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.controllers": "",
    "cgroup.subtree_control": "", "cgroup.freeze": "0", "cgroup.kill": "",
    "memory.max": "max", "memory.swap.max": "max", "memory.low": "0", "memory.events": "oom_kill 0\n",
    "cpu.max": "max 100000", "cpu.weight": "100", "cpuset.cpus": "", "cpuset.cpus.effective": "0-1\n", "pids.max": "max",
    "pids.events": "max 0\n", "io.weight": "default 100\n",
}
V1_FILES = {
    "memory": {"memory.limit_in_bytes": V1_UNLIMITED, "memory.memsw.limit_in_bytes": V1_UNLIMITED,
               "memory.soft_limit_in_bytes": V1_UNLIMITED, "memory.oom_control": "oom_kill 0\n",
               "cgroup.event_control": ""},
    "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1", "cpu.shares": "1024"},
    "cpuacct": {},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "pids": {"pids.max": "max", "pids.events": "max 0\n"},
    "freezer": {"freezer.state": "THAWED"},
    "blkio": {"blkio.bfq.weight": "100", "blkio.bfq.weight_device": ""},
}


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


class FakeKernel:
    def __init__(self, monkeypatch, root: str, kind: str, controllers: str = "cpu io memory pids cpuset"):
        self.root, self.kind, self.controllers = root, kind, controllers
        self.writes: list[tuple[str, str]] = []
        self.refuse: dict[str, int] = {}  # file name -> errno
        real_write, real_mkdir = files.write, files.mkdir

        def write(path, value, *, retry_einval=0):
            name = os.path.basename(path)
            value = str(value)
            self.writes.append((os.path.relpath(path, root), value))
            if name in self.refuse:
                raise CgroupError(f"write {value} to {path}", path=path, operation="write", errno=self.refuse[name])
            if name == "cgroup.subtree_control":
                have = set(_read(path).split())
                have.add(value.lstrip("+"))
                value = " ".join(sorted(have))
            if name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
                self._check_memsw(os.path.dirname(path), name, value)
            with open(path, "w") as f:
                f.write(value)

        def mkdir(path, *, exist_ok=False):
            made = real_mkdir(path, exist_ok=exist_ok)
            if made:
                self._populate(path)
            return made

        real_rmdir = os.rmdir

        def rmdir(path, *a, **kw):  # a cgroup holding only its control files can be removed
            if str(path).startswith(root) and os.path.isdir(path):
                if any(e.is_dir() for e in os.scandir(path)):
                    raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
                for e in os.scandir(path):
                    os.unlink(e.path)
            real_rmdir(path, *a, **kw)

        monkeypatch.setattr(files, "write", write)
        monkeypatch.setattr(files, "mkdir", mkdir)
        monkeypatch.setattr(os, "rmdir", rmdir)
        self._real_write = real_write

    def _populate(self, path: str) -> None:
        if self.kind == "v2":
            contents = dict(V2_FILES, **{"cgroup.controllers": self.controllers})
        else:
            hier = os.path.relpath(path, self.root).split(os.sep)[1]  # v1/<controller>/...
            contents = V1_FILES.get(hier, {}) | {"cgroup.procs": ""}
        for name, text in contents.items():
            with open(os.path.join(path, name), "w") as f:
                f.write(text)

    def _check_memsw(self, d: str, name: str, value: str) -> None:
        def num(v):
            v = int(v)
            return float("inf") if v < 0 or v >= int(V1_UNLIMITED) else v

        mem = num(_read(os.path.join(d, "memory.limit_in_bytes")))
        memsw = num(_read(os.path.join(d, "memory.memsw.limit_in_bytes")))
        if name == "memory.limit_in_bytes":
            mem = num(value)
        else:
            memsw = num(value)
        if memsw < mem:
            raise CgroupError(f"memsw below memory in {d}", path=os.path.join(d, name), operation="write",
                              errno=errno.EINVAL)

    def values(self, *suffixes: str) -> list[tuple[str, str]]:
        return [(os.path.basename(p), v) for p, v in self.writes if p.endswith(suffixes)]


@pytest.fixture
def v2(monkeypatch, fake_v2):
    host = fake_v2()
    kernel = FakeKernel(monkeypatch, host.unified.mountpoint, "v2")
    return V2Manager(host, base="pysup"), kernel


@pytest.fixture
def v1(monkeypatch, fake_v1, tmp_path):
    host = fake_v1()
    kernel = FakeKernel(monkeypatch, str(tmp_path), "v1")
    for name in ("cpuset.cpus", "cpuset.mems"):  # the parent's values a new cpuset inherits
        (tmp_path / "v1" / "cpuset" / name).write_text("0-1\n" if name.endswith("cpus") else "0\n")
    return V1Manager(host, base="pysup"), kernel


FULL = Resources(memory=64 << 20, memory_reservation=32 << 20, memswap=96 << 20, cpus=0.5, cpu_shares=512,
                 cpuset="0", pids=20, io_weight=500)


def test_v2_create_enables_controllers_down_the_path_and_writes_limits(v2):
    m, k = v2
    assert m.create("shop/web.1", FULL, service="web") == ()
    enables = [(p, v) for p, v in k.writes if p.endswith("cgroup.subtree_control")]
    # cpuset only because this service asks for it
    for level in ("", "pysup", "pysup/shop"):
        assert {v for p, v in enables if os.path.dirname(p) == level} == {"+cpu", "+cpuset", "+io", "+memory", "+pids"}
    assert k.values("web.1/memory.max", "memory.swap.max", "memory.low", "cpu.max", "cpu.weight",
                    "cpuset.cpus", "pids.max", "io.weight") == [
        ("memory.max", str(64 << 20)),
        ("memory.swap.max", str(32 << 20)),  # memswap is memory + swap
        ("memory.low", str(32 << 20)),
        ("cpu.max", "50000 100000"),
        ("cpu.weight", "59"),  # shares 512 -> weight 59 (runc)
        ("cpuset.cpus", "0"),
        ("pids.max", "20"),
        ("io.weight", "default 4950"),  # blkio 500 -> io.weight 4950 (runc)
    ]


def test_v2_create_writes_only_what_is_set(v2):
    m, k = v2
    m.create("shop/db.1", Resources(pids=5))
    assert k.values("db.1/memory.max", "cpu.max", "pids.max", "io.weight") == [("pids.max", "5")]
    assert not any(v == "+cpuset" for _, v in k.writes)


def test_v2_update_resets_what_is_no_longer_set(v2):
    m, k = v2
    m.create("shop/web.1", FULL)
    k.writes.clear()
    m.update("shop/web.1", Resources(memory=128 << 20))
    assert dict(k.values("web.1/memory.max", "memory.swap.max", "memory.low", "cpu.max", "cpu.weight",
                         "cpuset.cpus", "pids.max", "io.weight")) == {
        "memory.max": str(128 << 20), "memory.swap.max": str(128 << 20), "memory.low": "0",
        "cpu.max": "max 100000", "cpu.weight": "100", "cpuset.cpus": "0-1", "pids.max": "max",
        "io.weight": "default 100",
    }  # cpuset: the parent's CPUs, not "" (the kernel refuses to empty a populated cpuset)
    m.create("shop/db.1")  # cpuset is on for the stack (web.1 asked), but db.1 never had one
    k.writes.clear()
    m.update("shop/db.1", Resources())
    assert k.values("cpuset.cpus") == []  # nothing to reset


def test_v2_missing_controller_is_skipped_not_fatal(monkeypatch, fake_v2):
    host = fake_v2("cpu memory pids")
    k = FakeKernel(monkeypatch, host.unified.mountpoint, "v2", controllers="cpu memory pids")
    skipped = V2Manager(host).create("shop/web.1", Resources(io_weight=300, cpuset="0", pids=3), service="web")
    assert [(s.key, s.reason) for s in skipped] == [
        ("cpuset", "the cpuset controller is not available on this host"),
        ("blkio_config.weight", "the io controller is not available on this host"),
    ]
    assert str(skipped[0]) == "service 'web': cpuset is ignored: the cpuset controller is not available on this host"
    assert k.values("io.weight", "cpuset.cpus") == []
    assert k.values("pids.max") == [("pids.max", "3")]


def test_v2_refused_limit_names_service_and_key_and_undoes_create(v2):
    m, k = v2
    k.refuse["cpu.max"] = errno.EINVAL
    with pytest.raises(CgroupError) as info:
        m.create("shop/web.1", Resources(cpus=0.001), service="web")
    err = info.value
    assert (err.service, err.key, err.errno) == ("web", "cpus", errno.EINVAL)
    assert "service 'web': cpus: the kernel refused cpu.max = 100 100000" in str(err)
    assert "cpus >= 0.01" in str(err)
    # the cgroups this call made are gone again
    assert not os.path.exists(os.path.join(m._base_dir, "shop"))
    assert not os.path.exists(m._base_dir)


def test_v2_memswap_below_memory_is_a_spec_error(v2):
    m, _ = v2
    with pytest.raises(CgroupError, match="service 'web': memswap_limit: memswap_limit .* is below mem_limit"):
        m.create("shop/web.1", Resources(memory=100 << 20, memswap=50 << 20), service="web")


def test_v2_memswap_zero_is_unset_as_in_docker(v2):
    """`memswap_limit: 0` is Docker's "unset": as much swap as memory, not an error."""
    m, k = v2
    assert m.create("shop/web.1", Resources(memory=64 << 20, memswap=0), service="web") == ()
    assert k.values("memory.swap.max") == [("memory.swap.max", str(64 << 20))]


def test_v1_memswap_zero_is_unset_as_in_docker(v1):
    m, k = v1
    assert m.create("shop/web.1", Resources(memory=64 << 20, memswap=0), service="web") == ()
    assert k.values("memory.memsw.limit_in_bytes") == [("memory.memsw.limit_in_bytes", str(128 << 20))]


def test_v2_existing_cgroup_is_an_error_unless_exist_ok(v2):
    m, _ = v2
    m.create("shop/web.1")
    with pytest.raises(CgroupError, match="already exists"):
        m.create("shop/web.1")
    m.create("shop/web.1", exist_ok=True)


def test_v1_create_writes_every_hierarchy_and_inherits_cpuset(v1):
    m, k = v1
    assert m.create("shop/web.1", FULL, service="web") == ()
    got = dict(k.values("web.1/memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.soft_limit_in_bytes",
                        "cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.shares", "web.1/cpuset.cpus", "pids.max",
                        "blkio.bfq.weight"))
    assert got == {
        "memory.limit_in_bytes": str(64 << 20), "memory.memsw.limit_in_bytes": str(96 << 20),
        "memory.soft_limit_in_bytes": str(32 << 20), "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "50000",
        "cpu.shares": "512", "cpuset.cpus": "0", "pids.max": "20", "blkio.bfq.weight": "500",
    }
    # each new cpuset level got its parent's CPUs and memory nodes before anything could join it
    inherited = [(p, v) for p, v in k.writes if p.endswith("cpuset.mems")]
    assert [p for p, _ in inherited] == ["v1/cpuset/pysup/cpuset.mems", "v1/cpuset/pysup/shop/cpuset.mems",
                                         "v1/cpuset/pysup/shop/web.1/cpuset.mems"]
    for name in ("memory", "cpu", "cpuacct", "cpuset", "pids", "freezer", "blkio"):
        assert os.path.isdir(m.directories("shop/web.1")[name])


@pytest.mark.parametrize(("first", "then"), [(64, 256), (256, 64), (64, None), (None, 64)])
def test_v1_memory_and_memsw_are_written_in_an_order_the_kernel_accepts(v1, first, then):
    m, k = v1
    res = lambda mb: Resources(memory=mb << 20, memswap=(mb << 20) * 2) if mb else Resources()  # noqa: E731
    m.create("shop/web.1", res(first))
    m.update("shop/web.1", res(then))  # FakeKernel raises EINVAL on any moment with memsw < memory
    want = str(then << 20) if then else "-1"
    assert k.values("web.1/memory.limit_in_bytes")[-1] == ("memory.limit_in_bytes", want)


def test_v1_update_resets_to_defaults(v1):
    m, k = v1
    m.create("shop/web.1", FULL)
    k.writes.clear()
    m.update("shop/web.1", Resources())
    assert dict(k.values("web.1/memory.limit_in_bytes", "memory.soft_limit_in_bytes", "cpu.cfs_quota_us",
                         "cpu.shares", "web.1/cpuset.cpus", "pids.max", "blkio.bfq.weight")) == {
        "memory.limit_in_bytes": "-1", "memory.soft_limit_in_bytes": "-1", "cpu.cfs_quota_us": "-1",
        "cpu.shares": "1024", "cpuset.cpus": "0-1", "pids.max": "max", "blkio.bfq.weight": "100",
    }


def test_v1_refused_memory_limit_explains_itself(v1):
    m, k = v1
    m.create("shop/web.1")
    k.refuse["memory.limit_in_bytes"] = errno.EBUSY
    with pytest.raises(CgroupError) as info:
        m.update("shop/web.1", Resources(memory=1 << 20), service="web")
    assert info.value.key == "mem_limit" and info.value.service == "web"
    assert "could not reclaim enough" in str(info.value)


def test_v1_missing_controller_is_skipped(monkeypatch, fake_v1, tmp_path):
    host = fake_v1(("memory", "cpu", "cpuacct", "pids", "freezer"))
    FakeKernel(monkeypatch, str(tmp_path), "v1")
    skipped = V1Manager(host).create("shop/web.1", Resources(io_weight=300, cpuset="0"), service="web")
    assert {s.key for s in skipped} == {"cpuset", "blkio_config.weight"}


def test_stats_and_event_sources_name_the_right_files(v1, v2):
    m1, _ = v1
    m2, _ = v2
    m1.create("p/a.1")
    m2.create("p/a.1")
    s1, s2 = m1.event_sources("p/a.1"), m2.event_sources("p/a.1")
    assert s1.oom_control.endswith("v1/memory/pysup/p/a.1/memory.oom_control")
    assert s1.event_control.endswith("v1/memory/pysup/p/a.1/cgroup.event_control")
    assert s1.memcg_kernel_path == "/pysup/p/a.1" and not s1.pids_inotify
    assert s1.cgroup_events is None  # legacy: no v2 mirror
    assert s2.memory_events.endswith("cgroup/pysup/p/a.1/memory.events") and s2.pids_inotify
    assert s2.cgroup_events.endswith("cgroup/pysup/p/a.1/cgroup.events")


def test_update_of_a_missing_cgroup_says_so(v1, v2):
    for m, _ in (v1, v2):
        with pytest.raises(CgroupError, match="no such cgroup"):
            m.update("shop/nope.1", Resources(pids=3), service="nope")


def test_v2_a_freeze_that_does_not_complete_is_undone(v2):
    m, k = v2
    m.create("shop/web.1")  # the fake's cgroup.events never says frozen 1
    with pytest.raises(CgroupError, match="not frozen after 0.05 s .*thawed again"):
        m.freeze("shop/web.1", timeout=0.05)
    assert k.values("cgroup.freeze") == [("cgroup.freeze", "1"), ("cgroup.freeze", "0")]


def test_v1_a_freeze_that_does_not_complete_is_undone(v1, monkeypatch):
    m, k = v1
    m.create("shop/web.1")
    real = files.read_text
    monkeypatch.setattr(files, "read_text", lambda p: "FREEZING\n" if p.endswith("freezer.state") else real(p))
    with pytest.raises(CgroupError, match="still FREEZING after 0.05 s .*thawed again"):
        m.freeze("shop/web.1", timeout=0.05)
    assert k.values("freezer.state")[-1] == ("freezer.state", "THAWED")
    assert {v for _, v in k.values("freezer.state")[:-1]} == {"FROZEN"}
