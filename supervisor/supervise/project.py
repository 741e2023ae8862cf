"""A project's files on the host while `pysup up` runs, and after a crash.

- `<runtime dir>/<project>/lock`: flock'd by the running `pysup up` (its pid inside); a second
  `pysup up` of the project refuses with a clear message.
- `<state dir>/projects/<project>/run.json`: the record of what this run made (cgroups, container
  ids and their runtime directories, secret files), rewritten as things are made. A clean exit
  removes it. If pysup was SIGKILLed, its containers died with it (PR_SET_PDEATHSIG in every
  container's PID 1 and in the zygote), and the next `pysup up` finds the record, removes what it
  lists (and any cgroup left under the project's), and says what it removed.
- `<state dir>/projects/<project>/logs/`: kept container logs (they stay).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from typing import Any

import structlog

from .. import paths
from ..atomic import read_record, write_json
from ..errors import PysupError

log = structlog.get_logger()


class ProjectBusy(PysupError):
    pass


class ProjectFiles:
    def __init__(self, project: str, environ: Any = None):
        self.project = project
        self.state_dir = paths.project_state_dir(project, environ)
        self.runtime_dir = paths.project_runtime_dir(project, environ)
        self.containers_dir = paths.containers_dir(environ)
        self.log_dir = os.path.join(self.state_dir, "logs")
        self.record_path = os.path.join(self.state_dir, "run.json")
        self.secrets_dir = os.path.join(self.runtime_dir, "secrets")
        self._lock_fd: int | None = None
        self.record: dict[str, Any] = {"pid": os.getpid(), "cgroups": [], "containers": [], "files": []}

    # --- the lock ----------------------------------------------------------------------------

    def lock(self) -> None:
        os.makedirs(self.runtime_dir, mode=0o700, exist_ok=True)
        path = os.path.join(self.runtime_dir, "lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ProjectBusy(f"project {self.project!r} is already up (pysup pid {other}); stop that one first "
                              f"(Ctrl-C in its terminal, or kill {other})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            try:
                os.unlink(os.path.join(self.runtime_dir, "lock"))
            except FileNotFoundError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None
            for d in (self.secrets_dir, self.runtime_dir):
                try:
                    os.rmdir(d)
                except OSError:
                    pass

    # --- the record --------------------------------------------------------------------------

    def _save(self) -> None:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        write_json(self.record_path, self.record)

    def add(self, kind: str, item: str) -> None:
        if item not in self.record[kind]:
            self.record[kind].append(item)
            self._save()

    def discard(self, kind: str, item: str) -> None:
        if item in self.record[kind]:
            self.record[kind].remove(item)
            self._save()

    def start_record(self) -> None:
        self._save()

    def finish_record(self) -> None:
        """The end of a run: the files it made and the record go."""
        for path in self.record["files"]:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        try:
            os.unlink(self.record_path)
        except FileNotFoundError:
            pass

    # --- leftovers ---------------------------------------------------------------------------

    def clean_leftovers(self, manager: Any) -> list[str]:
        """Remove what a previous run of this project left (it must be dead: we hold the lock).
        Returns one line per thing removed."""
        removed: list[str] = []
        old = read_record(self.record_path,
                          lambda why: log.warning("up.record_unreadable", path=self.record_path, error=why))
        cgroups = list(old.get("cgroups", ()))
        if manager is not None and manager.exists(self.project):
            cgroups += [f"{self.project}/{c}" for c in manager.children(self.project)
                        if f"{self.project}/{c}" not in cgroups]
        for cg in cgroups:
            if manager is not None and manager.exists(cg):
                procs = manager.procs(cg)
                manager.remove(cg, timeout=10.0)
                removed.append(f"cgroup {cg}" + (f" (killed {len(procs)} process(es): {procs})" if procs else ""))
        if manager is not None and manager.exists(self.project):
            manager.remove(self.project, timeout=10.0)
        for cid in old.get("containers", ()):
            d = os.path.join(self.containers_dir, cid)
            if os.path.lexists(d):
                for m in _mounts_under(d):
                    _umount(m)
                    removed.append(f"mount {m}")
                shutil.rmtree(d, ignore_errors=True)
                removed.append(f"container directory {d}")
        for path in old.get("files", ()):
            if os.path.lexists(path):
                os.unlink(path)
                removed.append(f"file {path}")
        if old:
            removed.append(f"record {self.record_path} (pysup pid {old.get('pid', '?')})")
            os.unlink(self.record_path)
        return removed


def _mounts_under(directory: str) -> list[str]:
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].replace("\\040", " ")
                if mp == directory or mp.startswith(directory.rstrip("/") + "/"):
                    out.append(mp)
    except OSError:
        pass
    return sorted(out, key=len, reverse=True)


def _umount(path: str) -> None:
    from .. import syscalls as S

    try:
        S.umount2(path, S.MNT_DETACH)
    except Exception as exc:  # noqa: BLE001
        log.warning("up.umount_failed", path=path, error=str(exc))
