"""A replica stopped through the control API stays stopped: the reconcile plan is filtered."""

import types

from supervisor.supervise.reconcile import Action, Plan
from supervisor.supervise.supervisor import StackSupervisor


def test_keep_held_filters_replace_restart_and_limits():
    sup = types.SimpleNamespace(held={("web", 2), ("db", 1), ("old", 1)})
    p = Plan([Action("replace", "web", [1, 2]), Action("update-limits", "db", [1]),
              Action("restart", "db", [1]), Action("scale-up", "web", [3]), Action("scale-down", "api", [4]),
              Action("remove", "old", [1])])
    kept = StackSupervisor._keep_held(sup, p)
    assert [(a.kind, a.service, a.indexes) for a in kept.actions] == [
        ("replace", "web", (1,)), ("scale-up", "web", (3,)), ("scale-down", "api", (4,)), ("remove", "old", (1,))]
    assert sup.held == {("web", 2), ("db", 1)}  # a removed service is no longer held


def test_nothing_held_plan_unchanged():
    p = Plan([Action("replace", "web", [1])])
    assert StackSupervisor._keep_held(types.SimpleNamespace(held=set()), p) is p
