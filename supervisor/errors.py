"""The errors pysup raises on purpose. Each one carries what a person needs to act on it.

The CLI turns any `PysupError` into one message per line and exit status 1; anything else is a bug
and gets a traceback.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterable, Sequence

PathPart = str | int
KeyPath = tuple[PathPart, ...]


def format_path(path: Sequence[PathPart]) -> str:
    """`("services", "web", "ports", 1)` -> `services.web.ports[1]` (compose's own notation)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out


class Location(namedtuple("Location", "file line col")):
    """A place in a spec file (file: str, line: int, col: int), 1-based like editors and compilers
    show it. A named tuple, not an attrs class: the reader makes one per YAML node, tens of
    thousands for a large stack; collections' namedtuple, not typing's: typing costs ~1.5 ms of
    every command's start (`pysup run`)."""

    __slots__ = ()

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class Problem:
    """One thing wrong with a spec: where it is, which key, and what is wrong. Immutable, compared
    and hashed by value. A plain class, not attrs: this module is on every command's import path,
    and attrs costs ~15 ms to import there (a one-shot `pysup run` must start fast)."""

    __slots__ = ("message", "path", "location", "file")

    message: str
    path: KeyPath
    location: Location | None
    file: str | None  # when there is a file but no position in it (missing, unreadable)

    def __init__(self, message: str, path: KeyPath = (), location: Location | None = None, file: str | None = None):
        object.__setattr__(self, "message", message)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "location", location)
        object.__setattr__(self, "file", file)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Problem is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Problem is immutable (cannot delete {name!r})")

    def _key(self) -> tuple:
        return (self.message, self.path, self.location, self.file)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash((Problem, *self._key()))

    def __repr__(self) -> str:
        return (f"Problem(message={self.message!r}, path={self.path!r}, location={self.location!r}, "
                f"file={self.file!r})")

    def __reduce__(self) -> tuple:
        return (Problem, self._key())

    def __str__(self) -> str:
        where = str(self.location) if self.location else (self.file or "")
        key = format_path(self.path)
        return ": ".join(p for p in (where, key, self.message) if p)


class PysupError(Exception):
    """An error pysup reports to a person: one-line message, exit status 1, no traceback."""

    exit_code = 1


class SpecError(PysupError):
    """The spec files do not load: one or more problems, each located."""

    def __init__(self, problems: Iterable[Problem] | Problem | str):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: tuple[Problem, ...] = tuple(problems)
        # Warnings found before the failure (an unset variable often explains the error after it).
        self.warnings: tuple[Problem, ...] = ()
        super().__init__("\n".join(str(p) for p in self.problems))


class CgroupError(PysupError):
    """A cgroup operation failed: which file or directory, what pysup was doing to it, and, for a
    limit, the service and spec key it came from. `errno` is the kernel's answer when there was one."""

    def __init__(
        self,
        message: str,
        *,
        path: str,
        operation: str,
        service: str | None = None,
        key: str | None = None,
        errno: int | None = None,
    ):
        self.message = message
        self.path = path
        self.operation = operation
        self.service = service
        self.key = key
        self.errno = errno
        super().__init__(message)
