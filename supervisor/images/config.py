"""An image's config (Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts, StopSignal, Healthcheck)
under the compose keys that override it, as Docker and Compose do:

- `entrypoint:` replaces the image's Entrypoint *and* drops its Cmd; `command:` replaces Cmd;
- `environment:` is laid over the image's Env (the service wins per variable);
- `working_dir:`, `user:` replace WorkingDir, User;
- `expose:` is added to ExposedPorts;
- `stop_signal:` replaces StopSignal (a service left at the default SIGTERM takes the image's);
- Healthcheck: `image_healthcheck` converts it; the model cannot tell "no healthcheck" from
  `disable: true` (both None), so it is not applied to the service here.

Standard library only (and attrs, already loaded with the model).
"""

from __future__ import annotations

import signal
from typing import Any

_NS = 1_000_000_000


def parse_signal(value: Any) -> int | None:
    if value is None or value == "":
        return None
    text = str(value).strip().upper()
    if text.isdigit():
        return int(text)
    name = text if text.startswith("SIG") else f"SIG{text}"
    sig = getattr(signal, name, None)
    return int(sig) if isinstance(sig, signal.Signals) else None


def with_image_config(service: Any, config: dict[str, Any] | None) -> Any:
    """The `Service` with what it leaves unset taken from the image's config."""
    import attrs

    if not config:
        return service
    changes: dict[str, Any] = {}
    if service.entrypoint is None:
        if config.get("Entrypoint"):
            changes["entrypoint"] = tuple(config["Entrypoint"])
        if service.command is None and config.get("Cmd"):
            changes["command"] = tuple(config["Cmd"])
    env = {}
    for item in config.get("Env") or ():
        k, _, v = str(item).partition("=")
        if k:
            env[k] = v
    if env:
        env.update(service.environment)
        changes["environment"] = env
    if service.working_dir is None and config.get("WorkingDir"):
        changes["working_dir"] = config["WorkingDir"]
    if service.user is None and config.get("User"):
        changes["user"] = config["User"]
    ports = [p for p in (config.get("ExposedPorts") or {}) if p not in service.expose]
    if ports:
        changes["expose"] = (*service.expose, *ports)
    sig = parse_signal(config.get("StopSignal"))
    if sig is not None and service.stop_signal == int(signal.SIGTERM):
        changes["stop_signal"] = sig
    return attrs.evolve(service, **changes) if changes else service


def image_healthcheck(config: dict[str, Any] | None) -> Any:
    """The image's Healthcheck as a model `Healthcheck`, or None (none, or `NONE`)."""
    hc = (config or {}).get("Healthcheck") or {}
    test = tuple(hc.get("Test") or ())
    if not test or test[0] == "NONE":
        return None
    from ..config.model import Healthcheck

    timing = {}
    for key, attr in (("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start_period"),
                      ("StartInterval", "start_interval")):
        if hc.get(key):
            timing[attr] = hc[key] / _NS
    if hc.get("Retries"):
        timing["retries"] = int(hc["Retries"])
    return Healthcheck(test=test, **timing)


def image_config(ref: str, images: Any = None) -> dict[str, Any] | None:
    """The config of the image `ref` in `images` (an ImageStore; default the one in
    paths.images_dir()), or None (an imported rootfs has none; a store without `get`)."""
    if images is None:
        from .. import paths
        from .store import ImageStore

        images = ImageStore(paths.images_dir())
    get = getattr(images, "get", None)
    if get is None:
        return None
    try:
        return getattr(get(ref), "config", None)
    except Exception:  # resolve_root has reported a missing image already
        return None


def apply_to_run(req: Any, images: Any = None) -> None:
    """`pysup run IMAGE [CMD...]` as `docker run`: the image's Entrypoint before CMD (CMD default:
    the image's Cmd), its Env under `-e`, its WorkingDir and User unless `-w`, `-u`. Changes `req`
    (a `RunRequest`) in place; an image without a config (imported) changes nothing."""
    config = image_config(req.image, images)
    if not config:
        return
    req.argv = tuple(config.get("Entrypoint") or ()) + (tuple(req.argv) or tuple(config.get("Cmd") or ()))
    given = {e.partition("=")[0] for e in req.env}
    req.env = tuple(e for e in (config.get("Env") or ()) if str(e).partition("=")[0] not in given) + tuple(req.env)
    req.workdir = req.workdir or config.get("WorkingDir") or None
    req.user = req.user or config.get("User") or None
