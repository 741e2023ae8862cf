"""Images for a live reconcile: between the spec watcher and the stack supervisor, a reloaded stack
whose added services (or services whose `image:` changed) need an image pulled (their
`pull_policy`: by default, an image not in the store) has the pulls started in the background and
is handed over at once without those services: an added one is left out, a changed one keeps its
running definition (and so does a service depending on an added one that waits). So the rest of the edit is applied, and the running stack keeps running,
while the pulls run. Each pull that ends hands the newest stack over again; a failed pull is
logged (`image.pull_failed`) and printed, naming the image and the services, and those services
keep their old state until the next edit (which tries again). A pull that a later edit no longer
needs (its services removed, or given another image) is called off (`image.pull_cancelled`).

    gate = LiveImages(sup, environ=...)
    await nursery.start(gate.run)
    watch_spec(gate, reload, files)      # gate.submit(stack) / gate.stack, like the supervisor's
"""

from __future__ import annotations

import sys
from typing import Any

import attrs
import structlog
import trio

from ..errors import PysupError
from .commands import should_pull
from .config import effective_stack
from .store import HOST_IMAGE, ImageStore

log = structlog.get_logger()


def _pulled_image(service: Any) -> str | None:
    if not service.image or service.image == HOST_IMAGE or service.x.rootfs:
        return None
    return service.image


class LiveImages:
    def __init__(self, sup: Any, *, environ: Any = None, store: ImageStore | None = None, client: Any = None):
        from .. import paths

        self.sup = sup
        self.store = store or ImageStore(paths.images_dir(environ))
        self._client = client  # tests: a RegistryClient factory (settings -> async context manager)
        self.applied = sup.stack  # the stack last handed to the supervisor
        self.newest: Any = None  # the newest stack submitted
        self._pulling: dict[str, trio.CancelScope] = {}  # image -> its pull's scope
        self._fresh: set[str] = set()  # pulled since the newest edit (pull_policy: always pulls once)
        self._failed: dict[str, str] = {}  # image -> error, until the next edit
        self._nursery: trio.Nursery | None = None
        self.pulls = 0  # pulls ended (tests wait on this)
        self._pull_ended = trio.Event()

    @property
    def stack(self) -> Any:
        return self.sup.stack

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as n:
            self._nursery = n
            task_status.started()
            await trio.sleep_forever()

    async def wait_pulls(self, count: int) -> None:
        while self.pulls < count:
            await self._pull_ended.wait()

    def submit(self, stack: Any) -> None:
        """A newly loaded stack (the watcher's): start what it needs pulled, hand over the rest."""
        self.newest = stack
        self._failed.clear()
        self._fresh.clear()
        wanted = {_pulled_image(s) for s in stack.services.values()}
        for image, scope in self._pulling.items():
            if image not in wanted:  # nothing in the edit uses it any more: stop downloading
                scope.cancel()
        self._apply(edit=True)

    def _needs_pull(self, name: str, service: Any) -> str | None:
        image = _pulled_image(service)
        if image is None:
            return None
        old = self.applied.services.get(name)
        if old is not None and old.image == service.image and self.store.find(image) is not None:
            return None  # its image did not change and is here: pulled (or not) when it was added
        if image in self._pulling or image in self._failed:
            return image
        if image in self._fresh:
            return None
        try:
            return image if should_pull(service.pull_policy, self.store, image) else None
        except PysupError as exc:  # an unknown policy: the start reports it
            log.warning("image.pull_policy", service=name, error=str(exc))
            return None

    def _apply(self, *, edit: bool = False) -> None:
        """Hand the newest stack over, less what waits for a pull: always after an edit (the
        supervisor logs even "nothing to do"), after a pull only if it changed something."""
        stack = self.newest
        held: dict[str, str] = {}  # service -> image it waits for
        for name, service in stack.services.items():
            image = self._needs_pull(name, service)
            if image is not None:
                held[name] = image
        for name, image in list(held.items()):
            if image not in self._pulling and image not in self._failed:
                self._start_pull(image, stack)
        # a service depending on one that is held back and not running yet waits with it
        waiting = True
        while waiting:
            waiting = False
            for name, service in stack.services.items():
                dep = next((d.service for d in service.depends_on
                            if d.service in held and d.service not in self.applied.services), None)
                if name not in held and dep is not None:
                    held[name] = held[dep]
                    waiting = True
        services = {}
        kept: set[str] = set()
        for name, service in stack.services.items():
            if name in held:
                old = self.applied.services.get(name)
                if old is not None:
                    services[name] = old  # keeps running as it is
                    kept.add(name)
                continue
            services[name] = service
        # a kept definition's keys are where the files it was read from had them
        locate = _locate_kept(self.applied.locate, kept, stack.locate) if kept else stack.locate
        desired = effective_stack(attrs.evolve(stack, services=services, locate=locate), self.store)
        if held:
            log.info("reload.waiting_for_images", services=sorted(held), images=sorted(set(held.values())))
        # while a held service's pull runs, the stack is not done even if every replica has ended
        self.sup.edits_pending(any(image in self._pulling for image in held.values()))
        if not edit and desired == self.applied:
            return
        self.applied = desired
        self.sup.submit(desired)

    def _start_pull(self, image: str, stack: Any) -> None:
        assert self._nursery is not None, "LiveImages.run is not running"
        self._pulling[image] = trio.CancelScope()
        self._nursery.start_soon(self._pull, image, stack.x.registries)

    async def _pull(self, image: str, registries: Any) -> None:
        services = lambda: sorted(n for n, s in self.newest.services.items() if s.image == image)  # noqa: E731
        scope = self._pulling[image]
        if not scope.cancel_called:  # an edit may have called it off before it began
            log.info("image.pulling", image=image, services=services())
        try:
            with scope:
                if self._client is not None:
                    client = self._client(registries)
                else:
                    from .registry import RegistryClient, load_settings

                    client = RegistryClient(load_settings(registries))
                async with client:
                    pulled = await client.pull(image, self.store)
                self._fresh.add(image)
                log.info("image.pulled", image=image, digest=pulled.digest)
        except (PysupError, OSError) as exc:
            if not scope.cancel_called:  # else a layer's error that raced the cancel: nothing wants it now
                names = services()
                self._failed[image] = str(exc)
                log.error("image.pull_failed", image=image, services=names, error=str(exc))
                why = str(exc).removeprefix(f"image {image}: ")
                print(f"pysup: cannot pull image {image} for service{'s' if len(names) > 1 else ''} "
                      f"{', '.join(names) or '?'}: {why}; keeping the running state", file=sys.stderr, flush=True)
        finally:
            self._pulling.pop(image, None)
            self.pulls += 1
            self._pull_ended.set()
            self._pull_ended = trio.Event()
        if scope.cancel_called and image not in self._fresh:  # the store keeps nothing half-written of it
            log.info("image.pull_cancelled", image=image, reason="no service of the spec uses it any more")
        self._apply()


def _locate_kept(old: Any, kept: set[str], new: Any) -> Any:
    """A `Stack.locate` for a stack of the newest files that keeps the services `kept` as they
    were: their keys are located by the locator that located them in `old` (the files they were
    read from), the rest by `new`. Flat: a locator made from another one refers to the files'
    own locators, not to it, so saves during a long pull do not pile up older locators."""
    inner = getattr(old, "by_service", None)
    origins = {name: (inner.get(name, old.base) if inner is not None else old) for name in kept}
    origins = {name: by for name, by in origins.items() if by is not new}
    if not origins:
        return new

    def locate(problems: Any) -> tuple:
        out = []
        for p in problems:
            by = origins.get(p.path[1], new) if len(p.path) > 1 and p.path[0] == "services" else new
            out.append(by([p])[0] if by is not None else p)
        return tuple(out)

    locate.by_service = origins  # type: ignore[attr-defined]
    locate.base = new  # type: ignore[attr-defined]
    return locate
