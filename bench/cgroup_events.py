"""cgroup events and stats: how fast an OOM kill reaches the supervisor, and what stats cost.

    sudo .venv/bin/python bench/cgroup_events.py [--runs 20] [--cgroups 100] [--rounds 50]
    ../shared/tools/cgroup2-vm -- .venv/bin/python bench/cgroup_events.py   # the v2 driver (emulated)

Makes `--cgroups` replica cgroups under a `pysup-bench-<random>` base with the host's driver (v1
on a hybrid host, v2 on a unified one), one `sleep` in each, and one watcher over all of them,
as a supervisor would. Then:

- OOM kill -> event: `--runs` times, a process in a random one of the cgroups allocates past its
  32 MiB limit. Latency is the event's time.monotonic() minus the kernel log's timestamp of the
  kill ("Killed process N"; the printk clock's offset from CLOCK_MONOTONIC is measured first by
  writing records to /dev/kmsg) and, as a cross-check, minus the moment a pidfd says the victim is
  dead (the event may come first: v2 counts the kill before it sends the signal). Target
  (DESIGN.md): under 100 ms.
- stats: reading `CgroupStats` of all the cgroups, `--rounds` times; per round and per cgroup,
  and what reading all of them once a second costs in CPU.

Everything it makes is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import trio  # noqa: E402

from supervisor.cgroups import open_manager, replica_path  # noqa: E402
from supervisor.cgroups.events import OomKilled, open_cgroup_events  # noqa: E402
from supervisor.config.model import Resources  # noqa: E402

MB = 1 << 20
HOG = "x = b'x' * (256 << 20)\n"


class KernelLog:
    def __init__(self):
        self.fd = os.open("/dev/kmsg", os.O_RDWR | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)
        self.kills: dict[int, float] = {}
        self.offset = self.calibrate()

    def calibrate(self, n: int = 9) -> float:
        """printk clock minus time.monotonic(): write a record, read back its timestamp."""
        diffs = []
        for _ in range(n):
            t0 = time.monotonic()
            os.write(self.fd, b"pysup-bench: clock probe\n")
            t1 = time.monotonic()
            while True:
                try:
                    rec = os.read(self.fd, 8192).decode(errors="replace")
                except BrokenPipeError:
                    continue
                if "pysup-bench: clock probe" in rec:
                    break
            diffs.append(int(rec.split(",")[2]) / 1e6 - (t0 + t1) / 2)
        return statistics.median(diffs)

    def kill_time(self, pid: int) -> float | None:
        while True:
            try:
                rec = os.read(self.fd, 8192).decode(errors="replace")
            except BlockingIOError:
                break
            except BrokenPipeError:
                continue
            head, _, text = rec.partition(";")
            if "Killed process " in text:
                victim = int(text.split("Killed process ", 1)[1].split()[0])
                self.kills[victim] = int(head.split(",")[2]) / 1e6 - self.offset
        return self.kills.get(pid)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def bench(args) -> None:
    m = open_manager(base=f"pysup-bench-{secrets.token_hex(3)}")
    support = m.support()
    print("\n".join(support.describe()))
    paths = [replica_path("bench", "svc", i) for i in range(args.cgroups)]
    sleepers: list[subprocess.Popen] = []
    klog = KernelLog()
    try:
        for p in paths:
            m.create(p, Resources(memory=32 * MB, memswap=32 * MB, pids=64))
            s = subprocess.Popen(["sleep", "3600"])
            m.add_process(p, s.pid)
            sleepers.append(s)

        # --- OOM kill -> event ---
        send, recv = trio.open_memory_channel(1000)
        by_kernel: list[float] = []
        by_exit: list[float] = []
        async with open_cgroup_events(m, send) as watcher:
            for i, p in enumerate(paths):
                watcher.watch(p, f"svc.{i}")
            for _ in range(args.runs):
                i = random.randrange(len(paths))
                victim = subprocess.Popen(["sh", "-c", 'read _; exec "$@"', "sh", sys.executable, "-S", "-c", HOG],
                                          stdin=subprocess.PIPE)
                m.add_process(paths[i], victim.pid)
                pidfd = os.pidfd_open(victim.pid)
                victim.stdin.write(b"go\n")
                victim.stdin.close()
                died = []

                async def watch_exit(fd=pidfd, died=died):
                    await trio.lowlevel.wait_readable(fd)
                    died.append(time.monotonic())

                with trio.fail_after(30):
                    async with trio.open_nursery() as n:
                        n.start_soon(watch_exit)
                        while True:
                            ev = await recv.receive()
                            if isinstance(ev, OomKilled) and ev.replica == f"svc.{i}":
                                break
                victim.wait()
                os.close(pidfd)
                killed = klog.kill_time(victim.pid)
                if killed is not None:
                    by_kernel.append((ev.at - killed) * 1000)
                by_exit.append((ev.at - died[0]) * 1000)
                await trio.sleep(0.05)

        # --- stats of every cgroup: one-shot reads, then readers that keep the files open ---
        def sample(read) -> tuple[list[float], float]:
            rounds = []
            cpu0 = time.process_time()
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                for p in paths:
                    read(p)
                rounds.append((time.perf_counter() - t0) * 1000)
            return rounds, (time.process_time() - cpu0) / args.rounds

        rounds, cpu = sample(m.stats)
        readers = {p: m.stats_reader(p) for p in paths}
        try:
            kept, kept_cpu = sample(lambda p: readers[p].read())
        finally:
            for r in readers.values():
                r.close()

        n = len(paths)
        print()
        print(f"{'what':<46} {'median':>10} {'p90':>10} {'max':>10}")
        if by_kernel:
            print(f"{'OOM kill -> event (kernel log clock), ms':<46} {statistics.median(by_kernel):>10.2f} "
                  f"{pct(by_kernel, 0.9):>10.2f} {max(by_kernel):>10.2f}")
        print(f"{'OOM kill -> event (minus victim exit), ms':<46} {statistics.median(by_exit):>10.2f} "
              f"{pct(by_exit, 0.9):>10.2f} {max(by_exit):>10.2f}")
        for label, r, c in (("stats()", rounds, cpu), ("stats_reader()", kept, kept_cpu)):
            print(f"{f'{label} of {n} cgroups, ms per round':<46} {statistics.median(r):>10.2f} "
                  f"{pct(r, 0.9):>10.2f} {max(r):>10.2f}")
            print(f"{f'{label}, µs per cgroup':<46} {statistics.median(r) * 1000 / n:>10.1f}")
            print(f"{f'{label}: CPU for all {n} once a second':<46} {c * 100:>9.2f}%  (of one core)")
        print(f"\n{args.runs} OOM kills with {n} cgroups watched by one task; driver {support.driver}, "
              f"{support.layout} layout, kernel {os.uname().release}; printk clock offset "
              f"{klog.offset * 1000:+.2f} ms")
    finally:
        for s in sleepers:
            s.kill()
            s.wait()
        os.close(klog.fd)
        m.remove("", timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="OOM kills to time (default 20)")
    ap.add_argument("--cgroups", type=int, default=100, help="replica cgroups (default 100)")
    ap.add_argument("--rounds", type=int, default=50, help="stats rounds over all cgroups (default 50)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/cgroup_events.py makes cgroups: run it as root")
    trio.run(bench, args)


if __name__ == "__main__":
    main()
