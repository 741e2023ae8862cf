"""Volumes under `pysup up`: a named volume is the stack's and outlives the run; an anonymous one
survives its container's restarts and goes when the run ends."""

import pytest

pytestmark = pytest.mark.root

STACK = """
services:
  app:
    x-pysup: {rootfs: ROOTFS}
    stop_grace_period: 300ms
    restart: always
    command: ["/bin/sh", "-c", "n=$$(cat /anon/n 2>/dev/null || echo 0); echo $$((n+1)) > /anon/n; echo run $$((n+1)); echo kept > /data/f; sleep 0.3; exit 1"]
    volumes: ["data:/data", "/anon"]
volumes:
  data: {}
"""


def test_named_volume_is_kept_and_anonymous_one_survives_restarts_only(up_env):
    u = up_env.up(STACK)
    u.wait_for(lambda _event: "app-1 | run 2" in u.stdout(), what="a second run that saw the first run's anonymous volume")
    assert u.stop() == 0
    named = up_env.tmp / "state" / "volumes" / f"{up_env.project}_data" / "f"
    assert named.read_text() == "kept\n"
    assert not (up_env.tmp / "state" / "projects" / up_env.project / "anonymous-volumes").exists()
