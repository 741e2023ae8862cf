"""pysup's own container runtime: namespaces, a rootfs reached by pivot_root, capabilities,
no_new_privs and seccomp, started by a fork server (the zygote) and watched through pidfds.

    launcher.py   trio side: `Launcher` (the `Runtime` below), `open_runtime()`, `run_one()`
    oneshot.py    `run_oneshot()`: one container from a plain (trio-less) process, for `pysup run`
    zygote.py     the synchronous fork server (never imports trio)
    protocol.py   launcher ↔ zygote messages (specs/runtime-protocol.md)
    spec.py       `ContainerSpec` (one container, resolved, JSON-able), `ExecSpec`, `from_service()`
    errors.py     `RuntimeSetupError(stage, errno)` with Docker's exit codes, `ZygoteError`
    rootfs.py     the mount plan as data, applied through `supervisor.syscalls`
    security.py   capabilities, no_new_privs, seccomp (Docker's default profile)
    users.py      user/group names from the container's /etc/passwd and /etc/group

This module stays import-light (no trio): the zygote imports the package.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing stays unimported: the zygote imports this package (~0.4 MB of its memory)
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .launcher import ContainerHandle, ExitStatus
    from .spec import ContainerSpec, ExecSpec
else:
    Protocol = object  # `Runtime` below is a Protocol for the type checker only


class Runtime(Protocol):
    """What `supervise/` needs from a container runtime.

    `start` is a task: `handle = await nursery.start(runtime.start, spec)` returns once the
    container's process has exec'd (`task_status.started(handle)`); the task then waits for the
    exit through a pidfd, cleans up and returns the `ExitStatus`. Cancelling it kills the
    container (SIGKILL) and still waits for it, shielded."""

    async def start(self, spec: ContainerSpec, *, stdin: Any = "null", stdout: Any = "pipe", stderr: Any = "pipe",
                    task_status: Any = ...) -> ExitStatus: ...

    async def exec(self, container: ContainerHandle, spec: ExecSpec, *, stdin: Any = "null", stdout: Any = "pipe",
                   stderr: Any = "pipe", task_status: Any = ...) -> ExitStatus:
        """A process inside a running container (health checks, `pysup exec`): same task shape."""
        ...
