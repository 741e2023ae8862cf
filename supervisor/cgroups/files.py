"""Reading and writing cgroup files: one syscall each way, errors that name the file and the step.

cgroupfs files are small and generated on read, so each read is `open`, one `read`, `close`, with no
Python file object in between (the stats path reads hundreds of them a second). Every failure is a
`CgroupError` carrying the path, the operation and the errno, so a caller can add the service and
spec key and a person can act on it. No trio here: the synchronous runtime helper uses this too.
"""

from __future__ import annotations

import errno as E
import os
import select
import time
from collections.abc import Callable, Sequence
from signal import SIGKILL

from supervisor.errors import CgroupError

_CHUNK = 65536


def _fail(exc: OSError, path: str, op: str, what: str | None = None) -> CgroupError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    message = f"{what or op} {path}: {reason}"
    return CgroupError(message, path=path, operation=op, errno=exc.errno)


def read_bytes(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _fail(exc, path, "read") from None
    try:
        data = os.read(fd, _CHUNK)
        if len(data) == _CHUNK:  # rare: a big seq_file (memory.stat with many NUMA nodes)
            parts = [data]
            while chunk := os.read(fd, _CHUNK):
                parts.append(chunk)
            data = b"".join(parts)
        return data
    except OSError as exc:
        raise _fail(exc, path, "read") from None
    finally:
        os.close(fd)


def read_text(path: str) -> str:
    return read_bytes(path).decode()


def read_int(path: str) -> int | None:
    """A single number; `max` (v2's "no limit") is None."""
    text = read_bytes(path).strip()
    if text == b"max":
        return None
    try:
        return int(text)
    except ValueError:
        raise CgroupError(f"read {path}: not a number: {text[:40]!r}", path=path, operation="parse") from None


def parse_keyed(data: bytes | str) -> dict[str, int]:
    """`key value` lines (memory.events, pids.events, cpu.stat, memory.oom_control) -> dict."""
    if isinstance(data, bytes):
        data = data.decode()
    out: dict[str, int] = {}
    for line in data.splitlines():
        key, _, value = line.partition(" ")
        if value:
            try:
                out[key] = int(value)
            except ValueError:
                continue  # "max" or a nested format: not a counter
    return out


def read_keyed(path: str) -> dict[str, int]:
    return parse_keyed(read_bytes(path))


def write(path: str, value: str | int, *, retry_einval: int = 0) -> None:
    """Write `value` in one `write(2)`: cgroupfs applies each write as one request.

    `retry_einval` retries a refused write a few times, 10 ms apart: writing a pid to cgroup.procs
    fails with EINVAL while the task is still being created (runc does the same)."""
    data = str(value).encode()
    for attempt in range(retry_einval + 1):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise _fail(exc, path, "write", f"open {path} to write {value!r}:") from None
        try:
            os.write(fd, data)
            return
        except OSError as exc:
            if exc.errno == E.EINVAL and attempt < retry_einval:
                time.sleep(0.01)
                continue
            raise CgroupError(
                f"write {value!r} to {path}: {os.strerror(exc.errno or 0)}",
                path=path,
                operation="write",
                errno=exc.errno,
            ) from None
        finally:
            os.close(fd)


def exists(path: str) -> bool:
    return os.path.exists(path)


def mkdir(path: str, *, exist_ok: bool = False) -> bool:
    """Make one cgroup directory; True when this call made it."""
    try:
        os.mkdir(path, 0o755)
        return True
    except FileExistsError:
        if exist_ok:
            return False
        raise CgroupError(f"create cgroup {path}: it already exists", path=path, operation="mkdir", errno=E.EEXIST) from None
    except OSError as exc:
        raise _fail(exc, path, "mkdir", "create cgroup") from None


def make_levels(levels: Sequence[str], made: list[str], *, exist_ok: bool,
                after: Callable[[str, str], None] | None = None) -> None:
    """mkdir each of `levels[1:]` below `levels[0]` (which exists), appending the ones this call made
    to `made` (the caller undoes them on failure). Only the last level must be new, unless
    `exist_ok`. `after(parent, child)` runs once each level exists. If a level vanishes meanwhile
    (another pysup pruned the base: ENOENT), it starts once more from the top."""
    for attempt in range(2):
        try:
            for parent, child in zip(levels, levels[1:]):
                if mkdir(child, exist_ok=exist_ok or child != levels[-1]):
                    made.append(child)
                if after is not None:
                    after(parent, child)
            return
        except CgroupError as exc:
            if exc.errno != E.ENOENT or attempt:
                raise


def undo_mkdirs(made: Sequence[str]) -> None:
    """Remove the directories a failed create made, the last first; best effort."""
    for d in reversed(made):
        try:
            os.rmdir(d)
        except OSError:
            pass


def rmdir_unused(path: str) -> None:
    """Remove the cgroup at `path` unless it is gone already or still in use (children, processes)."""
    try:
        os.rmdir(path)
    except OSError as exc:
        if exc.errno not in (E.ENOENT, E.EBUSY, E.ENOTEMPTY):
            raise _fail(exc, path, "rmdir", "remove cgroup") from None


def subdirs(path: str) -> list[str]:
    """Child cgroups of `path` (names), or [] when it does not exist."""
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _fail(exc, path, "list", "list cgroup") from None


def walk_bottom_up(path: str) -> list[str]:
    """`path` and every cgroup below it, deepest first (the order rmdir needs)."""
    out: list[str] = []

    def visit(p: str) -> None:
        for name in subdirs(p):
            visit(os.path.join(p, name))
        out.append(p)

    if os.path.isdir(path):
        visit(path)
    return out


def read_pids(path: str) -> list[int]:
    """The pids in one cgroup.procs file; [] when the cgroup is gone."""
    try:
        data = read_bytes(path)
    except CgroupError as exc:
        if exc.errno in (E.ENOENT, E.ENODEV):
            return []
        raise
    return [int(x) for x in data.split()]


def wait_keyed(path: str, key: str, value: int, timeout: float) -> bool:
    """Block until the `key value` file at `path` (cgroup.events) shows `key` == `value`.

    Kernel-notified, not a sleep loop: cgroupfs wakes poll(2) with POLLPRI when such a file changes,
    and each read re-arms it. False on timeout; True if the file is gone (the cgroup was removed)."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    except OSError as exc:
        raise _fail(exc, path, "read") from None
    try:
        poller = select.poll()
        poller.register(fd, select.POLLPRI | select.POLLERR)
        while True:
            os.lseek(fd, 0, os.SEEK_SET)
            try:
                data = os.read(fd, 4096)
            except OSError as exc:
                if exc.errno in (E.ENODEV, E.ENOENT):
                    return True
                raise _fail(exc, path, "read") from None
            if parse_keyed(data).get(key) == value:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            poller.poll(max(1, int(remaining * 1000)))
    finally:
        os.close(fd)


def rmdir_retry(directory: str, deadline: float) -> None:
    """rmdir, retrying EBUSY until `deadline` (time.monotonic): a cgroup whose last task has just
    exited can stay busy a moment (runc retries too). Gone already is fine."""
    delay = 0.001
    while True:
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == E.EBUSY and time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
                continue
            raise _fail(exc, directory, "rmdir", "remove cgroup") from None


def remove_tree(path: str, deadline: float) -> None:
    """rmdir `path` and every cgroup below it, deepest first (all must be empty of processes)."""
    for d in walk_bottom_up(path):
        rmdir_retry(d, deadline)


def signal_each(list_pids: Callable[[], list[int]], sig: int, *, sweep_until: float | None = None) -> None:
    """Send `sig` to every process `list_pids()` names. With `sweep_until` (a time.monotonic()
    deadline) and SIGKILL, list and signal again until none is left: without a freezer, a process
    can fork between the listing and its signal."""
    while True:
        pids = list_pids()
        for pid in pids:
            signal(pid, sig)
        if sweep_until is None or sig != SIGKILL or not pids or time.monotonic() > sweep_until:
            return
        time.sleep(0.001)  # a process stuck in the kernel must not make this spin a core


def signal(pid: int, sig: int) -> None:
    """kill(2), where a process that is already gone is fine."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except OSError as exc:
        raise CgroupError(f"cannot send signal {sig} to process {pid}: {exc.strerror}",
                          path=f"/proc/{pid}", operation="kill", errno=exc.errno) from None
