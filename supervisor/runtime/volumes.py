"""Volumes on the host: named ones kept in `paths.volumes_dir()/<name>`, anonymous ones per container.

    volumes_dir/<name>/                  a named volume: made on first use, kept after the container
    volumes_dir/.anonymous/<container>/N the anonymous volumes of one container, removed with it

`from_service(..., volumes_dir=, anonymous_dir=anonymous_dir(cid))` and `pysup run -v` turn volume
entries into bind mounts of these directories; `prepare(spec, ...)` makes the ones the spec uses
before the start, `remove_anonymous(cid)` deletes a container's anonymous volumes after it.
(Unlike Docker, a new volume is not seeded with the image's content at the mount point.)

Standard library only (the one-shot `pysup run` path).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Mapping

from .. import paths

TYPE_CHECKING = False  # typing costs ~1.5 ms of `pysup run`'s start; `Any` is for annotations only
if TYPE_CHECKING:
    from typing import Any

ANONYMOUS = ".anonymous"  # a name no named volume can have (they start with a letter or digit)


class VolumeError(ValueError):
    """A volume name or directory pysup refuses or cannot make."""


def check_name(name: str) -> str:
    """Docker's rule for volume names: [a-zA-Z0-9][a-zA-Z0-9_.-]*."""
    ok = bool(name) and name[0].isascii() and name[0].isalnum() and len(name) <= 255 and all(
        c.isascii() and (c.isalnum() or c in "_.-") for c in name)
    if not ok:
        raise VolumeError(f"volume name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-]* is allowed")
    return name


def volumes_dir(environ: Mapping[str, str] | None = None) -> str:
    return paths.volumes_dir(environ)


def named(name: str, root: str | None = None, *, create: bool = True) -> str:
    """The directory of the named volume `name` under `root` (default paths.volumes_dir()), made
    (0755, root-owned, in the 0700 volumes directory) when missing and `create`; VolumeError when missing and not `create`
    (an `external: true` volume must exist)."""
    check_name(name)
    root = root or paths.volumes_dir()
    d = os.path.join(root, name)
    if os.path.isdir(d) and not os.path.islink(d):
        _make_root(root)  # a directory an older pysup made 0711
        return d
    if not create:
        raise VolumeError(f"volume {name} does not exist ({d})")
    _make_root(root)
    try:
        os.mkdir(d, 0o755)
    except FileExistsError:
        if not os.path.isdir(d) or os.path.islink(d):
            raise VolumeError(f"volume {name}: {d} is not a directory") from None
    return d


def _make_root(root: str) -> None:
    """The volumes' directory: 0700, root's. Under a user namespace a container's root writes its
    volumes through idmapped mounts as host root (zygote.idmap_bind); a setuid-root file it
    leaves there must not be reachable by host users."""
    os.makedirs(root, mode=0o700, exist_ok=True)
    os.chmod(root, 0o700)


def anonymous_dir(container: str, root: str | None = None) -> str:
    """Where the anonymous volumes of `container` live (not made here: `prepare` makes them)."""
    return os.path.join(root or paths.volumes_dir(), ANONYMOUS, container)


def prepare(spec: Any, *, volumes_root: str | None = None, anonymous: str | None = None) -> list[str]:
    """Make the host directories the spec's volume binds need: named volumes under `volumes_root`
    (kept), anonymous ones under `anonymous` (fresh: VolumeError if that container's directory
    exists already). Returns the directories made."""
    made: list[str] = []
    root = os.path.abspath(volumes_root or paths.volumes_dir())
    try:
        for m in spec.mounts:
            if m.type != "bind" or not m.source:
                continue
            src = os.path.abspath(m.source)
            if anonymous and os.path.dirname(src) == os.path.abspath(anonymous):
                if anonymous not in made:
                    _make_root(root)
                    os.makedirs(os.path.dirname(anonymous), mode=0o711, exist_ok=True)
                    try:
                        os.mkdir(anonymous, 0o711)
                    except FileExistsError:
                        raise VolumeError(f"anonymous volumes of {os.path.basename(anonymous)} exist already "
                                          f"({anonymous})") from None
                    made.append(anonymous)
                os.mkdir(src, 0o755)
                made.append(src)
            elif os.path.dirname(src) == root and not os.path.exists(src):
                named(os.path.basename(src), root)
                made.append(src)
    except BaseException:
        if anonymous in made:  # ours, half made: gone again (named volumes made stay: they are kept anyway)
            shutil.rmtree(anonymous, ignore_errors=True)
        raise
    return made


def remove_anonymous(container: str | None = None, *, path: str | None = None) -> None:
    """Delete the anonymous volumes of `container` (or the directory `path`); missing is fine."""
    d = path or anonymous_dir(container or "")
    if os.path.basename(d) in ("", ANONYMOUS):
        raise VolumeError(f"refusing to remove {d}")
    try:
        shutil.rmtree(d)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise VolumeError(f"remove anonymous volumes {d}: {e.strerror}") from None
