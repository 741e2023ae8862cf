"""What the benchmarks that run a real `pysup up` share (control_ps, idle, net, reconcile): a busybox
rootfs, and `pysup up` of a bench stack started in state and runtime directories of its own, then
stopped and cleaned up after.

A bench runs as `python bench/X.py`, which puts bench/ first on sys.path: `from _up import ...`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_rootfs(path: str | None = None) -> str:
    """A busybox rootfs (scripts/make-busybox-rootfs.sh) at `path`, or in a new temporary
    directory; readable by all (mkdtemp makes it 0700)."""
    path = path or tempfile.mkdtemp(prefix="pysup-bench-rootfs-")
    subprocess.run(["bash", os.path.join(REPO, "scripts/make-busybox-rootfs.sh"), path], check=True,
                   stdout=subprocess.DEVNULL)
    os.chmod(path, 0o755)
    return path


def stack_env(work: str) -> dict[str, str]:
    """State and runtime directories in `work`, and this checkout's supervisor."""
    return dict(os.environ, PYSUP_STATE_DIR=os.path.join(work, "state"), PYSUP_RUNTIME_DIR=os.path.join(work, "run"),
                PYTHONPATH=REPO)


class Up:
    """A running `pysup up`: its process, its environment (for a bench's own `pysup ps` and the
    like) and its stderr (JSON log lines), open for reading."""

    def __init__(self, proc: subprocess.Popen, env: dict[str, str], err: TextIO, err_path: str) -> None:
        self.proc, self.env, self.err, self.err_path = proc, env, err, err_path

    def wait_started(self, n: int, timeout: float, interval: float = 0.1,
                     ready: Callable[[], bool] = lambda: True) -> None:
        """Until `n` `replica.started` events have been logged and `ready()`; SystemExit with
        pysup's last words if it exits or `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        while True:
            self.err.seek(0)
            started = sum(1 for line in self.err if '"replica.started"' in line)
            if started >= n and ready():
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.err.seek(0)
                raise SystemExit(f"pysup up did not start {n} replicas ({started}):\n{self.err.read()[-2000:]}")
            time.sleep(interval)


@contextlib.contextmanager
def pysup_up(compose: str, work: str, *, args: Sequence[str] = (), launcher: Sequence[str] | None = None,
             cwd: str | None = None, stop_timeout: float = 60.0,
             remove: Sequence[str] = ()) -> Iterator[Up]:
    """`pysup --log-format json up -f COMPOSE ARGS` (`launcher`: how pysup is run, by default this
    interpreter with `-m supervisor` and this checkout on PYTHONPATH), its state and runtime
    directories in `work`, stdout discarded, stderr to `work/up.err`. On the way out: SIGINT,
    up to `stop_timeout` seconds for it to stop its containers, SIGKILL if it has not; then `work`
    and the directories in `remove` are deleted."""
    env = stack_env(work)
    err_path = os.path.join(work, "up.err")
    err = open(err_path, "w+")  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen([*(launcher or [sys.executable, "-m", "supervisor"]), "--log-format", "json", "up",
                                 "-f", compose, *args], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        try:
            yield Up(proc, env, err, err_path)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        err.close()
        for d in (work, *remove):
            shutil.rmtree(d, ignore_errors=True)

