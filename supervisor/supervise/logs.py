"""Container output: to pysup's stdout with a `service-N | ` prefix, and kept per container.

Each container's stdout and stderr are read line by line (`pump`); each line goes
- to the console (`Console`): `web-1  | line`, the prefix coloured per service on a TTY
  (`--no-color`, `--no-log-prefix` turn those off);
- to `<project state dir>/logs/<container>.log` (`ContainerLog`): one JSON object per line,
  `{"t": unix time, "stream": "stdout"|"stderr", "line": text}`, rotated at `max_bytes` with
  `keep` older files (`.1` the newest), so a `logs` command can read them later.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, BinaryIO

import attrs
import trio

MAX_LINE = 16 * 1024  # a longer line is cut into pieces
COLOURS = (36, 33, 32, 35, 34, 96, 93, 92, 95, 94)  # compose's palette: cyan, yellow, green, ...


BUFFER_BYTES = 1024 * 1024  # console output waiting for a slow terminal or pipe; beyond it, lines are dropped


@attrs.define
class Console:
    """Prefixed container lines to pysup's stdout.

    Without `run` (tests, one-off use) `line` writes at once. With `run` going (pysup up), `line`
    only appends to a bounded buffer and `run` writes it out from a worker thread, so a slow or
    blocked terminal or pipe never stalls the trio loop (supervision, restarts, stop go on). When
    the buffer is full, lines are dropped on the terminal side only (the per-container log files
    keep everything), counted, said once through structlog, and marked in the output when it moves
    again: `[pysup: N lines of container output dropped: stdout too slow]`."""

    out: BinaryIO = attrs.field(factory=lambda: sys.stdout.buffer)
    prefix: bool = True
    colour: bool = False
    width: int = 0  # prefix names are padded to this
    buffer_bytes: int = BUFFER_BYTES
    dropped: int = 0  # lines dropped since the start
    _colours: dict[str, int] = attrs.Factory(dict)
    _queue: list[bytes] = attrs.Factory(list)
    _queued: int = 0
    _wake: Any = None  # a trio.Event while `run` waits for lines
    _running: bool = False
    _unreported: int = 0  # dropped, not yet marked in the output
    _warned: bool = False

    def colour_of(self, service: str) -> int:
        if service not in self._colours:
            self._colours[service] = COLOURS[len(self._colours) % len(COLOURS)]
        return self._colours[service]

    def line(self, service: str, name: str, text: bytes) -> None:
        if self.prefix:
            head = f"{name:<{self.width}} | "
            if self.colour:
                head = f"\x1b[{self.colour_of(service)}m{head}\x1b[0m"
            text = head.encode() + text
        data = text + b"\n"
        if not self._running:
            self._write(data)
            return
        if self._queued + len(data) > self.buffer_bytes:
            self.dropped += 1
            self._unreported += 1
            if not self._warned:
                self._warned = True
                import structlog

                structlog.get_logger().warning(
                    "console.dropping", buffered=self._queued,
                    detail="stdout is not keeping up: container lines are dropped on the terminal side "
                           "(the per-container logs keep everything); said once")
            return
        if self._unreported:  # where the gap is
            data = self._marker() + data
        self._queue.append(data)
        self._queued += len(data)
        if self._wake is not None:
            self._wake.set()

    def _marker(self) -> bytes:
        n, self._unreported = self._unreported, 0
        return f"[pysup: {n} lines of container output dropped: stdout too slow]\n".encode()

    def _write(self, data: bytes) -> None:
        try:
            self.out.write(data)
            self.out.flush()
        except (BrokenPipeError, ValueError):
            pass

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer: until cancelled, hand what `line` buffered to a worker thread, one batch at
        a time. A write blocked on a reader that never reads is abandoned at cancellation (the
        thread stays blocked; pysup exits anyway)."""
        self._running = True
        task_status.started()
        try:
            while True:
                if not self._queue:
                    self._wake = trio.Event()
                    await self._wake.wait()
                    self._wake = None
                    continue
                batch = b"".join(self._queue)
                self._queue.clear()
                self._queued = 0
                await trio.to_thread.run_sync(self._write_fd, batch, abandon_on_cancel=True)
        finally:
            self._running = False
            self._wake = None
            if self._unreported:
                self._queue.append(self._marker())
            if self._queue:  # the last lines of a stopping stack, if stdout takes them within 1 s
                batch = b"".join(self._queue)
                self._queue.clear()
                self._queued = 0
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await trio.to_thread.run_sync(self._write_fd, batch, abandon_on_cancel=True)

    def _write_fd(self, data: bytes) -> None:
        """In a worker thread: straight to the file descriptor (a thread left blocked in a
        BufferedWriter would hold its lock, and interpreter shutdown would wait on it)."""
        try:
            fd = self.out.fileno()
        except (AttributeError, OSError, ValueError):
            self._write(data)
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:  # EPIPE (the reader went away), EAGAIN (a non-blocking fd): dropped
            pass


@attrs.define
class ContainerLog:
    """One container's kept log, rotated by size."""

    path: str
    max_bytes: int = 10 * 1024 * 1024
    keep: int = 2
    _f: BinaryIO | None = None
    _size: int = 0

    def _open(self) -> BinaryIO:
        if self._f is None:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            self._f = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
            self._size = self._f.tell()
        return self._f

    def write(self, stream: str, text: bytes) -> None:
        rec = json.dumps({"t": round(time.time(), 6), "stream": stream, "line": text.decode("utf-8", "replace")},
                         ensure_ascii=False).encode() + b"\n"
        f = self._open()
        if self._size + len(rec) > self.max_bytes and self._size > 0:
            self.rotate()
            f = self._open()
        f.write(rec)
        self._size += len(rec)

    def rotate(self) -> None:
        self.close()
        for i in range(self.keep, 0, -1):
            src = self.path if i == 1 else f"{self.path}.{i - 1}"
            if os.path.exists(src):
                os.replace(src, f"{self.path}.{i}")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


async def pump(stream: trio.abc.ReceiveStream, stream_name: str, service: str, name: str, console: Console | None,
               kept: ContainerLog | None) -> None:
    """Copy `stream` line by line until EOF; closes it."""
    buf = b""
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            while len(buf) > MAX_LINE:
                lines.append(buf[:MAX_LINE])
                buf = buf[MAX_LINE:]
            for line in lines:
                _emit(line, stream_name, service, name, console, kept)
        if buf:
            _emit(buf, stream_name, service, name, console, kept)
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


def _emit(line: bytes, stream_name: str, service: str, name: str, console: Console | None,
          kept: ContainerLog | None) -> None:
    line = line.removesuffix(b"\r")
    if console is not None:
        console.line(service, name, line)
    if kept is not None:
        kept.write(stream_name, line)
