"""`volumes`, `tmpfs` and `devices`: short and long syntax to `Mount` and `Device`.

The short volume syntax is split the way compose-go's `format.ParseVolume` splits it (Linux
only: no drive letters). A source starting with `.`, `/` or `~` is a host path, anything else a
named volume, nothing an anonymous volume. compose silently ignores options it does not know
(`./x:/x:rox`); pysup refuses them, since such a typo usually means a mount that is not read-only.

`idmap` (podman's option; long syntax: `x-pysup: {idmap: true}` on the item) asks for a bind
mount of a host path to be idmapped even when writable (zygote.idmap_bind). Like `nocopy` on a
bind or a propagation on a volume, it is accepted and dropped where it changes nothing: a volume
is idmapped anyway, a tmpfs is the container's own.
"""

from __future__ import annotations

from typing import Any

from ..errors import KeyPath
from .model import Device, Mount
from .parse_common import (
    Ctx,
    Invalid,
    as_list,
    as_map,
    as_octal,
    as_str,
    one_of,
    opt_bool,
    opt_str,
    q,
    size,
)

PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")
_SELINUX = ("z", "Z")
_TYPES = ("bind", "volume", "tmpfs")

# Mount flags the kernel's tmpfs takes besides size and mode; kept for the runtime to apply.
_TMPFS_FLAGS = frozenset({
    "exec", "noexec", "suid", "nosuid", "dev", "nodev", "sync", "async", "dirsync",
    "atime", "noatime", "diratime", "nodiratime", "relatime", "norelatime", "strictatime",
    "nostrictatime", "mand", "nomand",
})
_TMPFS_KEYS = frozenset({"uid", "gid", "nr_inodes", "nr_blocks", "huge", "mpol"})


def parse_volumes(ctx: Ctx, value: Any, path: KeyPath) -> tuple[Mount, ...]:
    out: list[Mount] = []
    for i, item in enumerate(as_list(value, path)):
        parse = _long_volume if isinstance(item, dict) else _short_volume
        mount = ctx.attempt(parse, ctx, item, (*path, i), default=None)
        if mount is not None:
            out.append(mount)
    return tuple(out)


def _target(text: str, raw: str, path: KeyPath, what: str = "volume") -> str:
    if not text.startswith("/"):
        raise Invalid(path, f"invalid {what} {q(raw)}: the container path {q(text)} must be absolute")
    return text


def _is_host_path(source: str) -> bool:
    return source[:1] in (".", "/", "~")


def _split_volume(raw: str, path: KeyPath) -> tuple[str, str, list[str]]:
    """(source, target, options) as compose-go splits a volume spec at colons."""
    if not raw:
        raise Invalid(path, "invalid volume \"\": empty")
    if len(raw) <= 2:  # compose-go: a 1-2 character spec is an anonymous volume's target
        return "", raw, []
    parts = raw.split(":")
    if any(not p for p in parts):
        raise Invalid(path, f"invalid volume {q(raw)}: empty section between colons")
    if len(parts) > 3:
        raise Invalid(path, f"invalid volume {q(raw)}: too many colons")
    if len(parts) == 1:
        return "", parts[0], []
    return parts[0], parts[1], parts[2].split(",") if len(parts) == 3 else []


def _short_volume(ctx: Ctx, item: Any, path: KeyPath) -> Mount:
    raw = as_str(item, path)
    source, target, options = _split_volume(raw, path)
    _target(target, raw, path)
    kind = "bind" if source and _is_host_path(source) else "volume"
    fields: dict[str, Any] = {}
    for option in options:
        if option in ("ro", "rw"):
            fields["read_only"] = option == "ro"
        elif option == "nocopy":
            fields["volume_nocopy"] = True
        elif option in PROPAGATIONS:
            fields["bind_propagation"] = option
        elif option in _SELINUX:
            pass  # SELinux relabelling: accepted for compatibility, nothing to do without SELinux
        elif option == "idmap":
            fields["idmap"] = True
        else:
            raise Invalid(path, f"invalid volume {q(raw)}: unknown option {q(option)}")
    if kind == "bind":
        fields.pop("volume_nocopy", None)
        return Mount(type="bind", target=target, source=ctx.path(source), **fields)
    fields.pop("bind_propagation", None)
    fields.pop("idmap", None)  # a volume is idmapped under a user namespace anyway
    return Mount(type="volume", target=target, source=source or None, **fields)


def _long_volume(ctx: Ctx, item: Any, path: KeyPath) -> Mount:
    spec = as_map(item, path)
    kind = one_of(spec.get("type"), (*path, "type"), _TYPES, "volume type")
    target = opt_str(spec, "target", path)
    if not target:
        raise Invalid(path, "a volume needs a target")
    _target(target, target, (*path, "target"), "target")
    source = opt_str(spec, "source", path) or None
    read_only = opt_bool(spec, "read_only", path, False)
    idmap = _idmap(spec, path)
    if kind == "bind":
        if source is None:
            raise Invalid(path, "a bind mount needs a source")
        bind_path = (*path, "bind")
        bind = as_map(spec.get("bind"), bind_path)
        propagation = bind.get("propagation")
        return Mount(
            type="bind", target=target, source=ctx.path(source), read_only=read_only,
            bind_propagation=None if propagation is None else one_of(
                propagation, (*bind_path, "propagation"), PROPAGATIONS, "propagation"),
            # compose-go: true when a `bind:` block leaves it out, false without a `bind:` block
            bind_create_host_path=opt_bool(bind, "create_host_path", bind_path, "bind" in spec),
            idmap=idmap,
        )
    if kind == "volume":
        vol_path = (*path, "volume")
        vol = as_map(spec.get("volume"), vol_path)
        return Mount(
            type="volume", target=target, source=source, read_only=read_only,
            volume_nocopy=opt_bool(vol, "nocopy", vol_path, False),
            volume_subpath=opt_str(vol, "subpath", vol_path) or None,
        )
    if source is not None:
        raise Invalid((*path, "source"), "a tmpfs mount takes no source")
    tmp_path = (*path, "tmpfs")
    tmp = as_map(spec.get("tmpfs"), tmp_path)
    return Mount(
        type="tmpfs", target=target, read_only=read_only,
        tmpfs_size=None if tmp.get("size") is None else size(tmp["size"], (*tmp_path, "size")),
        tmpfs_mode=None if tmp.get("mode") is None else as_octal(tmp["mode"], (*tmp_path, "mode")),
    )


def _idmap(spec: dict[str, Any], path: KeyPath) -> bool:
    """A long-syntax item's `x-pysup: {idmap: BOOL}` (checks.xpysup_problems validated it first)."""
    if spec.get("x-pysup") is None:
        return False
    here = (*path, "x-pysup")
    return opt_bool(as_map(spec["x-pysup"], here), "idmap", here, False)


def parse_tmpfs(ctx: Ctx, value: Any, path: KeyPath) -> tuple[Mount, ...]:
    """`tmpfs: /run` or a list of "/run:size=64m,mode=1777,noexec" (docker's --tmpfs syntax)."""
    items = [value] if isinstance(value, str) else as_list(value, path)
    here = (lambda i: path) if isinstance(value, str) else (lambda i: (*path, i))
    out = [ctx.attempt(_tmpfs_one, item, here(i), default=None) for i, item in enumerate(items)]
    return tuple(m for m in out if m is not None)


def _tmpfs_one(item: Any, path: KeyPath) -> Mount:
    raw = as_str(item, path)
    target, _, opts = raw.partition(":")
    _target(target, raw, path, "tmpfs")
    fields: dict[str, Any] = {}
    extra: list[str] = []
    for option in filter(None, opts.split(",")):
        key, eq, val = option.partition("=")
        if option in ("ro", "rw"):
            fields["read_only"] = option == "ro"
        elif eq and key == "size":
            fields["tmpfs_size"] = size(val, path)
        elif eq and key == "mode":
            fields["tmpfs_mode"] = as_octal(val, path, what="tmpfs mode")
        elif (not eq and option in _TMPFS_FLAGS) or (eq and key in _TMPFS_KEYS):
            extra.append(option)
        else:
            raise Invalid(path, f"invalid tmpfs {q(raw)}: unknown option {q(option)}")
    return Mount(type="tmpfs", target=target, tmpfs_options=tuple(extra), **fields)


def parse_devices(ctx: Ctx, value: Any, path: KeyPath) -> tuple[Device, ...]:
    out = [ctx.attempt(_device, item, (*path, i), default=None) for i, item in enumerate(as_list(value, path))]
    return tuple(d for d in out if d is not None)


def _permissions(text: str, path: KeyPath) -> str:
    if not text or any(c not in "rwm" for c in text) or len(set(text)) != len(text):
        raise Invalid(path, f"invalid device permissions {q(text)} (use a combination of r, w and m)")
    return text


def _device(item: Any, path: KeyPath) -> Device:
    if isinstance(item, dict):
        spec = as_map(item, path)
        source = opt_str(spec, "source", path)
        if not source:
            raise Invalid(path, "a device needs a source")
        perms = opt_str(spec, "permissions", path)
        return Device(
            source=source,
            target=opt_str(spec, "target", path) or source,
            permissions=_permissions(perms, (*path, "permissions")) if perms is not None else "rwm",
        )
    raw = as_str(item, path)
    parts = raw.split(":")
    if len(parts) > 3 or not all(parts):
        raise Invalid(path, f"invalid device {q(raw)}: expected HOST[:CONTAINER[:PERMISSIONS]]")
    source, target = parts[0], parts[1] if len(parts) > 1 else parts[0]
    perms = _permissions(parts[2], path) if len(parts) == 3 else "rwm"
    return Device(source=source, target=target, permissions=perms)
