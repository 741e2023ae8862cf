"""The live-edit image gate's logic (supervisor/images/live.py) with a fake registry client and a
fake supervisor: what an edit holds back while its image is pulled, what it hands over at once,
what a failed pull keeps. The real thing (a loopback registry, `pysup up`): test_up_images.py."""

from __future__ import annotations

import trio
import trio.testing

import attrs

from supervisor.config.model import Dependency, Service, Stack
from supervisor.images.live import LiveImages
from supervisor.images.registry import RegistryError


def stack(**images: str) -> Stack:
    return Stack(name="p", project_dir="/", files=(), services={
        name: Service(name=name, image=image, pull_policy="always", command=("x",)) for name, image in images.items()})


class Sup:
    def __init__(self, s: Stack):
        self.stack = s
        self.submitted: list[Stack] = []
        self.pending = False  # an edit waits for a pull: the stack must not end

    def edits_pending(self, pending: bool) -> None:
        self.pending = pending

    def submit(self, s: Stack) -> None:
        self.submitted.append(s)
        self.stack = s


class Client:
    """Pulls that end when the test says (`release[image].set()`); image `bad:1` fails."""

    def __init__(self):
        self.pulled: list[str] = []
        self.release: dict[str, trio.Event] = {}

    def __call__(self, _registries):
        return self

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None

    async def pull(self, ref, store):
        self.pulled.append(ref)
        await self.release.setdefault(ref, trio.Event()).wait()
        if ref == "bad:1":
            raise RegistryError(f"image {ref}: not found in registry r (manifest unknown)")
        return have(store, ref)


def have(store, ref):
    """`ref` in the store (no layers: the gate only looks it up)."""
    from supervisor.images.reference import parse

    r = parse(ref)
    return store.add_image(r.name, r.tag, layers=[], config={}, digest="sha256:0", source=ref)


def gate_for(tmp_path, running: Stack, client: Client | None = None):
    """A gate over a fake supervisor running `running`, whose images were pulled at start-up."""
    from supervisor.images.store import ImageStore

    sup = Sup(running)
    store = ImageStore(str(tmp_path / "store"))
    for service in running.services.values():
        have(store, service.image)
    client = client or Client()
    return sup, client, store, LiveImages(sup, store=store, client=client)


async def test_an_edit_is_applied_at_once_less_the_services_waiting_for_a_pull(tmp_path, capsys):
    sup, client, store, gate = gate_for(tmp_path, stack(a="a:1", b="b:1"))
    async with trio.open_nursery() as n:
        await n.start(gate.run)
        # b changes image, c is added: both wait for their pulls; a (unchanged, even with `always`) is not pulled
        gate.submit(stack(a="a:1", b="b:2", c="c:1"))
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(client.pulled) == ["b:2", "c:1"]
        assert {n: s.image for n, s in sup.submitted[-1].services.items()} == {"a": "a:1", "b": "b:1"}
        assert sup.pending
        client.release.setdefault("c:1", trio.Event()).set()
        await gate.wait_pulls(1)
        assert {n: s.image for n, s in sup.submitted[-1].services.items()} == {"a": "a:1", "b": "b:1", "c": "c:1"}
        assert sup.pending  # b:2 still
        client.release.setdefault("b:2", trio.Event()).set()
        await gate.wait_pulls(2)
        assert {n: s.image for n, s in sup.submitted[-1].services.items()} == {"a": "a:1", "b": "b:2", "c": "c:1"}
        assert not sup.pending
        # the same file saved again: handed over, nothing pulled again
        gate.submit(stack(a="a:1", b="b:2", c="c:1"))
        assert len(client.pulled) == 2 and len(sup.submitted) == 4
        # a failed pull: the service keeps what runs; the next edit tries again
        client.release["bad:1"] = trio.Event()
        client.release["bad:1"].set()
        before = len(sup.submitted)
        gate.submit(stack(a="bad:1", b="b:2", c="c:1"))
        await gate.wait_pulls(3)
        assert len(sup.submitted) == before + 1  # the edit (a held back), nothing after the failure
        assert sup.submitted[-1].services["a"].image == "a:1"
        assert not sup.pending  # a failed pull: nothing is on its way until the next edit
        assert "pysup: cannot pull image bad:1 for service a: not found in registry r (manifest unknown); " \
               "keeping the running state" in capsys.readouterr().err
        gate.submit(stack(a="bad:1", b="b:2", c="c:1"))
        await gate.wait_pulls(4)
        assert client.pulled.count("bad:1") == 2
        # an added service depending on an added one that waits for its image waits with it
        s = stack(a="a:1", b="b:2", c="c:1", d="d:1", e="a:1")
        s = attrs.evolve(s, services={**s.services, "e": attrs.evolve(
            s.services["e"], pull_policy="never", depends_on=(Dependency(service="d", condition="service_healthy"),))})
        gate.submit(s)
        await trio.testing.wait_all_tasks_blocked()
        assert set(sup.submitted[-1].services) == {"a", "b", "c"}
        client.release.setdefault("d:1", trio.Event()).set()
        await gate.wait_pulls(5)
        assert set(sup.submitted[-1].services) == {"a", "b", "c", "d", "e"}
        # an unchanged service whose image is not in the store (`never` until now) is pulled
        # when its policy allows it
        s = stack(a="a:1", b="b:1", f="f:1")
        s = attrs.evolve(s, services={**s.services, "f": attrs.evolve(s.services["f"], pull_policy="never")})
        gate.submit(s)
        await trio.testing.wait_all_tasks_blocked()
        assert "f:1" not in client.pulled and set(sup.submitted[-1].services) == {"a", "b", "f"}
        gate.submit(stack(a="a:1", b="b:1", f="f:1"))
        await trio.testing.wait_all_tasks_blocked()
        assert client.pulled.count("f:1") == 1 and sup.submitted[-1].services["f"].pull_policy == "never"
        client.release.setdefault("f:1", trio.Event()).set()
        await gate.wait_pulls(6)
        assert sup.submitted[-1].services["f"].pull_policy == "always"
        n.cancel_scope.cancel()


async def test_a_pull_no_edit_needs_any_more_is_called_off(tmp_path):
    sup, client, store, gate = gate_for(tmp_path, stack(a="a:1"))
    async with trio.open_nursery() as n:
        await n.start(gate.run)
        gate.submit(stack(a="a:1", c="c:1", d="d:1"))
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(client.pulled) == ["c:1", "d:1"] and sup.pending
        gate.submit(stack(a="a:1", d="d:1"))  # c removed while its image downloads
        await gate.wait_pulls(1)  # c:1's pull ended: called off, not released
        assert store.find("c:1") is None and set(sup.submitted[-1].services) == {"a"}
        assert sup.pending  # d:1 is still on its way
        client.release.setdefault("d:1", trio.Event()).set()
        await gate.wait_pulls(2)
        assert set(sup.submitted[-1].services) == {"a", "d"} and not sup.pending
        # called off, then wanted again: pulled anew
        gate.submit(stack(a="a:1", d="d:1", c="c:1"))
        await trio.testing.wait_all_tasks_blocked()
        assert client.pulled.count("c:1") == 2
        client.release["c:1"].set()
        await gate.wait_pulls(3)
        assert set(sup.submitted[-1].services) == {"a", "c", "d"}
        n.cancel_scope.cancel()


def tagged(s: Stack, tag: str) -> Stack:
    """`s` with a locator that says which files (`tag`) located a problem."""
    from supervisor.errors import Problem

    return attrs.evolve(s, locate=lambda ps: tuple(Problem(p.message, path=p.path, file=tag) for p in ps))


async def test_a_kept_definition_is_located_in_the_files_it_was_read_from(tmp_path):
    from supervisor.errors import Problem
    sup, client, store, gate = gate_for(tmp_path, tagged(stack(a="a:1", b="b:1"), "old"))
    async with trio.open_nursery() as n:
        await n.start(gate.run)
        gate.submit(tagged(stack(a="a:1", b="b:2"), "new"))  # b keeps b:1 while b:2 downloads
        await trio.testing.wait_all_tasks_blocked()
        handed = sup.submitted[-1]
        assert handed.services["b"].image == "b:1"

        def where(*path):
            return handed.locate([Problem("x", path=path)])[0].file

        assert (where("services", "b", "user"), where("services", "a", "user"), where("networks")) == \
               ("old", "new", "new")
        gate.submit(tagged(stack(a="a:1", b="b:2"), "newer"))  # saved again while b:2 downloads
        handed = sup.submitted[-1]
        assert (where("services", "b", "user"), where("services", "a", "user")) == ("old", "newer")
        assert handed.locate.by_service["b"] is sup.submitted[0].locate.by_service["b"]  # flat: no chain
        client.release.setdefault("b:2", trio.Event()).set()
        await gate.wait_pulls(1)
        assert sup.submitted[-1].services["b"].image == "b:2"
        assert sup.submitted[-1].locate([Problem("x", path=("services", "b", "user"))])[0].file == "newer"
        n.cancel_scope.cancel()


class RacingClient(Client):
    """A pull whose layer fails as it is called off: the error, not the cancellation, comes out."""

    async def pull(self, ref, store):
        self.pulled.append(ref)
        try:
            await self.release.setdefault(ref, trio.Event()).wait()
        except trio.Cancelled:
            raise RegistryError(f"image {ref}: layer sha256:0: truncated") from None
        return have(store, ref)


async def test_a_called_off_pull_that_fails_as_it_ends_is_not_a_failure(tmp_path, capsys):
    sup, client, store, gate = gate_for(tmp_path, stack(a="a:1"), RacingClient())
    async with trio.open_nursery() as n:
        await n.start(gate.run)
        gate.submit(stack(a="a:1", c="c:1"))
        await trio.testing.wait_all_tasks_blocked()
        gate.submit(stack(a="a:1"))
        await gate.wait_pulls(1)
        assert "cannot pull" not in capsys.readouterr().err
        gate.submit(stack(a="a:1", c="c:1"))  # not remembered as failed: pulled again
        await trio.testing.wait_all_tasks_blocked()
        assert client.pulled == ["c:1", "c:1"]
        n.cancel_scope.cancel()
