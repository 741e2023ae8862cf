"""Conversions between the spec, cgroup v1 and cgroup v2, against runc's and the kernel's values."""

import pytest

from supervisor.cgroups import limits as L


@pytest.mark.parametrize(
    ("shares", "weight"),
    [
        # opencontainers/cgroups utils_test.go TestConvertCPUSharesToCgroupV2Value
        (1, 1),  # below the minimum
        (2, 1),  # minimum
        (3, 2),  # just above
        (1024, 100),  # default -> default
        (262143, 10000),  # just below the maximum
        (262144, 10000),
        (262145, 10000),
    ],
)
def test_shares_to_weight_matches_runc(shares, weight):
    assert L.shares_to_weight(shares) == weight


def test_shares_to_weight_is_monotonic_and_in_range():
    prev = 0
    for shares in range(2, 262145, 97):
        w = L.shares_to_weight(shares)
        assert 1 <= w <= 10000
        assert w >= prev
        prev = w


def test_every_weight_round_trips_through_shares():
    for weight in range(1, 10001):
        shares = L.weight_to_shares(weight)
        assert 2 <= shares <= 262144
        assert L.shares_to_weight(shares) == weight
        # the smallest such shares
        assert shares == 2 or L.shares_to_weight(shares - 1) < weight


@pytest.mark.parametrize(("blkio", "io"), [(10, 1), (1000, 10000), (500, 4950)])
def test_blkio_weight_to_io_weight_matches_runc(blkio, io):
    # runc ConvertBlkIOToIOWeightValue: 1 + (w - 10) * 9999 / 990
    assert L.blkio_weight_to_io_weight(blkio) == io


def test_every_blkio_weight_round_trips():
    for w in range(10, 1001):
        assert L.io_weight_to_blkio_weight(L.blkio_weight_to_io_weight(w)) == w


@pytest.mark.parametrize(("cpus", "quota"), [(0.5, 50000), (1, 100000), (1.5, 150000), (0.01, 1000), (2.25, 225000)])
def test_cpus_to_quota(cpus, quota):
    assert L.cpus_to_quota(cpus) == quota


@pytest.mark.parametrize(
    ("memory", "memswap", "swap"),
    [
        (None, None, None),  # nothing set: no limit
        (None, -1, None),
        (100, None, 100),  # Docker: as much swap as memory
        (100, -1, None),  # unlimited swap
        (100, 100, 0),  # no swap
        (200, 500, 300),  # runc TestConvertMemorySwapToCgroupV2Value
        (100, 0, 100),  # Docker: a memswap of 0 is unset ("--memory-swap 0 ... is treated as unset")
        (None, 0, None),
    ],
)
def test_swap_limit(memory, memswap, swap):
    assert L.swap_limit(memory, memswap) == swap


def test_memswap_zero_asks_for_no_limit():
    from supervisor.config.model import Resources

    assert not L.is_set(Resources(memswap=0), "memswap") and not L.is_set(Resources(memswap=-1), "memswap")
    assert L.is_set(Resources(memory=100, memswap=200), "memswap")


@pytest.mark.parametrize(("memory", "memswap"), [(400, 300), (None, 300)])
def test_swap_limit_rejects_what_runc_rejects(memory, memswap):
    with pytest.raises(ValueError):
        L.swap_limit(memory, memswap)


@pytest.mark.parametrize(("pids", "limit"), [(None, None), (-1, None), (0, None), (1, 1), (100, 100)])
def test_pids_limit(pids, limit):
    assert L.pids_limit(pids) == limit


def test_refused_names_service_and_spec_key():
    from supervisor.errors import CgroupError

    exc = CgroupError("x", path="/sys/fs/cgroup/memory/pysup/p/web.1/memory.limit_in_bytes", operation="write", errno=16)
    err = L.refused(exc, service="web", field="memory", value=8388608, hint="usage above the limit")
    assert err.service == "web" and err.key == "mem_limit" and err.errno == 16
    assert str(err) == (
        "service 'web': mem_limit: the kernel refused memory.limit_in_bytes = 8388608 "
        "(/sys/fs/cgroup/memory/pysup/p/web.1/memory.limit_in_bytes): Device or resource busy (usage above the limit)"
    )


def test_device_number_needs_a_block_device(tmp_path):
    from supervisor.errors import CgroupError

    with pytest.raises(CgroupError, match="blkio_config.weight_device: .* is not a block device"):
        L.device_number(str(tmp_path), service="db", field="io_weight_device")
    with pytest.raises(CgroupError, match="No such file"):
        L.device_number(str(tmp_path / "nope"), service="db", field="io_weight_device")
