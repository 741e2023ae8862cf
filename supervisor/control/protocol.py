"""What the control server and client agree on (specs/control-api.md). No trio, no structlog:
the CLI imports this on its fast path.

A connection carries one request: a JSON object on one line (`{"v": 1, "cmd": ..., "args": {...}}`
and a newline), at most `MAX_REQUEST` bytes, sent within `REQUEST_TIMEOUT` seconds; `exec` sends
the caller's stdin, stdout and stderr with it as SCM_RIGHTS. Replies are JSON lines: the first is
`{"v": 1, "ok": true, "result": ...}` or `{"v": 1, "ok": false, "error": {"code", "message"}}`; a
streaming command (`events`, `stats`) follows `{"ok": true, "stream": true}` with `{"item": ...}`
lines until either side closes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

VERSION = 1
MAX_REQUEST = 64 * 1024  # bytes, newline included
REQUEST_TIMEOUT = 5.0  # seconds to send the whole request
MAX_FDS = 3
SOCKET_NAME = "control.sock"

# error codes
BAD_REQUEST = "bad-request"  # not JSON, not an object, truncated, bad args
TOO_LARGE = "too-large"
TIMEOUT = "timeout"
UNSUPPORTED_VERSION = "unsupported-version"
UNKNOWN_COMMAND = "unknown-command"
FORBIDDEN = "forbidden"
NOT_FOUND = "not-found"  # no such service or replica
CONFLICT = "conflict"  # e.g. exec into a replica that is not running
FAILED = "failed"


class ControlError(Exception):
    def __init__(self, code: str, message: str):
        self.code, self.message = code, message
        super().__init__(message)


def socket_path(project: str, environ=None) -> str:
    from .. import paths

    return os.path.join(paths.project_runtime_dir(project, environ), SOCKET_NAME)


@contextlib.contextmanager
def short_path(path: str) -> Iterator[str]:
    """A name for `path` that fits sockaddr_un (107 bytes): the path itself, or
    /proc/self/fd/<dir fd>/<name> while the block runs."""
    if len(os.fsencode(path)) < 108:
        yield path
        return
    fd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


def parse_target(text: str) -> tuple[str, int | None]:
    """`web` -> ("web", None); `web.2` or `web-2` -> ("web", 2)."""
    for sep in (".", "-"):
        name, dot, index = text.rpartition(sep)
        if dot and name and index.isdigit():
            return name, int(index)
    return text, None
