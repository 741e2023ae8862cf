"""Fixtures shared by every test package."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A host directory with the pysup-test- prefix, traversable by containers' users (mkdtemp
    makes it 0700), removed after the test even when it fails."""
    d = tempfile.mkdtemp(prefix="pysup-test-")
    os.chmod(d, 0o755)
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_busybox_rootfs():
    """One busybox rootfs for the whole session, built by the script the demo uses. Containers never
    write to it (their writes go to a layer or a tmpfs); a test that needs a writable root makes its
    own. Fixtures of each package wrap it with their own skip reasons."""
    if not os.path.exists("/bin/busybox"):
        pytest.skip("needs /bin/busybox (apt-get install busybox-static)")
    d = tempfile.mkdtemp(prefix="pysup-test-rootfs-")
    try:
        subprocess.run(["bash", str(REPO / "scripts/make-busybox-rootfs.sh"), d], check=True)
        os.chmod(d, 0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
