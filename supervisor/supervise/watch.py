"""Watching the spec while `pysup up` runs: kernel notifications on the spec files' directories,
debounced, and SIGHUP; each trigger reloads the spec and hands a good one to the supervisor.

    async with trio.open_nursery() as n:
        n.start_soon(watch_spec, sup, reload, stack.sources)

- inotify watches the *directory* of every file in `Stack.sources` (spec files, includes,
  extends, env files), so a save by rename (vim, most editors: write a new file, rename it over
  the old) is seen as well as an in-place write. Events for other names in those directories are
  ignored. A burst of events (truncate, write, close; or create, write, rename) is one change: the
  reload happens once the directory has been quiet for `debounce` seconds.
- SIGHUP forces a reload.
- A spec that does not load is logged (`reload.invalid`, one event per problem: file:line:col: key
  path: message) and nothing changes; the next good save applies.
- The set of watched files follows the newest good spec (an `include` added is watched from then).
- The supervisor applies the newest good stack after the reconcile running, so an edit made during
  a reconcile is never lost.
"""

from __future__ import annotations

import ctypes
import os
import signal
import struct
import sys
from collections.abc import Callable, Iterable
from typing import Any

import structlog
import trio

from ..errors import PysupError, SpecError

log = structlog.get_logger()

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
DIR_MASK = (IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_ATTRIB
            | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len
_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]

DEBOUNCE = 0.05  # seconds of quiet that end a burst of events


class SpecWatcher:
    """inotify on the directories of a set of files; `next_change()` returns the files that changed."""

    def __init__(self, files: Iterable[str] = ()):
        fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise PysupError(f"cannot watch the spec files: inotify_init1: {os.strerror(err)}")
        self.fd = fd
        self._dirs: dict[str, int] = {}  # directory -> wd
        self._names: dict[int, set[str]] = {}  # wd -> watched base names
        self.set_files(files)

    def set_files(self, files: Iterable[str]) -> None:
        wanted: dict[str, set[str]] = {}
        for f in files:
            if f and f != "-":
                path = os.path.abspath(f)
                wanted.setdefault(os.path.dirname(path), set()).add(os.path.basename(path))
        for d in list(self._dirs):
            if d not in wanted:
                _libc.inotify_rm_watch(self.fd, self._dirs[d])
                self._names.pop(self._dirs.pop(d), None)
        for d, names in wanted.items():
            if d not in self._dirs:
                wd = _libc.inotify_add_watch(self.fd, os.fsencode(d), DIR_MASK)
                if wd < 0:
                    err = ctypes.get_errno()
                    log.warning("watch.failed", directory=d, error=os.strerror(err))
                    continue
                self._dirs[d] = wd
            self._names[self._dirs[d]] = names

    @property
    def files(self) -> list[str]:
        return sorted(os.path.join(d, n) for d, wd in self._dirs.items() for n in self._names.get(wd, ()))

    def _read(self) -> set[str]:
        """The watched files named by the queued events (all of them on an overflow)."""
        hit: set[str] = set()
        by_wd = {wd: d for d, wd in self._dirs.items()}
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return hit
            pos = 0
            while pos + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
                name = data[pos + _EVENT.size:pos + _EVENT.size + length].rstrip(b"\0").decode(errors="replace")
                pos += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    hit.update(self.files)
                elif wd in by_wd and (name in self._names.get(wd, ()) or mask & (IN_DELETE_SELF | IN_MOVE_SELF)):
                    hit.add(os.path.join(by_wd[wd], name))

    async def next_change(self, debounce: float = DEBOUNCE) -> set[str]:
        """The watched files changed by the next burst of events (ended by `debounce` s of quiet)."""
        while True:
            await trio.lowlevel.wait_readable(self.fd)
            changed = self._read()
            if not changed:
                continue
            while True:
                with trio.move_on_after(debounce) as quiet:
                    await trio.lowlevel.wait_readable(self.fd)
                if quiet.cancelled_caught:
                    return changed
                changed |= self._read()

    def close(self) -> None:
        if self.fd >= 0:
            trio.lowlevel.notify_closing(self.fd)
            os.close(self.fd)
            self.fd = -1


def describe_invalid(exc: SpecError) -> list[str]:
    return [str(p) for p in exc.problems]


async def watch_spec(sup: Any, reload: Callable[[], Any], files: Iterable[str], *, extra: Iterable[str] = (),
                     debounce: float = DEBOUNCE, hup: bool = True, prepare: Callable[[Any], Any] | None = None,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Reload on every change of a watched file (and on SIGHUP); `sup.submit` each good stack.
    `reload()` returns a `config.load.Loaded` or raises SpecError. `extra`: files watched beside
    each good stack's `sources` (the interpolation env files). `prepare(stack)` (async), if
    given, readies what the stack needs before it is submitted (its new networks and published
    ports); a PysupError from it is reported like a spec that does not load, nothing submitted."""
    extra = tuple(extra)
    try:
        watcher: SpecWatcher | None = SpecWatcher([*files, *extra])
    except PysupError as exc:  # no inotify (limits reached): SIGHUP still reloads
        log.warning("watch.unavailable", error=str(exc), hint="send SIGHUP to reload the spec")
        watcher = None
    send, recv = trio.open_memory_channel[str](float("inf"))
    try:
        async with trio.open_nursery() as n:
            async def edits() -> None:
                assert watcher is not None
                while True:
                    changed = await watcher.next_change(debounce)
                    send.send_nowait("edit: " + ", ".join(sorted(os.path.relpath(c) for c in changed)))

            async def hups() -> None:
                with trio.open_signal_receiver(signal.SIGHUP) as signals:
                    task_status.started()
                    async for _ in signals:
                        send.send_nowait("SIGHUP")

            if watcher is not None:
                n.start_soon(edits)
            if hup:
                n.start_soon(hups)
            else:
                task_status.started()
            log.info("watch.started", files=watcher.files if watcher is not None else [])
            async for why in recv:
                whys = [why]
                while True:  # several triggers queued: one reload of the newest files
                    try:
                        whys.append(recv.receive_nowait())
                    except trio.WouldBlock:
                        break
                await _reload_once(sup, reload, watcher, "; ".join(dict.fromkeys(whys)), extra, prepare)
    finally:
        if watcher is not None:
            watcher.close()


async def _reload_once(sup: Any, reload: Callable[[], Any], watcher: SpecWatcher | None, why: str,
                       extra: tuple[str, ...] = (), prepare: Callable[[Any], Any] | None = None) -> None:
    log.info("reload.started", trigger=why)
    try:
        loaded = await trio.to_thread.run_sync(reload)
    except SpecError as exc:
        problems = describe_invalid(exc)
        for p in problems:
            log.error("reload.invalid", problem=p)
        print("pysup: the spec does not load; keeping the running stack:\n  " + "\n  ".join(problems),
              file=sys.stderr, flush=True)
        return
    except PysupError as exc:
        log.error("reload.invalid", problem=str(exc))
        return
    stack = loaded.stack
    for w in loaded.warnings:
        log.warning("reload.warning", problem=str(w))
    if watcher is not None:
        watcher.set_files([*stack.sources, *extra])
    if stack.name != sup.stack.name:
        log.error("reload.invalid", problem=f"the project name changed ({sup.stack.name!r} -> {stack.name!r}); "
                                            "restart pysup up to rename a project")
        return
    if prepare is not None:
        try:
            await prepare(stack)
        except PysupError as exc:
            log.error("reload.invalid", problem=str(exc))
            print(f"pysup: the edit cannot be applied; keeping the running stack:\n  {exc}", file=sys.stderr, flush=True)
            return
    log.info("reload.loaded", services=len(stack.services))
    sup.submit(stack)
