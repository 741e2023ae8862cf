"""Fixtures of the runtime tests.

Unit tests need nothing. Tests marked `root` start real containers: they need root, a kernel with
the namespaces, /bin/busybox from busybox-static (scripts/make-busybox-rootfs.sh builds the rootfs)
and pyseccomp. Every object they make carries a `pysup-test-` prefix and is removed even when the
test fails; `no_leaks` checks that no process, mount or state file of a container remains.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

IS_ROOT = os.geteuid() == 0


def _can_run_containers() -> str | None:
    if not IS_ROOT:
        return "needs root"
    if not os.path.exists("/bin/busybox"):
        return "needs /bin/busybox (apt-get install busybox-static)"
    try:
        import pyseccomp  # noqa: F401
    except ImportError:
        return "needs pyseccomp (pip install pyseccomp)"
    return None


SKIP_REASON = _can_run_containers()


def pytest_collection_modifyitems(config, items):
    here = str(Path(__file__).parent)
    for item in items:
        if not str(item.fspath).startswith(here) or "root" not in item.keywords:
            continue
        if not IS_ROOT:
            item.add_marker(pytest.mark.skip(reason="needs root"))
        elif SKIP_REASON is not None and ("busybox_rootfs" in item.fixturenames or "isolation" in item.fspath.basename):
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


def new_id() -> str:
    return f"pysup-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def busybox_rootfs(shared_busybox_rootfs):
    if SKIP_REASON is not None:
        pytest.skip(SKIP_REASON)
    return shared_busybox_rootfs


def _children() -> set[int]:
    me = str(os.getpid())
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me:
                out.add(int(entry))
    return out


def _test_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if "pysup-test-" in line]


@pytest.fixture
async def runtime(busybox_rootfs):
    """A running Launcher with its own state root; afterwards: no child process (container or
    zygote), no pysup-test- mount on the host, no state file."""
    from supervisor.runtime.launcher import open_runtime

    before = _children()
    state_root = tempfile.mkdtemp(prefix="pysup-test-state-")
    try:
        async with open_runtime(state_root=state_root) as rt:
            yield rt
        leftovers = os.listdir(state_root)
        assert leftovers == [], f"state files left: {leftovers}"
        assert _children() - before == set(), "processes left behind"
        assert _test_mounts() == [], "mounts left on the host"
    finally:
        shutil.rmtree(state_root, ignore_errors=True)
