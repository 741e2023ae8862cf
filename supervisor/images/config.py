"""An image's config (Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts, StopSignal, Healthcheck)
under the compose keys that override it, as Docker and Compose do:

- `entrypoint:` replaces the image's Entrypoint *and* drops its Cmd; `command:` replaces Cmd;
- `environment:` is laid over the image's Env (the service wins per variable);
- `working_dir:`, `user:` replace WorkingDir, User;
- `expose:` is added to ExposedPorts;
- `stop_signal:` replaces StopSignal (a service without one takes the image's, else SIGTERM);
- `healthcheck:` is merged with the image's Healthcheck as the engine merges them (moby
  daemon/commit.go `merge`): no `healthcheck` key takes the image's whole; an empty test, and
  each unset timing or retries, take the image's; `disable: true` (test NONE) turns both off.

`with_image_config` does all of it for one start (`runtime.spec.from_service`); `effective_stack`
applies the two the supervisor itself reads (healthcheck, stop_signal) to a whole stack, before
`pysup up` or a live reconcile hands it over, so the config hash also covers them.

Standard library only (and attrs, already loaded with the model).
"""

from __future__ import annotations

from typing import Any

from ..errors import PysupError

_NS = 1_000_000_000


class ImageConfigError(PysupError):
    """An image's config has a key pysup applies with a type the engine would refuse: one line
    naming the image and the key."""


def _shown(value: Any) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def checked_config(ref: str, config: Any) -> dict[str, Any] | None:
    """`config` (an image config's `config` object; None: none) if the keys applied to a
    container have the types moby unmarshals them into: Entrypoint and Cmd a list of strings or
    one string (its StrSlice; a string is returned as a one-item list), Env a list of strings,
    WorkingDir and User strings, ExposedPorts an object of objects; null for any of them is unset.
    Else `ImageConfigError` naming the image and the key. (Healthcheck and StopSignal are read
    leniently where they are used, as before.) Never modifies `config` (the store's cached index)."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise ImageConfigError(f"image {ref}: its config is not a JSON object ({_shown(config)})")

    def bad(key: str, want: str) -> ImageConfigError:
        return ImageConfigError(f"image {ref}: its config's {key} is not {want} ({_shown(config[key])}); "
                                f"fix or rebuild the image")

    fixed = {}
    for key in ("Entrypoint", "Cmd"):
        value = config.get(key)
        if isinstance(value, str):
            fixed[key] = [value]
        elif value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise bad(key, "a list of strings")
    env = config.get("Env")
    if env is not None and not (isinstance(env, list) and all(isinstance(v, str) for v in env)):
        raise bad("Env", 'a list of "NAME=value" strings')
    for key in ("WorkingDir", "User"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise bad(key, "a string")
    ports = config.get("ExposedPorts")
    if ports is not None and not (isinstance(ports, dict) and all(v is None or isinstance(v, dict)
                                                                  for v in ports.values())):
        raise bad("ExposedPorts", 'an object like {"80/tcp": {}}')
    return {**config, **fixed} if fixed else config


def parse_signal(value: Any) -> int | None:
    """An image's StopSignal as moby reads it (`config.units.parse_signal`: "SIGRTMIN+3", as
    systemd images have, included), or None (unset, or no signal of this system)."""
    from ..config.units import UnitError, parse_signal as parse

    if value is None or value == "":
        return None
    try:
        return parse(str(value).strip())
    except UnitError:
        return None


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
    changes.update(_supervised(service, config))
    return attrs.evolve(service, **changes) if changes else service


def _supervised(service: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The changes to the keys the supervisor reads: stop_signal, healthcheck."""
    changes: dict[str, Any] = {}
    sig = parse_signal(config.get("StopSignal"))
    if sig is not None and service.stop_signal is None:
        changes["stop_signal"] = sig
    check = merge_healthcheck(service.healthcheck, image_healthcheck(config))
    if check != service.healthcheck:
        changes["healthcheck"] = check
    return changes


def merge_healthcheck(mine: Any, image: Any) -> Any:
    """The service's `Healthcheck` (None: no key) merged with the image's (None: it has none)."""
    import attrs

    if image is None:
        return mine
    if mine is None:
        return image
    if mine.disabled:  # `disable: true`: off, whatever the image says (its timings would not matter)
        return mine
    changes = {k: getattr(image, k) for k in ("interval", "timeout", "retries", "start_period", "start_interval")
               if not getattr(mine, k) and getattr(image, k) is not None}
    if not mine.test:
        changes["test"] = image.test
    return attrs.evolve(mine, **changes) if changes else mine


def effective_stack(stack: Any, images: Any = None, *, check: bool = False) -> Any:
    """`stack` with each image service's healthcheck and stop_signal merged with its image's
    config (an image not in the store, a rootfs or `host` service: left as it is). `check`
    (`pysup up`, before it starts anything): an image config a start would refuse
    (`checked_config`) is an `ImageConfigError` naming the service; otherwise (a live edit) that
    service's start reports it."""
    import attrs

    if images is None:
        from .. import paths
        from .store import ImageStore

        images = ImageStore(paths.images_dir())
    services = {}
    for name, service in stack.services.items():
        if service.image and not service.x.rootfs and service.image != "host":
            config = _stored_config(service.image, images)
            if check:
                try:
                    checked_config(service.image, config)
                except ImageConfigError as exc:
                    raise ImageConfigError(f"services.{name}: {exc}") from None
            if isinstance(config, dict) and config:
                changes = _supervised(service, config)
                if changes:
                    service = attrs.evolve(service, **changes)
        services[name] = service
    return attrs.evolve(stack, services=services)


def image_healthcheck(config: dict[str, Any] | None) -> Any:
    """The image's Healthcheck as a model `Healthcheck` (test ("NONE",): disabled), or None (none)."""
    hc = (config or {}).get("Healthcheck")
    if not hc or not isinstance(hc, dict):
        return None
    test = hc.get("Test") or ()
    if not isinstance(test, (list, tuple)) or not all(isinstance(t, str) for t in test):
        return None  # not a Healthcheck the engine would read (it refuses such a config)
    from ..config.model import Healthcheck

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0  # 0: unset

    timing = {}
    for key, attr in (("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start_period"),
                      ("StartInterval", "start_interval")):
        if number(hc.get(key)):  # nanoseconds
            timing[attr] = hc[key] / _NS
    if number(hc.get("Retries")):
        timing["retries"] = int(hc["Retries"])
    return Healthcheck(test=tuple(test), **timing)


def image_config(ref: str, images: Any = None) -> dict[str, Any] | None:
    """The config of the image `ref` in `images` (an ImageStore; default the one in
    paths.images_dir()), or None (an imported rootfs has none; a store without `get`);
    `ImageConfigError` for one a container cannot be made from (`checked_config`)."""
    return checked_config(ref, _stored_config(ref, images))


def _stored_config(ref: str, images: Any = None) -> Any:
    """The image's config as stored (not checked), or None."""
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
    (a `RunRequest`) in place; an image without a config (imported) changes nothing; a malformed
    one is an `ImageConfigError`."""
    config = image_config(req.image, images)
    if not config:
        return
    req.argv = tuple(config.get("Entrypoint") or ()) + (tuple(req.argv) or tuple(config.get("Cmd") or ()))
    given = {e.partition("=")[0] for e in req.env}
    req.env = tuple(e for e in (config.get("Env") or ()) if str(e).partition("=")[0] not in given) + tuple(req.env)
    req.workdir = req.workdir or config.get("WorkingDir") or None
    req.user = req.user or config.get("User") or None
