"""Layout detection from mountinfo, path naming, and the start-up support report."""

import pytest

from supervisor.cgroups import Mount, open_manager, parse_mountinfo, replica_path, split_path
from supervisor.cgroups.v1 import V1Manager
from supervisor.cgroups.v2 import V2Manager
from supervisor.errors import CgroupError

UNIFIED = """\
22 1 0:21 / /sys rw,nosuid shared:7 - sysfs sysfs rw
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""

# this machine's layout: v1 controllers, each on its own, plus an empty cgroup2 at unified/
HYBRID = """\
30 22 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
34 30 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
36 30 0:32 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
37 30 0:33 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
38 30 0:34 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 30 0:35 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
40 30 0:36 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

# systemd's legacy layout: cpu and cpuacct co-mounted, no cgroup2
LEGACY = """\
30 22 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
35 30 0:31 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
"""


def test_unified():
    host = parse_mountinfo(UNIFIED)
    assert host.layout == "unified"
    assert host.unified == Mount("/sys/fs/cgroup", "/")
    assert not host.v1


def test_hybrid_is_this_machines_layout():
    host = parse_mountinfo(HYBRID)
    assert host.layout == "hybrid"
    assert host.unified == Mount("/sys/fs/cgroup/unified", "/")
    assert set(host.v1) == {"cpu", "cpuacct", "cpuset", "memory", "freezer", "blkio", "pids"}  # not devices, not systemd
    assert host.v1["memory"].mountpoint == "/sys/fs/cgroup/memory"
    assert len(host.v1_mounts) == 7


def test_legacy_with_comounted_controllers_and_a_second_mount():
    host = parse_mountinfo(LEGACY)
    assert host.layout == "legacy" and host.unified is None
    assert host.v1["cpu"] is host.v1["cpuacct"]
    assert host.v1["cpu"].mountpoint == "/sys/fs/cgroup/cpu,cpuacct"
    assert host.v1["pids"].root == "/"  # the full hierarchy wins over a sub-tree mount
    assert [m.mountpoint for m in host.v1_mounts] == [
        "/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/pids"]


def test_escaped_mountpoint():
    host = parse_mountinfo("26 22 0:23 / /sys/fs/cg\\040root rw - cgroup2 cgroup2 rw\n")
    assert host.unified.mountpoint == "/sys/fs/cg root"


def test_escaped_mountpoint_keeps_utf8():
    # the kernel escapes only space, tab, newline and backslash; UTF-8 names stay as they are
    host = parse_mountinfo("26 22 0:23 / /srv/cgr\u00fcppe\\040a\\134b rw - cgroup2 cgroup2 rw\n")
    assert host.unified.mountpoint == "/srv/cgr\u00fcppe a\\b"


def test_no_cgroups_is_a_clear_error():
    with pytest.raises(CgroupError, match="no cgroup filesystem is mounted"):
        parse_mountinfo("22 1 0:21 / /sys rw - sysfs sysfs rw\n")


def test_replica_paths():
    assert replica_path("shop", "web", 2) == "shop/web.2"
    assert split_path("shop/web.2") == ["shop", "web.2"]
    assert split_path("") == []
    for bad in ("..", "a,b", "cgroup.procs", ""):
        with pytest.raises(CgroupError):
            replica_path(bad or "", "web", 1) if bad else replica_path("shop", "", 1)


def test_open_manager_picks_the_driver(fake_v1, fake_v2):
    assert isinstance(open_manager(fake_v2()), V2Manager)
    assert isinstance(open_manager(fake_v1()), V1Manager)


def test_support_names_what_is_missing_and_what_still_works(fake_v1):
    host = fake_v1(("memory", "cpu", "cpuacct", "cpuset", "pids", "freezer"))
    support = V1Manager(host).support()
    assert support.missing == {"blkio"}
    lines = support.describe()
    assert lines[0].startswith("cgroups: legacy layout, v1 driver, under ")
    assert any("'blkio' is not available: blkio_config weights are ignored; no I/O stats" in ln for ln in lines)
    assert any("no 'emptied' events" in ln for ln in lines)  # legacy: no v2 mount to mirror into
    assert lines[-1].startswith("still working: cpu, cpuacct, cpuset, freezer, memory, pids")


def test_support_v2_missing_io(fake_v2):
    support = V2Manager(fake_v2("cpu memory pids")).support()
    assert support.missing == {"io", "cpuset"}
    text = "\n".join(support.describe())
    assert "'io' is not available: blkio_config weights are ignored; no I/O stats" in text
    assert "'cpuset' is not available: cpuset is ignored" in text


def test_support_all_there(fake_v2):
    support = V2Manager(fake_v2()).support()
    assert support.missing == frozenset()
