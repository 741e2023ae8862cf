"""A small synchronous client of the control API, for the CLI (no trio: a `pysup ps` costs an
interpreter start and one round trip).

    c = Client.for_project("shop")           # NotRunning if no `pysup up` of "shop" runs
    rows = c.request("ps", {"all": True})
    for ev in c.stream("events"): ...
    code = c.request("exec", {...}, fds=[0, 1, 2])["exit_code"]
"""

from __future__ import annotations

import array
import json
import os
import socket
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import PysupError
from . import protocol as P


class NotRunning(PysupError):
    pass


class ControlFailed(PysupError):
    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


class Client:
    def __init__(self, path: str, project: str = "", timeout: float | None = 30.0):
        self.path, self.project, self.timeout = path, project, timeout

    @classmethod
    def for_project(cls, project: str, environ: Any = None, timeout: float | None = 30.0) -> Client:
        return cls(P.socket_path(project, environ), project, timeout)

    def running(self) -> bool:
        try:
            self.connect().close()
            return True
        except NotRunning:
            return False

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.settimeout(self.timeout)
        try:
            with P.short_path(self.path) as name:
                s.connect(name)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            s.close()
            raise NotRunning(f"no stack {self.project!r} is running (no pysup up serves {self.path})") from None
        except PermissionError:
            s.close()
            raise PysupError(f"permission denied on {self.path}: the stack belongs to another user") from None
        except BaseException:
            s.close()
            raise
        return s

    def _send(self, s: socket.socket, cmd: str, args: dict | None, fds: Sequence[int]) -> Any:
        data = json.dumps({"v": P.VERSION, "cmd": cmd, "args": args or {}}, separators=(",", ":")).encode() + b"\n"
        if fds:
            s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            s.sendall(data)
        f = s.makefile("rb")
        try:
            head = self._line(f)
            if head is None:
                raise PysupError(f"the stack {self.project!r} closed the connection without a reply")
            if not head.get("ok"):
                err = head.get("error") or {}
                raise ControlFailed(err.get("code", "?"), err.get("message", "request failed"))
        except BaseException:
            f.close()
            raise
        return head, f

    @staticmethod
    def _line(f: Any) -> dict | None:
        line = f.readline()
        if not line:
            return None
        return json.loads(line)

    def request(self, cmd: str, args: dict | None = None, *, fds: Sequence[int] = (),
                timeout: float | None = -1) -> Any:
        s = self.connect()
        try:
            if timeout != -1:
                s.settimeout(timeout)
            head, f = self._send(s, cmd, args, fds)
            f.close()
            return head.get("result")
        except (TimeoutError, socket.timeout):
            raise PysupError(f"the stack {self.project!r} did not answer {cmd!r} in time") from None
        finally:
            s.close()

    def stream(self, cmd: str, args: dict | None = None) -> Iterator[Any]:
        s = self.connect()
        s.settimeout(None)
        try:
            _head, f = self._send(s, cmd, args, ())
            with f:
                while True:
                    msg = self._line(f)
                    if msg is None:
                        return
                    if "item" in msg:
                        yield msg["item"]
        finally:
            s.close()


def wait_gone(project: str, environ: Any = None, timeout: float = 60.0) -> bool:
    """Wait until the `pysup up` of `project` has exited (its lock file is gone)."""
    import time

    from .. import paths

    import fcntl

    lock = os.path.join(paths.project_runtime_dir(project, environ), "lock")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True  # a lock file no one holds: that pysup is gone (killed)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
