"""Image references parsed as Docker does (github.com/distribution/reference, `ParseNormalizedNamed`).

    busybox                       → docker.io/library/busybox:latest
    shop/web:2                    → docker.io/shop/web:2
    localhost:5000/team/app@sha256:… → registry localhost:5000, repository team/app, by digest
    index.docker.io/x             → docker.io/x (an alias)

The first component is a registry host when it has a `.` or a `:` (a port), is `localhost`, or has
an upper-case letter, and is followed by a `/`. With neither tag nor digest the tag is `latest`.
`familiar` is the short form Docker prints (`busybox:latest`, `shop/web:2`,
`localhost:5000/team/app:v2`): the local store keys images by it.

Standard library only: `pysup run IMAGE` parses a reference on its fast path.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ..errors import PysupError

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
LEGACY_REGISTRIES = ("index.docker.io", "registry-1.docker.io")

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*\Z")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}\Z|sha512:[a-f0-9]{128}\Z")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                   r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?\Z")


class ReferenceError(PysupError):
    """An image reference that does not parse; the message names it."""


class Reference(NamedTuple):
    registry: str  # "docker.io", "localhost:5000"
    repository: str  # "library/busybox"
    tag: str | None  # None when only a digest was given
    digest: str | None  # "sha256:<hex>"

    @property
    def name(self) -> str:
        """The familiar name: `busybox`, `shop/web`, `localhost:5000/team/app`."""
        if self.registry == DEFAULT_REGISTRY:
            return self.repository.removeprefix("library/") if self.repository.count("/") == 1 else self.repository
        return f"{self.registry}/{self.repository}"

    @property
    def familiar(self) -> str:
        """`name:tag`, `name@digest` or `name:tag@digest`."""
        return self.name + self._suffix

    @property
    def canonical(self) -> str:
        return f"{self.registry}/{self.repository}{self._suffix}"

    @property
    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def reference(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest if any, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        return self.familiar


def parse(text: str) -> Reference:
    """Parse `[HOST[:PORT]/]PATH[:TAG][@DIGEST]`; raises ReferenceError naming `text`."""
    ref = text.strip()
    if not ref or len(ref) > 4096:
        raise ReferenceError(f"image {text!r}: invalid reference format")
    rest, at, digest = ref.partition("@")
    if at and not _DIGEST.match(digest):
        raise ReferenceError(f"image {text!r}: invalid digest {digest!r} (sha256:<64 hex digits>)")
    name, tag = rest, None
    slash, colon = rest.rfind("/"), rest.rfind(":")
    if colon > slash:
        name, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.match(tag):
            raise ReferenceError(f"image {text!r}: invalid tag {tag!r} ([A-Za-z0-9_][A-Za-z0-9_.-]*, up to 128)")
    registry, path = DEFAULT_REGISTRY, name
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        if not _HOST.match(first):
            raise ReferenceError(f"image {text!r}: invalid registry host {first!r}")
        registry, path = first, remainder
    if registry in LEGACY_REGISTRIES:
        registry = DEFAULT_REGISTRY
    if not path or not all(_COMPONENT.match(c) for c in path.split("/")):
        raise ReferenceError(f"image {text!r}: invalid name (lower-case letters, digits, '.', '_', '-', '/')")
    if len(f"{registry}/{path}") > 255:
        raise ReferenceError(f"image {text!r}: name longer than 255 characters")
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if tag is None and not at:
        tag = DEFAULT_TAG
    return Reference(registry, path, tag, digest or None)
