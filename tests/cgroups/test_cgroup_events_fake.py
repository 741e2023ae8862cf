"""The event watcher on a fake v2 tree: inotify fires on writes to regular files too, so the whole
trio path (epoll, inotify, counters, channels) runs without root. The kernel's side is checked for
real in integration/."""

from __future__ import annotations

import os
from unittest.mock import ANY

import pytest
import trio

from supervisor.cgroups.events import (
    CgroupEventWatcher,
    Emptied,
    OomKilled,
    PidsLimitHit,
    open_cgroup_events,
    parse_kmsg,
)
from supervisor.cgroups.v2 import V2Manager


def make_cgroup(host, path: str) -> str:
    d = os.path.join(host.unified.mountpoint, "pysup", path)
    os.makedirs(d)
    for name, text in {"memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n", "pids.events": "max 0\n",
                       "cgroup.events": "populated 0\nfrozen 0\n"}.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    return d


def poke(d: str, name: str, text: str) -> None:
    with open(os.path.join(d, name), "w") as f:
        f.write(text)


@pytest.fixture
def fake(fake_v2):
    host = fake_v2()
    return host, V2Manager(host)


async def test_counters_become_typed_events(fake):
    host, m = fake
    web = make_cgroup(host, "shop/web.1")
    send, recv = trio.open_memory_channel(10)
    async with open_cgroup_events(m, send, kmsg=False) as watcher:
        watcher.watch("shop/web.1", "web.1")
        with trio.fail_after(5):
            poke(web, "memory.events", "max 3\noom 1\noom_kill 1\n")
            ev = await recv.receive()
            assert isinstance(ev, OomKilled)
            assert (ev.replica, ev.cgroup, ev.count, ev.new, ev.pid) == ("web.1", "shop/web.1", 1, 1, None)
            poke(web, "memory.events", "max 9\noom 3\noom_kill 3\n")  # two more, one notification
            ev = await recv.receive()
            assert (ev.count, ev.new) == (3, 2)
            poke(web, "pids.events", "max 4\n")
            ev = await recv.receive()
            assert ev == PidsLimitHit("web.1", "shop/web.1", 4, 4, ev.at)
            poke(web, "cgroup.events", "populated 1\nfrozen 0\n")
            poke(web, "cgroup.events", "populated 0\nfrozen 0\n")
            ev = await recv.receive()
            assert ev == Emptied("web.1", "shop/web.1", ev.at)


async def test_only_what_happens_after_watch_is_reported(fake):
    host, m = fake
    web = make_cgroup(host, "shop/web.1")
    poke(web, "memory.events", "oom_kill 5\n")
    send, recv = trio.open_memory_channel(10)
    async with open_cgroup_events(m, send, kmsg=False) as watcher:
        watcher.watch("shop/web.1", "web.1")
        poke(web, "memory.events", "oom_kill 5\n")  # rewritten, not increased
        poke(web, "memory.events", "oom_kill 6\n")
        with trio.fail_after(5):
            ev = await recv.receive()
        assert (ev.count, ev.new) == (6, 1)


async def test_a_channel_per_cgroup_and_unwatch(fake):
    host, m = fake
    a, b = make_cgroup(host, "p/a.1"), make_cgroup(host, "p/b.1")
    send, recv = trio.open_memory_channel(10)
    send_b, recv_b = trio.open_memory_channel(10)
    async with open_cgroup_events(m, send, kmsg=False) as watcher:
        wa = watcher.watch("p/a.1", "a.1")
        watcher.watch("p/b.1", "b.1", channel=send_b)
        with trio.fail_after(5):
            poke(b, "pids.events", "max 1\n")
            assert (await recv_b.receive()).replica == "b.1"
            watcher.unwatch(wa)
            poke(a, "pids.events", "max 1\n")
            poke(b, "pids.events", "max 2\n")
            assert (await recv_b.receive()).count == 2
        assert recv.statistics().current_buffer_used == 0  # nothing from a.1 after unwatch
        assert [w.replica for w in watcher.watching()] == ["b.1"]


async def test_a_receiver_that_went_away_drops_its_watch(fake):
    host, m = fake
    a = make_cgroup(host, "p/a.1")
    send, recv = trio.open_memory_channel(10)
    gone_send, gone_recv = trio.open_memory_channel(0)
    await gone_recv.aclose()
    async with open_cgroup_events(m, send, kmsg=False) as watcher:
        watcher.watch("p/a.1", "a.1", channel=gone_send)
        poke(a, "pids.events", "max 1\n")
        with trio.fail_after(5):
            while watcher.watching():
                await trio.sleep(0.01)


async def test_many_cgroups_one_task_few_descriptors(fake):
    host, m = fake
    n = 120
    for i in range(n):
        make_cgroup(host, f"p/s.{i}")
    fds_before = len(os.listdir("/proc/self/fd"))
    send, recv = trio.open_memory_channel(n)
    async with open_cgroup_events(m, send, kmsg=False) as watcher:
        for i in range(n):
            watcher.watch(f"p/s.{i}", f"s.{i}")
        assert len(os.listdir("/proc/self/fd")) - fds_before <= 3  # epoll + inotify (+ slack)
        poke(os.path.join(host.unified.mountpoint, "pysup", "p", "s.77"), "memory.events", "oom_kill 1\n")
        with trio.fail_after(5):
            ev = await recv.receive()
        assert ev.replica == "s.77"


async def test_closed_watcher_refuses_new_watches(fake):
    host, m = fake
    make_cgroup(host, "p/a.1")
    send, _ = trio.open_memory_channel(1)
    watcher = CgroupEventWatcher(m, send, kmsg=False)
    watcher.close()
    with pytest.raises(trio.ClosedResourceError):
        watcher.watch("p/a.1", "a.1")


def test_parse_kmsg_records():
    # records as a 6.18 kernel wrote them (see the OOM test's kernel log)
    oom = (b"6,425,493852000,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
           b"oom_memcg=/pysup/shop/web.1,task_memcg=/pysup/shop/web.1,task=python3,pid=9661,uid=0\n")
    assert parse_kmsg(oom) == ("oom", {"oom": "/pysup/shop/web.1", "memcg": "/pysup/shop/web.1",
                                       "task": "python3", "pid": "9661"})
    killed = (b"3,426,493852022,-;Memory cgroup out of memory: Killed process 9661 (python3) total-vm:116260kB, "
              b"anon-rss:34304kB, file-rss:5372kB, shmem-rss:0kB, UID:0 pgtables:136kB oom_score_adj:0\n")
    assert parse_kmsg(killed) == ("killed", {"pid": "9661", "task": "python3"})
    pids = b"6,346,488808574,-;cgroup: fork rejected by pids controller in /pysup/shop/web.1\n"
    assert parse_kmsg(pids) == ("pids", {"cgroup": "/pysup/shop/web.1"})
    assert parse_kmsg(b"6,1,2,-;eth0: link up\n") is None
    assert parse_kmsg(b"garbage") is None
    # a comma in mems_allowed and in the task name does not confuse it
    odd = (b"6,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,2,"
           b"oom_memcg=/a,task_memcg=/a/b,task=we,ird,pid=7,uid=0\n")
    assert parse_kmsg(odd)[1] == {"oom": "/a", "memcg": "/a/b", "task": "we,ird", "pid": "7"}


async def test_unwatch_releases_the_kernel_watches(fake):
    host, m = fake
    make_cgroup(host, "p/a.1")
    send, _ = trio.open_memory_channel(10)
    async with open_cgroup_events(m, send, kmsg=False) as watcher:
        w = watcher.watch("p/a.1", "a.1")
        assert len(w.wds) == 3  # memory.events, pids.events, cgroup.events
        watcher.unwatch(w)
        assert w.closed and not w.wds and not watcher._by_wd and not watcher.watching()
        watcher.unwatch(w)  # twice is fine


async def test_close_from_another_task_ends_run_quietly(fake):
    host, m = fake
    make_cgroup(host, "p/a.1")
    send, _ = trio.open_memory_channel(1)
    watcher = CgroupEventWatcher(m, send, kmsg=False)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            watcher.watch("p/a.1", "a.1")
            await trio.sleep(0.01)  # run is waiting on the epoll descriptor
            watcher.close()  # the nursery exits without an error
    assert not watcher.watching()


async def test_an_exit_right_after_watch_reads_the_state_is_reported(fake, monkeypatch):
    """The process exits just after watch() read `populated 1`: the notification must be armed by
    then, or Emptied never comes."""
    from supervisor.cgroups import files

    host, m = fake
    a = make_cgroup(host, "p/a.1")
    poke(a, "cgroup.events", "populated 1\nfrozen 0\n")
    real = files.read_keyed

    def read_then_exit(path):
        out = real(path)
        if path.endswith("cgroup.events") and out.get("populated") == 1:
            poke(a, "cgroup.events", "populated 0\nfrozen 0\n")
        return out

    monkeypatch.setattr(files, "read_keyed", read_then_exit)
    send, recv = trio.open_memory_channel(10)
    async with open_cgroup_events(m, send, kmsg=False) as watcher:
        watcher.watch("p/a.1", "a.1")
        with trio.fail_after(5):
            assert await recv.receive() == Emptied("a.1", "p/a.1", ANY)



async def test_out_of_descriptors_is_a_cgroup_error(fake_v1, monkeypatch):
    """v1 needs an eventfd per watched cgroup: running out is a clear error, not a traceback."""
    import errno

    from supervisor.cgroups.v1 import V1Manager
    from supervisor.errors import CgroupError

    host = fake_v1(("memory",))
    d = os.path.join(host.v1["memory"].mountpoint, "pysup", "p", "a.1")
    os.makedirs(d)
    for name, text in {"memory.oom_control": "oom_kill 0\n", "cgroup.event_control": ""}.items():
        poke(d, name, text)

    def eventfd(*_):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(os, "eventfd", eventfd)
    send, _ = trio.open_memory_channel(1)
    async with open_cgroup_events(V1Manager(host, mirror=False), send, kmsg=False) as watcher:
        with pytest.raises(CgroupError, match="eventfd: Too many open files .*RLIMIT_NOFILE") as info:
            watcher.watch("p/a.1", "a.1")
        assert info.value.errno == errno.EMFILE and not watcher.watching()
