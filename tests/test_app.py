"""app.LocatedRuntime: a container's start failure is located in the files as the stack it was
made from read them, even after the file on disk changed (an edit that loaded but was not applied,
or was applied later)."""

from __future__ import annotations

import pytest

from supervisor.app import LocatedRuntime
from supervisor.config.load import load
from supervisor.runtime.errors import RuntimeSetupError
from supervisor.runtime.spec import ContainerSpec


class FailingRuntime:
    async def start(self, spec, **kw):
        raise RuntimeSetupError("user: unable to find user bob", stage="user", container=spec.id)


def loaded(tmp_path, text):
    f = tmp_path / "compose.yaml"
    f.write_text(text)
    return load([str(f)], environ={}).stack


async def test_start_errors_are_located_in_the_stack_the_container_came_from(tmp_path):
    old = loaded(tmp_path, "services:\n  web:\n    image: x\n    user: bob\n")
    new = loaded(tmp_path, "services:\n\n\n  web:\n    image: x\n\n    user: bob\n")  # the key moved down
    started_from = {"p-web-1": (old.services["web"], old.locate), "p-web-2": (new.services["web"], new.locate)}
    rt = LocatedRuntime(FailingRuntime(), started_from)
    errors = {}
    for cid in list(started_from):
        with pytest.raises(RuntimeSetupError) as info:
            await rt.start(ContainerSpec(id=cid, rootfs="/", argv=("true",)))
        assert info.value.stage == "user" and info.value.container == cid
        errors[cid] = str(info.value)
    assert started_from == {}  # taken by the start: nothing kept for a container that runs
    f = tmp_path / "compose.yaml"
    assert errors == {"p-web-1": f"{f}:4:11: services.web.user: user: unable to find user bob",
                      "p-web-2": f"{f}:7:11: services.web.user: user: unable to find user bob"}


async def test_a_container_not_made_by_the_spec_builder_keeps_the_runtime_error():
    rt = LocatedRuntime(FailingRuntime(), {})
    with pytest.raises(RuntimeSetupError, match="^user: unable to find user bob$"):
        await rt.start(ContainerSpec(id="other", rootfs="/", argv=("true",)))


def test_the_locator_is_not_part_of_the_stack_value(tmp_path):
    a = loaded(tmp_path, "services:\n  web:\n    image: x\n")
    b = loaded(tmp_path, "services:\n\n  web:\n    image: x\n")
    assert a.locate is not None and a == b and hash(a) == hash(b)  # same stack, different places
