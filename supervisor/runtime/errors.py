"""Errors of the container runtime. `supervisor/errors.py` is the lead's; these subclass its
`PysupError` so the CLI prints them as one line."""

from __future__ import annotations

import errno as _errno

from ..errors import PysupError


class RuntimeSetupError(PysupError):
    """A container did not start: `stage` is the step that failed (`mount /proc`, `exec`, ...),
    `errno` the kernel's error when there is one. `exit_code` follows Docker: 127 command not found,
    126 command not executable, 125 any other start failure."""

    def __init__(self, message: str, *, stage: str, errno: int | None = None, container: str | None = None):
        super().__init__(message)
        self.stage = stage
        self.errno = errno
        self.container = container

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        if self.stage == "exec" and self.errno == _errno.ENOENT:
            return 127
        if self.stage == "exec" and self.errno in (_errno.EACCES, _errno.ENOEXEC, _errno.EPERM):
            return 126
        return 125


class ZygoteError(PysupError):
    """The zygote died or broke the protocol."""

    exit_code = 125
