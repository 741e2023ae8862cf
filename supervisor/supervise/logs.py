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
from typing import BinaryIO

import attrs
import trio

MAX_LINE = 16 * 1024  # a longer line is cut into pieces
COLOURS = (36, 33, 32, 35, 34, 96, 93, 92, 95, 94)  # compose's palette: cyan, yellow, green, ...


@attrs.define
class Console:
    out: BinaryIO = attrs.field(factory=lambda: sys.stdout.buffer)
    prefix: bool = True
    colour: bool = False
    width: int = 0  # prefix names are padded to this
    _colours: dict[str, int] = attrs.Factory(dict)

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
        try:
            self.out.write(text + b"\n")
            self.out.flush()
        except (BrokenPipeError, ValueError):
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
