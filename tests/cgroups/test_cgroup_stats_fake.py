"""Stats parsing against files shaped like the kernel's (captured from 6.1 and 6.18 kernels)."""

from supervisor.cgroups.stats import CgroupStats, parse_blkio_v1, parse_io_stat_v2, read_v1, read_v2

CPU_STAT_V2 = """usage_usec 1234567
user_usec 1000000
system_usec 234567
core_sched.force_idle_usec 0
nr_periods 40
nr_throttled 20
throttled_usec 987654
nr_bursts 0
burst_usec 0
"""
IO_STAT_V2 = """8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0
253:0 rbytes=100 wbytes=0 rios=1 wios=0 dbytes=0 dios=0
"""
BLKIO_V1 = """8:0 Read 4096
8:0 Write 8192
8:0 Sync 0
8:0 Async 12288
8:0 Discard 0
8:0 Total 12288
253:0 Read 100
Total 12388
"""
CPU_STAT_V1 = "nr_periods 40\nnr_throttled 20\nthrottled_time 987654000\nnr_bursts 0\nburst_time 0\n"


def write(d, **files):
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name.replace("__", ".")).write_text(text)
    return str(d)


def test_parsers():
    assert parse_io_stat_v2(IO_STAT_V2) == (4196, 8192)
    assert parse_blkio_v1(BLKIO_V1) == (4196, 8192)
    assert parse_io_stat_v2("") == (0, 0)


def test_read_v2(tmp_path):
    d = write(tmp_path / "c", memory__current="1048576\n", memory__peak="2097152\n", cpu__stat=CPU_STAT_V2,
              pids__current="3\n", io__stat=IO_STAT_V2)
    assert read_v2(d) == CgroupStats(
        memory_current=1048576, memory_peak=2097152, cpu_usage_us=1234567, cpu_user_us=1000000,
        cpu_system_us=234567, cpu_throttled_us=987654, cpu_nr_throttled=20, cpu_nr_periods=40,
        pids_current=3, io_read_bytes=4196, io_write_bytes=8192)


def test_read_v2_missing_files_are_none(tmp_path):
    # an old kernel without memory.peak, and no io controller
    d = write(tmp_path / "c", memory__current="5\n", cpu__stat="usage_usec 7\nuser_usec 4\nsystem_usec 3\n",
              pids__current="1\n")
    s = read_v2(d)
    assert (s.memory_current, s.memory_peak, s.cpu_usage_us, s.cpu_throttled_us, s.io_read_bytes) == (5, None, 7, None, None)


def test_read_v1(tmp_path):
    dirs = {
        "memory": write(tmp_path / "memory", memory__usage_in_bytes="1048576\n", memory__max_usage_in_bytes="2097152\n"),
        "cpu": write(tmp_path / "cpu", cpu__stat=CPU_STAT_V1),
        "cpuacct": write(tmp_path / "cpuacct", cpuacct__usage="1234567000\n", cpuacct__usage_user="1000000000\n",
                         cpuacct__usage_sys="234567000\n"),
        "pids": write(tmp_path / "pids", pids__current="3\n"),
        "blkio": write(tmp_path / "blkio", blkio__throttle__io_service_bytes_recursive=BLKIO_V1),
    }
    assert read_v1(dirs) == CgroupStats(
        memory_current=1048576, memory_peak=2097152, cpu_usage_us=1234567, cpu_user_us=1000000,
        cpu_system_us=234567, cpu_throttled_us=987654, cpu_nr_throttled=20, cpu_nr_periods=40,
        pids_current=3, io_read_bytes=4196, io_write_bytes=8192)


def test_read_v1_old_cpuacct_and_missing_controllers(tmp_path):
    import os

    hz = os.sysconf("SC_CLK_TCK")
    dirs = {"cpuacct": write(tmp_path / "cpuacct", cpuacct__usage="5000\n", cpuacct__stat=f"user {hz}\nsystem {2 * hz}\n")}
    s = read_v1(dirs)
    assert (s.cpu_usage_us, s.cpu_user_us, s.cpu_system_us) == (5, 1_000_000, 2_000_000)
    assert s.memory_current is None and s.pids_current is None and s.io_write_bytes is None


def test_stats_reader_rereads_open_files(tmp_path):
    from supervisor.cgroups.stats import StatsReader, build_v2, v2_files

    d = write(tmp_path / "c", memory__current="5\n", cpu__stat="usage_usec 7\n", pids__current="1\n")
    with StatsReader(v2_files(d), build_v2) as reader:
        assert (reader.read().memory_current, reader.read().memory_peak) == (5, None)
        (tmp_path / "c" / "memory.current").write_text("6\n")  # same inode, new contents
        assert reader.read().memory_current == 6
