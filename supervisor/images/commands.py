"""The image commands' logic (the CLI only parses): `pysup pull`, `pysup image load`, `pysup image prune`.

`pull_policy` (compose): `always` pulls; `missing` / `if_not_present` (the default) pulls only
an image not in the store; `never` never pulls (a missing image is an error when the stack is
started); `daily`, `weekly`, `every_<duration>` (`every_12h`, `every_30m`, `every_2d`) pull when
the stored image is missing or older than that; `build` is not pulled (pysup does not build).
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any

from ..errors import PysupError
from .store import HOST_IMAGE, ImageStore

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def policy_max_age(policy: str) -> float | None:
    """Seconds after which `daily`, `weekly`, `every_N` pull again; None for the others."""
    if policy == "daily":
        return 86400.0
    if policy == "weekly":
        return 7 * 86400.0
    m = re.fullmatch(r"every_((?:\d+[smhdw])+)", policy)
    if m:
        return float(sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", m.group(1))))
    return None


def should_pull(policy: str | None, store: ImageStore, ref: str, *, now: float | None = None) -> bool:
    policy = (policy or "missing").lower()
    if policy in ("never", "build"):
        return False
    if policy == "always":
        return True
    image = store.find(ref)
    if image is None:
        return True
    if policy in ("missing", "if_not_present"):
        return False
    age = policy_max_age(policy)
    if age is None:
        raise PysupError(f"pull_policy {policy!r}: unknown (always, missing, never, daily, weekly, every_<duration>)")
    return (now or time.time()) - image.created >= age


def stack_pulls(stack: Any, store: ImageStore, *, now: float | None = None) -> list[tuple[str, str]]:
    """(service name, image) for the services whose image their pull_policy says to pull now."""
    out = []
    seen = set()
    for name, svc in sorted(stack.services.items()):
        if not svc.image or svc.image == HOST_IMAGE or svc.x.rootfs:
            continue
        if should_pull(svc.pull_policy, store, svc.image, now=now) and svc.image not in seen:
            seen.add(svc.image)
            out.append((name, svc.image))
    return out


def _progress() -> Any:
    from .registry import Progress, RichProgress

    return RichProgress() if sys.stderr.isatty() else Progress()


def pull(store: ImageStore, refs: list[str], registries: Any = None, *, quiet: bool = False) -> int:
    """Pull `refs`, printing `NAME:TAG sha256:<digest>` for each; errors are one line each."""
    import contextlib

    import trio

    from .registry import RegistryClient, load_settings

    settings = load_settings(registries)
    failed = 0
    progress = _progress() if not quiet else None

    lines: list[tuple[str, str]] = []  # printed after the progress bars are gone

    async def main() -> None:
        nonlocal failed
        async with RegistryClient(settings, progress=progress) as client:
            for ref in refs:
                try:
                    image = await client.pull(ref, store)
                except PysupError as e:
                    lines.append(("stderr", f"pysup: {e}"))
                    failed = 1
                    continue
                lines.append(("stdout", f"{image.ref} {image.digest}"))

    try:
        with (progress if hasattr(progress, "__enter__") else contextlib.nullcontext()):  # type: ignore[attr-defined]
            trio.run(main)
    finally:
        for stream, line in lines:
            print(line, file=getattr(sys, stream), flush=True)  # not the proxy rich installs while it draws
    return failed


def prune(store: ImageStore, *, force: bool = False) -> str:
    from .store import human_size

    removed, freed = store.prune(force=force)
    return f"removed {len(removed)} unused layer{'s' if len(removed) != 1 else ''}, {human_size(freed)} freed"


async def ensure_images(stack: Any, environ: Any = None) -> None:
    """Before `pysup up` starts anything: pull what the services' pull_policy asks for (by default
    the images not in the store). A failure is one line naming the image (RegistryError)."""
    from .. import paths

    store = ImageStore(paths.images_dir(environ))
    pulls = stack_pulls(stack, store)
    if not pulls:
        return
    import contextlib

    from .registry import RegistryClient, load_settings

    progress = _progress()
    with (progress if hasattr(progress, "__enter__") else contextlib.nullcontext()):
        async with RegistryClient(load_settings(stack.x.registries), progress=progress) as client:
            for service, ref in pulls:
                try:
                    await client.pull(ref, store)
                except PysupError as exc:  # "image REF: why" -> naming the service too
                    users = sorted(n for n, s in stack.services.items() if s.image == ref) or [service]
                    who = f"services.{users[0]}" if len(users) == 1 else f"services {', '.join(users)}"
                    raise PysupError(f"{who}: {exc}") from None
