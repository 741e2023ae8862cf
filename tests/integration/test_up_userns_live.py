"""User namespace ranges over live edits: a scale-down frees the removed replicas' ranges, a
start-first rolling replacement holds both generations' ranges while they overlap and frees the
old one's after, and a change of `x-pysup.userns` mode moves the containers to the new kind of
range (`supervisor/runtime/userns.py`, `app.spec_builder`)."""

from __future__ import annotations

import json

import pytest

from .test_reconcile_scale import reconciled, save, until

pytestmark = pytest.mark.root

STACK = """
services:
  app:
    x-pysup: {{rootfs: ROOTFS, userns: {mode}}}
    command: ["sleep", "1000"]
    stop_grace_period: 200ms
    environment: {{GEN: "{gen}"}}
    deploy: {{replicas: {n}, update_config: {{order: start-first, parallelism: 1}}}}
"""


def record(env):
    path = env.tmp / "state" / "userns" / "allocations.json"
    return json.loads(path.read_text()) if path.exists() else {}


def running(u):
    return {e["container"] for e in u.events() if e.get("event") == "replica.started"}


def test_ranges_follow_scale_down_replacement_and_mode_change(userns_env):
    env = userns_env
    u = env.up(STACK.format(mode='"auto"', gen=0, n=3))
    u.wait_event("watch.started")
    until(u, lambda: len(record(env)) == 3, what="three auto ranges")
    assert sorted(record(env)) == sorted(f"{env.project}-app-{i}" for i in (1, 2, 3))

    save(env, STACK.format(mode='"auto"', gen=0, n=1))  # scale-down: 2 and 3 removed
    reconciled(u, 1)
    until(u, lambda: sorted(record(env)) == [f"{env.project}-app-1"], what="ranges of 2, 3 freed")

    save(env, STACK.format(mode='"auto"', gen=1, n=1))  # start-first replacement: app-1 -> app-1-r1
    reconciled(u, 2)
    until(u, lambda: sorted(record(env)) == [f"{env.project}-app-1-r1"], what="old generation's range freed")

    save(env, STACK.format(mode="true", gen=1, n=2))  # mode change: one shared range for the service
    reconciled(u, 3)
    want = {f"service:{env.project}/app"}
    until(u, lambda: set(record(env)) == want, what="one service range")
    holders = record(env)[f"service:{env.project}/app"]["holders"]
    assert len(holders) == 2, holders

    save(env, STACK.format(mode="false", gen=1, n=2))  # no user namespace any more
    reconciled(u, 4)
    until(u, lambda: record(env) == {}, what="all ranges freed")
    assert u.stop() == 0
    assert record(env) == {}
