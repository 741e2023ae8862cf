"""One container in the foreground without trio or a zygote: the engine of `pysup run`.

A one-shot run has nothing else to supervise, so it need not pay for trio (~200 ms to import here)
nor a zygote (a second interpreter): this synchronous process is single-threaded, so it may clone
the container's PID 1 itself, with the zygote's own code (`zygote.early_init`, `child_main`). The
compiled seccomp filter is cached on disk (`/run/pysup/seccomp/<sha256>.bpf`), so libseccomp is
not even imported after the first run.

    code = run_oneshot(spec)        # the container's exit status (0-255); raises RuntimeSetupError

Never call this from a trio (or any multi-threaded) process: use `launcher.run_one` there.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable

from .. import syscalls as S
from . import zygote as Z
from .errors import RuntimeSetupError
from .spec import ContainerSpec

try:  # the builtin module: importing hashlib (OpenSSL) costs ~2.5 ms of a one-shot's start
    from _sha256 import sha256 as _sha256
except ImportError:  # pragma: no cover
    from hashlib import sha256 as _sha256

DEFAULT_STATE_ROOT = "/run/pysup/containers"
FILTER_FORMAT = 2  # bump when the way filters are built changes (2: libseccomp's binary-tree layout)
DEFAULT_SECCOMP_CACHE = "/run/pysup/seccomp"
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def cached_filter(spec: ContainerSpec, cache_dir: str | None = DEFAULT_SECCOMP_CACHE) -> bytes | None:
    """The container's seccomp BPF, from the on-disk cache or compiled (and stored) once."""
    if spec.seccomp is None or spec.seccomp == "unconfined":
        return None
    key = _sha256(json.dumps(
        [FILTER_FORMAT, Z._filter_key(spec), os.uname().machine, _profile_digest(spec)], sort_keys=True).encode()
    ).hexdigest()
    path = os.path.join(cache_dir, key + ".bpf") if cache_dir else None
    if path:
        try:
            with open(path, "rb") as f:
                data = f.read()
            if data and len(data) % 8 == 0:
                return data
        except OSError:
            pass
    try:
        bpf = Z.prepare_filter(spec, {})
    except Z.Failure as f:
        raise RuntimeSetupError(str(f), stage=f.stage, errno=f.errno, container=spec.id) from None
    if path and bpf is not None:
        try:
            os.makedirs(cache_dir, mode=0o700, exist_ok=True)
            tmp = f"{path}.{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(bpf)
            os.replace(tmp, path)
        except OSError:
            pass
    return bpf


def _profile_digest(spec: ContainerSpec) -> str:
    if isinstance(spec.seccomp, dict):
        return "inline"  # already part of the filter key
    try:
        st = os.stat(Z.security.DEFAULT_PROFILE_PATH)
        return f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return "?"


def run_oneshot(spec: ContainerSpec, *, stdio: tuple[int, int, int] = (0, 1, 2),
                state_root: str = DEFAULT_STATE_ROOT, seccomp_cache: str | None = DEFAULT_SECCOMP_CACHE,
                warn: Callable[[str], None] | None = None, forward_signals: bool = True) -> int:
    """Run `spec` to its end with the caller's stdio; return its exit status like Docker (the
    code, or 128 + the signal). Signals this process gets are forwarded to the container.
    Raises `RuntimeSetupError` (exit_code 125/126/127) when it does not start."""
    Z.check_spec(spec)
    stdio = _usable_stdio(stdio)
    bpf = cached_filter(spec, seccomp_cache)
    state_dir = os.path.join(state_root, spec.id)
    os.makedirs(state_root, mode=0o711, exist_ok=True)
    os.chmod(state_root, 0o711)  # traversable (not listable): a user namespace's root reaches its own dir
    try:
        os.mkdir(state_dir, 0o700)
    except FileExistsError:
        raise RuntimeSetupError(f"container {spec.id} already exists ({state_dir})", stage="state",
                                errno=errno.EEXIST, container=spec.id) from None
    spec = ContainerSpec.from_dict({**spec.to_dict(), "state_dir": state_dir})
    pid = 0
    old_handlers: dict[int, object] = {}
    try:
        try:
            pid, sync_r = Z.clone_container(spec, list(stdio), bpf, Z.namespace_flags(spec) & ~S.CLONE_NEWCGROUP)
        except Z.Failure as f:
            pid = f.pid or 0
            raise RuntimeSetupError(str(f), stage=f.stage, errno=f.errno, container=spec.id) from None
        pidfd = os.pidfd_open(pid)
        if forward_signals:
            def forward(sig: int, _frame: object) -> None:
                try:
                    signal.pidfd_send_signal(pidfd, sig)
                except ProcessLookupError:
                    pass
            for sig in FORWARDED_SIGNALS:
                old_handlers[sig] = signal.signal(sig, forward)
        warnings, error, _ = Z._parse_lines(Z._read_all(sync_r))
        os.close(sync_r)
        for w in warnings:
            (warn or _stderr_warning)(w)
        if error is not None:
            os.waitpid(pid, 0)
            pid = 0
            raise RuntimeSetupError(error.get("message") or error.get("stage", "start failed"),
                                    stage=error.get("stage", "?"), errno=error.get("errno"), container=spec.id)
        _, status = os.waitpid(pid, 0)
        pid = 0
        code = os.waitstatus_to_exitcode(status)
        return code if code >= 0 else 128 - code
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)  # type: ignore[arg-type]
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
        shutil.rmtree(state_dir, ignore_errors=True)


def _usable_stdio(stdio: tuple[int, int, int]) -> tuple[int, int, int]:
    """A closed descriptor (no stdin at all, as under CI) becomes /dev/null for the container."""
    out = []
    for fd in stdio:
        try:
            os.fstat(fd)
            out.append(fd)
        except OSError:
            out.append(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
    return out[0], out[1], out[2]


def _stderr_warning(message: str) -> None:
    print(f"pysup: warning: {message}", file=sys.stderr)
